"""Model directories: one format for converted and trained models.

A model directory holds ``config.json`` (the model's ``ConfigDict``, i.e. ``config.model``) and
``variables/`` (an Orbax PyTree checkpoint of ``{"params": ..., "batch_stats": ...}``).
``python -m s5jax.convert`` writes one, training exports one (``<workdir>/model``),
``load_separator`` / ``load_tagger`` and the inference layer read them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / VARIABLES_DIR).is_dir()


def save_model(directory: str | os.PathLike, model_config: ml_collections.ConfigDict,
               variables: Any, *, overwrite: bool = False) -> Path:
    """Write ``variables`` and ``model_config`` to ``directory`` atomically.

    Everything is written into a temporary sibling directory that is renamed into place, so an
    interrupted save leaves no half-written model behind.
    """
    out = Path(directory).absolute()
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: output directory already exists (pass overwrite=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / VARIABLES_DIR, jax.tree.map(np.asarray, variables))
        ckptr.wait_until_finished()
        (tmp / CONFIG_FILE).write_text(model_config.to_json(indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(directory: str | os.PathLike, names: Collection[str] | None = None,
               ) -> tuple[ml_collections.ConfigDict, Any]:
    """``(model_config, variables)`` of a model directory; with ``names``, its config's
    ``name`` must be one of them."""
    path = Path(directory).absolute()
    if not is_model_dir(path):
        raise ValueError(
            f"{path}: not an s5jax model directory (expected {CONFIG_FILE} and {VARIABLES_DIR}/)")
    try:
        config = ml_collections.ConfigDict(json.loads((path / CONFIG_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / CONFIG_FILE}: invalid JSON ({e})") from e
    check_name(config, names, path)
    return config, ocp.StandardCheckpointer().restore(path / VARIABLES_DIR)


def check_name(config: ml_collections.ConfigDict, names: Collection[str] | None,
               where: str | os.PathLike) -> None:
    """``ValueError`` naming ``where`` unless ``config.name`` is in ``names`` (None: any)."""
    if names is not None and config.get("name") not in names:
        raise ValueError(f"{where}: holds a {config.get('name')!r} model (expected one of "
                         f"{sorted(names)})")
