"""Models for inference from any path: an s5jax model directory, a training work directory
(its best checkpoint) or an official PyTorch checkpoint (converted in memory)."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import ml_collections

from s5jax.convert import separator as convert_separator
from s5jax.convert import tagger as convert_tagger
from s5jax.inference.pipeline import S5Pipeline
from s5jax.models import separator as separator_lib
from s5jax.models import tagger as tagger_lib
from s5jax.training import checkpoint

TORCH_SUFFIXES = (".ckpt", ".pth", ".pt")


def _read(path: str | os.PathLike, convert_path: Callable, names: Collection[str], what: str,
          ) -> tuple[ml_collections.ConfigDict, Any]:
    p = Path(path)
    if p.is_file() and p.suffix.lower() in TORCH_SUFFIXES:
        return convert_path(p)
    if not p.exists():
        raise ValueError(f"{p}: no such {what} checkpoint or model directory")
    return checkpoint.load_any(p, names)


def load_separator_any(path: str | os.PathLike):
    """``(model, variables, model_config)`` of a separator at ``path`` (any of the three)."""
    cfg, variables = _read(path, convert_separator.convert_path, separator_lib.NAMES, "separator")
    return separator_lib.build_separator(cfg), variables, cfg


def load_tagger_any(path: str | os.PathLike):
    """``(model, variables, model_config)`` of a tagger at ``path`` (any of the three)."""
    cfg, variables = _read(path, convert_tagger.convert_path, tagger_lib.NAMES, "tagger")
    model = tagger_lib.build_tagger(cfg)
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
