"""DPRNN bottleneck: BiLSTM parity with torch.nn.LSTM (spec §8.1 rule), identity at init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.convert.separator import bilstm_from_torch
from s5jax.models.dprnn import DPRNN, BiLSTM


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_bilstm_matches_torch_lstm():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(16, 8, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-0.5, 0.5)
    x = np.random.default_rng(0).standard_normal((3, 7, 16)).astype(np.float32)
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    sd = {k: v.numpy() for k, v in lstm.state_dict().items()}
    got = BiLSTM(8).apply({"params": bilstm_from_torch(sd)}, jnp.asarray(x))
    assert got.shape == (3, 7, 16)
    assert rel(got, want) <= 1e-5


@pytest.fixture(scope="module")
def dprnn_init():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 4, 12)), jnp.float32)
    model = DPRNN(hidden=6, repeats=2)
    return model, model.init(jax.random.key(0), x), x


def test_dprnn_is_identity_at_init(dprnn_init):
    model, variables, x = dprnn_init
    assert set(variables["params"]) == {"block1", "block2", "out_conv"}
    assert np.array_equal(np.asarray(model.apply(variables, x)), np.asarray(x))


def test_dprnn_paths_scan_time_and_frequency(dprnn_init):
    """With a non-zero output conv the block mixes along time and frequency (not per bin)."""
    model, variables, x = dprnn_init
    params = jax.tree.map(lambda a: a, variables["params"])
    params["out_conv"]["kernel"] = jnp.eye(12)[None, None]
    y = model.apply({"params": params}, x)
    assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
    # Perturbing one (time, freq) cell changes outputs at other times and other frequencies.
    x2 = x.at[0, 0, 0, :].add(1.0)
    d = jnp.abs(model.apply({"params": params}, x2) - y)[0].max(-1)
    assert float(d[3, 0]) > 0 and float(d[0, 3]) > 0
    assert float(jnp.abs(model.apply({"params": params}, x2) - y)[1].max()) == 0.0  # per item
