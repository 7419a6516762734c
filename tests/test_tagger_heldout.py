"""A tagger run validated on the held-out test soundscapes (``data.valid_split="test"``) logs
what ``evaluate`` and the loaded model give for its exported step."""

import json

import jax
import numpy as np
import pytest

from s5jax import evaluate, metrics
from s5jax import labels as labels_lib
from s5jax.data.testset import TestSet
from s5jax.inference.loading import load_tagger_any
from s5jax.training import loop
from s5jax.training.logging import read_jsonl
from tests.test_train import load_config

STEPS = 4


def _config():
    cfg = load_config("m2d_at", "smoke")
    cfg.model.features, cfg.model.pool = "stacked", "meanmax"  # as the `small` preset pools
    cfg.data.valid_split = "test"
    cfg.data.valid_limit = None
    cfg.data.valid_batch_size = 4  # 6 soundscapes: the last batch is padded
    cfg.train.num_steps = STEPS
    cfg.train.eval_every = STEPS
    cfg.train.checkpoint_every = STEPS
    cfg.train.progress = False
    return cfg


def test_tagger_logs_on_the_test_split_what_evaluate_gives(embedded_small, tiny_models,
                                                           tmp_path, capsys):
    cfg = _config()
    cfg.data.root = str(embedded_small)
    workdir = tmp_path / "run"
    loop.train_and_evaluate(cfg, str(workdir))
    points = [r for r in read_jsonl(workdir) if "valid/accuracy" in r]
    assert [p["step"] for p in points] == [STEPS]  # the one validated step: the exported one
    logged = points[0]
    # Without the progress bar, each validation is one line on stderr.
    lines = [x for x in capsys.readouterr().err.splitlines() if "valid/" in x]
    assert len(lines) == 1 and lines[0].startswith(f"step {STEPS}/{STEPS}: ")
    assert f"valid/accuracy {logged['valid/accuracy']:.4g}," in lines[0]

    # The exported model, run as `evaluate` and `separate` load it, on every test soundscape.
    ts = TestSet(embedded_small / "test")
    model, variables, _ = load_tagger_any(workdir / "model")
    mix = np.stack([ts.load_mixture(i) for i in range(len(ts))])
    probs = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, mix))
    truth = [[labels_lib.class_index(x) for x in it.labels] for it in ts]
    target = np.asarray(labels_lib.multi_hot(labels_lib.to_slots(truth, labels_lib.MAX_SOURCES)))
    assert logged["valid/map"] == pytest.approx(metrics.average_precision(probs, target), abs=1e-6)
    bce = [float(metrics.bce(p[None], t[None])) for p, t in zip(probs, target, strict=True)]
    assert logged["valid/loss"] == pytest.approx(np.mean(bce), rel=1e-5)
    assert 0.0 < logged["valid/map"] <= 1.0

    out = tmp_path / "eval"
    assert evaluate.main(["--tagger", str(workdir / "model"), "--separator", str(tiny_models[1]),
                          "--data", str(embedded_small), "--out", str(out), "--no-oracle-pass",
                          "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["label_accuracy"] == pytest.approx(logged["valid/accuracy"], abs=1e-9)


def test_slot_taggers_do_not_validate_on_the_test_split():
    cfg = _config()
    cfg.task, cfg.model.head = "dcase2026", "slots"
    with pytest.raises(ValueError, match="valid_split='test'"):
        loop.check_config(cfg)
