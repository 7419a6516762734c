"""Mixture recipes: everything random about one training mixture, as small fixed-size arrays.

A recipe is drawn from ``(index, seed)`` alone (``np.random.default_rng([seed, index])``), so the
same pair gives a bit-identical recipe in any process, on any host, in any order — the loader can
be restarted or sharded without replaying draws. The draw follows baseline_spec.md §2.3:

* room uniform; ``n_targets ~ U{1,2,3}``; classes uniform without replacement (``allow_repeats``
  draws with replacement, DCASE-2026 style); file uniform within the class; a file longer than the
  clip gets ``source_time ~ U(0, dur − clip)`` and duration ``clip``, otherwise ``0`` and its own
  duration; onset ``~ U(0, clip − duration)`` (continuous seconds); position uniform over the
  room's measurements; ``snr ~ U(5, 20)``;
* ``n_interferers ~ U{1,2}``, class uniform *with* replacement, same timing rules,
  ``snr ~ U(0, 15)``;
* noise file uniform; offset ``⌊U(0, dur − clip)⌋`` whole seconds if longer than the clip, else
  :data:`STRETCH` (the baseline's ``"source_time": null``): the loader stretches the whole file
  to the clip by repeating every sample ``⌈L / len⌉`` times (``np.repeat``, spec §7.5), as the
  baseline's renderer does; a noise file whose channel count differs from the room's gives a
  mixture without background (the baseline's ``add_background`` skips it the same way).

Durations are the files' own (``Clip.seconds``, librosa.get_duration), whatever their rate.

Deviation from the baseline, on purpose: classes are drawn from a sorted list (the baseline's
``random.choice(list(set))`` depends on the process hash seed, §7.11).

Events are stored in ``num_targets + num_interferers`` slots (3 + 2): target slots first, in slot
order (onset order for random recipes, inactive slots last; ``ref_event`` order for validation
metadata), then interferers in draw order. Times are float64 seconds; the loader turns them into
frames with ``int(seconds · sr)`` (librosa's truncation).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from s5jax import labels as labels_lib
from s5jax.data.catalog import Clip, Room, Split

SAMPLE_RATE = 32000
STRETCH = -1.0  # noise_offset of a background stretched to the clip ("source_time": null)


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """What a mixture looks like (baseline values, spec §2.3)."""

    sr: int = SAMPLE_RATE
    duration: float = 10.0  # clip length in seconds; also the max event duration
    ref_db: float = -50.0
    snr_range: tuple[float, float] = (5.0, 20.0)
    interference_snr_range: tuple[float, float] = (0.0, 15.0)
    nevent_range: tuple[int, int] = (1, 3)
    ninterference_range: tuple[int, int] = (1, 2)
    num_targets: int = labels_lib.MAX_SOURCES  # target slots
    num_interferers: int = 2  # interferer slots
    allow_repeats: bool = False
    dry_window_ms: tuple[float, float] = (6.0, 50.0)

    @property
    def num_events(self) -> int:
        return self.num_targets + self.num_interferers

    @property
    def frames(self) -> int:
        """Clip length in samples."""
        return int(self.duration * self.sr)


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


def _empty(cfg: MixtureConfig) -> dict[str, np.ndarray]:
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
    )


def empty_recipe(cfg: MixtureConfig = MixtureConfig()) -> Recipe:
    """A recipe with every slot inactive and no noise (renders to silence)."""
    return Recipe(**_empty(cfg))


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
    out = _empty(cfg)

    room_i = int(rng.integers(len(split.rooms)))
    room = split.rooms[room_i]
    out["room"] = np.asarray(room_i, np.int32)

    lo, hi = cfg.nevent_range
    n = int(rng.integers(lo, hi + 1))
    n = min(n, cfg.num_targets)
    if cfg.allow_repeats:
        picks = rng.integers(len(t_classes), size=n)
    else:
        n = min(n, len(t_classes))  # tiny catalogs only
        picks = rng.choice(len(t_classes), size=n, replace=False)
    targets = []
    for p in picks:
        name = t_classes[int(p)]
        clips = split.targets[name]
        f = int(rng.integers(len(clips)))
        st, du, on = _timing(rng, clips[f], cfg)
        pos = int(rng.integers(len(room.positions)))
        snr = float(rng.uniform(*cfg.snr_range))
        targets.append((labels_lib.class_index(name), f, st, du, on, pos, snr))
    # Slot order = onset order (stable for ties), silence last (spec §2.6).
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
    for slot, (c, f, st, du, on, pos, snr) in events:
        out["cls"][slot] = c
        out["file"][slot] = f
        out["source_time"][slot] = st
        out["duration"][slot] = du
        out["onset"][slot] = on
        out["position"][slot] = pos
        out["snr"][slot] = snr
        out["active"][slot] = True

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
    ref_event: tuple[str, ...]


def read_valid_metadata(valid_json: Path) -> list[ValidEntry]:
    """Read ``valid.json`` and every per-mixture JSON it lists (paths relative to its folder).

    One ``ValueError`` lists every unreadable or incomplete file.
    """
    valid_json = Path(valid_json)
    try:
        entries = json.loads(valid_json.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{valid_json}: cannot read validation list ({e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{valid_json}: expected a JSON list of {{metadata_path, ref_event}}")
    out, problems = [], []
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or "metadata_path" not in e or "ref_event" not in e:
            problems.append(f"{valid_json}: entry {i} lacks metadata_path / ref_event")
            continue
        p = valid_json.parent / e["metadata_path"]
        try:
            meta = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f"{p}: cannot read mixture metadata ({err})")
            continue
        if "config" not in meta and "init_args" in meta:
            meta["config"] = meta["init_args"]
        missing = [k for k in ("config", "fg_events", "room") if k not in meta]
        if missing:
            problems.append(f"{p}: mixture metadata lacks {', '.join(map(repr, missing))}")
            continue
        out.append(ValidEntry(Path(e["metadata_path"]).stem, meta, tuple(e["ref_event"])))
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


def _tail(path: Path, n: int) -> tuple[str, ...]:
    return tuple(Path(path).parts[-n:])


def _find_clip(pool: Mapping[str, Sequence[Clip]], source_file: str, where: str) -> tuple[str, int]:
    key = _tail(Path(source_file), 2)
    for name, clips in pool.items():
        for i, c in enumerate(clips):
            if _tail(c.path, 2) == key:
                return name, i
    raise ValueError(f"{where}: source_file {source_file!r} is not in the catalog split")


def _nearest(room: Room, xyz: Sequence) -> int:
    p = np.asarray(xyz, np.float64).reshape(-1)[:3]
    return int(np.argmin(np.sum((np.asarray(room.positions, np.float64) - p) ** 2, axis=1)))


def recipe_from_metadata(
    entry: ValidEntry, split: Split, cfg: MixtureConfig | None = None
) -> Recipe:
    """The recipe a per-mixture JSON describes, target slots in ``ref_event`` order.

    Files are matched by their last two path components (``<Class>/<file>.wav``; noise by name),
    the room by basename, positions by nearest neighbour over the room's measurements (the
    baseline's KD-tree lookup).
    """
    cfg = cfg or config_from_metadata(entry.metadata)
    where = f"validation mixture {entry.name}"
    meta = entry.metadata
    out = _empty(cfg)
    rooms = {r.path.name: i for i, r in enumerate(split.rooms)}
    room_name = Path(meta["room"]).name
    if room_name not in rooms:
        raise ValueError(f"{where}: room {room_name!r} is not in the catalog split")
    out["room"] = np.asarray(rooms[room_name], np.int32)
    room = split.rooms[rooms[room_name]]

    fg = sorted(meta["fg_events"], key=lambda e: float(e["event_time"]))
    if len(fg) > cfg.num_targets:
        raise ValueError(f"{where}: {len(fg)} target events, at most {cfg.num_targets} supported")
    ref = list(entry.ref_event)
    padded = [e["label"] for e in fg] + [labels_lib.SILENCE] * (cfg.num_targets - len(fg))
    if len(ref) != cfg.num_targets or sorted(ref) != sorted(padded):
        raise ValueError(
            f"{where}: ref_event {ref} does not match the events' labels {padded} (as a set)"
        )
    used: set[int] = set()
    i_names = interference_classes(split)

    def put(slot: int, ev: Mapping, pool, is_target: bool) -> None:
        name, f = _find_clip(pool, ev["source_file"], where)
        clip = pool[name][f]
        st, du, on = float(ev["source_time"]), float(ev["event_duration"]), float(ev["event_time"])
        # The renderer places whole events (the event gain is the power of the whole wet image),
        # so an event must start inside its file and end inside the mixture, as every event the
        # official generator writes does.
        if not 0 <= int(st * clip.sample_rate) < clip.frames:
            raise ValueError(f"{where}: source_time {st:g} s is outside {clip.path} "
                             f"({clip.seconds:.6g} s)")
        if du <= 0 or on < 0 or int(on * cfg.sr) + int(du * cfg.sr) > cfg.frames:
            raise ValueError(f"{where}: event of {clip.path} at {on:g} s lasting {du:g} s does "
                             f"not fit the {cfg.duration:g}-s mixture")
        out["cls"][slot] = labels_lib.class_index(name) if is_target else i_names.index(name)
        out["file"][slot] = f
        out["source_time"][slot] = st
        out["duration"][slot] = du
        out["onset"][slot] = on
        out["position"][slot] = _nearest(room, ev["event_position"])
        out["snr"][slot] = float(ev["snr"])
        out["active"][slot] = True

    for slot, label in enumerate(ref):
        if label == labels_lib.SILENCE:
            continue
        # First unused event with this label (repeats allowed, unlike the baseline's list.index).
        j = next(k for k, e in enumerate(fg) if e["label"] == label and k not in used)
        used.add(j)
        put(slot, fg[j], split.targets, True)
    ints = meta.get("int_events", [])
    if len(ints) > cfg.num_interferers:
        raise ValueError(f"{where}: {len(ints)} interferers, at most {cfg.num_interferers}")
    for j, ev in enumerate(ints):
        put(cfg.num_targets + j, ev, split.interference, False)

    bg = meta.get("bg_events", [])
    if bg:
        key = Path(bg[0]["source_file"]).name
        idx = [i for i, c in enumerate(split.noise) if c.path.name == key]
        if not idx:
            raise ValueError(f"{where}: noise file {key!r} is not in the catalog split")
        clip = split.noise[idx[0]]
        if clip.channels != room.channels:
            raise ValueError(f"{where}: noise file {clip.path} has {clip.channels} channels, "
                             f"expected the room's {room.channels} (the baseline cannot add it)")
        offset = bg[0].get("source_time")
        if offset is None:  # the baseline's "repeat ambient file until scape duration"
            offset = STRETCH
        else:
            offset = float(offset)
            start = int(offset * clip.sample_rate)
            if start < 0 or start + int(cfg.duration * clip.sample_rate) > clip.frames:
                raise ValueError(
                    f"{where}: noise file {clip.path} lasts {clip.seconds:.6g} s, shorter than "
                    f"source_time {offset:g} s + the {cfg.duration:g}-s mixture (the baseline's "
                    'renderer fails on this; "source_time": null stretches a short file)')
        out["noise"] = np.asarray(idx[0], np.int32)
        out["noise_offset"] = np.asarray(offset, np.float64)
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


def resolve_valid(
    valid_json: Path, split: Split, num_targets: int = labels_lib.MAX_SOURCES
) -> tuple[MixtureConfig, list[ValidEntry], list[Recipe]]:
    """Read validation metadata and resolve every mixture against ``split``.

    Returns the mixtures' shared config and, per mixture, its entry and recipe. One
    ``ValueError`` lists every problem (unreadable files, mixtures that differ in sr / duration /
    ref_db / dry window, files or rooms not in the split, noise the baseline could not render).
    """
    entries = read_valid_metadata(valid_json)
    if not entries:
        raise ValueError(f"{valid_json}: empty validation list")
    cfgs = {config_from_metadata(e.metadata) for e in entries}
    if len(cfgs) != 1:
        raise ValueError(f"{valid_json}: mixtures differ in sr/duration/ref_db/window")
    cfg = dataclasses.replace(cfgs.pop(), num_targets=num_targets)
    out, problems = [], []
    for e in entries:
        try:
            out.append(recipe_from_metadata(e, split, cfg))
        except (ValueError, KeyError, TypeError) as err:
            msg = str(err) if isinstance(err, ValueError) else f"malformed event field {err}"
            problems.append(msg if msg.startswith("validation mixture") else
                            f"validation mixture {e.name}: {msg}")
    if problems:
        raise ValueError(f"{valid_json}: {len(problems)} validation mixture(s) cannot be "
                         "rendered:\n  " + "\n  ".join(problems))
    return cfg, entries, out


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
            "snr": 0.0,
            "role": "background",
            "pitch_shift": None,
            "time_stretch": None,
            "event_position": None,
        })
    meta = {"config": config, "fg_events": fg, "bg_events": bg, "int_events": ints,
            "room": room.path.name}
    return meta, ref
