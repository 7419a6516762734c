"""Memory model of a training step: XLA's own memory and cost analysis, without running it.

Builds the real training step of a config (``s5jax.training.steps.make_train_step`` with the real
optimiser, ``train.remat``, ``optim.accumulate`` and the in-step synthesis of the loader's host
batch) for a global batch and clip length, compiles it for abstract arguments
(``jax.ShapeDtypeStruct``: nothing is allocated, nothing runs) and prints
``compiled.memory_analysis()`` and the FLOPs of ``compiled.cost_analysis()``:

    python scripts/memory.py --config configs/resunetk.py:baseline,bf16 [--batch 40] \
        [--seconds 10] [--ir_seconds 1] [--config.train.remat=blocks] [--config.optim.accumulate=4]

The last line is ``peak_bytes=<int> flops=<int>`` for the whole global batch, where

* ``peak_bytes`` = arguments + outputs − aliased + temporaries + generated code: the bytes XLA's
  buffer assignment reserves for one call of the step (its inputs, the outputs not written into
  donated inputs, the temporary buffer, code). It is what the device must hold while the step
  runs, not counting what the runtime adds (CUDA context, cuDNN workspaces, allocator
  fragmentation, the prefetched next batch).
* ``flops``: XLA's cost analysis of the compiled step. XLA counts a loop body once, so with
  ``optim.accumulate = k > 1`` the figure is instead the cost analysis of the same step lowered
  (not compiled) with ``accumulate = 1`` on the same global batch: the same arithmetic without the
  loop (at k = 1 the lowered and compiled counts agree to 0.6 % for ResUNetK, 1 s).

The figures are XLA:CPU's when run on CPU (``JAX_PLATFORMS=cpu``): a model of the GPU's, whose
buffer assignment, fusion and layouts differ (docs/benchmarks.md, "Memory model", says how far
they were checked). On a GPU machine the same command gives XLA:GPU's own analysis.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # s5jax without an install

from s5jax import mesh as mesh_lib  # noqa: E402
from s5jax.cli import parse_config_flags  # noqa: E402
from s5jax.data import loader  # noqa: E402
from s5jax.data.recipes import MixtureConfig  # noqa: E402
from s5jax.training import loop, optim, steps  # noqa: E402
from s5jax.training.state import create_state  # noqa: E402

CHANNELS = 4  # FOA / tetrahedral microphone: 4-channel mixtures and RIRs
GB = 1e9


def host_batch_spec(task: str, batch: int, seconds: float,
                    ir_seconds: float) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract loader batch (the keys and shapes ``s5jax.data.loader.read_item`` produces)."""
    cfg = MixtureConfig(duration=float(seconds))
    layout = loader.Layout(cfg.frames, CHANNELS, int(round(ir_seconds * cfg.sr)))
    item = loader.empty_item(cfg, layout, mode=task)
    return {k: jax.ShapeDtypeStruct((batch, *np.shape(v)), np.asarray(v).dtype)
            for k, v in item.items()}


def build(config, *, donate: bool = True) -> dict[str, Any]:
    """The config's model, optimiser, jitted train step and abstract state.

    ``config``: a full training config (``data.batch_size``, ``data.clip_seconds``,
    ``train.remat``, ``optim.accumulate`` are honoured). Returns a dict with ``task``, ``model``,
    ``tx``, ``labels``, ``mesh``, ``step``, ``state`` (abstract), ``init`` (a function
    ``seed → concrete variables``) and ``mixture_config``.
    """
    task = steps.task_of(config.model)
    loop.check_model_config(task, config.model)
    model = loop.build_model(task, config.model, config.train.get("remat", "none"))

    def init(seed: int = 0):
        return loop.init_variables(task, model, config.model, seed)

    variables = jax.eval_shape(init)
    labels = loop.param_labels_for(task, config.trainable, variables["params"])
    num_steps = int(config.train.num_steps)
    tx = optim.build_optimizer(config.optim, num_steps, labels)
    state = jax.eval_shape(lambda v: create_state(v, tx, 0), variables)
    mesh = mesh_lib.make_mesh()
    mix = MixtureConfig(duration=float(config.data.clip_seconds))
    channels = loop.render_channels(task, config.model)  # as the train command renders
    step = steps.make_train_step(
        task, model, tx, mesh,
        render=lambda b: loader.render_batch(b, mix, mode=task, channels=channels),
        param_labels=labels, lr_schedule=optim.make_schedule(config.optim, num_steps),
        donate=donate, accumulate=int(config.optim.get("accumulate", 1)),
    )
    return dict(task=task, model=model, tx=tx, labels=labels, mesh=mesh, step=step, state=state,
                init=init, mixture_config=mix)


def analyse(config, *, ir_seconds: float = 1.0) -> dict[str, Any]:
    """Compile the config's step for abstract arguments; XLA's memory and FLOP figures."""
    built = build(config)
    batch = host_batch_spec(built["task"], int(config.data.batch_size), config.data.clip_seconds,
                            ir_seconds)
    compiled = built["step"].lower(built["state"], batch).compile()
    return figures(config, built, compiled, batch)


def lowered_flops(config, batch) -> int:
    """XLA's FLOP count of the config's step for the whole global ``batch`` (abstract) in one
    micro-batch (``optim.accumulate`` set to 1), from the lowered, not yet compiled, program.

    Only XLA:CPU counts a lowered program; on a GPU run ``--flops_only`` under
    ``JAX_PLATFORMS=cpu`` instead (a compiled GPU program hides its convolutions in cuDNN calls
    that the cost analysis does not count)."""
    whole = config.copy_and_resolve_references()
    whole.optim.accumulate = 1
    b1 = build(whole)
    cost = b1["step"].lower(b1["state"], batch).cost_analysis()
    if cost is None:
        raise RuntimeError(f"XLA:{jax.default_backend().upper()} counts no FLOPs of a lowered "
                           "program: count them on the CPU (scripts/memory.py --flops_only)")
    return int(cost["flops"])


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def figures(config, built: dict[str, Any], compiled, batch) -> dict[str, Any]:
    """Memory and FLOP figures of a compiled step (``batch``: the loader batch it was compiled
    for, abstract or concrete). See the module docstring for the definitions."""
    mem = compiled.memory_analysis()
    out = dict(
        platform=jax.devices()[0].platform,
        arguments=int(mem.argument_size_in_bytes),
        outputs=int(mem.output_size_in_bytes),
        aliased=int(mem.alias_size_in_bytes),
        temporaries=int(mem.temp_size_in_bytes),
        code=int(mem.generated_code_size_in_bytes),
        state=_nbytes(built["state"]),
        batch_bytes=_nbytes(batch),
        compiled_flops=int(compiled.cost_analysis()["flops"]),
    )
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"] + out[
        "code"]
    if out["platform"] != "cpu":
        # XLA:GPU counts no lowered program, and its compiled count misses the convolutions
        # (cuDNN calls): 0.33 instead of 22.2 TFLOP for a batch-16 ResUNetK step on an H200.
        out["flops"], out["flops_source"] = None, (
            f"not counted on {out['platform']}: run with JAX_PLATFORMS=cpu, or --flops_only")
    elif int(config.optim.get("accumulate", 1)) == 1:
        out["flops"], out["flops_source"] = out["compiled_flops"], "compiled step"
    else:
        abstract = {k: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for k, v in batch.items()}
        out["flops"] = lowered_flops(config, abstract)
        out["flops_source"] = ("step lowered with accumulate=1 (XLA counts the compiled loop "
                               f"body once: {out['compiled_flops'] / GB:.1f} GFLOP)")
    return out


def report(config, res: dict[str, Any], command: str) -> str:
    """Human-readable lines plus the final ``peak_bytes=… flops=…`` line."""
    b, k = int(config.data.batch_size), int(config.optim.get("accumulate", 1))
    flops = res["flops"]
    counted = "" if flops is None else f"{flops / 1e12:9.3f} TFLOP per step "
    lines = [
        f"command      {command}",
        f"step         {config.get('name')}: global batch {b} = {k} × micro-batch {b // k}, "
        f"{config.data.clip_seconds:g} s clips, {config.precision}, "
        f"remat {config.train.get('remat', 'none')}; XLA:{res['platform'].upper()}",
        f"arguments    {res['arguments'] / GB:9.3f} GB  (state {res['state'] / GB:.4g} GB, "
        f"loader batch {res['batch_bytes'] / GB:.4g} GB)",
        f"outputs      {res['outputs'] / GB:9.3f} GB",
        f"aliased      {res['aliased'] / GB:9.3f} GB  (outputs written into the donated state)",
        f"temporaries  {res['temporaries'] / GB:9.3f} GB",
        f"code         {res['code'] / GB:9.3f} GB",
        f"peak         {res['peak'] / GB:9.3f} GB  = arguments + outputs − aliased + "
        "temporaries + code",
        f"per example  {res['peak'] / b / GB:9.3f} GB of peak (peak / global batch)"
        + (f", {flops / b / 1e12:.3f} TFLOP" if flops is not None else ""),
        f"flops        {counted}({res['flops_source']})",
        f"peak_bytes={res['peak']} flops={'unknown' if flops is None else flops}",
    ]
    return "\n".join(lines)


# XLA:CPU flags of the model (set before JAX starts its backends):
# * no LLVM optimisation of the generated code: the script never runs it, buffer assignment
#   happens before code generation (the same peak, temporaries and FLOPs, checked on ResUNetK
#   at 1 s), and compiling is 2.5x faster;
# * the memory-minimising scheduler instead of XLA:CPU's default concurrency-optimised one,
#   which trades memory for parallel CPU threads (2026-11-28, ResUNetK baseline, 10 s: 5.52
#   instead of 5.81 GB per example; with train.remat=blocks 3.92 instead of 5.81: the default CPU
#   scheduler recomputed the blocks early and saved nothing). A GPU schedules for memory.
MODEL_FLAGS = ("--xla_backend_optimization_level=0",
               "--xla_cpu_enable_concurrency_optimized_scheduler=false")


def model_flags() -> None:
    """Add ``MODEL_FLAGS`` to ``XLA_FLAGS`` (call before JAX starts its backends) and select the
    accelerators' convolutions (``lax``), not XLA:CPU's fast path of s5jax.models.conv, whose
    kernel-gradient chunks would be modelled instead of the GPU's buffers."""
    from s5jax.models import conv

    conv.use_gemm = lambda: False
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in MODEL_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


def main() -> None:
    model_flags()
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file("config", None, "Training config file[:presets].")
    batch = flags.DEFINE_integer("batch", None, "global batch (default: data.batch_size)")
    seconds = flags.DEFINE_float("seconds", None, "clip length (default: data.clip_seconds)")
    ir_seconds = flags.DEFINE_float("ir_seconds", 1.0, "RIR length (baseline rooms: ≤ 1 s)")
    flops_only = flags.DEFINE_bool(
        "flops_only", False, "print only flops=<int> of the lowered step (no compilation; what "
        "bench_train_step.py uses for the MFU on a GPU)")
    flags.mark_flags_as_required(["config"])
    # Checked when parsed (one error line naming the flag), not by the step's tracing: a zero
    # batch was a ZeroDivisionError, zero seconds a gather error, a zero RIR length an FFT one.
    for name, positive in (("batch", lambda v: v >= 1), ("seconds", lambda v: 0 < v < math.inf),
                           ("ir_seconds", lambda v: 0 < v < math.inf)):
        flags.register_validator(
            name, lambda v, positive=positive: v is None or positive(v),
            message="expected an integer ≥ 1" if name == "batch" else "expected a number > 0")

    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        config = cfg_flag.value
        if batch.value is not None:
            config.data.batch_size = batch.value
        if seconds.value is not None:
            config.data.clip_seconds = seconds.value
        k = int(config.optim.get("accumulate", 1))
        if config.data.batch_size % k:
            raise app.UsageError(f"batch {config.data.batch_size} is not a multiple of "
                                 f"optim.accumulate={k}")
        if flops_only.value:
            spec = host_batch_spec(steps.task_of(config.model), int(config.data.batch_size),
                                   config.data.clip_seconds, ir_seconds.value)
            print(f"flops={lowered_flops(config, spec)}")
            return
        res = analyse(config, ir_seconds=ir_seconds.value)
        print(report(config, res, "python scripts/memory.py " + " ".join(sys.argv[1:])))

    app.run(run, flags_parser=parse_config_flags)


if __name__ == "__main__":
    main()
