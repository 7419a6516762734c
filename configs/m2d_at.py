"""Training config: the M2D audio tagger (ViT-B/16 on channel-0 log-mel → 18 sigmoids).

Default = the seed system (seed_system.md §1): parallel inverted-bottleneck adapters in all 12
blocks; encoder frozen, adapters + final norm + head train; batch 4 on one device.
Start from a converted M2D checkpoint with ``--config.init=<model directory>`` (without it the
encoder is random, which is only useful for smoke tests).
Presets (comma-separated, e.g. ``configs/m2d_at.py:baseline``):
  baseline         official stage 1: no adapters, head only, global batch 256, lr 1e-3
  baseline_stage2  official stage 2: last 2 blocks + norm + head, global batch 128; lr 1e-3,
                   the value the baseline effectively ran with (spec §5.2); set --config.init
                   to the stage-1 run directory (the optimiser state is not carried over)
  smoke            tiny ViT, 1-s clips, 20 steps on the small embedded dataset
  bf16             bfloat16 compute
"""

from s5jax.models.tagger import tagger_config
from s5jax.training import config_lib as common


def _baseline(cfg):
    cfg.model.adapters = False
    cfg.trainable = "head"
    cfg.data.batch_size = 256
    cfg.optim.lr = 1e-3
    cfg.train.num_steps = 400_000  # 100 000 mixtures per epoch → ~390 steps per epoch
    cfg.train.eval_every = 390
    cfg.train.checkpoint_every = 390


def _baseline_stage2(cfg):
    cfg.model.adapters = False
    cfg.trainable = "blocks:2"
    cfg.data.batch_size = 128
    cfg.optim.lr = 1e-3
    cfg.train.num_steps = 15_000
    cfg.train.eval_every = 500
    cfg.train.checkpoint_every = 500


def _smoke(cfg):
    cfg.model.update(dict(embed_dim=16, depth=2, num_heads=2, adapter_ratio=2))
    common.smoke_run(cfg)
    cfg.trainable = "all"  # a random encoder must learn too
    cfg.train.audio_examples = 0


def get_config(arg: str | None = None):
    cfg = common.experiment(
        "m2d_at",
        tagger_config(
            adapters=True,  # seed §1
            adapter_ratio=2,
            adapter_mode="parallel",
            adapter_blocks=(),  # all blocks
            features="flat",
            dtype="float32",
        ),
    )
    cfg.trainable = "adapters"
    cfg.data.batch_size = 4
    cfg.data.num_workers = 5
    cfg.optim.lr = 1e-3
    cfg.train.num_steps = 1_000_000
    cfg.train.eval_every = 25_000
    cfg.train.checkpoint_every = 25_000
    cfg.train.best_metric = "valid/loss"
    cfg.train.best_mode = "min"
    presets = {"baseline": _baseline, "baseline_stage2": _baseline_stage2, "smoke": _smoke}
    return common.apply_presets(cfg, arg, presets)
