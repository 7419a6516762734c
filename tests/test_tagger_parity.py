"""P8: converted random-weight PyTorch ``M2dAt`` vs the s5jax tagger (tokens and probabilities)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnAudio")

from s5jax.convert.tagger import convert_state_dict  # noqa: E402
from s5jax.models import tagger as T  # noqa: E402
from tests.reference import vit as ref  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def lightning_ckpt(model, path):
    """Save like Lightning does and read back with torch (``state_dict`` with ``model.`` keys)."""
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "epoch": 3}, path)
    return torch.load(path, weights_only=True)


def run_both(model, cfg, variables, x):
    with torch.no_grad():
        xt = torch.from_numpy(x)
        tok_ref, p_ref = model.tokens(xt).numpy(), model(xt).numpy()
    m = T.build_tagger(cfg)
    tok, p = jax.jit(lambda v, x: m.apply(v, x, method=m.tokens_and_probabilities))(variables, x)
    return np.asarray(tok), tok_ref, np.asarray(p), p_ref


def mixture(batch, seconds, seed):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((batch, 4, int(32000 * seconds)))).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    model = ref.randomize_(ref.M2dAt(dim=64, depth=2, heads=4, norm_stats=(-5.5, 3.25)), seed=1)
    sd = lightning_ckpt(model, tmp_path_factory.mktemp("ckpt") / "small.ckpt")
    cfg, variables = convert_state_dict(sd, num_heads=4)
    return model, cfg, variables


def test_small_config_read_from_weights(small):
    _, cfg, variables = small
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio) == (64, 2, 4, 4)
    assert cfg.features == "flat" and not cfg.adapters
    assert cfg.norm_stats == (-5.5, 3.25)
    assert variables["params"]["encoder"]["pos_embed"].shape == (1, 311, 64)


@pytest.mark.parametrize(
    "seconds, tokens",
    [(4.0, 130), (25.0, 775)],  # 4 s: pos-embed truncated to 26 columns; 25 s: 3 chunks
)
def test_small_parity(small, seconds, tokens):
    model, cfg, variables = small
    x = mixture(2, seconds, seed=int(seconds))
    tok, tok_ref, p, p_ref = run_both(model, cfg, variables, x)
    assert tok.shape == tok_ref.shape == (2, tokens, 64)
    assert rel(tok, tok_ref) <= 1e-4
    assert np.max(np.abs(p - p_ref)) <= 1e-5
    assert p.min() < 0.3 and p.max() > 0.7  # the head is exercised, not saturated at 0.5


def test_small_stacked_parity(tmp_path):
    torch.manual_seed(1)
    model = ref.randomize_(ref.M2dAt(dim=32, depth=1, heads=2, stacked=True), seed=2)
    sd = lightning_ckpt(model, tmp_path / "stacked.ckpt")
    cfg, variables = convert_state_dict(sd, num_heads=2)
    assert cfg.features == "stacked"
    x = mixture(2, 4.0, seed=7)
    tok, tok_ref, p, p_ref = run_both(model, cfg, variables, x)
    assert tok.shape == tok_ref.shape == (2, 26, 5 * 32)
    assert rel(tok, tok_ref) <= 1e-4
    assert np.max(np.abs(p - p_ref)) <= 1e-5


@pytest.mark.slow
def test_full_vit_b_ten_seconds(tmp_path):
    torch.manual_seed(2)
    model = ref.randomize_(ref.M2dAt(), seed=3)
    sd = lightning_ckpt(model, tmp_path / "full.ckpt")
    cfg, variables = convert_state_dict(sd)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.features) == (768, 12, 12, "flat")
    x = mixture(1, 10.0, seed=10)
    tok, tok_ref, p, p_ref = run_both(model, cfg, variables, x)
    assert tok.shape == tok_ref.shape == (1, 310, 768)
    assert rel(tok, tok_ref) <= 1e-4
    assert np.max(np.abs(p - p_ref)) <= 1e-5


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_fresh_adapters_are_identity(small, mode):
    model, cfg, variables = small
    _, variables_a = convert_state_dict(
        {f"model.{k}": v for k, v in model.state_dict().items()}, num_heads=4, adapters=True,
        adapter_mode=mode,
    )
    cfg_a = T.tagger_config(**{**dict(cfg), "adapters": True, "adapter_mode": mode})
    assert "adapter" in variables_a["params"]["encoder"]["blocks_1"]
    x = mixture(2, 2.0, seed=3)
    base = T.build_tagger(cfg).apply(variables, x)
    m_a = T.build_tagger(cfg_a)
    with_a = m_a.apply(variables_a, x)
    assert np.max(np.abs(np.asarray(with_a) - np.asarray(base))) <= 1e-6
    # A non-zero adapter output must change the result (the test can fail). The bump must
    # vary across features: a uniform shift would vanish in the following LayerNorm.
    rng = np.random.default_rng(0)
    bumped = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
        if "down" in jax.tree_util.keystr(p) else v,
        variables_a,
    )
    assert np.max(np.abs(np.asarray(m_a.apply(bumped, x)) - np.asarray(base))) > 1e-4
