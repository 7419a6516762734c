"""Training checkpoints: latest-N + best retention, iterator state, work dirs; model dirs."""

import logging

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from s5jax import modeldir
from s5jax.training import checkpoint as ck


class _Iter:
    """Stand-in for the loader's iterator: only get_state/set_state matter here."""

    def __init__(self, pos=0):
        self.pos = pos

    def get_state(self):
        return {"pos": self.pos, "nested": {"workers": [self.pos, self.pos + 1]}}

    def set_state(self, state):
        self.pos = state["pos"]


def _state(v: float):
    return {"params": {"w": jnp.full((3,), v)}, "batch_stats": {"m": jnp.full((2,), -v)},
            "opt_state": {"mu": jnp.zeros(3)}, "step": jnp.asarray(int(v), jnp.int32)}


def _train_config():
    return ml_collections.ConfigDict(dict(
        model=dict(name="resunetk", channels=(1, 2)),
        train=dict(best_metric="valid/loss", best_mode="min"),
    ))


def test_keeps_latest_and_best_and_restores_iterator(tmp_path, caplog):
    ck.write_train_config(tmp_path, _train_config())
    mgr = ck.CheckpointManager(tmp_path, keep=2, best_metric="valid/loss", best_mode="min")
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: None, 5: 3.0}
    with caplog.at_level(logging.WARNING, logger="absl"):
        for step, loss in losses.items():
            metrics = None if loss is None else {"valid/loss": loss, "valid/x": 0.0}
            mgr.save(step, _state(step), _Iter(step * 10), metrics=metrics)
    mgr.wait()
    # Step 4's save without metrics, and opening the directory read-only, are by design: Orbax's
    # warnings about them are filtered out.
    with caplog.at_level(logging.WARNING, logger="absl"):
        ck.CheckpointManager(tmp_path, keep=2, read_only=True).close()
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
    assert mgr.all_steps() == [2, 4, 5]  # latest two + best (step 2)
    assert mgr.best_step() == 2
    assert mgr.latest_step() == 5
    it = _Iter()
    abstract = _state(0.0)
    restored = mgr.restore(4, abstract, data_iterator=it)
    assert it.pos == 40
    np.testing.assert_array_equal(restored["params"]["w"], np.full(3, 4.0))
    mgr.close()

    # A work directory loads as a model: the best checkpoint's params and batch_stats.
    cfg, variables = ck.load_any(tmp_path)
    # Also when only a resumed run's config file is left (training reads the latest).
    (tmp_path / "train_config.json").rename(tmp_path / "train_config.3.json")
    assert ck.load_any(tmp_path)[0].name == "resunetk"
    (tmp_path / "train_config.3.json").rename(tmp_path / "train_config.json")
    assert cfg.name == "resunetk" and tuple(cfg.channels) == (1, 2)
    np.testing.assert_array_equal(variables["params"]["w"], np.full(3, 2.0))
    np.testing.assert_array_equal(variables["batch_stats"]["m"], np.full(2, -2.0))
    with pytest.raises(ValueError, match="holds a 'resunetk' model"):
        ck.load_any(tmp_path, names=["m2d_at"])

    # A run validated on the test soundscapes is not chosen by them: its model is the latest.
    on_test = _train_config()
    on_test.data = ml_collections.ConfigDict({"valid_split": "test"})
    ck.write_train_config(tmp_path, on_test)
    _, variables = ck.load_any(tmp_path)
    np.testing.assert_array_equal(variables["params"]["w"], np.full(3, 5.0))
    reader = ck.CheckpointManager(tmp_path, best_metric="valid/loss", read_only=True)
    assert ck.model_step(reader, on_test) == 5 and ck.model_step(reader, _train_config()) == 2
    reader.close()


def test_best_mode_max_and_latest_fallback(tmp_path):
    cfg = _train_config()
    cfg.train.best_metric, cfg.train.best_mode = "valid/acc", "max"
    ck.write_train_config(tmp_path, cfg)
    mgr = ck.CheckpointManager(tmp_path, keep=1, best_metric="valid/acc", best_mode="max")
    for step, acc in ((1, 0.2), (2, 0.9), (3, 0.5)):
        mgr.save(step, _state(step), metrics={"valid/acc": acc})
    mgr.wait()
    assert mgr.all_steps() == [2, 3]
    mgr.close()
    np.testing.assert_array_equal(ck.load_any(tmp_path)[1]["params"]["w"], np.full(3, 2.0))

    other = tmp_path / "no_metrics"
    ck.write_train_config(other, _train_config())
    mgr = ck.CheckpointManager(other, keep=1)
    mgr.save(7, _state(7))
    mgr.wait()
    mgr.close()
    np.testing.assert_array_equal(ck.load_any(other)[1]["params"]["w"], np.full(3, 7.0))


def test_model_directory_round_trip_and_errors(tmp_path):
    cfg = ml_collections.ConfigDict(dict(name="m2d_at", depth=2))
    variables = {"params": {"a": np.arange(3, dtype=np.float32)}, "batch_stats": {}}
    out = modeldir.save_model(tmp_path / "m", cfg, variables)
    cfg2, var2 = modeldir.load_model(out, names=["m2d_at"])
    assert cfg2.depth == 2
    np.testing.assert_array_equal(var2["params"]["a"], variables["params"]["a"])
    with pytest.raises(ValueError, match="already exists"):
        modeldir.save_model(tmp_path / "m", cfg, variables)
    with pytest.raises(ValueError, match="holds a 'm2d_at' model"):
        modeldir.load_model(out, names=["resunet"])
    with pytest.raises(ValueError, match="holds a 'm2d_at' model"):
        ck.load_any(out, names=["resunet"])
    with pytest.raises(ValueError, match="not an s5jax model directory"):
        modeldir.load_model(tmp_path)
    with pytest.raises(ValueError, match="nor a training work directory"):
        ck.load_any(tmp_path)
    empty = tmp_path / "run"
    ck.write_train_config(empty, _train_config())
    (empty / ck.CHECKPOINTS_DIR).mkdir()
    with pytest.raises(ValueError, match="without any checkpoint"):
        ck.load_any(empty)
    with pytest.raises(ValueError, match="best_mode"):
        ck.CheckpointManager(tmp_path / "x", best_mode="up")


def test_foreign_step_folders_and_damaged_checkpoints_are_named(tmp_path):
    import shutil

    ck.write_train_config(tmp_path, _train_config())
    mgr = ck.CheckpointManager(tmp_path, keep=2)
    for step in (1, 2):
        mgr.save(step, _state(step), _Iter(step))
    mgr.wait()
    mgr.close()
    assert ck.checkpoint_steps(tmp_path) == [1, 2]
    (tmp_path / "checkpoints" / "notes").mkdir()  # not a step: ignored
    assert ck.checkpoint_steps(tmp_path) == [1, 2]
    # An empty step folder, or a copy under a name Orbax does not write, would be taken for the
    # latest checkpoint (or a silent restart from scratch) while Orbax skips it.
    for name, src in (("9", None), ("0004", tmp_path / "checkpoints" / "2")):
        bad = tmp_path / "checkpoints" / name
        shutil.copytree(src, bad) if src else bad.mkdir()
        with pytest.raises(ValueError, match=f"checkpoints/{name}: not a complete checkpoint"):
            ck.checkpoint_steps(tmp_path)
        shutil.rmtree(bad)
    # A damaged checkpoint is named, whichever Orbax, TensorStore or JSON error it raises.
    state = tmp_path / "checkpoints" / "2" / "state"
    for p in state.rglob("*"):
        if p.is_file():
            p.write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoints/2: checkpoint is damaged or incomplete"):
        ck.load_any(tmp_path)
    shutil.rmtree(state)
    with pytest.raises(ValueError, match=r"checkpoints/2: checkpoint is damaged or incomplete "
                                         r"\(KeyError: 'Item \"state\" was not found"):
        ck.load_any(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoints/2: not a complete checkpoint"):
        ck.checkpoint_steps(tmp_path)
