"""Dual-path RNN bottleneck of the seed ResUNet (seed_system.md §3).

On the centre tensor ``x (batch, time, freq, C)``::

    t   = x + Proj_t(BiLSTM_time(LN_t(x)))   # scan over time, independently per frequency row
    f   = t + Proj_f(BiLSTM_freq(LN_f(t)))   # scan over frequency, independently per frame
    out = x + Conv1x1(f − x)                 # zero-initialised: identity at start

The dual-path pair (t, f) is repeated ``repeats`` times before the final 1×1 convolution.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class BiLSTM(nn.Module):
    """Bidirectional LSTM over axis 1 of ``(batch, steps, features)``; output ``[fwd, bwd]``.

    Matches ``torch.nn.LSTM(bidirectional=True, batch_first=True)`` (conversion: spec §8.1).
    """

    hidden: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # parent=None: the cells/RNNs are adopted by the Bidirectional, giving the param tree
        # lstm/{forward_rnn,backward_rnn}/cell/{ii,…,ho} rather than cells bound here.
        def rnn():
            return nn.RNN(nn.OptimizedLSTMCell(self.hidden, parent=None), parent=None)

        return nn.Bidirectional(rnn(), rnn(), name="lstm")(x)


class DualPathBlock(nn.Module):
    """One intra-(time) and inter-(frequency) residual BiLSTM pair."""

    hidden: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, t, f, c = x.shape
        # time path: rows are (batch, freq) pairs
        h = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=self.dtype, name="ln_t")(x)
        h = h.transpose(0, 2, 1, 3).reshape(b * f, t, c)
        h = BiLSTM(self.hidden, name="rnn_t")(h)
        h = nn.Dense(c, dtype=self.dtype, name="proj_t")(h)
        x = x + h.reshape(b, f, t, c).transpose(0, 2, 1, 3)
        # frequency path: rows are (batch, time) pairs
        h = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=self.dtype, name="ln_f")(x)
        h = BiLSTM(self.hidden, name="rnn_f")(h.reshape(b * t, f, c))
        h = nn.Dense(c, dtype=self.dtype, name="proj_f")(h)
        return x + h.reshape(b, t, f, c)


class DPRNN(nn.Module):
    """``(batch, time, freq, C)`` → same shape; the identity at initialisation."""

    hidden: int = 128
    repeats: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = x
        for r in range(self.repeats):
            y = DualPathBlock(self.hidden, self.dtype, name=f"block{r + 1}")(y)
        out = nn.Conv(
            x.shape[-1],
            (1, 1),
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            name="out_conv",
        )(y - x)
        return x + out
