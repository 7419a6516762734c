"""Clips per second of the jitted s5jax tagger vs the PyTorch reference, 10-s 4-ch clips.

Both run the same random ViT-B/16 weights (the reference model from tests/reference/vit.py,
converted with s5jax.convert.tagger) in eval mode, float32. Timings are medians over repeats,
after compilation / a warm-up call. The PyTorch side needs torch and nnAudio (parity extra).

    python scripts/bench_tagger.py [--batch 2] [--repeats 5] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.reference

import benchlib  # noqa: E402

from s5jax import hostmem  # noqa: E402
from s5jax.convert.tagger import convert_state_dict  # noqa: E402
from s5jax.models import tagger as T  # noqa: E402

L = 320_000


def main(argv: list[str] | None = None) -> int:
    hostmem.keep_freed_memory()  # as the s5jax commands run (s5jax/hostmem.py)
    p = benchlib.parser(__doc__, batch=2, repeats=5)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
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

    t_jax = benchlib.median_time(lambda: jax.block_until_ready(fwd(variables, xd)), a.repeats,
                                 warmup=1) / a.batch  # the warm-up call compiles
    t_ref = None
    if not a.no_torch:
        xt = torch.from_numpy(x)

        def torch_fwd():
            with torch.no_grad():
                model_ref(xt)

        t_ref = benchlib.median_time(torch_fwd, a.repeats, warmup=1) / a.batch

    result, ratio = benchlib.clip_report(t_jax, t_ref, batch=a.batch, repeats=a.repeats,
                                         threads=torch.get_num_threads(), digits=2)
    if a.append:
        benchlib.append_row(a.append, benchmark="tagger (ViT-B, 10 s)",
                            command=benchlib.command("bench_tagger.py", argv),
                            result=result, ratio=ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
