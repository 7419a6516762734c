"""S5Pipeline: chunking with cross-faded joins, oracle/predicted modes, real tiny models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.inference.chunking import chunk_plan, separate_chunked
from s5jax.inference.loading import load_pipeline, load_separator_any, load_tagger_any
from s5jax.inference.pipeline import S5Pipeline

SR = 32000


class LocalSep(nn.Module):
    """Exactly local in time: output sample t depends only on input sample t."""

    @nn.compact
    def __call__(self, mixture, labels, train=False):
        gain = 0.1 * (labels.astype(jnp.float32) + 2.0)[..., None]
        y = jnp.tanh(mixture[:, :1] * gain) + 0.01 * mixture[:, 1:2]
        return y * (labels >= 0).astype(y.dtype)[..., None]


class ChunkOffsetSep(nn.Module):
    """Not local: adds the chunk's mean of channel 0, so every chunk's output is distinct."""

    @nn.compact
    def __call__(self, mixture, labels, train=False):
        off = jnp.mean(mixture[:, :1], axis=-1, keepdims=True) * 100.0
        y = mixture[:, :1] + off + labels.astype(jnp.float32)[..., None]
        return y * (labels >= 0).astype(y.dtype)[..., None]


class FixedTagger(nn.Module):
    probs: tuple

    @nn.compact
    def __call__(self, mixture, train=False):
        return jnp.broadcast_to(jnp.asarray(self.probs, jnp.float32), (mixture.shape[0], 18))


@pytest.mark.parametrize(
    "length,chunk,overlap",
    [(25, 10, 1), (800000, 320000, 32000), (19, 10, 1), (28, 10, 3), (11, 10, 0), (7, 10, 2)],
)
def test_chunk_weights_sum_to_one(length, chunk, overlap):
    starts, w = chunk_plan(length, chunk, overlap)
    total = np.zeros(length)
    for k, s in enumerate(starts):
        total[s : s + w.shape[1]] += w[k]
        assert s + w.shape[1] <= length
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert starts[0] == 0 and starts[-1] + w.shape[1] == length
    if length > chunk:
        # Every overlap is at least `overlap` long, and each fade lies inside its overlap.
        for j in range(len(starts) - 1):
            assert starts[j] + chunk - starts[j + 1] >= overlap
            assert np.all(w[j + 1, : max(0, starts[j] + chunk - starts[j + 1])][:1] <= 1)


def test_chunk_plan_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        chunk_plan(100, 10, 4)


@pytest.fixture(scope="module")
def long_mixture():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.standard_normal((1, 4, 25 * SR)).astype(np.float32) * 0.3)


def test_local_separator_chunked_equals_unchunked(long_mixture):
    pipe = S5Pipeline(None, None, LocalSep(), {})
    labels = np.array([[2, 15, -1]], np.int32)
    out = pipe(long_mixture, labels)
    full = LocalSep().apply({}, long_mixture, jnp.asarray(labels))
    assert out["waveforms"].shape == (1, 3, 25 * SR)
    np.testing.assert_allclose(out["waveforms"], full, atol=1e-6)
    assert float(jnp.abs(out["waveforms"][:, 2]).max()) == 0.0
    assert out["probabilities"] is None


def test_chunk_regions_away_from_joins_equal_separate_calls(long_mixture):
    pipe = S5Pipeline(None, None, ChunkOffsetSep(), {})
    labels = np.array([[4, -1, -1]], np.int32)
    out = np.asarray(pipe(long_mixture, labels)["waveforms"])
    chunk, overlap = 10 * SR, SR
    starts, w = chunk_plan(25 * SR, chunk, overlap)
    assert starts == [0, 9 * SR, 15 * SR]
    owned = 0
    for k, s in enumerate(starts):
        ref = np.asarray(ChunkOffsetSep().apply(
            {}, long_mixture[..., s : s + chunk], jnp.asarray(labels)))
        own = w[k] == 1.0
        owned += own.sum()
        # (equal up to float reduction order of the chunk mean in a batched vs single call)
        np.testing.assert_allclose(out[..., s : s + chunk][..., own], ref[..., own], rtol=1e-6)
        # Inside the fades the output is the weighted mix of neighbouring chunks, not one chunk.
        fade = (w[k] > 0) & (w[k] < 1)
        # (a few fade samples round to exactly 0 or 1 in float32)
        n_fades = 1 if k in (0, len(starts) - 1) else 2
        assert n_fades * (overlap - 16) <= fade.sum() <= n_fades * overlap
        assert not np.allclose(out[..., s : s + chunk][..., fade], ref[..., fade])
    assert 25 * SR - 2 * overlap <= owned <= 25 * SR - 2 * overlap + 32


def test_short_input_no_padding():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 4, 12345)).astype(np.float32))
    pipe = S5Pipeline(None, None, ChunkOffsetSep(), {})
    labels = [["Speech"], ["Blender", "Dishes"]]
    out = pipe(x, labels)
    assert out["waveforms"].shape == (2, 3, 12345)
    ref = ChunkOffsetSep().apply({}, x, jnp.asarray(out["labels"]))
    np.testing.assert_allclose(out["waveforms"], ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], [[15, -1, -1], [2, 7, -1]])


def test_predicted_mode_uses_decision_rule():
    probs = np.full(18, 0.1, np.float32)
    probs[[3, 9, 12, 16]] = [0.9, 0.6, 0.7, 0.95]  # 4 above threshold → top 3, class order
    pipe = S5Pipeline(FixedTagger(tuple(probs.tolist())), {}, LocalSep(), {})
    x = jnp.ones((2, 4, 3000)) * 0.5
    out = pipe(x)
    np.testing.assert_array_equal(out["labels"], [[3, 12, 16]] * 2)
    np.testing.assert_allclose(out["probabilities"][0], probs)
    ref = LocalSep().apply({}, x, out["labels"])
    # Jitted pipeline vs eager apply: equal up to float32 rounding (numpy's default rtol, 1e-7,
    # is below one float32 ulp; XLA at another optimisation level differs by one ulp).
    np.testing.assert_allclose(out["waveforms"], ref, rtol=1e-6)
    low = np.full(18, 0.1, np.float32)
    low[5] = 0.2
    out = S5Pipeline(FixedTagger(tuple(low.tolist())), {}, LocalSep(), {})(x)
    np.testing.assert_array_equal(out["labels"], [[5, -1, -1]] * 2)  # arg-max fallback
    out = S5Pipeline(FixedTagger(tuple(low.tolist())), {}, LocalSep(), {}, allow_empty=True)(x)
    np.testing.assert_array_equal(out["labels"], [[-1, -1, -1]] * 2)
    assert float(jnp.abs(out["waveforms"]).max()) == 0.0


def test_bad_inputs():
    pipe = S5Pipeline(None, None, LocalSep(), {})
    with pytest.raises(ValueError, match="batch, channels, samples"):
        pipe(jnp.zeros((4, 100)), [["Speech"]])
    with pytest.raises(ValueError, match="label rows"):
        pipe(jnp.zeros((2, 4, 100)), [["Speech"]])
    with pytest.raises(ValueError, match="oracle labels"):
        pipe(jnp.zeros((1, 4, 100)))


@pytest.fixture(scope="module")
def tiny_separator():
    from s5jax.models.separator import build_separator, separator_config

    cfg = separator_config(name="resunet", channels=(4, 4, 8, 8, 8, 8))
    model = build_separator(cfg)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4, 8000)),
                                    jnp.zeros((1, 3), jnp.int32))
    return model, variables


def test_real_separator_joins(tiny_separator):
    model, variables = tiny_separator
    t = np.arange(int(2.5 * SR)) / SR
    rng = np.random.default_rng(2)
    # Smooth input (a few low tones) so that real discontinuities would stand out.
    sig = sum(np.sin(2 * np.pi * f * t + p) for f, p in [(110, 0.3), (220, 1.0), (330, 2.0)])
    x = np.stack([sig * g for g in (0.3, 0.1, -0.1, 0.05)])[None].astype(np.float32)
    x += 1e-3 * rng.standard_normal(x.shape).astype(np.float32)
    labels = np.array([[1, 8, -1]], np.int32)
    pipe = S5Pipeline(None, None, model, variables, chunk_seconds=1.0, overlap_seconds=0.25)
    out = np.asarray(pipe(jnp.asarray(x), labels)["waveforms"])
    assert out.shape == (1, 3, x.shape[-1]) and np.isfinite(out).all()
    assert np.abs(out[:, 2]).max() == 0.0
    starts, w = chunk_plan(x.shape[-1], SR, SR // 4)
    # Regions owned by one chunk equal that chunk's separate run (batched pass is per item).
    for k, s in enumerate(starts):
        ref = np.asarray(model.apply(variables, jnp.asarray(x[..., s : s + SR]),
                                     jnp.asarray(labels)))
        own = w[k] == 1.0
        np.testing.assert_allclose(out[..., s : s + SR][..., own], ref[..., own],
                                   atol=1e-5 * np.abs(ref).max())
    # No discontinuity at the joins: sample-to-sample jumps in the fades are no larger than
    # the largest jump elsewhere.
    fade = np.zeros(x.shape[-1], bool)
    for k, s in enumerate(starts):
        fade[s : s + SR] |= (w[k] > 0) & (w[k] < 1)
    jumps = np.abs(np.diff(out[0, :2], axis=-1))
    at_joins = jumps[:, fade[1:] | fade[:-1]].max()
    elsewhere = jumps[:, ~(fade[1:] | fade[:-1])].max()
    assert at_joins <= elsewhere, (at_joins, elsewhere)


def test_separate_chunked_matches_function():
    def fn(m, lab):
        return jnp.repeat(m[:, :1], lab.shape[1], axis=1) * 2.0

    x = jnp.arange(2 * 4 * 50, dtype=jnp.float32).reshape(2, 4, 50)
    lab = jnp.zeros((2, 3), jnp.int32)
    y = separate_chunked(fn, x, lab, 20, 5)
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, fn(x, lab), rtol=1e-6)


@pytest.mark.parametrize("batch_chunks", [1, 2, 4, 16])
def test_separate_chunked_streams_fixed_size_groups(batch_chunks):
    """Every call gets the same shape (min(batch_chunks, chunks) chunks; a short last group is
    padded), whatever the input length; the result does not depend on the grouping."""
    shapes = []

    def fn(m, lab):
        shapes.append((m.shape, lab.shape))
        off = np.mean(m[:, :1], axis=-1, keepdims=True)  # chunk-dependent, as a real model
        return np.repeat(m[:, :1] + off, lab.shape[1], axis=1) * (lab[..., None] + 1.0)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 1000)).astype(np.float32)
    lab = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    y = separate_chunked(fn, x, lab, 100, 20, batch_chunks)
    starts, w = chunk_plan(1000, 100, 20)
    n = len(starts)
    g = min(batch_chunks, 2 * n)
    assert len(shapes) == -(-2 * n // g) and set(shapes) == {((g, 4, 100), (g, 3))}
    ref = np.zeros_like(y)
    for b in range(2):
        for k, s in enumerate(starts):
            ref[b, :, s:s + 100] += fn(x[b:b + 1, :, s:s + 100], lab[b:b + 1])[0] * w[k]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", [
    {},
    {"features": "stacked", "pool": "meanmax"},
    {"in_channels": 4, "head": "slots"},
])
def test_streamed_tagger_equals_whole_clip(overrides):
    """A long input through the tagger chunk by chunk (reflect-padded sample windows of one
    encoder chunk each) gives the whole-clip tagger's output."""
    from s5jax.models import tagger as tag

    cfg = tag.tagger_config(embed_dim=32, depth=1, num_heads=2, adapters=False, **overrides)
    model = tag.build_tagger(cfg)
    variables = jax.tree.map(np.asarray, tag.init_variables(model, seed=1, samples=8000))
    variables["batch_stats"]["head_norm"]["var"] = np.full_like(
        variables["batch_stats"]["head_norm"]["var"], 1e-3)  # make the head sensitive
    pipe = S5Pipeline(model, variables, LocalSep(), {})
    rng = np.random.default_rng(4)
    # 2 full chunks + 5 frames (a last chunk too short for a patch: no tokens), then
    # 2 chunks + 300 frames (a partial last chunk with zero padding).
    for frames in (2007, 2302) if not overrides else (2302,):
        x = (0.1 * rng.standard_normal((2, 4, (frames - 1) * 320 + 17))).astype(np.float32)
        assert pipe._streamed_tagger(x.shape[-1])
        whole = np.asarray(jax.jit(model.apply)(variables, x))
        streamed = np.asarray(pipe.tag(x))
        np.testing.assert_allclose(streamed, whole, atol=2e-5, rtol=1e-4)


def _torch_reference_pipeline(torch, tag_ref, sep_ref, x):
    """The baseline's S5.predict_label_separate on the reference models (spec §4.5, §6.1)."""
    with torch.no_grad():
        probs = tag_ref(x)
        labels = torch.full((x.shape[0], 3), -1, dtype=torch.long)
        for b in range(x.shape[0]):
            keep = [int(c) for c in torch.argsort(-probs[b])[:3] if probs[b, c] >= 0.5]
            keep = sorted(keep or [int(torch.argmax(probs[b]))])
            labels[b, : len(keep)] = torch.tensor(keep)
        onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 18).float()
        onehot = onehot * (labels >= 0).float()[..., None]
        wave = sep_ref(x, onehot.reshape(x.shape[0], 54))
    return probs.numpy(), labels.numpy(), wave.numpy()


def test_official_checkpoints_load_and_match_torch(tmp_path):
    """load_pipeline on Lightning .ckpt files (converted in memory) reproduces the PyTorch
    reference pipeline end to end (labels identical, waveforms to float32 precision)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("nnAudio")
    from tests.reference import resunet as ref_sep
    from tests.reference import vit as ref_vit

    torch.manual_seed(0)
    tag_ref = ref_vit.randomize_(ref_vit.M2dAt(dim=128, depth=1, heads=2), seed=0)
    sep_ref = ref_sep.randomize_(ref_sep.ResUNet30(slots=3, channels=(4, 4, 8, 8, 8, 8)),
                                 seed=1).eval()
    torch.save({"state_dict": {f"model.{k}": v for k, v in tag_ref.state_dict().items()}},
               tmp_path / "m2dat.ckpt")
    ref_sep.save_lightning(sep_ref, tmp_path / "resunetk.ckpt")
    pipe = load_pipeline(tagger=tmp_path / "m2dat.ckpt", separator=tmp_path / "resunetk.ckpt")
    x = (0.1 * np.random.default_rng(3).standard_normal((2, 4, SR))).astype(np.float32)
    out = pipe(x)
    probs, labels, wave = _torch_reference_pipeline(torch, tag_ref, sep_ref, torch.from_numpy(x))
    np.testing.assert_allclose(out["probabilities"], probs, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], labels)
    err = np.abs(np.asarray(out["waveforms"]) - wave).max() / np.abs(wave).max()
    assert err < 1e-4, err
    with pytest.raises(ValueError, match=r"resunetk\.ckpt: missing key"):
        load_pipeline(tagger=tmp_path / "resunetk.ckpt", separator=tmp_path / "resunetk.ckpt")


def test_load_any_reads_model_and_work_directories(tiny_models, tmp_path):
    """A training work directory loads as its best checkpoint; a model of the wrong kind, or a
    path that is neither, is an error naming the path."""
    import ml_collections

    from s5jax import modeldir
    from s5jax.training import checkpoint as ck

    tagger_dir, separator_dir = tiny_models
    cfg, variables = modeldir.load_model(separator_dir)
    work = tmp_path / "run"
    ck.write_train_config(work, ml_collections.ConfigDict(
        {"model": cfg.to_dict(), "train": {"best_metric": "valid/loss", "best_mode": "min"}}))
    mgr = ck.CheckpointManager(work, async_save=False)
    mgr.save(3, {"params": variables["params"], "batch_stats": variables["batch_stats"],
                 "step": np.int32(3)}, metrics={"valid/loss": 1.0})
    mgr.close()
    for path in (separator_dir, work):
        model, loaded, loaded_cfg = load_separator_any(path)
        assert loaded_cfg.name == "resunetk" and model.slots == 3
        jax.tree.map(np.testing.assert_array_equal, loaded, variables)
    assert load_tagger_any(tagger_dir)[2].name == "m2d_at"
    with pytest.raises(ValueError, match=r"run: holds a 'resunetk' model"):
        load_tagger_any(work)
    with pytest.raises(ValueError, match="no such separator"):
        load_separator_any(tmp_path / "missing")
    with pytest.raises(ValueError, match="nor a training work directory"):
        load_pipeline(separator=tmp_path)
