"""P6/P7/P13: Flax ResUNet / ResUNetK vs the PyTorch reference with converted weights.

Full-width models on 1-s inputs (plus one 10-s case); the checkpoint goes through the real path:
``torch.save`` Lightning file → ``convert_file`` → ``load_separator``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchlibrosa")

from s5jax import labels as labels_lib  # noqa: E402
from s5jax.convert.separator import convert_file, convert_state_dict, torch_key  # noqa: E402
from s5jax.models.separator import build_separator, load_separator  # noqa: E402
from tests.reference.resunet import (  # noqa: E402
    ResUNet30,
    numpy_state_dict,
    randomize_,
    save_lightning,
)

TAPS = [
    "bn0",
    *[f"encoder_block{i}" for i in range(1, 7)],
    "conv_block7a",
    *[f"decoder_block{i}" for i in range(1, 7)],
    "after_conv",
]
LABELS = np.array([[3, -1, 17]], np.int32)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def snr_db(est, ref) -> float:
    est, ref = np.asarray(est, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((est - ref) ** 2)))


def torch_forward(model, mixture: np.ndarray, slots: np.ndarray, slots_per_pass: int):
    """Official forward (MultiPredict for the 1-slot net) → ``(waveform (B, S, L), taps)``."""
    x = torch.from_numpy(mixture)
    b, s = slots.shape
    with torch.no_grad():
        if slots_per_pass == 1:
            q = torch.from_numpy(np.array(labels_lib.one_hot(slots)).reshape(b * s, -1))
            wav = model(x.repeat_interleave(s, 0), q).reshape(b, s, -1)
        else:
            wav = model(x, torch.from_numpy(np.array(labels_lib.query(slots))))
    taps = {k: v.numpy() for k, v in model.base.taps.items()}
    return wav.numpy(), taps


def jax_taps(state) -> dict[str, np.ndarray]:
    """Sown taps in the reference's ``(B, C, T, F)`` layout."""
    out = {}
    for k, v in state["intermediates"]["base"].items():
        a = np.asarray(v[0])
        out[k.removesuffix("_out")] = a if k.startswith("out_") else a.transpose(0, 3, 1, 2)
    return out


@pytest.fixture(scope="module", params=[1, 3], ids=["resunet", "resunetk"])
def converted(request, tmp_path_factory):
    slots = request.param
    ref = randomize_(ResUNet30(slots), seed=slots).eval()
    d = tmp_path_factory.mktemp(f"sep{slots}")
    save_lightning(ref, d / "model.ckpt")
    convert_file(d / "model.ckpt", d / "converted")
    model, variables, cfg = load_separator(d / "converted")
    fn = jax.jit(lambda v, x, lab: model.apply(v, x, lab, train=False, mutable=["intermediates"]))
    return ref, model, variables, cfg, fn


def test_full_size_parity_1s(converted):
    ref, _, variables, cfg, fn = converted
    x = (0.1 * np.random.default_rng(0).standard_normal((1, 4, 32000))).astype(np.float32)
    want, taps = torch_forward(ref, x, LABELS, cfg.slots)
    got, state = fn(variables, x, LABELS)
    got = np.asarray(got)
    mine = jax_taps(state)
    errs = {k: rel(mine[k], taps[k]) for k in TAPS}
    assert max(errs.values()) <= 1e-4, errs
    for k in ("out_re", "out_im"):  # masked Ŝ (ill-conditioned phase normalisation: 1e-4)
        assert rel(mine[k], taps[k].reshape(mine[k].shape)) <= 1e-4
    active = labels_lib.active(LABELS)[0]
    assert np.all(got[:, ~np.asarray(active)] == 0.0)
    assert snr_db(got, want) >= 80.0


@pytest.mark.slow
def test_full_size_parity_10s_resunetk():
    ref = randomize_(ResUNet30(3), seed=7).eval()
    cfg, variables = convert_state_dict(numpy_state_dict(ref))
    model = build_separator(cfg)
    x = (0.1 * np.random.default_rng(1).standard_normal((1, 4, 320000))).astype(np.float32)
    lab = np.array([[0, 5, 9]], np.int32)
    want, _ = torch_forward(ref, x, lab, 3)
    got = np.asarray(jax.jit(lambda v, x, l: model.apply(v, x, l))(variables, x, lab))
    assert got.shape == (1, 3, 320000)
    assert snr_db(got, want) >= 80.0


@pytest.mark.parametrize("slots", [1, 3], ids=["resunet", "resunetk"])
def test_train_mode_batchnorm_parity(slots):
    """P13: one train-mode forward: outputs and updated running statistics (momentum 0.01,
    unbiased running variance) match PyTorch; stats of unused dead BNs are not converted."""
    ch = (4, 8, 8, 12, 12, 16)
    ref = randomize_(ResUNet30(slots, ch), seed=11 + slots)
    cfg, variables = convert_state_dict(numpy_state_dict(ref))
    model = build_separator(cfg)
    x = (0.1 * np.random.default_rng(2).standard_normal((2, 4, 8000))).astype(np.float32)
    lab = np.array([[1, 4, -1], [2, -1, 6]], np.int32)[:, : 3 if slots == 3 else 1]
    ref.train()
    want, _ = torch_forward(ref, x, lab, slots)
    got, new = jax.jit(lambda v, x, l: model.apply(v, x, l, train=True, mutable=["batch_stats"]))(
        variables, x, lab
    )
    assert rel(got, want) <= 1e-5
    torch_sd = numpy_state_dict(ref)
    flat = jax.tree_util.tree_flatten_with_path(new["batch_stats"])[0]
    assert len(flat) == 2 * (1 + 2 * 7 + 6 * 3)  # bn0, 7 ConvBlockRes, 6 decoders (bn1 + block)
    worst = 0.0
    for path, value in flat:
        keys = tuple(p.key for p in path)
        key, _ = torch_key("batch_stats", keys)
        worst = max(worst, rel(value, torch_sd[key]))
        old = variables["batch_stats"]
        for k in keys:
            old = old[k]
        assert not np.allclose(np.asarray(old), np.asarray(value)), key  # really updated
    assert worst <= 1e-6
