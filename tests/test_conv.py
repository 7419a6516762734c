"""s5jax.models.conv: the CPU (GEMM) convolutions equal lax's, values and gradients.

Reference: ``lax.conv_general_dilated`` / ``lax.conv_transpose`` as XLA differentiates them, and
``flax.linen.Conv`` / ``ConvTranspose`` for the parameter trees. Tolerance: float32 noise, max
|error| ≤ 1e-5 × max |reference| per tensor. Shapes: those the ResUNet uses (3×3 padding 1 with
in = out, in < out and in > out; 1×1 with bias; transposed stride = kernel (1, 2) and (2, 2)),
plus asymmetric padding, batch 2 and several row chunks for the kernel-gradient loop.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.models import conv as conv_lib

TOL = 1e-5
SAME = ((1, 1), (1, 1))


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def normal(seed: int, shape) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def value_and_grads(fn, x, kernel, g):
    y, pullback = jax.vjp(fn, x, kernel)
    return (y, *pullback(g))


@pytest.mark.parametrize(
    "shape,kernel_size,cout,padding",
    [
        ((1, 12, 16, 8), (3, 3), 8, SAME),  # encoder conv2: in = out
        ((2, 8, 10, 6), (3, 3), 12, SAME),  # encoder conv1: in < out, batch 2
        ((1, 8, 12, 16), (3, 3), 8, SAME),  # decoder conv1: in > out (patches of the gradient)
        ((1, 9, 7, 5), (3, 2), 4, ((0, 2), (1, 0))),  # asymmetric kernel and padding
        ((1, 9, 7, 4), (3, 2), 5, ((2, 0), (0, 1))),  # the same, patches of the input
        ((2, 8, 12, 4), (1, 1), 6, ((0, 0), (0, 0))),  # pre_conv / shortcut / after_conv
    ],
)
def test_conv2d_matches_lax(shape, kernel_size, cout, padding):
    x = normal(0, shape)
    kernel = normal(1, (*kernel_size, shape[-1], cout)) * 0.3
    y_ref = conv_lib.conv2d(x, kernel, padding, gemm=False)
    g = normal(2, y_ref.shape)
    ref = jax.jit(lambda *a: value_and_grads(
        lambda x, k: conv_lib.conv2d(x, k, padding, gemm=False), *a))(x, kernel, g)
    out = jax.jit(lambda *a: value_and_grads(
        lambda x, k: conv_lib.conv2d(x, k, padding, gemm=True), *a))(x, kernel, g)
    for name, a, b in zip(("value", "d/dx", "d/dkernel"), out, ref, strict=True):
        assert a.shape == b.shape, name
        assert rel(a, b) <= TOL, (name, rel(a, b))


@pytest.mark.parametrize("cin,cout", [(6, 4), (4, 6)])
def test_kernel_grad_chunks(cin, cout):
    """Chunks of one row, of three rows, of two whole examples, and one chunk of everything:
    the loop covers every position once."""
    x, g = normal(3, (4, 6, 5, cin)), normal(4, (4, 6, 5, cout))
    ref = jax.vjp(lambda k: conv_lib.conv2d(x, k, SAME, gemm=False),
                  jnp.zeros((3, 3, cin, cout)))[1](g)[0]
    for depth in (1, 15, 60, 1 << 30):
        got = jax.jit(conv_lib.kernel_grad, static_argnums=(2, 3, 4))(x, g, (3, 3), SAME, depth)
        assert got.dtype == jnp.float32
        assert rel(got, ref) <= TOL, (depth, rel(got, ref))


@pytest.mark.parametrize("up,depth", [((1, 2), 1024), ((2, 2), 1024), ((2, 2), 6)])
def test_conv_transpose_matches_lax(up, depth, monkeypatch):
    monkeypatch.setattr(conv_lib, "CHUNK_DEPTH", depth)  # 6: kernel gradient over 5·2 chunks
    x = normal(5, (2, 5, 6, 8))
    kernel = normal(6, (*up, 6, 8)) * 0.3
    g = normal(7, (2, 5 * up[0], 6 * up[1], 6))
    ref = jax.jit(lambda *a: value_and_grads(
        lambda x, k: conv_lib.conv_transpose(x, k, gemm=False), *a))(x, kernel, g)
    out = jax.jit(lambda *a: value_and_grads(
        lambda x, k: conv_lib.conv_transpose(x, k, gemm=True), *a))(x, kernel, g)
    for name, a, b in zip(("value", "d/dx", "d/dkernel"), out, ref, strict=True):
        assert a.shape == b.shape, name
        assert rel(a, b) <= TOL, (name, rel(a, b))


@pytest.mark.parametrize(
    "ours,flax",
    [
        (conv_lib.Conv(6, (3, 3), SAME, use_bias=False),
         nn.Conv(6, (3, 3), padding=SAME, use_bias=False)),
        (conv_lib.Conv(6, (1, 1)), nn.Conv(6, (1, 1))),
        (conv_lib.ConvTranspose(6, (2, 2), use_bias=False),
         nn.ConvTranspose(6, (2, 2), strides=(2, 2), padding="VALID", use_bias=False,
                          transpose_kernel=True)),
        (conv_lib.ConvTranspose(6, (1, 2)),
         nn.ConvTranspose(6, (1, 2), strides=(1, 2), padding="VALID", transpose_kernel=True)),
    ],
)
def test_modules_match_flax(ours, flax):
    """Same parameter tree (names, shapes, dtypes) as Flax's layer; output and all gradients
    (input, kernel, bias) equal within float32 noise."""
    x = normal(8, (1, 6, 8, 4))
    shapes = jax.eval_shape(ours.init, jax.random.key(9), x)
    assert shapes == jax.eval_shape(flax.init, jax.random.key(9), x)
    params = {name: normal(i, s.shape) for i, (name, s) in enumerate(shapes["params"].items())}

    @partial(jax.jit, static_argnums=0)
    def run(module):
        y, pullback = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
        dp, dx = pullback(normal(10, y.shape))
        return y, dx, dp

    y, dx, dp = run(ours)
    y_ref, dx_ref, dp_ref = run(flax)
    assert rel(y, y_ref) <= TOL and rel(dx, dx_ref) <= TOL
    for name in dp_ref:
        assert rel(dp[name], dp_ref[name]) <= TOL, name


def test_initial_values_match_flax():
    """Same initialisers and RNG use as Flax: a fresh ResUNet starts from the same weights."""
    x = normal(8, (1, 6, 8, 4))
    inits = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal())
    a = jax.jit(conv_lib.Conv(6, (3, 3), SAME, **inits).init)(jax.random.key(9), x)
    b = jax.jit(nn.Conv(6, (3, 3), padding=SAME, **inits).init)(jax.random.key(9), x)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_bfloat16_compute():
    """``dtype=bfloat16``: bf16 output, float32 kernel gradient close to the float32 layer's."""
    x = normal(11, (1, 8, 8, 8))
    params = {"kernel": normal(12, (3, 3, 8, 8))}

    @partial(jax.jit, static_argnums=0)
    def run(dtype):
        layer = conv_lib.Conv(8, (3, 3), SAME, use_bias=False, dtype=dtype)
        y, pullback = jax.vjp(lambda p: layer.apply({"params": p}, x), params)
        return y, pullback(jnp.ones_like(y))[0]["kernel"]

    y, dk = run(jnp.bfloat16)
    assert y.dtype == jnp.bfloat16 and dk.dtype == jnp.float32
    assert rel(dk, run(jnp.float32)[1]) < 2e-2


def test_other_backends_use_lax(monkeypatch):
    """Off CPU the functions are plain lax convolutions (no einsum, no custom VJP)."""
    monkeypatch.setattr(conv_lib.jax, "default_backend", lambda: "gpu")
    x = jnp.zeros((1, 4, 4, 3))

    def loss(k3, k1, kt):
        y = conv_lib.conv2d(x, k3, SAME) + conv_lib.conv2d(x, k1)
        return jnp.sum(conv_lib.conv_transpose(y, kt))

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(
        jnp.zeros((3, 3, 3, 5)), jnp.zeros((1, 1, 3, 5)), jnp.zeros((2, 2, 2, 5)))
    prims = {e.primitive.name for e in jaxpr.jaxpr.eqns}
    assert "conv_general_dilated" in prims
    assert not prims & {"dot_general", "custom_vjp_call", "custom_vjp_call_jaxpr", "while"}


class _EncoderDecoder(nn.Module):
    """One ResUNet encoder block and the decoder block that takes its skip: every kind of
    convolution the trunk has (3×3 with in < out, in = out and in > out, 1×1 shortcuts with bias,
    the 2×2 transposed convolution), between train-mode BatchNorms and FiLM."""

    @nn.compact
    def __call__(self, x, film):
        from s5jax.models.resunet import DecoderBlock, EncoderBlock

        pooled, skip = EncoderBlock(8, (2, 2), name="enc")(x, film["enc"], True)
        return DecoderBlock(8, (2, 2), name="dec")(pooled, skip, film["dec"], True)


def test_resunet_blocks_gradients_match_lax_path(monkeypatch):
    """Train-mode ResUNet blocks: output, every parameter gradient, the input gradient and the
    BatchNorm statistics equal those of the lax path. Float32 noise through a stack: per tensor
    max |error| ≤ 1e-4 × max |reference|, plus a floor of 1e-6 × the largest gradient, because
    some gradients are zero in exact arithmetic (a bias feeding a train-mode BatchNorm) and come
    out as rounding noise whose relative error means nothing."""
    x = normal(12, (2, 8, 12, 4))

    def beta(key, c):
        return (None, normal(key, (2, c)))

    film = {"enc": {"conv_block1": {"beta1": beta(13, 4), "beta2": beta(14, 8)}},
            "dec": {"beta1": beta(15, 8), "conv_block2": {"beta1": beta(16, 16),
                                                          "beta2": beta(17, 8)}}}
    model = _EncoderDecoder()
    variables = jax.jit(model.init)(jax.random.key(0), x, film)
    g = normal(18, (2, 8, 12, 8))

    def run(gemm: bool):
        monkeypatch.setattr(conv_lib, "use_gemm", lambda: gemm)

        def f(params, x):
            return model.apply({**variables, "params": params}, x, film,
                               mutable=["batch_stats"])

        (y, stats), pullback = jax.vjp(f, variables["params"], x)
        zero_stats = jax.tree.map(jnp.zeros_like, stats)
        return y, stats, pullback((g, zero_stats))

    # The switch is effective: only the CPU path has matrix products.
    assert "dot_general" in str(jax.make_jaxpr(lambda: run(True))())
    assert "dot_general" not in str(jax.make_jaxpr(lambda: run(False))())
    y_ref, s_ref, (dp_ref, dx_ref) = jax.jit(lambda: run(False))()
    y, s, (dp, dx) = jax.jit(lambda: run(True))()
    assert rel(y, y_ref) <= 1e-5 and rel(dx, dx_ref) <= 1e-4
    for ref, got in zip(jax.tree.leaves(s_ref), jax.tree.leaves(s), strict=True):
        assert rel(got, ref) <= 1e-5
    scale = max(float(jnp.max(jnp.abs(t))) for t in jax.tree.leaves(dp_ref))
    paths = jax.tree_util.tree_flatten_with_path(dp_ref)[0]
    assert len(paths) == len(jax.tree.leaves(dp)) == 19  # 6 convs (2 with bias), 1 ConvT, 5 BNs
    for (path, ref), got in zip(paths, jax.tree.leaves(dp), strict=True):
        err = float(jnp.max(jnp.abs(got - ref)))
        assert err <= 1e-4 * float(jnp.max(jnp.abs(ref))) + 1e-6 * scale, (
            jax.tree_util.keystr(path), err)
