"""Tagger module: decision rule, jit behaviour, trainable sets, head BatchNorm, config checks."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.models import tagger as T


def probs_row(values: dict[int, float], default=0.1):
    p = np.full(18, default, np.float32)
    for k, v in values.items():
        p[k] = v
    return p


PREDICT_CASES = [
    # (probabilities, kwargs, expected labels)
    (probs_row({4: 0.9}), {}, [4, -1, -1]),
    (probs_row({9: 0.6, 2: 0.95}), {}, [2, 9, -1]),  # class order, not probability order
    (probs_row({0: 0.5}), {}, [0, -1, -1]),  # p == threshold counts
    (probs_row({7: 0.3, 3: 0.2}), {}, [7, -1, -1]),  # none above: arg-max
    (probs_row({7: 0.3, 3: 0.2}), {"allow_empty": True}, [-1, -1, -1]),
    (probs_row({1: 0.6, 5: 0.9, 11: 0.7, 17: 0.8, 14: 0.55}), {}, [5, 11, 17]),  # top 3 of 5
    (probs_row({1: 0.6, 5: 0.9, 11: 0.7}), {"max_sources": 2}, [5, 11]),
    (probs_row({1: 0.6, 5: 0.9, 11: 0.7}), {"threshold": 0.65}, [5, 11, -1]),
    (probs_row({1: 0.6, 5: 0.9, 11: 0.7}), {"threshold": 0.95}, [5, -1, -1]),
    # ties: equal probabilities → the lower class index wins
    (probs_row({3: 0.8, 8: 0.8, 12: 0.8, 16: 0.8}), {}, [3, 8, 12]),
    (probs_row({6: 0.7, 2: 0.9, 15: 0.7, 10: 0.7}), {}, [2, 6, 10]),
    (probs_row({}, default=0.2), {}, [0, -1, -1]),  # all equal, below threshold
    (probs_row({13: 0.4, 4: 0.4}), {}, [4, -1, -1]),
    (probs_row({}, default=0.9), {"max_sources": 4}, [0, 1, 2, 3]),
]


@pytest.mark.parametrize("probs, kwargs, expected", PREDICT_CASES)
def test_predict_table(probs, kwargs, expected):
    out = T.predict(jnp.asarray(probs)[None], **kwargs)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), [expected])


def test_predict_batched_matches_rows_and_jits_once():
    probs = np.stack([p for p, kw, _ in PREDICT_CASES if not kw])
    expected = np.stack([e for p, kw, e in PREDICT_CASES if not kw])
    fn = jax.jit(chex.assert_max_traces(T.predict, n=1))
    np.testing.assert_array_equal(np.asarray(fn(probs)), expected)
    fn(jnp.asarray(probs) * 0.5)  # same shape: no retrace


def test_predict_matches_brute_force_rule():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, (200, 18)).astype(np.float32) ** 3
    out = np.asarray(T.predict(probs))
    for p, row in zip(probs, out, strict=True):
        above = [k for k in range(18) if p[k] >= 0.5]
        chosen = sorted(above, key=lambda k: (-p[k], k))[:3] or [int(np.argmax(p))]
        np.testing.assert_array_equal(row, sorted(chosen) + [-1] * (3 - len(chosen)))


@pytest.fixture(scope="module")
def small():
    cfg = T.tagger_config(embed_dim=32, depth=3, num_heads=2)
    model = T.build_tagger(cfg)
    return model, T.init_variables(model)


def test_apply_jits_once_per_shape(small):
    model, variables = small
    fn = jax.jit(chex.assert_max_traces(lambda v, x: model.apply(v, x), n=1))
    x = jnp.zeros((2, 4, 16000), jnp.float32)
    p = fn(variables, x)
    fn(variables, x + 0.1)
    assert p.shape == (2, 18) and bool(jnp.all((p > 0) & (p < 1)))


def test_bfloat16_compute_dtype(small):
    """The `bf16` preset's compute dtype: float32 parameters and probabilities; the encoder's
    tokens within bfloat16 rounding of the float32 model's, and not equal to them (the dtype
    is applied; the untrained head's logits hardly depend on the tokens, so they are compared)."""
    model, variables = small
    bf = T.build_tagger(T.tagger_config(**{**model.config.to_dict(), "dtype": "bfloat16"}))
    x = np.random.default_rng(4).standard_normal((2, 4, 16000)).astype(np.float32)
    assert bf.apply(variables, x).dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
    tokens = lambda m: np.asarray(m.apply(variables, x, method=lambda m, x: m.tokens(x)),  # noqa: E731
                                  np.float64)
    t32, t16 = tokens(model), tokens(bf)
    err = np.abs(t16 - t32).max() / np.abs(t32).max()
    assert 1e-4 < err < 0.05, err


def test_only_channel_zero_is_used(small):
    model, variables = small
    x = np.random.default_rng(0).standard_normal((1, 4, 16000)).astype(np.float32)
    y = x.copy()
    y[:, 1:] = 0.0
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, y))


def test_head_norm_train_mode_torch_semantics(small):
    model, variables = small
    x = np.random.default_rng(1).standard_normal((3, 4, 16000)).astype(np.float32)
    _, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    feats = model.apply(variables, x, method=lambda m, x: jnp.mean(m.tokens(x), axis=1))
    feats = np.asarray(feats, np.float64)
    old = variables["batch_stats"]["head_norm"]
    np.testing.assert_allclose(new["batch_stats"]["head_norm"]["mean"],
                               0.9 * old["mean"] + 0.1 * feats.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new["batch_stats"]["head_norm"]["var"],
                               0.9 * old["var"] + 0.1 * feats.var(0, ddof=1), rtol=1e-5)
    assert "scale" not in variables["params"].get("head_norm", {})


def test_trainable_mask_counts_full_vit_b():
    counts = {}
    for features in ("flat", "stacked"):
        for adapters in (False, True):
            model = T.build_tagger(T.tagger_config(features=features, adapters=adapters))
            shapes = jax.eval_shape(functools.partial(T.init_variables, model))["params"]
            for mode in ("head", "blocks:2", "adapters", "all"):
                mask = T.trainable_mask(shapes, mode)
                counts[features, adapters, mode] = T.count_params(shapes, mask)
    # Spec §4.6 (norm_stats is a config value here, not a stored parameter: 85 506 836 − 2).
    assert counts["flat", False, "head"] == 13_842
    assert counts["flat", False, "blocks:2"] == 14_191_122
    assert counts["flat", False, "all"] == 85_506_834
    assert counts["stacked", False, "head"] == 69_138
    assert counts["stacked", False, "blocks:2"] == 14_246_418
    assert counts["stacked", False, "all"] == 85_562_130
    # Adapters (ratio 2, 12 blocks): 12·(768·1536 + 1536 + 1536·768 + 768) = 28 339 200.
    adapter_params = 12 * (768 * 1536 + 1536 + 1536 * 768 + 768)
    assert counts["flat", True, "adapters"] == adapter_params + 1536 + 13_842
    assert counts["flat", True, "all"] == 85_506_834 + adapter_params
    assert counts["flat", False, "adapters"] == 1536 + 13_842


def test_trainable_mask_labels_and_errors(small):
    _, variables = small
    params = variables["params"]
    mask = T.trainable_mask(params, "blocks:1")
    enc = mask["encoder"]
    assert enc["blocks_2"]["attn"]["query"]["kernel"] == "trainable"
    assert enc["blocks_1"]["attn"]["query"]["kernel"] == "frozen"
    assert enc["norm"]["scale"] == "trainable" and enc["pos_embed"] == "frozen"
    assert mask["head"]["kernel"] == "trainable"
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    ad = T.trainable_mask(params, "adapters")["encoder"]
    assert ad["blocks_0"]["adapter"]["up"]["kernel"] == "trainable"
    assert ad["blocks_0"]["mlp"]["fc1"]["kernel"] == "frozen"
    for bad in ("blocks:9", "blocks:x", "encoder"):
        with pytest.raises(ValueError, match=f"config.trainable='{bad}': expected "):
            T.trainable_mask(params, bad)


def test_adapter_blocks_subset_and_config_errors():
    model = T.build_tagger(T.tagger_config(embed_dim=16, depth=3, num_heads=2,
                                           adapter_blocks=(2,), adapter_ratio=3))
    params = jax.eval_shape(functools.partial(T.init_variables, model))["params"]["encoder"]
    assert "adapter" not in params["blocks_0"] and "adapter" not in params["blocks_1"]
    assert params["blocks_2"]["adapter"]["up"]["kernel"].shape == (16, 48)
    with pytest.raises(ValueError, match="features"):
        T.tagger_config(features="pooled")
    with pytest.raises(ValueError, match="adapter_mode"):
        T.tagger_config(adapter_mode="serial")
    with pytest.raises(ValueError, match="pool"):
        T.tagger_config(pool="max")
    with pytest.raises(ValueError, match="unknown fields"):
        T.tagger_config(width=3)


def test_head_prior_starts_at_the_class_prior(small):
    """``head_prior=p``: every head bias at log(p/(1−p)), so that the untrained tagger (whose
    head kernel starts at std 2e-5) predicts ≈ p; the official init (0) keeps ±1/√F biases."""
    _, official = small
    bias = np.asarray(official["params"]["head"]["bias"])
    assert 0 < np.abs(bias).max() <= 1 / 32**0.5 and len(np.unique(bias)) == 18
    model = T.build_tagger(T.tagger_config(embed_dim=32, depth=3, num_heads=2, head_prior=2 / 18))
    variables = T.init_variables(model)
    np.testing.assert_allclose(variables["params"]["head"]["bias"], np.log(2 / 16), rtol=1e-6)
    x = np.random.default_rng(0).standard_normal((2, 4, 16000)).astype(np.float32)
    np.testing.assert_allclose(model.apply(variables, x), 2 / 18, atol=1e-3)
    # an old model directory (no head_prior) reads as the official init
    assert T.tagger_config(**{k: v for k, v in model.config.items() if k != "head_prior"}
                           ).head_prior == 0.0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="head_prior"):
            T.tagger_config(head_prior=bad)
    with pytest.raises(ValueError, match="head_prior.*sigmoid18"):
        T.tagger_config(head="slots", head_prior=0.1)


def test_meanmax_pool_adds_the_tokens_maximum_to_their_mean(small):
    """``pool="meanmax"``: the head reads mean + max over the tokens (same parameters as
    ``"mean"``); a model directory written before the field existed reads as ``"mean"``."""
    model, variables = small
    variables = jax.tree.map(np.asarray, variables)
    kernel = np.random.default_rng(2).normal(0, 0.1, variables["params"]["head"]["kernel"].shape)
    variables["params"]["head"]["kernel"] = kernel.astype(np.float32)  # a head that listens
    mm = T.build_tagger(T.tagger_config(**{**dict(model.config), "pool": "meanmax"}))
    x = np.random.default_rng(3).standard_normal((2, 4, 16000)).astype(np.float32)
    tok = np.asarray(model.apply(variables, x, method=T.Tagger.tokens), np.float64)
    norm = variables["batch_stats"]["head_norm"]
    head = variables["params"]["head"]
    for m, feats in ((model, tok.mean(1)), (mm, tok.mean(1) + tok.max(1))):
        z = (feats - norm["mean"]) / np.sqrt(norm["var"] + 1e-5) @ head["kernel"] + head["bias"]
        np.testing.assert_allclose(m.apply(variables, x), 1 / (1 + np.exp(-z)), rtol=1e-5)
    assert np.abs(mm.apply(variables, x) - model.apply(variables, x)).max() > 0.01
    assert T.tagger_config(**{k: v for k, v in mm.config.items() if k != "pool"}).pool == "mean"
