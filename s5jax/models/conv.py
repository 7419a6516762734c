"""The ResUNet's 2-D convolutions, channels-last, with a backward pass that is fast on XLA:CPU.

``Conv`` and ``ConvTranspose`` hold the parameters of ``flax.linen.Conv`` (``kernel (kh, kw, in,
out)``, ``bias (out,)``) and of ``flax.linen.ConvTranspose(strides=kernel_size, padding="VALID",
transpose_kernel=True)`` (``kernel (kh, kw, out, in)``), with the same initialisers, dtype
promotion and values, so checkpoints and the converter cannot tell which implementation ran.

Why two implementations: XLA:CPU computes a convolution's kernel gradient as a second convolution
whose window is the whole feature map and whose output is the kernel, after transposing both
operands; for the stride-2 transposed convolutions it falls back to a slow generic loop. Measured
on a 2-core CPU (issue 15), these made the ResUNetK's backward pass about 10× its forward pass.
On CPU (``jax.default_backend() == "cpu"`` when the function is traced) this module therefore
computes:

* 1×1 convolutions and the kernel = stride transposed convolutions as matrix products (einsum,
  plus a depth-to-space reshape), whose gradients are matrix products as well;
* k×k convolutions with ``lax.conv_general_dilated`` forward and for the input gradient, and the
  kernel gradient under ``jax.custom_vjp`` as a GEMM of patches: the sum over positions of
  ``a ⊗ patches(b)``, where ``b`` is the one of (input, output gradient) with fewer channels, in
  chunks of rows small enough to stay in cache (float32 accumulation).

Elsewhere (GPU, TPU) both are ``lax.conv_general_dilated`` / ``lax.conv_transpose``, as in Flax.
tests/test_conv.py checks that the two agree to float32 noise, values and gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Bytes of patches per chunk of the kernel-gradient GEMM (a few rows of the feature map):
# small enough for the CPU caches, large enough that the loop overhead is negligible.
CHUNK_BYTES = 1 << 20


def use_gemm() -> bool:
    """Whether the matrix-product implementation is the default: on the CPU backend."""
    return jax.default_backend() == "cpu"


def _lax_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMENSIONS)


def conv2d(x: jax.Array, kernel: jax.Array, padding: Padding = ((0, 0), (0, 0)), *,
           gemm: bool | None = None) -> jax.Array:
    """Stride-1 convolution (cross-correlation, as ``lax.conv_general_dilated``).

    Args:
      x: ``(batch, height, width, in)``.
      kernel: ``(kh, kw, in, out)``.
      padding: ``((top, bottom), (left, right))`` zero padding, each ≥ 0.
      gemm: the CPU implementation (``None``: :func:`use_gemm`).

    Returns:
      ``(batch, height + top + bottom − kh + 1, width + left + right − kw + 1, out)``.
    """
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if min(min(p) for p in padding) < 0:
        raise ValueError(f"padding {padding}: expected non-negative amounts")
    if not (use_gemm() if gemm is None else gemm):
        return _lax_conv(x, kernel, padding)
    if kernel.shape[:2] == (1, 1):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0))) if any(map(any, padding)) else x
        return jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0])
    return _conv_gemm_grad(x, kernel, padding)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_gemm_grad(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    return _lax_conv(x, kernel, padding)


def _conv_gemm_grad_fwd(x, kernel, padding):
    return _lax_conv(x, kernel, padding), (x, kernel)


def _conv_gemm_grad_bwd(padding, residuals, g):
    x, kernel = residuals
    _, pullback = jax.vjp(lambda x: _lax_conv(x, kernel, padding), x)
    (dx,) = pullback(g)
    return dx, kernel_grad(x, g, kernel.shape[:2], padding).astype(kernel.dtype)


_conv_gemm_grad.defvjp(_conv_gemm_grad_fwd, _conv_gemm_grad_bwd)


def kernel_grad(x: jax.Array, g: jax.Array, kernel_size: Sequence[int], padding: Padding,
                chunk_bytes: int = CHUNK_BYTES) -> jax.Array:
    """Gradient of ``Σ g·conv2d(x, kernel, padding)`` with respect to the kernel, as GEMMs.

    With ``xp = pad(x)``, ``dK[a, c] = Σ_{t, f} xp[t + a, f + c] ⊗ g[t, f]`` (patches of ``x``
    over the output grid), or equivalently, with ``gq = pad(g, kernel − 1)``,
    ``dK[a, c] = Σ_{t, f} x[t, f] ⊗ gq[t + top + kh − 1 − a, f + left + kw − 1 − c]`` (patches of
    ``g`` over the input grid). The side with fewer channels is patched.

    Args:
      x: ``(batch, H, W, in)``; g: ``(batch, Ho, Wo, out)``; kernel_size: ``(kh, kw)``.

    Returns:
      ``(kh, kw, in, out)`` float32.
    """
    kh, kw = kernel_size
    (top, bottom), (left, right) = padding
    ci, co = x.shape[-1], g.shape[-1]
    if co <= ci:
        gq = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
        taps = [(top + kh - 1 - a, left + kw - 1 - c) for a in range(kh) for c in range(kw)]
        s = _tap_products(x, gq, taps, chunk_bytes)  # (in, kh·kw·out)
        return s.reshape(ci, kh, kw, co).transpose(1, 2, 0, 3)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    taps = [(a, c) for a in range(kh) for c in range(kw)]
    s = _tap_products(g, xp, taps, chunk_bytes)  # (out, kh·kw·in)
    return s.reshape(co, kh, kw, ci).transpose(1, 2, 3, 0)


def _tap_products(a: jax.Array, src: jax.Array, taps: Sequence[tuple[int, int]],
                  chunk_bytes: int) -> jax.Array:
    """``Σ_{b,t,f} a[b,t,f] ⊗ concat_k src[b, t + dt_k, f + df_k]`` → ``(Ca, K·Cs)`` float32.

    ``a (B, T, F, Ca)``; ``src (B, ≥ T + max dt, ≥ F + max df, Cs)``. The sum runs over chunks of
    ``rows`` rows of one example (a ``fori_loop``), so each chunk's patches stay in cache.
    """
    b, t, f, ca = a.shape
    cs = src.shape[-1]
    span = max(dt for dt, _ in taps) + 1
    row_bytes = f * len(taps) * cs * jnp.dtype(src.dtype).itemsize
    rows = max(d for d in range(1, t + 1) if t % d == 0 and d * row_bytes <= max(chunk_bytes,
                                                                                   row_bytes))
    per_example = t // rows

    def body(i, acc):
        n, r = i // per_example, (i % per_example) * rows
        a_c = lax.dynamic_slice(a, (n, r, 0, 0), (1, rows, f, ca))
        s_c = lax.dynamic_slice(src, (n, r, 0, 0), (1, rows + span - 1, src.shape[2], cs))
        patches = jnp.concatenate([s_c[:, dt:dt + rows, df:df + f] for dt, df in taps], axis=-1)
        return acc + jnp.einsum("btfa,btfs->as", a_c, patches,
                                preferred_element_type=jnp.float32)

    init = jnp.zeros((ca, len(taps) * cs), jnp.float32)
    return lax.fori_loop(0, b * per_example, body, init)


def conv_transpose(x: jax.Array, kernel: jax.Array, *, gemm: bool | None = None) -> jax.Array:
    """Transposed convolution with stride = kernel size, no padding (non-overlapping upsampling).

    ``y[b, kh·t + a, kw·f + c] = Σ_i x[b, t, f, i] · kernel[a, c, :, i]``, i.e.
    ``lax.conv_transpose(x, kernel, strides=(kh, kw), padding="VALID", transpose_kernel=True)``
    and PyTorch's ``ConvTranspose2d(kernel_size=stride)`` with its weight ``(in, out, kh, kw)``
    transposed to ``(kh, kw, out, in)``.

    Args:
      x: ``(batch, T, F, in)``; kernel: ``(kh, kw, out, in)``.
      gemm: the CPU implementation (``None``: :func:`use_gemm`).

    Returns:
      ``(batch, kh·T, kw·F, out)``.
    """
    kh, kw, co, _ = kernel.shape
    if not (use_gemm() if gemm is None else gemm):
        return lax.conv_transpose(x, kernel, (kh, kw), "VALID", dimension_numbers=_DIMENSIONS,
                                  transpose_kernel=True)
    b, t, f, _ = x.shape
    y = jnp.einsum("btfi,acoi->btafco", x, kernel)
    return y.reshape(b, kh * t, kw * f, co)


class Conv(nn.Module):
    """``flax.linen.Conv`` (stride 1, explicit zero padding) on :func:`conv2d`."""

    features: int
    kernel_size: tuple[int, int]
    padding: Padding = ((0, 0), (0, 0))
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) \
            if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.padding)
        return y if bias is None else y + bias


class ConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose(strides=kernel_size, padding="VALID", transpose_kernel=True)``
    on :func:`conv_transpose`."""

    features: int
    kernel_size: tuple[int, int]
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, self.features, x.shape[-1])
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) \
            if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv_transpose(x, kernel)
        return y if bias is None else y + bias
