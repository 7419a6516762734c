"""What a dataset root holds: clips, noise files and rooms per split, checked up front.

The root is a DCASE2025Task4Dataset ``data/dev_set`` folder (spec §2.1) or the embedded one.
``scan`` reads only WAV headers and SOFA positions, and collects every problem it finds into a
single ``ValueError`` (one line per problem, each naming its path), so a broken dataset is
reported completely before any training starts rather than one file at a time mid-run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from s5jax.audio import wav
from s5jax.data import sofa
from s5jax.labels import CLASSES

SAMPLE_RATE = 32000
FOA_CHANNELS = 4  # expected noise channel count when no room could be read


@dataclasses.dataclass(frozen=True)
class Clip:
    path: Path
    label: str  # class folder name; '' for noise
    frames: int
    channels: int


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: positions is an array
class Room:
    path: Path
    positions: np.ndarray  # (M, 3) metres, read-only
    ir_frames: int
    channels: int


@dataclasses.dataclass(frozen=True)
class Split:
    targets: dict[str, tuple[Clip, ...]]  # the 18 labels, in s5jax.labels order
    interference: dict[str, tuple[Clip, ...]]  # interference class folders, sorted
    noise: tuple[Clip, ...]
    rooms: tuple[Room, ...]


@dataclasses.dataclass(frozen=True)
class Catalog:
    root: Path
    splits: dict[str, Split]
    valid_metadata: Path | None  # metadata/valid.json if present
    test_dir: Path | None  # test/ if it has soundscape/


def _wavs(folder: Path) -> list[Path]:
    # Only files directly in the folder, as the baseline's non-recursive glob.
    return sorted(p for p in folder.glob("*.wav") if p.is_file())


def _clip(path: Path, label: str, channels: int | None, problems: list[str]) -> Clip | None:
    try:
        i = wav.info(path)
    except ValueError as e:
        problems.append(str(e))
        return None
    bad = []
    if i.sample_rate != SAMPLE_RATE:
        bad.append(f"sample rate {i.sample_rate} Hz, expected {SAMPLE_RATE} Hz")
    if channels is not None and i.channels != channels:
        bad.append(f"{i.channels} channels, expected {channels}")
    if i.frames == 0:
        bad.append("no audio frames, expected at least one")
    if bad:
        problems.append(f"{path}: " + "; ".join(bad))
        return None
    return Clip(path=path, label=label, frames=i.frames, channels=i.channels)


def _class_folders(base: Path, problems: list[str]) -> dict[str, Path]:
    if not base.is_dir():
        problems.append(f"{base}: missing folder, expected one sub-folder per class")
        return {}
    return {p.name: p for p in sorted(base.iterdir()) if p.is_dir()}


def _clips_by_class(folders: dict[str, Path], channels: int, problems: list[str]):
    out = {}
    for label, folder in folders.items():
        files = _wavs(folder)
        if not files:
            problems.append(f"{folder}: empty class folder, expected *.wav files")
        clips = [_clip(p, label, channels, problems) for p in files]
        out[label] = tuple(c for c in clips if c is not None)
    return out


def _scan_split(root: Path, split: str, problems: list[str]) -> Split:
    # Rooms first: their channel count R is what the noise files must have.
    room_dir = root / "room_ir" / split
    rooms: list[Room] = []
    if not room_dir.is_dir():
        problems.append(f"{room_dir}: missing folder, expected *.sofa room files")
    else:
        files = sorted(p for p in room_dir.glob("*.sofa") if p.is_file())
        if not files:
            problems.append(f"{room_dir}: no *.sofa files, expected at least one room")
        for p in files:
            try:
                info = sofa.open_room(p)
            except ValueError as e:
                problems.append(str(e))
                continue
            positions = info.positions.copy()
            positions.setflags(write=False)
            rooms.append(Room(path=p, positions=positions, ir_frames=info.ir_frames,
                              channels=info.channels))
    room_channels = sorted({r.channels for r in rooms})
    if len(room_channels) > 1:
        problems.append(f"{room_dir}: rooms have {room_channels} channels, expected one count")
    channels = room_channels[0] if room_channels else FOA_CHANNELS

    target_folders = _class_folders(root / "sound_event" / split, problems)
    if target_folders:
        base = root / "sound_event" / split
        for label in sorted(set(target_folders) - set(CLASSES)):
            problems.append(f"{base / label}: unknown class folder, expected only the 18 "
                            f"labels {', '.join(CLASSES)}")
        for label in CLASSES:
            if label not in target_folders:
                problems.append(f"{base / label}: missing class folder")
    found = _clips_by_class({k: v for k, v in target_folders.items() if k in CLASSES}, 1,
                            problems)
    targets = {label: found.get(label, ()) for label in CLASSES}

    int_base = root / "interference" / split
    int_folders = _class_folders(int_base, problems)
    if int_base.is_dir() and not int_folders:
        problems.append(f"{int_base}: no class folders, expected at least one")
    interference = _clips_by_class(int_folders, 1, problems)

    noise_dir = root / "noise" / split
    noise: list[Clip] = []
    if not noise_dir.is_dir():
        problems.append(f"{noise_dir}: missing folder, expected {channels}-channel *.wav files")
    else:
        files = _wavs(noise_dir)
        if not files:
            problems.append(f"{noise_dir}: no *.wav files, expected at least one noise file")
        noise = [c for c in (_clip(p, "", channels, problems) for p in files) if c]

    return Split(targets=targets, interference=interference, noise=tuple(noise),
                 rooms=tuple(rooms))


def scan(root: str | os.PathLike, splits: tuple[str, ...] = ("train", "valid")) -> Catalog:
    """Check and list a dataset root; one ``ValueError`` listing every problem found."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such dataset folder, expected a DCASE2025Task4Dataset "
                         "dev_set layout (sound_event/, interference/, noise/, room_ir/)")
    problems: list[str] = []
    found = {split: _scan_split(root, split, problems) for split in sorted(splits)}
    if problems:
        raise ValueError(f"{root}: {len(problems)} problem(s) in the dataset:\n  "
                         + "\n  ".join(problems))
    meta = root / "metadata" / "valid.json"
    test = root / "test"
    return Catalog(
        root=root,
        splits=found,
        valid_metadata=meta if meta.is_file() else None,
        test_dir=test if (test / "soundscape").is_dir() else None,
    )
