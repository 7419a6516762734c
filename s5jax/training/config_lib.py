"""Shared pieces of the training configs: the table skeleton and comma-separated presets.

A config file's ``get_config(arg)`` builds its table with :func:`experiment`, then applies the
presets named in ``arg`` (``"baseline,bf16"``) with :func:`apply_presets`. It lives in the package
(not beside the config files) because ``config_flags`` loads config files by path, where a
sibling module is not importable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ml_collections
from ml_collections.config_dict import placeholder


def experiment(name: str, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Skeleton shared by every training config; files fill in and override values."""
    return ml_collections.ConfigDict(
        dict(
            name=name,  # also the default work directory name: runs/<name>[-<presets>]
            # The challenge edition: "dcase2025" | "dcase2026". Read by the data (training
            # mixture rules, the embedded dataset's layout), the separator loss and the
            # validation metrics (docs/dcase2026.md); the tagger's loss follows model.head.
            task="dcase2025",
            model=model,
            # Fields that default to "nothing" are typed placeholders, so that the command line can
            # set them (--config.init=DIR); a bare None could not be overridden.
            init=placeholder(str),  # model directory (converted/trained) to start from; None=random
            data=dict(
                root=placeholder(str),  # None → the embedded dataset, created on first use
                embedded_scale="small",
                clip_seconds=10.0,
                batch_size=4,  # global, over all devices and hosts
                num_workers=4,  # Grain worker processes; 0 = in the main process
                prefetch=2,
                seed=0,
                valid_batch_size=4,
                valid_limit=placeholder(int),  # at most this many validation mixtures (None: all)
                # "valid": the validation metadata, rendered on the fly; "test" (2025
                # separators): the dataset's labelled test soundscapes with oracle labels, scored
                # as `python -m s5jax.evaluate --oracle-labels` scores them (training/heldout.py).
                valid_split="valid",
            ),
            optim=dict(
                lr=1e-4,
                b1=0.9,
                b2=0.999,
                eps=1e-8,
                weight_decay=0.0,
                amsgrad=True,  # PyTorch AMSGrad (max of the raw second moment)
                clip_norm=0.5,  # torch clip_grad_norm_ over all trainable parameters
                schedule="constant",  # "constant" | "cosine"
                warmup_steps=0,
                final_lr_ratio=0.0,  # cosine only
                # Gradient accumulation: the global batch is split into this many micro-batches
                # summed by a lax.scan inside the step (BatchNorm statistics are per micro-batch;
                # docs/training.md). data.batch_size must be a multiple of it × the devices.
                accumulate=1,
            ),
            train=dict(
                num_steps=200_000,
                seed=0,
                log_every=100,
                eval_every=2_500,
                eval_at_end=True,  # also validate after the last step
                eval_at_start=False,  # also validate the initial model (step 0; not on resume)
                # Wall-clock budget of the training (validation excluded, train/seconds): the
                # step that exhausts it is the last (validated, checkpointed, exported).
                max_minutes=placeholder(float),
                checkpoint_every=2_500,
                keep=3,  # latest checkpoints kept, plus the best one
                best_metric="valid/loss",
                best_mode="min",
                max_nonfinite=20,  # consecutive skipped (non-finite) steps before stopping
                audio_examples=2,  # validation separations written to TensorBoard
                progress=True,  # tqdm progress bar
                # Separators: "none" | "blocks" | "blocks:<jax.checkpoint_policies name>"
                # (rematerialise the encoder/decoder blocks; s5jax.models.remat).
                remat="none",
                # Resume even though fields that change what the checkpoints mean (optim.lr,
                # num_steps, data.root, …) differ from the run's; see docs/training.md.
                allow_config_change=False,
            ),
            trainable="all",  # separators: "all"; tagger: "head" | "blocks:k" | "adapters" | "all"
            precision="float32",  # "float32" | "bfloat16" (compute dtype; params, loss fp32)
        )
    )


Preset = Callable[[ml_collections.ConfigDict], None]
SIZE_PRESETS = ("smoke", "small")


def bf16(cfg: ml_collections.ConfigDict) -> None:
    cfg.precision = "bfloat16"
    cfg.model.dtype = "bfloat16"


def apply_presets(
    cfg: ml_collections.ConfigDict, arg: str | None, presets: Mapping[str, Preset]
) -> ml_collections.ConfigDict:
    """Apply the comma-separated presets of ``arg`` in order, the size presets (``smoke``,
    ``small``) last; unknown names fail clearly."""
    names = [p.strip() for p in (arg or "").split(",") if p.strip()]
    known = dict(presets)
    known.setdefault("bf16", bf16)
    for n in names:
        if n not in known:
            raise ValueError(
                f"unknown config preset {n!r} in {arg!r}; known presets: {', '.join(sorted(known))}"
            )
    # Size presets set the run's scale (widths, data, schedule) over whatever the others chose,
    # so they apply last wherever they are named: `small,baseline` = `baseline,small`.
    for n in sorted(names, key=lambda n: n in SIZE_PRESETS):
        known[n](cfg)
    if names:
        cfg.name = "-".join([cfg.name, *names])
    return cfg


def smoke_run(cfg: ml_collections.ConfigDict) -> None:
    """Data and schedule of every ``smoke`` preset: 20 steps on 1-s clips of the small embedded
    dataset, batch 2, in the main process; validation and checkpoints at steps 10 and 20."""
    cfg.data.embedded_scale = "small"
    cfg.data.clip_seconds = 1.0
    cfg.data.batch_size = 2
    cfg.data.num_workers = 0
    cfg.data.valid_batch_size = 2
    cfg.data.valid_limit = 2
    cfg.train.num_steps = 20
    cfg.train.log_every = 2
    cfg.train.eval_every = 10
    cfg.train.checkpoint_every = 10
    cfg.train.keep = 2


def separator_presets() -> dict[str, Preset]:
    """Presets shared by the ResUNet and ResUNetK configs."""

    def baseline(cfg):
        # Official architecture + hyper-parameters (spec §5.1, §5.6): β-only FiLM, no DPRNN,
        # global batch 40 (5 × 8 GPUs), lr 1e-4, AdamW-AMSGrad, clip 0.5, no schedule;
        # one "epoch" = 100 000 mixtures = 2 500 steps, validated and checkpointed once per epoch.
        cfg.model.film = "beta"
        cfg.model.bottleneck = "none"
        cfg.data.batch_size = 40
        cfg.optim.lr = 1e-4
        cfg.train.num_steps = 250_000
        cfg.train.eval_every = 2_500
        cfg.train.checkpoint_every = 2_500

    def baseline_1gpu(cfg):
        # The official recipe (global batch 40 of 10-s clips) on ONE 80 GB accelerator: the
        # batch is 4 accumulated micro-batches of 10 (BatchNorm statistics over 10 examples, the
        # running averages updated once per step; docs/training.md). Chosen with the memory
        # model (scripts/memory.py, docs/benchmarks.md "Memory model"): the whole batch needs
        # ~5.5 GB per example, ~4x more than 80 GB; micro-batches of 10 fit with a margin,
        # also under JAX's default GPU pre-allocation (75 % of the card).
        baseline(cfg)
        cfg.optim.accumulate = 4
        cfg.train.remat = "none"

    def smoke(cfg):
        # Tiny everything: runs end to end in about a minute on a 2-core CPU.
        cfg.model.channels = (4, 8, 8, 16, 16, 16)
        cfg.model.dprnn_hidden = 8
        smoke_run(cfg)
        cfg.optim.lr = 1e-3
        cfg.train.audio_examples = 1

    def small(cfg):
        # A real, CPU-sized model (docs/learning.md): 1/4 of the official widths, 3-s clips of
        # the embedded `full` dataset, validated on its held-out test soundscapes (sounds and
        # rooms the training split never uses) with oracle labels, as `evaluate` scores them.
        # With `baseline` (`small,baseline`) it is the baseline variant (β-FiLM, no DPRNN),
        # alone the seed variant (γβ-FiLM + DPRNN). lr 1e-3 (10x the official: a small model,
        # few steps), warm-up 100 steps, batch 4 of 3-s clips (2-core budget, docs/learning.md).
        cfg.model.channels = (8, 16, 32, 64, 96, 96)
        cfg.model.dprnn_hidden = 32
        cfg.model.bn_momentum = 0.1
        cfg.model.head_init = "mixture"
        cfg.data.embedded_scale = "full"
        cfg.data.clip_seconds = 3.0
        cfg.data.batch_size = 4
        cfg.data.num_workers = 1
        cfg.data.valid_split = "test"
        cfg.data.valid_batch_size = 4
        cfg.optim.lr = 1e-3
        cfg.optim.schedule = "constant"
        cfg.optim.warmup_steps = 100
        cfg.train.num_steps = 4000
        cfg.train.max_minutes = 45.0  # the budget per run on a 2-core CPU
        cfg.train.eval_at_start = True
        cfg.train.log_every = 25
        cfg.train.eval_every = 250
        cfg.train.checkpoint_every = 250
        cfg.train.keep = 2
        cfg.train.audio_examples = 2
        cfg.train.best_metric = "valid/ca_si_sdri"
        cfg.train.best_mode = "max"

    return {"baseline": baseline, "baseline_1gpu": baseline_1gpu, "smoke": smoke,
            "small": small, "dcase2026": dcase2026_separator}


def dcase2026_separator(cfg: ml_collections.ConfigDict) -> None:
    """DCASE 2026 data, loss and metrics for a separator (the model is unchanged): 1–3 targets
    with repeated classes, class-aware PIT loss, CAPI-SDRi in validation."""
    cfg.task = "dcase2026"
    cfg.train.best_metric = "valid/loss"

