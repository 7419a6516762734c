"""The S5 system end to end: tagger → labels → label-queried separator (spec §6.1).

Inputs no longer than one chunk (10 s by default) go through one jitted function (per input
shape) as they are: no padding, output length = input length. Longer inputs are streamed in
bounded memory (``chunking``): the separator in overlapping cross-faded chunks, ``batch_chunks``
per call of one fixed-shape function, into a host buffer; the s5jax tagger one 10-s encoder chunk
at a time (its own chunking, spec §4.3), which gives the whole-clip result.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s5jax.audio import mel, stft
from s5jax.audio.wav import SAMPLE_RATE
from s5jax.inference.chunking import check_chunking, separate_chunked, tag_chunked
from s5jax.labels import EMPTY, MAX_SOURCES, to_slots
from s5jax.mesh import make_mesh, on_mesh
from s5jax.models import tagger

# The shortest input the models take: the separator's centred STFT reflects 512 samples at each
# end (the tagger's needs 401).
MIN_SAMPLES = stft.PAD + 1


def check_length(samples: int, where: str | object) -> None:
    """``ValueError`` naming ``where`` if ``samples`` is too short for the S5 models."""
    if samples < MIN_SAMPLES:
        raise ValueError(f"{where}: {samples} samples ({samples / SAMPLE_RATE * 1000:.1f} ms); "
                         f"expected at least {MIN_SAMPLES} ({MIN_SAMPLES / SAMPLE_RATE * 1000:.1f}"
                         " ms at 32 kHz)")


def chunk_samples(chunk_seconds: float, overlap_seconds: float,
                  sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """``(chunk, overlap)`` in samples; ``ValueError`` unless the chunks are long enough for the
    models and the fades of two joins cannot meet (overlap ≤ chunk / 3)."""
    if not (math.isfinite(chunk_seconds) and math.isfinite(overlap_seconds)):
        raise ValueError(f"chunk_seconds={chunk_seconds}, overlap_seconds={overlap_seconds}: "
                         "expected finite numbers of seconds")
    chunk = int(round(chunk_seconds * sample_rate))
    overlap = int(round(overlap_seconds * sample_rate))
    where = f"chunk_seconds={chunk_seconds}, overlap_seconds={overlap_seconds}"
    if chunk < MIN_SAMPLES:
        raise ValueError(f"{where}: chunks of {chunk} samples; expected at least {MIN_SAMPLES} "
                         f"({MIN_SAMPLES / sample_rate * 1000:.1f} ms)")
    try:
        check_chunking(chunk, overlap)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return chunk, overlap


def check_threshold(threshold: float) -> None:
    """``ValueError`` unless ``threshold`` is a probability in [0, 1] (NaN would keep no class
    but the arg-max one, silently)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold}: expected a probability in [0, 1]")


class S5Pipeline:
    """Tagger + separator.

    Args:
      tagger_model, tagger_vars: a module whose ``apply(vars, mixture (B, 4, L), train=False)``
        returns probabilities ``(B, 18)``. May be None for oracle-label use only.
      separator_model, separator_vars: ``apply(vars, mixture (B, 4, L), labels (B, S),
        train=False) -> (B, S, L)`` with empty slots exactly zero.
      threshold, max_sources, allow_empty: the decision rule (spec §4.5).
      chunk_seconds, overlap_seconds: separator chunking for long inputs.
      batch_chunks: separator chunks per call for long inputs (memory grows with it).
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
        batch_chunks: int = 1,
        sample_rate: int = SAMPLE_RATE,
        predict_fn=None,
    ):
        self.tagger_model, self.tagger_vars = tagger_model, tagger_vars
        self.separator_model, self.separator_vars = separator_model, separator_vars
        check_threshold(threshold)
        self.threshold, self.max_sources, self.allow_empty = threshold, max_sources, allow_empty
        self.chunk, self.overlap = chunk_samples(chunk_seconds, overlap_seconds, sample_rate)
        if int(batch_chunks) < 1:
            raise ValueError(f"batch_chunks={batch_chunks}: expected ≥ 1")
        self.batch_chunks = int(batch_chunks)
        self.predict_fn = predict_fn or tagger.predict
        # Traced under the mesh of all devices, as the train and eval steps are: a batch sharded
        # over it (evaluate) runs its STFT and log-mel FFTs per device (mesh.per_device) instead
        # of being gathered onto every device; with one device, or a batch that does not split,
        # nothing changes.
        mesh = make_mesh()
        self._tag = jax.jit(on_mesh(self._tag_impl, mesh))
        self._predicted = jax.jit(on_mesh(self._predicted_impl, mesh))
        self._oracle = jax.jit(on_mesh(self._separate_impl, mesh))
        self._decide = jax.jit(self._decide_impl)
        self._chunk_stats = jax.jit(on_mesh(self._chunk_stats_impl, mesh), static_argnums=2)
        self._head = jax.jit(self._head_impl)

    # -- pure functions (traced) --

    def _tag_impl(self, tv, mixture):
        return self.tagger_model.apply(tv, mixture, train=False)

    def _chunk_stats_impl(self, tv, window, zero_frames):
        return self.tagger_model.apply(tv, window, zero_frames,
                                       method=tagger.Tagger.chunk_token_stats)

    def _head_impl(self, tv, mean, maximum):
        return self.tagger_model.apply(tv, mean, maximum, method=tagger.Tagger.pooled_output)

    def _decide_impl(self, probs):
        labels = self.predict_fn(probs, self.threshold, self.max_sources, self.allow_empty)
        return jnp.asarray(labels, jnp.int32)

    def _separate_impl(self, sv, mixture, labels):
        return self.separator_model.apply(sv, mixture, labels, train=False)

    def _predicted_impl(self, tv, sv, mixture):
        probs = self._tag_impl(tv, mixture)
        labels = self._decide_impl(probs)
        return probs, labels, self._separate_impl(sv, mixture, labels)

    # -- public --

    def _check_mixture(self, mixture):
        if mixture.ndim != 3:
            raise ValueError(
                f"mixture of shape {mixture.shape}: expected (batch, channels, samples)"
            )
        if isinstance(mixture, (jax.Array, np.ndarray)):
            return mixture
        return np.asarray(mixture, np.float32)

    def _streamed_tagger(self, length: int) -> bool:
        """True if the tagger runs chunk by chunk: an s5jax tagger on more than one chunk."""
        return (isinstance(self.tagger_model, tagger.Tagger)
                and mel.num_frames(length) > int(self.tagger_model.config.frames))

    def tag(self, mixture) -> jnp.ndarray:
        """Probabilities ``(batch, 18)`` for ``mixture (batch, 4, samples)``."""
        if self.tagger_model is None:
            raise ValueError("this pipeline has no tagger")
        mixture = self._check_mixture(mixture)
        if self._streamed_tagger(mixture.shape[-1]):
            cfg = self.tagger_model.config
            return tag_chunked(functools.partial(self._chunk_stats, self.tagger_vars),
                               functools.partial(self._head, self.tagger_vars),
                               np.asarray(mixture, np.float32), int(cfg.frames), int(cfg.patch))
        return self._tag(self.tagger_vars, mixture)

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

    def __call__(self, mixture, labels=None) -> dict[str, Any]:
        """Tag (unless ``labels`` are given) and separate.

        Args:
          mixture: ``(batch, 4, samples)`` float32 (numpy or jax).
          labels: None, or oracle labels — ``int32 (batch, slots)`` (−1 empty) or label lists.

        Returns:
          ``probabilities (batch, 18)`` (None in oracle-label mode), ``labels (batch, 3)``
          int32 −1 padded, ``waveforms (batch, 3, samples)`` (empty slots exactly zero); jax
          arrays for inputs of one chunk, numpy arrays (host) for longer ones.
        """
        mixture = self._check_mixture(mixture)
        if labels is None and self.tagger_model is None:
            raise ValueError("no tagger: pass oracle labels")
        if mixture.shape[-1] <= self.chunk:
            if labels is None:
                probs, lab, wave = self._predicted(self.tagger_vars, self.separator_vars,
                                                   mixture)
                return {"probabilities": probs, "labels": lab, "waveforms": wave}
            lab = jnp.asarray(self.slots(labels, mixture.shape[0]))
            wave = self._oracle(self.separator_vars, mixture, lab)
            return {"probabilities": None, "labels": lab, "waveforms": wave}
        host = np.asarray(mixture, np.float32)
        probs = None
        if labels is None:
            probs = self.tag(host)
            lab = np.asarray(self._decide(probs))
        else:
            lab = self.slots(labels, host.shape[0])
        wave = separate_chunked(functools.partial(self._oracle, self.separator_vars), host, lab,
                                self.chunk, self.overlap, self.batch_chunks)
        return {"probabilities": probs, "labels": lab, "waveforms": wave}
