"""SpAudSyn mixture metadata (DCASE 2026) ↔ recipes.

The DCASE 2026 baseline describes each validation (and test) mixture by the JSON that
``SpAudSyn.generate_metadata`` writes and ``SpAudSyn.from_metadata`` reads (``DatasetS3`` in
``metadata`` mode), listed in a ``valid.json`` of ``{"metadata_path": P}`` entries (``P``
relative to the listing's folder, no ``ref_event``)::

    {"config": {"duration", "sr", "max_event_overlap", "max_event_dur", "ref_db",
                "foreground_dir", "background_dir", "interference_dir", "room_config",
                "verbose"},
     "fg_events":  [{"label", "source_file", "source_time", "event_time", "event_duration",
                     "event_position": [[x, y, z]], "snr", "role": "foreground"}, …],
     "bg_events":  [{"label": null, "source_file", "source_time": int | null, "event_time": 0,
                     "event_duration", "event_position": null, "snr": 0,
                     "role": "background"}],
     "int_events": [… "role": "interference"],
     "room": {"module": "src.modules.spatial_audio_synthesizer.room",
              "main": "SofaRoom.from_metadata",
              "args": {"metadata": {"sofa_path", "sr", "nchan", "nrir", "rir_len",
                                    "direct_range_ms": [6, 50]}}}}

``source_file`` is relative to the event's directory (``<Class>/[<sub-folders>/]<file>.wav``,
noise ``[<sub-folders>/]<file>.wav``); ``event_position`` must be one of the room's SOFA
measurements (``SofaRoom.synthesize`` looks it up with ``np.isclose(atol=1e-6)``, it does not
take the nearest); a null background ``source_time`` loops the whole file (``np.tile``).
The mixture's slots are its ``fg_events`` after a stable sort by ``event_time`` (what
``synthesize`` returns; metadata mode does not shuffle), silence last; the DCASE 2026 test set
names its oracle files by that index, ``<soundscape>_<i>_<Label>.wav``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from s5jax import labels as labels_lib
from s5jax.data import recipes, sofa
from s5jax.data.catalog import Room, Split
from s5jax.data.recipes import ClipIndex, MixtureConfig, Recipe, ValidEntry

TASK = "dcase2026"
ROOM_MODULE = "src.modules.spatial_audio_synthesizer.room"  # where the baseline puts SpAudSyn
POSITION_ATOL = 1e-6  # SofaRoom.synthesize: np.isclose(all_positions, position, atol=1e-6)


def is_spaudsyn(meta: Mapping) -> bool:
    """True for a SpAudSyn per-mixture JSON (its ``room`` is a module/main/args object)."""
    room = meta.get("room")
    return isinstance(room, Mapping) and "args" in room


def is_spaudsyn_listing(valid_json: Path) -> bool:
    """True if the first mixture of a listing is SpAudSyn metadata (False if unreadable)."""
    try:
        first = json.loads(Path(valid_json).read_text())[0]["metadata_path"]
        meta = json.loads((Path(valid_json).parent / first).read_text())
    except (OSError, ValueError, LookupError, TypeError):
        return False
    return isinstance(meta, Mapping) and is_spaudsyn(meta)


def _room_info(meta: Mapping) -> Mapping:
    return meta["room"]["args"]["metadata"]


def config_from_spaudsyn(meta: Mapping, base: MixtureConfig | None = None) -> MixtureConfig:
    """The mixture config of a SpAudSyn JSON: sr, duration, ref_db, the room's dry window."""
    base = base or recipes.task_config(TASK)
    c = meta["config"]
    win = _room_info(meta).get("direct_range_ms") or base.dry_window_ms
    return dataclasses.replace(
        base, task=TASK, sr=int(c["sr"]), duration=float(c["duration"]),
        ref_db=float(c["ref_db"]), dry_window_ms=(float(win[0]), float(win[1])),
    )


def _exact_position(room: Room, xyz: Sequence, where: str) -> int:
    p = np.asarray(xyz, np.float64).reshape(-1)
    hits = np.nonzero(np.all(np.isclose(np.asarray(room.positions, np.float64), p,
                                        atol=POSITION_ATOL), axis=1))[0] if p.size == 3 else []
    if len(hits) == 0:
        raise ValueError(f"{where}: event_position {np.asarray(xyz).tolist()} is not a "
                         f"measurement of {room.path.name} (SpAudSyn takes the exact position)")
    return int(hits[0])


def recipe_from_spaudsyn(entry: ValidEntry, split: Split, cfg: MixtureConfig | None = None,
                         index: tuple[ClipIndex, ClipIndex] | None = None) -> Recipe:
    """The recipe a SpAudSyn JSON describes: target slots = ``fg_events`` sorted by
    ``event_time`` (stable), silence last; ``ValueError`` naming the mixture otherwise."""
    meta = entry.metadata
    cfg = cfg or config_from_spaudsyn(meta)
    where = f"validation mixture {entry.name}"
    if not is_spaudsyn(meta):
        raise ValueError(f"{where}: room {meta.get('room')!r} is not a SpAudSyn room object "
                         "(module/main/args)")
    info = _room_info(meta)
    room_name = Path(str(info["sofa_path"])).name
    rooms = {r.path.name: i for i, r in enumerate(split.rooms)}
    if room_name not in rooms:
        raise ValueError(f"{where}: room {room_name!r} is not in the catalog split")
    room = split.rooms[rooms[room_name]]
    if "sr" in info and float(info["sr"]) != float(room.sample_rate):
        raise ValueError(f"{where}: room metadata says sr {info['sr']}, {room.path} holds "
                         f"{room.sample_rate} Hz")
    out = recipes.recipe_arrays(cfg)
    out["room"] = np.asarray(rooms[room_name], np.int32)
    targets, interference = index or (ClipIndex(split.targets), ClipIndex(split.interference))

    fg = sorted(meta["fg_events"], key=lambda e: float(e["event_time"]))
    if len(fg) > cfg.num_targets:
        raise ValueError(f"{where}: {len(fg)} target events, at most {cfg.num_targets} supported")
    for slot, ev in enumerate(fg):
        name, f = targets.find(ev["source_file"], where)
        if ev.get("label") != name:
            raise ValueError(f"{where}: event label {ev.get('label')!r} but its source_file "
                             f"{ev['source_file']!r} is in the {name} folder")
        recipes.place_event(out, slot, ev, split.targets[name][f], labels_lib.class_index(name),
                            f, _exact_position(room, ev["event_position"], where), cfg, where)
    ints = sorted(meta.get("int_events", []), key=lambda e: float(e["event_time"]))
    if len(ints) > cfg.num_interferers:
        raise ValueError(f"{where}: {len(ints)} interferers, at most {cfg.num_interferers}")
    i_names = recipes.interference_classes(split)
    for j, ev in enumerate(ints):
        name, f = interference.find(ev["source_file"], where)
        recipes.place_event(out, cfg.num_targets + j, ev, split.interference[name][f],
                            i_names.index(name), f,
                            _exact_position(room, ev["event_position"], where), cfg, where)
    recipes.place_noise(out, meta.get("bg_events", []), split, room, cfg, where)
    return Recipe(**out)


def resolve_valid(
    valid_json: Path, split: Split, num_targets: int = labels_lib.MAX_SOURCES
) -> tuple[MixtureConfig, list[ValidEntry], list[Recipe]]:
    """Read a SpAudSyn listing and resolve every mixture against ``split`` (one ``ValueError``
    listing every problem), as :func:`s5jax.data.recipes.resolve_valid` does for 2025."""
    return recipes.resolve_entries(valid_json, split, num_targets, config_from_spaudsyn,
                                   recipe_from_spaudsyn)


def recipe_to_spaudsyn(recipe: Recipe, split: Split, split_name: str,
                       cfg: MixtureConfig) -> dict:
    """The SpAudSyn ``generate_metadata`` JSON of a recipe drawn from ``split`` (named
    ``split_name`` under the dataset root, to which every folder in it is relative)."""
    room = split.rooms[int(recipe.room)]
    i_names = recipes.interference_classes(split)
    window = [cfg.dry_window_ms[0], cfg.dry_window_ms[1]]
    window = [int(v) if float(v).is_integer() else v for v in window]
    config = {  # SpAudSyn.__init__'s arguments, in their order
        "duration": cfg.duration,
        "sr": cfg.sr,
        "max_event_overlap": 3,
        "max_event_dur": cfg.duration,
        "ref_db": cfg.ref_db,
        "foreground_dir": f"sound_event/{split_name}",
        "background_dir": f"noise/{split_name}",
        "interference_dir": f"interference/{split_name}" if i_names else None,
        "room_config": {"module": ROOM_MODULE, "main": "SofaRoom",
                        "args": {"path": f"room_ir/{split_name}", "direct_range_ms": window}},
        "verbose": False,
    }
    positions = np.asarray(room.positions, np.float64)

    def event(slot: int, clip, label: str, role: str) -> dict:
        return {
            "label": label,
            "source_file": "/".join(clip.key),
            "source_time": float(recipe.source_time[slot]),
            "event_time": float(recipe.onset[slot]),
            "event_duration": float(recipe.duration[slot]),
            "event_position": [[float(v) for v in positions[int(recipe.position[slot])]]],
            "snr": float(recipe.snr[slot]),
            "role": role,
        }

    fg = []
    for s in range(cfg.num_targets):
        if recipe.active[s]:
            name = labels_lib.CLASSES[int(recipe.cls[s])]
            fg.append(event(s, split.targets[name][int(recipe.file[s])], name, "foreground"))
    ints = []
    for s in range(cfg.num_targets, cfg.num_events):
        if recipe.active[s]:
            name = i_names[int(recipe.cls[s])]
            ints.append(event(s, split.interference[name][int(recipe.file[s])], name,
                              "interference"))
    bg = []
    if int(recipe.noise) >= 0:
        clip = split.noise[int(recipe.noise)]
        stretch = float(recipe.noise_offset) == recipes.STRETCH
        snr = float(recipe.noise_snr)
        bg_snr = int(snr) if snr.is_integer() else snr  # the generator writes the integer 0
        bg.append({
            "label": None,
            "source_file": "/".join(clip.key),
            "source_time": None if stretch else int(recipe.noise_offset),
            "event_time": 0,
            "event_duration": cfg.duration,
            "event_position": None,
            "snr": bg_snr,
            "role": "background",
        })
    info = sofa.open_room(room.path)
    room_info = {
        "sofa_path": f"room_ir/{split_name}/{room.path.name}",
        "sr": info.sample_rate,
        "nchan": info.channels,
        "nrir": info.measurements,
        "rir_len": info.ir_frames,
        "direct_range_ms": window,
    }
    return {
        "config": config,
        # generate_metadata sorts both lists by event_time (stable).
        "fg_events": sorted(fg, key=lambda e: e["event_time"]),
        "bg_events": bg,
        "int_events": sorted(ints, key=lambda e: e["event_time"]),
        "room": {"module": ROOM_MODULE, "main": "SofaRoom.from_metadata",
                 "args": {"metadata": room_info}},
    }
