"""Tagger weight conversion: M2D ``.pth`` (EVAR-style) and Lightning ``.ckpt`` files, errors."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnAudio")

from s5jax.convert import __main__ as cli  # noqa: E402
from s5jax.convert.tagger import convert_file, convert_state_dict  # noqa: E402
from s5jax.models import tagger as T  # noqa: E402
from tests.reference import vit as ref  # noqa: E402

D, HEADS = 32, 2


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(5)
    return ref.randomize_(ref.M2dAt(dim=D, depth=2, heads=HEADS, norm_stats=(-6.0, 3.5)), seed=5)


@pytest.fixture(scope="module")
def mixture():
    return (0.1 * np.random.default_rng(0).standard_normal((2, 4, 64000))).astype(np.float32)


def lightning_sd(model):
    return {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}


def evar_pth(model, head_width):
    """A synthetic M2D AS-FT file: EVAR prefix, head norm statistics and a 527-way head."""
    rng = np.random.default_rng(1)
    sd = {f"module.ar.runtime.backbone.{k[len('backbone.'):]}": v.numpy()
          for k, v in model.state_dict().items() if k.startswith("backbone.")}
    sd["module.head.norm.running_mean"] = rng.standard_normal(head_width).astype(np.float32)
    sd["module.head.norm.running_var"] = rng.uniform(0.5, 2, head_width).astype(np.float32)
    sd["module.head.norm.num_batches_tracked"] = np.array(100)
    sd["module.head.mlp.mlp.0.weight"] = np.zeros((527, head_width), np.float32)
    sd["module.head.mlp.mlp.0.bias"] = np.zeros(527, np.float32)
    sd["module.ar.runtime.to_spec.mel_basis"] = np.zeros((80, 401), np.float32)
    return {"model": sd}


def tokens(cfg, variables, x):
    m = T.build_tagger(cfg)
    return np.asarray(m.apply(variables, x, method=m.tokens))


def test_pth_flat(reference, mixture):
    pth = evar_pth(reference, D)
    cfg, v = convert_state_dict(pth, num_heads=HEADS, seed=3)
    assert cfg.features == "flat" and cfg.norm_stats == (-6.0, 3.5)
    np.testing.assert_array_equal(v["batch_stats"]["head_norm"]["mean"],
                                  pth["model"]["module.head.norm.running_mean"])
    np.testing.assert_array_equal(v["batch_stats"]["head_norm"]["var"],
                                  pth["model"]["module.head.norm.running_var"])
    head = v["params"]["head"]
    assert head["kernel"].shape == (D, 18)
    assert 1e-5 < np.std(head["kernel"]) < 4e-5  # fresh trunc-normal std 2e-5
    assert np.all(np.abs(head["bias"]) <= 1 / np.sqrt(D))
    # Seeded: same seed, same head; another seed, another head.
    _, v_same = convert_state_dict(pth, num_heads=HEADS, seed=3)
    _, v_other = convert_state_dict(pth, num_heads=HEADS, seed=4)
    np.testing.assert_array_equal(v_same["params"]["head"]["kernel"], head["kernel"])
    assert not np.array_equal(v_other["params"]["head"]["kernel"], head["kernel"])
    with torch.no_grad():
        tok_ref = reference.tokens(torch.from_numpy(mixture)).numpy()
    tok = tokens(cfg, v, mixture)
    assert np.max(np.abs(tok - tok_ref)) / np.max(np.abs(tok_ref)) <= 1e-4


def test_pth_stacked_switch(reference):
    cfg, v = convert_state_dict(evar_pth(reference, 5 * D), num_heads=HEADS)
    assert cfg.features == "stacked"
    assert v["params"]["head"]["kernel"].shape == (5 * D, 18)
    assert v["batch_stats"]["head_norm"]["mean"].shape == (5 * D,)


def test_pth_missing_encoder_key(reference):
    pth = evar_pth(reference, D)
    del pth["model"]["module.ar.runtime.backbone.blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        convert_state_dict(pth, num_heads=HEADS)


def test_lightning_errors(reference):
    sd = lightning_sd(reference)
    bad = dict(sd, **{"model.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
        convert_state_dict(bad, num_heads=HEADS)
    missing = {k: v for k, v in sd.items() if k != "model.head.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['head.bias'\]"):
        convert_state_dict(missing, num_heads=HEADS)
    wrong_mel = dict(sd)
    wrong_mel["model.to_spec.mel_basis"] = sd["model.to_spec.mel_basis"] + 1e-4
    with pytest.raises(ValueError, match="to_spec.mel_basis differs"):
        convert_state_dict(wrong_mel, num_heads=HEADS)
    wrong_head = dict(sd)
    wrong_head["model.head.weight"] = np.zeros((18, 3 * D), np.float32)
    with pytest.raises(ValueError, match="head input width"):
        convert_state_dict(wrong_head, num_heads=HEADS)


def test_convert_file_and_load(reference, mixture, tmp_path):
    pytest.importorskip("s5jax.torch_io")
    ckpt = tmp_path / "m2dat.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in reference.state_dict().items()},
                "epoch": 1, "hyper_parameters": {"lr": 1e-3}}, ckpt)
    out = convert_file(ckpt, tmp_path / "tagger", num_heads=HEADS)
    model, variables, cfg = T.load_tagger(out)
    assert cfg.embed_dim == D and not cfg.adapters
    p = np.asarray(jax.jit(model.apply)(variables, mixture))
    with torch.no_grad():
        p_ref = reference(torch.from_numpy(mixture)).numpy()
    assert np.max(np.abs(p - p_ref)) <= 1e-5
    with pytest.raises(ValueError, match="already exists"):
        convert_file(ckpt, out)


def test_convert_file_writes_nothing_on_error(tmp_path):
    pytest.importorskip("s5jax.torch_io")
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"model.backbone.cls_token": torch.zeros(1, 1, 8)}}, bad)
    with pytest.raises(ValueError, match="bad.ckpt"):
        convert_file(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]
    assert cli.main(["tagger", str(bad), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def _cli_error(path, tmp_path, capsys, *args):
    """``convert tagger PATH OUT``: exit status 2, one ``error:`` line naming the file, no OUT."""
    capsys.readouterr()
    assert cli.main(["tagger", str(path), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and path.name in err, err
    assert not (tmp_path / "out").exists()
    return err


@pytest.fixture(scope="module")
def wide():
    """D = 64, one head: what the CLI's default head count (D // 64) fits."""
    torch.manual_seed(6)
    return ref.randomize_(ref.M2dAt(dim=64, depth=1, heads=1, norm_stats=(-6.0, 3.5)), seed=6)


def test_head_bias_shape_is_checked(wide, tmp_path, capsys):
    sd = lightning_sd(wide)
    sd["model.head.bias"] = np.zeros(5, np.float32)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}},
               tmp_path / "m.ckpt")
    err = _cli_error(tmp_path / "m.ckpt", tmp_path, capsys)
    assert "head.bias has shape (5,), expected (18,)" in err


def test_converted_variables_are_checked_against_the_model_init():
    from s5jax.convert.tagger import _check_variables

    fresh = {"params": {"head": {"kernel": np.zeros((4, 18)), "bias": np.zeros(18)}},
             "batch_stats": {"head_norm": {"mean": np.zeros(4)}}}
    bad = {"params": {"head": {"kernel": np.zeros((4, 18)), "bias": np.zeros(5)},
                      "extra": np.zeros(1)}, "batch_stats": {}}
    with pytest.raises(ValueError) as e:
        _check_variables(bad, fresh, "m.ckpt")
    msg = str(e.value)
    assert msg.startswith("m.ckpt: the converted variables do not fit the model")
    for part in ("wrong shape params: head/bias (5,) (expected (18,))", "unexpected params: extra",
                 "missing batch_stats: head_norm/mean"):
        assert part in msg, msg
    _check_variables(fresh, fresh, "m.ckpt")


PTH = "module.ar.runtime.backbone."


@pytest.mark.parametrize("case", ["no_running_var", "scalar_cls_token", "2d_patch_embed",
                                  "mean_shape"])
def test_pth_malformed_tensors_are_named(wide, tmp_path, capsys, case):
    sd = evar_pth(wide, 64)["model"]
    if case == "no_running_var":
        del sd["module.head.norm.running_var"]
        needle = "module.head.norm.running_mean without module.head.norm.running_var"
    elif case == "scalar_cls_token":
        sd[PTH + "cls_token"] = np.array(1.0, np.float32)
        needle = "cls_token has shape (), expected (1, 1, D)"
    elif case == "2d_patch_embed":
        sd[PTH + "patch_embed.proj.weight"] = np.zeros((64, 16), np.float32)
        needle = "patch_embed.proj.weight has shape (64, 16), expected (D, 1, patch, patch)"
    else:
        sd["module.head.norm.running_mean"] = sd["module.head.norm.running_mean"][None]
        needle = "module.head.norm.running_mean have shape (1, 64), expected (64,)"
    torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}},
               tmp_path / "m.pth")
    assert needle in _cli_error(tmp_path / "m.pth", tmp_path, capsys)


def test_head_count_of_a_narrow_encoder_is_not_guessed(reference, tmp_path, capsys):
    """D = 32: the default D // 64 would be 0 heads; the CLI asks for --num-heads."""
    path = tmp_path / "m.pth"
    torch.save({"model": {k: torch.from_numpy(np.asarray(v))
                          for k, v in evar_pth(reference, D)["model"].items()}}, path)
    err = _cli_error(path, tmp_path, capsys)
    assert f"cannot infer the attention head count from embedding width D = {D}" in err
    assert "--num-heads" in err
    assert cli.main(["tagger", str(path), str(tmp_path / "ok"), "--num-heads", str(HEADS)]) == 0
    assert T.load_tagger(tmp_path / "ok")[2].num_heads == HEADS


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoint_converts(wide, tmp_path, capsys, dtype):
    """float16/bfloat16 files convert to the float32 conversion of the same (upcast) weights;
    the nnAudio buffers are compared with a tolerance that fits the dtype, so a changed buffer
    is still refused; an integer weight is refused, named."""
    low = getattr(torch, dtype)
    state = {f"model.{k}": v.to(low) if v.is_floating_point() else v
             for k, v in wide.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "half.ckpt")
    up = {k: v.float().numpy() for k, v in state.items()}
    up |= {k: v for k, v in lightning_sd(wide).items() if ".to_spec." in k}  # not converted
    _, want = convert_state_dict(up)
    _, got = convert_state_dict(state)  # torch tensors, in memory
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert cli.main(["tagger", str(tmp_path / "half.ckpt"), str(tmp_path / "ok")]) == 0
    jax.tree.map(np.testing.assert_array_equal, T.load_tagger(tmp_path / "ok")[1], want)
    bad = dict(state, **{"model.to_spec.mel_basis": state["model.to_spec.mel_basis"] * 1.05})
    torch.save({"state_dict": bad}, tmp_path / "bad.ckpt")
    err = _cli_error(tmp_path / "bad.ckpt", tmp_path, capsys)
    assert "to_spec.mel_basis differs" in err and f"for {dtype}" in err
    ints = dict(state, **{"model.backbone.norm.bias": state["model.backbone.norm.bias"].long()})
    torch.save({"state_dict": ints}, tmp_path / "int.ckpt")
    err = _cli_error(tmp_path / "int.ckpt", tmp_path, capsys)
    assert "non-floating-point weights: backbone.norm.bias (int64)" in err
