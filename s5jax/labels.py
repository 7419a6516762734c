"""The 18 DCASE 2025 Task 4 target classes and conversions between label representations.

A mixture's labels are a sequence of class indices (or names), at most ``max_sources`` long,
possibly empty, repeats allowed (DCASE 2026 allows two sources of one class). In arrays they are
slots: ``int32 (batch, slots)`` with ``-1`` marking an empty slot. Padding is always explicit;
it is never inferred from an all-zero vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

# Baseline order (spec §1): alphabetical, index = class id.
CLASSES: tuple[str, ...] = (
    "AlarmClock",
    "BicycleBell",
    "Blender",
    "Buzzer",
    "Clapping",
    "Cough",
    "CupboardOpenClose",
    "Dishes",
    "Doorbell",
    "FootSteps",
    "HairDryer",
    "MechanicalFans",
    "MusicalKeyboard",
    "Percussion",
    "Pour",
    "Speech",
    "Typing",
    "VacuumCleaner",
)
NUM_CLASSES = len(CLASSES)
MAX_SOURCES = 3
EMPTY = -1
SILENCE = "silence"  # the baseline's pseudo-label for an empty slot

_INDEX = {name: i for i, name in enumerate(CLASSES)}

Label = int | str


def class_index(label: Label) -> int:
    """Class index of a name or an index; ``ValueError`` naming the value if it is unknown."""
    if isinstance(label, (bool, np.bool_)):
        raise ValueError(f"label {label!r}: expected a class name or an index in [0, 18)")
    if isinstance(label, (int, np.integer)):
        if not 0 <= int(label) < NUM_CLASSES:
            raise ValueError(
                f"label index {int(label)} out of range: expected 0..{NUM_CLASSES - 1}"
            )
        return int(label)
    if isinstance(label, str):
        if label not in _INDEX:
            raise ValueError(f"unknown class name {label!r}; expected one of {', '.join(CLASSES)}")
        return _INDEX[label]
    raise ValueError(f"label {label!r}: expected a class name (str) or an index (int)")


def to_slots(
    labels: Sequence[Sequence[Label]] | Sequence[Label], max_sources: int = MAX_SOURCES
) -> np.ndarray:
    """Label lists → slot array.

    Args:
      labels: one label list (``["Speech", 3]``) or a batch of them (``[["Speech"], []]``).
        ``"silence"`` entries are treated as empty and dropped.
      max_sources: number of slots.

    Returns:
      ``int32 (batch, max_sources)`` (or ``(max_sources,)`` for a single list), filled from the
      left, ``-1`` for empty slots.
    """
    single = len(labels) == 0 or isinstance(labels[0], (str, int, np.integer))
    batch = [labels] if single else labels
    out = np.full((len(batch), max_sources), EMPTY, np.int32)
    for b, row in enumerate(batch):
        if isinstance(row, (str, bytes)):
            raise ValueError(f"label list {row!r}: expected a sequence of labels, not a string")
        idx = [class_index(lab) for lab in row if lab != SILENCE]
        if len(idx) > max_sources:
            raise ValueError(
                f"label list {list(row)!r} has {len(idx)} labels; at most {max_sources} allowed"
            )
        out[b, : len(idx)] = idx
    return out[0] if single else out


def from_slots(slots: np.ndarray | jnp.ndarray) -> list[list[str]]:
    """Slot array ``(batch, slots)`` → label-name lists (empty slots dropped)."""
    arr = np.asarray(slots)
    if arr.ndim == 1:
        arr = arr[None]
    return [[CLASSES[i] for i in row if i != EMPTY] for row in arr.tolist()]


def one_hot(slots: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """``(batch, slots)`` → ``(batch, slots, 18)``; empty slots (``-1``) are all-zero rows."""
    return (jnp.asarray(slots)[..., None] == jnp.arange(NUM_CLASSES)).astype(dtype)


def multi_hot(slots: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """``(batch, slots)`` → ``(batch, 18)``: 1 where a class is present (repeats count once)."""
    return jnp.max(one_hot(slots, dtype), axis=-2)


def query(slots: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """ResUNetK query ``(batch, slots·18)`` = slot0 ‖ slot1 ‖ slot2 one-hots (spec §2.6)."""
    oh = one_hot(slots, dtype)
    return oh.reshape(*oh.shape[:-2], oh.shape[-2] * NUM_CLASSES)


def active(slots: jnp.ndarray) -> jnp.ndarray:
    """Bool mask ``(batch, slots)``: True where a slot holds a class."""
    return jnp.asarray(slots) != EMPTY


def names(indices: Iterable[int]) -> list[str]:
    return [CLASSES[class_index(int(i))] for i in indices]
