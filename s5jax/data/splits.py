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
from s5jax.data import loader, recipes, synth

SIZES = {"small": dict(valid=6, test=6, duration=4.0), "full": dict(valid=100, test=100,
                                                                    duration=10.0)}
_TEST_STREAM = 1_000_003  # test recipes use seed + this, so they differ from validation draws


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1))


def write_splits(root: Path, seed: int, scale: str) -> None:
    """Write validation metadata and test soundscapes for the dataset at ``root``."""
    if scale not in SIZES:
        raise ValueError(f"scale {scale!r}, expected one of {sorted(SIZES)}")
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
            item, length=cfg.frames, num_targets=cfg.num_targets, ref_db=cfg.ref_db, sr=cfg.sr,
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


def describe(scale: str) -> dict:
    """Sizes used for ``scale`` (for docs and tests)."""
    return dataclasses.asdict(recipes.MixtureConfig(duration=SIZES[scale]["duration"])) | SIZES[
        scale
    ]
