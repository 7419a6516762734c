"""``train_and_evaluate(config, workdir)``: the whole training run.

Order matters: everything that can be checked without compiling (config values, device count,
dataset root, resume compatibility) is checked first, so a run that cannot work fails in
seconds with one clear ``ValueError``. Then: build model, optimiser, data; restore the latest
checkpoint of ``workdir`` if any (automatic resume, including the data iterator position); train
with periodic logging, validation and checkpoints; export the best (else last) model as a model
directory ``<workdir>/model`` readable by ``load_separator`` / ``load_tagger`` (the last when the
run validates on the test split, which must not choose the model it reports on).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from s5jax import labels as labels_lib
from s5jax import mesh as mesh_lib
from s5jax import metrics as metrics_lib
from s5jax import modeldir
from s5jax.atomic import existing_ancestor
from s5jax.data import catalog as catalog_lib
from s5jax.data import embedded, loader
from s5jax.data.recipes import task_config
from s5jax.models import remat as remat_lib
from s5jax.models.separator import build_separator, validate_config
from s5jax.models.tagger import (
    build_tagger,
    check_trainable,
    predict,
    tagger_config,
    trainable_mask,
)
from s5jax.training import checkpoint as ckpt_lib
from s5jax.training import heldout, optim, preemption, steps
from s5jax.training.logging import Logger, read_jsonl
from s5jax.training.state import TrainState, create_state

MODEL_DIR = ckpt_lib.MODEL_DIR
PRECISIONS = ("float32", "bfloat16")


def metric_names(task: str, edition: str = "dcase2025", head: str | None = None,
                 valid_split: str = "valid") -> tuple[str, ...]:
    """The validation metrics a run reports (and may select its best checkpoint by).

    Separators: loss, CA-SDRi (2025; oracle labels) or CAPI-SDRi (2026; the same pairing, now
    over repeated classes, empty mixtures unscored), mean SNR. Tagger: loss, mixture accuracy,
    and mAP (18 sigmoids) or source accuracy (slot head). Validating on the test split adds
    CA-SI-SDRi, the oracle-label SDRi and the scaled-mixture floor (``heldout.EXTRA_METRICS``).
    """
    if task == steps.SEPARATOR:
        sdri = "valid/capi_sdri" if edition == "dcase2026" else "valid/ca_sdri"
        extra = heldout.EXTRA_METRICS if valid_split == "test" else ()
        return ("valid/loss", sdri, "valid/snr", *extra)
    last = "valid/source_accuracy" if head == "slots" else "valid/map"
    return ("valid/loss", "valid/accuracy", last)


# Resuming a run (docs/training.md, "Work directory and resume"): config fields are compared with
# the run's latest train_config*.json. These define the parameters themselves: a change is never
# accepted (the checkpoints could not be restored).
RESUME_FIXED = ("model", "trainable")
# Model fields that do not define the parameters. How they start: a resumed run has them already,
# so a change is accepted (and recorded). How they train or compute (BatchNorm momentum, compute
# dtype): like optim.*, refused unless config.train.allow_config_change (next group).
RESUME_INIT_ONLY = ("model.head_init", "model.head_prior")
RESUME_MODEL_DYNAMICS = ("model.bn_momentum", "model.dtype")
# These change how a run is watched, not what its checkpoints mean: changes are accepted (and
# recorded in train_config.<step>.json).
RESUME_FREE = (
    "name", "train.log_every", "train.eval_every", "train.eval_at_end", "train.checkpoint_every",
    "train.keep", "train.progress", "train.audio_examples", "train.max_nonfinite",
    "train.allow_config_change", "train.remat", "data.num_workers", "data.prefetch",
    "data.valid_batch_size", "train.eval_at_start", "train.max_minutes", *RESUME_INIT_ONLY,
)
# Every other field (optim.*, train.num_steps, train.seed, train.best_metric, data.root,
# data.clip_seconds, data.seed, data.batch_size, data.valid_limit, init, precision, …) changes
# what the checkpoints mean or what comes next: refused unless config.train.allow_config_change.


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite steps."""


@dataclasses.dataclass
class Plan:
    """What validation found out; everything the build needs."""

    task: str
    catalog: Any  # s5jax.data.catalog.Catalog of the dataset root, scanned once
    devices: int
    resume: Resume
    init: dict | None = None  # variables of config.init, loaded once
    valid: Any = None  # loader.ValidBatches (metadata resolved up front) or, valid_split
    # "test", the checked data.testset.TestSet
    complete: bool = False  # finished and exported: nothing to do (no dataset scan)


@dataclasses.dataclass
class Resume:
    """What ``check_resume`` found in the work directory."""

    step: int | None = None  # latest finished checkpoint; None: the run starts from scratch
    changes: list[str] = dataclasses.field(default_factory=list)  # "field: old → new"


# ---------------------------------------------------------------------------------------------
# Validation (no compilation)


def _get(cfg: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if node is not None else None
    return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def _normalise(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _normalise(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_normalise(v) for v in x]
    return x


def check_model_config(task: str, model: ml_collections.ConfigDict) -> None:
    if task == steps.SEPARATOR:
        validate_config(model)
    else:
        tagger_config(**model.to_dict())


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, ml_collections.ConfigDict):
        node = node.to_dict()
    out: dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = _normalise(v)
    return out


def _under(key: str, fields: tuple[str, ...]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in fields)


def config_changes(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                   ) -> list[tuple[str, Any, Any]]:
    """``(field, saved value, new value)`` of every field both configs have and that differs
    (a field only one has comes from another s5jax version and is not compared)."""
    a, b = _flat(saved), _flat(config)
    return [(k, a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def _shown(changes: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in changes)


def check_workdir(workdir: Path, writable: bool = True) -> None:
    """``ValueError`` unless ``workdir`` is, or can be created as, a (``writable``) folder."""
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir}: exists and is not a folder")
    anc = existing_ancestor(workdir)
    if not anc.is_dir():
        raise ValueError(f"--workdir {workdir}: cannot create it ({anc} is a file)")
    if writable and not os.access(anc, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir}: {anc} is not writable")


def check_resume(config: ml_collections.ConfigDict, workdir: Path) -> Resume:
    """Whether ``workdir`` holds checkpoints to resume, and the config changes since; a
    ``ValueError`` listing the differing fields if they may not change (``RESUME_FIXED``, or
    any field outside ``RESUME_FREE`` without ``config.train.allow_config_change``)."""
    steps_done = ckpt_lib.checkpoint_steps(workdir)
    saved = ckpt_lib.read_train_config(workdir)
    if saved is None:
        if steps_done:
            raise ValueError(
                f"{workdir}: has {ckpt_lib.CHECKPOINTS_DIR}/ but no {ckpt_lib.TRAIN_CONFIG_FILE}; "
                "not a work directory written by s5jax.train (use another --workdir)"
            )
        return Resume()
    if not steps_done:
        return Resume()  # never reached a checkpoint: starts again from scratch
    changes = config_changes(saved, config)
    fixed = [c for c in changes if _under(c[0], RESUME_FIXED)
             and not _under(c[0], RESUME_INIT_ONLY + RESUME_MODEL_DYNAMICS)]
    if fixed:
        raise ValueError(f"{workdir}: cannot resume, its checkpoints are of another model: "
                         f"{_shown(fixed)} (use another --workdir)")
    meaning = [c for c in changes if not _under(c[0], RESUME_FREE)]
    if meaning and not config.train.get("allow_config_change", False):
        latest = ckpt_lib.config_files(workdir)[-1][1].name
        raise ValueError(
            f"{workdir}: cannot resume, the config differs from the run's ({latest}) in what "
            f"its checkpoints mean: {_shown(meaning)} (use another --workdir, the saved "
            "values, or --config.train.allow_config_change=true to continue with the change)")
    return Resume(step=steps_done[-1], changes=[_shown([c]) for c in changes])


def check_config(config: ml_collections.ConfigDict) -> str:
    """Check the values of ``config`` against this machine; returns the task.

    Reads no file (the dataset and ``config.init`` are checked by :func:`validate`) and compiles
    nothing: this is all ``python -m s5jax.train --dry_run`` does.
    """
    task = steps.task_of(config.model)
    check_model_config(task, config.model)
    if config.get("task") not in steps.EDITIONS:
        raise ValueError(f"config.task={config.get('task')!r}: expected one of {steps.EDITIONS}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"config.precision={config.precision!r}: expected one of {PRECISIONS}")
    if config.model.get("dtype") != config.precision:
        raise ValueError(
            f"config.precision={config.precision!r} but config.model.dtype="
            f"{config.model.get('dtype')!r}; set both (the bf16 preset does)"
        )
    n_dev, n_proc = jax.device_count(), jax.process_count()
    d, t = config.data, config.train
    for name, bs in (("data.batch_size", d.batch_size), ("data.valid_batch_size",
                                                         d.valid_batch_size)):
        if bs < 1 or bs % n_dev or bs % n_proc:
            raise ValueError(
                f"config.{name}={bs}: must be a positive multiple of the device count "
                f"({n_dev}) and of the process count ({n_proc})"
            )
    k = int(config.optim.get("accumulate", 1))
    if k < 1 or d.batch_size % (k * n_dev):
        raise ValueError(
            f"config.optim.accumulate={config.optim.get('accumulate')}: must be ≥ 1 and divide "
            f"data.batch_size={d.batch_size} into micro-batches that are multiples of the "
            f"device count ({n_dev})"
        )
    remat = t.get("remat", remat_lib.NONE)
    remat_lib.parse(remat)
    if task == steps.TAGGER and remat != remat_lib.NONE:
        raise ValueError(f"config.train.remat={remat!r}: only separators rematerialise blocks")
    for name in ("num_steps", "log_every", "eval_every", "checkpoint_every", "keep"):
        if int(t[name]) < 1:
            raise ValueError(f"config.train.{name}={t[name]}: expected ≥ 1")
    if t.get("max_minutes") is not None and not float(t.max_minutes) > 0:
        raise ValueError(f"config.train.max_minutes={t.max_minutes}: expected > 0 (or unset)")
    if d.num_workers < 0:
        raise ValueError(f"config.data.num_workers={d.num_workers}: expected ≥ 0")
    if t.best_mode not in ("min", "max"):
        raise ValueError(f"config.train.best_mode={t.best_mode!r}: expected 'min' or 'max'")
    split = d.get("valid_split", "valid")
    if split not in ("valid", "test"):
        raise ValueError(f"config.data.valid_split={split!r}: expected 'valid' or 'test'")
    if split == "test" and (config.task != "dcase2025" or config.model.get("head") == "slots"):
        raise ValueError("config.data.valid_split='test': only DCASE 2025 separators and taggers "
                         "(18-sigmoid head) validate on the test soundscapes (use 'valid')")
    names = metric_names(task, config.task, config.model.get("head"), split)
    if t.best_metric not in names:
        raise ValueError(f"config.train.best_metric={t.best_metric!r}: expected one of {names}")
    if task == steps.SEPARATOR and config.trainable != "all":
        raise ValueError(f"config.trainable={config.trainable!r}: separators train 'all'")
    if task == steps.TAGGER:
        check_trainable(config.trainable, int(config.model.depth))
    optim.check_config(config.optim)
    if int(t.get("max_nonfinite", 1)) < 1:
        raise ValueError(f"config.train.max_nonfinite={t.max_nonfinite}: expected ≥ 1")
    name = str(config.get("name", "run"))
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"config.name={name!r}: expected a plain folder name (the default "
                         "work directory is runs/<name>)")
    if d.clip_seconds <= 0:
        raise ValueError(f"config.data.clip_seconds={d.clip_seconds}: expected > 0")
    if d.valid_limit is not None and d.valid_limit < 1:
        raise ValueError(f"config.data.valid_limit={d.valid_limit}: expected ≥ 1 (or unset: all)")
    return task


def validate(config: ml_collections.ConfigDict, workdir: Path) -> Plan:
    """Check ``config`` against this machine, the dataset and ``workdir``; no compilation."""
    task = check_config(config)
    check_workdir(workdir, writable=False)  # a finished run may be read-only: it says so below
    n_dev, d = jax.device_count(), config.data
    resume = check_resume(config, workdir)
    # A run that resumes restores everything from its checkpoint: its config.init may be gone.
    init = load_init(config, task) if config.get("init") is not None and resume.step is None \
        else None
    if resume.step is not None and modeldir.is_model_dir(workdir / MODEL_DIR) and (
            resume.step >= int(config.train.num_steps) or _budget_spent(config, workdir)):
        return Plan(task=task, catalog=None, devices=n_dev, resume=resume, complete=True)
    check_workdir(workdir)
    catalog = _scan_dataset(d, config.task)
    if d.get("valid_split", "valid") == "test":
        test_dir = catalog_lib.find_test_dir(catalog.root, config.task)
        if test_dir is None:
            raise ValueError(f"config.data.valid_split='test': {catalog.root} has no test/"
                             "soundscape/ folder")
        valid = heldout.check_test_set(test_dir)
    else:
        valid = loader.make_valid_batches(catalog, batch_size=d.valid_batch_size, mode=task)
    return Plan(task=task, catalog=catalog, devices=n_dev, resume=resume, init=init, valid=valid)


def load_init(config: ml_collections.ConfigDict, task: str) -> dict:
    """Variables of ``config.init``; adopts the fields that belong to those weights.

    The tagger's log-mel normalisation statistics are a property of the pretrained encoder
    (read from the official checkpoint on conversion), not a hyper-parameter: fine-tuning must
    feed the encoder the inputs it was trained on, so they are taken from the init model. This
    runs before the resume check, so a resumed run compares like with like.
    """
    if not Path(config.init).exists():
        raise ValueError(f"config.init={config.init!r}: no such model directory")
    init_config, variables = ckpt_lib.load_any(config.init)
    if task == steps.TAGGER and "norm_stats" in init_config:
        with config.unlocked():
            config.model.norm_stats = tuple(float(v) for v in init_config.norm_stats)
    return variables


def _scan_dataset(d: ml_collections.ConfigDict, edition: str = "dcase2025"):
    """The dataset's catalog (the embedded dataset of the edition, created on first use, when no
    root is set)."""
    if d.root is None:
        root = embedded.ensure_embedded(scale=d.embedded_scale, seed=0, progress=True,
                                        task=edition)
    else:
        root = Path(d.root).expanduser()
        if not root.is_dir():
            raise ValueError(f"config.data.root={d.root!r}: no such dataset folder")
    cat = catalog_lib.scan(root.absolute(), task=edition)  # one ValueError listing every problem
    if jax.process_index() == 0:
        print(cat.summary(), file=sys.stderr)
    return cat


# ---------------------------------------------------------------------------------------------
# Build


def build_model(task: str, model_config: ml_collections.ConfigDict,
                remat: str = remat_lib.NONE):
    """The flax module of ``model_config``; ``remat``: ``config.train.remat`` (separators)."""
    if task == steps.SEPARATOR:
        return build_separator(model_config, remat)
    return build_tagger(model_config)


# An init program is a few hundred random initialisers, run once: XLA:CPU's default LLVM
# optimisation (level 2) costs more than it saves there. Level 1 compiles the ResUNetK's init in
# 8–11 s instead of 16–19 s on a 2-core CPU and gives bit-identical variables (checked for
# resunetk, resunetk:small,baseline, resunet, m2d_at, m2d_at:small; tests/test_train.py keeps
# checking the smoke preset). CPU only: elsewhere neither is measured.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def render_channels(task: str, model_config: ml_collections.ConfigDict) -> int | None:
    """The mixture channels a model reads, for the in-step render: the tagger's
    ``in_channels`` (the renderer skips the others: for one channel, a batch of 16 ten-second
    mixtures renders in 0.56 instead of 0.86 s on a 2-core CPU; the gains still come from all
    four), every channel (``None``) for a separator."""
    return int(model_config.in_channels) if task == steps.TAGGER else None


def init_variables(task: str, model, model_config, seed: int) -> dict:
    """Fresh variables (shapes do not depend on the input length; 0.1 s is enough)."""
    x = jnp.zeros((1, 4, 3200), jnp.float32)
    key = jax.random.PRNGKey(seed)
    # Under a trace (e.g. jax.eval_shape of this function) the jit is nested, and JAX accepts
    # compiler options only on a top-level one; nothing is compiled there anyway.
    top_level = not isinstance(key, jax.core.Tracer)
    options = INIT_COMPILER_OPTIONS if top_level and jax.default_backend() == "cpu" else None
    inputs = (x,)
    if task == steps.SEPARATOR:
        inputs += (jnp.zeros((1, int(model_config.slots)), jnp.int32),)  # the query labels
    variables = jax.jit(lambda k: model.init(k, *inputs, train=False),
                        compiler_options=options)(key)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def merge_init(fresh: dict, loaded: dict, source: str) -> dict:
    """Overwrite ``fresh`` leaves with ``loaded`` ones of the same path (e.g. baseline weights
    into a seed model, whose extra adapter/γ/DPRNN parameters keep their identity init)."""
    out = {}
    for col in ("params", "batch_stats"):
        f = traverse_util.flatten_dict(fresh.get(col, {}))
        lo = traverse_util.flatten_dict(loaded.get(col, {}))
        unknown = sorted("/".join(k) for k in lo if k not in f)
        if unknown:
            raise ValueError(f"{source}: {len(unknown)} {col} entries unknown to this model, "
                             f"e.g. {unknown[:3]}")
        for k, v in lo.items():
            if tuple(np.shape(v)) != tuple(f[k].shape):
                raise ValueError(f"{source}: {col} {'/'.join(k)} has shape {np.shape(v)}, "
                                 f"model expects {tuple(f[k].shape)}")
            f[k] = jnp.asarray(v, f[k].dtype)
        out[col] = traverse_util.unflatten_dict(f)
    return out


def param_labels_for(task: str, trainable: str, params: Any) -> Any:
    if trainable == "all":
        return None
    return trainable_mask(params, trainable)


def _local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's rows of a batch every process holds in full (validation)."""
    pi, pc = jax.process_index(), jax.process_count()
    if pc == 1:
        return batch
    n = next(iter(batch.values())).shape[0] // pc
    return {k: v[pi * n:(pi + 1) * n] for k, v in batch.items()}


def _gather(tree):
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


# ---------------------------------------------------------------------------------------------
# Validation metrics


class Evaluator:
    """Runs the validation set through the eval step and reduces the metrics on the host."""

    def __init__(self, task, model, model_config, mesh, valid, *, limit=None, audio_examples=0,
                 edition="dcase2025"):
        self.task, self.model, self.mesh, self.valid = task, model, mesh, valid
        self.edition = edition
        self.slots = int(model_config.get("slots", 3)) if task == steps.SEPARATOR else None
        self.limit, self.audio_examples = limit, audio_examples
        channels = render_channels(task, model_config)
        self.eval_step = steps.make_eval_step(
            task, model, mesh, edition=edition,
            render=lambda b: loader.render_batch(b, valid.config, mode=task, channels=channels),
        )

    def __call__(self, state: TrainState, logger: Logger | None = None,
                 step: int = 0) -> dict[str, float]:
        variables = state.variables
        rows: dict[str, list] = {}
        weights = []
        bs = None
        shown = 0  # audio examples written so far (they may span batches)
        for i, host in enumerate(self.valid):
            bs = bs or next(iter(host.values())).shape[0]
            if self.limit is not None and i * bs >= self.limit:
                break
            dev = mesh_lib.put_batch(_local_rows(host), self.mesh)
            out = _gather(self.eval_step(variables, dev))
            w = np.asarray(host["weight"], np.float32)
            if self.limit is not None:
                w = w * (i * bs + np.arange(len(w)) < self.limit)
            weights.append(w)
            for k, v in out.items():
                rows.setdefault(k, []).append(np.asarray(v))
            if logger is not None and self.task == steps.SEPARATOR:
                shown = self._audio(logger, step, out, w, shown)
            if self.task == steps.SEPARATOR:
                # Keep host memory small: waveforms are only needed per batch.
                for k in ("estimate", "reference", "mixture"):
                    rows.pop(k, None)
                rows.setdefault("sdri", []).append(self._sdri(out))
        w = np.concatenate(weights)
        cat = {k: np.concatenate(v) for k, v in rows.items()}
        keep = w > 0
        if self.task == steps.SEPARATOR:
            return self._separator_metrics(cat, keep)
        return self._tagger_metrics(cat, keep)

    def _sdri(self, out) -> np.ndarray:
        """Per-mixture CA-SDRi (2026: CAPI-SDRi, the same function) with oracle labels (all
        true positives); NaN for empty ones."""
        return np.asarray([
            metrics_lib.class_aware_sdri(
                lab, est, lab, ref, mix[0]
            ).value
            for lab, est, ref, mix in zip(out["labels"].tolist(), out["estimate"],
                                          out["reference"], out["mixture"], strict=True)
        ], np.float64)

    def _separator_metrics(self, cat, keep) -> dict[str, float]:
        active = cat["labels"][keep] != labels_lib.EMPTY
        snr = cat["snr"][keep]
        if "loss" in cat:  # 2026: the class-aware PIT loss of each mixture
            per = cat["loss"][keep]
        elif self.slots == 1:
            per = -np.sum(snr * active, -1) / np.maximum(active.sum(-1), 1)
        else:
            per = -np.sum(snr * active, -1) / active.shape[-1]
        _, sdri_name, _ = metric_names(self.task, self.edition)
        scored = cat["sdri"][keep]
        scored = scored[~np.isnan(scored)]  # mixtures without targets are not scored
        return {
            "valid/loss": float(np.mean(per)),
            "valid/snr": float(np.sum(snr * active) / max(active.sum(), 1)),
            sdri_name: float(np.mean(scored)) if scored.size else float("nan"),
        }

    def _tagger_metrics(self, cat, keep) -> dict[str, float]:
        if "logits" in cat:  # the slot head (2026)
            labels = cat["labels"][keep]
            pred = np.asarray(predict(jnp.asarray(cat["logits"][keep]))).tolist()
            return {
                "valid/loss": float(np.mean(cat["loss"][keep])),
                "valid/accuracy": metrics_lib.label_accuracy(pred, labels.tolist()),
                "valid/source_accuracy": metrics_lib.source_accuracy(pred, labels.tolist()),
            }
        return heldout.tagger_metrics(cat["probabilities"][keep], cat["labels"][keep],
                                      cat["bce"][keep])

    def _audio(self, logger: Logger, step: int, out, w, n: int) -> int:
        """The batch's examples numbered from ``n`` while ``audio_examples`` are not all
        written; returns the new count."""
        for b in range(len(w)):
            if n >= self.audio_examples or w[b] == 0:
                continue
            logger.audio(step, f"valid/{n}/mixture", out["mixture"][b, 0])
            for s, lab in enumerate(out["labels"][b].tolist()):
                if lab == labels_lib.EMPTY:
                    continue
                name = labels_lib.CLASSES[lab]
                logger.audio(step, f"valid/{n}/{s}_{name}/estimate", out["estimate"][b, s])
                logger.audio(step, f"valid/{n}/{s}_{name}/reference", out["reference"][b, s])
            n += 1
        return n


# ---------------------------------------------------------------------------------------------
# The run


# Logged at their value after the log step, not as the window's mean: counters and the state of
# the run (a mean learning rate lags the schedule by half a window during warm-up).
AT_LOG_STEP = ("skipped", "bad_streak", "learning_rate", "param_norm")


def _host_mean(records: list[dict[str, Any]]) -> dict[str, float]:
    """The metrics of the steps since the last log: means of the finite values (NaN if none),
    the last value for :data:`AT_LOG_STEP`."""
    host = jax.device_get(records)
    out = {}
    for k in host[0]:
        vals = np.asarray([r[k] for r in host], np.float64)
        if k in AT_LOG_STEP:
            out[k] = float(vals[-1])
        else:
            finite = vals[np.isfinite(vals)]
            out[k] = float(finite.mean()) if finite.size else float("nan")
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Train (or resume) the run described by ``config`` in ``workdir``; returns the last
    validation metrics."""
    workdir = Path(workdir).absolute()
    plan = validate(config, workdir)
    task, t, d = plan.task, config.train, config.data
    main_process = jax.process_index() == 0
    if plan.complete:
        if main_process:
            print(_complete_message(workdir, plan.resume.step, config), file=sys.stderr)
        return _last_validation(workdir)
    mesh = mesh_lib.make_mesh()
    model = build_model(task, config.model, t.get("remat", remat_lib.NONE))
    variables = init_variables(task, model, config.model, int(t.seed))
    if plan.init is not None:
        variables = merge_init(variables, plan.init, str(config.init))
    labels = param_labels_for(task, config.trainable, variables["params"])
    n_train, n_total = optim.count_trainable(variables["params"], labels)
    tx = optim.build_optimizer(config.optim, int(t.num_steps), labels)
    lr_schedule = optim.make_schedule(config.optim, int(t.num_steps))
    replicated = NamedSharding(mesh, P())
    state = jax.device_put(create_state(variables, tx, int(t.seed)), replicated)
    # Once the model and optimiser are built: a config they refuse leaves no work directory.
    if main_process and plan.resume.step is None:
        ckpt_lib.write_train_config(workdir, config)

    catalog = plan.catalog
    mix_cfg = task_config(config.task, task, d.clip_seconds)
    raw_it = loader.make_train_iterator(
        catalog, batch_size=d.batch_size // jax.process_count(), seed=int(d.seed),
        mode=task, num_workers=int(d.num_workers), config=mix_cfg,
    )
    valid = plan.valid

    ckpts = ckpt_lib.CheckpointManager(workdir, keep=int(t.keep), best_metric=t.best_metric,
                                       best_mode=t.best_mode)
    start = 0
    if plan.resume.step is not None:
        step0 = ckpts.latest_step()
        if step0 != plan.resume.step:  # never start again silently over checkpoints
            raise ValueError(f"{ckpts.directory}: holds checkpoint {plan.resume.step}, but Orbax "
                             f"finds {'none' if step0 is None else step0} to resume from")
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        try:
            state = ckpts.restore(step0, abstract, data_iterator=raw_it)
        except ValueError as e:
            hint = ""
            # e.g. moments per tensor (before 2026-12-01) or flat in tree order (2026-12-01)
            if "opt_state" in str(e):
                hint = (f"; its optimiser state has another layout: start a new work directory "
                        f"from its weights with --config.init={workdir}")
            raise ValueError(f"{e}{hint}") from e
        start = int(state.step)
        if main_process:
            print(f"resuming {workdir} from step {start} of {int(t.num_steps)} (checkpoint "
                  f"{ckpts.directory}/{step0})", file=sys.stderr)
            if plan.resume.changes:
                f = ckpt_lib.write_train_config(workdir, config, start)
                print(f"note: config changed from step {start} on (saved as {f.name}, "
                      f"{ckpt_lib.TRAIN_CONFIG_FILE} kept): " + "; ".join(plan.resume.changes),
                      file=sys.stderr)
    train_it = loader.DevicePrefetch(raw_it, mesh, size=int(d.prefetch))

    channels = render_channels(task, config.model)
    train_step = steps.make_train_step(
        task, model, tx, mesh,
        render=lambda b: loader.render_batch(b, mix_cfg, mode=task, channels=channels),
        param_labels=labels, lr_schedule=lr_schedule, edition=config.task,
        accumulate=int(config.optim.get("accumulate", 1)),
    )
    if d.get("valid_split", "valid") == "test":
        evaluate = heldout.HeldOutEvaluator(task, model, mesh, valid,
                                            batch_size=d.valid_batch_size, limit=d.valid_limit,
                                            audio_examples=int(t.audio_examples))
    else:
        evaluate = Evaluator(task, model, config.model, mesh, valid, limit=d.valid_limit,
                             audio_examples=int(t.audio_examples), edition=config.task)
    logger = Logger(workdir, start_step=start)  # drops what a killed run logged after `start`
    if start == 0:
        logger.text(0, "config", "<pre>" + config.to_json(indent=2) + "</pre>")
        logger.scalars(0, {"params/trainable": n_train, "params/total": n_total})

    last_valid: dict[str, float] = {}
    records: list[dict] = []
    num_steps = int(t.num_steps)
    # Training wall time, validation excluded (compilation and checkpoints included); a resumed
    # run continues the count of the run it resumes.
    seconds = _last_value(workdir, "train/seconds") if start else 0.0
    bar = tqdm(total=num_steps, initial=start, disable=not t.progress or jax.process_index() != 0,
               desc=config.get("name", task), dynamic_ncols=True)
    postfix: dict[str, str] = {}

    def say(step: int, values: dict[str, Any]) -> None:
        """Without the bar (logs of unattended runs): one line per log step and validation."""
        if main_process and not t.progress:
            print(_progress_line(step, num_steps, values), file=sys.stderr, flush=True)

    if start == 0 and t.get("eval_at_start", False):
        last_valid = _validate(bar, postfix, 0, functools.partial(evaluate, state, logger, 0))
        logger.scalars(0, {**last_valid, "train/seconds": 0.0})
        say(0, last_valid)
    tic, tic_step = time.perf_counter(), start
    seg = tic  # start of the current stretch of training (for `seconds`)
    pending = None  # the previous step's metrics: blocking on them keeps one step in flight
    budget = None if t.get("max_minutes") is None else 60.0 * float(t.max_minutes)
    # SIGTERM (preemption, `kill`) stops the run after the step in flight, with a checkpoint
    # of that step (preemption.py).
    interrupted = False  # SIGTERM seen at the end of a step: the run stops there
    with preemption.StopOnSigterm() as stop:
        try:
            # A run whose time budget is spent (its model/ deleted, say) only exports again.
            end = start if budget is not None and start and seconds >= budget else num_steps
            for step in range(start, end):
                batch = next(train_it)
                state, m = train_step(state, batch)
                records.append(m)
                s = step + 1
                # The bar counts computed steps, not dispatched ones: wait for the previous step
                # (the current one is already queued behind it, so the device never idles).
                if pending is not None:
                    jax.block_until_ready(pending)
                    bar.update(1)
                pending = m
                interrupted = stop.requested  # read once: the signal may come at any time
                last = s == num_steps or interrupted or (
                    budget is not None and seconds + time.perf_counter() - seg >= budget)
                if s % t.log_every == 0 or last:
                    scalars = _host_mean(records)  # waits for this step too
                    bar.update(1)
                    pending = None
                    records = []
                    now = time.perf_counter()
                    elapsed = now - tic
                    n = s - tic_step
                    scalars["step_time"] = elapsed / n
                    scalars["examples_per_second"] = n * d.batch_size / elapsed
                    scalars["seconds"] = seconds + now - seg
                    logger.scalars(s, {f"train/{k}": v for k, v in scalars.items()})
                    postfix = _bar_postfix(scalars["loss"], scalars["seconds"], budget)
                    bar.set_postfix(postfix)
                    say(s, {"loss": scalars["loss"], "s/step": scalars["step_time"],
                            "minutes": postfix.get("minutes", f"{scalars['seconds'] / 60:.1f}")})
                    if scalars["bad_streak"] >= t.max_nonfinite:
                        raise NonFiniteError(
                            f"step {s}: {int(scalars['bad_streak'])} consecutive non-finite "
                            f"losses/gradients (limit config.train.max_nonfinite="
                            f"{t.max_nonfinite}); stopping. The last checkpoint in "
                            f"{ckpts.directory} holds the last good state."
                        )
                    tic, tic_step = time.perf_counter(), s
                evaluated = None
                if s % t.eval_every == 0 or (
                        last and not interrupted and t.get("eval_at_end", True)):
                    if pending is not None:
                        jax.block_until_ready(pending)
                        bar.update(1)
                        pending = None
                    paused = time.perf_counter()
                    seconds += paused - seg
                    evaluated = last_valid = _validate(
                        bar, postfix, s, functools.partial(evaluate, state, logger, s))
                    logger.scalars(s, {**evaluated, "train/seconds": seconds})
                    say(s, evaluated)
                    if stop.requested and not last:  # SIGTERM while validating: stop here,
                        interrupted = last = True  # with this step's checkpoint
                    # Validation is kept out of the step time; the steps since the last log
                    # (before it) keep theirs, which a reset of `tic` would drop.
                    seg = time.perf_counter()
                    tic += seg - paused
                if s % t.checkpoint_every == 0 or last:
                    ckpts.save(s, state, train_it, metrics=evaluated)
                if last:
                    if interrupted and main_process:
                        tqdm.write(f"stopping at step {s}: SIGTERM received; checkpoint {s} "
                                   f"saved in {ckpts.directory}, the same command resumes from "
                                   "it", file=sys.stderr)  # on its own line, not after the bar
                    elif s < num_steps and main_process:
                        spent = seconds + time.perf_counter() - seg
                        tqdm.write(_budget_stop_message(config, s, spent, lr_schedule,
                                                        int(state.skipped)), file=sys.stderr)
                    break
            if pending is not None:
                bar.update(1)
            bar.close()  # its last line: the training steps' time, not the export's below
            ckpts.wait()
            if main_process and ckpts.latest_step() is not None and not interrupted:
                export_model(workdir, config, ckpts, state)
                if start >= end:
                    print(_complete_message(workdir, start, config), file=sys.stderr)
        finally:
            bar.close()
            train_it.close()
            ckpts.wait()
            ckpts.close()
            logger.close()
    if interrupted:
        raise SystemExit(preemption.EXIT_STATUS)
    return last_valid


def _validate(bar: tqdm, postfix: dict[str, str], step: int,
              run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``run()`` (a validation) with the progress bar saying so, and its time kept out of the
    bar's elapsed time, rate and ETA (``tqdm.unpause``), which are those of the training steps:
    a validation of the `small` preset takes minutes on a CPU."""
    bar.set_postfix({**postfix, "validating": f"step {step}"})
    try:
        return run()
    finally:
        bar.unpause()
        bar.set_postfix(postfix)


def _progress_line(step: int, num_steps: int, values: dict[str, Any]) -> str:
    """``"step 250/2500: loss 0.2102, s/step 1.05"``: numbers to 4 significant digits, text as
    it is."""
    items = (f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
             for k, v in values.items())
    return f"step {step}/{num_steps}: " + ", ".join(items)


def _bar_postfix(loss: float, seconds: float, budget: float | None) -> dict[str, str]:
    """The progress bar's postfix: the loss, and under a time budget (``train.max_minutes``, in
    seconds here) the training minutes spent of it, since the bar's ETA counts the steps to
    ``train.num_steps``, which the budget may cut short."""
    postfix = {"loss": f"{loss:.4g}"}
    if budget is not None:
        postfix["minutes"] = f"{seconds / 60:.1f}/{budget / 60:g}"
    return postfix


def _budget_stop_message(config: ml_collections.ConfigDict, step: int, seconds: float,
                         lr_schedule: Callable[[Any], Any], skipped: int = 0) -> str:
    """Why a run stops at ``step`` before ``train.num_steps``: its time budget is spent after
    ``seconds`` of training. A decaying learning rate cut short is named (at the optimiser's
    update count: ``skipped`` non-finite steps did not advance it), with the step count that
    fits the budget at this run's pace: a preset's step count fits the machine it was sized on,
    and on a slower one the schedule never reaches its end."""
    t = config.train
    num_steps = int(t.num_steps)
    msg = (f"stopping at step {step} of {num_steps}: config.train.max_minutes={t.max_minutes} "
           "of training reached")
    kind = config.optim.get("schedule", "constant")
    now, end = float(lr_schedule(step - skipped)), float(lr_schedule(num_steps))
    if kind != "constant" and not np.isclose(now, end, rtol=1e-3, atol=0.0):
        fit = int(step * 60.0 * float(t.max_minutes) / max(seconds, 1e-9))
        msg += (f"; the learning rate ({kind} schedule to step {num_steps}) is {now:.3g}, not "
                f"its final {end:.3g}: about {fit} steps fit this budget at this run's pace "
                "(config.train.num_steps)")
    return msg


def _complete_message(workdir: Path, step: int, config: ml_collections.ConfigDict) -> str:
    """What a finished run holds. Where ``model/`` holds another checkpoint than this config's
    rule chooses (``train.best_metric`` / ``best_mode`` changed with ``allow_config_change``),
    the chosen one is exported first, if the work directory may be written."""
    t = config.train
    model = workdir / MODEL_DIR
    mgr = ckpt_lib.CheckpointManager(workdir, best_metric=t.best_metric, best_mode=t.best_mode,
                                      read_only=True)
    try:
        best = ckpt_lib.model_step(mgr, config)
        held = modeldir.read_run(model).get("step")
        if held is not None and best is not None and held != best:
            if os.access(workdir, os.W_OK | os.X_OK):
                _save_export(workdir, config, mgr.restore_variables(best), best)
                exported = (f"re-exported model: {model} (checkpoint {best}, {_chosen_by(config)};"
                            f" it held checkpoint {held}, chosen by the run's earlier config)")
            else:
                exported = (f"exported model: {model} (checkpoint {held}; this config's rule, "
                            f"{_chosen_by(config)}, chooses checkpoint {best}, but {workdir} is "
                            "not writable)")
        else:
            exported = f"exported model: {model} (checkpoint {best}, {_chosen_by(config)})"
    finally:
        mgr.close()
    limit = (f"train.max_minutes={t.max_minutes} spent" if step < int(t.num_steps)
             else f"train.num_steps={int(t.num_steps)}")
    return (f"{workdir}: the run is complete at step {step} ({limit}); {exported}. Nothing to "
            "do: use another --workdir for a new run, or raise train.num_steps "
            "(train.max_minutes) with --config.train.allow_config_change=true to train further")


def _budget_spent(config: ml_collections.ConfigDict, workdir: Path) -> bool:
    """Whether the run in ``workdir`` has used up ``train.max_minutes`` of training."""
    limit = config.train.get("max_minutes")
    return limit is not None and _last_value(workdir, "train/seconds") >= 60.0 * float(limit)


def _last_value(workdir: Path, name: str) -> float:
    """The last logged value of scalar ``name`` in ``log.jsonl`` (0 if none)."""
    for rec in reversed(read_jsonl(workdir)):
        if name in rec:
            return float(rec[name])
    return 0.0


def _last_validation(workdir: Path) -> dict[str, float]:
    """The last validation metrics in ``log.jsonl`` (empty if none)."""
    for rec in reversed(read_jsonl(workdir)):
        vals = {k: v for k, v in rec.items() if k.startswith("valid/")}
        if vals:
            return vals
    return {}


def _chosen_by(config: ml_collections.ConfigDict) -> str:
    if ckpt_lib.validation_chooses_model(config):
        return f"best by {config.train.best_metric}"
    return "the last: a run validated on the test split does not choose its model by it"


def export_model(workdir: Path, config: ml_collections.ConfigDict,
                 ckpts: ckpt_lib.CheckpointManager, state: TrainState) -> Path:
    """``<workdir>/model``: the variables of checkpoint ``checkpoint.model_step`` (the best,
    else the last state's; the last for a run validated on the test split)."""
    best = ckpt_lib.model_step(ckpts, config)
    if best is None or best == int(state.step):
        return _save_export(workdir, config, state.variables, int(state.step))
    return _save_export(workdir, config, ckpts.restore_variables(best), best)


def _save_export(workdir: Path, config: ml_collections.ConfigDict, variables: Any,
                 step: int) -> Path:
    """``<workdir>/model`` with its ``run.json``: the run's edition and the step exported."""
    return modeldir.save_model(workdir / MODEL_DIR, config.model, variables, overwrite=True,
                               run={"task": config.task, "step": step})
