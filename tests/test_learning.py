"""Learning regression: a tiny run of the real training loop learns to separate held-out
sounds, and what it logs is what ``evaluate --oracle-labels`` reports for its exported model.

Not a timing test: fixed seeds, a fixed step count (about a minute on a 2-core CPU).
"""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from s5jax import evaluate
from s5jax.training import loop
from s5jax.training.logging import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
# One worker for the module: under `pytest -n 2 --dist loadgroup` its tests would otherwise be
# spread over both, and each worker would train the module fixture's run again (~100 s).
pytestmark = pytest.mark.xdist_group("learning")


def _config():
    spec = importlib.util.spec_from_file_location("cfg_learning", ROOT / "configs" /
                                                  "resunetk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config("smoke")
    cfg.data.valid_split = "test"  # the held-out soundscapes evaluate reads
    cfg.data.valid_limit = None
    cfg.train.num_steps = STEPS
    cfg.train.eval_every = STEPS // 2
    cfg.train.checkpoint_every = STEPS // 2
    cfg.train.log_every = 10
    cfg.train.eval_at_start = True
    cfg.train.progress = False
    cfg.train.audio_examples = 0
    cfg.train.best_metric = "valid/ca_si_sdri"
    cfg.train.best_mode = "max"
    return cfg


@pytest.fixture(scope="module")
def learned_run(embedded_small, tmp_path_factory):
    cfg = _config()
    cfg.data.root = str(embedded_small)
    workdir = tmp_path_factory.mktemp("learning") / "run"
    loop.train_and_evaluate(cfg, str(workdir))
    return workdir, [r for r in read_jsonl(workdir) if "valid/ca_si_sdri" in r]


def test_held_out_ca_si_sdri_rises_above_step_0(learned_run):
    _, points = learned_run
    assert [p["step"] for p in points] == [0, STEPS // 2, STEPS]
    start = points[0]["valid/ca_si_sdri"]
    assert max(p["valid/ca_si_sdri"] for p in points[1:]) > start + 0.5, points
    for p in points:
        # The scaled-mixture floor is the data's, not the model's: the same at every step.
        assert p["valid/floor_ca_sdri"] == pytest.approx(points[0]["valid/floor_ca_sdri"])
        assert abs(p["valid/floor_ca_si_sdri"]) < 1e-3
        assert math.isfinite(p["valid/sdri"])
    assert points[-1]["train/seconds"] > points[1]["train/seconds"] > 0
    assert points[0]["train/seconds"] == 0


def test_evaluate_reports_what_the_run_logged(learned_run, embedded_small, tmp_path):
    workdir, points = learned_run
    # The exported checkpoint is the last: a run validated on the test split is not chosen by
    # it (checkpoint.model_step), however its best_metric ranks the points.
    last = points[-1]
    out = tmp_path / "eval"
    assert evaluate.main(["--oracle-labels", "--separator", str(workdir / "model"), "--data",
                          str(embedded_small), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    # Same computation on the same soundscapes; only batch shapes differ (float32 rounding).
    for key in ("ca_sdri", "ca_si_sdri", "floor_ca_sdri", "floor_ca_si_sdri"):
        assert res[key] == pytest.approx(last[f"valid/{key}"], abs=1e-3), key
    assert res["oracle_sdri"] == pytest.approx(last["valid/sdri"], abs=1e-3)


def test_max_minutes_ends_the_run_after_the_step_that_exhausts_it(learned_run, embedded_small,
                                                                   tmp_path, capsys):
    workdir, points = learned_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    cfg = _config()
    cfg.data.root = str(embedded_small)
    cfg.train.num_steps = STEPS + 20
    # A budget the resumed run exhausts with its first step (the count continues).
    cfg.train.max_minutes = (points[-1]["train/seconds"] + 1e-3) / 60
    cfg.train.allow_config_change = True
    loop.train_and_evaluate(cfg, str(copy))
    err = capsys.readouterr().err
    assert (f"stopping at step {STEPS + 1} of {STEPS + 20}: config.train.max_minutes="
            f"{cfg.train.max_minutes} of training reached\n") in err  # constant rate: no more
    after = [r for r in read_jsonl(copy) if "valid/ca_si_sdri" in r]
    assert after[-1]["step"] == STEPS + 1  # validated at the step that stopped it
    assert after[-1]["train/seconds"] > points[-1]["train/seconds"]
    assert (copy / "checkpoints" / str(STEPS + 1)).is_dir()
    # Spent: running it again does nothing (no step, nothing logged), and says which checkpoint
    # it exported: the last, since the run validates on the test split.
    n = len(read_jsonl(copy))
    capsys.readouterr()
    loop.train_and_evaluate(cfg, str(copy))
    assert len(read_jsonl(copy)) == n
    assert (f"(checkpoint {STEPS + 1}, the last: a run validated on the test split does not "
            "choose its model by it)") in capsys.readouterr().err
    # With its model/ deleted, it exports it again and trains nothing past the budget.
    shutil.rmtree(copy / "model")
    loop.train_and_evaluate(cfg, str(copy))
    assert len(read_jsonl(copy)) == n and (copy / "model" / "config.json").is_file()
    assert not (copy / "checkpoints" / str(STEPS + 2)).exists()
    assert f"the run is complete at step {STEPS + 1}" in capsys.readouterr().err


def test_budget_stop_names_a_learning_rate_schedule_cut_short():
    """A decaying schedule stopped by the time budget is named, with the steps that fit."""
    from s5jax.training import optim

    cfg = _config()
    cfg.train.num_steps, cfg.train.max_minutes = 2500, 45.0
    cfg.optim.update(dict(lr=5e-4, warmup_steps=200, schedule="cosine"))
    sched = optim.make_schedule(cfg.optim, 2500)
    msg = loop._budget_stop_message(cfg, 1470, 2700.0, sched)
    assert msg.startswith("stopping at step 1470 of 2500: config.train.max_minutes=45.0 of "
                          "training reached; the learning rate (cosine schedule to step 2500) is ")
    lr = float(msg.split(") is ")[1].split(",")[0])
    assert lr == pytest.approx(float(sched(1470)), rel=1e-2) and lr > 1e-4
    assert "not its final 0: about 1470 steps fit this budget" in msg
    # Skipped steps did not advance the optimiser's count: its rate is read there.
    skipped = loop._budget_stop_message(cfg, 1470, 2700.0, sched, skipped=400)
    assert float(skipped.split(") is ")[1].split(",")[0]) == pytest.approx(float(sched(1070)),
                                                                          rel=1e-2)
    # At the schedule's end (or with a constant rate) there is nothing to add.
    assert "learning rate" not in loop._budget_stop_message(cfg, 2500, 2700.0, sched)
    cfg.optim.schedule = "constant"
    sched = optim.make_schedule(cfg.optim, 2500)
    assert "learning rate" not in loop._budget_stop_message(cfg, 1470, 2700.0, sched)
