"""Training work directories: ``<workdir>/train_config.json`` + ``<workdir>/checkpoints/<step>/``
(Orbax items ``state`` and ``data``), and ``load_any``, which reads the best checkpoint of a work
directory as a model (model directories themselves are ``s5jax.modeldir``).

``train_config.json`` is the config the run started with and is never rewritten once the run has
a checkpoint; a run resumed at step ``N`` with a changed config (only what
``train.allow_config_change`` permits) writes ``train_config.<N>.json``, the config from step
``N`` on. ``read_train_config`` returns the latest of them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from s5jax import modeldir
from s5jax.atomic import write_atomic

TRAIN_CONFIG_FILE = "train_config.json"
CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"  # a run's exported model directory
STATE_ITEM, DATA_ITEM = "state", "data"
ORBAX_METADATA = "_CHECKPOINT_METADATA"  # written by Orbax when a checkpoint is finished


class _ExpectedOrbaxWarnings(logging.Filter):
    """Drops the Orbax warnings that report what this module asks for on purpose, so that users
    are not alarmed by them at every run: a save without metrics while a best metric is tracked
    (the SIGTERM save, checkpoints between validations: they count only as "latest",
    ``keep_checkpoints_without_metrics=False``), opening a work directory read-only (evaluate,
    export, the benchmarks' resume checks), and reading the array metadata of a checkpoint's
    ``state`` item (``restore_raw_state``: Orbax looks there for the step's own metadata file,
    which lives one folder up)."""

    EXPECTED = ("did not provide metrics", "read_only=True, setting save_interval_steps=0",
                "Given directory is read only", "Metadata file does not exist")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.EXPECTED)


logging.getLogger("absl").addFilter(_ExpectedOrbaxWarnings())


def is_workdir(path: str | os.PathLike) -> bool:
    """True if ``path`` looks like a training work directory: a config file (as training
    reads them, :func:`config_files`) and ``checkpoints/``."""
    p = Path(path)
    return bool(config_files(p)) and (p / CHECKPOINTS_DIR).is_dir()


def config_files(workdir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, file)`` of ``train_config.json`` (step 0) and every ``train_config.<N>.json``,
    by step."""
    out = []
    for p in Path(workdir).glob("train_config*.json"):
        middle = p.name[len("train_config"):-len(".json")]
        if middle == "":
            out.append((0, p))
        elif middle[1:].isdigit() and middle[0] == ".":
            out.append((int(middle[1:]), p))
    return sorted(out)


def read_train_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict | None:
    """The training config in force at the end of ``workdir`` (its latest config file; ``None``
    if there is none)."""
    files = config_files(workdir)
    if not files:
        return None
    f = files[-1][1]
    try:
        return ml_collections.ConfigDict(json.loads(f.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: invalid JSON ({e})") from e


def write_train_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict,
                       step: int = 0) -> Path:
    """Write ``config`` atomically as ``train_config.json`` (a new run, ``step`` 0) or as
    ``train_config.<step>.json`` (the config of a run resumed at ``step`` with changes)."""
    f = Path(workdir) / (TRAIN_CONFIG_FILE if step == 0 else f"train_config.{step}.json")
    f.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(f, config.to_json(indent=2))


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """Steps of the finished checkpoints in ``workdir`` (Orbax renames a checkpoint to its step
    number only once it is complete), ascending."""
    d = Path(workdir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    steps = []
    for p in d.iterdir():
        if not (p.name.isdigit() and p.is_dir()):
            continue  # Orbax's temporary folders, the user's notes
        # A folder named like a step that Orbax did not finish (or write: "0004") would be
        # taken for the latest checkpoint here while Orbax skips it: refused, named.
        if p.name != str(int(p.name)) or not (p / ORBAX_METADATA).is_file() \
                or not (p / STATE_ITEM).is_dir():
            raise ValueError(f"{p}: not a complete checkpoint (Orbax writes <step>/ with "
                             f"{ORBAX_METADATA} and {STATE_ITEM}/); move it out of "
                             f"{CHECKPOINTS_DIR}/")
        steps.append(int(p.name))
    return sorted(steps)


class CheckpointManager:
    """Orbax manager for a training work directory.

    Each checkpoint holds the ``TrainState`` pytree (item ``state``) and, when given, the data
    iterator's ``get_state()`` (item ``data``, JSON), written together and atomically by Orbax,
    asynchronously. The loader's iterator position is the same on every host (host ``p`` reads
    recipe ``i·P + p``), so the primary host's JSON serves all. Kept: the latest ``keep``
    checkpoints plus the best one by ``metrics[best_metric]`` (``best_mode`` ``"min"`` or
    ``"max"``); checkpoints saved without metrics only count as "latest".
    """

    def __init__(self, workdir: str | os.PathLike, *, keep: int = 3,
                 best_metric: str = "valid/loss", best_mode: str = "min",
                 read_only: bool = False, async_save: bool = True):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r}: expected 'min' or 'max'")
        if keep < 1:
            raise ValueError(f"keep={keep}: expected at least 1 checkpoint to keep")
        self.directory = Path(workdir).absolute() / CHECKPOINTS_DIR
        self.best_metric = best_metric

        def metric(m):
            return float(m[best_metric])

        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(n=keep),
            ocp.checkpoint_managers.BestN(
                get_metric_fn=metric, reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else policy,
            best_fn=metric,
            best_mode=best_mode,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """Best step by the metric, else the latest (``None`` if there is no checkpoint)."""
        best = self.manager.best_step()
        return best if best is not None else self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any = None,
             metrics: dict[str, float] | None = None, *, force: bool = True) -> bool:
        """Start an (async) save of ``state`` (+ iterator) at ``step``; ``metrics`` for "best"."""
        items = {STATE_ITEM: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA_ITEM] = ocp.args.JsonSave(_json_state(data_iterator.get_state()))
        clean = None
        if metrics is not None and self.best_metric in metrics:
            clean = {k: float(v) for k, v in metrics.items()}
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=clean,
                                 force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
        """Restore ``state`` (shaped/sharded like ``abstract_state``); the iterator in place.
        ``ValueError`` naming the checkpoint if it cannot be read into that structure."""
        items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items[DATA_ITEM] = ocp.args.JsonRestore()
        out = self._restore(step, ocp.args.Composite(**items), "does not fit this config or is "
                            "damaged")
        if data_iterator is not None:
            data_iterator.set_state(out[DATA_ITEM])
        return out[STATE_ITEM]

    def restore_raw_state(self, step: int) -> Any:
        """The saved ``state`` item as stored (no target structure needed), as host numpy arrays
        whatever the device count it was saved with (Orbax refuses to restore without a target
        into another topology; arrays committed to one device would clash with a batch sharded
        over several in evaluate); ``ValueError`` naming the checkpoint if it cannot be read."""
        why = "is damaged or incomplete"
        try:
            stored = ocp.StandardCheckpointer().metadata(
                self.directory / str(step) / STATE_ITEM).item_metadata
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                                  stored)
        except Exception as e:  # a damaged checkpoint, named as _restore names it
            raise self._unreadable(step, why, e) from e
        args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target)})
        return jax.tree.map(np.asarray, self._restore(step, args, why)[STATE_ITEM])

    def restore_variables(self, step: int) -> dict:
        """``{"params", "batch_stats"}`` of checkpoint ``step`` (:meth:`restore_raw_state`): a
        model's variables, for its export or inference."""
        raw = self.restore_raw_state(step)
        return {"params": raw["params"], "batch_stats": raw.get("batch_stats", {})}

    def _restore(self, step: int, args: Any, why: str) -> Any:
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:  # Orbax, TensorStore and JSON errors of a damaged checkpoint
            raise self._unreadable(step, why, e) from e

    def _unreadable(self, step: int, why: str, e: Exception) -> ValueError:
        return ValueError(f"{self.directory}/{step}: checkpoint {why} "
                          f"({type(e).__name__}: {str(e)[:300]})")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _json_state(state: Any) -> Any:
    """Grain iterator states are JSON-able dicts; check early with a clear message."""
    try:
        json.dumps(state)
    except TypeError as e:
        raise ValueError(f"data iterator state is not JSON-serialisable ({e})") from e
    return state


def validation_chooses_model(config: ml_collections.ConfigDict) -> bool:
    """Whether a run's validation may choose its model: not when it validates on the test
    soundscapes (``data.valid_split = "test"``), the set it reports on."""
    return config.get("data", {}).get("valid_split", "valid") != "test"


def model_step(mgr: CheckpointManager, config: ml_collections.ConfigDict) -> int | None:
    """The checkpoint that is a run's model (exported, or read from its work directory): the
    best by ``train.best_metric``, else the latest; always the latest where
    :func:`validation_chooses_model` says no (``None``: no checkpoint)."""
    return mgr.best_step() if validation_chooses_model(config) else mgr.latest_step()


def load_any(path: str | os.PathLike, names: Collection[str] | None = None,
             ) -> tuple[ml_collections.ConfigDict, Any]:
    """``(model_config, variables)`` of a model directory, or of a training work directory (its
    checkpoint :func:`model_step`); ``names`` as ``modeldir.load_model``."""
    path = Path(path).absolute()
    if modeldir.is_model_dir(path):
        return modeldir.load_model(path, names)
    if not is_workdir(path):
        raise ValueError(
            f"{path}: not an s5jax model directory (expected {modeldir.CONFIG_FILE} and "
            f"{modeldir.VARIABLES_DIR}/) nor a training work directory (expected "
            f"{TRAIN_CONFIG_FILE} and {CHECKPOINTS_DIR}/)")
    config = read_train_config(path)
    modeldir.check_name(config.model, names, path)
    mgr = CheckpointManager(
        path, best_metric=config.train.get("best_metric", "valid/loss"),
        best_mode=config.train.get("best_mode", "min"), read_only=True,
    )
    try:
        step = model_step(mgr, config)
        if step is None:
            raise ValueError(f"{path}: training work directory without any checkpoint yet")
        variables = mgr.restore_variables(step)
    finally:
        mgr.close()
    return ml_collections.ConfigDict(config.model.to_dict()), variables
