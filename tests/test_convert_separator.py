"""Converter for official ResUNet/ResUNetK checkpoints (tiny widths): round trip, key checks,
STFT kernel check (P5), seed targets, errors that name the keys and write nothing."""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchlibrosa")

from s5jax import labels as labels_lib  # noqa: E402
from s5jax.convert.__main__ import main as convert_main  # noqa: E402
from s5jax.convert.separator import (  # noqa: E402
    convert_file,
    convert_state_dict,
    dropped_keys,
    stft_kernels,
)
from s5jax.models.separator import build_separator, load_separator  # noqa: E402
from tests.reference.resunet import (  # noqa: E402
    ResUNet30,
    numpy_state_dict,
    randomize_,
    save_lightning,
)

TINY = (4, 8, 8, 12, 12, 16)
MIX = (0.1 * np.random.default_rng(0).standard_normal((1, 4, 4800))).astype(np.float32)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", params=[1, 3], ids=["resunet", "resunetk"])
def ref(request):
    return randomize_(ResUNet30(request.param, TINY), seed=request.param).eval()


def test_convert_file_round_trip(ref, tmp_path):
    save_lightning(ref, tmp_path / "m.ckpt")
    out = convert_file(tmp_path / "m.ckpt", tmp_path / "conv")
    model, variables, cfg = load_separator(out)
    assert cfg.slots == ref.slots and cfg.name == ("resunet" if ref.slots == 1 else "resunetk")
    assert tuple(cfg.channels) == TINY and cfg.film == "beta" and cfg.bottleneck == "none"
    lab = np.array([[7, -1, 2]], np.int32)
    got = np.asarray(jax.jit(model.apply)(variables, MIX, lab))
    with torch.no_grad():
        if ref.slots == 3:
            want = ref(torch.from_numpy(MIX), torch.from_numpy(np.array(labels_lib.query(lab))))
        else:
            q = torch.from_numpy(np.array(labels_lib.one_hot(lab)).reshape(3, 18))
            want = ref(torch.from_numpy(MIX).repeat(3, 1, 1), q).reshape(1, 3, -1)
    assert rel(got, want.numpy()) <= 1e-5
    assert np.all(got[0, 1] == 0.0)
    # CLI
    assert convert_main(["separator", str(tmp_path / "m.ckpt"), str(tmp_path / "cli")]) == 0
    assert convert_main(["separator", str(tmp_path / "m.ckpt"), str(tmp_path / "cli")]) == 2
    assert convert_main(["separator", str(tmp_path / "m.ckpt"), str(tmp_path / "cli"),
                         "--overwrite"]) == 0


def test_recomputed_stft_kernels_equal_torchlibrosa_buffers(ref):
    """P5: the recomputed kernels equal torchlibrosa's (the official buffers), abs ≤ 1e-6."""
    sd = numpy_state_dict(ref)
    for key, value in stft_kernels().items():
        assert sd[key].shape == value.shape
        assert np.max(np.abs(sd[key] - value)) <= 1e-6, key


def test_dropped_keys_are_exactly_dead_frozen_and_counters(ref):
    sd = numpy_state_dict(ref)
    dropped = dropped_keys(sd)
    n_bn = sum(k.endswith("num_batches_tracked") for k in sd)
    assert n_bn == 1 + 7 * 2 + 6 * 4  # bn0, ConvBlockRes ×7 (enc+7a), decoders (bn1, bn2, block)
    assert len(dropped) == 6 * 4 + 6 * 2 + 5 + n_bn  # dead bn2 (4 tensors), beta2 (2), STFT (5)
    assert "base.decoder_block3.bn2.weight" in dropped
    assert "film.decoder_block6->beta2.bias" in dropped
    _, variables = convert_state_dict(sd)
    n_conv = sum(x.size for x in jax.tree.leaves(variables["params"]))
    n_kept = sum(v.size for k, v in sd.items() if k not in dropped and "running" not in k)
    assert n_conv == n_kept


def _expect_error(sd, tmp_path, *needles):
    with pytest.raises(ValueError) as e:
        convert_state_dict(sd)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    # via a file: same message, prefixed with the file name, nothing written
    path = tmp_path / "bad.ckpt"
    state = {"model." + k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match="bad.ckpt"):
        convert_file(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]
    return str(e.value)


def test_wrong_shapes_missing_and_unexpected_keys_in_one_error(ref, tmp_path):
    sd = numpy_state_dict(ref)
    sd["base.pre_conv.weight"] = np.zeros((5, 4, 1, 1), np.float32)
    sd["film.encoder_block2->conv_block1->beta1.weight"] = np.zeros((3, 512), np.float32)
    del sd["base.decoder_block2.conv_block2.conv1.weight"]
    del sd["label_embedding.4.bias"]
    sd["base.extra.weight"] = np.zeros(3, np.float32)
    msg = _expect_error(
        sd, tmp_path,
        "base.pre_conv.weight (5, 4, 1, 1) (expected (4, 4, 1, 1))",
        "film.encoder_block2->conv_block1->beta1.weight",
        "base.decoder_block2.conv_block2.conv1.weight",
        "label_embedding.4.bias",
        "unexpected keys: base.extra.weight",
    )
    assert "missing keys" in msg and "wrong shapes" in msg


def test_tagger_state_dict_is_rejected(tmp_path):
    sd = {"module.backbone.cls_token": np.zeros((1, 1, 768), np.float32),
          "module.head.2.weight": np.zeros((18, 768), np.float32)}
    _expect_error(sd, tmp_path, "no 'base.*' keys", "tagger")


def test_modified_stft_kernel_is_rejected(ref, tmp_path):
    sd = numpy_state_dict(ref)
    sd["base.istft.ola_window"] = sd["base.istft.ola_window"] * 1.01
    _expect_error(sd, tmp_path, "base.istft.ola_window")


def test_truncated_file_is_rejected(ref, tmp_path):
    save_lightning(ref, tmp_path / "m.ckpt")
    data = (tmp_path / "m.ckpt").read_bytes()
    (tmp_path / "m.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="m.ckpt"):
        convert_file(tmp_path / "m.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]


def test_seed_target_on_baseline_weights_is_identity(ref):
    sd = numpy_state_dict(ref)
    cfg, variables = convert_state_dict(sd)
    seed_cfg = cfg.copy_and_resolve_references()
    seed_cfg.film, seed_cfg.bottleneck, seed_cfg.dprnn_hidden = "gamma_beta", "dprnn", 16
    cfg2, seed_vars = convert_state_dict(sd, target_config=seed_cfg)
    assert cfg2.film == "gamma_beta" and "dprnn" in seed_vars["params"]["base"]
    assert "gamma1" in seed_vars["params"]["film"]["decoder_block1"]
    lab = np.array([[7, -1, 2]], np.int32)
    base = jax.jit(build_separator(cfg).apply)(variables, MIX, lab)
    seed = jax.jit(build_separator(cfg2).apply)(seed_vars, MIX, lab)
    assert rel(seed, base) <= 1e-6
    bad = cfg.copy_and_resolve_references()
    bad.channels = (8, 8, 8, 12, 12, 16)
    with pytest.raises(ValueError, match="target_config.channels"):
        convert_state_dict(sd, target_config=bad)


WIDTH_KEY = "base.encoder_block2.conv_block1.conv1.weight"


@pytest.mark.parametrize("case", ["missing", "mis-shaped", "out-width"])
def test_unreadable_channel_width_names_only_that_key(ref, tmp_path, case):
    """The widths come from the encoder conv1 kernels: one bad kernel is named on its own, not
    as dozens of keys whose expected shapes it changed."""
    sd = numpy_state_dict(ref)
    if case == "missing":
        del sd[WIDTH_KEY]
        needles = ("cannot read the channel widths: missing key " + WIDTH_KEY,)
    elif case == "mis-shaped":
        sd[WIDTH_KEY] = np.zeros((3, 3, 3, 3), np.float32)
        needles = (f"cannot read the channel widths from {WIDTH_KEY}: shape (3, 3, 3, 3), "
                   "expected (8, 4, 3, 3)",)
    else:  # only the output width changed: it no longer fits the next block's input width
        sd[WIDTH_KEY] = np.zeros((5, 4, 3, 3), np.float32)
        needles = (f"{WIDTH_KEY} has 5 output channels but "
                   "base.encoder_block3.conv_block1.conv1.weight has 8 input channels",)
    msg = _expect_error(sd, tmp_path, *needles)
    assert "wrong shapes" not in msg and "missing keys" not in msg and len(msg) < 300, msg
    assert convert_main(["separator", str(tmp_path / "bad.ckpt"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_integer_weight_is_refused(ref, tmp_path):
    sd = numpy_state_dict(ref)
    sd["base.pre_conv.bias"] = sd["base.pre_conv.bias"].astype(np.int64)
    _expect_error(sd, tmp_path, "non-floating-point weights: base.pre_conv.bias (int64)")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoint_converts(tmp_path, dtype, capsys):
    """float16/bfloat16 files convert (the STFT kernels are checked with a tolerance that fits
    the dtype) to exactly the float32 conversion of the same (upcast) weights; a kernel that
    differs by more than the rounding is still refused."""
    ref = randomize_(ResUNet30(1, TINY), seed=1).eval()
    low = getattr(torch, dtype)
    state = {"model." + k: v.to(low) if v.is_floating_point() else v
             for k, v in ref.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "half.ckpt")
    up = {k[len("model."):]: v.float().numpy() for k, v in state.items()}
    _, want = convert_state_dict(up | stft_kernels())  # the frozen kernels are dropped anyway
    assert convert_main(["separator", str(tmp_path / "half.ckpt"), str(tmp_path / "out")]) == 0
    _, got, _ = load_separator(tmp_path / "out")
    jax.tree.map(np.testing.assert_array_equal, got, want)
    state["model.base.istft.ola_window"] = state["model.base.istft.ola_window"] * 1.05
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    capsys.readouterr()
    assert convert_main(["separator", str(tmp_path / "bad.ckpt"), str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.ckpt" in err and "base.istft.ola_window" in err, err
    assert f"for {dtype}" in err and not (tmp_path / "bad").exists()
