"""What a dataset root holds: clips, noise files and rooms per split, checked up front.

The root is a DCASE2025Task4Dataset ``data/dev_set`` folder (spec §2.1) or the embedded one.
``scan`` reads only WAV headers and SOFA positions, and collects every problem it finds into a
single ``ValueError`` (one line per problem, each naming its path), so a broken dataset is
reported completely before any training starts rather than one file at a time mid-run.

It accepts what the baseline's loader accepts, and says so in ``Catalog.summary()``:

* a WAV at another sample rate is resampled to 32 kHz when read (the baseline's
  ``librosa.load(sr=32000)``); a multichannel target or interference clip is averaged to mono
  (``librosa.load(mono=True)``); a room at another rate is resampled (SpatialScaper);
* hidden files and folders (``._x.wav`` AppleDouble junk, dot-files) are ignored, as the
  baseline's ``glob('*.wav')`` and SpatialScaper's label listing ignore them;
* a noise file whose channel count differs from the rooms' stays in the pool and a mixture that
  draws it gets no background, which is what the baseline's ``add_background`` does;
* a *sparse* split (``valid`` by default: the baseline reads it only through its metadata) may
  lack class folders, noise or interference folders; what the metadata names is resolved later.

Which files a class or noise folder holds depends on the task: the 2025 baseline takes only the
``*.wav`` files directly in it (``glob("*.wav")``); the 2026 baseline (SpAudSyn
``get_files_list(recursive=True)``, ``glob("**/*.wav")``) takes every ``*.wav`` below it, in
sub-folders too (which folder a clip sits in matters for the 2026 repeat rule, ``Clip.subdir``).
Either way hidden files and folders are never entered. Room positions are ``SourcePosition`` as
stored for 2025 (pysofaconventions) and cartesian for 2026 (python-sofa's
``get_values(system="cartesian")``, a spherical SourcePosition converted).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

import numpy as np

from s5jax.audio import wav
from s5jax.data import sofa
from s5jax.data.synth import TASKS
from s5jax.labels import CLASSES

SAMPLE_RATE = 32000
FOA_CHANNELS = 4  # expected noise channel count when no room could be read


@dataclasses.dataclass(frozen=True)
class Clip:
    path: Path
    label: str  # class folder name; '' for noise
    frames: int  # in the file, at its own rate
    channels: int  # in the file (target/interference clips are averaged to mono when read)
    sample_rate: int = SAMPLE_RATE  # the file's rate (read through wav.load → 32 kHz)
    subdir: tuple[str, ...] = ()  # folders between its class (noise) folder and the file

    @property
    def key(self) -> tuple[str, ...]:
        """Its path below the split's role folder, as metadata names it: ``(label, *subdir,
        name)`` for clips (``Dishes/x.wav``), ``(*subdir, name)`` for noise."""
        return ((self.label,) if self.label else ()) + self.subdir + (self.path.name,)

    @property
    def seconds(self) -> float:
        """Length in seconds (librosa.get_duration), from which recipes draw their windows."""
        return self.frames / self.sample_rate


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: positions is an array
class Room:
    path: Path
    positions: np.ndarray  # (M, 3) metres, read-only
    ir_frames: int  # at 32 kHz (after resampling, if the file has another rate)
    channels: int
    sample_rate: float = SAMPLE_RATE  # the file's Data.SamplingRate


@dataclasses.dataclass(frozen=True)
class Split:
    targets: dict[str, tuple[Clip, ...]]  # the 18 labels, in s5jax.labels order
    interference: dict[str, tuple[Clip, ...]]  # interference class folders, sorted
    noise: tuple[Clip, ...]  # all of them, including any whose channel count ≠ the rooms'
    rooms: tuple[Room, ...]


@dataclasses.dataclass(frozen=True)
class Notes:
    """What the scan adapted, skipped or ignored (paths absolute)."""

    resampled: tuple[tuple[Path, float], ...] = ()  # (file, its rate): WAVs and rooms
    downmixed: tuple[tuple[Path, int], ...] = ()  # (clip, its channel count)
    skipped: tuple[str, ...] = ()  # "<path>: why", one line each
    hidden: tuple[Path, ...] = ()  # dot-files and dot-folders, never read


@dataclasses.dataclass(frozen=True)
class Catalog:
    root: Path
    splits: dict[str, Split]
    valid_metadata: Path | None  # metadata/valid.json if present
    test_dir: Path | None  # test/ if it has soundscape/
    notes: Notes = Notes()

    def summary(self) -> str:
        """What was found, adapted, skipped and ignored; a few lines for the user."""
        return summary(self)


class _Scan:
    """Problems (refusals) and notes collected while scanning."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.resampled: list[tuple[Path, float]] = []
        self.downmixed: list[tuple[Path, int]] = []
        self.skipped: list[str] = []
        self.hidden: list[Path] = []

    def notes(self) -> Notes:
        return Notes(tuple(self.resampled), tuple(self.downmixed), tuple(self.skipped),
                     tuple(self.hidden))


def _visible(entries, scan: _Scan) -> list[Path]:
    """Entries whose name does not start with "."; the others are noted as hidden."""
    out = []
    for p in entries:
        (scan.hidden if p.name.startswith(".") else out).append(p)
    return out


def _files(folder: Path, pattern: str, scan: _Scan, recursive: bool = False) -> list[Path]:
    """Visible files matching ``pattern`` directly in ``folder`` (the 2025 baseline's
    non-recursive glob) or, ``recursive``, in any visible sub-folder too (the 2026 baseline's
    ``glob("**/*.wav", recursive=True)``); both skip dot-files, which pathlib's glob would not."""
    # A broken symbolic link is kept, to be refused by name (the official glob lists it too).
    out = sorted(_visible((p for p in folder.glob(pattern)
                           if p.is_file() or (p.is_symlink() and not p.exists())), scan))
    if recursive:
        for sub in _visible(sorted(p for p in folder.iterdir() if p.is_dir()), scan):
            out += _files(sub, pattern, scan, recursive=True)
    return out


def _clip(path: Path, label: str, scan: _Scan, base: Path | None = None) -> Clip | None:
    try:
        i = wav.info(path)
    except ValueError as e:
        scan.problems.append(str(e))
        return None
    if i.frames == 0:
        scan.problems.append(f"{path}: no audio frames, expected at least one")
        return None
    if i.frames * SAMPLE_RATE // i.sample_rate == 0:
        scan.problems.append(f"{path}: {i.frames} frame(s) at {i.sample_rate} Hz, none left at "
                             f"{SAMPLE_RATE} Hz; expected at least one")
        return None
    if i.sample_rate != SAMPLE_RATE:
        scan.resampled.append((path, i.sample_rate))
    if label and i.channels > 1:
        scan.downmixed.append((path, i.channels))
    subdir = path.parent.relative_to(base).parts if base is not None else ()
    return Clip(path=path, label=label, frames=i.frames, channels=i.channels,
                sample_rate=i.sample_rate, subdir=subdir)


def _class_folders(base: Path, sparse: bool, scan: _Scan) -> dict[str, Path]:
    if not base.is_dir():
        if not sparse:
            scan.problems.append(f"{base}: missing folder, expected one sub-folder per class")
        return {}
    return {p.name: p for p in _visible(sorted(p for p in base.iterdir() if p.is_dir()), scan)}


def _clips_by_class(folders: dict[str, Path], sparse: bool, scan: _Scan, recursive: bool):
    out = {}
    for label, folder in folders.items():
        files = _files(folder, "*.wav", scan, recursive)
        if not files and not sparse:
            scan.problems.append(f"{folder}: empty class folder, expected *.wav files")
        clips = [_clip(p, label, scan, folder) for p in files]
        out[label] = tuple(c for c in clips if c is not None)
    return out


def _rooms(room_dir: Path, sparse: bool, scan: _Scan, cartesian: bool) -> list[Room]:
    if not room_dir.is_dir():
        if not sparse:
            scan.problems.append(f"{room_dir}: missing folder, expected *.sofa room files")
        return []
    files = _files(room_dir, "*.sofa", scan)
    if not files and not sparse:
        scan.problems.append(f"{room_dir}: no *.sofa files, expected at least one room")
    rooms = []
    for p in files:
        try:
            info = sofa.open_room(p)
        except ValueError as e:
            scan.problems.append(str(e))
            continue
        if info.sample_rate != SAMPLE_RATE:
            scan.resampled.append((p, info.sample_rate))
        # 2025 (SpatialScaper, pysofaconventions) uses SourcePosition as stored; 2026 (SpAudSyn,
        # python-sofa) asks for cartesian coordinates, converting spherical ones.
        positions = (info.cartesian_positions() if cartesian else info.positions).copy()
        positions.setflags(write=False)
        rooms.append(Room(path=p, positions=positions, ir_frames=info.frames_at(SAMPLE_RATE),
                          channels=info.channels, sample_rate=info.sample_rate))
    return rooms


def _scan_split(root: Path, split: str, sparse: bool, scan: _Scan, dcase2026: bool) -> Split:
    recursive = dcase2026  # 2026: clips in sub-folders count
    # Rooms first: their channel count R is what the noise files must have.
    room_dir = root / "room_ir" / split
    rooms = _rooms(room_dir, sparse, scan, cartesian=dcase2026)
    room_channels = sorted({r.channels for r in rooms})
    if len(room_channels) > 1:
        scan.problems.append(f"{room_dir}: rooms have {room_channels} channels, expected one "
                             "count")
    channels = room_channels[0] if room_channels else FOA_CHANNELS

    base = root / "sound_event" / split
    target_folders = _class_folders(base, sparse, scan)
    for label in sorted(set(target_folders) - set(CLASSES)):
        if sparse:
            scan.skipped.append(f"{base / label}: not one of the 18 classes; ignored")
        else:
            scan.problems.append(f"{base / label}: unknown class folder, expected only the 18 "
                                 f"labels {', '.join(CLASSES)}")
    if target_folders and not sparse:
        for label in CLASSES:
            if label not in target_folders:
                scan.problems.append(f"{base / label}: missing class folder")
    found = _clips_by_class({k: v for k, v in target_folders.items() if k in CLASSES}, sparse,
                            scan, recursive)
    targets = {label: found.get(label, ()) for label in CLASSES}

    int_base = root / "interference" / split
    int_folders = _class_folders(int_base, sparse, scan)
    if int_base.is_dir() and not int_folders and not sparse:
        scan.problems.append(f"{int_base}: no class folders, expected at least one")
    interference = _clips_by_class(int_folders, sparse, scan, recursive)

    noise_dir = root / "noise" / split
    noise: list[Clip] = []
    if not noise_dir.is_dir():
        if not sparse:
            scan.problems.append(f"{noise_dir}: missing folder, expected {channels}-channel "
                                 "*.wav files")
    else:
        files = _files(noise_dir, "*.wav", scan, recursive)
        if not files and not sparse:
            scan.problems.append(f"{noise_dir}: no *.wav files, expected at least one noise "
                                 "file")
        noise = [c for c in (_clip(p, "", scan, noise_dir) for p in files) if c]
        for c in noise:
            if c.channels != channels:
                scan.skipped.append(
                    f"{c.path}: {c.channels} channels, the rooms have {channels}: a mixture "
                    "that draws it gets no background (as in the baseline)")

    return Split(targets=targets, interference=interference, noise=tuple(noise),
                 rooms=tuple(rooms))


def scan(root: str | os.PathLike, splits: tuple[str, ...] = ("train", "valid"),
         sparse: tuple[str, ...] = ("valid",), task: str = "dcase2025") -> Catalog:
    """Check and list a dataset root; one ``ValueError`` listing every problem found.

    Splits named in ``sparse`` may lack folders and classes (validation mixtures name their
    files in metadata; :func:`s5jax.data.recipes.resolve_valid` checks those). ``task``
    ("dcase2025" | "dcase2026") decides whether clips in sub-folders count (module docstring).
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such dataset folder, expected a DCASE2025Task4Dataset "
                         "dev_set layout (sound_event/, interference/, noise/, room_ir/)")
    state = _Scan()
    found = {split: _scan_split(root, split, split in sparse, state, task == "dcase2026")
             for split in sorted(splits)}
    if state.problems:
        raise ValueError(f"{root}: {len(state.problems)} problem(s) in the dataset:\n  "
                         + "\n  ".join(state.problems))
    meta = root / "metadata" / "valid.json"
    return Catalog(
        root=root,
        splits=found,
        valid_metadata=meta if meta.is_file() else None,
        test_dir=find_test_dir(root, task),
        notes=state.notes(),
    )


TEST_DIRS = ("test", "synthesized/test")  # 2025 dev set; 2026 dev set (and the embedded ones)


def find_test_dir(root: str | os.PathLike, task: str | None = None) -> Path | None:
    """The labelled test folder of a dataset root: ``test/`` (DCASE 2025 layout) or
    ``synthesized/test/`` (DCASE 2026), whichever holds ``soundscape/``, the layout of ``task``
    first (a root may hold both); None if neither."""
    order = TEST_DIRS[::-1] if task == "dcase2026" else TEST_DIRS
    for sub in order:
        if (Path(root) / sub / "soundscape").is_dir():
            return Path(root) / sub
    return None


def _rel(root: Path, p: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _counts(pairs, unit: str) -> str:
    c = Counter(v for _, v in pairs)
    return ", ".join(f"{k:g} {unit}: {n}" for k, n in sorted(c.items()))


def summary(cat: Catalog) -> str:
    """A few lines: per split what was found; then what was adapted, skipped and ignored."""
    parts = []
    for name, sp in cat.splits.items():
        t = sum(len(v) for v in sp.targets.values())
        tc = sum(1 for v in sp.targets.values() if v)
        i = sum(len(v) for v in sp.interference.values())
        ic = sum(1 for v in sp.interference.values() if v)
        parts.append(f"{name} {t} target clips ({tc} classes), {i} interference clips "
                     f"({ic} kinds), {len(sp.noise)} noise files, {len(sp.rooms)} rooms")
    lines = [f"dataset {cat.root}: " + "; ".join(parts)]
    n = cat.notes
    adapted = {p for p, _ in n.resampled} | {p for p, _ in n.downmixed}
    if adapted:
        what = []
        if n.resampled:
            what.append(f"{len(n.resampled)} resampled to {SAMPLE_RATE} Hz when read "
                        f"(from {_counts(n.resampled, 'Hz')})")
        if n.downmixed:
            what.append(f"{len(n.downmixed)} averaged to mono "
                        f"(from {_counts(n.downmixed, 'channels')})")
        lines.append(f"adapted {len(adapted)} files: " + "; ".join(what))
    for s in n.skipped:
        lines.append(f"skipped: {s.replace(str(cat.root) + os.sep, '')}")
    if n.hidden:
        lines.append(f"ignored {len(n.hidden)} hidden files/folders (dot-files such as "
                     f"AppleDouble ._*.wav), e.g. {_rel(cat.root, n.hidden[0])}")
    return "\n".join(lines)
