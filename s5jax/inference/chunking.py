"""Separation of long inputs in overlapping chunks with raised-cosine cross-fades.

All chunks of all clips go through the separator in ONE batched call; the cross-fade weights sum
to exactly one at every sample (see docs/inference.md).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


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
