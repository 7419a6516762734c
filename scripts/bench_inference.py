"""Clips per second of the full S5 pipeline (tagger → labels → separator) vs PyTorch.

Both sides run the same random weights: the PyTorch reference models of tests/reference
(``M2dAt`` from vit.py, ``ResUNet30`` from resunet.py), converted with s5jax.convert for the
s5jax ``S5Pipeline``. The PyTorch side applies the same decision rule and the same query layout
(ResUNetK: one pass with the 54-d query; ResUNet: the B·3 items of ``ResUNet30MultiPredict``).
Timings are medians over repeats after a warm-up call (compilation on the JAX side), per clip,
float32. Needs torch and nnAudio (the parity extra), except with ``--no-torch``: s5jax alone,
on fresh random weights of the same architectures, with nothing of torch imported.

    python scripts/bench_inference.py [--seconds 10] [--batch 1] [--repeats 3]
        [--separator resunetk|resunet] [--small] [--append docs/benchmarks.md]

``--small`` uses tiny widths (a smoke run, not a benchmark of the real models).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.reference

import benchlib  # noqa: E402

from s5jax import hostmem  # noqa: E402
from s5jax.convert import separator as conv_sep  # noqa: E402
from s5jax.convert import tagger as conv_tag  # noqa: E402
from s5jax.inference.pipeline import S5Pipeline  # noqa: E402
from s5jax.models import separator as S  # noqa: E402
from s5jax.models import tagger as T  # noqa: E402

SR = 32000


def torch_predict(torch, probs, threshold=0.5, max_sources=3):
    """Spec §4.5 on a torch ``(B, 18)`` tensor → ``(B, 3)`` class indices (−1 padded)."""
    out = torch.full((probs.shape[0], max_sources), -1, dtype=torch.long)
    for b in range(probs.shape[0]):
        order = torch.argsort(-probs[b], stable=True)
        keep = [int(c) for c in order[:max_sources] if probs[b, c] >= threshold] or [int(order[0])]
        keep.sort()
        out[b, : len(keep)] = torch.tensor(keep)
    return out


def main(argv: list[str] | None = None) -> int:
    hostmem.keep_freed_memory()  # as the s5jax commands run (s5jax/hostmem.py)
    p = benchlib.parser(__doc__, batch=1, repeats=3)
    p.add_argument("--seconds", type=benchlib.positive_float, default=10.0)
    p.add_argument("--separator", choices=["resunetk", "resunet"], default="resunetk")
    p.add_argument("--small", action="store_true", help="tiny widths (smoke run)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    a = p.parse_args(argv)

    slots = 3 if a.separator == "resunetk" else 1
    small_tagger = dict(embed_dim=64, depth=2, num_heads=2) if a.small else {}
    small_channels = (4, 4, 8, 8, 8, 8)
    if a.no_torch:
        # s5jax alone, on fresh random weights of the same architectures: nothing of torch is
        # imported (a GPU machine may have no torch, torchlibrosa or librosa).
        tcfg = T.tagger_config(adapters=False, **small_tagger)
        scfg = S.separator_config(name=a.separator,
                                  **({"channels": small_channels} if a.small else {}))
        tvars = T.init_variables(T.build_tagger(tcfg), seed=0)
        svars = S.build_separator(scfg).init(
            jax.random.key(1), jnp.zeros((1, 4, 3200)), jnp.zeros((1, slots), jnp.int32))
    else:
        import torch

        from tests.reference import resunet as ref_sep
        from tests.reference import vit as ref_vit

        torch.manual_seed(0)
        if a.small:
            tag_ref = ref_vit.randomize_(ref_vit.M2dAt(dim=64, depth=2, heads=2), seed=0)
            sep_ref = ref_sep.ResUNet30(slots=slots, channels=small_channels)
        else:
            tag_ref = ref_vit.randomize_(ref_vit.M2dAt(), seed=0)
            sep_ref = ref_sep.ResUNet30(slots=slots)
        sep_ref = ref_sep.randomize_(sep_ref, seed=1).eval()
        tcfg, tvars = conv_tag.convert_state_dict(
            {f"model.{k}": v.numpy() for k, v in tag_ref.state_dict().items()},
            num_heads=tag_ref.backbone.blocks[0].attn.heads if a.small else None)
        scfg, svars = conv_sep.convert_state_dict(ref_sep.numpy_state_dict(sep_ref))
    pipe = S5Pipeline(T.build_tagger(tcfg), tvars, S.build_separator(scfg), svars)

    n = int(round(a.seconds * SR))
    x = (0.1 * np.random.default_rng(0).standard_normal((a.batch, 4, n))).astype(np.float32)
    xd = jax.device_put(x)

    t_jax = benchlib.median_time(lambda: jax.block_until_ready(pipe(xd)["waveforms"]),
                                 a.repeats, warmup=1) / a.batch  # the warm-up call compiles

    t_ref = None
    if not a.no_torch:
        xt = torch.from_numpy(x)

        def torch_pipeline():
            with torch.no_grad():
                labels = torch_predict(torch, tag_ref(xt))
                onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 18).float()
                onehot = onehot * (labels >= 0).float()[..., None]  # (B, 3, 18)
                if slots == 3:
                    return sep_ref(xt, onehot.reshape(a.batch, 54))
                y = sep_ref(xt.repeat_interleave(3, dim=0), onehot.reshape(a.batch * 3, 18))
                return y.reshape(a.batch, 3, -1)

        y_ref = torch_pipeline().numpy()  # warm-up, and a check that both sides agree
        y_jax = np.asarray(pipe(xd)["waveforms"])
        rel = float(np.abs(y_jax - y_ref).max() / max(np.abs(y_ref).max(), 1e-30))
        print(f"waveforms: max|jax − torch| / max|torch| = {rel:.2e}")
        t_ref = benchlib.median_time(torch_pipeline, a.repeats) / a.batch

    what = (f"pipeline (M2D-AT + {'ResUNetK' if slots == 3 else 'ResUNet'}"
            f"{', tiny widths' if a.small else ''}, {a.seconds:g} s)")
    result, ratio = benchlib.clip_report(t_jax, t_ref, batch=a.batch, repeats=a.repeats,
                                         threads=None if a.no_torch else torch.get_num_threads(),
                                         digits=3, title=what)
    if a.append:
        benchlib.append_row(a.append, benchmark=what,
                            command=benchlib.command("bench_inference.py", argv),
                            result=result, ratio=ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
