"""P12 (optimiser part): clipping + AdamW-AMSGrad against torch over several steps."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from s5jax.training import optim


def _optim_config(**kw):
    cfg = ml_collections.ConfigDict(
        dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05, amsgrad=True,
             clip_norm=0.5, schedule="constant", warmup_steps=0)
    )
    cfg.update(kw)
    return cfg


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def test_clip_and_adamw_amsgrad_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = {"w1": (7, 5), "b1": (5,), "w2": (5, 3, 2), "s": ()}
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    # Gradient scales vary so that some steps clip and the AMSGrad max switches sources.
    grads = [
        {k: (rng.standard_normal(s) * (0.02 if t % 2 else 3.0)).astype(np.float32)
         for k, s in shapes.items()}
        for t in range(7)
    ]
    cfg = _optim_config()

    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    topt = torch.optim.AdamW(list(tparams.values()), lr=cfg.lr, betas=(cfg.b1, cfg.b2),
                             eps=cfg.eps, weight_decay=cfg.weight_decay, amsgrad=True)
    tx = optim.build_optimizer(cfg, num_steps=10)
    params = jax.tree.map(jnp.asarray, init)
    state = tx.init(params)
    update = jax.jit(tx.update)
    clipped_any = False
    worst = 0.0
    for g in grads:
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        norm = torch.nn.utils.clip_grad_norm_(list(tparams.values()), cfg.clip_norm)
        clipped_any |= float(norm) > cfg.clip_norm
        topt.step()
        upd, state = update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, upd)
        for k in shapes:
            err = _rel(params[k], tparams[k].detach().numpy())
            assert err <= 1e-6, (k, err)
            worst = max(worst, err)
    assert clipped_any
    print("P12 worst rel", worst)


def test_raw_v_max_differs_from_optax_amsgrad():
    # Sanity that the parity above is not vacuous: optax.amsgrad (bias-corrected max) differs.
    cfg = _optim_config(clip_norm=None, weight_decay=0.0, lr=0.1)
    params = {"x": jnp.ones(3)}
    ours, ref = optim.build_optimizer(cfg, 10), optax.amsgrad(0.1)
    s1, s2 = ours.init(params), ref.init(params)
    p1 = p2 = params
    for g in [3.0, 0.01, 0.01]:
        gr = {"x": jnp.full(3, g)}
        u1, s1 = ours.update(gr, s1, p1)
        u2, s2 = ref.update(gr, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert _rel(p1["x"], p2["x"]) > 1e-4


def test_frozen_parameters_do_not_move_and_are_not_clipped():
    cfg = _optim_config(lr=1e-3)
    params = {"a": jnp.ones(4), "b": jnp.ones(4)}
    labels = {"a": optim.TRAINABLE, "b": optim.FROZEN}
    tx = optim.build_optimizer(cfg, 10, labels)
    state = tx.init(params)
    grads = {"a": jnp.full(4, 0.1), "b": jnp.full(4, 100.0)}
    upd, state = tx.update(grads, state, params)
    assert np.all(np.asarray(upd["b"]) == 0)
    # ‖g_a‖ = 0.2 < 0.5: no clipping despite the huge frozen gradient.
    ref = optim.build_optimizer(cfg, 10)
    upd_ref, _ = ref.update({"a": grads["a"]}, ref.init({"a": params["a"]}), {"a": params["a"]})
    np.testing.assert_allclose(upd["a"], upd_ref["a"], rtol=1e-7)
    assert optim.count_trainable(params, labels) == (4, 8)


def test_schedules():
    s = optim.make_schedule(_optim_config(lr=1.0, schedule="cosine", warmup_steps=10), 110)
    assert float(s(0)) == 0.0
    assert abs(float(s(10)) - 1.0) < 1e-6
    assert float(s(110)) < 1e-6
    with pytest.raises(ValueError, match="schedule"):
        optim.make_schedule(_optim_config(schedule="linear"), 10)


def test_flat_layout_is_reverse_tree_order_and_round_trips():
    # The optimiser's vectors hold the leaves in reverse tree order (optim.to_flat: the order
    # steers XLA's memory scheduler; docs/benchmarks.md "Memory model"); from_flat cuts them back.
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": {"c": np.full(4, 7.0, np.float32), "d": np.float32(-1.0)}}
    flat = np.asarray(optim.to_flat(tree))
    np.testing.assert_array_equal(flat, np.r_[-1.0, np.full(4, 7.0), np.arange(6.0)])
    back = optim.from_flat(tree, jnp.asarray(flat))
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(tree), strict=True):
        assert x.shape == np.shape(y)
        np.testing.assert_array_equal(x, y)
    state = optim.build_optimizer(_optim_config(), 10).init(tree)
    assert isinstance(state, optim.FlatState)
    adam = state.reversed_leaves[-1]
    assert adam.mu.shape == (11,)
