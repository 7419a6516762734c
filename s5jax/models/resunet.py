"""ResUNet30 trunk (spec §3.2–3.4), channels-last ``(batch, time, freq, channels)``.

``ResUNet`` is the official ``base`` module: STFT → bn0 (over frequency) → pad time to a multiple
of 32, drop the top bin → pre_conv → 6 encoders → conv_block7a → [bottleneck] → 6 decoders →
after_conv → zero top bin back, crop time → mask head → out_conv → ISTFT. It returns one waveform
per slot; the separator applies the source mask. Intermediate tensors are sown into the
``intermediates`` collection as ``<stage>_out`` (``bn0_out``, ``encoder_block1_out``, …,
``after_conv_out``, ``out_re``, ``out_im``) for parity tests; a no-op unless it is mutable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from s5jax.audio.stft import istft, magphase, stft
from s5jax.models import remat as remat_lib
from s5jax.models.conv import Conv, ConvTranspose
from s5jax.models.dprnn import DPRNN
from s5jax.models.film import apply_film
from s5jax.models.layers import BatchNorm
from s5jax.models.mask_head import K, OutConv, mask_spectra

BN_MOMENTUM = 0.01  # PyTorch convention; the official value, the default of `bn_momentum`
LRELU_SLOPE = 0.01
TIME_RATIO = 32  # 2**5 time down-sampling
BOTTLENECKS = ("none", "dprnn")
# Initialisation of after_conv, the layer in front of the mask head. "official": Xavier kernel,
# zero bias: every time-frequency bin starts with a random phase rotation (uniform angle) and the
# output is phase-scrambled noise. "mixture": zero kernel, bias (0, 1, 0) per component (mask
# sigmoid(0) = 0.5, rotation (tanh 1, tanh 0) = angle 0): the head starts from half of each
# mixture channel, un-rotated, so early training refines masks instead of first undoing
# random phases (docs/learning.md measures the difference on the small preset).
HEAD_INITS = ("official", "mixture")

_xavier = nn.initializers.xavier_uniform()


def _unrotated_bias(key, shape, dtype=jnp.float32) -> jnp.ndarray:
    """after_conv bias of ``head_init="mixture"``: (mask, rotation re, rotation im) = (0, 1, 0)
    for every slot and channel (channel index ``s·C·K + c·K + k``)."""
    del key
    return jnp.tile(jnp.array([0.0, 1.0, 0.0], dtype), shape[0] // K)


def _lrelu(x: jnp.ndarray) -> jnp.ndarray:
    return nn.leaky_relu(x, LRELU_SLOPE)


class ConvBlockRes(nn.Module):
    """``x+Conv3(LReLU(FiLM(BN2(Conv3(LReLU(FiLM(BN1(x))))))))``; 1×1 shortcut if widths differ."""

    features: int
    dtype: Any = jnp.float32
    bn_momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x: jnp.ndarray, film: dict, train: bool) -> jnp.ndarray:
        conv = dict(padding=((1, 1), (1, 1)), use_bias=False, kernel_init=_xavier, dtype=self.dtype)
        h = _lrelu(apply_film(BatchNorm(self.bn_momentum, name="bn1")(x, train), film["beta1"]))
        h = Conv(self.features, (3, 3), name="conv1", **conv)(h)
        h = _lrelu(apply_film(BatchNorm(self.bn_momentum, name="bn2")(h, train), film["beta2"]))
        h = Conv(self.features, (3, 3), name="conv2", **conv)(h)
        if x.shape[-1] != self.features:
            x = Conv(
                self.features, (1, 1), kernel_init=_xavier, dtype=self.dtype, name="shortcut"
            )(x)
        return x + h


class EncoderBlock(nn.Module):
    """``ConvBlockRes`` then average pooling; returns ``(pooled, skip)``."""

    features: int
    pool: tuple[int, int]
    dtype: Any = jnp.float32
    bn_momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x: jnp.ndarray, film: dict, train: bool):
        block = ConvBlockRes(self.features, self.dtype, self.bn_momentum, name="conv_block1")
        e = block(x, film["conv_block1"], train)
        if self.pool == (1, 1):
            return e, e
        return nn.avg_pool(e, self.pool, strides=self.pool), e


class DecoderBlock(nn.Module):
    """``ConvT(LReLU(FiLM(BN1(x))))`` (kernel = stride), concat ``[u, skip]``, ``ConvBlockRes``.

    The official block also owns ``bn2``/``beta2``, which its forward pass never uses; they are
    not created here.
    """

    features: int
    up: tuple[int, int]
    dtype: Any = jnp.float32
    bn_momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x: jnp.ndarray, skip: jnp.ndarray, film: dict, train: bool) -> jnp.ndarray:
        h = BatchNorm(self.bn_momentum, name="bn1")(x, train)
        u = ConvTranspose(  # stride = kernel, no padding
            self.features,
            self.up,
            use_bias=False,  # kernel (kh, kw, out, in) = torch (in, out, kh, kw).T(2,3,1,0)
            kernel_init=_xavier,
            dtype=self.dtype,
            name="conv1",
        )(_lrelu(apply_film(h, film["beta1"])))
        h = jnp.concatenate([u, skip.astype(u.dtype)], axis=-1)
        return ConvBlockRes(self.features, self.dtype, self.bn_momentum, name="conv_block2")(
            h, film["conv_block2"], train
        )


class ResUNet(nn.Module):
    """ResUNet30 ``base``: mixture ``(batch, 4, samples)`` → per-slot waveforms.

    Attributes:
      channels: six encoder widths (official ``(32, 64, 128, 256, 384, 384)``).
      slots: output slots S (after_conv has ``S·4·3`` channels).
      bottleneck: ``"none"`` or ``"dprnn"`` after conv_block7a.
      dtype: compute dtype of the convolutional trunk; STFT, bn0, mask head and ISTFT run in
        float32.
      remat: rematerialisation of the encoder/decoder blocks (``s5jax.models.remat``); changes
        memory and compute of the backward pass, never the outputs or parameter paths.
      bn_momentum: the BatchNorm running-average weight of a new batch (PyTorch convention;
        official 0.01). Only train-mode updates of ``batch_stats`` depend on it.
      head_init: initialisation of after_conv (:data:`HEAD_INITS`); only ``init`` depends on it.
    """

    channels: Sequence[int] = (32, 64, 128, 256, 384, 384)
    slots: int = 1
    bottleneck: str = "none"
    dprnn_hidden: int = 128
    dprnn_repeats: int = 1
    dtype: Any = jnp.float32
    remat: str = remat_lib.NONE
    bn_momentum: float = BN_MOMENTUM
    head_init: str = "official"

    @nn.compact
    def __call__(self, mixture: jnp.ndarray, film: dict, train: bool) -> jnp.ndarray:
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck={self.bottleneck!r}: expected one of {BOTTLENECKS}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init={self.head_init!r}: expected one of {HEAD_INITS}")
        b, c_in, length = mixture.shape
        re, im = stft(mixture.astype(jnp.float32))  # (B, C, T, 513)
        re, im = re.transpose(0, 2, 3, 1), im.transpose(0, 2, 3, 1)  # (B, T, 513, C)
        mag, cos_in, sin_in = magphase(re, im)
        frames, bins = mag.shape[1], mag.shape[2]

        x = BatchNorm(self.bn_momentum, axis=2, name="bn0")(mag, train)
        self.sow("intermediates", "bn0_out", x)
        pad_t = -frames % TIME_RATIO
        x = jnp.pad(x, ((0, 0), (0, pad_t), (0, 0), (0, 0)))[:, :, : bins - 1, :]
        x = x.astype(self.dtype)
        ch = list(self.channels)
        x = Conv(ch[0], (1, 1), kernel_init=_xavier, dtype=self.dtype, name="pre_conv")(x)

        encoder = remat_lib.wrap(EncoderBlock, self.remat, static_argnums=(3,))  # train
        decoder = remat_lib.wrap(DecoderBlock, self.remat, static_argnums=(4,))
        skips = []
        pools = [(2, 2)] * 5 + [(1, 2)]
        for i, (cout, pool) in enumerate(zip(ch, pools, strict=True)):
            name = f"encoder_block{i + 1}"
            block = encoder(cout, pool, self.dtype, self.bn_momentum, name=name)
            x, skip = block(x, film[name], train)
            skips.append(skip)
            self.sow("intermediates", name + "_out", x)
        x, _ = encoder(ch[5], (1, 1), self.dtype, self.bn_momentum, name="conv_block7a")(
            x, film["conv_block7a"], train
        )
        self.sow("intermediates", "conv_block7a_out", x)
        if self.bottleneck == "dprnn":
            x = DPRNN(self.dprnn_hidden, self.dprnn_repeats, self.dtype, name="dprnn")(x)
            self.sow("intermediates", "dprnn_out", x)

        dec_out = [ch[5], ch[4], ch[3], ch[2], ch[1], ch[0]]
        ups = [(1, 2)] + [(2, 2)] * 5
        for j, (cout, up) in enumerate(zip(dec_out, ups, strict=True)):
            name = f"decoder_block{j + 1}"
            block = decoder(cout, up, self.dtype, self.bn_momentum, name=name)
            x = block(x, skips[5 - j], film[name], train)
            self.sow("intermediates", name + "_out", x)

        head = dict(kernel_init=_xavier) if self.head_init == "official" else dict(
            kernel_init=nn.initializers.zeros, bias_init=_unrotated_bias)
        z = Conv(
            self.slots * c_in * K, (1, 1), dtype=self.dtype, name="after_conv", **head
        )(x).astype(jnp.float32)
        # Zero top bin after the bias (exact zeros), drop the time padding.
        z = jnp.pad(z, ((0, 0), (0, 0), (0, 1), (0, 0)))[:, :frames]
        self.sow("intermediates", "after_conv_out", z)

        y_re, y_im = mask_spectra(z, mag, cos_in, sin_in, self.slots)  # (B, T, F, S, C)
        out_conv = OutConv(name="out_conv")
        s_re, s_im = out_conv(y_re), out_conv(y_im)  # (B, T, F, S)
        s_re, s_im = s_re.transpose(0, 3, 1, 2), s_im.transpose(0, 3, 1, 2)  # (B, S, T, F)
        self.sow("intermediates", "out_re", s_re)
        self.sow("intermediates", "out_im", s_im)
        return istft(s_re, s_im, length)
