"""Mixture recipes: everything random about one training mixture, as small fixed-size arrays.

A recipe is drawn from ``(index, seed)`` alone (``np.random.default_rng([seed, index])``), so the
same pair gives a bit-identical recipe in any process, on any host, in any order — the loader can
be restarted or sharded without replaying draws. The draw follows the official generator of the
config's ``task``. DCASE 2025 (baseline_spec.md §2.3):

* room uniform; ``n_targets ~ U{1,2,3}``; classes uniform without replacement; file uniform
  within the class; a file longer than the clip gets ``source_time ~ U(0, dur − clip)`` and
  duration ``clip``, otherwise ``0`` and its own duration; onset ``~ U(0, clip − duration)``
  (continuous seconds); position uniform over the room's measurements; ``snr ~ U(5, 20)``;
* ``n_interferers ~ U{1,2}``, class uniform *with* replacement, same timing rules,
  ``snr ~ U(0, 15)``;
* noise file uniform; offset ``⌊U(0, dur − clip)⌋`` whole seconds if longer than the clip, else
  :data:`STRETCH` (the baseline's ``"source_time": null``): the loader stretches the whole file
  to the clip (``np.repeat`` in 2025, ``np.tile`` in 2026, see ``synth.RULES``); a noise file
  whose channel count differs from the room's gives a mixture without background (the baseline's
  ``add_background`` skips it the same way).

DCASE 2026 (``DatasetS3._get_item_generate`` on SpAudSyn, :func:`task_config`): the same, except

* ``n_targets ~ U{0..3}`` for the tagger, ``U{1..3}`` for the separator; if ``n ≥ 2``, with
  probability 0.5 the last ``k ~ U{1..min(n − 1, 2)}`` events *repeat* a class: the first
  ``n − k`` classes are drawn without replacement, then each repeat copies the class of one of
  them (uniform), sits at a measurement more than 60° (as seen from the origin of the SOFA
  positions) from every event of that class, and plays a file of that class not used by those
  events nor in the same first-level sub-folder of the class folder (``choose_wo_replacement``,
  ``exclusion_folder_depth`` 1);
* ``n_interferers ~ U{0,1,2}``; ``ref_db`` −55;
* the target slot order is shuffled (``shuffle_label``), silence still last.

Durations are the files' own (``Clip.seconds``, librosa.get_duration), whatever their rate.

Deliberate deviations from the baselines: classes are drawn from a sorted list (the baselines'
``random.choice(list(set))`` depends on the process hash seed, spec §7.11); a 2026 repeat for
which no measurement is far enough, or no file is left, is left out (the mixture has one event
less; the official generator fails its ``assert len(fg_events) == nevents`` there).

Events are stored in ``num_targets + num_interferers`` slots (3 + 2): target slots first, in slot
order (onset order for random 2025 recipes, shuffled for 2026, inactive slots last; the
metadata's order for validation), then interferers in draw order. Times are float64 seconds; the
loader turns them into frames with ``int(seconds · sr)`` (librosa's truncation).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from s5jax import labels as labels_lib
from s5jax.data.catalog import Clip, Room, Split
from s5jax.data.synth import TASKS

SAMPLE_RATE = 32000
STRETCH = -1.0  # noise_offset of a background stretched to the clip ("source_time": null)


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """What a mixture looks like (defaults: the 2025 baseline, spec §2.3; 2026:
    :func:`task_config`). ``task`` also picks the renderer's rules (``synth.RULES``)."""

    sr: int = SAMPLE_RATE
    duration: float = 10.0  # clip length in seconds; also the max event duration
    ref_db: float = -50.0
    snr_range: tuple[float, float] = (5.0, 20.0)
    interference_snr_range: tuple[float, float] = (0.0, 15.0)
    nevent_range: tuple[int, int] = (1, 3)
    ninterference_range: tuple[int, int] = (1, 2)
    num_targets: int = labels_lib.MAX_SOURCES  # target slots
    num_interferers: int = 2  # interferer slots
    dry_window_ms: tuple[float, float] = (6.0, 50.0)
    task: str = "dcase2025"
    # DCASE 2026 repeated classes (DatasetS3: dupse_rate, max_n_dupse, dupse_min_angle,
    # dupse_exclusion_folder_depth); repeat_rate 0 = never.
    repeat_rate: float = 0.0
    max_repeats: int = 2
    repeat_min_angle: float = 60.0  # degrees
    repeat_exclusion_depth: int = 1
    shuffle_labels: bool = False  # 2026 shuffle_label: random target slot order

    @property
    def num_events(self) -> int:
        return self.num_targets + self.num_interferers

    @property
    def frames(self) -> int:
        """Clip length in samples."""
        return int(self.duration * self.sr)


def task_config(task: str = "dcase2025", mode: str = "separator",
                duration: float = 10.0) -> MixtureConfig:
    """The official training-mixture rules of ``task`` for a ``mode`` ("separator" | "tagger").

    ``dcase2025``: spec §2.3 (both modes). ``dcase2026`` (config/label/m2dat_*.yaml,
    config/separation/resunetk_capisdr.yaml): ``nevent_range`` [0, 3] (tagger) / [1, 3]
    (separator), ``ninterference_range`` [0, 2], ``inteference_snr_range`` [0, 15],
    ``snr_range`` [5, 20], ``ref_db`` −55, ``dupse_rate`` 0.5, ``max_n_dupse`` 2,
    ``dupse_min_angle`` 60, ``dupse_exclusion_folder_depth`` 1, ``shuffle_label`` true,
    ``direct_range_ms`` [6, 50].
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    if mode not in ("separator", "tagger"):
        raise ValueError(f"mode {mode!r}: expected 'separator' or 'tagger'")
    if task == "dcase2025":
        return MixtureConfig(duration=float(duration))
    return MixtureConfig(
        duration=float(duration), ref_db=-55.0, task=task,
        nevent_range=(0, 3) if mode == "tagger" else (1, 3), ninterference_range=(0, 2),
        repeat_rate=0.5, max_repeats=2, repeat_min_angle=60.0, repeat_exclusion_depth=1,
        shuffle_labels=True,
    )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One mixture. Event arrays have shape ``(num_events,)``: targets, then interferers.

    ``cls`` is a CLASSES index for target slots and an index into
    :func:`interference_classes` for interferer slots. ``file`` indexes the class's clip tuple,
    ``position`` the room's measurement rows. Inactive slots hold zeros (and ``cls = -1``).
    """

    room: np.ndarray  # int32 ()
    cls: np.ndarray  # int32 (E,)
    file: np.ndarray  # int32 (E,)
    source_time: np.ndarray  # float64 (E,) seconds into the file
    duration: np.ndarray  # float64 (E,) seconds
    onset: np.ndarray  # float64 (E,) seconds into the mixture
    position: np.ndarray  # int32 (E,)
    snr: np.ndarray  # float64 (E,) dB above ref_db
    active: np.ndarray  # bool (E,)
    noise: np.ndarray  # int32 () index into split.noise, -1 for none
    noise_offset: np.ndarray  # float64 () seconds, or STRETCH
    noise_snr: np.ndarray  # float64 () dB above ref_db (0 in every mixture the generators draw)

    def target_labels(self, num_targets: int) -> np.ndarray:
        """``int32 (num_targets,)`` class slots, -1 for inactive."""
        c = self.cls[:num_targets]
        return np.where(self.active[:num_targets], c, labels_lib.EMPTY).astype(np.int32)

    def equals(self, other: Recipe) -> bool:
        """Bit-identical comparison of every field."""
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name))
            and getattr(self, f.name).dtype == getattr(other, f.name).dtype
            for f in dataclasses.fields(self)
        )


def target_classes(split: Split) -> list[str]:
    """Sorted target classes with at least one clip; each must be one of the 18 CLASSES."""
    names = sorted(k for k, v in split.targets.items() if v)
    for n in names:
        labels_lib.class_index(n)  # ValueError naming an unknown folder
    return names


def interference_classes(split: Split) -> list[str]:
    """Sorted interference class names with at least one clip (free-form names)."""
    return sorted(k for k, v in split.interference.items() if v)


def _timing(rng: np.random.Generator, clip: Clip, cfg: MixtureConfig) -> tuple[float, float, float]:
    dur_file = clip.seconds
    if dur_file > cfg.duration:
        source_time = rng.uniform(0.0, dur_file - cfg.duration)
        duration = cfg.duration
    else:
        source_time, duration = 0.0, dur_file
    onset = rng.uniform(0.0, cfg.duration - duration)
    return float(source_time), float(duration), float(onset)


def recipe_arrays(cfg: MixtureConfig) -> dict[str, np.ndarray]:
    """The arrays of an all-inactive recipe (mutable; ``Recipe(**arrays)`` freezes them)."""
    e = cfg.num_events
    return dict(
        room=np.zeros((), np.int32),
        cls=np.full(e, -1, np.int32),
        file=np.zeros(e, np.int32),
        source_time=np.zeros(e, np.float64),
        duration=np.zeros(e, np.float64),
        onset=np.zeros(e, np.float64),
        position=np.zeros(e, np.int32),
        snr=np.zeros(e, np.float64),
        active=np.zeros(e, bool),
        noise=np.full((), -1, np.int32),
        noise_offset=np.zeros((), np.float64),
        noise_snr=np.zeros((), np.float64),
    )


def _far_positions(room: Room, taken: Sequence[int], min_angle_deg: float) -> np.ndarray:
    """Measurement rows whose direction is more than ``min_angle_deg`` from every ``taken``
    one's, directions seen from the origin of the SOFA positions (``DatasetS3._get_position``)."""
    pos = np.asarray(room.positions, np.float64)
    unit = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    cos = unit @ unit[list(taken)].T  # (M, taken)
    angles = np.arccos(np.clip(cos, -1.0, 1.0))
    return np.nonzero(np.all(angles > np.deg2rad(min_angle_deg), axis=1))[0]


def _unused_files(clips: Sequence[Clip], used: Sequence[int], depth: int) -> list[int]:
    """Indices of ``clips`` neither in ``used`` nor, for ``depth`` ≥ 1, in the same
    ``depth``-level sub-folder of the class folder as one of them (SpAudSyn
    ``source_file_filter``; a file directly in the class folder excludes only itself)."""
    forbidden = {clips[u].subdir[:depth] for u in used if depth and len(clips[u].subdir) >= depth}
    return [i for i, c in enumerate(clips)
            if i not in used and not (len(c.subdir) >= depth and c.subdir[:depth] in forbidden)]


def _set_event(out: dict[str, np.ndarray], slot: int, cls: int, file: int, source_time: float,
               duration: float, onset: float, position: int, snr: float) -> None:
    """Write one active event into the recipe arrays ``out`` (``recipe_arrays``) at ``slot``."""
    for key, value in (("cls", cls), ("file", file), ("source_time", source_time),
                       ("duration", duration), ("onset", onset), ("position", position),
                       ("snr", snr), ("active", True)):
        out[key][slot] = value


def empty_recipe(cfg: MixtureConfig = MixtureConfig()) -> Recipe:
    """A recipe with every slot inactive and no noise (renders to silence)."""
    return Recipe(**recipe_arrays(cfg))


def make_recipe(
    split: Split, index: int, seed: int, cfg: MixtureConfig = MixtureConfig()
) -> Recipe:
    """The random recipe number ``index`` of ``split`` for ``seed`` (spec §2.3).

    Clip and room choices are indices into ``split``'s tuples (whose order the catalog fixes).
    """
    if index < 0 or seed < 0:
        raise ValueError(f"index {index} / seed {seed}: expected non-negative integers")
    if not split.rooms:
        raise ValueError("split has no rooms (room_ir/<split>/*.sofa); cannot draw a mixture")
    t_classes = target_classes(split)
    if not t_classes:
        raise ValueError("split has no target clips (sound_event/<split>/<Class>/*.wav)")
    i_classes = interference_classes(split)
    rng = np.random.default_rng([seed, index])
    out = recipe_arrays(cfg)

    room_i = int(rng.integers(len(split.rooms)))
    room = split.rooms[room_i]
    out["room"] = np.asarray(room_i, np.int32)

    lo, hi = cfg.nevent_range
    n = int(rng.integers(lo, hi + 1))
    n = min(n, cfg.num_targets)
    repeats = 0
    if n >= 2 and cfg.repeat_rate > 0 and rng.random() < cfg.repeat_rate:
        repeats = int(rng.integers(1, min(n - 1, cfg.max_repeats) + 1))
    distinct = min(n - repeats, len(t_classes))  # tiny catalogs only
    picks = rng.choice(len(t_classes), size=distinct, replace=False)
    targets = []

    def add(name: str, f: int, candidates: np.ndarray) -> None:
        # Draw order (file, timing, position, snr) kept from the first version: same recipes.
        st, du, on = _timing(rng, split.targets[name][f], cfg)
        pos = int(candidates[int(rng.integers(len(candidates)))])
        snr = float(rng.uniform(*cfg.snr_range))
        targets.append((labels_lib.class_index(name), f, st, du, on, pos, snr))

    everywhere = np.arange(len(room.positions))
    for p in picks:
        name = t_classes[int(p)]
        add(name, int(rng.integers(len(split.targets[name]))), everywhere)
    for _ in range(repeats):
        name = t_classes[int(picks[int(rng.integers(len(picks)))])]
        same = [t for t in targets if t[0] == labels_lib.class_index(name)]
        pos = _far_positions(room, [t[5] for t in same], cfg.repeat_min_angle)
        files = _unused_files(split.targets[name], [t[1] for t in same],
                              cfg.repeat_exclusion_depth)
        if len(pos) == 0 or not files:
            continue  # (module docstring: the official generator fails here)
        add(name, files[int(rng.integers(len(files)))], pos)
    if cfg.shuffle_labels:
        targets = [targets[int(k)] for k in rng.permutation(len(targets))]
    else:  # slot order = onset order (stable for ties), silence last (spec §2.6)
        targets.sort(key=lambda t: t[4])

    interferers = []
    if i_classes:
        lo, hi = cfg.ninterference_range
        m = min(int(rng.integers(lo, hi + 1)), cfg.num_interferers)
        for _ in range(m):
            c = int(rng.integers(len(i_classes)))
            clips = split.interference[i_classes[c]]
            f = int(rng.integers(len(clips)))
            st, du, on = _timing(rng, clips[f], cfg)
            pos = int(rng.integers(len(room.positions)))
            snr = float(rng.uniform(*cfg.interference_snr_range))
            interferers.append((c, f, st, du, on, pos, snr))

    events = list(enumerate(targets))
    events += [(cfg.num_targets + j, ev) for j, ev in enumerate(interferers)]
    for slot, event in events:
        _set_event(out, slot, *event)

    if split.noise:
        k = int(rng.integers(len(split.noise)))
        clip = split.noise[k]
        dur = clip.seconds
        if dur > cfg.duration:
            offset = float(math.floor(rng.uniform(0.0, dur - cfg.duration)))
        else:
            offset = STRETCH
        if clip.channels == room.channels:
            out["noise"] = np.asarray(k, np.int32)
            out["noise_offset"] = np.asarray(float(offset), np.float64)
    return Recipe(**out)


# ----------------------------------------------------------------------------------------------
# Validation metadata (spec §2.7)


@dataclasses.dataclass(frozen=True)
class ValidEntry:
    """One validation mixture: its per-mixture metadata and the requested slot order."""

    name: str  # per-mixture file stem
    metadata: dict
    ref_event: tuple[str, ...] | None  # None: no ref_event in the listing (SpAudSyn, 2026)


def read_valid_metadata(valid_json: Path) -> list[ValidEntry]:
    """Read ``valid.json`` and every per-mixture JSON it lists (paths relative to its folder).

    Entries are ``{metadata_path, ref_event}`` (2025) or ``{metadata_path}`` (2026, SpAudSyn).
    One ``ValueError`` lists every unreadable or incomplete file.
    """
    valid_json = Path(valid_json)
    try:
        entries = json.loads(valid_json.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{valid_json}: cannot read validation list ({e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{valid_json}: expected a JSON list of {{metadata_path[, ref_event]}}")
    out, problems = [], []
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or not isinstance(e.get("metadata_path"), str):
            problems.append(f"{valid_json}: entry {i} lacks a metadata_path (a relative path)")
            continue
        p = valid_json.parent / e["metadata_path"]
        try:
            meta = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f"{p}: cannot read mixture metadata ({err})")
            continue
        if not isinstance(meta, Mapping):
            problems.append(f"{p}: expected a JSON object")
            continue
        if "config" not in meta and "init_args" in meta:
            meta["config"] = meta["init_args"]
        missing = [k for k in ("config", "fg_events", "room") if k not in meta]
        if missing:
            problems.append(f"{p}: mixture metadata lacks {', '.join(map(repr, missing))}")
            continue
        if not isinstance(meta["config"], Mapping) or not isinstance(meta["fg_events"], list):
            problems.append(f"{p}: mixture metadata's config must be an object and fg_events a "
                            "list")
            continue
        ref = e.get("ref_event")
        out.append(ValidEntry(Path(e["metadata_path"]).stem, meta,
                              None if ref is None else tuple(ref)))
    if problems:
        raise ValueError(f"{valid_json}: {len(problems)} problem(s) in the validation metadata:"
                         "\n  " + "\n  ".join(problems))
    return out


def config_from_metadata(meta: Mapping, base: MixtureConfig = MixtureConfig()) -> MixtureConfig:
    """The mixture config stored in a per-mixture JSON (sr, duration, ref_db, dry window)."""
    c = meta["config"]
    win = c.get("spatialize_direct_path_time_ms") or base.dry_window_ms
    return dataclasses.replace(
        base,
        sr=int(c.get("sr", base.sr)),
        duration=float(c.get("duration", base.duration)),
        ref_db=float(c.get("ref_db", base.ref_db)),
        dry_window_ms=(float(win[0]), float(win[1])),
    )


class ClipIndex:
    """``source_file`` → ``(class, index)`` in a pool of clips (one class → clips mapping).

    A clip is named by its ``Clip.key`` (``<Class>/<file>.wav``, with any sub-folders; noise:
    ``[<sub-folders>/]<file>.wav``); a ``source_file`` matches the clip whose key its path ends
    with (the longest such key), so a path with a leading directory still resolves.
    """

    def __init__(self, pool: Mapping[str, Sequence[Clip]]):
        self._keys = {c.key: (name, i) for name, clips in pool.items()
                      for i, c in enumerate(clips)}
        self._lengths = sorted({len(k) for k in self._keys}, reverse=True)

    def find(self, source_file: str, where: str) -> tuple[str, int]:
        parts = Path(str(source_file)).parts
        for n in self._lengths:
            hit = self._keys.get(tuple(parts[-n:])) if len(parts) >= n else None
            if hit is not None:
                return hit
        raise ValueError(f"{where}: source_file {source_file!r} is not in the catalog split")


def _nearest(room: Room, xyz: Sequence, where: str) -> int:
    """The room measurement nearest to ``xyz`` (``[[x, y, z]]`` or ``[x, y, z]``); ``ValueError``
    for anything else (a null position: the official ``traj_2_ir_idx`` fails on it)."""
    try:
        p = np.asarray(xyz, np.float64).reshape(-1)
    except (TypeError, ValueError):
        p = np.zeros(0)
    if p.shape != (3,) or not np.isfinite(p).all():
        raise ValueError(f"{where}: event_position {xyz!r}: expected [[x, y, z]], a point of "
                         f"{room.path.name}")
    return int(np.argmin(np.sum((np.asarray(room.positions, np.float64) - p) ** 2, axis=1)))


def place_event(out: dict[str, np.ndarray], slot: int, ev: Mapping, clip: Clip, cls: int,
                file: int, position: int, cfg: MixtureConfig, where: str) -> None:
    """Write one metadata event into the recipe arrays ``out`` (``recipe_arrays``) at ``slot``.

    The renderer places whole events (the event gain is the power of the whole wet image), so
    an event must start inside its file and end inside the mixture, as every event the official
    generators write does; ``ValueError`` naming the mixture and the file otherwise.
    """
    # A null source_time reads the file from its start, as librosa.load(offset=None) does in
    # both official readers.
    st = float(ev["source_time"] if ev["source_time"] is not None else 0.0)
    du, on = float(ev["event_duration"]), float(ev["event_time"])
    if not 0 <= int(st * clip.sample_rate) < clip.frames:
        raise ValueError(f"{where}: source_time {st:g} s is outside {clip.path} "
                         f"({clip.seconds:.6g} s)")
    if du <= 0 or on < 0 or int(on * cfg.sr) + int(du * cfg.sr) > cfg.frames:
        raise ValueError(f"{where}: event of {clip.path} at {on:g} s lasting {du:g} s does "
                         f"not fit the {cfg.duration:g}-s mixture")
    _set_event(out, slot, cls, file, st, du, on, position, float(ev["snr"]))


def place_noise(out: dict[str, np.ndarray], bg: Sequence[Mapping], split: Split, room: Room,
                cfg: MixtureConfig, where: str) -> None:
    """The background of a metadata mixture (its ``bg_events``, at most one) into ``out``.

    ``"source_time": null`` → :data:`STRETCH`. Refused, naming the mixture and the file, as the
    official renderers fail on them: a file whose channel count is not the room's, a numeric
    ``source_time`` on a file too short for it.
    """
    if not bg:
        return
    if len(bg) > 1:
        raise ValueError(f"{where}: {len(bg)} background events, at most 1 supported")
    snr = bg[0].get("snr", 0)
    if not isinstance(snr, (int, float)) or isinstance(snr, bool) or not np.isfinite(snr):
        # The official renderers put the background at ref_db + snr (both generators write 0);
        # a null fails there.
        raise ValueError(f"{where}: background snr {snr!r}: expected a number of dB above "
                         "ref_db (the generators write 0)")
    _, k = ClipIndex({"": split.noise}).find(bg[0]["source_file"], where)
    clip = split.noise[k]
    if clip.channels != room.channels:
        raise ValueError(f"{where}: noise file {clip.path} has {clip.channels} channels, "
                         f"expected the room's {room.channels} (the baseline cannot add it)")
    offset = bg[0].get("source_time")
    if offset is None:  # the baselines' "repeat ambient file until scape duration"
        offset = STRETCH
    else:
        offset = float(offset)
        start = int(offset * clip.sample_rate)
        if start < 0 or start + int(cfg.duration * clip.sample_rate) > clip.frames:
            raise ValueError(
                f"{where}: noise file {clip.path} lasts {clip.seconds:.6g} s, shorter than "
                f"source_time {offset:g} s + the {cfg.duration:g}-s mixture (the baseline's "
                'renderer fails on this; "source_time": null stretches a short file)')
    out["noise"] = np.asarray(k, np.int32)
    out["noise_offset"] = np.asarray(offset, np.float64)
    out["noise_snr"] = np.asarray(snr, np.float64)


def recipe_from_metadata(
    entry: ValidEntry, split: Split, cfg: MixtureConfig | None = None,
    index: tuple[ClipIndex, ClipIndex] | None = None,
) -> Recipe:
    """The recipe a 2025 per-mixture JSON (spec §2.7) describes, target slots in ``ref_event``
    order.

    Files are matched by their path below the event directory (``<Class>/<file>.wav``; noise by
    name, :class:`ClipIndex`), the room by basename, positions by nearest neighbour over the
    room's measurements (the baseline's KD-tree lookup). ``index``: the split's target and
    interference indices, if already built.
    """
    cfg = cfg or config_from_metadata(entry.metadata)
    where = f"validation mixture {entry.name}"
    meta = entry.metadata
    out = recipe_arrays(cfg)
    if not isinstance(meta["room"], str):
        raise ValueError(f"{where}: room {meta['room']!r} is not a room file name (expected a "
                         "DCASE 2025 mixture)")
    rooms = {r.path.name: i for i, r in enumerate(split.rooms)}
    room_name = Path(meta["room"]).name
    if room_name not in rooms:
        raise ValueError(f"{where}: room {room_name!r} is not in the catalog split")
    out["room"] = np.asarray(rooms[room_name], np.int32)
    room = split.rooms[rooms[room_name]]

    fg = sorted(meta["fg_events"], key=lambda e: float(e["event_time"]))
    if len(fg) > cfg.num_targets:
        raise ValueError(f"{where}: {len(fg)} target events, at most {cfg.num_targets} supported")
    if entry.ref_event is None:
        raise ValueError(f"{where}: the listing gives no ref_event (needed for a DCASE 2025 "
                         "mixture)")
    ref = list(entry.ref_event)
    padded = [e["label"] for e in fg] + [labels_lib.SILENCE] * (cfg.num_targets - len(fg))
    if len(ref) != cfg.num_targets or sorted(ref) != sorted(padded):
        raise ValueError(
            f"{where}: ref_event {ref} does not match the events' labels {padded} (as a set)"
        )
    targets, interference = index or (ClipIndex(split.targets), ClipIndex(split.interference))
    used: set[int] = set()
    i_names = interference_classes(split)

    for slot, label in enumerate(ref):
        if label == labels_lib.SILENCE:
            continue
        # First unused event with this label (repeats allowed, unlike the baseline's list.index).
        j = next(k for k, e in enumerate(fg) if e["label"] == label and k not in used)
        used.add(j)
        name, f = targets.find(fg[j]["source_file"], where)
        place_event(out, slot, fg[j], split.targets[name][f], labels_lib.class_index(name), f,
                    _nearest(room, fg[j]["event_position"], where), cfg, where)
    ints = meta.get("int_events", [])
    if len(ints) > cfg.num_interferers:
        raise ValueError(f"{where}: {len(ints)} interferers, at most {cfg.num_interferers}")
    for j, ev in enumerate(ints):
        name, f = interference.find(ev["source_file"], where)
        place_event(out, cfg.num_targets + j, ev, split.interference[name][f],
                    i_names.index(name), f, _nearest(room, ev["event_position"], where), cfg,
                    where)
    place_noise(out, meta.get("bg_events", []), split, room, cfg, where)
    return Recipe(**out)


def metadata_split(valid_json: Path) -> str:
    """The split the first mixture's ``foreground_dir`` names (``.../sound_event/<split>``);
    "valid" if it cannot be told."""
    try:
        first = json.loads(Path(valid_json).read_text())[0]["metadata_path"]
        meta = json.loads((Path(valid_json).parent / first).read_text())
        d = (meta.get("config") or meta.get("init_args") or {}).get("foreground_dir") or "valid"
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return "valid"
    return str(d).rstrip("/").split("/")[-1]


def resolve_entries(
    valid_json: Path, split: Split, num_targets: int,
    config_of: Callable[[Mapping], MixtureConfig],
    recipe_of: Callable[[ValidEntry, Split, MixtureConfig, tuple], Recipe],
) -> tuple[MixtureConfig, list[ValidEntry], list[Recipe]]:
    """Read a validation listing and resolve every mixture with ``recipe_of`` (one format's
    reader; ``config_of`` reads its mixture config). One ``ValueError`` lists every problem."""
    entries = read_valid_metadata(valid_json)
    if not entries:
        raise ValueError(f"{valid_json}: empty validation list")
    try:
        cfgs = {config_of(e.metadata) for e in entries}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{valid_json}: malformed mixture config ({err})") from None
    if len(cfgs) != 1:
        raise ValueError(f"{valid_json}: mixtures differ in sr/duration/ref_db/window")
    cfg = dataclasses.replace(cfgs.pop(), num_targets=num_targets)
    index = (ClipIndex(split.targets), ClipIndex(split.interference))
    out, problems = [], []
    for e in entries:
        try:
            out.append(recipe_of(e, split, cfg, index))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            msg = str(err) if isinstance(err, ValueError) else \
                f"malformed metadata ({type(err).__name__}: {err})"
            problems.append(msg if msg.startswith("validation mixture") else
                            f"validation mixture {e.name}: {msg}")
    if problems:
        raise ValueError(f"{valid_json}: {len(problems)} validation mixture(s) cannot be "
                         "rendered:\n  " + "\n  ".join(problems))
    return cfg, entries, out


def resolve_valid(
    valid_json: Path, split: Split, num_targets: int = labels_lib.MAX_SOURCES
) -> tuple[MixtureConfig, list[ValidEntry], list[Recipe]]:
    """Read 2025 validation metadata (spec §2.7) and resolve every mixture against ``split``.

    Returns the mixtures' shared config and, per mixture, its entry and recipe. One
    ``ValueError`` lists every problem (unreadable files, mixtures that differ in sr / duration /
    ref_db / dry window, files or rooms not in the split, noise the baseline could not render).
    (The 2026 SpAudSyn format: ``s5jax.data.spaudsyn.resolve_valid``.)
    """
    return resolve_entries(valid_json, split, num_targets, config_from_metadata,
                           recipe_from_metadata)


def recipe_to_metadata(
    recipe: Recipe, split: Split, split_name: str, cfg: MixtureConfig
) -> tuple[dict, list[str]]:
    """Per-mixture JSON (spec §2.7 format) and the padded ``ref_event`` list (slot order)."""
    room = split.rooms[int(recipe.room)]
    i_names = interference_classes(split)
    config = {
        "foreground_dir": f"sound_event/{split_name}",
        "background_dir": f"noise/{split_name}",
        "rir_dir": f"room_ir/{split_name}",
        "interference_dir": f"interference/{split_name}",
        "duration": cfg.duration,
        "sr": cfg.sr,
        "max_event_overlap": 3,
        "ref_db": cfg.ref_db,
        "return_dry": True,
        "return_wet": False,
        "return_ir": False,
        "return_background": False,
        "ref_channel": 0,
        "spatialize_direct_path_time_ms": list(cfg.dry_window_ms),
        "return_interference": False,
    }

    def event(slot: int, clip: Clip, label: str) -> dict:
        return {
            "label": label,
            "source_file": f"{clip.path.parent.name}/{clip.path.name}",
            "source_time": float(recipe.source_time[slot]),
            "event_time": float(recipe.onset[slot]),
            "event_duration": float(recipe.duration[slot]),
            "snr": float(recipe.snr[slot]),
            "role": "foreground",
            "pitch_shift": None,
            "time_stretch": None,
            "event_position": [[float(v) for v in room.positions[int(recipe.position[slot])]]],
        }

    fg, ref = [], []
    for s in range(cfg.num_targets):
        if not recipe.active[s]:
            ref.append(labels_lib.SILENCE)
            continue
        name = labels_lib.CLASSES[int(recipe.cls[s])]
        fg.append(event(s, split.targets[name][int(recipe.file[s])], name))
        ref.append(name)
    fg.sort(key=lambda e: e["event_time"])
    ints = []
    for s in range(cfg.num_targets, cfg.num_events):
        if recipe.active[s]:
            name = i_names[int(recipe.cls[s])]
            ints.append(event(s, split.interference[name][int(recipe.file[s])], name))
    bg = []
    if int(recipe.noise) >= 0:
        clip = split.noise[int(recipe.noise)]
        stretch = float(recipe.noise_offset) == STRETCH
        bg.append({
            "label": None,
            "source_file": clip.path.name,
            "source_time": None if stretch else float(recipe.noise_offset),
            "event_time": 0.0,
            "event_duration": cfg.duration,
            "snr": float(recipe.noise_snr),
            "role": "background",
            "pitch_shift": None,
            "time_stretch": None,
            "event_position": None,
        })
    meta = {"config": config, "fg_events": fg, "bg_events": bg, "int_events": ints,
            "room": room.path.name}
    return meta, ref
