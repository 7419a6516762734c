"""``train.remat``: rematerialised encoder/decoder blocks change memory and compute, not results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.models import remat as remat_lib
from s5jax.models.separator import build_separator, separator_config
from s5jax.training import loop, steps
from tests import quick_compile

L = 8000


def _batch(n=2):
    rng = np.random.default_rng(0)
    labels = np.array([[3, 7, -1], [11, -1, -1]], np.int32)[:n]
    dry = rng.standard_normal((n, 3, L)).astype(np.float32) * 0.1 * (labels != -1)[..., None]
    mixture = dry.sum(1, keepdims=True) + 0.02 * rng.standard_normal((n, 4, L))
    return {"mixture": mixture.astype(np.float32), "dry": dry, "labels": labels}


def test_parse():
    assert remat_lib.parse("none") is None
    assert remat_lib.parse("blocks") is jax.checkpoint_policies.nothing_saveable
    assert remat_lib.parse("blocks:dots_saveable") is jax.checkpoint_policies.dots_saveable
    for bad in ("all", "blocks:save_only_these_names", "none:x", ""):
        with pytest.raises(ValueError, match="train.remat"):
            remat_lib.parse(bad)
    with pytest.raises(ValueError, match="train.remat"):
        build_separator(separator_config(), "block")


def test_remat_blocks_same_loss_grads_and_batch_stats():
    cfg = separator_config(name="resunetk", channels=(2, 4, 4, 8, 8, 8), film="gamma_beta",
                           bottleneck="dprnn", dprnn_hidden=4)
    plain, remat = build_separator(cfg), build_separator(cfg, "blocks")
    variables = loop.init_variables(steps.SEPARATOR, plain, cfg, 0)
    # The same parameter and statistics paths (checkpoints and conversion do not see remat).
    shapes = jax.eval_shape(lambda: loop.init_variables(steps.SEPARATOR, remat, cfg, 0))
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)
    data = jax.device_put(_batch())

    def grads(model):
        def f(params, stats, data):
            return jax.value_and_grad(
                lambda p: steps.loss_fn(steps.SEPARATOR, model, p, stats, data, None),
                has_aux=True)(params)

        args = (variables["params"], variables["batch_stats"], data)
        jaxpr = str(jax.make_jaxpr(f)(*args))
        compiled = jax.jit(f).lower(*args).compile(quick_compile.OPTIONS)
        return compiled(*args), compiled.cost_analysis()["flops"], jaxpr

    (loss0, stats0), g0 = (out0 := grads(plain))[0]
    (loss1, stats1), g1 = (out1 := grads(remat))[0]
    # 13 rematerialised blocks (6 encoders, conv_block7a, 6 decoders), each differentiated once.
    remat_calls = out1[2].count("remat2[") - out0[2].count("remat2[")
    print(f"remat2 in the jaxpr: {remat_calls} more; FLOPs {out0[1]:.3g} → {out1[1]:.3g}")
    assert remat_calls == 13
    # Recomputing the blocks costs FLOPs: the rematerialisation survived compilation.
    assert out1[1] > 1.05 * out0[1], (out0[1], out1[1])  # measured +10 % at these widths

    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g0))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g1)[0], jax.tree.leaves(g0),
                            strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale,
                                   err_msg=jax.tree_util.keystr(path))
    for a, b in zip(jax.tree.leaves(stats1), jax.tree.leaves(stats0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
