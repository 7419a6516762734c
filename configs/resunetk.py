"""Training config: the ResUNetK (3 label slots per pass) separator.

Default = the seed system (seed_system.md): γβ FiLM + DPRNN bottleneck, batch 4 on one device,
80 epochs of 100 000 mixtures, baseline optimiser (AdamW-AMSGrad lr 1e-4, clip 0.5).
Presets (comma-separated after the file name, e.g. `configs/resunetk.py:baseline,bf16`):
  baseline      official 2025 architecture and hyper-parameters (β FiLM, no DPRNN, batch 40)
  baseline_1gpu baseline on one 80 GB accelerator: batch 40 = 4 accumulated micro-batches of 10
  dcase2026     DCASE 2026 data (repeats), class-aware PIT loss, CAPI-SDRi; model unchanged
  baseline2026  the official 2026 separator (config/separation/resunetk_capisdr.yaml): dcase2026
                + β FiLM, no DPRNN, global batch 16 (4 per GPU × 4 GPUs), lr 1e-4,
                validation + checkpoint every 632 steps (one 10 112-mixture epoch)
  small         CPU-sized (1/4 widths, 3-s clips, embedded `full`, held-out validation;
                docs/learning.md); `small,baseline` = the baseline variant
  smoke         tiny model, 1-s clips, 20 steps on the small embedded dataset (~1 min on CPU)
  bf16          bfloat16 compute (parameters, optimiser and loss stay float32)
"""

from s5jax.models.separator import separator_config
from s5jax.training import config_lib as common


def get_config(arg: str | None = None):
    cfg = common.experiment(
        "resunetk",
        separator_config(
            name="resunetk",
            film="gamma_beta",  # seed §2: y = (1 + γ)·BN(x) + β
            bottleneck="dprnn",  # seed §3
            dprnn_hidden=128,
            dprnn_repeats=1,
            channels=(32, 64, 128, 256, 384, 384),
            dtype="float32",
        ),
    )
    cfg.data.batch_size = 4
    cfg.data.num_workers = 5
    cfg.optim.lr = 1e-4
    cfg.train.num_steps = 2_000_000  # 80 epochs × 100 000 mixtures / batch 4
    cfg.train.eval_every = 25_000  # one epoch
    cfg.train.checkpoint_every = 25_000
    cfg.train.best_metric = "valid/loss"
    cfg.train.best_mode = "min"
    cfg.trainable = "all"
    return common.apply_presets(cfg, arg, common.separator_presets() | {
        "baseline2026": _baseline2026})


def _baseline2026(cfg):
    common.dcase2026_separator(cfg)
    cfg.model.film = "beta"
    cfg.model.bottleneck = "none"
    cfg.data.batch_size = 16
    cfg.optim.lr = 1e-4
    cfg.train.num_steps = 250_000  # the official sets no limit (max_epochs: -1)
    cfg.train.eval_every = 632
    cfg.train.checkpoint_every = 632
