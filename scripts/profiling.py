"""Where a compiled step's time goes: a ``jax.profiler`` trace summarised by what each op computes.

``bench_train_step.py --config … --profile DIR`` traces a few calls of the step it has just timed
(no new compilation) and prints, per step:

* how long the device was busy (the union of its ops' intervals) against the step's wall time;
  the rest is the device waiting (launches, host work, transfers);
* op time by kind — convolution, matmul, FFT, reduction, data movement (copies, transposes,
  slices, pads, gathers), elementwise, other — and by phase: the forward pass (ops under
  ``jvp``), the backward pass (under ``transpose``) and the rest (synthesis, loss bookkeeping,
  optimiser), from the ops' JAX metadata;
* the ten longest ops.

The kind of an op comes from the compiled module's HLO (``Compiled.as_text()``): its opcode, a
custom call's target (cuDNN convolutions, cuBLAS GEMMs on a GPU) and, for a fusion, what the fused
computation holds. Events are the trace's leaf ops: XLA:CPU's thunks (``hlo_op`` stat), a GPU's
kernels (its stream lines; an op is named by its ``hlo_op`` stat, else by the kernel's name).
Loops and calls, whose events enclose their bodies' events, are not counted twice. Op times are
summed over threads and streams, so on a CPU they can exceed the wall time.

Nothing here changes a figure of the benchmark: the profile is taken after the timed calls.
"""

from __future__ import annotations

import collections
import glob
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import jax

KINDS = ("convolution", "matmul", "fft", "reduction", "data movement", "elementwise", "other")
PHASES = ("forward", "backward", "other")
_MOVE = {"copy", "transpose", "concatenate", "pad", "slice", "dynamic-slice",
         "dynamic-update-slice", "gather", "scatter", "broadcast", "reshape", "bitcast",
         "copy-start", "copy-done", "reverse", "iota", "parameter", "constant", "tuple",
         "get-tuple-element", "bitcast-convert"}
_REDUCE = {"reduce", "reduce-window", "select-and-scatter", "reduce-precision", "sort"}
_CONTAINERS = {"while", "conditional", "call", "async-start", "async-done", "async-update"}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = ")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
# Lines a GPU trace derives from its kernels (the kernels themselves are on the stream lines).
_DERIVED_LINES = {"XLA Modules", "XLA Ops", "XLA TraceMe", "TensorFlow Ops",
                  "TensorFlow Name Scope", "Steps", "Source code", "Framework Ops",
                  "Framework Name Scope"}


def _opcode(rest: str) -> str:
    """The opcode of ``type opcode(operands), attrs`` (the type may be a tuple with spaces)."""
    i, depth = 0, 0
    while i < len(rest):  # skip the type: a token, or a parenthesised tuple
        ch = rest[i]
        depth += ch in "([{"
        depth -= ch in ")]}"
        i += 1
        if depth == 0 and (i >= len(rest) or rest[i] == " "):
            break
    m = re.match(r"\s*([\w\-]+)\(", rest[i:])
    return m.group(1) if m else ""


def hlo_ops(hlo_text: str) -> dict[str, dict[str, str]]:
    """Instruction name → ``{"kind", "phase", "opcode", "source"}`` for every instruction of a
    compiled module's text (``Compiled.as_text()``); ``source`` is the JAX op it came from (its
    metadata's ``op_name``)."""
    comps: dict[str, list[tuple[str, str, str]]] = {}
    current = None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            current = comps.setdefault(m.group(1), [])
            continue
        m = _INSTRUCTION.match(line)
        if m and current is not None:
            current.append((m.group(1), _opcode(line[m.end():]), line))

    def body_kind(comp: str) -> str:
        codes = {code for _, code, _ in comps.get(comp, [])}
        for code, kind in (("convolution", "convolution"), ("dot", "matmul"), ("fft", "fft")):
            if code in codes:
                return kind
        if codes & _REDUCE:
            return "reduction"
        if codes <= _MOVE:
            return "data movement"
        return "elementwise"

    out = {}
    for instructions in comps.values():
        for name, code, line in instructions:
            target = re.search(r'custom_call_target="([^"]*)"', line)
            target = target.group(1).lower() if target else ""
            calls = re.search(r"calls=%?([\w.\-]+)", line)
            if code == "convolution" or ("conv" in target and ("cudnn" in target
                                                                or "onednn" in target)):
                kind = "convolution"
            elif code == "dot" or any(k in target for k in ("gemm", "matmul", "cublas")):
                kind = "matmul"
            elif code == "fft" or "fft" in target:
                kind = "fft"
            elif code == "fusion" and "__triton_gemm" in line:
                kind = "matmul"
            elif code == "fusion" and calls:
                kind = body_kind(calls.group(1))
            elif code in _REDUCE:
                kind = "reduction"
            elif code in _MOVE:
                kind = "data movement"
            elif code in _CONTAINERS or code == "custom-call":
                kind = "other"
            else:
                kind = "elementwise"
            op_name = re.search(r'op_name="([^"]*)"', line)
            op_name = op_name.group(1) if op_name else ""
            phase = ("backward" if "transpose(" in op_name else
                     "forward" if "jvp(" in op_name else "other")
            out[name] = {"kind": kind, "phase": phase, "opcode": code, "source": op_name}
    return out


def _kernel_kind(name: str) -> str:
    """A GPU kernel's kind from its name alone (when no ``hlo_op`` names its op)."""
    n = name.lower()
    # cuDNN's convolution kernels say fprop/dgrad/wgrad (and implicit_gemm); "conv" alone
    # would also match XLA's convert fusions.
    for keys, kind in ((("fprop", "dgrad", "wgrad", "cudnn", "convolution", "implicit_gemm"),
                        "convolution"),
                       (("gemm", "cutlass", "matmul", "cublas", "dot"), "matmul"),
                       (("fft",), "fft"),
                       (("reduce", "reduction"), "reduction"),
                       (("transpose", "copy", "memcpy", "memset", "concatenate", "slice", "pad",
                         "gather", "scatter"), "data movement"),
                       (("fusion", "loop_"), "elementwise")):
        if any(k in n for k in keys):
            return kind
    return "other"


def _events(xplane: Path, backend: str = "cpu") -> list[tuple[str, str, int, int, str]]:
    """Op events ``(op or kernel name, device, start_ns, duration_ns, module)`` of a trace: a
    GPU's kernels if the trace has a GPU, else the host's XLA ops (``hlo_op`` stat); ``device``
    is the event's plane, ``module`` its ``hlo_module`` stat ("" without one). ``backend``:
    the traced program's (``jax.default_backend()``); a GPU program's trace must hold its GPU
    (without CUPTI it holds only the host's launches, whose times are not the kernels')."""
    from jax.profiler import ProfileData

    data = ProfileData.from_file(str(xplane))
    gpu = [p for p in data.planes if p.name.startswith("/device:GPU")]
    if backend == "gpu" and not gpu:
        raise ValueError(f"{xplane}: no GPU in the trace (were its kernels traced? CUPTI is "
                         "needed); the host's launch times are not the kernels' times")
    out = []
    if gpu:
        for plane in gpu:
            lines = [ln for ln in plane.lines if ln.name not in _DERIVED_LINES]
            streams = [ln for ln in lines if ln.name.startswith("Stream")] or lines
            for line in streams:
                for e in line.events:
                    stats = dict(e.stats)
                    op = stats.get("hlo_op") or e.name
                    out.append((str(op), plane.name, int(e.start_ns), int(e.duration_ns),
                                str(stats.get("hlo_module", ""))))
        return out
    for plane in data.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for e in line.events:
                stats = dict(e.stats)
                if "hlo_op" in stats:
                    out.append((str(stats["hlo_op"]), plane.name, int(e.start_ns),
                                int(e.duration_ns), str(stats.get("hlo_module", ""))))
    return out


def _busy_ns(events: list[tuple[int, int]]) -> int:
    """Length of the union of intervals ``(start, duration)``."""
    total, end = 0, None
    for start, dur in sorted(events):
        stop = start + dur
        if end is None or start > end:
            total += dur
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def summarise(xplane: Path, hlo_text: str, steps: int, step_seconds: float,
              traced_seconds: float, backend: str = "cpu") -> dict:
    """Per-step figures of a trace of ``steps`` calls of one compiled program (milliseconds):
    ``step_seconds`` the step's untraced time, ``traced_seconds`` the traced calls' wall time,
    ``backend`` the program's (:func:`_events`)."""
    ops = hlo_ops(hlo_text)
    events = _events(xplane, backend)
    # This module's events, where the trace names modules the way the HLO text does (it
    # always does on the CPU); else all events.
    module = re.match(r"HloModule ([\w.\-]+)", hlo_text)
    mine = [e for e in events if module and e[4] == module.group(1)]
    events = [(op, device, start, dur) for op, device, start, dur, _ in mine or events
              if ops.get(op, {}).get("opcode") not in _CONTAINERS]
    if not events:
        raise ValueError(f"{xplane}: no op events in the trace")

    def info(op: str) -> dict[str, str]:  # a kernel the HLO does not name: by its name
        return ops.get(op) or {"kind": _kernel_kind(op), "phase": "other", "source": ""}

    by_kind = collections.Counter()
    by_phase = collections.Counter()
    by_op = collections.Counter()
    # The device is busy while any of its timelines runs an op (a CPU's threads overlap).
    devices = collections.defaultdict(list)
    for op, device, start, dur in events:
        by_kind[info(op)["kind"]] += dur
        by_phase[info(op)["phase"]] += dur
        by_op[op] += dur
        devices[device].append((start, dur))
    busy = max(_busy_ns(v) for v in devices.values())
    ms = 1e-6 / steps
    return {
        "steps": steps,
        "step_ms": step_seconds * 1e3,
        "traced_step_ms": traced_seconds * 1e3 / steps,
        "busy_ms": busy * ms,
        "op_ms": sum(by_kind.values()) * ms,
        "kinds": {k: by_kind[k] * ms for k in KINDS if by_kind[k]},
        "phases": {k: by_phase[k] * ms for k in PHASES if by_phase[k]},
        "top": [(op, info(op)["kind"], t * ms, info(op)["source"])
                for op, t in by_op.most_common(10)],
        "matched": sum(op in ops for op, *_ in events) / len(events),
    }


def report(s: dict) -> str:
    """The summary as text (several lines)."""
    def share(d):
        return ", ".join(f"{k} {v:.1f} ({v / s['op_ms']:.0%})" for k, v in
                         sorted(d.items(), key=lambda kv: -kv[1]))

    return "\n".join([
        f"profile ({s['steps']} steps traced, {s['traced_step_ms']:.1f} ms/step traced, "
        f"{s['step_ms']:.1f} untraced): device busy {s['busy_ms']:.1f} ms/step "
        f"({s['busy_ms'] / s['traced_step_ms']:.0%} of the traced step); op time "
        f"{s['op_ms']:.1f} ms/step ({s['matched']:.0%} of the events named by the HLO)",
        f"  by kind (ms/step, share of op time): {share(s['kinds'])}",
        f"  by phase: {share(s['phases'])}",
        "  longest ops:",
        *(f"    {t:8.2f} ms  {op} ({kind}) {source[-90:]}" for op, kind, t, source in s["top"]),
    ])


def profile(call: Callable[[], object], hlo_text: str, out: Path, *, steps: int = 2,
            step_seconds: float) -> dict:
    """Trace ``steps`` calls of ``call`` (each blocks until done) into ``out``, write
    ``out/profile.json`` and return the summary. ``step_seconds``: the step's timed median."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jax.profiler.start_trace(str(out))
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            call()
        traced = time.perf_counter() - t0
    finally:
        jax.profiler.stop_trace()
    xplanes = sorted(glob.glob(str(out / "**" / "*.xplane.pb"), recursive=True),
                     key=lambda p: Path(p).stat().st_mtime)
    if not xplanes:
        raise FileNotFoundError(f"{out}: the profiler wrote no .xplane.pb")
    s = summarise(Path(xplanes[-1]), hlo_text, steps, step_seconds, traced,
                  jax.default_backend())
    (out / "profile.json").write_text(json.dumps(s, indent=1))
    return s
