"""Label-queried separators: ResUNet (1 slot per pass) and ResUNetK (3 slots per pass).

``model.apply(variables, mixture (B, 4, L), labels (B, S) int32, train=...)`` → ``(B, S, L)``.

* ``slots=3`` (ResUNetK): S must be 3; the query is the concatenated one-hots (54-d) and one pass
  yields all slots.
* ``slots=1`` (ResUNet): any S; the B·S (mixture, one-hot) pairs run as one batch of B·S items,
  like the official ``ResUNet30MultiPredict``.

Empty slots (``-1``) give exactly zero. Baseline vs seed variants are config values
(``film``, ``bottleneck``), see ``separator_config``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from s5jax import labels as labels_lib
from s5jax import modeldir
from s5jax.models import remat as remat_lib
from s5jax.models.film import FILM_MODES, LabelEmbedding, film_tree
from s5jax.models.resunet import BN_MOMENTUM, BOTTLENECKS, HEAD_INITS, ResUNet

NAMES = {"resunet": 1, "resunetk": 3}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def separator_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Default separator model config (official ResUNetK); keyword overrides.

    Fields: ``name`` ("resunet" | "resunetk"), ``slots`` (1 | 3; follows ``name`` unless given),
    ``film`` ("beta" baseline | "gamma_beta" seed), ``bottleneck`` ("none" | "dprnn"),
    ``dprnn_hidden``, ``dprnn_repeats``, ``channels`` (six encoder widths), ``dtype``
    ("float32" | "bfloat16" compute dtype; parameters stay float32), ``bn_momentum`` (BatchNorm
    running-average weight of a new batch, PyTorch convention; official 0.01), ``head_init``
    (``"official"`` | ``"mixture"``: how after_conv starts, ``s5jax.models.resunet.HEAD_INITS``).
    """
    name = overrides.get("name", "resunetk")
    cfg = ml_collections.ConfigDict(
        dict(
            name=name,
            slots=NAMES.get(name, 3),
            film="beta",
            bottleneck="none",
            dprnn_hidden=128,
            dprnn_repeats=1,
            channels=(32, 64, 128, 256, 384, 384),
            dtype="float32",
            bn_momentum=BN_MOMENTUM,
            head_init="official",
        )
    )
    unknown = set(overrides) - set(cfg.keys())
    if unknown:
        raise ValueError(f"separator_config: unknown fields {sorted(unknown)}")
    cfg.update(overrides)
    validate_config(cfg)
    return cfg


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """``ValueError`` naming the field if a separator config is inconsistent."""
    if cfg.get("name") not in NAMES:
        raise ValueError(
            f"model config name={cfg.get('name')!r}: not a separator (expected one of "
            f"{sorted(NAMES)})"
        )
    if cfg.slots != NAMES[cfg.name]:
        raise ValueError(f"model config: {cfg.name} has {NAMES[cfg.name]} slots, got {cfg.slots}")
    if cfg.film not in FILM_MODES:
        raise ValueError(f"model config film={cfg.film!r}: expected one of {FILM_MODES}")
    if cfg.bottleneck not in BOTTLENECKS:
        raise ValueError(f"model config bottleneck={cfg.bottleneck!r}: expected {BOTTLENECKS}")
    if len(tuple(cfg.channels)) != 6 or min(int(c) for c in cfg.channels) < 1:
        raise ValueError(f"model config channels={tuple(cfg.channels)}: expected six widths ≥ 1")
    if int(cfg.get("dprnn_hidden", 1)) < 1 or int(cfg.get("dprnn_repeats", 1)) < 1:
        raise ValueError(f"model config dprnn_hidden={cfg.get('dprnn_hidden')}, dprnn_repeats="
                         f"{cfg.get('dprnn_repeats')}: expected ≥ 1 each")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"model config dtype={cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    if not 0.0 < float(cfg.get("bn_momentum", BN_MOMENTUM)) <= 1.0:
        raise ValueError(f"model config bn_momentum={cfg.bn_momentum!r}: expected 0 < m <= 1")
    if cfg.get("head_init", "official") not in HEAD_INITS:
        raise ValueError(f"model config head_init={cfg.head_init!r}: expected one of {HEAD_INITS}")


class Separator(nn.Module):
    """Label embedding → FiLM → ResUNet ``base`` → source mask.

    ``remat`` (``s5jax.models.remat``) is a training setting passed by ``build_separator``; it is
    not part of the model config.
    """

    slots: int = 3
    film: str = "beta"
    bottleneck: str = "none"
    dprnn_hidden: int = 128
    dprnn_repeats: int = 1
    channels: Sequence[int] = (32, 64, 128, 256, 384, 384)
    dtype: Any = jnp.float32
    remat: str = remat_lib.NONE
    bn_momentum: float = BN_MOMENTUM
    head_init: str = "official"

    @nn.compact
    def __call__(self, mixture: jnp.ndarray, labels: jnp.ndarray, train: bool = False):
        """``mixture (B, 4, L)`` float, ``labels (B, S)`` int32 (−1 empty) → ``(B, S, L)``."""
        if mixture.ndim != 3:
            raise ValueError(f"mixture shape {mixture.shape}: expected (batch, channels, samples)")
        if labels.ndim != 2 or labels.shape[0] != mixture.shape[0]:
            raise ValueError(
                f"labels shape {labels.shape}: expected (batch={mixture.shape[0]}, slots)"
            )
        b, s = labels.shape
        length = mixture.shape[-1]
        if self.slots == 1:
            # One pass over B·S items, slot-major within a sample (official MultiPredict).
            query = labels_lib.one_hot(labels.reshape(b * s, 1)).reshape(b * s, -1)
            mixture = jnp.repeat(mixture, s, axis=0)
        elif s == self.slots:
            query = labels_lib.query(labels)
        else:
            raise ValueError(
                f"labels shape {labels.shape}: this separator has {self.slots} slots per pass"
            )
        cond = LabelEmbedding(name="label_embedding")(query)
        film = film_tree(tuple(self.channels), self.film, name="film")(cond)
        wav = ResUNet(
            tuple(self.channels),
            self.slots,
            self.bottleneck,
            self.dprnn_hidden,
            self.dprnn_repeats,
            self.dtype,
            self.remat,
            self.bn_momentum,
            self.head_init,
            name="base",
        )(mixture, film, train)
        wav = wav.reshape(b, s, length)
        return wav * labels_lib.active(labels).astype(wav.dtype)[..., None]


def build_separator(
    model_config: ml_collections.ConfigDict, remat: str = remat_lib.NONE
) -> Separator:
    """Separator module from a model config (see ``separator_config``); ``remat``: the
    training-time rematerialisation of the blocks (``s5jax.models.remat``, e.g. ``"blocks"``)."""
    validate_config(model_config)
    remat_lib.parse(remat)  # fails early on an unknown value
    return Separator(
        slots=int(model_config.slots),
        film=model_config.film,
        bottleneck=model_config.bottleneck,
        dprnn_hidden=int(model_config.dprnn_hidden),
        dprnn_repeats=int(model_config.dprnn_repeats),
        channels=tuple(int(c) for c in model_config.channels),
        dtype=DTYPES[model_config.dtype],
        remat=remat,
        # Model directories written before these fields existed hold the official values.
        bn_momentum=float(model_config.get("bn_momentum", BN_MOMENTUM)),
        head_init=model_config.get("head_init", "official"),
    )


def load_separator(path: str | os.PathLike):
    """``(model, variables, model_config)`` from a model directory (converted or trained)."""
    cfg, variables = modeldir.load_model(path, NAMES)
    return build_separator(cfg), variables, cfg
