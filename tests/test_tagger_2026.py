"""DCASE 2026 slot taggers (1- and 4-channel): official-format checkpoints on random weights →
``convert tagger`` → s5jax, against the PyTorch reference ``tests/reference/slot_tagger.py``
(logits, softmax, ``predict`` = the official labels); the slot decision rule; conversion errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.models import tagger as T

torch = pytest.importorskip("torch")
pytest.importorskip("nnAudio")

from s5jax.convert.tagger import convert_file, convert_state_dict  # noqa: E402
from tests.reference import slot_tagger as ref  # noqa: E402
from tests.reference import vit as ref_vit  # noqa: E402

D, HEADS, DIMS = 32, 2, (48, 24)
NAMES = ref.CLASSES + [ref.SILENCE]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def to_names(labels):
    return [[NAMES[k] if k >= 0 else ref.SILENCE for k in row] for row in np.asarray(labels)]


def lightning_file(model, path):
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "epoch": 7, "hyper_parameters": {"lr": 1e-3}}, path)
    return path


def mixture(batch, seconds, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 4, int(32000 * seconds))).astype(np.float32)
    return x * rng.uniform(0.02, 0.3, (batch, 4, 1)).astype(np.float32)  # channels differ


def reference_model(channels, seed, **kw):
    torch.manual_seed(seed)
    kw = dict(dim=D, depth=2, heads=HEADS, norm_stats=(-6.0, 3.5), slot_dims=DIMS) | kw
    model = ref.M2dAtSlots(**kw) if channels == 1 else ref.M2dAtSpatial(nchan=channels, **kw)
    return ref.randomize_(model, seed=seed)


@pytest.fixture(scope="module", params=[1, 4], ids=["1c", "4c"])
def converted(request, tmp_path_factory):
    """(channels, torch model, s5jax model, variables, config) via a Lightning file."""
    channels = request.param
    model = reference_model(channels, seed=channels)
    d = tmp_path_factory.mktemp(f"slot{channels}")
    out = convert_file(lightning_file(model, d / f"m2dat_{channels}c.ckpt"), d / "tagger",
                       num_heads=HEADS)
    m, variables, cfg = T.load_tagger(out)
    return channels, model, m, variables, cfg


def test_config_read_from_weights(converted):
    channels, _, _, variables, cfg = converted
    assert (cfg.head, cfg.in_channels, tuple(cfg.slot_dims)) == ("slots", channels, DIMS)
    assert (cfg.embed_dim, cfg.depth, cfg.features, cfg.adapters) == (D, 2, "flat", False)
    assert cfg.norm_stats == (-6.0, 3.5)
    head = variables["params"]["head"]
    assert head["linear"]["kernel"].shape == (channels * D, 3 * DIMS[0])
    assert head["tracks"]["fc1"]["kernel"].shape == (3, DIMS[0], DIMS[1])
    assert head["tracks"]["fc2"]["kernel"].shape == (3, DIMS[1], 19)
    assert variables["batch_stats"]["head_norm"]["mean"].shape == (channels * D,)


def test_logits_softmax_and_labels_equal_official(converted):
    channels, model, m, variables, _ = converted
    x = mixture(8, 4.0, seed=11)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        tok_ref, logits_ref = model.tokens(xt).numpy(), model(xt)
        expected_labels = ref.predict_labels(logits_ref)
        logits_ref = logits_ref.numpy()
    fn = jax.jit(lambda v, x: m.apply(v, x, method=m.tokens_and_probabilities))
    tok, logits = (np.asarray(a) for a in fn(variables, x))
    assert tok.shape == tok_ref.shape == (8, 130, channels * D)
    assert logits.shape == (8, 3, 19)
    assert rel(tok, tok_ref) <= 1e-4
    assert rel(logits, logits_ref) <= 1e-4
    soft = np.asarray(jax.nn.softmax(logits, axis=-1))
    soft_ref = torch.softmax(torch.from_numpy(logits_ref), -1).numpy()
    assert np.max(np.abs(soft - soft_ref)) <= 1e-4
    labels = T.predict(logits)
    assert labels.dtype == jnp.int32 and labels.shape == (8, 3)
    assert to_names(labels) == expected_labels
    # the random set exercises the rule: silence moved from a non-last slot, a named class
    raw = np.argmax(logits_ref, axis=-1)
    assert np.any(raw[:, :-1] == 18) and np.any(raw != 18)


def test_channels_used(converted):
    channels, _, m, variables, _ = converted
    x = mixture(1, 2.0, seed=3)
    y = x.copy()
    y[:, 3] *= 3.0
    both = jax.jit(m.apply)(variables, np.concatenate([x, y]))
    changed = float(jnp.max(jnp.abs(both[0] - both[1])))
    assert (changed > 1e-3) if channels == 4 else (changed == 0.0)


def test_train_mode_head_norm_equals_torch(converted):
    channels, model, m, variables, _ = converted
    if channels != 1:
        pytest.skip("one variant is enough: the BatchNorm is the same module")
    x = mixture(4, 2.0, seed=5)
    model.train()
    try:
        with torch.no_grad():
            logits_ref = model(torch.from_numpy(x)).numpy()
    finally:
        model.eval()
    logits, new = m.apply(variables, x, train=True, mutable=["batch_stats"])
    assert rel(logits, logits_ref) <= 1e-4
    bn = model.head.m2d_out_norm
    np.testing.assert_allclose(new["batch_stats"]["head_norm"]["mean"], bn.running_mean.numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["batch_stats"]["head_norm"]["var"], bn.running_var.numpy(),
                               rtol=1e-4)


def test_stacked_four_channel_width(tmp_path):
    model = reference_model(4, seed=9, dim=16, depth=1, stacked=True)
    sd = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    cfg, variables = convert_state_dict(sd, num_heads=HEADS)
    assert (cfg.features, cfg.in_channels) == ("stacked", 4)
    assert variables["params"]["head"]["linear"]["kernel"].shape == (4 * 5 * 16, 3 * DIMS[0])
    x = mixture(2, 2.0, seed=4)
    with torch.no_grad():
        logits_ref = model(torch.from_numpy(x)).numpy()
    logits = jax.jit(T.build_tagger(cfg).apply)(variables, x)
    assert rel(logits, logits_ref) <= 1e-4


def test_conversion_errors():
    model = reference_model(1, seed=2, depth=1)
    sd = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    bad = {k: v for k, v in sd.items() if k != "model.head.tracks.1.3.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['head.tracks.1.3.bias'\]"):
        convert_state_dict(bad, num_heads=HEADS)
    four = dict(sd)
    for k in [k for k in sd if k.startswith("model.head.tracks.0.")]:
        four[k.replace("tracks.0.", "tracks.3.")] = sd[k]
    with pytest.raises(ValueError, match="4 tracks, expected 3"):
        convert_state_dict(four, num_heads=HEADS)
    wrong = dict(sd, **{"model.head.tracks.2.3.weight": np.zeros((18, DIMS[1]), np.float32)})
    with pytest.raises(ValueError, match=r"tracks.2.3.weight has shape \(18, 24\)"):
        convert_state_dict(wrong, num_heads=HEADS)
    with pytest.raises(ValueError, match="in_channels=1, not 4"):
        convert_state_dict(sd, num_heads=HEADS, in_channels=4)
    with pytest.raises(ValueError, match="head='slots', not 'sigmoid18'"):
        convert_state_dict(sd, num_heads=HEADS, head="sigmoid18")
    # the 2025 checkpoint is not a slot tagger
    old = {f"model.{k}": v.numpy() for k, v in
           ref_vit.M2dAt(dim=D, depth=1, heads=HEADS).state_dict().items()}
    with pytest.raises(ValueError, match="head='sigmoid18', not 'slots'"):
        convert_state_dict(old, num_heads=HEADS, head="slots")


def test_pth_start_gets_fresh_slot_head():
    model = ref_vit.M2dAt(dim=D, depth=1, heads=HEADS, norm_stats=(-6.0, 3.5))
    sd = {f"module.ar.runtime.backbone.{k[len('backbone.'):]}": v.numpy()
          for k, v in model.state_dict().items() if k.startswith("backbone.")}
    sd["module.head.norm.running_mean"] = np.full(D, 0.5, np.float32)
    sd["module.head.norm.running_var"] = np.full(D, 2.0, np.float32)
    sd["module.head.mlp.mlp.0.weight"] = np.zeros((527, D), np.float32)
    cfg, v = convert_state_dict({"model": sd}, num_heads=HEADS, head="slots", in_channels=4,
                                slot_dims=DIMS, seed=1)
    assert (cfg.head, cfg.in_channels, cfg.features) == ("slots", 4, "flat")
    stats = v["batch_stats"]["head_norm"]
    np.testing.assert_array_equal(stats["mean"], np.zeros(4 * D))  # fresh, as the official
    np.testing.assert_array_equal(stats["var"], np.ones(4 * D))
    k = v["params"]["head"]["linear"]["kernel"]
    assert k.shape == (4 * D, 3 * DIMS[0]) and np.max(np.abs(k)) <= 1 / np.sqrt(4 * D)
    np.testing.assert_array_equal(v["params"]["encoder"]["cls_token"],
                                  model.backbone.cls_token.detach().numpy())


# ------------------------------------------------------------------------------------------
# The 2026 decision rule on its own


def slot_logits(rows):
    """Logits (B, 3, 19) whose arg-max per slot is the given class (18 = silence)."""
    out = np.zeros((len(rows), 3, 19), np.float32)
    for b, row in enumerate(rows):
        for s, k in enumerate(row):
            out[b, s, k] = 5.0
    return out


SLOT_CASES = [
    ([4, 9, 2], [4, 9, 2]),  # slot order kept, not class order
    ([18, 7, 18], [7, -1, -1]),  # silence moved last
    ([18, 3, 3], [3, 3, -1]),  # repeats kept
    ([18, 18, 18], [-1, -1, -1]),  # empty prediction
    ([5, 18, 1], [5, 1, -1]),
]


def test_predict_slots_table_and_jit():
    logits = slot_logits([r for r, _ in SLOT_CASES])
    fn = jax.jit(chex.assert_max_traces(T.predict, n=1))
    out = fn(logits)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), [e for _, e in SLOT_CASES])
    fn(logits * 2)  # same shape, no retrace
    # ties go to the first index (torch.max), also between a class and silence
    tie = np.zeros((1, 3, 19), np.float32)
    tie[0, 0, [6, 18]] = 1.0
    tie[0, 1, [18, 2]] = 1.0
    np.testing.assert_array_equal(np.asarray(T.predict(tie)), [[6, 2, 0]])
    assert to_names(T.predict(tie)) == ref.predict_labels(torch.from_numpy(tie))
    assert to_names(T.predict(logits)) == ref.predict_labels(torch.from_numpy(logits))
    with pytest.raises(ValueError, match="19 classes"):
        T.predict(np.zeros((1, 3, 18), np.float32))
    with pytest.raises(ValueError, match="expected"):
        T.predict(np.zeros((18,), np.float32))


def test_predict_slots_random_matches_official():
    logits = np.random.default_rng(0).standard_normal((300, 3, 19)).astype(np.float32) * 2
    logits[..., 18] += 2.5  # plenty of silence
    assert to_names(T.predict(logits)) == ref.predict_labels(torch.from_numpy(logits))


@pytest.mark.slow
def test_full_size_four_channel_ten_seconds(tmp_path):
    """ViT-B/16 and the official 1024/512 head, 4 channels, 10 s: the released 4c shapes."""
    model = reference_model(4, seed=12, dim=768, depth=12, heads=12, slot_dims=(1024, 512))
    sd = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    cfg, variables = convert_state_dict(sd)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.in_channels) == (768, 12, 12, 4)
    assert tuple(cfg.slot_dims) == (1024, 512)
    x = mixture(1, 10.0, seed=10)
    with torch.no_grad():
        logits_ref = model(torch.from_numpy(x))
    m = T.build_tagger(cfg)
    logits = np.asarray(jax.jit(m.apply)(variables, x))
    assert rel(logits, logits_ref.numpy()) <= 1e-4
    soft_ref = torch.softmax(logits_ref, -1).numpy()
    assert np.max(np.abs(np.asarray(jax.nn.softmax(logits, -1)) - soft_ref)) <= 1e-4
    assert to_names(T.predict(logits)) == ref.predict_labels(logits_ref)
