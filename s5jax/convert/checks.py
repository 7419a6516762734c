"""Checks shared by the converters: floating-point weights, frozen buffers within the precision
they were stored in."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from s5jax.cli import first_few

FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64))


def check_float_weights(sd: dict[str, Any], where: str = "") -> None:
    """``ValueError`` naming the tensors of ``sd`` that are not float16/bfloat16/float32/float64
    (``num_batches_tracked`` counters excepted): an integer weight would convert silently."""
    bad = [f"{k} ({np.asarray(v).dtype})" for k, v in sd.items()
           if not k.endswith("num_batches_tracked") and np.asarray(v).dtype not in FLOAT_DTYPES]
    if bad:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}non-floating-point weights: {first_few(bad)}; expected float16, "
                         "bfloat16, float32 or float64 tensors")


def buffer_mismatch(stored: np.ndarray, ref: np.ndarray, atol: float) -> str | None:
    """Why a stored frozen buffer is not ``ref`` (``None`` if it is): ``|stored − ref| ≤ atol``,
    plus the rounding of a float16/bfloat16 buffer (``eps · |ref|``)."""
    stored = np.asarray(stored)
    eps = float(ml_dtypes.finfo(stored.dtype).eps) if stored.dtype.itemsize < 4 else 0.0
    diff = np.abs(stored.astype(np.float64) - ref)
    if np.all(diff <= atol + eps * np.abs(ref)):
        return None
    bound = f"{atol}" if not eps else f"{atol} + {eps:.3g}·|value| for {stored.dtype}"
    return f"by {float(np.max(diff)):.3g} (> {bound})"
