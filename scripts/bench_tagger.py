"""Clips per second of the jitted s5jax tagger vs the PyTorch reference, 10-s 4-ch clips.

Both run the same random ViT-B/16 weights (the reference model from tests/reference/vit.py,
converted with s5jax.convert.tagger) in eval mode, float32. Timings are medians over repeats,
after compilation / a warm-up call. The PyTorch side needs torch and nnAudio (parity extra).

    python scripts/bench_tagger.py [--batch 2] [--repeats 5] [--append docs/benchmarks.md]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.reference

from s5jax.convert.tagger import convert_state_dict  # noqa: E402
from s5jax.models import tagger as T  # noqa: E402

L = 320_000


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--append", type=Path, default=None, help="benchmarks.md to append a row to")
    a = p.parse_args(argv)

    import torch

    from tests.reference import vit as ref

    torch.manual_seed(0)
    model_ref = ref.randomize_(ref.M2dAt(), seed=0)
    cfg, variables = convert_state_dict(
        {f"model.{k}": v.numpy() for k, v in model_ref.state_dict().items()}
    )
    model = T.build_tagger(cfg)
    x = (0.1 * np.random.default_rng(0).standard_normal((a.batch, 4, L))).astype(np.float32)
    variables, xd = jax.device_put((variables, x))
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))

    def jitted():
        jax.block_until_ready(fwd(variables, xd))

    jitted()  # compile
    t_jax = median_time(jitted, a.repeats) / a.batch
    t_ref = None
    if not a.no_torch:
        xt = torch.from_numpy(x)

        def torch_fwd():
            with torch.no_grad():
                model_ref(xt)

        torch_fwd()  # warm-up
        t_ref = median_time(torch_fwd, a.repeats) / a.batch

    device = jax.devices()[0]
    kind = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    print(f"device {kind}  batch {a.batch}  torch threads {torch.get_num_threads()}")
    print(f"jax jit   {t_jax * 1e3:8.1f} ms/clip  {1 / t_jax:7.2f} clips/s")
    if t_ref is not None:
        print(f"torch     {t_ref * 1e3:8.1f} ms/clip  {1 / t_ref:7.2f} clips/s")
        print(f"speed-up  {t_ref / t_jax:.2f}x")
    if a.append:
        if not a.append.exists():
            a.append.write_text(
                "# Benchmarks\n\nRows appended by scripts/bench_*.py.\n\n"
                "| date | benchmark | machine | command | result | ratio |\n"
                "|---|---|---|---|---|---|\n"
            )
        cmd = "python scripts/bench_tagger.py " + " ".join(argv or sys.argv[1:])
        ref_txt = (f"; torch CPU reference {t_ref * 1e3:.0f} ms/clip ({1 / t_ref:.2f} clips/s, "
                   f"{torch.get_num_threads()} threads)" if t_ref is not None else "")
        ratio = f"{t_ref / t_jax:.2f}x" if t_ref is not None else "–"
        row = (f"| {datetime.date.today()} | tagger (ViT-B, 10 s) | {platform.node() or '?'} "
               f"({kind}, {platform.processor() or platform.machine()}) | `{cmd.strip()}` | "
               f"jitted {t_jax * 1e3:.0f} ms/clip ({1 / t_jax:.2f} clips/s), B={a.batch}, "
               f"median of {a.repeats}{ref_txt} | {ratio} |\n")
        with a.append.open("a") as f:
            f.write(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
