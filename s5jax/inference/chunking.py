"""Long inputs in bounded memory: the separator in overlapping chunks with raised-cosine
cross-fades, the tagger in its own 10-s encoder chunks.

Chunks go through the model in groups of at most ``batch_chunks``, each group one call of a
function of fixed shape (no recompilation per input length; a short last group is padded); the
cross-faded output is accumulated in a host (numpy) buffer. Device memory is bounded by the
chunk size and ``batch_chunks``, host memory by the input and output buffers, whatever the
length. The cross-fade weights sum to exactly one at every sample (see docs/inference.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax.numpy as jnp
import numpy as np

from s5jax.audio import mel


def check_chunking(chunk: int, overlap: int) -> None:
    if chunk <= 0 or overlap < 0:
        raise ValueError(f"chunk={chunk}, overlap={overlap}: expected chunk > 0, overlap >= 0")
    # Fade zones of neighbouring joins must not overlap (see docs/inference.md).
    if 3 * overlap > chunk:
        raise ValueError(f"overlap {overlap} > chunk/3 ({chunk}/3): fades of two joins would meet")


def chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Starts of the chunks of a signal of ``length`` samples (see ``chunk_plan``)."""
    check_chunking(chunk, overlap)
    if length <= chunk:
        return [0]
    hop = chunk - overlap
    n = math.ceil((length - chunk) / hop) + 1
    return [min(k * hop, length - chunk) for k in range(n)]


def _fade(t: np.ndarray, starts: list[int], j: int, chunk: int, overlap: int) -> np.ndarray:
    """Fade-in of chunk ``j + 1`` at the join of chunks ``j`` and ``j + 1``, at samples ``t``."""
    a, b = starts[j + 1], starts[j] + chunk  # overlap of chunks j and j+1
    z0 = (a + b - overlap) // 2
    if overlap:
        return np.sin(0.5 * np.pi * np.clip((t - z0 + 0.5) / overlap, 0.0, 1.0)) ** 2
    return (t >= z0).astype(np.float64)


def chunk_weight(starts: list[int], k: int, chunk: int, overlap: int, length: int) -> np.ndarray:
    """Cross-fade weights ``(min(chunk, length),)`` float32 of chunk ``k``: its fade-in at the
    join before it (sin²) times its fade-out at the join after it (cos²)."""
    if len(starts) == 1:
        return np.ones(min(chunk, length), np.float32)
    t = starts[k] + np.arange(chunk, dtype=np.float64)
    w = np.ones(chunk)
    if k > 0:
        w *= _fade(t, starts, k - 1, chunk, overlap)
    if k < len(starts) - 1:
        w *= 1.0 - _fade(t, starts, k, chunk, overlap)
    return w.astype(np.float32)


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
    starts = chunk_starts(length, chunk, overlap)
    return starts, np.stack([chunk_weight(starts, k, chunk, overlap, length)
                             for k in range(len(starts))])


def _groups(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def separate_chunked(
    separate_fn: Callable, mixture: np.ndarray, labels: np.ndarray, chunk: int, overlap: int,
    batch_chunks: int = 1,
) -> np.ndarray:
    """Run ``separate_fn(mixture (G, C, chunk), labels (G, S)) -> (G, S, chunk)`` over a long
    input in overlapping chunks, ``G = min(batch_chunks, chunks)`` per call, and cross-fade the
    joins into a host buffer.

    Args:
      mixture: ``(batch, channels, samples)`` with ``samples > chunk`` (host or device array).
      labels: ``(batch, slots)`` int32.
      batch_chunks: chunks per call; the last group is padded with copies of its first chunk.

    Returns:
      ``(batch, slots, samples)`` float32 numpy array.
    """
    mixture, labels = np.asarray(mixture), np.asarray(labels)
    b, c, length = mixture.shape
    if length <= chunk:
        raise ValueError(f"{length} samples: chunked separation needs more than {chunk}")
    if batch_chunks < 1:
        raise ValueError(f"batch_chunks={batch_chunks}: expected ≥ 1")
    starts = chunk_starts(length, chunk, overlap)
    items = [(i, k) for i in range(b) for k in range(len(starts))]
    g = min(batch_chunks, len(items))
    out = np.zeros((b, labels.shape[1], length), np.float32)

    def launch(group):
        x = np.stack([mixture[i, :, starts[k]:starts[k] + chunk] for i, k in group])
        lab = labels[[i for i, _ in group]]
        pad = g - len(group)
        if pad:
            x = np.concatenate([x, np.repeat(x[:1], pad, 0)])
            lab = np.concatenate([lab, np.repeat(lab[:1], pad, 0)])
        return group, separate_fn(x, lab)  # dispatched asynchronously

    def collect(group, y):
        y = np.asarray(y)
        for j, (i, k) in enumerate(group):
            out[i, :, starts[k]:starts[k] + chunk] += (
                y[j] * chunk_weight(starts, k, chunk, overlap, length))

    pending = None
    for group in _groups(items, g):
        nxt = launch(group)  # the next group runs while the previous one is accumulated
        if pending is not None:
            collect(*pending)
        pending = nxt
    collect(*pending)
    return out


def tagger_chunks(length: int, frames: int, patch: int) -> list[tuple[int, int, int]]:
    """The tagger's encoder chunks of an input of ``length`` samples (spec §4.3).

    The whole-clip path: ``T = 1 + length // 320`` log-mel frames, zero-padded to a multiple of
    ``patch``, cut into chunks of ``frames`` (1001); a chunk's patch grid keeps ``⌊n / patch⌋``
    time columns, so its last ``n mod patch`` frames are never seen.

    Returns:
      per chunk ``(first frame, signal frames used, zero frames appended)``; signal + zero
      frames is a multiple of ``patch``.
    """
    total = mel.num_frames(length)
    padded = total + (-total) % patch
    out = []
    for f0 in range(0, total, frames):
        n = min(frames, padded - f0)
        used = n - n % patch  # frames the patch grid sees
        real = min(used, total - f0)
        out.append((f0, real, used - real))
    return out


def tag_chunked(chunk_stats_fn: Callable, head_fn: Callable, mixture: np.ndarray, frames: int,
                patch: int) -> np.ndarray:
    """The tagger on a long input, one encoder chunk at a time.

    ``chunk_stats_fn(window, zero_frames) -> (sum (batch, F), max (batch, F), tokens)`` pools
    the tokens of one chunk (window: its reflect-padded samples,
    ``s5jax.audio.mel.padded_window``); ``head_fn(mean (batch, F), max (batch, F))`` gives the
    outputs. Equals the whole-clip tagger (its mean and maximum over all tokens) to float32
    rounding; memory is that of one chunk.
    """
    mixture = np.asarray(mixture)
    total, peak, count = None, None, 0
    for f0, real, zeros in tagger_chunks(mixture.shape[-1], frames, patch):
        if real + zeros == 0:
            continue  # a last chunk shorter than one patch has no tokens
        s, m, n = chunk_stats_fn(mel.padded_window(mixture, f0, real), zeros)
        count += int(n)
        total = s if total is None else total + s
        peak = m if peak is None else jnp.maximum(peak, m)
    if total is None:
        raise ValueError(f"{mixture.shape[-1]} samples: too short for the tagger")
    return head_fn(total / count, peak)
