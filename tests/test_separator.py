"""Separator model: parameter counts, torch-semantics BatchNorm, slots, masks, jit, dtypes."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from s5jax.modeldir import save_model
from s5jax.models.layers import BatchNorm
from s5jax.models.separator import (
    build_separator,
    load_separator,
    separator_config,
)
from s5jax.training import loop, steps
from tests import quick_compile

TINY = (4, 8, 8, 12, 12, 16)
DEAD = 3_200 + 820_800  # decoder bn2 + FiLM beta2, never used by the official forward


def n_params(cfg) -> int:
    model = build_separator(cfg)
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 4, 3200)),
        jnp.zeros((1, cfg.slots), jnp.int32),
    )
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize(
    "name,used,trainable",
    [("resunet", 25_897_747, 26_721_747), ("resunetk", 25_916_971, 26_740_971)],
)
def test_parameter_counts_full_size(name, used, trainable):
    base = n_params(separator_config(name=name))
    assert base == used
    assert base + DEAD == trainable
    film_used = 5_056_128 - 820_800
    assert n_params(separator_config(name=name, film="gamma_beta")) == base + film_used
    # DPRNN (C=384, H=128): 2 LN + 2 BiLSTM + 2 projections + the output 1×1 conv.
    c, h = 384, 128
    lstm = 2 * (4 * h * (c + h) + 4 * h)
    dprnn = 2 * (2 * c) + 2 * lstm + 2 * (2 * h * c + c) + (c * c + c)
    assert dprnn == 1_397_376
    assert n_params(separator_config(name=name, bottleneck="dprnn")) == base + dprnn


@pytest.mark.parametrize("axis,shape", [(-1, (4, 5, 6, 3)), (2, (2, 7, 9, 4))])
def test_batchnorm_matches_torch_train_and_eval(axis, shape):
    torch = pytest.importorskip("torch")
    x = (3 + 2 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    feat = shape[axis]
    tbn = torch.nn.BatchNorm2d(feat, momentum=0.01)
    with torch.no_grad():
        tbn.weight.uniform_(0.5, 1.5)
        tbn.bias.uniform_(-1, 1)
        tbn.running_mean.uniform_(-1, 1)
        tbn.running_var.uniform_(0.5, 1.5)
    variables = {
        "params": {"scale": tbn.weight.detach().numpy().copy(),
                   "bias": tbn.bias.detach().numpy().copy()},
        "batch_stats": {"mean": tbn.running_mean.numpy().copy(),
                        "var": tbn.running_var.numpy().copy()},
    }
    # channels-last → torch (B, feat, …): move the feature axis to 1
    xt = torch.from_numpy(np.moveaxis(x, axis, 1).copy())
    bn = BatchNorm(momentum=0.01, axis=axis)
    y_eval = bn.apply(variables, x, train=False)
    tbn.eval()
    assert rel(y_eval, np.moveaxis(tbn(xt).detach().numpy(), 1, axis)) <= 1e-6
    y, new = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    tbn.train()
    want = np.moveaxis(tbn(xt).detach().numpy(), 1, axis)
    assert rel(y, want) <= 1e-5
    assert rel(new["batch_stats"]["mean"], tbn.running_mean.numpy()) <= 1e-6
    assert rel(new["batch_stats"]["var"], tbn.running_var.numpy()) <= 1e-6


def test_batchnorm_head_norm_variant_matches_torch():
    """Tagger head norm: momentum 0.1, no affine, (batch, features)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((6, 10)).astype(np.float32)
    tbn = torch.nn.BatchNorm1d(10, momentum=0.1, affine=False)
    bn = BatchNorm(momentum=0.1, use_scale=False, use_bias=False)
    variables = bn.init(jax.random.key(0), x, train=False)
    assert "params" not in variables
    y, new = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    want = tbn(torch.from_numpy(x)).numpy()
    assert rel(y, want) <= 1e-5
    assert rel(new["batch_stats"]["var"], tbn.running_var.numpy()) <= 1e-6
    assert rel(new["batch_stats"]["mean"], tbn.running_mean.numpy()) <= 1e-6


def _random_variables(model, slots: int, seed: int = 0):
    """Random variables of the model's shapes (numpy: an eager Flax init compiles ~400 tiny
    initialiser programs); every FiLM/γ/DPRNN path is non-trivial."""
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 4, 3200)), jnp.zeros((1, slots), jnp.int32)
    )
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = path[-1].key
        if name == "mean":
            return np.zeros(s.shape, np.float32)
        if name in ("var", "scale"):
            return (1.0 + 0.1 * rng.random(s.shape)).astype(np.float32)
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(np.float32)
        return (0.05 * rng.standard_normal(s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


@pytest.fixture(scope="module")
def tiny_resunet():
    cfg = separator_config(name="resunet", channels=TINY)
    model = build_separator(cfg)
    return model, _random_variables(model, 1), jax.jit(model.apply), cfg


MIX = (0.1 * np.random.default_rng(5).standard_normal((2, 4, 4800))).astype(np.float32)
LAB = np.array([[3, -1, 17], [0, 0, -1]], np.int32)  # a repeated class, empty slots


def test_one_slot_net_batched_equals_single_queries(tiny_resunet):
    _, variables, apply, _ = tiny_resunet
    out = np.asarray(apply(variables, MIX, LAB))
    assert out.shape == (2, 3, 4800)
    for s in range(3):
        single = np.asarray(apply(variables, MIX, LAB[:, s : s + 1]))[:, 0]
        active = LAB[:, s] >= 0
        assert np.max(np.abs(out[active, s] - single[active])) <= 1e-6 * np.abs(single).max()
    assert np.all(out[LAB < 0] == 0.0)
    assert np.all(np.abs(out[LAB >= 0]).max(-1) > 0)
    assert np.allclose(out[1, 0], out[1, 1], rtol=0, atol=1e-7)  # same class, same output


def test_any_length_and_silent_slots_resunetk():
    cfg = separator_config(name="resunetk", channels=TINY)
    model = build_separator(cfg)
    v = _random_variables(model, 3)
    x = MIX[:1, :, :4321]
    out = jax.jit(model.apply)(v, x, np.array([[5, -1, 2]], np.int32))
    assert out.shape == (1, 3, 4321)
    assert np.all(np.asarray(out[0, 1]) == 0.0)
    assert bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match="3 slots per pass"):
        model.apply(v, x, np.array([[5, 2]], np.int32))


def test_gradients_finite_seed_variant():
    cfg = separator_config(name="resunetk", channels=TINY, film="gamma_beta",
                           bottleneck="dprnn", dprnn_hidden=8)
    model = build_separator(cfg)
    v = _random_variables(model, 3, seed=2)
    lab = np.array([[3, -1, 17], [1, 2, 4]], np.int32)
    # 0.5 s: 4 frames at the bottleneck, so the time LSTM's recurrent weights get gradients too
    mix = (0.1 * np.random.default_rng(6).standard_normal((2, 4, 16000))).astype(np.float32)

    def loss(params):
        out, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, mix, lab,
                             train=True, mutable=["batch_stats"])
        return jnp.mean(out**2)

    grads = jax.jit(jax.grad(loss), compiler_options=quick_compile.OPTIONS)(v["params"])
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    nonzero = sum(bool(jnp.any(g != 0)) for g in leaves)
    assert nonzero == len(leaves)  # no dead parameters in the Flax model
    assert bool(jnp.any(grads["base"]["dprnn"]["out_conv"]["kernel"] != 0))


def test_jit_compiles_once_per_shape(tiny_resunet):
    model, variables, _, _ = tiny_resunet

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fwd(v, x, lab):
        return model.apply(v, x, lab)

    fwd(variables, MIX, LAB)
    fwd(variables, MIX * 2, np.array([[1, 2, 3], [-1, -1, -1]], np.int32))
    assert np.all(np.asarray(fwd(variables, MIX, -np.ones_like(LAB))) == 0.0)


def test_bfloat16_compute_dtype(tiny_resunet):
    model, variables, apply, cfg = tiny_resunet
    bf = build_separator(separator_config(**{**cfg.to_dict(), "dtype": "bfloat16"}))
    out = jax.jit(bf.apply)(variables, MIX, LAB)
    assert out.dtype == jnp.float32
    ref = np.asarray(apply(variables, MIX, LAB))
    assert rel(out, ref) < 0.1
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_config_validation():
    assert separator_config(name="resunet").slots == 1
    assert separator_config().slots == 3
    for bad in [dict(name="m2d"), dict(film="gamma"), dict(bottleneck="lstm"),
                dict(name="resunet", slots=3), dict(channels=(1, 2)), dict(dtype="float16"),
                dict(bn_momentum=0.0), dict(bn_momentum=1.5)]:
        with pytest.raises(ValueError):
            separator_config(**bad)
    with pytest.raises(ValueError, match="unknown fields"):
        separator_config(width=3)


def test_load_separator_roundtrip_and_tagger_dir(tmp_path, tiny_resunet):
    _, variables, apply, cfg = tiny_resunet
    save_model(tmp_path / "sep", cfg, variables)
    model, loaded, cfg2 = load_separator(tmp_path / "sep")
    assert cfg2.name == "resunet" and tuple(cfg2.channels) == TINY
    assert rel(jax.jit(model.apply)(loaded, MIX, LAB), apply(variables, MIX, LAB)) <= 1e-6
    save_model(tmp_path / "tag", ml_collections.ConfigDict({"name": "m2d_at"}), {"params": {}})
    with pytest.raises(ValueError, match="holds a 'm2d_at' model"):
        load_separator(tmp_path / "tag")


def test_bn_momentum_weights_the_new_batch_everywhere(tiny_resunet):
    """``bn_momentum`` m: every running statistic moves by m·(batch − running), so the moves at
    m = 0.1 are 10× those at the official 0.01, for every BatchNorm of the trunk; the outputs of
    the train-mode pass do not depend on m."""
    _, variables, _, cfg = tiny_resunet
    moved = {}
    for m in (0.01, 0.1):
        model = build_separator(separator_config(**{**cfg.to_dict(), "bn_momentum": m}))
        out, upd = jax.jit(lambda v, x, lab, model=model: model.apply(
            v, x, lab, train=True, mutable=["batch_stats"]))(variables, MIX, LAB)
        moved[m] = (np.asarray(out), jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                                                   upd["batch_stats"], variables["batch_stats"]))
    np.testing.assert_array_equal(moved[0.01][0], moved[0.1][0])
    flat_small = jax.tree.leaves(moved[0.01][1])
    flat_big = jax.tree.leaves(moved[0.1][1])
    assert len(flat_small) == len(jax.tree.leaves(variables["batch_stats"])) > 10
    for small, big in zip(flat_small, flat_big, strict=True):
        np.testing.assert_allclose(big, 10 * small, rtol=1e-3, atol=1e-6)
        assert np.abs(small).max() > 0


def test_model_dir_without_bn_momentum_loads_the_official_value(tmp_path, tiny_resunet):
    """Model directories written before the field existed build with momentum 0.01."""
    _, variables, _, cfg = tiny_resunet
    old = ml_collections.ConfigDict({k: v for k, v in cfg.to_dict().items()
                                     if k != "bn_momentum"})
    save_model(tmp_path / "old", old, variables)
    model, _, _ = load_separator(tmp_path / "old")
    assert model.bn_momentum == 0.01
    assert separator_config().bn_momentum == 0.01  # the official value is the default


def test_head_init_mixture_starts_from_half_the_mixture():
    """``head_init="mixture"``: after_conv starts with a zero kernel and the bias (0, 1, 0) per
    component, so with out_conv reading channel 0 the initial separator returns half of mixture
    channel 0 in every active slot (STFT round trip: float32 noise); the official init does not.
    The mixture is band-limited: the trunk zeroes the top (Nyquist) bin by design."""
    t = np.arange(MIX.shape[-1]) / 32000.0
    rng = np.random.default_rng(7)
    f0 = rng.uniform(100, 8000, (2, 4, 5, 1))
    mix = (0.05 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6, f0.shape))).sum(2)
    mix = mix.astype(np.float32)
    outs = {}
    for head_init in ("mixture", "official"):
        cfg = separator_config(name="resunetk", channels=TINY, head_init=head_init)
        model = build_separator(cfg)
        variables = loop.init_variables(steps.SEPARATOR, model, cfg, 0)
        params = jax.tree.map(np.asarray, variables["params"])
        after = params["base"]["after_conv"]
        if head_init == "mixture":
            assert not after["kernel"].any()
            np.testing.assert_array_equal(after["bias"], np.tile([0.0, 1.0, 0.0], 3 * 4))
        params["base"]["out_conv"]["kernel"] = np.eye(4, 1, dtype=np.float32).reshape(1, 1, 4, 1)
        params["base"]["out_conv"]["bias"] = np.zeros(1, np.float32)
        apply = jax.jit(model.apply, compiler_options=quick_compile.OPTIONS)
        outs[head_init] = np.asarray(apply({**variables, "params": params}, mix, LAB))
    half = 0.5 * mix[:, 0]
    for b, s in zip(*np.nonzero(LAB >= 0), strict=True):
        # The dropped Nyquist bin and the STFT's edge frames leave ~1e-4 of the peak.
        np.testing.assert_allclose(outs["mixture"][b, s], half[b], atol=1e-3 * np.abs(half).max())
        assert np.abs(outs["official"][b, s] - half[b]).max() > 0.1 * np.abs(half).max()
    with pytest.raises(ValueError, match="head_init"):
        separator_config(head_init="zeros")
