"""scripts/bench_learning.py: the points it reads from a run's log and its summary line (the
training itself is tests/test_learning.py)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_learning  # noqa: E402

from s5jax import plots  # noqa: E402


def _rec(step, seconds, si):
    return {"step": step, "time": 0.0, "valid/loss": 1.0, "valid/snr": 0.0,
            "valid/ca_sdri": 5.0 + si / 10, "valid/ca_si_sdri": si, "valid/sdri": 4.0,
            "valid/floor_ca_sdri": 6.2, "valid/floor_ca_si_sdri": 0.0, "train/seconds": seconds}


def test_points_keep_validation_records_only():
    log = [{"step": 0, "params/total": 3.0}, _rec(0, 0.0, -9.0),
           {"step": 25, "train/loss": 0.5, "train/seconds": 60.0}, _rec(50, 120.0, 1.0),
           {"step": 50, "valid/loss": 0.4, "valid/accuracy": 85.0, "train/seconds": 9.0}]
    pts = bench_learning.points(log)
    assert [p["step"] for p in pts] == [0, 50, 50]
    assert pts[1] == {"step": 50, "seconds": 120.0, "ca_sdri": 5.1, "ca_si_sdri": 1.0,
                      "sdri": 4.0, "floor_ca_sdri": 6.2, "floor_ca_si_sdri": 0.0}
    assert pts[2] == {"step": 50, "seconds": 9.0, "accuracy": 85.0}


def test_summary_reports_the_spread_and_the_bar(tmp_path):
    learning = {"a": {"0": bench_learning.points([_rec(0, 0, -9), _rec(100, 600, 4.0)]),
                      "1": bench_learning.points([_rec(0, 0, -9), _rec(100, 610, 2.0)])}}
    runs = {"a": {"0": {"load_average_start": 1.5}, "1": {"load_average_start": 2.5}}}
    line = bench_learning.summarise(learning, runs)
    assert "CA-SI-SDRi 3.00 ± 1.41 dB" in line and "NOT met" in line  # one seed below +3
    assert "floor 6.20 dB" in line and "load average 1.5–2.5" in line
    fig = plots.plot_learning_curves(learning, ["ca_si_sdri", "ca_sdri"], tmp_path / "c.png",
                                     lines={"ca_sdri": (6.2, "floor")})
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert any(line.get_label() == "floor" for line in fig.axes[1].lines)


def test_run_folders_stay_under_out_whatever_the_config_path():
    assert bench_learning.slug("configs/resunetk.py:small,baseline") == "resunetk-small-baseline"
    assert bench_learning.slug("configs/resunetk.py:small") == "resunetk-small"
    # An absolute path (a user's own config file) must not escape OUT/runs/.
    assert bench_learning.slug("/home/me/exp/my_cfg.py:small") == "my_cfg-small"
    assert bench_learning.slug("configs/m2d_at.py") == "m2d_at"


def test_variants_whose_run_folders_collide_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="collide"):
        bench_learning.main(["--variants", "configs/resunetk.py:small;/elsewhere/resunetk.py:small",
                             "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("variant, culprit", [
    (f"{ROOT}/configs/nope.py", f"{ROOT}/configs/nope.py: no such config file"),
    (f"{ROOT}/configs/resunetk.py:smokey", "unknown config preset 'smokey'"),
    # Validated on the validation mixtures: no held-out curve (it crashed after training).
    (f"{ROOT}/configs/resunetk.py:smoke", "does not validate on the held-out test soundscapes"),
    (";", "no config given"),
])
def test_bad_variant_is_a_usage_error_before_anything_is_written(tmp_path, capsys, variant,
                                                                   culprit):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        bench_learning.main(["--variants", variant if variant == ";" else
                             f"{ROOT}/configs/resunetk.py:small;{variant}", "--out", str(out)])
    assert e.value.code == 2
    assert culprit in capsys.readouterr().err
    assert not out.exists()


def _finished_run(out, spec, seed, **settings):
    """A run folder under ``out/runs`` as training leaves it (train_config.json, a checkpoint),
    for the config ``bench_learning`` builds with ``settings`` (no training)."""
    import argparse

    from s5jax.training import checkpoint

    args = argparse.Namespace(**{"steps": None, "minutes": None, "eval_every": None,
                                 "valid_limit": None, "no_progress": True, **settings})
    workdir = out / "runs" / bench_learning.slug(spec) / f"seed{seed}"
    checkpoint.write_train_config(workdir, bench_learning.run_config(spec, seed, args))
    step = workdir / "checkpoints" / "5"
    (step / "state").mkdir(parents=True)
    (step / checkpoint.ORBAX_METADATA).write_text("{}")
    return workdir, args


def test_a_rerun_that_changes_a_runs_config_is_refused_before_training(tmp_path, capsys):
    """A re-run on the same --out with another --steps ended, when that run's turn came (after
    the runs before it had trained), in training's refusal with its hint to pass --workdir or
    train.allow_config_change, which this script does not take. Now: one usage error at once,
    saying what to do here."""
    spec = f"{ROOT}/configs/resunetk.py:small"
    out = tmp_path / "out"
    workdir, _ = _finished_run(out, spec, 1, steps=5)
    with pytest.raises(SystemExit) as e:
        bench_learning.main(["--variants", spec, "--seeds", "2", "--steps", "7", "--out",
                             str(out), "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (f"--out {out}: {workdir} holds a run trained with another config "
            "(train.num_steps: 5 there, 7 now)") in err
    assert f"use a new --out, or delete {workdir} to train that run again" in err
    assert "allow_config_change" not in err and "--workdir" not in err
    assert not (out / "runs.json").exists()  # nothing trained


def test_a_rerun_with_the_same_or_a_watching_setting_resumes(tmp_path):
    spec = f"{ROOT}/configs/resunetk.py:small"
    workdir, args = _finished_run(tmp_path, spec, 0, steps=5)
    assert bench_learning.resume_conflict(bench_learning.run_config(spec, 0, args), workdir) \
        is None
    # train.max_minutes and train.eval_every only change how the run is watched and bounded.
    args.minutes, args.eval_every = 3.0, 2
    assert bench_learning.resume_conflict(bench_learning.run_config(spec, 0, args), workdir) \
        is None


def test_each_run_trains_with_its_seed_in_its_folder(tmp_path, monkeypatch):
    """The runs as main builds them (seed-major, one folder each), with training replaced by a
    log of two validation points."""
    import json

    trained = []

    def train(cfg, workdir):
        trained.append((cfg.train.seed, cfg.data.seed, int(cfg.train.num_steps), workdir))
        Path(workdir).mkdir(parents=True)
        (Path(workdir) / "log.jsonl").write_text(
            "".join(json.dumps(_rec(s, s, 1.0)) + "\n" for s in (0, 3)))

    monkeypatch.setattr(bench_learning.loop, "train_and_evaluate", train)
    # Not this test process's compilation cache: main points it under --out.
    monkeypatch.setattr(bench_learning.jax.config, "update", lambda *a: None)
    spec = f"{ROOT}/configs/resunetk.py:small"
    out = tmp_path / "out"
    assert bench_learning.main(["--variants", spec, "--seeds", "2", "--steps", "3", "--out",
                                str(out), "--no-progress"]) == 0
    assert trained == [(s, s, 3, str(out / "runs" / "resunetk-small" / f"seed{s}"))
                       for s in (0, 1)]
    runs = json.loads((out / "runs.json").read_text())[spec]
    assert runs["1"]["steps"] == 3 and runs["1"]["bound"] == "steps"


@pytest.mark.parametrize("option", ["--steps", "--minutes", "--eval-every", "--valid-limit"])
def test_a_budget_that_is_not_positive_is_refused_when_parsed(tmp_path, capsys, option):
    """--steps 0 was training's ValueError traceback when the first run started."""
    with pytest.raises(SystemExit) as e:
        bench_learning.main([option, "0", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert f"argument {option}: '0': expected" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
