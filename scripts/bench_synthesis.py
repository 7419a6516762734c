"""Mixtures per second: jitted renderer (s5jax.data.synth.render) vs the float64 scipy reference.

Workload per mixture (worst case of spec §2.5): 10-s 4-ch mixture, 3 targets + 2 interferers with
10-s sources, 1-s RIRs, background noise, dry targets. Synthetic arrays (no disk I/O: this
measures rendering only). Timings are medians over repeats, after compilation.

    python scripts/bench_synthesis.py [--batch 8] [--repeats 5] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from s5jax.data import synth

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
        labels=np.arange(S, dtype=np.int32),
    )


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nfft", default="auto", help="auto (5-smooth) or pow2")
    p.add_argument("--append", type=Path, default=None, help="benchmarks.md to append a row to")
    a = p.parse_args(argv)

    rng = np.random.default_rng(0)
    items = [make_item(rng) for _ in range(a.batch)]
    batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
    nfft = None if a.nfft == "auto" else 1 << (L + N - 2).bit_length()
    dev = jax.device_put(batch)

    def jitted():
        jax.block_until_ready(synth.render(dev, length=L, nfft=nfft))

    jitted()  # compile
    t_jit = median_time(jitted, a.repeats) / a.batch
    ref_items = [{k: np.asarray(v, np.float64) if v.dtype == np.float32 else v
                  for k, v in it.items()} for it in items[: min(3, a.batch)]]
    t_ref = statistics.median(
        median_time(lambda it=it: synth.render_reference(it, length=L), max(1, a.repeats // 2))
        for it in ref_items
    )
    device = jax.devices()[0]
    kind = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    nf = nfft or synth.fast_fft_length(L + N - 1)
    print(f"device {kind}  nfft {nf}  batch {a.batch}")
    print(f"jitted    {t_jit * 1e3:8.1f} ms/mixture  {1 / t_jit:7.2f} mixtures/s")
    print(f"reference {t_ref * 1e3:8.1f} ms/mixture  {1 / t_ref:7.2f} mixtures/s")
    print(f"speed-up  {t_ref / t_jit:.2f}x")
    if a.append:
        if not a.append.exists():
            a.append.write_text(
                "# Benchmarks\n\nRows appended by scripts/bench_*.py.\n\n"
                "| date | benchmark | machine | command | result | ratio |\n"
                "|---|---|---|---|---|---|\n"
            )
        cmd = "python scripts/bench_synthesis.py " + " ".join(argv or sys.argv[1:])
        row = (f"| {datetime.date.today()} | synthesis | {platform.node() or '?'} "
               f"({kind}, {platform.processor() or platform.machine()}) | `{cmd.strip()}` | "
               f"jitted {t_jit * 1e3:.1f} ms/mix ({1 / t_jit:.2f} mix/s), nfft {nf}, B={a.batch}; "
               f"scipy f64 reference {t_ref * 1e3:.1f} ms/mix ({1 / t_ref:.2f} mix/s) | "
               f"{t_ref / t_jit:.2f}x |\n")
        with a.append.open("a") as f:
            f.write(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
