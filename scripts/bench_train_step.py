"""Training-step time: jitted s5jax ResUNetK vs the official ResUNet30 (PyTorch), one run.

Two measurements, each on the same batch and in train mode (BatchNorm batch statistics):

* forward + backward: masked −SNR loss over the 3·B slots and its gradient with respect to all
  parameters;
* full step: the same plus global-norm clipping 0.5 and an AdamW-AMSGrad update.

Architecture: ResUNetK baseline (β FiLM, no DPRNN, official widths), float32. The PyTorch model is
the official ``ResUNet30(input_channels=4, output_channels=1, target_sources_num=3,
label_len=54)`` (config/separation/resunetk.yaml) imported from a checkout of the official 2025
baseline given with ``--official PATH`` (``src/models/resunet2/resunet_mod.py`` under it; nothing
is copied). Without ``--official``, the fallback is tests/reference/resunet.py, a module written
here from the spec — slower than the official one; the row says which reference ran. After a
warm-up (JAX: compilation), the timed calls alternate s5jax and PyTorch, and each figure is the
median over ``--repeats`` rounds, so load from other processes hits both sides alike. Where XLA
counts a lowered program (CPU), the row also gives the forward + backward's FLOPs, both sides'
achieved FLOP rates against this device's float32 GEMM rate (a jitted 2048² product), and the
rate s5jax would need to take 0.8 × the reference's time.

    python scripts/bench_train_step.py [--batch 1] [--seconds 4] [--repeats 5] \
        [--official PATH] [--append docs/benchmarks.md]

``--config`` mode — the training step exactly as ``s5jax.train`` builds it for the config
(``train.remat``, ``optim.accumulate``, precision, synthesis inside the step from a synthetic
loader batch), timed per step after compilation; the row also gives how long tracing and
compiling the step took (what a run waits for before its first step; a load, not a compilation,
when JAX's persistent compilation cache holds it, and the row says when the cache is on). FLOPs
come from XLA's cost analysis (as scripts/memory.py counts them); TFLOP/s = FLOPs / median step
time, MFU = TFLOP/s / the device's peak (``--peak-tflops``, else the table ``PEAK_TFLOPS`` by
device kind and precision).
``--profile DIR`` then traces two more steps and prints where the step's time goes: device busy
against the step's wall time, op time by kind (convolution, matmul, FFT, elementwise, …) and by
phase (forward, backward, the rest), the longest ops (scripts/profiling.py); the row gets the
busy fraction and the kinds' shares.

    python scripts/bench_train_step.py --config configs/resunetk.py:baseline_1gpu,bf16 \
        [--batch 40] [--seconds 10] [--repeats 5] [--peak-tflops 989] [--profile DIR] \
        [--append …]

``--task dcase2026`` instead times the same jitted step with the DCASE 2025 loss (masked −SNR)
and the DCASE 2026 loss (class-aware PIT −SNR over the 6 slot permutations) on one model and one
batch (labels with repeated classes), alternating the two calls so that both see the same
machine state, and reports both medians (no torch side).
"""

from __future__ import annotations

import ast
import importlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.reference

import benchlib  # noqa: E402
import profiling  # noqa: E402

from s5jax import hostmem, metrics  # noqa: E402
from s5jax import labels as labels_lib  # noqa: E402
from s5jax import mesh as mesh_lib  # noqa: E402
from s5jax.cli import load_config  # noqa: E402
from s5jax.models import conv  # noqa: E402
from s5jax.models.separator import build_separator, separator_config  # noqa: E402
from s5jax.training import loop, optim, steps  # noqa: E402
from s5jax.training.state import create_state  # noqa: E402

OPTIM = dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=True,
             clip_norm=0.5, schedule="constant", warmup_steps=0)
OFFICIAL_MODULE = "src/models/resunet2/resunet_mod.py"


def make_batch(batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.full((batch, 3), -1, np.int32)
    for b in range(batch):
        n = 1 + b % 3
        labels[b, :n] = rng.choice(18, n, replace=False)
    dry = rng.standard_normal((batch, 3, length)).astype(np.float32) * 0.1
    dry *= (labels != -1)[..., None]
    mixture = dry.sum(1, keepdims=True) + 0.02 * rng.standard_normal((batch, 4, length))
    return {"mixture": mixture.astype(np.float32), "dry": dry, "labels": labels}


def baseline_model():
    """``(config, model)``: the benchmarked ResUNetK (baseline architecture, official widths)."""
    cfg = separator_config(name="resunetk", film="beta", bottleneck="none")
    return cfg, build_separator(cfg)


def jax_runs(data) -> dict[str, object]:
    """``{"fwd_bwd": fn, "step": fn}``: s5jax callables that block until their result is ready."""
    cfg, model = baseline_model()
    variables = loop.init_variables(steps.SEPARATOR, model, cfg, 0)
    tx = optim.build_optimizer(ml_collections.ConfigDict(OPTIM), 1000)
    mesh = mesh_lib.make_mesh()
    step = steps.make_train_step(steps.SEPARATOR, model, tx, mesh)
    batch = mesh_lib.put_batch(data, mesh)
    key = jax.random.key(0)
    grad = jax.jit(jax.grad(
        lambda p, s, d: steps.loss_fn(steps.SEPARATOR, model, p, s, d, key), has_aux=True))
    holder = [create_state(variables, tx, 0)]  # the step donates its state

    def fwd_bwd():
        state = holder[0]
        jax.block_until_ready(grad(state.params, state.batch_stats, batch))

    def full_step():
        holder[0], m = step(holder[0], batch)
        jax.block_until_ready(m["loss"])

    return {"fwd_bwd": fwd_bwd, "step": full_step}


def fwd_bwd_flops(data) -> int | None:
    """XLA's FLOP count of the timed forward + backward (``jax_runs``), traced with the
    accelerators' convolutions (``lax``): the CPU path computes the same products, but XLA counts
    its kernel-gradient loops' bodies once. ``None`` where XLA counts no lowered program (GPU)."""
    cfg, model = baseline_model()
    variables = jax.eval_shape(lambda: loop.init_variables(steps.SEPARATOR, model, cfg, 0))
    key = jax.random.key(0)
    saved, conv.use_gemm = conv.use_gemm, lambda: False
    try:  # a new function, so that no trace made with the CPU path is reused
        cost = jax.jit(lambda p, s, d: jax.grad(
            lambda p: steps.loss_fn(steps.SEPARATOR, model, p, s, d, key), has_aux=True)(p)).lower(
            variables["params"], variables["batch_stats"], data).cost_analysis()
    finally:
        conv.use_gemm = saved
    return int(cost["flops"]) if cost else None


def roofline(flops: int, t_ours: float, t_ref: float, rate: float) -> str:
    """Achieved FLOP rates of both sides, as fractions of the device's GEMM rate ``rate``
    (FLOP/s), and the rate s5jax would need to take 0.8 × the reference's time."""
    def pct(t: float) -> str:
        return f"{flops / t / 1e9:.0f} GFLOP/s ({flops / t / rate:.0%})"
    return (f"{flops / 1e9:.1f} GFLOP per forward+backward (XLA, lax convolutions); this device's "
            f"float32 GEMM (2048², jitted) {rate / 1e9:.0f} GFLOP/s; s5jax {pct(t_ours)}, "
            f"reference {pct(t_ref)}; s5jax at 0.8 × the reference's time: {pct(0.8 * t_ref)}")


def repeated_labels(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch with DCASE 2026 labels: every other mixture repeats its first class."""
    labels = data["labels"].copy()
    for b in range(0, len(labels), 2):
        if labels[b, 1] >= 0:
            labels[b, 1] = labels[b, 0]
    return dict(data, labels=labels)


def _loss_runner(data, edition: str):
    """One jitted step of the official ResUNetK with ``edition``'s loss, always from the same
    state (no donation): every call does the same work."""
    cfg, model = baseline_model()
    variables = loop.init_variables(steps.SEPARATOR, model, cfg, 0)
    tx = optim.build_optimizer(ml_collections.ConfigDict(OPTIM), 1000)
    mesh = mesh_lib.make_mesh()
    state = create_state(variables, tx, 0)
    step = steps.make_train_step(steps.SEPARATOR, model, tx, mesh, donate=False,
                                 edition=edition)
    batch = mesh_lib.put_batch(data, mesh)

    def run():
        _, m = step(state, batch)  # the same state every call: one model, one batch
        jax.block_until_ready(m["loss"])

    return run


def _loss_only(data, edition: str):
    """The loss and its gradient alone, on estimates of the batch's shape."""
    est = jnp.asarray(data["dry"]) + 0.1
    ref, labels = jnp.asarray(data["dry"]), jnp.asarray(data["labels"])
    if edition == "dcase2026":
        fn = jax.jit(jax.grad(lambda e: jnp.mean(metrics.class_aware_pit_loss(e, ref, labels))))
    else:
        fn = jax.jit(jax.grad(lambda e: metrics.snr_loss(e, ref, labels_lib.active(labels))))
    return lambda: jax.block_until_ready(fn(est))


def bench_losses(data, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Step times with the 2025 and the 2026 loss, and the two losses alone, alternating."""
    editions = ("dcase2025", "dcase2026")
    return {
        "step": benchlib.alternating_times({e: _loss_runner(data, e) for e in editions}, repeats,
                                          warmup=2),
        "loss": benchlib.alternating_times({e: _loss_only(data, e) for e in editions},
                                          max(repeats, 50), warmup=2),
    }


def torch_model(official: Path | None):
    """``(model, call, label)``: ``call(model, mixture, query) → (B, 3, L)``."""
    import torch

    torch.manual_seed(0)
    if official is None:
        from tests.reference.resunet import ResUNet30

        return (ResUNet30(slots=3), lambda m, x, q: m(x, q),
                "tests/reference (written here)")
    official = official.resolve()
    if not (official / OFFICIAL_MODULE).is_file():
        raise SystemExit(f"--official {official}: no {OFFICIAL_MODULE} there (expected a checkout "
                         "of the DCASE 2025 task 4 baseline)")
    sys.path.insert(0, str(official))  # the official code imports itself as the package `src`
    resunet_mod = importlib.import_module("src.models.resunet2.resunet_mod")
    model = resunet_mod.ResUNet30(input_channels=4, output_channels=1, target_sources_num=3,
                                  label_len=54)

    def call(m, x, q):
        out = m({"mixture": x, "label_vector": q})["waveform"]  # (B, 3, 1, L)
        return out[:, :, 0]

    return model, call, f"official ResUNet30 at {official}"


def torch_runs(data, official: Path | None) -> tuple[dict[str, object], str, str]:
    """``({"fwd_bwd": fn, "step": fn}, reference label, where torch ran)``: on the GPU, in
    float32 with torch's defaults (TF32 off for matmuls, cuDNN's choice for convolutions), when
    JAX runs on one."""
    import torch

    model, call, label = torch_model(official)
    # The same accelerator as JAX's: CUDA when JAX runs on a GPU (and torch sees one), else CPU.
    dev = torch.device("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available()
                       else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            amsgrad=True)
    mixture = torch.from_numpy(data["mixture"]).to(dev)
    dry = torch.from_numpy(data["dry"]).to(dev)
    query = torch.from_numpy(np.array(labels_lib.query(jnp.asarray(data["labels"])))).to(dev)
    active = torch.from_numpy(data["labels"] != -1).float().to(dev)
    eps = torch.finfo(torch.float32).eps

    def _fwd_bwd():
        opt.zero_grad(set_to_none=True)
        est = call(model, mixture, query)
        snr = 10 * torch.log10(((dry**2).sum(-1) + eps) / (((dry - est) ** 2).sum(-1) + eps))
        loss = -(active * snr).sum() / active.numel()
        loss.backward()

    def fwd_bwd():
        _fwd_bwd()
        sync()

    def full_step():
        _fwd_bwd()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        sync()

    where = (f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}" if dev.type == "cuda"
             else f"{torch.get_num_threads()} torch threads")
    return {"fwd_bwd": fwd_bwd, "step": full_step}, label, where


# Dense peak TFLOP/s by device kind and step precision. H100 SXM (and H200, the same compute):
# BF16 tensor cores 989.4; float32 convolutions and matmuls run on TF32 tensor cores under JAX's
# default precision on GPU (494.7 dense); plain FP32 (non-tensor) is 66.9.
PEAK_TFLOPS = {
    ("H100", "bfloat16"): 989.4, ("H100", "float32"): 494.7,
    ("H200", "bfloat16"): 989.4, ("H200", "float32"): 494.7,
}


def peak_tflops(precision: str, kind: str | None = None) -> float | None:
    """The table's peak for the first device (or a device ``kind``), or ``None`` (unknown
    device, e.g. a CPU, or a PCIe / NVL variant, whose clocks and peaks are lower than the SXM
    parts' in the table: give ``--peak-tflops``)."""
    kind = benchlib.device_kind() if kind is None else kind
    if "PCIe" in kind or "NVL" in kind:
        return None
    for (name, prec), peak in PEAK_TFLOPS.items():
        if name in kind and prec == precision:
            return peak
    return None


def synthetic_host_batch(spec: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """A loader-shaped host batch of random but valid mixtures: every event slot active with a
    full-length source and RIR, the renderer's worst case (its loops run over the (event, block)
    pairs that hold samples; the embedded data's events fill about half of their windows)."""
    rng = np.random.default_rng(seed)
    b, e, ls = spec["source"].shape
    r, n = spec["ir"].shape[2:]
    s = spec["labels"].shape[1]
    t = np.arange(n)
    ir = rng.standard_normal((b, e, r, n)) * np.exp(-t / 6000.0) * 0.1
    ir[..., 300] = 1.0
    labels = np.stack([rng.choice(18, s, replace=False) for _ in range(b)]).astype(np.int32)
    out = dict(
        source=rng.standard_normal((b, e, ls)), source_len=np.full((b, e), ls),
        ir=ir, ir_len=np.full((b, e), n), onset=np.zeros((b, e)),
        level_db=-50 + rng.uniform(0, 20, (b, e)), active=np.ones((b, e), bool),
        noise=rng.standard_normal((b, r, ls)), noise_active=np.ones(b, bool),
        noise_db=np.full(b, -50.0), labels=labels,
    )
    if "multi_hot" in spec:
        out["multi_hot"] = np.asarray(labels_lib.multi_hot(jnp.asarray(labels)))
    return {k: np.asarray(v).astype(spec[k].dtype) for k, v in out.items()}


def _override(config, assignment: str) -> None:
    """``a.b=value`` (value read as a Python literal, else kept as a string) into ``config``.

    ``ValueError`` naming the assignment if it is not ``KEY=VALUE``, if ``a.b`` is not a field
    of the config (a ConfigDict would add a new key silently, or raise a bare ``KeyError``), or
    if the value does not fit the field's type."""
    key, eq, raw = assignment.partition("=")
    if not eq or not key:
        raise ValueError(f"--set {assignment}: expected KEY=VALUE, e.g. optim.accumulate=2")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    *path, last = key.split(".")
    node = config
    for part in [*path, last]:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ValueError(f"--set {assignment}: the config has no field {key}")
        parent, node = node, node[part]
    try:
        parent[last] = value
    except TypeError:
        raise ValueError(f"--set {assignment}: {key} is a {type(node).__name__}, "
                         f"not {value!r}") from None


def cpu_flops(args, batch: int, seconds: float) -> int:
    """XLA:CPU's FLOP count of the config's step for the whole batch, from the lowered program
    (``scripts/memory.py --flops_only`` in a CPU-only subprocess). On a GPU the compiled
    program's own count misses the convolutions, which run as cuDNN calls (measured on an H200:
    0.33 TFLOP for a 16-example ResUNetK step that XLA:CPU counts as about 22)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "memory.py"), f"--config={args.config}",
           "--flops_only", f"--batch={batch}", f"--seconds={seconds:g}",
           *[f"--config.{a}" for a in args.set]]
    done = subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, check=False)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode or not last.startswith("flops="):
        raise SystemExit(f"counting the FLOPs on the CPU failed: {' '.join(cmd)}\n"
                         f"{done.stderr[-2000:]}")
    return int(last.removeprefix("flops="))


def config_main(args, config) -> int:
    """``--config`` mode; ``config``: the loaded config with the ``--set`` overrides applied."""
    import memory

    if args.batch is not None:
        config.data.batch_size = args.batch
    if args.seconds is not None:
        config.data.clip_seconds = args.seconds
    built = memory.build(config)
    b = int(config.data.batch_size)
    spec = memory.host_batch_spec(built["task"], b, config.data.clip_seconds, 1.0)
    mesh = built["mesh"]
    state = jax.device_put(create_state(built["init"](0), built["tx"], 0),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    batch = mesh_lib.put_batch(synthetic_host_batch(spec), mesh)
    tic = time.perf_counter()
    step = built["step"].lower(state, batch).compile()
    compile_s = time.perf_counter() - tic  # what a run waits for before its first step
    cached = " (persistent compilation cache on)" if jax.config.jax_compilation_cache_dir else ""
    res = memory.figures(config, built, step, batch)  # XLA's own memory and FLOP counts
    holder = [state, None]

    def run():
        holder[0], holder[1] = step(holder[0], batch)
        jax.block_until_ready(holder[1]["loss"])

    t = benchlib.median_time(run, args.repeats, warmup=1)
    if not np.isfinite(float(holder[1]["loss"])) or int(holder[1]["skipped"]):
        raise SystemExit("the benchmarked step produced a non-finite loss")
    profiled, failed = "", False
    if args.profile:  # after the timed calls, so it cannot change them
        try:
            s = profiling.profile(run, step.as_text(), args.profile, step_seconds=t)
            print(profiling.report(s))
            profiled = (f"; profile: device busy {s['busy_ms'] / s['traced_step_ms']:.0%} of "
                        f"the traced step ({s['traced_step_ms']:.0f} ms), "
                        "op time " + ", ".join(f"{k} {v / s['op_ms']:.0%}" for k, v in sorted(
                            s["kinds"].items(), key=lambda kv: -kv[1])))
        except Exception as e:  # the timed row is still worth keeping
            print(f"profile failed: {type(e).__name__}: {e}")
            failed = True
    flops = res["flops"]  # None off the CPU (memory.figures)
    if flops is None:
        flops = cpu_flops(args, b, config.data.clip_seconds)
    tflops = flops / t / 1e12
    peak = args.peak_tflops or peak_tflops(config.precision)
    mfu = (f"{tflops / peak:.1%} of {peak:g}" if peak
           else "– (no peak known for this device: give --peak-tflops)")
    dev = jax.devices()[0]
    used = (dev.memory_stats() or {}).get("peak_bytes_in_use") if dev.platform != "cpu" else None
    k = int(config.optim.get("accumulate", 1))
    result = (f"{t * 1e3:.0f} ms/step ({b / t:.2f} examples/s), B={b} = {k} × {b // k}, "
              f"{config.data.clip_seconds:g} s, {config.precision}, remat "
              f"{config.train.get('remat', 'none')}; XLA:CPU {flops / 1e12:.3g} TFLOP/step → "
              f"{tflops:.3g} TFLOP/s, MFU {mfu}; XLA:{res['platform'].upper()} peak "
              f"{res['peak'] / 1e9:.1f} GB"
              + (f", measured peak {used / 1e9:.1f} GB" if used else "")
              + f"; median of {args.repeats}; traced and compiled in {compile_s:.1f} s{cached}"
              + profiled)
    print(f"{config.get('name')} on {benchlib.device_kind()}: {result}")
    if args.append:
        benchlib.append_row(args.append, benchmark=f"train step ({config.get('name')})",
                            command=benchlib.command("bench_train_step.py", args.argv),
                            result=result, ratio=f"MFU {mfu.split(' of')[0]}")
    return int(failed)


def main(argv: list[str] | None = None) -> int:
    # As the s5jax commands run (s5jax/hostmem.py). One process: the PyTorch side gets the same
    # allocator, so the ratio compares the two models, not the two allocators.
    kept = hostmem.keep_freed_memory()
    ap = benchlib.parser(__doc__, batch=None, repeats=5)
    ap.add_argument("--seconds", type=benchlib.positive_float, default=None)
    ap.add_argument("--official", type=Path, default=None,
                    help="checkout of the official DCASE 2025 task 4 baseline to compare against")
    ap.add_argument("--config", default=None, help="config[:presets]: the real step's MFU")
    ap.add_argument("--peak-tflops", type=benchlib.positive_float, default=None,
                    help="device peak for the MFU")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="--config mode: trace 2 more steps into DIR and print where the time "
                         "goes (scripts/profiling.py)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (--config mode), e.g. optim.accumulate=2")
    ap.add_argument("--task", choices=("dcase2025", "dcase2026"), default="dcase2025",
                    help="dcase2026: the 2025 vs the 2026 (class-aware PIT) loss, no torch side")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.profile and not args.config:
        ap.error("--profile traces the --config step: give --config too")
    if args.profile:  # before the minutes of compiling and timing, not after them
        try:
            args.profile.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            ap.error(f"--profile {args.profile}: cannot create the folder ({e.strerror})")
    if args.set and not args.config:
        ap.error("--set overrides the --config step's config: give --config too")
    if args.config:  # loaded and overridden here, so that a bad --set is a usage error at once
        try:
            config = load_config(args.config)
        except ValueError as e:
            ap.error(f"--config {e}")
        for assignment in args.set:
            try:
                _override(config, assignment)
            except ValueError as e:
                ap.error(str(e))
        return config_main(args, config)
    args.batch = 1 if args.batch is None else args.batch
    args.seconds = 4.0 if args.seconds is None else args.seconds
    length = int(args.seconds * 32000)
    data = make_batch(args.batch, length)
    if args.task == "dcase2026":
        return main_losses(args, repeated_labels(data))
    ours = jax_runs(data)
    theirs, label, where = torch_runs(data, args.official)
    fns = {f"{side} {kind}": fn for side, runs in (("s5jax", ours), ("torch", theirs))
           for kind, fn in runs.items()}
    times = benchlib.alternating_times(fns, args.repeats, warmup=2)
    for name, ts in times.items():
        print(f"{name:15s} " + " ".join(f"{1000 * x:.0f}" for x in ts) + " ms")
    t = {name: statistics.median(ts) for name, ts in times.items()}
    lines = []
    for kind, title in (("fwd_bwd", "forward+backward"), ("step", "full step")):
        a, b = t[f"s5jax {kind}"], t[f"torch {kind}"]
        lines.append(f"{title}: s5jax {1000 * a:.0f} ms, torch {1000 * b:.0f} ms "
                     f"(s5jax/torch {a / b:.2f})")
        print(lines[-1])
    flops = fwd_bwd_flops(data)
    if flops:
        lines.append(roofline(flops, t["s5jax fwd_bwd"], t["torch fwd_bwd"], benchlib.gemm_rate()))
        print(lines[-1])
    result = (f"B={args.batch}, {args.seconds:g} s, fp32, {benchlib.device_kind()}, medians of "
              f"{args.repeats} alternating rounds; " + "; ".join(lines) +
              f"; reference: {label}, {where}; glibc malloc "
              + ("keeping freed memory (s5jax/hostmem.py), both sides" if kept else "defaults"))
    print(result)
    if args.append:
        ratio = t["torch fwd_bwd"] / t["s5jax fwd_bwd"]
        benchlib.append_row(args.append,
                            benchmark="train step (ResUNetK baseline, official widths)",
                            command=benchlib.command("bench_train_step.py", argv),
                            result=result, ratio=f"{ratio:.2f}x (forward+backward)")
    return 0


def main_losses(args, data) -> int:
    t = bench_losses(data, args.repeats)
    med = {k: {e: statistics.median(v) for e, v in d.items()} for k, d in t.items()}
    low = {e: min(v) for e, v in t["step"].items()}
    t25, t26 = med["step"]["dcase2025"], med["step"]["dcase2026"]
    result = (f"step with the 2025 loss {1000 * t25:.0f} ms (min {1000 * low['dcase2025']:.0f}), "
              f"with the 2026 class-aware PIT loss {1000 * t26:.0f} ms (min "
              f"{1000 * low['dcase2026']:.0f}); the loss + its gradient alone "
              f"{1000 * med['loss']['dcase2025']:.2f} vs {1000 * med['loss']['dcase2026']:.2f} "
              f"ms (B={args.batch}, {args.seconds:g} s, fp32, labels with repeats, calls "
              f"alternating, medians of {args.repeats} steps / {max(args.repeats, 50)} losses)")
    print(result)
    if args.append:
        cmd = (f"python scripts/bench_train_step.py --task dcase2026 --batch {args.batch} "
               f"--seconds {args.seconds:g} --repeats {args.repeats} --append {args.append}")
        benchlib.append_row(args.append,
                            benchmark="train step (ResUNetK, official widths): 2026 vs 2025 loss",
                            command=cmd, result=result,
                            ratio=f"{low['dcase2026'] / low['dcase2025']:.3f}x (min), "
                                  f"{t26 / t25:.3f}x (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
