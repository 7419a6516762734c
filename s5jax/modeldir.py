"""Model directories: one format for converted and trained models.

A model directory holds ``config.json`` (the model's ``ConfigDict``, i.e. ``config.model``) and
``variables/`` (an Orbax PyTree checkpoint of ``{"params": ..., "batch_stats": ...}``). One
exported by training also holds ``run.json`` (``{"task": "dcase2026", "step": 1000}``): the
challenge edition its run was trained for, which sets the output names and the test set of
``separate`` and ``evaluate`` wherever the folder is moved (the model config cannot say it: both
years' separators are the same network), and the checkpoint step it holds.
``python -m s5jax.convert`` writes one, training exports one (``<workdir>/model``),
``load_separator`` / ``load_tagger`` and the inference layer read them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from s5jax.atomic import Staging, existing_ancestor, write_atomic
from s5jax.cli import first_few

CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"
RUN_FILE = "run.json"  # optional: the edition and checkpoint step of a trained model


def variable_problems(want: Any, have: Any) -> list[str]:
    """How the variables ``have`` differ from ``want`` (a model's ``init`` output or its
    ``eval_shape``) in their ``params`` and ``batch_stats``: missing, unexpected and mis-shaped
    leaves, a few of each named; empty if they fit."""
    problems = []
    for col in ("params", "batch_stats"):
        w = traverse_util.flatten_dict(dict(want.get(col, {}) or {}))
        h = traverse_util.flatten_dict(dict(have.get(col, {}) or {}))
        missing = sorted("/".join(k) for k in w if k not in h)
        extra = sorted("/".join(k) for k in h if k not in w)
        shapes = sorted(f"{'/'.join(k)} {tuple(np.shape(h[k]))} (expected "
                        f"{tuple(np.shape(w[k]))})"
                        for k in w if k in h and tuple(np.shape(h[k])) != tuple(np.shape(w[k])))
        for kind, items in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
            if items:
                problems.append(f"{kind} {col}: {first_few(items)}")
    return problems


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / VARIABLES_DIR).is_dir()


def not_a_model_dir(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not (only) an s5jax model directory, or None if it is one.

    ``--overwrite`` replaces a folder only when this is None: a model directory holds exactly
    ``config.json``, ``variables/`` and perhaps ``run.json``, so a folder with anything else in
    it is the user's.
    """
    p = Path(path)
    if not is_model_dir(p):
        return f"not an s5jax model directory (no {CONFIG_FILE} and {VARIABLES_DIR}/)"
    other = sorted(e.name for e in p.iterdir()
                   if e.name not in (CONFIG_FILE, VARIABLES_DIR, RUN_FILE))
    if other:
        shown = ", ".join(other[:3]) + (" …" if len(other) > 3 else "")
        return f"holds files that are not part of an s5jax model directory ({shown})"
    return None


def check_output(directory: str | os.PathLike, overwrite: bool) -> None:
    """``ValueError`` unless ``save_model(directory, overwrite=overwrite)`` may write there:
    call it before any work."""
    out = Path(directory)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out}: output directory already exists (pass --overwrite)")
        reason = not_a_model_dir(out)
        if reason is not None:
            raise ValueError(f"{out}: {reason}; --overwrite only replaces a model directory")
    elif out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    elif not existing_ancestor(out).is_dir():
        raise ValueError(f"{out}: cannot create a folder there ({existing_ancestor(out)} is a "
                         "file)")


def save_model(directory: str | os.PathLike, model_config: ml_collections.ConfigDict,
               variables: Any, *, overwrite: bool = False, run: dict | None = None) -> Path:
    """Write ``variables`` and ``model_config`` (and, for a trained model, ``run``: ``{"task":
    edition, "step": checkpoint step}`` into ``run.json``) to ``directory`` atomically.

    Everything is written into a temporary sibling directory that is renamed into place, so an
    interrupted save leaves no half-written model behind. An existing ``directory`` is replaced
    only with ``overwrite`` and only if it is an s5jax model directory (``not_a_model_dir``).
    """
    out = Path(directory).absolute()
    check_output(out, overwrite)
    with Staging() as staging:
        tmp = staging.stage(out, overwrite=overwrite, replace=not_a_model_dir)
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / VARIABLES_DIR, jax.tree.map(np.asarray, variables))
        ckptr.wait_until_finished()
        write_atomic(tmp / CONFIG_FILE, model_config.to_json(indent=2))
        if run is not None:
            write_atomic(tmp / RUN_FILE, json.dumps(run) + "\n")
        staging.commit()
    return out


def read_run(directory: str | os.PathLike) -> dict:
    """The ``run.json`` of a model directory exported by training: ``{"task": str, "step":
    int}``; ``{}`` where there is none (converted models, and models exported before it was
    written). ``ValueError`` naming the file if it is unreadable or its values are not those."""
    f = Path(directory) / RUN_FILE
    if not f.is_file():
        return {}
    try:
        run = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: invalid JSON ({e})") from e
    if not isinstance(run, dict):
        raise ValueError(f"{f}: expected a JSON object like {{\"task\": \"dcase2026\", "
                         f"\"step\": 1000}}, found {type(run).__name__}")
    if not isinstance(run.get("task"), str):
        raise ValueError(f"{f}: 'task' is {run.get('task')!r}; expected a name like 'dcase2026'")
    if "step" in run and (not isinstance(run["step"], int) or isinstance(run["step"], bool)):
        raise ValueError(f"{f}: 'step' is {run['step']!r}; expected a checkpoint step")
    return run


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
