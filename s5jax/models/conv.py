"""The ResUNet's 2-D convolutions, channels-last, with a backward pass that is fast on XLA:CPU.

``Conv`` and ``ConvTranspose`` hold the parameters of ``flax.linen.Conv`` (``kernel (kh, kw, in,
out)``, ``bias (out,)``) and of ``flax.linen.ConvTranspose(strides=kernel_size, padding="VALID",
transpose_kernel=True)`` (``kernel (kh, kw, out, in)``), with the same initialisers, dtype
promotion and values, so checkpoints and the converter cannot tell which implementation ran.

Why two implementations: XLA:CPU computes a convolution's kernel gradient as a second convolution
whose window is the whole feature map and whose output is the kernel, after transposing both
operands; for the stride-2 transposed convolutions it falls back to a slow generic loop. Measured
on a 2-core CPU, the ResUNetK's parameter gradient cost 12× its forward pass at 1 × 4 s (3.2× with
this module).
On CPU (``jax.default_backend() == "cpu"`` when the function is traced) this module therefore
computes:

* the forward pass and the input gradient of 1×1 convolutions and of the kernel = stride
  transposed convolutions as matrix products (einsum, plus a depth-to-space reshape), those of
  k×k convolutions with ``lax.conv_general_dilated``;
* every kernel gradient under ``jax.custom_vjp`` as GEMMs over chunks of rows: the sum over
  positions of ``a ⊗ patches(b)``, where ``b`` is the one of (input, output gradient) with fewer
  channels after patching, so that the patches (and the transposes XLA makes for a GEMM that
  contracts over positions) stay in cache; float32 accumulation. Under a mesh of several CPU
  devices each device sums its own examples (``mesh.per_device``) and the partial sums are added
  across devices, since chunks sliced along the batch would otherwise gather it.

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
import numpy as np
from jax import lax

from s5jax.mesh import per_device

Padding = tuple[tuple[int, int], tuple[int, int]]

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Positions (rows × width × examples) per chunk of a kernel-gradient GEMM: deep enough that the
# accumulator update and the loop are cheap next to the product, shallow enough that a chunk's
# patches stay in the CPU caches where the layer is wide. Measured on the ResUNet's layers
# (2 cores): 256 to 1024 are equally fast, 4096 and more up to 2× slower.
CHUNK_DEPTH = 512


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
    return _conv_gemm(x, kernel, padding)


def _conv_forward(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    """The CPU forward pass: a matrix product for 1×1 kernels, else XLA's convolution."""
    if kernel.shape[:2] != (1, 1):
        return _lax_conv(x, kernel, padding)
    if any(map(any, padding)):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    return jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0])


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_gemm(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    return _conv_forward(x, kernel, padding)


def _conv_gemm_fwd(x, kernel, padding):
    return _conv_forward(x, kernel, padding), (x, kernel)


def _conv_gemm_bwd(padding, residuals, g):
    x, kernel = residuals
    (dx,) = jax.vjp(lambda x: _conv_forward(x, kernel, padding), x)[1](g)
    dk = _summed_per_device(lambda x, g: kernel_grad(x, g, kernel.shape[:2], padding), x, g)
    return dx, dk.astype(kernel.dtype)


_conv_gemm.defvjp(_conv_gemm_fwd, _conv_gemm_bwd)


def _summed_per_device(fn, *args: jax.Array) -> jax.Array:
    """``fn(*args)``, a sum over the batch, as per-device partial sums (``mesh.per_device``)
    added up across devices: the chunked GEMMs slice along the batch, which XLA's partitioner
    would otherwise serve by gathering the whole batch onto every device."""
    return per_device(lambda *a: fn(*a)[None])(*args).sum(0)


def kernel_grad(x: jax.Array, g: jax.Array, kernel_size: Sequence[int], padding: Padding,
                depth: int | None = None) -> jax.Array:
    """Gradient of ``Σ g·conv2d(x, kernel, padding)`` with respect to the kernel, as GEMMs.

    With ``xp = pad(x)``, ``dK[a, c] = Σ_{t, f} xp[t + a, f + c] ⊗ g[t, f]`` (patches of ``x``
    over the output grid), or equivalently, with ``gq = pad(g, kernel − 1)``,
    ``dK[a, c] = Σ_{t, f} x[t, f] ⊗ gq[t + top + kh − 1 − a, f + left + kw − 1 − c]`` (patches of
    ``g`` over the input grid). The side with fewer channels is patched.

    Args:
      x: ``(batch, H, W, in)``; g: ``(batch, Ho, Wo, out)``; kernel_size: ``(kh, kw)``;
      depth: positions per chunk (``None``: ``CHUNK_DEPTH``; see :func:`_chunked_products`).

    Returns:
      ``(kh, kw, in, out)`` float32.
    """
    kh, kw = kernel_size
    (top, bottom), (left, right) = padding
    ci, co = x.shape[-1], g.shape[-1]
    if co <= ci:
        a, ca, cs = x, ci, co
        src = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
        taps = [(top + kh - 1 - i, left + kw - 1 - j) for i in range(kh) for j in range(kw)]
    else:
        a, ca, cs = g, co, ci
        src = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        taps = [(i, j) for i in range(kh) for j in range(kw)]
    rows, width = a.shape[1:3]
    halo = max(dt for dt, _ in taps)

    def patches(s):  # (e, rows + halo, ≥ width + max df, cs) → (e, rows, width, kh·kw·cs)
        # One gather (XLA:CPU runs it as one loop; a concatenation of kh·kw slices takes
        # kh·kw + 1 operations per chunk, measured 15 % slower in all).
        r = s.shape[1] - halo
        if len(taps) == 1:
            return s[:, taps[0][0]:taps[0][0] + r, taps[0][1]:taps[0][1] + width]
        t_idx, f_idx, k_idx = np.meshgrid(np.arange(r), np.arange(width), np.arange(len(taps)),
                                          indexing="ij")
        dt, df = np.asarray(taps).T
        p = s[:, t_idx + dt[k_idx], f_idx + df[k_idx]]  # (e, rows, width, kh·kw, cs)
        return p.reshape(*p.shape[:3], len(taps) * cs)

    out = _chunked_products(a, src, halo, patches, depth or CHUNK_DEPTH).reshape(ca, kh, kw, cs)
    return out.transpose(1, 2, 0, 3) if co <= ci else out.transpose(1, 2, 3, 0)


def _chunked_products(a: jax.Array, src: jax.Array, halo: int, patches, depth: int) -> jax.Array:
    """``Σ_{b,t,f} a[b,t,f] ⊗ patches(src)[b,t,f]`` → ``(Ca, P)`` float32, in chunks.

    ``a (B, T, F, Ca)``; ``src (B, T + halo, …)``; ``patches`` maps ``src[b0:b0+e, r:r+rows+halo]``
    to ``(e, rows, F, P)``. A chunk is ``rows`` rows of one example, or ``e`` whole examples when
    one example has fewer than ``depth`` positions: the fewest with at least ``depth`` positions
    (divisors of T and B), so that the GEMMs are deep and the patches of one chunk stay small.
    """
    b, t, f, ca = a.shape
    rows = min((d for d in range(1, t + 1) if t % d == 0 and d * f >= depth), default=t)
    e = 1 if rows < t else min((d for d in range(1, b + 1) if b % d == 0 and d * t * f >= depth),
                               default=b)
    per_example = t // rows
    zeros = (0,) * (src.ndim - 2)

    def product(i):
        n, r = (i // per_example) * e, (i % per_example) * rows
        a_c = lax.dynamic_slice(a, (n, r, 0, 0), (e, rows, f, ca))
        s_c = lax.dynamic_slice(src, (n, r, *zeros), (e, rows + halo, *src.shape[2:]))
        return jnp.einsum("btfa,btfp->ap", a_c, patches(s_c), preferred_element_type=jnp.float32)

    chunks = (b // e) * per_example
    if chunks == 1:
        return product(0)
    return lax.fori_loop(1, chunks, lambda i, acc: acc + product(i), product(0))


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
    kh, kw = kernel.shape[:2]
    if not (use_gemm() if gemm is None else gemm):
        return lax.conv_transpose(x, kernel, (kh, kw), "VALID", dimension_numbers=_DIMENSIONS,
                                  transpose_kernel=True)
    return _conv_transpose_gemm(x, kernel)


def _upsample_product(x: jax.Array, kernel: jax.Array) -> jax.Array:
    b, t, f, _ = x.shape
    kh, kw, co, _ = kernel.shape
    y = jnp.einsum("btfi,acoi->btafco", x, kernel)
    return y.reshape(b, kh * t, kw * f, co)


@jax.custom_vjp
def _conv_transpose_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _upsample_product(x, kernel)


def _conv_transpose_gemm_fwd(x, kernel):
    return _upsample_product(x, kernel), (x, kernel)


def _conv_transpose_gemm_bwd(residuals, g):
    """Input gradient by autodiff of the product; kernel gradient in chunks, where the
    space-to-depth transpose of ``g`` stays in cache (XLA would transpose all of it at once)."""
    x, kernel = residuals
    kh, kw, co, ci = kernel.shape
    b, t, f, _ = x.shape
    (dx,) = jax.vjp(lambda x: _upsample_product(x, kernel), x)[1](g)
    src = g.reshape(b, t, kh, f, kw, co)

    def patches(s):  # (e, rows, kh, f, kw, co) → (e, rows, f, kh·kw·co)
        return s.transpose(0, 1, 3, 2, 4, 5).reshape(*s.shape[:2], f, kh * kw * co)

    dk = _summed_per_device(  # (in, kh·kw·out)
        lambda x, src: _chunked_products(x, src, 0, patches, CHUNK_DEPTH), x, src)
    return dx, dk.reshape(ci, kh, kw, co).transpose(1, 2, 3, 0).astype(kernel.dtype)


_conv_transpose_gemm.defvjp(_conv_transpose_gemm_fwd, _conv_transpose_gemm_bwd)


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
