"""The S5 system end to end: tagger → labels → label-queried separator (spec §6.1).

``S5Pipeline`` is jitted per input shape. Inputs longer than one chunk (10 s by default) are
separated in overlapping chunks (``chunking``); the tagger always sees the whole clip (it chunks
internally, spec §4.3). Inputs no longer than a chunk go through the separator as they are: no
padding, output length = input length.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s5jax.audio.wav import SAMPLE_RATE
from s5jax.inference.chunking import chunk_plan, separate_chunked
from s5jax.labels import EMPTY, MAX_SOURCES, to_slots
from s5jax.models import tagger


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
        self.predict_fn = predict_fn or tagger.predict
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
