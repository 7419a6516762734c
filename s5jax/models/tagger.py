"""The audio tagger: log-mel → M2D ViT → mean-pooled tokens → BatchNorm → head.

Spec §4 (baseline ``M2dAt``) plus the seed's adapters (seed_system.md §1), and the DCASE 2026
baseline (dcase2026.md): a slot head (``M2dAt`` with ``HeadAvgLinear``) on channel 0 or, with
``in_channels=4``, on the per-channel features of one shared encoder (``M2dAtSpatial``,
``catchan_average_linear``). All are config values of one module:

* ``head="sigmoid18"`` (2025): Linear(F → 18) → sigmoid, ``probabilities (B, 18)``;
* ``head="slots"`` (2026): Linear(F → 3·1024) → LayerNorm → ReLU → per slot Linear(1024 → 512)
  → LayerNorm → ReLU → Linear(512 → 19), ``logits (B, 3, 19)`` (class 19 = silence).

Baseline vs seed is the config value ``adapters``; with fresh adapters (zero
``W_down``/``b_down``) both give the same outputs.
"""

from __future__ import annotations

import math
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
from s5jax.models.layers import BatchNorm, torch_linear_init
from s5jax.models.vit import ViT

HEAD_NORM_MOMENTUM = 0.1  # PyTorch convention (BatchNorm1d default)
HEADS = ("sigmoid18", "slots")
POOLS = ("mean", "meanmax")
SLOT_CLASSES = NUM_CLASSES + 1  # the 2026 slot head's classes: 18 + silence (index 18)
SILENCE_CLASS = NUM_CLASSES
SLOT_LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by the official HeadAvgLinear


def tagger_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Model config of the tagger; defaults are the seed (adapters on, all blocks, parallel).

    Fields: ``name``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``patch``,
    ``n_mels``, ``frames`` (training length in mel frames), ``features`` (``"flat"``: the
    D-dim patch tokens; ``"stacked"``: per time step the ``n_f·D`` frequency stack), ``pool``
    (how the tokens become one feature: ``"mean"``, the official mean over the tokens;
    ``"meanmax"``, the mean plus the element-wise maximum over the tokens, as PANNs pool a clip,
    which lets a short event carry a 10-s clip; for training from scratch), ``adapters``,
    ``adapter_ratio``, ``adapter_mode`` (``"parallel"``/``"sequential"``),
    ``adapter_blocks`` (block indices; empty = all), ``norm_stats`` (log-mel ``(mean, std)``,
    replaced by the checkpoint's value on conversion), ``dtype``, ``head`` (``"sigmoid18"``:
    2025, ``"slots"``: 2026), ``in_channels`` (mixture channels ``0..in_channels−1`` each run
    through the shared encoder, features concatenated channel-major: 1 = channel 0 only, 4 =
    the official ``M2dAtSpatial``), ``slot_dims`` (the slot head's ``(track_input_dim,
    track_hidden_dim)``, official ``(1024, 512)``), ``head_prior`` (``0``: the official
    initialisation of the sigmoid18 head's biases, uniform ±1/√F; ``p`` in (0, 1): every bias
    starts at ``log(p / (1 − p))``, so that the untrained tagger predicts the class prior ``p``
    instead of 0.5, for training from scratch; only the initial values differ).
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
            pool="mean",
            adapters=True,
            adapter_ratio=2,
            adapter_mode="parallel",
            adapter_blocks=(),
            norm_stats=mel.DEFAULT_NORM_STATS,
            dtype="float32",
            head="sigmoid18",
            in_channels=1,
            slot_dims=(1024, 512),
            head_prior=0.0,
        )
    )
    unknown = set(overrides) - set(cfg.keys())
    if unknown:
        raise ValueError(f"tagger_config: unknown fields {sorted(unknown)}")
    cfg.update(overrides)
    if cfg.features not in ("flat", "stacked"):
        raise ValueError(f"tagger config features={cfg.features!r}: expected 'flat' or 'stacked'")
    if cfg.pool not in POOLS:
        raise ValueError(f"tagger config pool={cfg.pool!r}: expected one of {POOLS}")
    if cfg.adapter_mode not in ("parallel", "sequential"):
        raise ValueError(
            f"tagger config adapter_mode={cfg.adapter_mode!r}: expected 'parallel' or 'sequential'"
        )
    if cfg.head not in HEADS:
        raise ValueError(f"tagger config head={cfg.head!r}: expected one of {HEADS}")
    for name in ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch", "n_mels", "frames",
                 "adapter_ratio"):
        if not cfg[name] >= 1:
            raise ValueError(f"tagger config {name}={cfg[name]!r}: expected ≥ 1")
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(f"tagger config embed_dim={cfg.embed_dim} is not divisible by "
                         f"num_heads={cfg.num_heads}")
    if not 1 <= int(cfg.in_channels) <= 4:
        raise ValueError(f"tagger config in_channels={cfg.in_channels!r}: expected 1..4")
    if not 0.0 <= float(cfg.head_prior) < 1.0:
        raise ValueError(f"tagger config head_prior={cfg.head_prior!r}: expected 0 (official "
                         "initialisation) or a class probability in (0, 1)")
    if float(cfg.head_prior) and cfg.head != "sigmoid18":
        raise ValueError(f"tagger config head_prior={cfg.head_prior!r} is for head='sigmoid18', "
                         f"not {cfg.head!r}")
    if len(tuple(cfg.slot_dims)) != 2:
        raise ValueError(f"tagger config slot_dims={cfg.slot_dims!r}: expected (width, hidden)")
    return cfg


def feature_dim(cfg: ml_collections.ConfigDict) -> int:
    """Width of the pooled feature: ``in_channels`` × (D (flat) or ``n_f·D`` (stacked))."""
    n_f = cfg.n_mels // cfg.patch
    return int(cfg.in_channels) * cfg.embed_dim * (n_f if cfg.features == "stacked" else 1)


def _head_bias_init(fan_in: int, prior: float = 0.0):
    """PyTorch Linear's bias init (``prior = 0``) or the constant log-odds of ``prior``."""
    if prior:
        return nn.initializers.constant(math.log(prior / (1.0 - prior)))
    bound = 1.0 / fan_in**0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class _SlotMLP(nn.Module):
    """One slot's MLP of the official ``HeadAvgLinear``: Linear → LayerNorm → ReLU → Linear."""

    hidden: int
    classes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k, b = torch_linear_init(x.shape[-1])
        x = nn.Dense(self.hidden, kernel_init=k, bias_init=b, name="fc1")(x)
        x = nn.relu(nn.LayerNorm(epsilon=SLOT_LN_EPS, use_fast_variance=False, name="norm")(x))
        k, b = torch_linear_init(self.hidden)
        return nn.Dense(self.classes, kernel_init=k, bias_init=b, name="fc2")(x)


class SlotHead(nn.Module):
    """The 2026 slot head after the BatchNorm: ``(B, F)`` → logits ``(B, slots, classes)``.

    ``linear`` (F → slots·width) → ``linear_norm`` (LayerNorm, eps 1e-5) → ReLU → split into
    slots → ``tracks``: one MLP per slot (width → hidden → classes), evaluated as one vmapped
    module with parameters stacked on a leading slot axis. PyTorch default initialisation.
    """

    slots: int
    width: int
    hidden: int
    classes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k, b = torch_linear_init(x.shape[-1])
        x = nn.Dense(self.slots * self.width, kernel_init=k, bias_init=b, name="linear")(x)
        x = nn.LayerNorm(epsilon=SLOT_LN_EPS, use_fast_variance=False, name="linear_norm")(x)
        x = nn.relu(x).reshape(x.shape[:-1] + (self.slots, self.width))
        tracks = nn.vmap(
            _SlotMLP, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=-2, out_axes=-2,
        )
        return tracks(self.hidden, self.classes, name="tracks")(x)


class Tagger(nn.Module):
    """``mixture (batch, channels, samples)`` → ``probabilities (batch, 18)`` (``"sigmoid18"``)
    or slot ``logits (batch, 3, 19)`` (``"slots"``).

    Channels ``0..in_channels−1`` are used. ``tokens`` returns the encoder's patch tokens (flat:
    ``(batch, N, C·D)``; stacked ``(batch, n_t, C·n_f·D)``, C = ``in_channels``, features
    channel-major) for parity checks.
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
        if cfg.head == "slots":
            width, hidden = (int(v) for v in cfg.slot_dims)
            self.head = SlotHead(MAX_SOURCES, width, hidden, SLOT_CLASSES, name="head")
        else:
            # torch trunc_normal_(std=2e-5) truncates at ±2 absolute, never binding at this std.
            self.head = nn.Dense(
                NUM_CLASSES, kernel_init=nn.initializers.normal(2e-5),
                bias_init=_head_bias_init(d, float(cfg.head_prior)), name="head",
            )

    def spectrogram(self, mixture: jnp.ndarray) -> jnp.ndarray:
        """Normalised log-mel of channels ``0..C−1``, ``(batch·C, frames, n_mels)``
        (batch-major: row ``b·C + c``)."""
        if mixture.ndim != 3 or mixture.shape[1] < self.config.in_channels:
            raise ValueError(
                f"mixture shape {mixture.shape}: expected (batch, channels ≥ "
                f"{self.config.in_channels}, samples)"
            )
        stats = tuple(float(v) for v in self.config.norm_stats)
        x = mixture[:, : self.config.in_channels].astype(jnp.float32)
        return mel.normalized_log_mel(x.reshape(-1, x.shape[-1]), stats)

    def _catchan(self, tok: jnp.ndarray, batch: int) -> jnp.ndarray:
        """Encoder tokens ``(B·C, N, F)`` → ``(B, N, C·F)``, features channel-major."""
        c = self.config.in_channels
        if c == 1:
            return tok
        # Official catchan: (B, C, N, F) → (B, N, C, F) → (B, N, C·F).
        tok = tok.reshape((batch, c) + tok.shape[1:])
        return jnp.swapaxes(tok, 1, 2).reshape(tok.shape[0], tok.shape[2], -1)

    def tokens(self, mixture: jnp.ndarray) -> jnp.ndarray:
        lms = self.spectrogram(mixture)
        tok = self.encoder(lms, stacked=self.config.features == "stacked")  # (B·C, N, F)
        return self._catchan(tok, mixture.shape[0])

    def chunk_token_stats(self, window: jnp.ndarray, zero_frames: int = 0,
                          ) -> tuple[jnp.ndarray, jnp.ndarray, int]:
        """Sum and maximum over the tokens of ONE encoder chunk, for inputs streamed chunk by
        chunk.

        ``window``: ``(batch, channels ≥ in_channels, samples)`` cut from the reflect-padded
        signal (``s5jax.audio.mel.padded_window``) for the chunk's frames; ``zero_frames``: the
        zero frames the whole-clip path appends to this (last) chunk. The chunk's tokens are
        exactly those ``tokens`` gives for it, so the sums of all chunks divided by the token
        count is the mean, and the maximum of their maxima the maximum, that ``__call__`` pools
        (``pooled_output``). Returns ``(sum (batch, C·F) float32, max (batch, C·F) float32,
        tokens)``.
        """
        stats = tuple(float(v) for v in self.config.norm_stats)
        x = window[:, : self.config.in_channels].astype(jnp.float32)
        lms = mel.normalized_log_mel(x.reshape(-1, x.shape[-1]), stats, center=False)
        lms = jnp.pad(lms, ((0, 0), (0, zero_frames), (0, 0)))
        tok = self.encoder.encode_chunk(lms, stacked=self.config.features == "stacked")
        tok = self._catchan(tok, window.shape[0]).astype(jnp.float32)
        return jnp.sum(tok, axis=1), jnp.max(tok, axis=1), tok.shape[1]

    def head_output(self, feats: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Pooled token features ``(batch, C·F)`` → the outputs of ``__call__``."""
        out = self.head(self.head_norm(feats, train=train))
        return out if self.config.head == "slots" else nn.sigmoid(out)

    def pooled_output(self, mean: jnp.ndarray, maximum: jnp.ndarray,
                      train: bool = False) -> jnp.ndarray:
        """The mean and maximum of the tokens ``(batch, C·F)`` each → the outputs of
        ``__call__``, pooled as ``config.pool`` says."""
        return self.head_output(mean + maximum if self.config.pool == "meanmax" else mean, train)

    def tokens_and_probabilities(
        self, mixture: jnp.ndarray, train: bool = False
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(tokens, outputs)`` from one encoder pass; outputs as ``__call__``."""
        tok = self.tokens(mixture)
        t = tok.astype(jnp.float32)
        return tok, self.pooled_output(jnp.mean(t, axis=1), jnp.max(t, axis=1), train)

    def __call__(self, mixture: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """``"sigmoid18"``: probabilities ``(batch, 18)``; ``"slots"``: logits
        ``(batch, 3, 19)`` (the official forward output, before softmax). ``train`` switches
        head_norm to batch statistics."""
        return self.tokens_and_probabilities(mixture, train)[1]


def build_tagger(model_config: ml_collections.ConfigDict) -> Tagger:
    """Tagger module from a model config (``tagger_config`` fields)."""
    return Tagger(tagger_config(**dict(model_config)))


def init_variables(model: Tagger, seed: int = 0, samples: int = 32000) -> Any:
    """Fresh ``{"params", "batch_stats"}`` (shapes do not depend on ``samples``)."""
    x = jnp.zeros((1, model.config.in_channels, samples), jnp.float32)
    return model.init(jax.random.key(seed), x, train=False)


def predict(
    outputs: jnp.ndarray,
    threshold: float = 0.5,
    max_sources: int = MAX_SOURCES,
    allow_empty: bool = False,
) -> jnp.ndarray:
    """The baseline decision rule of either head, jit-able; chosen by the outputs' shape.

    * ``(batch, 18)`` sigmoid probabilities (2025, spec §4.5): every class with
      ``p ≥ threshold`` is kept, at most ``max_sources`` of them (those with the highest
      probability); if none passes, the arg-max class is kept unless ``allow_empty``. Kept
      classes in ascending class-index order (as the baseline's ``S5.predict_label``); ties in
      probability go to the lower class index (PyTorch's ``argsort`` is not stable).
    * ``(batch, slots, 19)`` slot logits (2026, ``M2dAt.predict`` + ``S5.predict_label`` +
      ``predict_label_separate``): per slot the arg-max of the softmax (first index on ties,
      as ``torch.max``), class 19 meaning silence; silence slots are moved last, the others
      keep their slot order (a stable sort). Repeats are kept. ``threshold``,
      ``max_sources`` and ``allow_empty`` do not apply.

    Returns:
      ``int32 (batch, max_sources)`` (2025) or ``int32 (batch, slots)`` (2026) class indices,
      ``-1`` for empty slots, empty slots last.
    """
    outputs = jnp.asarray(outputs)
    if outputs.ndim == 3:
        return _predict_slots(outputs)
    if outputs.ndim != 2:
        raise ValueError(
            f"predict: outputs of shape {outputs.shape}: expected (batch, {NUM_CLASSES}) "
            f"probabilities or (batch, slots, {SLOT_CLASSES}) slot logits"
        )
    probs = outputs
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


def _predict_slots(logits: jnp.ndarray) -> jnp.ndarray:
    """``(batch, slots, 19)`` → ``int32 (batch, slots)``, silence (−1) slots last."""
    return slot_decision(logits)[0]


def slot_decision(logits: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The 2026 rule of ``predict`` with the probability of each decision.

    Returns:
      ``labels int32 (batch, slots)`` as ``predict`` (−1 = silence, silence slots last) and
      ``probabilities float32 (batch, slots)``, the winning softmax probability of each slot in
      the same order (the official ``M2dAt.predict`` ``probabilities``, reordered with the labels
      as ``predict_label_separate`` does).
    """
    if logits.shape[-1] != SLOT_CLASSES:
        raise ValueError(
            f"predict: slot outputs of shape {logits.shape}: expected {SLOT_CLASSES} classes "
            f"(18 + silence) in the last axis"
        )
    # The official takes the arg-max of the softmax, not of the logits: identical except where
    # rounding makes two probabilities equal, which this keeps identical too.
    probs = jax.nn.softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)
    cls = jnp.argmax(probs, axis=-1)
    labels = jnp.where(cls == SILENCE_CLASS, EMPTY, cls).astype(jnp.int32)
    order = jnp.argsort(labels == EMPTY, axis=-1, stable=True)
    return (jnp.take_along_axis(labels, order, axis=-1),
            jnp.take_along_axis(jnp.max(probs, axis=-1), order, axis=-1))


TRAINABLE, FROZEN = "trainable", "frozen"


def check_trainable(mode: str, depth: int) -> None:
    """``ValueError`` unless ``mode`` (``config.trainable``) is a :func:`trainable_mask` mode for
    ``depth`` blocks; the config check and the mask share it."""
    if mode in ("all", "head", "adapters"):
        return
    if isinstance(mode, str) and mode.startswith("blocks:"):
        k = mode.split(":", 1)[1]
        if k.isdigit() and int(k) <= depth:
            return
        raise ValueError(f"config.trainable={mode!r}: expected blocks:k with 0 ≤ k ≤ {depth}")
    raise ValueError(f"config.trainable={mode!r}: expected 'head', 'blocks:k', 'adapters' or "
                     "'all'")


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
    check_trainable(mode, len(blocks))
    if mode == "all":
        def pick(path):
            return True
    elif mode == "head":
        def pick(path):
            return path[0] == "head"
    elif mode == "adapters":
        def pick(path):
            return path[0] == "head" or path[1:2] == ("norm",) or "adapter" in path
    else:  # "blocks:k"
        k = int(mode.split(":", 1)[1])
        last = {f"blocks_{i}" for i in blocks[len(blocks) - k :]}

        def pick(path):
            return path[0] == "head" or path[1:2] == ("norm",) or (path[1:2] and path[1] in last)
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
