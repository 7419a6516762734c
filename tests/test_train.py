"""Training: overfitting a fixed batch, non-finite skipping, exact resume, early config errors."""

import importlib.util
import io
import json
import os
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from tqdm import tqdm

from s5jax import mesh as mesh_lib
from s5jax.models.separator import build_separator, separator_config
from s5jax.models.tagger import build_tagger, tagger_config
from s5jax.training import loop, optim, steps
from s5jax.training.logging import read_jsonl
from s5jax.training.state import create_state
from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]
L = 8000  # 0.25 s: shapes stay tiny


def load_config(name: str, arg: str = "") -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """Persistent compilation cache, so the repeated loop runs compile their step once."""
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    jax.config.update(keys[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(keys[1], 0.0)
    jax.config.update(keys[2], 0)
    yield
    for k, v in old.items():
        jax.config.update(k, v)


def _fixed_batch(seed: int = 0, batch: int = 2):
    rng = np.random.default_rng(seed)
    dry = rng.standard_normal((batch, 3, L)).astype(np.float32) * 0.1
    labels = np.array([[3, 7, -1], [11, -1, -1]], np.int32)[:batch]
    dry *= (labels != -1)[..., None]
    noise = rng.standard_normal((batch, 4, L)).astype(np.float32) * 0.02
    mixture = dry.sum(1, keepdims=True) + noise
    return {"mixture": mixture, "dry": dry, "labels": labels}


def _optim(lr, schedule="constant"):
    return ml_collections.ConfigDict(dict(lr=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                          amsgrad=True, clip_norm=0.5, schedule=schedule,
                                          warmup_steps=0))


def _run_steps(task, model, variables, batch, n, lr, labels=None, schedule="constant"):
    """``n`` steps on ``batch``; the schedule runs over 100 steps (a cosine barely decays)."""
    mesh = mesh_lib.make_mesh()
    tx = optim.build_optimizer(_optim(lr, schedule), 100, labels)
    state = create_state(variables, tx, seed=0)
    step = steps.make_train_step(task, model, tx, mesh, param_labels=labels, donate=False,
                                 lr_schedule=optim.make_schedule(_optim(lr, schedule), 100))
    dev = mesh_lib.put_batch(batch, mesh)
    step = step.lower(state, dev).compile(quick_compile.OPTIONS)  # a few tiny steps
    losses = []
    for _ in range(n):
        state, m = step(state, dev)
        losses.append(float(m["loss"]))
    return state, losses, step, dev


def test_separator_overfits_fixed_batch():
    # One compiled separator only (the seed ResUNetK): compiling the trunk dominates the cost.
    cfg = separator_config(name="resunetk", channels=(2, 4, 4, 8, 8, 8), film="gamma_beta",
                           bottleneck="dprnn", dprnn_hidden=4)
    model = build_separator(cfg)
    variables = loop.init_variables(steps.SEPARATOR, model, cfg, 0)
    state, losses, _, _ = _run_steps(steps.SEPARATOR, model, variables, _fixed_batch(), 12, 3e-3)
    assert np.all(np.isfinite(losses))
    assert min(losses[-3:]) < losses[0] - 1.0, losses  # dB of SNR gained
    assert int(state.skipped) == 0
    # BatchNorm running statistics moved away from their init.
    stats = jax.tree.leaves(state.batch_stats)
    assert stats and any(float(jnp.max(jnp.abs(s - jnp.round(s)))) > 0 for s in stats)


def test_init_variables_compiled_at_level_1_are_bit_identical():
    """loop.init_variables compiles at XLA optimisation level 1 on the CPU (faster); the variables
    must be exactly those of the default compilation (the smoke preset's separator)."""
    cfg = load_config("resunetk", "smoke").model
    model = build_separator(cfg)
    ours = loop.init_variables(steps.SEPARATOR, model, cfg, 3)
    x, labels = jnp.zeros((1, 4, 3200), jnp.float32), jnp.zeros((1, cfg.slots), jnp.int32)
    default = jax.jit(lambda k: model.init(k, x, labels, train=False))(jax.random.PRNGKey(3))
    flat = jax.tree_util.tree_leaves_with_path(default["params"])
    assert len(flat) > 50
    mine = dict(jax.tree_util.tree_leaves_with_path(ours["params"]))
    for path, leaf in flat:
        np.testing.assert_array_equal(np.asarray(mine[path]), np.asarray(leaf), err_msg=str(path))
    # Shapes only (memory model, remat test): traced, so nothing is compiled with the options.
    shapes = jax.eval_shape(lambda: loop.init_variables(steps.SEPARATOR, model, cfg, 3))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == jax.tree.map(
        lambda a: (a.shape, a.dtype), ours)


def test_tagger_overfits_fixed_batch_and_skips_non_finite():
    cfg = tagger_config(embed_dim=16, depth=2, num_heads=2)
    model = build_tagger(cfg)
    variables = loop.init_variables(steps.TAGGER, model, cfg, 0)
    labels = loop.param_labels_for(steps.TAGGER, "adapters", variables["params"])
    batch = _fixed_batch()
    state, losses, step, dev = _run_steps(steps.TAGGER, model, variables, batch, 12, 1e-2,
                                          labels=labels, schedule="cosine")
    assert losses[-1] < 0.9 * losses[0], losses
    # Frozen encoder parameters did not move; adapters did.
    flat0 = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    flat1 = jax.tree.leaves(state.params)
    moved = {jax.tree_util.keystr(p): not np.array_equal(a, b)
             for (p, a), b in zip(flat0, flat1, strict=True)}
    assert any(v for k, v in moved.items() if "adapter" in k)
    assert not any(v for k, v in moved.items() if "qkv" in k or "patch" in k)

    bad = dict(batch, mixture=np.full_like(batch["mixture"], np.nan))
    mesh = mesh_lib.make_mesh()
    new, m = step(state, mesh_lib.put_batch(bad, mesh))
    assert int(m["skipped"]) == 1 and int(m["bad_streak"]) == 1
    assert int(new.step) == int(state.step) + 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    new2, m2 = step(new, dev)
    assert int(m2["bad_streak"]) == 0 and int(m2["skipped"]) == 1
    # The logged rate is the one the optimiser uses: its count did not advance on the skipped
    # step (the step counter did), so both steps log the schedule at 12 updates, not 13.
    lr_at = optim.make_schedule(_optim(1e-2, "cosine"), 100)
    assert float(lr_at(12)) != float(lr_at(13))
    assert float(m["learning_rate"]) == float(m2["learning_rate"]) == float(lr_at(12))


def test_resunet_query_slot_is_uniform_over_active_slots():
    labels = jnp.asarray(np.array([[4, 9, 2], [5, -1, -1], [-1, -1, -1]] * 2000, np.int32))
    idx = np.asarray(steps.pick_query_slot(labels, jax.random.PRNGKey(3)))
    first = idx[0::3]
    counts = np.bincount(first, minlength=3) / len(first)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.04)
    assert np.all(idx[1::3] == 0) and np.all(idx[2::3] == 0)


def _resume_config(num_steps: int) -> ml_collections.ConfigDict:
    cfg = load_config("m2d_at", "smoke")
    cfg.train.num_steps = num_steps
    cfg.train.log_every = 1
    cfg.train.eval_every = 1000
    cfg.train.eval_at_end = False
    cfg.train.checkpoint_every = 1000
    cfg.train.progress = False
    cfg.data.clip_seconds = 0.5
    return cfg


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_jsonl(workdir) if "train/loss" in r}


def test_resume_continues_exactly(tmp_path, compile_cache, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    loop.train_and_evaluate(_resume_config(4), str(full))
    # Without the progress bar (train.progress=false), one line per log step on stderr.
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("step ")]
    assert [x.split(":")[0] for x in lines] == [f"step {s}/4" for s in range(1, 5)]
    assert lines[-1].startswith(f"step 4/4: loss {_losses(full)[4]:.4g}, s/step ")
    # Re-running a finished run says so, and what it exported; nothing is trained or rewritten.
    before = (full / "log.jsonl").read_bytes()
    loop.train_and_evaluate(_resume_config(4), str(full))
    err = capsys.readouterr().err
    assert f"{full}: the run is complete at step 4 (train.num_steps=4); exported model: " \
        f"{full / 'model'} (checkpoint 4" in err
    assert (full / "log.jsonl").read_bytes() == before
    # A model/ holding another checkpoint than the config's rule chooses (as after a changed
    # train.best_mode) is re-exported from the chosen one, and the message says so.
    run_json = full / "model" / "run.json"
    run_json.write_text(json.dumps({"task": "dcase2025", "step": 3}))
    # A read-only work directory (os.access says so; as root, chmod would not) is still complete.
    real_access = os.access
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "access", lambda p, mode: False if mode & os.W_OK and str(p).startswith(
            str(tmp_path)) else real_access(p, mode))
        loop.train_and_evaluate(_resume_config(4), str(full))
    err = capsys.readouterr().err
    assert f"{full}: the run is complete at step 4" in err
    assert f"exported model: {full / 'model'} (checkpoint 3; this config's rule" in err
    assert f"chooses checkpoint 4, but {full} is not writable)" in err
    loop.train_and_evaluate(_resume_config(4), str(full))
    assert f"re-exported model: {full / 'model'} (checkpoint 4, " in capsys.readouterr().err
    assert json.loads(run_json.read_text())["step"] == 4
    loop.train_and_evaluate(_resume_config(2), str(part))
    assert sorted(_losses(part)) == [1, 2]
    longer = _resume_config(4)
    with pytest.raises(ValueError, match=r"cannot resume.*train.num_steps: 2 → 4 \(use another"):
        loop.train_and_evaluate(longer, str(part))  # the only difference is listed
    longer.train.allow_config_change = True
    capsys.readouterr()
    loop.train_and_evaluate(longer, str(part))
    err = capsys.readouterr().err
    assert f"resuming {part} from step 2 of 4" in err
    assert "note: config changed from step 2 on (saved as train_config.2.json" in err
    # The original config is kept; the changed one is recorded from the step it applies to.
    assert json.loads((part / "train_config.json").read_text())["train"]["num_steps"] == 2
    assert json.loads((part / "train_config.2.json").read_text())["train"]["num_steps"] == 4
    a, b = _losses(full), _losses(part)
    assert sorted(b) == [1, 2, 3, 4]  # continued from step 2, did not restart
    np.testing.assert_array_equal([a[s] for s in range(1, 5)], [b[s] for s in range(1, 5)])
    # Different data per step (the iterator advanced): losses are not all equal.
    assert len({a[s] for s in a}) > 1
    assert (full / "model" / "config.json").is_file()
    # The exported model keeps its run's edition wherever it is moved (separate's names).
    assert json.loads((full / "model" / "run.json").read_text()) == {"task": "dcase2025",
                                                                     "step": 4}
    cfg, variables = loop.ckpt_lib.load_any(full)
    assert cfg.name == "m2d_at" and "params" in variables


@pytest.mark.parametrize("layout", [lambda tx: tx, optax.flatten],
                         ids=["per-tensor", "flat-in-tree-order"])
def test_resume_names_an_optimiser_state_of_another_layout(tmp_path, compile_cache,
                                                            monkeypatch, layout):
    """A work directory whose optimiser moments are per tensor (before 2026-12-01) or one vector
    in tree order (2026-12-01; the same shapes as today's reverse order, so only the state's
    structure can tell) is refused with the way out, not only Orbax's tree mismatch, and never
    restored with its moments misplaced."""
    old = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(optim, "flattened", layout)
        loop.train_and_evaluate(_resume_config(1), str(old))
    longer = _resume_config(2)
    longer.train.allow_config_change = True
    with pytest.raises(ValueError, match=r"(?s)does not fit this config .*opt_state.*another "
                       r"layout: start a new work directory from its weights with "
                       rf"--config.init={re.escape(str(old))}$"):
        loop.train_and_evaluate(longer, str(old))


def _fake_checkpoint(work, step):
    """A step folder shaped as Orbax finishes one (what ``checkpoint_steps`` counts)."""
    d = work / "checkpoints" / str(step)
    (d / "state").mkdir(parents=True)
    (d / loop.ckpt_lib.ORBAX_METADATA).write_text("{}")


def test_resume_check_lists_only_the_differing_fields(tmp_path):
    work = tmp_path / "w"
    loop.ckpt_lib.write_train_config(work, load_config("resunetk", "smoke"))
    _fake_checkpoint(work, 10)
    same = load_config("resunetk", "smoke")
    assert loop.check_resume(same, work) == loop.Resume(step=10, changes=[])
    for field, value in (("optim.lr", 5e-4), ("train.num_steps", 40), ("data.root", "/x"),
                         ("data.clip_seconds", 2.0), ("data.seed", 3), ("data.batch_size", 4),
                         ("init", "/m"), ("train.seed", 1), ("model.bn_momentum", 0.5)):
        cfg = load_config("resunetk", "smoke")
        group, name = field.rsplit(".", 1) if "." in field else (None, field)
        (cfg if group is None else cfg[group])[name] = value
        with pytest.raises(ValueError) as e:
            loop.check_resume(cfg, work)
        msg = str(e.value)
        assert "cannot resume" in msg and f"{field}: " in msg and msg.count("→") == 1, msg
        cfg.train.allow_config_change = True
        resume = loop.check_resume(cfg, work)
        assert resume.step == 10 and sorted(c.split(":")[0] for c in resume.changes) == sorted(
            [field, "train.allow_config_change"])
    free = load_config("resunetk", "smoke")
    free.train.log_every, free.data.num_workers = 7, 2
    assert loop.check_resume(free, work).changes == ["data.num_workers: 0 → 2",
                                                      "train.log_every: 2 → 7"]
    init_only = load_config("resunetk", "smoke")
    init_only.model.head_init = "official" if init_only.model.head_init != "official" else "mixture"
    assert [c.split(":")[0] for c in loop.check_resume(init_only, work).changes] == [
        "model.head_init"]
    other = load_config("resunetk", "smoke")
    other.model.channels = (8, 8, 8, 8, 8, 8)
    other.train.allow_config_change = True
    with pytest.raises(ValueError, match="checkpoints are of another model: model.channels"):
        loop.check_resume(other, work)
    # A newer config file is what a resume compares with.
    changed = load_config("resunetk", "smoke")
    changed.optim.lr = 5e-4
    loop.ckpt_lib.write_train_config(work, changed, 10)
    assert loop.check_resume(changed, work).changes == []
    with pytest.raises(ValueError, match=r"\(train_config.10.json\).*optim.lr: 0.0005 → 0.001"):
        loop.check_resume(load_config("resunetk", "smoke"), work)


def test_a_finished_run_needs_no_init_folder_any_more(tmp_path):
    """Resuming restores everything from the checkpoint: the run's --config.init folder may be
    gone (before, it was read first and the same command failed)."""
    cfg = load_config("resunetk", "smoke")
    cfg.init = str(tmp_path / "deleted_model")
    work = tmp_path / "w"
    loop.ckpt_lib.write_train_config(work, cfg)
    _fake_checkpoint(work, int(cfg.train.num_steps))
    (work / "model" / "variables").mkdir(parents=True)
    (work / "model" / "config.json").write_text("{}")
    assert loop.validate(cfg, work).complete
    with pytest.raises(ValueError, match="deleted_model"):  # a new run still needs it
        loop.validate(cfg, tmp_path / "new")


def test_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    for w in (tmp_path / "f", tmp_path / "f" / "run"):
        with pytest.raises(ValueError, match=f"--workdir {w}: "):
            loop.check_workdir(w)


def test_progress_bar_shows_the_time_budget():
    # The bar's ETA counts steps to train.num_steps; a train.max_minutes budget may end the run
    # long before, so the postfix says how much of the budget is spent.
    assert loop._bar_postfix(0.31416, 90.0, None) == {"loss": "0.3142"}
    assert loop._bar_postfix(-1.5, 90.0, 45 * 60.0) == {"loss": "-1.5", "minutes": "1.5/45"}


def test_validation_shows_on_the_bar_and_stays_out_of_its_rate():
    # A validation takes minutes on a CPU (the small presets): the bar says it is validating,
    # and its elapsed time and rate stay those of the training steps.
    out = io.StringIO()
    bar = tqdm(total=10, file=out, mininterval=0)
    bar.update(1)

    def slow_validation():
        assert "validating=step 1" in out.getvalue()
        time.sleep(0.5)
        return {"valid/loss": 1.0}

    postfix = {"loss": "0.5"}
    assert loop._validate(bar, postfix, 1, slow_validation) == {"valid/loss": 1.0}
    assert bar.format_dict["elapsed"] < 0.4
    assert out.getvalue().rstrip().endswith("loss=0.5]")
    bar.close()


def test_step_time_after_a_validation_counts_the_steps_before_it(tmp_path, compile_cache,
                                                                  monkeypatch):
    """With a validation between two log steps (eval_every not a multiple of log_every), the
    logged step time is that of all the steps since the last log, validation excluded: each
    step here waits 0.5 s for its batch, so every step_time is ≥ 0.5 s (a reset of the step
    clock after the validation gave about half)."""

    class SlowBatches(loop.loader.DevicePrefetch):
        def __next__(self):
            time.sleep(0.5)
            return super().__next__()

    class FastValidation:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, state, logger=None, step=0):
            time.sleep(2.0)
            return {"valid/loss": 1.0, "valid/accuracy": 0.0, "valid/map": 0.0}

    monkeypatch.setattr(loop.loader, "DevicePrefetch", SlowBatches)
    monkeypatch.setattr(loop, "Evaluator", FastValidation)
    cfg = _resume_config(4)
    cfg.train.log_every, cfg.train.eval_every = 2, 3
    loop.train_and_evaluate(cfg, str(tmp_path / "run"))
    logged = {r["step"]: r for r in read_jsonl(tmp_path / "run") if "train/step_time" in r}
    assert sorted(logged) == [2, 4]
    assert logged[4]["train/step_time"] >= 0.45, logged[4]
    # Validation (2 s) stays out of the training seconds too.
    assert logged[4]["train/seconds"] - logged[2]["train/seconds"] < 2 * 0.5 + 1.8


def test_sigterm_during_a_validation_stops_at_that_step(tmp_path, compile_cache, monkeypatch,
                                                         capsys):
    """A SIGTERM that arrives while step 2 is validated stops the run there, with step 2's
    checkpoint (it trained step 3 first: no step was in flight)."""
    import signal

    class SignalledValidation:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, state, logger=None, step=0):
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler only records it
            return {"valid/loss": 1.0, "valid/accuracy": 0.0, "valid/map": 0.0}

    monkeypatch.setattr(loop, "Evaluator", SignalledValidation)
    cfg = _resume_config(6)
    cfg.train.eval_every = 2
    with pytest.raises(SystemExit) as e:
        loop.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert e.value.code == 143
    assert sorted(_losses(tmp_path / "run")) == [1, 2]
    assert loop.ckpt_lib.checkpoint_steps(tmp_path / "run") == [2]
    assert "stopping at step 2: SIGTERM received; checkpoint 2 saved" in capsys.readouterr().err


def _no_build(*args, **kwargs):
    raise AssertionError("model built before the config was validated")


def test_bad_configs_fail_before_compiling(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "build_model", _no_build)
    cfg = load_config("resunetk", "smoke")
    cfg.data.root = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="data.root.*no such dataset folder"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w1"))

    cfg = load_config("resunetk", "smoke")
    monkeypatch.setattr(jax, "device_count", lambda: 2)
    cfg.data.batch_size = 3
    with pytest.raises(ValueError, match="batch_size=3.*device count \\(2\\)"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w2"))
    monkeypatch.undo()
    monkeypatch.setattr(loop, "build_model", _no_build)

    # A work directory of another model: refuse to resume.
    work = tmp_path / "w3"
    other = load_config("resunetk", "smoke")
    other.model.channels = (8, 8, 8, 8, 8, 8)
    loop.ckpt_lib.write_train_config(work, other)
    _fake_checkpoint(work, 10)
    with pytest.raises(ValueError, match="cannot resume.*model"):
        loop.train_and_evaluate(load_config("resunetk", "smoke"), str(work))

    cfg = load_config("resunetk", "smoke")
    cfg.precision = "bfloat16"
    with pytest.raises(ValueError, match="model.dtype"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w4"))
    cfg = load_config("m2d_at", "smoke")
    cfg.trainable = "blocks:x"
    cfg.train.best_metric = "valid/ca_sdri"
    with pytest.raises(ValueError, match="best_metric"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w5"))
    cfg = load_config("resunetk", "smoke")
    cfg.optim.accumulate = 4  # batch 2
    with pytest.raises(ValueError, match="accumulate=4.*batch_size=2"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w6"))
    cfg = load_config("resunetk", "smoke")
    cfg.train.remat = "encoder"
    with pytest.raises(ValueError, match="train.remat='encoder'"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w7"))
    cfg = load_config("m2d_at", "smoke")
    cfg.train.remat = "blocks"
    with pytest.raises(ValueError, match="only separators"):
        loop.train_and_evaluate(cfg, str(tmp_path / "w8"))


def test_presets():
    with pytest.raises(ValueError, match="unknown config preset 'nope'.*baseline"):
        load_config("resunetk", "smoke,nope")
    base = load_config("resunet", "baseline")
    assert (base.model.film, base.model.bottleneck, base.data.batch_size) == ("beta", "none", 40)
    assert base.name == "resunet-baseline" and base.model.slots == 1
    one = load_config("resunet", "baseline_1gpu")
    assert (one.data.batch_size, one.optim.accumulate, one.train.remat) == (40, 4, "none")
    assert (one.model.film, one.model.bottleneck, one.name) == ("beta", "none",
                                                                "resunet-baseline_1gpu")
    seed = load_config("resunetk")
    assert (seed.model.film, seed.model.bottleneck) == ("gamma_beta", "dprnn")
    tag = load_config("m2d_at", "baseline_stage2,bf16")
    assert (tag.trainable, tag.model.adapters, tag.precision) == ("blocks:2", False, "bfloat16")
    assert json.loads(tag.to_json())["model"]["dtype"] == "bfloat16"


def test_init_adopts_tagger_norm_stats_and_keeps_fresh_adapters(tmp_path):
    """Fine-tuning from a converted model: its log-mel statistics come along (they belong to the
    weights), and seed-only parameters (adapters) absent from it keep their identity init."""
    cfg = load_config("m2d_at", "smoke")
    assert cfg.model.adapters
    base_cfg = ml_collections.ConfigDict(cfg.model.to_dict())
    base_cfg.adapters = False
    base_cfg.norm_stats = (-5.0, 3.0)
    base_vars = loop.init_variables(steps.TAGGER, build_tagger(base_cfg), base_cfg, 1)
    init_dir = loop.modeldir.save_model(tmp_path / "converted", base_cfg, base_vars)
    cfg.init = str(init_dir)

    plan = loop.validate(cfg, tmp_path / "work")
    assert tuple(cfg.model.norm_stats) == (-5.0, 3.0)
    fresh = loop.init_variables(steps.TAGGER, build_tagger(cfg.model), cfg.model, 0)
    merged = loop.merge_init(fresh, plan.init, str(init_dir))
    flat = jax.tree_util.tree_flatten_with_path(merged["params"])[0]
    loaded = dict(jax.tree_util.tree_flatten_with_path(base_vars["params"])[0])
    adapters = [v for p, v in flat if "adapter" in jax.tree_util.keystr(p)]
    assert adapters, "smoke tagger has adapters"
    for path, value in flat:
        if path in loaded:
            np.testing.assert_array_equal(value, loaded[path])


def test_logged_rate_and_param_norm_are_at_the_log_step_and_audio_spans_batches():
    """learning_rate and param_norm are their values after the log step (a window mean lags a
    warm-up), loss the window's mean; the separator's audio examples continue into the next
    validation batch until train.audio_examples are written."""
    recs = [{"loss": 1.0, "learning_rate": 1e-4, "param_norm": 5.0, "skipped": 0},
            {"loss": 3.0, "learning_rate": 2e-4, "param_norm": 6.0, "skipped": 1}]
    assert loop._host_mean(recs) == {"loss": 2.0, "learning_rate": 2e-4, "param_norm": 6.0,
                                     "skipped": 1.0}

    class Audio:
        tags: list = []

        def audio(self, step, tag, wave):
            self.tags.append(tag)

    ev = loop.Evaluator.__new__(loop.Evaluator)  # only _audio: no model, no compile
    ev.audio_examples = 3
    out = {"mixture": np.zeros((2, 4, 8)), "estimate": np.zeros((2, 3, 8)),
           "reference": np.zeros((2, 3, 8)), "labels": np.array([[4, -1, -1], [7, 2, -1]])}
    logger, n = Audio(), 0
    for _ in range(2):  # two batches of 2 mixtures, the weights all 1
        n = ev._audio(logger, 10, out, np.ones(2), n)
    assert n == 3
    assert [t for t in logger.tags if t.endswith("mixture")] == [
        "valid/0/mixture", "valid/1/mixture", "valid/2/mixture"]
    from s5jax.labels import CLASSES
    assert f"valid/2/0_{CLASSES[4]}/estimate" in logger.tags  # the next batch's first mixture
    assert not any(t.startswith("valid/3/") for t in logger.tags)
