"""The audio tagger: channel-0 log-mel → M2D ViT → mean-pooled tokens → BatchNorm → Linear → σ.

Spec §4 (baseline ``M2dAt``) plus the seed's adapters (seed_system.md §1). Baseline vs seed is
the config value ``adapters``; with fresh adapters (zero ``W_down``/``b_down``) both give the
same probabilities.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import ml_collections

from s5jax import modeldir
from s5jax.audio import mel
from s5jax.labels import EMPTY, MAX_SOURCES, NUM_CLASSES
from s5jax.models.layers import BatchNorm
from s5jax.models.vit import ViT

HEAD_NORM_MOMENTUM = 0.1  # PyTorch convention (BatchNorm1d default)


def tagger_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Model config of the tagger; defaults are the seed (adapters on, all blocks, parallel).

    Fields: ``name``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``patch``,
    ``n_mels``, ``frames`` (training length in mel frames), ``features`` (``"flat"``: mean of
    all D-dim patch tokens; ``"stacked"``: per time step the ``n_f·D`` frequency stack, then the
    mean), ``adapters``, ``adapter_ratio``, ``adapter_mode`` (``"parallel"``/``"sequential"``),
    ``adapter_blocks`` (block indices; empty = all), ``norm_stats`` (log-mel ``(mean, std)``,
    replaced by the checkpoint's value on conversion), ``dtype``.
    """
    cfg = ml_collections.ConfigDict(
        dict(
            name="m2d_at",
            embed_dim=768,
            depth=12,
            num_heads=12,
            mlp_ratio=4,
            patch=16,
            n_mels=mel.N_MELS,
            frames=1001,
            features="flat",
            adapters=True,
            adapter_ratio=2,
            adapter_mode="parallel",
            adapter_blocks=(),
            norm_stats=mel.DEFAULT_NORM_STATS,
            dtype="float32",
        )
    )
    unknown = set(overrides) - set(cfg.keys())
    if unknown:
        raise ValueError(f"tagger_config: unknown fields {sorted(unknown)}")
    cfg.update(overrides)
    if cfg.features not in ("flat", "stacked"):
        raise ValueError(f"tagger config features={cfg.features!r}: expected 'flat' or 'stacked'")
    if cfg.adapter_mode not in ("parallel", "sequential"):
        raise ValueError(
            f"tagger config adapter_mode={cfg.adapter_mode!r}: expected 'parallel' or 'sequential'"
        )
    return cfg


def feature_dim(cfg: ml_collections.ConfigDict) -> int:
    """Width of the pooled feature: D (flat) or ``n_f·D`` (stacked)."""
    n_f = cfg.n_mels // cfg.patch
    return cfg.embed_dim * (n_f if cfg.features == "stacked" else 1)


def _head_bias_init(fan_in: int):
    bound = 1.0 / fan_in**0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Tagger(nn.Module):
    """``mixture (batch, channels, samples)`` → ``probabilities (batch, 18)``.

    Only channel 0 is used. ``tokens`` returns the encoder's patch tokens (flat:
    ``(batch, N, D)``; stacked ``(batch, n_t, n_f·D)``) for parity checks.
    """

    config: ml_collections.ConfigDict

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        blocks = tuple(cfg.adapter_blocks) or tuple(range(cfg.depth))
        self.encoder = ViT(
            embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio, patch=cfg.patch, n_mels=cfg.n_mels, frames=cfg.frames,
            adapter_blocks=blocks if cfg.adapters else (), adapter_ratio=cfg.adapter_ratio,
            adapter_mode=cfg.adapter_mode, dtype=dtype, name="encoder",
        )
        self.head_norm = BatchNorm(
            momentum=HEAD_NORM_MOMENTUM, use_scale=False, use_bias=False, name="head_norm"
        )
        d = feature_dim(cfg)
        # torch trunc_normal_(std=2e-5) truncates at ±2 absolute, which never binds at this std.
        self.head = nn.Dense(
            NUM_CLASSES, kernel_init=nn.initializers.normal(2e-5),
            bias_init=_head_bias_init(d), name="head",
        )

    def spectrogram(self, mixture: jnp.ndarray) -> jnp.ndarray:
        """Normalised log-mel of channel 0, ``(batch, frames, n_mels)``."""
        if mixture.ndim != 3:
            raise ValueError(f"mixture shape {mixture.shape}: expected (batch, channels, samples)")
        stats = tuple(float(v) for v in self.config.norm_stats)
        return mel.normalized_log_mel(mixture[:, 0].astype(jnp.float32), stats)

    def tokens(self, mixture: jnp.ndarray) -> jnp.ndarray:
        lms = self.spectrogram(mixture)
        return self.encoder(lms, stacked=self.config.features == "stacked")

    def tokens_and_probabilities(
        self, mixture: jnp.ndarray, train: bool = False
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(tokens, probabilities (batch, 18))`` from one encoder pass."""
        tok = self.tokens(mixture)
        feats = jnp.mean(tok.astype(jnp.float32), axis=1)
        feats = self.head_norm(feats, train=train)
        return tok, nn.sigmoid(self.head(feats))

    def __call__(self, mixture: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Probabilities ``(batch, 18)``; ``train`` switches head_norm to batch statistics."""
        return self.tokens_and_probabilities(mixture, train)[1]


def build_tagger(model_config: ml_collections.ConfigDict) -> Tagger:
    """Tagger module from a model config (``tagger_config`` fields)."""
    return Tagger(tagger_config(**dict(model_config)))


def init_variables(model: Tagger, seed: int = 0, samples: int = 32000) -> Any:
    """Fresh ``{"params", "batch_stats"}`` (shapes do not depend on ``samples``)."""
    x = jnp.zeros((1, 1, samples), jnp.float32)
    return model.init(jax.random.key(seed), x, train=False)


def predict(
    probs: jnp.ndarray,
    threshold: float = 0.5,
    max_sources: int = MAX_SOURCES,
    allow_empty: bool = False,
) -> jnp.ndarray:
    """The baseline decision rule (spec §4.5), jit-able.

    Every class with ``p ≥ threshold`` is kept, at most ``max_sources`` of them (those with the
    highest probability); if none passes, the arg-max class is kept unless ``allow_empty``.

    Args:
      probs: ``(batch, 18)`` probabilities.

    Returns:
      ``int32 (batch, max_sources)`` class indices in ascending class-index order (as the
      baseline's ``S5.predict_label``), padded with ``-1``. Ties in probability are broken
      deterministically in favour of the lower class index (PyTorch's ``argsort`` is not stable).
    """
    probs = jnp.asarray(probs)
    n = probs.shape[-1]
    # Stable descending sort: equal probabilities keep ascending class order.
    order = jnp.argsort(-probs, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)  # rank of each class by probability
    keep = (probs >= threshold) & (rank < max_sources)
    if not allow_empty:
        keep = keep | (rank == 0)
    # Kept classes first in class order, then padding: sort keys index (kept) / n + index.
    idx = jnp.arange(n, dtype=jnp.int32)
    keys = jnp.where(keep, idx, n + idx)
    picked = jnp.sort(keys, axis=-1)[..., :max_sources]
    return jnp.where(picked < n, picked, EMPTY).astype(jnp.int32)


TRAINABLE, FROZEN = "trainable", "frozen"


def trainable_mask(params: Any, mode: str) -> Any:
    """Labels ``"trainable"``/``"frozen"`` per parameter for ``optax.multi_transform``.

    Modes (spec §4.6, seed §1): ``"head"`` (head only; head_norm has no parameters),
    ``"blocks:k"`` (last k blocks + final norm + head; ``"blocks:2"`` is baseline stage 2),
    ``"adapters"`` (all adapters + final norm + head), ``"all"``.
    ``params`` is the ``params`` collection (or anything with the same tree structure).
    """
    flat = traverse_util.flatten_dict(params)
    blocks = sorted(
        {int(k[1].split("_")[1]) for k in flat if len(k) > 1 and k[1].startswith("blocks_")}
    )
    if mode == "all":
        def pick(path):
            return True
    elif mode == "head":
        def pick(path):
            return path[0] == "head"
    elif mode == "adapters":
        def pick(path):
            return path[0] == "head" or path[1:2] == ("norm",) or "adapter" in path
    elif mode.startswith("blocks:"):
        try:
            k = int(mode.split(":", 1)[1])
        except ValueError:
            k = -1
        if not 0 <= k <= len(blocks):
            raise ValueError(
                f"trainable mode {mode!r}: expected blocks:k with 0 ≤ k ≤ {len(blocks)}"
            )
        last = {f"blocks_{i}" for i in blocks[len(blocks) - k :]}

        def pick(path):
            return path[0] == "head" or path[1:2] == ("norm",) or (path[1:2] and path[1] in last)
    else:
        raise ValueError(
            f"trainable mode {mode!r}: expected 'head', 'blocks:k', 'adapters' or 'all'"
        )
    labels = {k: TRAINABLE if pick(k) else FROZEN for k in flat}
    return traverse_util.unflatten_dict(labels)


def count_params(params: Any, mask: Any | None = None, label: str = TRAINABLE) -> int:
    """Number of parameter elements (optionally only those whose mask label is ``label``)."""
    leaves = jax.tree.leaves(params)
    if mask is None:
        return sum(int(x.size) for x in leaves)
    labels = jax.tree.leaves(mask)
    return sum(int(x.size) for x, lab in zip(leaves, labels, strict=True) if lab == label)


NAMES = ("m2d_at",)  # the config ``name`` of tagger model directories


def load_tagger(path: str | os.PathLike) -> tuple[Tagger, Any, ml_collections.ConfigDict]:
    """``(model, variables, model_config)`` from a model directory (converted or trained)."""
    cfg, variables = modeldir.load_model(path, NAMES)
    model = build_tagger(cfg)
    return model, variables, model.config
