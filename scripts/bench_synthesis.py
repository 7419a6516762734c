"""Mixtures per second: jitted renderer (s5jax.data.synth.render) vs the float64 scipy reference.

Workload per mixture (worst case of spec §2.5): 10-s 4-ch mixture, 3 targets + 2 interferers with
10-s sources, 1-s RIRs, background noise, dry targets. Synthetic arrays (no disk I/O: this
measures rendering only). Timings are medians over repeats, after compilation.

    python scripts/bench_synthesis.py [--batch 8] [--repeats 5] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # s5jax without an install

import benchlib  # noqa: E402

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
        labels=np.arange(S, dtype=np.int32),
    )


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__, batch=8, repeats=5)
    p.add_argument("--nfft", default="auto", help="auto (5-smooth) or pow2")
    a = p.parse_args(argv)

    rng = np.random.default_rng(0)
    items = [make_item(rng) for _ in range(a.batch)]
    batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
    nfft = None if a.nfft == "auto" else 1 << (L + N - 2).bit_length()
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
    nf = nfft or synth.fast_fft_length(L + N - 1)
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
