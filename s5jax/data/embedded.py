"""A procedural dataset in exactly the DCASE2025Task4Dataset ``data/dev_set`` layout, or with
``task="dcase2026"`` the DCASE2026Task4Dataset one.

Made on first use so that training, evaluation and the tests run without the real data
(spec §2.1 for the layout). Everything is a deterministic function of ``(seed, scale, task)``:
each file has its own numpy Generator seeded from (seed, role, split, class, index), so adding a
class or changing one generator leaves every other file unchanged. ``valid`` draws with
different seeds from ``train`` (its own rooms, clips, noise), so validation and test measure
generalisation to unseen instances.

The 2026 dataset differs where the 2026 baseline reads differently: every ``nested_every``-th
class keeps its clips in sub-folders (``<Class>/set_<k>/``, two clips sharing ``set_0``), as
SpAudSyn allows and its repeat rule (no two sources of one class from one first-level
sub-folder) needs; rooms have their measurements spread in azimuth (``rooms.ring_sources``);
validation and test metadata are SpAudSyn JSON and the test set lives in
``synthesized/test/`` (:func:`s5jax.data.splits.write_splits`).

CLI: ``python -m s5jax.data.embedded --out DIR [--scale small|full] [--seed N]
[--task dcase2025|dcase2026]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s5jax.atomic import existing_ancestor, make_temp_dir
from s5jax.audio import wav
from s5jax.cli import ArgumentParser, fail
from s5jax.data import rooms, sofa, sounds
from s5jax.data.splits import write_splits
from s5jax.data.synth import TASKS

VERSION = 3  # bump when any generator changes: cached datasets of another version are rebuilt
MANIFEST = "embedded.json"
SAMPLE_RATE = 32000
SPLITS = ("train", "valid")
_DATE = "2025-01-01 00:00:00"  # fixed SOFA dates: same seed → same bytes


@dataclasses.dataclass(frozen=True)
class Scale:
    clips: dict[str, int]  # target clips per class, per split
    clip_seconds: tuple[float, float]  # duration range of ordinary clips
    long_every: int  # every n-th clip (counted over all classes) lasts 10.5–12 s
    interference: dict[str, int]  # interference clips per kind, per split
    # One noise file per entry, its duration: at least the longest mixture of the split (10-s
    # training clips; small's 4-s validation/test mixtures), as in the real dataset. Those of
    # exactly a mixture's length are written "source_time": null, like the baseline does.
    noise_seconds: dict[str, tuple[float, ...]]
    rooms: dict[str, int]
    positions: int  # source positions per room
    ir_seconds: float
    nested_every: int = 0  # every n-th class (0, n, 2n, …) in sub-folders, one clip more; 0: none
    ring: bool = False  # positions spread in azimuth (rooms.ring_sources)


SCALES: dict[str, Scale] = {
    "small": Scale(
        clips={"train": 2, "valid": 2},
        clip_seconds=(0.5, 2.0),
        long_every=18,
        interference={"train": 2, "valid": 1},
        noise_seconds={"train": (10.5, 10.0), "valid": (5.0, 4.0)},
        rooms={"train": 2, "valid": 2},
        positions=4,
        ir_seconds=0.25,
    ),
    "full": Scale(
        clips={"train": 16, "valid": 4},
        clip_seconds=(0.5, 9.0),
        long_every=4,
        interference={"train": 8, "valid": 3},
        noise_seconds={"train": (15.0, 12.0, 11.0, 10.5, 10.0, 10.0),
                       "valid": (12.0, 10.5, 10.0)},
        rooms={"train": 6, "valid": 3},
        positions=8,
        ir_seconds=0.5,
    ),
}


# DCASE 2026: three clips per class (four in the nested classes, in three sub-folders) so that a
# class can sound three times; eight (sixteen) measurements per room around the mic.
SCALES_2026: dict[str, Scale] = {
    "small": dataclasses.replace(SCALES["small"], clips={"train": 3, "valid": 3},
                                 positions=8, nested_every=3, ring=True),
    "full": dataclasses.replace(SCALES["full"], positions=16, nested_every=3, ring=True),
}


def scales(task: str = "dcase2025") -> dict[str, Scale]:
    """The scales of ``task``'s embedded dataset."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    return SCALES_2026 if task == "dcase2026" else SCALES


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    """A Generator for one file, from stable integers (crc32 of names; never Python's hash())."""
    keys = [int(seed)] + [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng(keys)


def _clip(gen: sounds.Generator, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A mono clip passing the baseline's add_data filters (redrawn until it does)."""
    peak = rng.uniform(0.1, 0.9)
    for _ in range(20):
        x = sounds.finish_clip(gen(rng, seconds), peak)
        if sounds.passes_filters(x):
            return x
    raise RuntimeError(f"generator {gen.__name__} failed the add_data filters 20 times")


def _duration(rng: np.random.Generator, scale: Scale, counter: int) -> float:
    if counter % scale.long_every == 0:
        return float(rng.uniform(10.5, 12.0))
    lo, hi = scale.clip_seconds
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _write_clips(root: Path, role: str, split: str, kinds: dict[str, sounds.Generator],
                 count: int, scale: Scale, seed: int, report) -> int:
    written = 0
    nested = scale.nested_every if role == "sound_event" else 0
    total = sum(count + bool(nested and ci % nested == 0) for ci in range(len(kinds)))
    for ci, (label, gen) in enumerate(kinds.items()):
        folder = root / role / split / label
        in_sets = bool(nested and ci % nested == 0)
        for i in range(count + in_sets):
            rng = _rng(seed, role, split, label, i)
            x = _clip(gen, rng, _duration(rng, scale, ci * count + i))
            sub = folder / f"set_{max(i - 1, 0)}" if in_sets else folder
            sub.mkdir(parents=True, exist_ok=True)
            wav.write(sub / f"{label}_{split}_{i:03d}.wav", x, subtype="PCM_16")
            written += 1
            report(f"{role}/{split}", written, total)
    return written


def _write_noise(root: Path, split: str, scale: Scale, seed: int, report) -> int:
    folder = root / "noise" / split
    folder.mkdir(parents=True, exist_ok=True)
    durations = scale.noise_seconds[split]
    for i, seconds in enumerate(durations):
        rng = _rng(seed, "noise", split, i)
        x = sounds.foa_noise(rng, seconds)
        x = np.round(x / np.max(np.abs(x)) * rng.uniform(0.2, 0.5) * 32768) / 32768
        wav.write(folder / f"noise_{split}_{i:03d}.wav", x, subtype="PCM_16")
        report(f"noise/{split}", i + 1, len(durations))
    return len(durations)


def _write_rooms(root: Path, split: str, scale: Scale, seed: int, report) -> int:
    folder = root / "room_ir" / split
    folder.mkdir(parents=True, exist_ok=True)
    frames = int(scale.ir_seconds * SAMPLE_RATE)
    count = scale.rooms[split]
    for i in range(count):
        rng = _rng(seed, "room_ir", split, i)
        room = rooms.random_room(rng)
        draw = rooms.ring_sources if scale.ring else rooms.random_sources
        positions, irs = draw(rng, room, scale.positions, frames)
        desc = (f"shoebox {room.size[0]:.2f} x {room.size[1]:.2f} x {room.size[2]:.2f} m, "
                f"reflection {room.reflection:.3f}, mic at "
                f"({room.mic[0]:.2f}, {room.mic[1]:.2f}, {room.mic[2]:.2f}); "
                "SourcePosition relative to the mic")
        sofa.write_room(folder / f"room_{split}_{i:03d}.sofa", irs, positions, SAMPLE_RATE,
                        room_name=desc, dtype="float32", date=_DATE)
        report(f"room_ir/{split}", i + 1, count)
    return count


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def _printer(stage: str, done: int, total: int) -> None:
    """One line per stage, redrawn in place on a terminal; into a log file (not a terminal)
    only the stage's last count, so that the log holds 8 lines, not one per file."""
    line = f"[embedded] {stage:24s} {done:4d}/{total}"
    if sys.stderr.isatty():
        print("\r" + line, end="\n" if done == total else "", file=sys.stderr, flush=True)
    elif done == total:
        print(line, file=sys.stderr, flush=True)


def generate(out: str | os.PathLike, scale: str = "small", seed: int = 0,
             progress: Callable[[str, int, int], None] | None = None,
             task: str = "dcase2025") -> dict:
    """Write the dataset into ``out`` (an existing empty directory); returns the manifest.

    Not atomic on its own: ``ensure_embedded`` calls it on a temporary directory.
    """
    table = scales(task)
    if scale not in table:
        raise ValueError(f"scale {scale!r}, expected one of {sorted(table)}")
    out = Path(out)
    s = table[scale]
    report = progress or _quiet
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        counts[split] = {
            "sound_event": _write_clips(out, "sound_event", split, sounds.TARGETS,
                                        s.clips[split], s, seed, report),
            "interference": _write_clips(out, "interference", split, sounds.INTERFERENCE,
                                         s.interference[split], s, seed, report),
            "noise": _write_noise(out, split, s, seed, report),
            "room_ir": _write_rooms(out, split, s, seed, report),
        }
    manifest = {
        "generator": "s5jax.data.embedded",
        "version": VERSION,
        "scale": scale,
        "seed": int(seed),
        "counts": counts,
    }
    if task != "dcase2025":  # (2025 manifests keep the bytes they always had)
        manifest["task"] = task
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def default_root(scale: str = "small", seed: int = 0, task: str = "dcase2025") -> Path:
    """``$S5JAX_DATA/embedded-<scale>-<seed>`` (2026: ``embedded-dcase2026-<scale>-<seed>``),
    by default under ``~/.cache/s5jax``."""
    base = os.environ.get("S5JAX_DATA") or os.path.join("~", ".cache", "s5jax")
    prefix = "embedded" if task == "dcase2025" else f"embedded-{task}"
    return Path(base).expanduser() / f"{prefix}-{scale}-{seed}"


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete embedded dataset at ``root``, or None if there is none."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def ensure_embedded(root: str | os.PathLike | None = None, scale: str = "small", seed: int = 0,
                    progress: bool = False, task: str = "dcase2025") -> Path:
    """The embedded dataset at ``root`` (default ``default_root``), generated if missing.

    Generation happens in a temporary sibling directory that is renamed into place when
    complete, so an interrupted run never leaves a half dataset at ``root``; concurrent callers
    (e.g. pytest-xdist workers) each build their own and the first rename wins. An existing
    dataset of the same scale/seed/version is reused; one of another generator version is
    replaced. A non-empty ``root`` that is not an embedded dataset is never touched.
    """
    if scale not in scales(task):
        raise ValueError(f"scale {scale!r}, expected one of {sorted(scales(task))}")
    root = Path(root) if root is not None else default_root(scale, seed, task)
    want = {"version": VERSION, "scale": scale, "seed": int(seed), "task": task}

    def held(manifest: dict, key: str):
        return manifest.get(key, "dcase2025") if key == "task" else manifest.get(key)

    stale = False
    if root.exists():
        have = read_manifest(root)
        if have is not None and all(held(have, k) == v for k, v in want.items()):
            return root
        if have is None or have.get("generator") != "s5jax.data.embedded":
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            else:
                raise ValueError(f"{root}: exists and is not an embedded s5jax dataset; "
                                 "expected a missing or empty directory")
        elif (have.get("scale"), have.get("seed"), held(have, "task")) != (scale, int(seed), task):
            raise ValueError(f"{root}: holds the embedded dataset scale={have.get('scale')} "
                             f"seed={have.get('seed')} task={held(have, 'task')}, expected "
                             f"scale={scale} seed={seed} task={task}")
        else:
            stale = True  # older generator version: rebuild and swap
    anc = existing_ancestor(root.parent)
    if not anc.is_dir():
        raise ValueError(f"{root}: cannot create a folder there ({anc} is a file)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root.parent, root.name)
    try:
        generate(tmp, scale, seed, _printer if progress else None, task=task)
        write_splits(tmp, seed, scale, task)  # metadata/valid*, test (from the synthesis side)
        if stale:
            old = root.with_name(f".{root.name}.{os.getpid()}.old")
            os.rename(root, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process finished first; use its copy if it is the one wanted.
            have = read_manifest(root)
            if have is None or any(held(have, k) != v for k, v in want.items()):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def dataset_bytes(root: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m s5jax.data.embedded",
        description="Write the procedural dataset in the DCASE2025Task4Dataset (or, with --task "
                    "dcase2026, DCASE2026Task4Dataset) dev_set layout.",
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset root (default: $S5JAX_DATA or ~/.cache/s5jax, "
                             "embedded-<scale>-<seed>, 2026: embedded-dcase2026-<scale>-<seed>)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=TASKS, default="dcase2025")
    args = parser.parse_args(argv)
    try:
        root = ensure_embedded(args.out, args.scale, args.seed, progress=True, task=args.task)
    except (ValueError, OSError) as e:
        return fail(e)
    print(f"{root} ({dataset_bytes(root) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
