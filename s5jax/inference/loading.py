"""Models for inference from any path: an s5jax model directory, a training work directory
(its best checkpoint) or an official PyTorch checkpoint (converted in memory)."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from s5jax import modeldir
from s5jax.convert import separator as convert_separator
from s5jax.convert import tagger as convert_tagger
from s5jax.inference.pipeline import S5Pipeline
from s5jax.models import separator as separator_lib
from s5jax.models import tagger as tagger_lib
from s5jax.training import checkpoint

TORCH_SUFFIXES = (".ckpt", ".pth", ".pt")


def _read(path: str | os.PathLike, convert_path: Callable, names: Collection[str], what: str,
          ) -> tuple[ml_collections.ConfigDict, Any, bool]:
    """``(model_config, variables, converted)``."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in TORCH_SUFFIXES:
        return (*convert_path(p), True)
    if not p.exists():
        raise ValueError(f"{p}: no such {what} checkpoint or model directory")
    return (*checkpoint.load_any(p, names), False)


def trained_task(path: str | os.PathLike | None) -> str | None:
    """The ``config.task`` (challenge edition) a model was trained for, where ``path`` tells: a
    model directory exported by training (its ``run.json``, wherever it was moved), a training
    work directory or its ``model/`` (read from the run's config file); ``None`` otherwise (a
    converted model, an official checkpoint, or a model exported before ``run.json``)."""
    if path is None:
        return None
    p = Path(path).absolute()
    run = modeldir.read_run(p) if modeldir.is_model_dir(p) else {}
    if run:
        return run["task"]
    for run in (p, p.parent if p.name == checkpoint.MODEL_DIR else None):
        if run is not None and checkpoint.is_workdir(run):
            return (checkpoint.read_train_config(run) or {}).get("task")
    return None


def check_variables(model: Any, variables: Any, init_args: tuple, where: str | os.PathLike,
                    ) -> None:
    """``ValueError`` naming ``where`` unless ``variables`` have exactly the parameters and
    shapes ``model.init(key, *init_args)`` creates (a folder whose config.json and variables/
    come from different models would otherwise fail deep inside Flax)."""
    want = jax.eval_shape(lambda: model.init(jax.random.key(0), *init_args, train=False))
    problems = modeldir.variable_problems(want, variables)
    if problems:
        raise ValueError(f"{where}: the model config does not match the stored variables ("
                         + "; ".join(problems) + "); config and weights come from different "
                         "models")


def load_separator_any(path: str | os.PathLike):
    """``(model, variables, model_config)`` of a separator at ``path`` (any of the three)."""
    cfg, variables, converted = _read(path, convert_separator.convert_path,
                                      separator_lib.NAMES, "separator")
    model = separator_lib.build_separator(cfg)
    if not converted:
        labels = jnp.zeros((1, int(cfg.get("slots", 3))), jnp.int32)
        check_variables(model, variables, (jnp.zeros((1, 4, 3200)), labels), path)
    return model, variables, cfg


def load_tagger_any(path: str | os.PathLike):
    """``(model, variables, model_config)`` of a tagger at ``path`` (any of the three)."""
    cfg, variables, converted = _read(path, convert_tagger.convert_path, tagger_lib.NAMES,
                                      "tagger")
    model = tagger_lib.build_tagger(cfg)
    if not converted:
        check_variables(model, variables, (jnp.zeros((1, 4, 3200)),), path)
    return model, variables, model.config


def load_pipeline(tagger: str | os.PathLike | None = None,
                  separator: str | os.PathLike | None = None, **kwargs: Any) -> S5Pipeline:
    """An ``S5Pipeline`` from two paths; ``tagger=None`` gives an oracle-label-only pipeline.
    ``kwargs`` go to ``S5Pipeline``."""
    if separator is None:
        raise ValueError("a separator checkpoint is required")
    smodel, svars, _ = load_separator_any(separator)
    tmodel, tvars, _ = load_tagger_any(tagger) if tagger is not None else (None, None, None)
    return S5Pipeline(tmodel, tvars, smodel, svars, **kwargs)
