"""Labelled test sets: ``soundscape/*.wav`` mixtures with ``oracle_target/`` references.

This is the layout of the DCASE 2025 Task 4 development ``test`` split (spec §2.1, §2.8;
references ``<name>_<Label>.wav``) and of the DCASE 2026 one (``synthesized/test``; references
``<name>_<i>_<Label>.wav``, ``i`` the event's output slot); both namings are read, as the 2026
baseline reads both (its pattern ``<name>(_<number>)?_<label>.wav``). Any labelled set laid out
the same way (a held-out evaluation set, the embedded datasets' test sets) is read and scored the
same way. :func:`s5jax.data.catalog.find_test_dir` finds the folder in a dataset root.

Matching of references to soundscapes is *prefix-free* (unlike the baselines, spec §7.19, which
take every file that merely starts with the soundscape name, so ``mix_1`` would also claim
``mix_10_Speech.wav``): the label suffix is parsed off the file name first and the rest must equal
a soundscape name exactly, or (2026) a soundscape name followed by ``_<i>``. A name that fits two
soundscapes both ways (``mix_1_Speech.wav`` with soundscapes ``mix`` and ``mix_1``) is refused as
ambiguous. A repeated class may also carry a numeric suffix, ``<name>_<Label>_<k>.wav``. A
reference whose label is not one of the 18 classes, or whose name matches no soundscape, is an
error naming the file — a silently ignored reference would change the score.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from pathlib import Path

import numpy as np

from s5jax.audio import wav
from s5jax.labels import CLASSES, MAX_SOURCES, class_index

SOUNDSCAPE_DIR = "soundscape"
ORACLE_DIR = "oracle_target"
MIXTURE_CHANNELS = 4


@dataclasses.dataclass(frozen=True)
class Reference:
    """One reference file; ``slot`` is the 2026 output slot ``i`` of ``<name>_<i>_<Label>.wav``
    (None for a 2025 ``<name>_<Label>.wav``)."""

    label: str
    path: Path
    slot: int | None = None


@dataclasses.dataclass(frozen=True)
class TestItem:
    """One soundscape and its references (sorted by class index, then file name)."""

    __test__ = False  # not a pytest class

    name: str
    path: Path
    references: tuple[Reference, ...]

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.references]


def slotted(items: Collection[TestItem]) -> bool:
    """True if any reference is named the DCASE 2026 way, ``<name>_<i>_<Label>.wav``."""
    return any(r.slot is not None for it in items for r in it.references)


def parse_reference_name(filename: str) -> tuple[str, str]:
    """``"<name>_<Label>[_<k>].wav"`` → ``(name, Label)``.

    Raises ``ValueError`` naming the file if no class name can be parsed off the end.
    """
    stem = filename[:-4] if filename.lower().endswith(".wav") else filename
    parts = stem.split("_")
    # A trailing all-digit part is a repeat index only if a class name precedes it.
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2] in CLASSES:
        return "_".join(parts[:-2]), parts[-2]
    if len(parts) >= 2 and parts[-1] in CLASSES:
        return "_".join(parts[:-1]), parts[-1]
    raise ValueError(
        f"{filename}: reference name must be <soundscape>_<Label>.wav with <Label> one of "
        f"{', '.join(CLASSES)}"
    )


def match_soundscape(filename: str, names: Collection[str]) -> tuple[str, str, int | None]:
    """The soundscape (one of ``names``) a reference or estimate file belongs to, prefix-free:
    ``<name>_<Label>[_<k>].wav`` (2025) or ``<name>_<i>_<Label>.wav`` (2026, ``i`` the output
    slot). Returns ``(name, Label, i or None)``; ``ValueError`` naming the file if it fits no
    soundscape, or fits two (``mix_1_Speech.wav`` with soundscapes ``mix`` and ``mix_1``)."""
    name, label = parse_reference_name(filename)
    head, _, tail = name.rpartition("_")
    slotted = head if tail.isdigit() and head in names else None
    if name in names and slotted is not None:
        raise ValueError(f"{filename}: ambiguous, a file of soundscape {name!r} or "
                         f"(<name>_<i>_<Label>) of {slotted!r}")
    if name in names:
        return name, label, None
    if slotted is None:
        raise ValueError(f"{filename}: no soundscape named {name!r}")
    return slotted, label, int(tail)


def wav_files(folder: Path) -> list[Path]:
    """The ``*.wav`` files of ``folder``, sorted, without dot-files (macOS ``._x.wav`` resource
    forks, which the official ``os.listdir`` readers would fail to read). A file named
    ``*.WAV`` (another case) is refused: the official tools would skip it without a word, and a
    reference or soundscape left out silently would change the score."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.suffix.lower() == ".wav" and p.suffix != ".wav":
            raise ValueError(f"{p}: extension {p.suffix!r}; expected lower-case '.wav' (the "
                             "official tools skip other cases): rename it")
        if p.suffix == ".wav":
            out.append(p)
    return out


class TestSet:
    """A labelled test set under ``root`` (the folder holding ``soundscape/`` and
    ``oracle_target/``).

    Listing is cheap (file names only); audio is read by ``load``.
    """

    __test__ = False  # not a pytest class

    def __init__(self, root: str | os.PathLike, *, max_sources: int = MAX_SOURCES):
        self.root = Path(root)
        sdir, odir = self.root / SOUNDSCAPE_DIR, self.root / ORACLE_DIR
        if not sdir.is_dir():
            raise ValueError(f"{self.root}: no {SOUNDSCAPE_DIR}/ folder (expected a test-set root)")
        if not odir.is_dir():
            raise ValueError(f"{self.root}: no {ORACLE_DIR}/ folder (expected a labelled test set)")
        names = sorted(p.name[:-4] for p in wav_files(sdir))
        if not names:
            raise ValueError(f"{sdir}: no .wav soundscapes")
        refs: dict[str, list[Reference]] = {n: [] for n in names}
        for p in wav_files(odir):
            try:
                name, label, slot = match_soundscape(p.name, refs)
            except ValueError as e:
                raise ValueError(f"{odir}/{e} in {sdir}") from None
            refs[name].append(Reference(label, p, slot))
        items = []
        for n in names:
            r = sorted(refs[n], key=lambda x: (class_index(x.label), x.path.name))
            if len(r) > max_sources:
                raise ValueError(
                    f"{sdir / (n + '.wav')}: {len(r)} references, at most {max_sources} supported"
                )
            items.append(TestItem(n, sdir / f"{n}.wav", tuple(r)))
        self.items: list[TestItem] = items
        self.max_sources = max_sources

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> TestItem:
        return self.items[i]

    def check_files(self) -> list[wav.WavInfo]:
        """Header checks of every soundscape and reference (no audio is read), so that a bad
        file fails before any work; one ``ValueError`` listing every problem: a soundscape that
        is not 4 channels, a reference that is not mono (the DCASE oracle targets are mono; a
        2-channel one is ambiguous), a reference whose sample rate or length differs from its
        soundscape's, unreadable or truncated files. Returns the soundscapes' ``WavInfo``."""
        problems: list[str] = []
        infos: list[wav.WavInfo] = []
        for item in self.items:
            try:
                mi = wav.info(item.path)
            except ValueError as e:
                problems.append(str(e))
                continue
            infos.append(mi)
            if mi.channels != MIXTURE_CHANNELS:
                problems.append(f"{item.path}: {mi.channels} channel(s), expected "
                                f"{MIXTURE_CHANNELS} (first-order ambisonics)")
            for r in item.references:
                try:
                    ri = wav.info(r.path)
                except ValueError as e:
                    problems.append(str(e))
                    continue
                if ri.channels != 1:
                    problems.append(f"{r.path}: {ri.channels} channels, expected a mono reference")
                if ri.sample_rate != mi.sample_rate:
                    problems.append(f"{r.path}: {ri.sample_rate} Hz, expected {mi.sample_rate} Hz"
                                    f" (the rate of {item.path.name})")
                elif ri.frames != mi.frames:
                    problems.append(f"{r.path}: {ri.frames} frames, expected {mi.frames} (the "
                                    f"length of {item.path.name})")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"{len(problems)} problem(s) in the test set {self.root}: "
                             + "; ".join(problems[:5]) + more)
        return infos

    def load_mixture(self, i: int) -> np.ndarray:
        """The soundscape of item ``i`` at 32 kHz, ``(4, L)`` float32 (resampled like ``load``)."""
        return wav.load(self.items[i].path, channels=MIXTURE_CHANNELS)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Audio of item ``i`` at 32 kHz: ``mixture (4, L)`` and ``references (n_refs, L)``
        float32. Files at another rate are resampled (soxr, ``wav.load``); references must be
        mono."""
        item = self.items[i]
        mix = self.load_mixture(i)
        refs = np.zeros((len(item.references), mix.shape[1]), np.float32)
        for k, r in enumerate(item.references):
            a = wav.load(r.path, channels=1)
            if a.shape[1] != mix.shape[1]:
                raise ValueError(
                    f"{r.path}: {a.shape[1]} frames, expected {mix.shape[1]} "
                    f"(the length of {item.path.name})"
                )
            refs[k] = a[0]
        return mix, refs
