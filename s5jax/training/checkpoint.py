"""Model files: one format for converted and trained models.

A *model directory* holds ``config.json`` (the model's ``ConfigDict``, i.e. ``config.model``)
and ``variables/`` (an Orbax PyTree checkpoint of ``{"params": ..., "batch_stats": ...}``).
``python -m s5jax.convert`` writes one; training exports one; ``load_model`` reads either a model
directory or a training work directory (which the training loop extends below).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"


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
        host = jax.tree.map(np.asarray, variables)
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / VARIABLES_DIR, host)
        ckptr.wait_until_finished()
        (tmp / CONFIG_FILE).write_text(model_config.to_json(indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(directory: str | os.PathLike) -> tuple[ml_collections.ConfigDict, Any]:
    """Read ``(model_config, variables)`` from a model directory written by ``save_model``."""
    path = Path(directory).absolute()
    cfg_file, var_dir = path / CONFIG_FILE, path / VARIABLES_DIR
    if not cfg_file.is_file() or not var_dir.is_dir():
        raise ValueError(
            f"{path}: not an s5jax model directory (expected {CONFIG_FILE} and {VARIABLES_DIR}/)"
        )
    try:
        config = ml_collections.ConfigDict(json.loads(cfg_file.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: invalid JSON ({e})") from e
    variables = ocp.StandardCheckpointer().restore(var_dir)
    return config, variables
