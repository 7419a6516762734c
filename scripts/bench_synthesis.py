"""Mixtures per second: jitted renderer (s5jax.data.synth.render) vs the float64 scipy reference;
with ``--dataset``, s5jax's loader + renderer on a dataset root vs the official generator.

Default mode — workload per mixture (worst case of spec §2.5): 10-s 4-ch mixture, 3 targets +
2 interferers with 10-s sources, 1-s RIRs, background noise, dry targets. Synthetic arrays (no
disk I/O: this measures rendering only). Timings are medians over repeats, after compilation.

    python scripts/bench_synthesis.py [--batch 8] [--repeats 5] [--append docs/benchmarks.md]

``--dataset`` mode — what a training run pays per 10-s mixture: s5jax's Grain loader (recipe,
windowed WAV reads, one SOFA IR per event) + the jitted renderer on the default device, timed
per batch after a warm-up batch (compilation, worker start); against the official
``DatasetS5`` in generate mode (baseline training config) through a torch ``DataLoader`` with
the same batch and worker count, run by ``scripts/official_synthesis.py`` in
``--official-python`` (the official code's dependencies need their own environment). The root
defaults to the embedded ``full`` dataset (built on first use).

    python scripts/bench_synthesis.py --dataset [--root DIR] [--batch 4] [--batches 4] \
        [--rounds 3] [--workers 0] [--official PATH --official-python PY [--spatialscaper PATH]] \
        [--profile] [--cpu-devices 1]

Each round times ``--batches`` batches of s5jax, then as many of the official generator (a fresh
subprocess: its start-up and first batch are not timed); rounds alternate the two, so that the
changing load of a shared machine hits both alike.

``--cpu-devices N`` splits the CPU into N JAX devices; the batch is placed and rendered over a
``data`` mesh of all devices, each device rendering its own items, as the train step does.

``--profile`` (with ``--workers 0``) splits s5jax's time into WAV reads, SOFA IR reads, the rest
of the host item and the renderer.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # s5jax without an install

import benchlib  # noqa: E402

from s5jax import hostmem  # noqa: E402
from s5jax import mesh as mesh_lib  # noqa: E402
from s5jax.data import synth  # noqa: E402

SR, L, R, N, S, E = 32000, 320_000, 4, 32_000, 3, 5


def make_item(rng: np.random.Generator) -> dict:
    t = np.arange(N)
    ir = rng.standard_normal((E, R, N)) * np.exp(-t / 6000.0) * 0.1
    ir[:, 0, 300] = 1.0
    return dict(
        source=rng.standard_normal((E, L)).astype(np.float32),
        source_len=np.full(E, L, np.int32),
        ir=ir.astype(np.float32),
        ir_len=np.full(E, N, np.int32),
        onset=np.zeros(E, np.int32),
        level_db=(-50 + rng.uniform(0, 20, E)).astype(np.float32),
        active=np.ones(E, bool),
        noise=rng.standard_normal((R, L)).astype(np.float32),
        noise_active=np.bool_(True),
        noise_db=np.float32(-50.0),
        labels=np.arange(S, dtype=np.int32),
    )


class _Timed:
    """Wraps a function, accumulating its wall time (profiling of the host side)."""

    def __init__(self, fn):
        self.fn, self.total = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - t0


def s5jax_dataset_timer(root: Path, *, batch: int, workers: int, read_threads: int,
                        profile: bool):
    """``(timed, info)``: ``timed(n)`` → per-mixture (wall, CPU) seconds of n batches of s5jax's
    loader + renderer on ``root`` (compiled and warmed up on creation); ``info`` holds the
    profile it fills and ``close``, which stops the loader (with workers, the batches they
    prefetched into shared memory are released: left open, Python warns of "leaked
    shared_memory objects" at exit). Batches are taken as training takes them
    (``loader.owned``: on the CPU, copied out of the workers' shared memory)."""
    from s5jax.data import catalog as catalog_lib
    from s5jax.data import loader
    from s5jax.data.recipes import MixtureConfig

    cfg = MixtureConfig(duration=10.0)
    cat = catalog_lib.scan(root)
    timers = {}
    if profile:
        if workers:
            raise SystemExit("--profile needs --workers 0 (timers live in this process)")
        timers = {"wav": _Timed(loader.wav.load), "sofa": _Timed(loader.sofa.read_ir),
                  "item": _Timed(loader.read_item)}
        loader.wav.load, loader.sofa.read_ir = timers["wav"], timers["sofa"]
        loader.read_item = timers["item"]
    it = loader.make_train_iterator(cat, batch_size=batch, seed=0, mode="separator",
                                    num_workers=workers, config=cfg, read_threads=read_threads)
    mesh = mesh_lib.make_mesh()  # as training places and renders its batches (in its jitted step)
    render_fn = jax.jit(mesh_lib.on_mesh(lambda b: loader.render_batch(b, cfg), mesh))
    info = {"ir_frames": max(r.ir_frames for r in cat.splits["train"].rooms), "render": 0.0,
            "mixtures": 0}

    def render() -> None:
        out = render_fn(loader.to_device(host, mesh))
        jax.block_until_ready(out)

    def close() -> None:
        if hasattr(it, "close"):
            it.close()

    try:
        host = loader.owned(next(it))
        render()  # warm-up: compilation, worker start
    except BaseException:  # e.g. the render does not compile: stop the workers all the same
        close()
        raise
    for t in timers.values():
        t.total = 0.0

    def timed(n: int) -> list[tuple[float, float]]:
        nonlocal host
        times = []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            host = loader.owned(next(it))  # as training's DevicePrefetch takes it
            t1 = time.perf_counter()
            render()
            t2, c2 = time.perf_counter(), time.process_time()
            info["render"] += t2 - t1
            info["mixtures"] += batch
            times.append(((t2 - t0) / batch, (c2 - c0) / batch))
        parts = {k: t.total / info["mixtures"] for k, t in timers.items()}
        if profile:
            parts["item_other"] = parts.pop("item") - parts["wav"] - parts["sofa"]
        parts["render"] = info["render"] / info["mixtures"]
        info["parts_s"] = parts
        return times

    info["close"] = close

    return timed, info


def run_official(a) -> list[tuple[float, float]]:
    script = Path(__file__).resolve().parent / "official_synthesis.py"
    cmd = [a.official_python, str(script), "--official", str(a.official), "--root", str(a.root),
           "--batch", str(a.batch), "--batches", str(a.batches), "--workers", str(a.workers)]
    if a.spatialscaper:
        cmd += ["--spatialscaper", str(a.spatialscaper)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"official generator failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    res = json.loads(lines[-1])
    return list(zip(res["per_mixture_s"], res["per_mixture_cpu_s"], strict=True))


def dataset_main(a, argv) -> int:
    if a.root is None:
        from s5jax.data import embedded

        a.root = embedded.ensure_embedded(scale="full", seed=0, progress=True)
    try:
        timed, info = s5jax_dataset_timer(a.root, batch=a.batch, workers=a.workers,
                                          read_threads=a.read_threads, profile=a.profile)
    except ValueError as e:  # the catalog's message: what is wrong with the root, and where
        raise SystemExit(f"bench_synthesis.py --dataset: {e}") from None
    # Rounds alternate the two sides, so that a shared machine's changing load hits both alike.
    ours, theirs = [], []
    try:
        for _ in range(a.rounds):
            ours += timed(a.batches)
            if a.official:
                theirs += run_official(a)
    finally:
        info["close"]()
    t_s5, c_s5 = (statistics.median(x) for x in zip(*ours, strict=True))
    n = len(ours)
    print(f"dataset {a.root}  device {benchlib.device_kind()} × {jax.device_count()}  batch "
          f"{a.batch}  workers "
          f"{a.workers}  read threads {a.read_threads}  max RIR {info['ir_frames']} samples  "
          f"load average {os.getloadavg()[0]:.1f}")
    # With workers the reads (all of the official generator's work) run in child processes:
    # the CPU seconds of this process are then no measure of either side's cost.
    cpu = "ms CPU" if not a.workers else "ms main-process CPU"
    print(f"s5jax loader + render  {t_s5 * 1e3:8.1f} ms/mixture wall, {c_s5 * 1e3:.1f} {cpu} "
          f"(medians of {n} batches)")
    print("  parts (mean wall ms/mixture): " + ", ".join(
        f"{k} {v * 1e3:.1f}" for k, v in info["parts_s"].items()))
    result = (f"s5jax loader + render {t_s5 * 1e3:.0f} ms/mix wall ({c_s5 * 1e3:.0f} {cpu}), "
              f"B={a.batch}, {a.workers} workers, {a.read_threads} read thread(s), "
              f"{jax.device_count()} device(s), medians of "
              f"{n} batches in {a.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    ratio = "–"
    if a.official:
        t_off, c_off = (statistics.median(x) for x in zip(*theirs, strict=True))
        cpu_ratio = "" if a.workers else f", {c_s5 / c_off:.2f} CPU"
        print(f"official DatasetS5     {t_off * 1e3:8.1f} ms/mixture wall, {c_off * 1e3:.1f} {cpu} "
              f"(medians of {len(theirs)} batches)")
        print(f"s5jax / official       {t_s5 / t_off:.2f} wall{cpu_ratio}")
        result += (f"; alternating with the official DatasetS5 {t_off * 1e3:.0f} ms/mix wall "
                   f"({c_off * 1e3:.0f} {cpu}); s5jax/official {t_s5 / t_off:.2f} wall{cpu_ratio}")
        ratio = f"{t_off / t_s5:.2f}x"
    if a.profile:
        result += "; s5jax parts (ms/mix): " + ", ".join(
            f"{k} {v * 1e3:.0f}" for k, v in info["parts_s"].items())
    if a.append:
        benchlib.append_row(a.append, benchmark="synthesis on a dataset (loader + render)",
                            command=benchlib.command("bench_synthesis.py", argv),
                            result=result, ratio=ratio)
    return 0


def main(argv: list[str] | None = None) -> int:
    hostmem.keep_freed_memory()  # as the s5jax commands run (s5jax/hostmem.py)
    p = benchlib.parser(__doc__, batch=8, repeats=5)
    p.add_argument("--nfft", choices=("auto", "pow2"), default="auto",
                   help="block FFT length: auto (synth.block_fft_length) or pow2 (≥ 3N)")
    p.add_argument("--dataset", action="store_true", help="loader + render on a dataset root")
    p.add_argument("--root", type=benchlib.folder, default=None,
                   help="dataset root (default: embedded full)")
    p.add_argument("--batches", type=benchlib.positive_int, default=4,
                   help="timed batches per round (--dataset)")
    p.add_argument("--rounds", type=benchlib.positive_int, default=3,
                   help="rounds alternating s5jax and official")
    p.add_argument("--workers", type=benchlib.nonnegative_int, default=0,
                   help="loader worker processes, both sides (0: read in this process)")
    p.add_argument("--read-threads", type=benchlib.nonnegative_int, default=1,
                   help="s5jax reader threads")
    p.add_argument("--official", type=benchlib.folder, default=None,
                   help="official baseline checkout")
    p.add_argument("--official-python", type=benchlib.executable, default=None,
                   help="Python with the official code's dependencies (default: this one)")
    p.add_argument("--spatialscaper", type=benchlib.folder, default=None,
                   help="SpatialScaper source")
    p.add_argument("--profile", action="store_true", help="host-side time split (--workers 0)")
    p.add_argument("--cpu-devices", type=benchlib.positive_int, default=1,
                   help="split the CPU into this many JAX devices (jax_num_cpu_devices); the "
                        "batch is rendered over a data mesh of all devices, a slice each")
    a = p.parse_args(argv)
    for name in ("official_python", "spatialscaper"):
        if getattr(a, name) is not None and a.official is None:
            p.error(f"--{name.replace('_', '-')} is for the official generator: "
                    "give --official too")
    if a.official_python is None:
        a.official_python = sys.executable
    if a.profile and a.workers:  # before the loader starts, not after it
        p.error("--profile needs --workers 0 (timers live in this process)")
    if a.cpu_devices > 1:
        jax.config.update("jax_num_cpu_devices", a.cpu_devices)  # before the backend starts
    if a.dataset and a.batch % jax.device_count():
        # The batch is placed over a `data` mesh of all devices (mesh.put_batch), a slice each.
        n = jax.device_count()
        p.error(f"--batch {a.batch}: --dataset splits the batch over the {n} JAX devices"
                + (f" (--cpu-devices {a.cpu_devices})" if a.cpu_devices > 1 else "")
                + f": expected a multiple of {n}")
    if a.dataset:
        return dataset_main(a, argv)

    rng = np.random.default_rng(0)
    items = [make_item(rng) for _ in range(a.batch)]
    batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
    nfft = None if a.nfft == "auto" else 1 << (3 * N - 1).bit_length()
    dev = jax.device_put(batch)

    def jitted():
        jax.block_until_ready(synth.render(dev, length=L, nfft=nfft))

    t_jit = benchlib.median_time(jitted, a.repeats, warmup=1) / a.batch  # warm-up compiles
    ref_items = [{k: np.asarray(v, np.float64) if v.dtype == np.float32 else v
                  for k, v in it.items()} for it in items[: min(3, a.batch)]]
    t_ref = statistics.median(
        benchlib.median_time(lambda it=it: synth.render_reference(it, length=L),
                             max(1, a.repeats // 2))
        for it in ref_items
    )
    kind = benchlib.device_kind()
    nf = nfft or synth.block_fft_length(N)
    print(f"device {kind}  nfft {nf}  batch {a.batch}")
    print(f"jitted    {t_jit * 1e3:8.1f} ms/mixture  {1 / t_jit:7.2f} mixtures/s")
    print(f"reference {t_ref * 1e3:8.1f} ms/mixture  {1 / t_ref:7.2f} mixtures/s")
    print(f"speed-up  {t_ref / t_jit:.2f}x")
    if a.append:
        benchlib.append_row(
            a.append, benchmark="synthesis",
            command=benchlib.command("bench_synthesis.py", argv),
            result=(f"jitted {t_jit * 1e3:.1f} ms/mix ({1 / t_jit:.2f} mix/s), nfft {nf}, "
                    f"B={a.batch}; scipy f64 reference {t_ref * 1e3:.1f} ms/mix "
                    f"({1 / t_ref:.2f} mix/s)"),
            ratio=f"{t_ref / t_jit:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
