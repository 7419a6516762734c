"""Input soundscapes (4-channel FOA at any rate, resampled to 32 kHz) and estimate files:
``<soundscape>_<Label>.wav`` (DCASE 2025; repeats ``_2``, ``_3``, …) or
``<soundscape>_<i>_<Label>.wav`` (DCASE 2026, ``i`` the output slot), as separate and evaluate
write them and evaluate ``--estimates`` reads them (either naming, matched prefix-free like the
references of ``s5jax.data.testset``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax.audio import wav
from s5jax.data.testset import match_soundscape, wav_files
from s5jax.inference.pipeline import check_length
from s5jax.labels import CLASSES, EMPTY, SILENCE, class_index

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
        size = Path(path).stat().st_size
        if size > 1024:  # libsndfile trusts a data size of 0 over the bytes that follow it
            raise ValueError(f"{path}: its header declares no samples, yet the file holds {size}"
                             " bytes (a header a streaming writer left unfinished?): rewrite "
                             "the header")
        raise ValueError(f"{path}: no samples (an empty recording)")
    where = path if info.sample_rate == wav.SAMPLE_RATE else \
        f"{path} ({info.frames} frames at {info.sample_rate} Hz, resampled to {wav.SAMPLE_RATE})"
    check_length(resampled_frames(info), where)
    return info


def read_soundscape(path: str | os.PathLike) -> np.ndarray:
    """A recording at 32 kHz: ``(4, samples)`` float32, resampled with soxr if needed
    (``wav.load``); ``ValueError`` naming the file if unusable."""
    return wav.load(path, channels=FOA_CHANNELS)


def output_names(name: str, labels: Sequence[int | str], slotted: bool = False) -> list[str]:
    """File names of the non-empty labels of one output row, in order.

    ``slotted=False`` (DCASE 2025): ``<name>_<Label>.wav``, a repeated class ``_2``, ``_3``, …;
    ``slotted=True`` (DCASE 2026, the official ``generate_waveform.py``):
    ``<name>_<i>_<Label>.wav`` with ``i`` the label's position in the row (its output slot),
    empty slots (−1, ``"silence"``) skipped but counted.
    """
    seen: dict[str, int] = {}
    out = []
    for i, lab in enumerate(labels):
        if (isinstance(lab, (int, np.integer)) and int(lab) == EMPTY) or lab == SILENCE:
            continue
        c = CLASSES[class_index(lab)]
        seen[c] = seen.get(c, 0) + 1
        if slotted:
            out.append(f"{name}_{i}_{c}.wav")
        else:
            out.append(f"{name}_{c}.wav" if seen[c] == 1 else f"{name}_{c}_{seen[c]}.wav")
    return out


def read_estimates(est_dir: Path, names: Sequence[str], slotted_names: bool = True,
                   ) -> dict[str, list[tuple[str, Path]]]:
    """``<name>_<Label>[_k].wav`` and ``<name>_<i>_<Label>.wav`` files in ``est_dir`` grouped by
    soundscape (prefix-free), each group in file-name order (the official reader's order).
    ``slotted_names=False`` (a test set scored as DCASE 2025) refuses the 2026 naming, which
    would otherwise be scored against the 2025 soundscapes of the same names."""
    found: dict[str, list[tuple[str, Path]]] = {n: [] for n in names}
    for p in wav_files(est_dir):
        try:
            name, label, slot = match_soundscape(p.name, found)
        except ValueError as e:
            raise ValueError(f"{est_dir}/{e} in the test set") from None
        if slot is not None and not slotted_names:
            raise ValueError(f"{p}: named <soundscape>_<i>_<Label>.wav, as DCASE 2026 estimates "
                             "are, but the test set is scored as DCASE 2025; pass --task "
                             "dcase2026 (with a DCASE 2026 test set in --data)")
        found[name].append((label, p))
    return found


def check_submission(out_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """Every soundscape in ``names`` has at least one ``<name>_<Label>.wav`` in ``out_dir``."""
    have = set()
    for p in Path(out_dir).iterdir():
        if p.suffix == ".wav" and not p.name.startswith("."):
            try:
                have.add(match_soundscape(p.name, names)[0])
            except ValueError:
                continue
    missing = [n for n in names if n not in have]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise ValueError(f"{out_dir}: no estimate for {len(missing)} soundscape(s): {shown} "
                         "(the challenge expects at least one per soundscape)")
