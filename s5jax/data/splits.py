"""Validation metadata and test soundscapes for the embedded dataset.

``write_splits(root, seed, scale)`` draws mixtures from the dataset's ``valid`` split (sounds,
interferers, noise and rooms never used by training recipes, which come from ``train``) and writes:

* ``metadata/valid.json`` (list of ``{metadata_path, ref_event}``) and
  ``metadata/valid/<name>.json`` in the baseline's per-mixture format (spec §2.7; directories in
  ``config`` are relative to the dataset root, ``source_file`` relative to the event directory,
  ``room`` a basename) — rendered on access by the loader;
* ``test/soundscape/<name>.wav`` (R-channel float32 WAV) and
  ``test/oracle_target/<name>_<Label>.wav`` (mono dry targets), rendered once with the float64
  reference renderer, plus the metadata that renders them (``metadata/test.json`` and
  ``metadata/test/<name>.json``, the format of the validation metadata), so the official
  SpatialScaper-based renderer can re-render the test set for comparison. Test mixtures are
  different draws (another seed stream) from the same held-out ``valid`` material.

Mixture length: 4 s for ``small`` (keeps the smoke runs quick), 10 s for ``full``.

``task="dcase2026"`` writes the DCASE 2026 layout instead (mixtures drawn with the 2026 tagger
rules, ``recipes.task_config("dcase2026", "tagger")``: 0–3 targets, repeats):

* ``metadata/valid.json`` and ``metadata/test.json``, lists of ``{"metadata_path": P}`` with
  ``P`` = ``valid/valid_NNNN.json`` / ``test/soundscape_NNNN.json``, each a SpAudSyn
  ``generate_metadata`` JSON (:mod:`s5jax.data.spaudsyn`; folders relative to the root);
* ``synthesized/test/soundscape/soundscape_NNNN.wav`` (R-channel) and
  ``synthesized/test/oracle_target/soundscape_NNNN_<i>_<Label>.wav`` (mono), all float32 (16-bit
  PCM would lose ~20 dB at ref_db −55), ``i`` the event's index in ``fg_events`` after a stable
  sort by ``event_time`` (the official output slot); a mixture without targets has no oracle
  file. Both are rendered from the metadata as written (resolved back by
  ``spaudsyn.resolve_valid``), with the float64 reference and SpAudSyn's rules.

Each split holds at least one mixture without targets and one with a repeated class: its
mixtures are the first recipe indices of its seed stream, except that the first index with no
target and the first with a repeat are taken in if the first ones have none.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from s5jax import labels as labels_lib
from s5jax.atomic import write_atomic
from s5jax.audio import wav
from s5jax.data import catalog as catalog_lib
from s5jax.data import loader, recipes, spaudsyn, synth

SIZES = {"small": dict(valid=6, test=6, duration=4.0), "full": dict(valid=100, test=100,
                                                                    duration=10.0)}
_TEST_STREAM = 1_000_003  # test recipes use seed + this, so they differ from validation draws


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1))


def write_splits(root: Path, seed: int, scale: str, task: str = "dcase2025") -> None:
    """Write validation metadata and test soundscapes for the dataset at ``root``."""
    if scale not in SIZES:
        raise ValueError(f"scale {scale!r}, expected one of {sorted(SIZES)}")
    if task == "dcase2026":
        return _write_splits_2026(Path(root), seed, scale)
    root = Path(root)
    size = SIZES[scale]
    cat = catalog_lib.scan(root, splits=("valid",))
    split = cat.splits["valid"]
    cfg = recipes.MixtureConfig(duration=size["duration"])
    layout = loader.split_layout(split, cfg)

    listing = []
    for i in range(size["valid"]):
        name = f"valid_{i:04d}"
        r = recipes.make_recipe(split, i, seed, cfg)
        meta, ref = recipes.recipe_to_metadata(r, split, "valid", cfg)
        _write_json(root / "metadata" / "valid" / f"{name}.json", meta)
        listing.append({"metadata_path": f"valid/{name}.json", "ref_event": ref})
    _write_json(root / "metadata" / "valid.json", listing)

    (root / "test" / "soundscape").mkdir(parents=True, exist_ok=True)
    (root / "test" / "oracle_target").mkdir(parents=True, exist_ok=True)
    listing = []
    for i in range(size["test"]):
        name = f"soundscape_{i:04d}"
        r = recipes.make_recipe(split, i, seed + _TEST_STREAM, cfg)
        meta, ref = recipes.recipe_to_metadata(r, split, "valid", cfg)
        _write_json(root / "metadata" / "test" / f"{name}.json", meta)
        listing.append({"metadata_path": f"test/{name}.json", "ref_event": ref})
        item = loader.read_item(r, split, cfg, layout, dtype=np.float64)
        mix, dry = synth.render_reference(
            item, length=cfg.frames, num_targets=cfg.num_targets, sr=cfg.sr,
            window_ms=cfg.dry_window_ms,
        )
        wav.write(root / "test" / "soundscape" / f"{name}.wav", mix.astype(np.float32),
                  sample_rate=cfg.sr)
        for s, c in enumerate(item["labels"]):
            if c >= 0:
                label = labels_lib.CLASSES[int(c)]
                wav.write(root / "test" / "oracle_target" / f"{name}_{label}.wav",
                          dry[s : s + 1].astype(np.float32), sample_rate=cfg.sr)
    _write_json(root / "metadata" / "test.json", listing)


def _has_repeat(r: recipes.Recipe, s: int) -> bool:
    c = r.cls[:s][r.active[:s]]
    return len(set(c.tolist())) < len(c)


def pick_indices(split, seed: int, cfg: recipes.MixtureConfig, count: int) -> list[int]:
    """Recipe indices of a 2026 split: ``0..count−1``, with the first index drawing no target
    and the first drawing a repeated class taken in (in place of the last ones) if missing."""
    s = cfg.num_targets
    tests = (lambda r: not r.active[:s].any(), lambda r: _has_repeat(r, s))
    first = []
    for want in tests:
        i = 0
        while not want(recipes.make_recipe(split, i, seed, cfg)):
            i += 1
            if i > 10_000:
                raise ValueError(f"no mixture of the kind needed in 10 000 draws (seed {seed})")
        first.append(i)
    chosen = sorted(set(first))
    rest = [i for i in range(count + len(chosen)) if i not in chosen]
    return sorted(chosen + rest[: count - len(chosen)])


def _write_splits_2026(root: Path, seed: int, scale: str) -> None:
    size = SIZES[scale]
    split = catalog_lib.scan(root, splits=("valid",), task="dcase2026").splits["valid"]
    cfg = recipes.task_config("dcase2026", "tagger", size["duration"])
    listings = {}
    for kind, stream, prefix in (("valid", seed, "valid"), ("test", seed + _TEST_STREAM,
                                                             "soundscape")):
        listing = []
        for k, i in enumerate(pick_indices(split, stream, cfg, size[kind])):
            meta = spaudsyn.recipe_to_spaudsyn(recipes.make_recipe(split, i, stream, cfg), split,
                                               "valid", cfg)
            path = f"{kind}/{prefix}_{k:04d}.json"
            _write_json(root / "metadata" / path, meta)
            listing.append({"metadata_path": path})
        listings[kind] = root / "metadata" / f"{kind}.json"
        _write_json(listings[kind], listing)

    test = root / "synthesized" / "test"
    (test / "soundscape").mkdir(parents=True, exist_ok=True)
    (test / "oracle_target").mkdir(parents=True, exist_ok=True)
    mcfg, entries, rs = spaudsyn.resolve_valid(listings["test"], split)
    layout = loader.split_layout(split, mcfg)
    for entry, r in zip(entries, rs, strict=True):
        item = loader.read_item(r, split, mcfg, layout, dtype=np.float64)
        mix, dry = synth.render_reference(
            item, length=mcfg.frames, num_targets=mcfg.num_targets,
            sr=mcfg.sr, window_ms=mcfg.dry_window_ms, task=mcfg.task,
        )
        wav.write(test / "soundscape" / f"{entry.name}.wav", mix.astype(np.float32),
                  sample_rate=mcfg.sr)
        for i, c in enumerate(item["labels"]):
            if c >= 0:
                wav.write(test / "oracle_target" / f"{entry.name}_{i}_{labels_lib.CLASSES[c]}.wav",
                          dry[i : i + 1].astype(np.float32), sample_rate=mcfg.sr)


def describe(scale: str) -> dict:
    """Sizes used for ``scale`` (for docs and tests)."""
    return dataclasses.asdict(recipes.MixtureConfig(duration=SIZES[scale]["duration"])) | SIZES[
        scale
    ]
