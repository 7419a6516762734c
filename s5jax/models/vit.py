"""M2D ViT-B/16 encoder as the baseline tagger uses it (spec §4.3), with optional adapters.

Input is a normalised log-mel spectrogram ``(batch, frames, n_mels)``. Patches are 16×16
(mel × time); tokens are flattened **frequency-major** (token ``f·n_t + t``) as in M2D. Blocks
are pre-LN (LayerNorm eps 1e-6, exact GELU, qkv bias). Attention uses separate q/k/v
``DenseGeneral`` layers ``D → (heads, head_dim)`` and an output ``DenseGeneral``
``(heads, head_dim) → D`` so that PyTorch's fused ``qkv`` converts by slicing (spec §8.1).

Adapters (seed_system.md §1): an inverted bottleneck ``A(z) = ReLU(z W_up + b_up) W_down + b_down``
added in the feed-forward part of chosen blocks, ``parallel`` (``h + MLP(z) + A(z)``, z = LN2(h))
or ``sequential`` (``h + m + A(m)``, m = MLP(z)). ``W_down``/``b_down`` start at zero, so a fresh
adapter leaves the network unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

LN_EPS = 1e-6
CHUNK_FRAMES = 1001  # M2D's training input length (10 s at 32 kHz); longer inputs are chunked


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, name=name)


class Attention(nn.Module):
    """Multi-head self-attention, ``(batch, tokens, D)`` → same."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        dim = x.shape[-1]
        head_dim = dim // self.num_heads

        def proj(name):
            return nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name)(x)

        q, k, v = proj("query"), proj("key"), proj("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * (head_dim**-0.5), k)
        weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return nn.DenseGeneral(dim, axis=(-2, -1), dtype=self.dtype, name="out")(out)


class Mlp(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
        h = nn.gelu(h, approximate=False)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class Adapter(nn.Module):
    """Inverted bottleneck ``ReLU(z W_up + b_up) W_down + b_down``; zero-initialised output."""

    ratio: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        dim = z.shape[-1]
        h = nn.relu(nn.Dense(self.ratio * dim, dtype=self.dtype, name="up")(z))
        return nn.Dense(
            dim, dtype=self.dtype, kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros, name="down",
        )(h)


class Block(nn.Module):
    num_heads: int
    mlp_hidden: int
    adapter: bool = False
    adapter_ratio: int = 2
    adapter_mode: str = "parallel"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h = x + Attention(self.num_heads, self.dtype, name="attn")(_layer_norm("norm1")(x))
        z = _layer_norm("norm2")(h)
        m = Mlp(self.mlp_hidden, self.dtype, name="mlp")(z)
        if not self.adapter:
            return h + m
        adapter = Adapter(self.adapter_ratio, self.dtype, name="adapter")
        if self.adapter_mode == "parallel":
            return h + m + adapter(z)
        if self.adapter_mode == "sequential":
            return h + m + adapter(m)
        raise ValueError(f"adapter_mode {self.adapter_mode!r}: expected 'parallel' or 'sequential'")


class ViT(nn.Module):
    """M2D encoder.

    Attributes:
      embed_dim, depth, num_heads, mlp_ratio: transformer sizes (ViT-B: 768, 12, 12, 4).
      patch: square patch size (16).
      n_mels: mel bands (80) → ``n_mels // patch`` frequency patches.
      frames: training input length (1001) → ``frames // patch`` time columns in ``pos_embed``.
      adapter_blocks: indices of blocks that get an adapter (empty: none).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    patch: int = 16
    n_mels: int = 80
    frames: int = CHUNK_FRAMES
    adapter_blocks: Sequence[int] = ()
    adapter_ratio: int = 2
    adapter_mode: str = "parallel"
    dtype: jnp.dtype = jnp.float32

    @property
    def grid(self) -> tuple[int, int]:
        """``(frequency patches, time patches)`` of the position table (5, 62)."""
        return self.n_mels // self.patch, self.frames // self.patch

    def setup(self):
        n_f, n_t = self.grid
        init = nn.initializers.normal(0.02)
        self.cls_token = self.param("cls_token", init, (1, 1, self.embed_dim))
        self.pos_embed = self.param("pos_embed", init, (1, 1 + n_f * n_t, self.embed_dim))
        self.patch_embed = nn.Conv(
            self.embed_dim, (self.patch, self.patch), strides=(self.patch, self.patch),
            padding="VALID", dtype=self.dtype, name="patch_embed",
        )
        adapters = set(self.adapter_blocks)
        self.blocks = [
            Block(
                self.num_heads, self.mlp_ratio * self.embed_dim, adapter=i in adapters,
                adapter_ratio=self.adapter_ratio, adapter_mode=self.adapter_mode,
                dtype=self.dtype, name=f"blocks_{i}",
            )
            for i in range(self.depth)
        ]
        self.norm = _layer_norm("norm")

    def forward_encoder(self, lms: jnp.ndarray) -> jnp.ndarray:
        """A chunk ``(batch, frames ≤ 1001, n_mels)`` → ``(batch, 1 + n_f·n_t, D)``, cls first."""
        n_f, n_max = self.grid
        if lms.shape[-1] != self.n_mels:
            raise ValueError(f"spectrogram has {lms.shape[-1]} mel bands; expected {self.n_mels}")
        # Conv over (mel, time) = PyTorch's (H, W), so the kernel converts by OIHW → HWIO.
        x = self.patch_embed(jnp.swapaxes(lms, -1, -2)[..., None].astype(self.dtype))
        b, _, n_t, d = x.shape
        if n_t > n_max:
            raise ValueError(f"chunk of {lms.shape[-2]} frames has more than {n_max} time patches")
        x = x.reshape(b, n_f * n_t, d)  # frequency-major: token f·n_t + t
        pos = self.pos_embed[:, 1:].reshape(1, n_f, n_max, d)[:, :, :n_t].reshape(1, n_f * n_t, d)
        x = x + pos.astype(self.dtype)
        cls = jnp.broadcast_to(self.cls_token + self.pos_embed[:, :1], (b, 1, d))
        x = jnp.concatenate([cls.astype(self.dtype), x], axis=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def __call__(self, lms: jnp.ndarray, stacked: bool = False) -> jnp.ndarray:
        """``encode_lms``: any length ``(batch, frames, n_mels)`` → patch tokens.

        The spectrogram is right-padded with zeros by ``(16 − frames mod 16) mod 16`` frames,
        cut into chunks of 1001 frames (the last may be shorter), each chunk is encoded, its cls
        token dropped, and the chunks are concatenated along the token axis.

        Returns:
          flat: ``(batch, Σ n_f·n_t, D)`` (per chunk frequency-major);
          stacked: ``(batch, Σ n_t, n_f·D)`` with feature index ``f·D + d``.
        """
        total = lms.shape[-2]
        pad = (self.patch - total % self.patch) % self.patch
        lms = jnp.pad(lms, [(0, 0)] * (lms.ndim - 2) + [(0, pad), (0, 0)])
        outs = [self.encode_chunk(lms[..., i * self.frames : (i + 1) * self.frames, :], stacked)
                for i in range(math.ceil(total / self.frames))]
        return jnp.concatenate(outs, axis=1)

    def encode_chunk(self, lms: jnp.ndarray, stacked: bool = False) -> jnp.ndarray:
        """Patch tokens of one chunk ``(batch, frames ≤ 1001, n_mels)`` (cls dropped): flat
        ``(batch, n_f·n_t, D)`` or stacked ``(batch, n_t, n_f·D)``."""
        tok = self.forward_encoder(lms)[:, 1:]
        if stacked:
            n_f = self.grid[0]
            b, n, d = tok.shape
            tok = tok.reshape(b, n_f, n // n_f, d).transpose(0, 2, 1, 3).reshape(b, -1, n_f * d)
        return tok
