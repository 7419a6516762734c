"""Output head of ResUNet30 (spec §3.6): magnitude mask, phase rotation, out_conv.

after_conv gives ``z (batch, time, 513, S·C·K)`` whose channel index is ``s·C·K + c·K + k``
(slot-major, then input channel, then component), so a channels-last reshape to
``(..., S, C, K)`` recovers the official layout.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from s5jax.models.layers import torch_linear_init

K = 3  # mask components: magnitude, rotation real, rotation imag
# Clamp of the rotation length: the official max(|(r, i)|, 1e-10) written as a clamp of the
# squared length, which has the same value and a finite gradient at (0, 0).
_ROT_CLAMP_SQ = 1e-20


def mask_spectra(
    z: jnp.ndarray, mag: jnp.ndarray, cos_in: jnp.ndarray, sin_in: jnp.ndarray, slots: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Masked, rotated per-channel spectra.

    Args:
      z: after_conv output ``(batch, time, freq, slots·C·3)``.
      mag, cos_in, sin_in: mixture magnitude and phase ``(batch, time, freq, C)``.
      slots: S.

    Returns:
      ``(Y_re, Y_im)``, each ``(batch, time, freq, S, C)``.
    """
    b, t, f, _ = z.shape
    c = mag.shape[-1]
    z = z.reshape(b, t, f, slots, c, K)
    m = nn.sigmoid(z[..., 0])
    r, i = jnp.tanh(z[..., 1]), jnp.tanh(z[..., 2])
    norm = jnp.sqrt(jnp.maximum(r * r + i * i, _ROT_CLAMP_SQ))
    cos_d, sin_d = r / norm, i / norm
    cos_in, sin_in, mag = cos_in[:, :, :, None], sin_in[:, :, :, None], mag[:, :, :, None]
    cos_out = cos_in * cos_d - sin_in * sin_d
    sin_out = sin_in * cos_d + cos_in * sin_d
    y = nn.relu(mag * m)
    return y * cos_out, y * sin_out


class OutConv(nn.Module):
    """1×1 conv C → 1 over the last axis with bias (PyTorch-default init).

    Applied separately to real and imaginary parts, so the bias lands on both (spec §7.4).
    Parameters ``kernel (1, 1, C, 1)``, ``bias (1,)`` as in ``nn.Conv``.
    """

    @nn.compact
    def __call__(self, y: jnp.ndarray) -> jnp.ndarray:
        c = y.shape[-1]
        k_init, b_init = torch_linear_init(c)
        kernel = self.param("kernel", k_init, (1, 1, c, 1), jnp.float32)
        bias = self.param("bias", b_init, (1,), jnp.float32)
        return jnp.einsum("...c,c->...", y, kernel[0, 0, :, 0]) + bias[0]
