"""Input soundscapes (4-channel FOA at any rate, resampled to 32 kHz) and estimate files:
``<soundscape>_<Label>.wav`` (repeats ``_2``, ``_3``, …), as separate and evaluate write them
and evaluate ``--estimates`` reads them (matched prefix-free, like the references of
``s5jax.data.testset``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax.audio import wav
from s5jax.data.testset import parse_reference_name
from s5jax.inference.pipeline import check_length
from s5jax.labels import CLASSES, EMPTY, class_index

FOA_CHANNELS = 4


def resampled_frames(info: wav.WavInfo, rate: int = wav.SAMPLE_RATE) -> int:
    """Length after resampling to ``rate`` (``wav.resample``'s ``ceil(frames·rate/r)``)."""
    return -(-info.frames * rate // info.sample_rate)


def check_soundscape(path: str | os.PathLike) -> wav.WavInfo:
    """Header checks of an input recording, before any work: readable and complete, 4 channels
    (first-order ambisonics), long enough for the models at 32 kHz. Returns its ``WavInfo``."""
    info = wav.info(path)
    if info.channels != FOA_CHANNELS:
        raise ValueError(f"{path}: {info.channels} channel(s); 4-channel first-order ambisonics "
                         "(FOA, the DCASE S5 format) is required")
    if info.frames == 0:
        raise ValueError(f"{path}: no samples (an empty recording)")
    check_length(resampled_frames(info), path)
    return info


def read_soundscape(path: str | os.PathLike) -> np.ndarray:
    """A recording at 32 kHz: ``(4, samples)`` float32, resampled with soxr if needed
    (``wav.load``); ``ValueError`` naming the file if unusable."""
    return wav.load(path, channels=FOA_CHANNELS)


def output_names(name: str, labels: Sequence[int | str]) -> list[str]:
    """``<name>_<Label>.wav`` per non-empty label, in order; repeats get ``_2``, ``_3``, …"""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if isinstance(lab, (int, np.integer)) and int(lab) == EMPTY:
            continue
        c = CLASSES[class_index(lab)]
        seen[c] = seen.get(c, 0) + 1
        out.append(f"{name}_{c}.wav" if seen[c] == 1 else f"{name}_{c}_{seen[c]}.wav")
    return out


def read_estimates(est_dir: Path, names: Sequence[str]) -> dict[str, list[tuple[str, Path]]]:
    """``<name>_<Label>[_k].wav`` files in ``est_dir`` grouped by soundscape (prefix-free)."""
    found: dict[str, list[tuple[str, Path]]] = {n: [] for n in names}
    for p in sorted(est_dir.iterdir()):
        if p.suffix != ".wav" or p.name.startswith("."):
            continue
        name, label = parse_reference_name(p.name)
        if name not in found:
            raise ValueError(f"{p}: no soundscape named {name!r} in the test set")
        found[name].append((label, p))
    return found


def check_submission(out_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """Every soundscape in ``names`` has at least one ``<name>_<Label>.wav`` in ``out_dir``."""
    have = set()
    for p in Path(out_dir).iterdir():
        if p.suffix == ".wav" and not p.name.startswith("."):
            try:
                have.add(parse_reference_name(p.name)[0])
            except ValueError:
                continue
    missing = [n for n in names if n not in have]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise ValueError(f"{out_dir}: no estimate for {len(missing)} soundscape(s): {shown} "
                         "(the challenge expects at least one per soundscape)")
