"""Layers with PyTorch semantics that Flax does not provide as-is.

``BatchNorm`` follows ``torch.nn.BatchNorm{1,2}d`` exactly (spec §8 P13, §8.1):

* normalisation uses the *biased* batch variance, the running variance is updated with the
  *unbiased* one (× N/(N−1), N = number of elements reduced over per feature);
* ``running = (1 − m)·running + m·batch`` with the PyTorch momentum ``m`` (0.01 in the ResUNet,
  0.1 in the tagger's head norm) — the opposite convention to Flax's ``momentum``;
* mean and variance are computed in two passes in float32 (no E[x²] − E[x]² cancellation).

Under ``jax.jit`` with the batch sharded over a mesh, ``jnp.mean`` over the batch axis is a
global mean, so the statistics equal PyTorch's SyncBatchNorm with no ``axis_name`` plumbing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

EPSILON = 1e-5


class BatchNorm(nn.Module):
    """PyTorch-semantics batch normalisation over one feature axis.

    Attributes:
      momentum: PyTorch convention (weight of the new batch statistic).
      epsilon: added to the variance.
      axis: feature axis (``-1`` for channels-last; the separator's ``bn0`` uses the frequency
        axis of ``(batch, time, freq, channels)``). Statistics pool over all other axes.
      use_scale, use_bias: learnable affine parameters ``scale`` / ``bias``.
      dtype: output dtype (``None``: the input's). Statistics are always float32.
    """

    momentum: float = 0.01
    epsilon: float = EPSILON
    axis: int = -1
    use_scale: bool = True
    use_bias: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        axis = self.axis % x.ndim
        features = x.shape[axis]
        reduce = tuple(i for i in range(x.ndim) if i != axis)
        bshape = [1] * x.ndim
        bshape[axis] = features

        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))

        xf = x.astype(jnp.float32)
        if train:
            mean = jnp.mean(xf, axis=reduce)
            var = jnp.mean(jnp.square(xf - mean.reshape(bshape)), axis=reduce)
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value

        mul = 1.0 / jnp.sqrt(var + self.epsilon)
        if self.use_scale:
            mul = mul * self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        y = (xf - mean.reshape(bshape)) * mul.reshape(bshape)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (features,), jnp.float32).reshape(
                bshape
            )
        return y.astype(self.dtype or x.dtype)


def torch_linear_init(fan_in: int):
    """PyTorch's default ``nn.Linear``/``nn.Conv`` init: ``U(±1/√fan_in)``.

    Returns ``(kernel_init, bias_init)``.
    """
    bound = 1.0 / fan_in**0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), bias_init
