"""DCASE 2026 training wiring: config.task picks the data rules, the separator loss and the
validation metrics; the tagger's loss follows its head. Runs end to end on the embedded 2026
dataset (one step each: the point is the wiring, the losses are tested in test_metrics_2026)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from s5jax import metrics
from s5jax.training import loop, steps
from tests.test_train import load_config


class _Stub:
    """A 'separator' whose estimate of slot s is w[s] times mixture channel 0 (no compile)."""

    slots = 3

    def apply(self, variables, mixture, labels, train=False, mutable=None):
        est = variables["params"]["w"][None, :, None] * mixture[:, :1, :]
        return (est, {"batch_stats": {}}) if train else est


def _batch(labels):
    rng = np.random.default_rng(0)
    labels = np.asarray(labels, np.int32)
    dry = rng.standard_normal((len(labels), 3, 400)).astype(np.float32) * (labels >= 0)[..., None]
    mixture = np.repeat(dry.sum(1, keepdims=True), 4, axis=1) + 0.1 * rng.standard_normal(
        (len(labels), 4, 400)).astype(np.float32)
    return {"mixture": mixture, "dry": dry, "labels": labels}


def test_separator_loss_by_edition():
    params = {"w": jnp.asarray([0.9, 0.2, 0.5], jnp.float32)}
    rep = _batch([[4, 4, -1], [2, 9, 4]])
    l26, _ = steps.loss_fn(steps.SEPARATOR, _Stub(), params, {}, rep, None, edition="dcase2026")
    est = np.asarray(params["w"])[None, :, None] * rep["mixture"][:, :1]
    want = metrics.class_aware_pit_loss(est, rep["dry"], rep["labels"]).mean()
    np.testing.assert_allclose(float(l26), float(want), rtol=1e-6)
    l25, _ = steps.loss_fn(steps.SEPARATOR, _Stub(), params, {}, rep, None)
    assert abs(float(l25) - float(l26)) > 1e-3  # the repeat may swap in 2026
    distinct = _batch([[4, 7, -1], [2, 9, 4]])
    a, _ = steps.loss_fn(steps.SEPARATOR, _Stub(), params, {}, distinct, None,
                         edition="dcase2026")
    b, _ = steps.loss_fn(steps.SEPARATOR, _Stub(), params, {}, distinct, None)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)  # no repeat: the 2025 loss
    with pytest.raises(ValueError, match="dcase2025"):
        steps.make_eval_step(steps.SEPARATOR, _Stub(), None, edition="dcase2027")


def _tiny(cfg, root):
    cfg.data.root = str(root)
    cfg.data.clip_seconds = 0.5
    cfg.train.num_steps = 1
    cfg.train.progress = False
    return cfg


def test_separator_runs_on_2026_data_and_reports_capi_sdri(embedded_2026, tmp_path):
    cfg = _tiny(load_config("resunetk", "dcase2026,smoke"), embedded_2026)
    cfg.model.channels = (2, 4, 4, 8, 8, 8)
    cfg.model.dprnn_hidden = 4
    assert cfg.task == "dcase2026"
    out = loop.train_and_evaluate(cfg, str(tmp_path / "sep"))
    assert set(out) == {"valid/loss", "valid/capi_sdri", "valid/snr"}
    assert all(math.isfinite(v) for v in out.values()), out


def test_spatial_slot_tagger_runs_on_2026_data_and_reports_accuracies(embedded_2026, tmp_path):
    cfg = _tiny(load_config("m2d_at", "dcase2026,spatial,smoke"), embedded_2026)
    assert (cfg.model.head, cfg.model.in_channels) == ("slots", 4)
    out = loop.train_and_evaluate(cfg, str(tmp_path / "tag"))
    assert set(out) == {"valid/loss", "valid/accuracy", "valid/source_accuracy"}
    assert math.isfinite(out["valid/loss"]) and 0 <= out["valid/accuracy"] <= 100


def test_2026_presets():
    sep = load_config("resunetk", "baseline2026")
    assert (sep.task, sep.model.film, sep.model.bottleneck, sep.data.batch_size,
            sep.optim.lr, sep.train.eval_every) == ("dcase2026", "beta", "none", 16, 1e-4, 632)
    s1 = load_config("m2d_at", "baseline2026,spatial")
    assert (s1.task, s1.model.head, s1.model.in_channels, s1.model.adapters, s1.trainable,
            s1.data.batch_size, s1.optim.lr, s1.train.num_steps) == (
        "dcase2026", "slots", 4, False, "head", 128, 1e-3, 58_800)
    s2 = load_config("m2d_at", "baseline2026_stage2")
    assert (s2.trainable, s2.data.batch_size, s2.model.head) == ("blocks:2", 128, "slots")
    assert load_config("m2d_at").task == "dcase2025"
    bad = load_config("resunetk", "smoke")
    bad.task = "dcase2024"
    with pytest.raises(ValueError, match="config.task='dcase2024'"):
        loop.check_config(bad)
    bad = load_config("resunetk", "dcase2026,smoke")
    bad.train.best_metric = "valid/ca_sdri"  # the 2025 name
    with pytest.raises(ValueError, match="valid/capi_sdri"):
        loop.check_config(bad)
