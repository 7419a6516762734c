"""The S5 system end to end: tagger → labels → label-queried separator (spec §6.1).

``S5Pipeline`` is jitted per input shape. Inputs longer than one chunk (10 s by default) are
separated in overlapping chunks — all chunks of all clips in ONE batched separator pass — and the
chunk outputs are joined with raised-cosine cross-fades whose weights sum to exactly one. The
tagger always sees the whole clip (it chunks internally, spec §4.3). Inputs no longer than a chunk
go through the separator as they are: no padding, output length = input length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s5jax.labels import EMPTY, MAX_SOURCES, to_slots

SAMPLE_RATE = 32000
TORCH_SUFFIXES = (".ckpt", ".pth", ".pt")


# ---------------------------------------------------------------------------------------------
# Chunking


def chunk_plan(length: int, chunk: int, overlap: int) -> tuple[list[int], np.ndarray]:
    """Chunk starts and per-chunk cross-fade weights for a signal of ``length`` samples.

    Chunks have ``chunk`` samples; consecutive chunks overlap by at least ``overlap`` samples (the
    last chunk is aligned to the end of the signal, so its overlap may be larger). In each overlap
    a fade of ``overlap`` samples sits at the centre of the overlap: the earlier chunk fades out
    with cos², the later one fades in with sin², so at every sample the weights sum to 1.
    Outside the fades exactly one chunk owns each sample with weight 1.

    Returns:
      ``starts`` (n,) and ``weights (n, chunk)`` float32. ``length <= chunk`` gives one chunk
      with ``weights`` of shape ``(1, length)``.
    """
    if chunk <= 0 or overlap < 0:
        raise ValueError(f"chunk={chunk}, overlap={overlap}: expected chunk > 0, overlap >= 0")
    # Fade zones of neighbouring joins must not overlap (see docs/inference.md).
    if 3 * overlap > chunk:
        raise ValueError(f"overlap {overlap} > chunk/3 ({chunk}/3): fades of two joins would meet")
    if length <= chunk:
        return [0], np.ones((1, length), np.float32)
    hop = chunk - overlap
    n = math.ceil((length - chunk) / hop) + 1
    starts = [min(k * hop, length - chunk) for k in range(n)]
    t = np.arange(length, dtype=np.float64)
    rise = np.ones((n, length))  # rise[k]: fade-in of chunk k at join k−1
    fall = np.ones((n, length))  # fall[k]: fade-out of chunk k at join k
    for j in range(n - 1):
        a, b = starts[j + 1], starts[j] + chunk  # overlap of chunks j and j+1
        z0 = (a + b - overlap) // 2
        if overlap:
            f = np.sin(0.5 * np.pi * np.clip((t - z0 + 0.5) / overlap, 0.0, 1.0)) ** 2
        else:
            f = (t >= z0).astype(np.float64)
        rise[j + 1] = f
        fall[j] = 1.0 - f
    w = rise * fall
    weights = np.stack([w[k, s : s + chunk] for k, s in enumerate(starts)]).astype(np.float32)
    return starts, weights


def separate_chunked(
    separate_fn, mixture: jnp.ndarray, labels: jnp.ndarray, chunk: int, overlap: int
) -> jnp.ndarray:
    """Run ``separate_fn(mixture (N, C, chunk), labels (N, S)) -> (N, S, chunk)`` over long
    inputs in overlapping chunks, in one batched call, and cross-fade the joins.

    Args:
      mixture: ``(batch, channels, samples)``.
      labels: ``(batch, slots)`` int32.

    Returns:
      ``(batch, slots, samples)``.
    """
    b, c, length = mixture.shape
    starts, weights = chunk_plan(length, chunk, overlap)
    if len(starts) == 1:
        return separate_fn(mixture, labels)
    n = len(starts)
    chunks = jnp.stack([mixture[..., s : s + chunk] for s in starts], axis=1)  # (B, n, C, chunk)
    y = separate_fn(chunks.reshape(b * n, c, chunk), jnp.repeat(labels, n, axis=0))
    y = y.reshape(b, n, y.shape[1], chunk) * jnp.asarray(weights)[None, :, None, :]
    out = jnp.zeros((b, y.shape[2], length), y.dtype)
    for k, s in enumerate(starts):
        out = out.at[..., s : s + chunk].add(y[:, k])
    return out


# ---------------------------------------------------------------------------------------------
# Pipeline


def _default_predict(probs, threshold, max_sources, allow_empty):
    from s5jax.models.tagger import predict

    return predict(probs, threshold=threshold, max_sources=max_sources, allow_empty=allow_empty)


class S5Pipeline:
    """Tagger + separator.

    Args:
      tagger_model, tagger_vars: a module whose ``apply(vars, mixture (B, 4, L), train=False)``
        returns probabilities ``(B, 18)``. May be None for oracle-label use only.
      separator_model, separator_vars: ``apply(vars, mixture (B, 4, L), labels (B, S),
        train=False) -> (B, S, L)`` with empty slots exactly zero.
      threshold, max_sources, allow_empty: the decision rule (spec §4.5).
      chunk_seconds, overlap_seconds: separator chunking for long inputs.
      predict_fn: ``(probs, threshold, max_sources, allow_empty) -> labels (B, max_sources)``;
        defaults to ``s5jax.models.tagger.predict``.
    """

    def __init__(
        self,
        tagger_model: Any,
        tagger_vars: Any,
        separator_model: Any,
        separator_vars: Any,
        *,
        threshold: float = 0.5,
        max_sources: int = MAX_SOURCES,
        allow_empty: bool = False,
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 1.0,
        sample_rate: int = SAMPLE_RATE,
        predict_fn=None,
    ):
        self.tagger_model, self.tagger_vars = tagger_model, tagger_vars
        self.separator_model, self.separator_vars = separator_model, separator_vars
        self.threshold, self.max_sources, self.allow_empty = threshold, max_sources, allow_empty
        self.chunk = int(round(chunk_seconds * sample_rate))
        self.overlap = int(round(overlap_seconds * sample_rate))
        chunk_plan(2 * self.chunk, self.chunk, self.overlap)  # validates chunk/overlap early
        self.predict_fn = predict_fn or _default_predict
        self._tag = jax.jit(self._tag_impl)
        self._predicted = jax.jit(self._predicted_impl)
        self._oracle = jax.jit(self._oracle_impl)

    # -- pure functions (traced) --

    def _tag_impl(self, tv, mixture):
        return self.tagger_model.apply(tv, mixture, train=False)

    def _separate_impl(self, sv, mixture, labels):
        def fn(m, lab):
            return self.separator_model.apply(sv, m, lab, train=False)

        return separate_chunked(fn, mixture, labels, self.chunk, self.overlap)

    def _predicted_impl(self, tv, sv, mixture):
        probs = self._tag_impl(tv, mixture)
        labels = self.predict_fn(probs, self.threshold, self.max_sources, self.allow_empty)
        labels = jnp.asarray(labels, jnp.int32)
        return probs, labels, self._separate_impl(sv, mixture, labels)

    def _oracle_impl(self, sv, mixture, labels):
        return self._separate_impl(sv, mixture, labels)

    # -- public --

    def _check_mixture(self, mixture) -> jnp.ndarray:
        if mixture.ndim != 3:
            raise ValueError(
                f"mixture of shape {mixture.shape}: expected (batch, channels, samples)"
            )
        return mixture if isinstance(mixture, jax.Array) else jnp.asarray(mixture, jnp.float32)

    def tag(self, mixture) -> jnp.ndarray:
        """Probabilities ``(batch, 18)`` for ``mixture (batch, 4, samples)``."""
        if self.tagger_model is None:
            raise ValueError("this pipeline has no tagger")
        return self._tag(self.tagger_vars, self._check_mixture(mixture))

    def slots(self, labels, batch: int) -> np.ndarray:
        """Label lists / arrays → ``int32 (batch, max_sources)``, −1 padded."""
        if isinstance(labels, (np.ndarray, jax.Array)) and np.issubdtype(labels.dtype, np.integer):
            arr = np.asarray(labels, np.int32)
            if arr.ndim == 1:
                arr = arr[None]
            if arr.shape[1] > self.max_sources:
                raise ValueError(f"labels {arr.shape}: at most {self.max_sources} slots")
            arr = np.pad(arr, ((0, 0), (0, self.max_sources - arr.shape[1])),
                         constant_values=EMPTY)
        else:
            arr = np.atleast_2d(to_slots(labels, self.max_sources))
        if arr.shape[0] != batch:
            raise ValueError(f"{arr.shape[0]} label rows for a batch of {batch} mixtures")
        return arr

    def __call__(self, mixture, labels=None) -> dict[str, jnp.ndarray | None]:
        """Tag (unless ``labels`` are given) and separate.

        Args:
          mixture: ``(batch, 4, samples)`` float32.
          labels: None, or oracle labels — ``int32 (batch, slots)`` (−1 empty) or label lists.

        Returns:
          ``probabilities (batch, 18)`` (None in oracle-label mode), ``labels (batch, 3)``
          int32 −1 padded, ``waveforms (batch, 3, samples)`` (empty slots exactly zero).
        """
        mixture = self._check_mixture(mixture)
        if labels is None:
            if self.tagger_model is None:
                raise ValueError("no tagger: pass oracle labels")
            probs, lab, wave = self._predicted(self.tagger_vars, self.separator_vars, mixture)
            return {"probabilities": probs, "labels": lab, "waveforms": wave}
        lab = jnp.asarray(self.slots(labels, mixture.shape[0]))
        wave = self._oracle(self.separator_vars, mixture, lab)
        return {"probabilities": None, "labels": lab, "waveforms": wave}


# ---------------------------------------------------------------------------------------------
# Loading


def _is_torch_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TORCH_SUFFIXES


def load_separator_any(path: str | os.PathLike):
    """``(model, variables, model_config)`` from an s5jax model/work directory or an official
    PyTorch checkpoint (converted in memory)."""
    from s5jax.models import separator as sep

    p = Path(path)
    if _is_torch_file(p):
        from s5jax.convert import separator as conv

        model_config, variables = conv.convert_path(p)
        return sep.build_separator(model_config), variables, model_config
    if not p.exists():
        raise ValueError(f"{p}: no such separator checkpoint or model directory")
    return sep.load_separator(p)


def load_tagger_any(path: str | os.PathLike):
    """``(model, variables, model_config)`` for the tagger; see ``load_separator_any``."""
    from s5jax.models import tagger as tag

    p = Path(path)
    if _is_torch_file(p):
        from s5jax.convert import tagger as conv

        model_config, variables = conv.convert_path(p)
        return tag.build_tagger(model_config), variables, model_config
    if not p.exists():
        raise ValueError(f"{p}: no such tagger checkpoint or model directory")
    return tag.load_tagger(p)


def load_pipeline(
    tagger: str | os.PathLike | None = None,
    separator: str | os.PathLike | None = None,
    **kwargs,
) -> S5Pipeline:
    """Build an ``S5Pipeline`` from two paths (each an s5jax model directory, a training work
    directory, or an official ``.ckpt``/``.pth``). ``tagger=None`` gives an oracle-label-only
    pipeline. ``kwargs`` go to ``S5Pipeline``."""
    if separator is None:
        raise ValueError("a separator checkpoint is required")
    smodel, svars, _ = load_separator_any(separator)
    tmodel = tvars = None
    if tagger is not None:
        tmodel, tvars, _ = load_tagger_any(tagger)
    return S5Pipeline(tmodel, tvars, smodel, svars, **kwargs)


def stack_labels(label_lists: Sequence[Sequence[str]], max_sources: int = MAX_SOURCES):
    """Convenience: label-name lists → ``int32 (batch, max_sources)``."""
    return np.atleast_2d(to_slots(list(label_lists), max_sources))
