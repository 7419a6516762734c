"""Metrics and losses: parity with torchmetrics/PyTorch (P11) and the class-aware metric (§6.2)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s5jax import labels as L
from s5jax import metrics

torch = pytest.importorskip("torch")
tm_audio = pytest.importorskip("torchmetrics.functional.audio")


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 3, 8000)).astype(np.float32)
    noise_level = rng.uniform(0.05, 2.0, (2, 3, 1)).astype(np.float32)
    est = (ref + noise_level * rng.standard_normal(ref.shape)).astype(np.float32)
    est = est * rng.uniform(0.5, 1.5, (2, 3, 1)).astype(np.float32) + 0.1
    return est, ref


def _torch_snr(est, ref):
    return tm_audio.signal_noise_ratio(torch.from_numpy(est), torch.from_numpy(ref)).numpy()


def _torch_si_snr(est, ref):
    t = tm_audio.scale_invariant_signal_noise_ratio(torch.from_numpy(est), torch.from_numpy(ref))
    return t.numpy()


@pytest.mark.parametrize("name", ["snr", "si_snr"])
def test_snr_matches_torchmetrics(signals, name):
    est, ref = signals
    ours, theirs = getattr(metrics, name), {"snr": _torch_snr, "si_snr": _torch_si_snr}[name]
    expected = theirs(est, ref)
    got_np = ours(est, ref)
    assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float32
    assert got_np.shape == (2, 3)
    assert rel(got_np, expected) <= 1e-6
    got_jax = jax.jit(ours)(jnp.asarray(est), jnp.asarray(ref))
    assert isinstance(got_jax, jax.Array) and got_jax.shape == (2, 3)
    assert rel(got_jax, expected) <= 1e-6
    # batched over leading axes: a single row equals its entry
    assert rel(ours(est[1, 2], ref[1, 2]), expected[1, 2]) <= 1e-6


@pytest.mark.parametrize("name", ["snr", "si_snr"])
def test_snr_zero_reference(signals, name):
    est, _ = signals
    ref = np.zeros_like(est)
    theirs = {"snr": _torch_snr, "si_snr": _torch_si_snr}[name]
    ours = getattr(metrics, name)
    expected = theirs(est, ref)
    assert np.all(np.isfinite(expected))
    assert rel(ours(est, ref), expected) <= 1e-6
    assert rel(jax.jit(ours)(jnp.asarray(est), jnp.asarray(ref)), expected) <= 1e-6
    # both silent: (0 + ε) / (0 + ε) → exactly 0 dB
    assert np.all(ours(ref, ref) == 0.0)


def test_snr_eps_value():
    # Σs² = 0, Σ(s − ŝ)² = 1 → 10·log10(ε / (1 + ε)) with ε = float32 eps.
    est = np.zeros(4, np.float32)
    est[0] = 1.0
    eps = np.float32(1.1920929e-07)
    expected = 10 * np.log10(eps / (np.float32(1) + eps))
    np.testing.assert_allclose(metrics.snr(est, np.zeros(4, np.float32)), expected, rtol=1e-6)


def test_snr_loss_masked_mean():
    # Fixed tensors with known SNRs: ref = 1, est = 1 − δ → SNR = −20·log10(δ).
    length = 1000
    deltas = np.array([[0.1, 0.01, 0.5], [0.1, 0.2, 1.0]], np.float32)
    ref = np.ones((2, 3, length), np.float32)
    est = ref * (1 - deltas[..., None])
    active = np.array([[True, True, False], [True, False, False]])
    per_slot = _torch_snr(est, ref)
    np.testing.assert_allclose(per_slot, -20 * np.log10(deltas.astype(np.float64)), rtol=1e-5)
    expected = -(per_slot[0, 0] + per_slot[0, 1] + per_slot[1, 0]) / 6  # mean over all 3B slots
    got = metrics.snr_loss(est, ref, active)
    assert rel(got, expected) <= 1e-6
    got_jax = jax.jit(metrics.snr_loss)(jnp.asarray(est), jnp.asarray(ref), jnp.asarray(active))
    assert rel(got_jax, expected) <= 1e-6
    # the ResUNet variant: one slot, all active → −mean SNR
    one = metrics.snr_loss(est[:, :1], ref[:, :1])
    assert rel(one, -per_slot[:, 0].mean()) <= 1e-6
    assert rel(metrics.snr_loss(est[:, :1], ref[:, :1], np.ones((2, 1), bool)), one) <= 1e-7
    # masked slots do not contribute gradients
    grad = jax.grad(metrics.snr_loss)(jnp.asarray(est), jnp.asarray(ref), jnp.asarray(active))
    assert np.all(np.asarray(grad)[~active] == 0) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match=r"active \(2,\), expected \(2, 3\)"):
        metrics.snr_loss(est, ref, active[:, 0])


def test_bce_matches_torch_including_clamp():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, (4, 18)).astype(np.float32)
    y = (rng.uniform(size=(4, 18)) < 0.3).astype(np.float32)
    p[0, :4] = [0.0, 1.0, 0.0, 1.0]  # certain and right / wrong: log clamped at −100
    y[0, :4] = [0.0, 1.0, 1.0, 0.0]
    p[1, :2] = [1e-30, 1 - 1e-7]
    expected = torch.nn.functional.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(y))
    expected = float(expected)
    assert expected > 2 * 100 / 72  # the two wrong certain entries cost 100 each
    got = metrics.bce(p, y)
    assert np.isfinite(got) and rel(got, expected) <= 1e-6
    assert rel(jax.jit(metrics.bce)(jnp.asarray(p), jnp.asarray(y)), expected) <= 1e-6
    # the clamp exactly: one wrong certain prediction = 100
    assert metrics.bce(np.array([0.0], np.float32), np.array([1.0], np.float32)) == 100.0


def test_bce_gradient_matches_torch_at_certain_probabilities():
    # A trained tagger's sigmoid reaches exactly 1.0 in float32 (logit > ~17); differentiating
    # the clamped logs there gave NaN and the training step was skipped.
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, (3, 18)).astype(np.float32)
    y = (rng.uniform(size=(3, 18)) < 0.3).astype(np.float32)
    p[0, :6] = [0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7]
    y[0, :6] = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    tp, ty = torch.from_numpy(p).requires_grad_(), torch.from_numpy(y).requires_grad_()
    torch.nn.functional.binary_cross_entropy(tp, ty).backward()
    gp, gy = jax.jit(jax.grad(metrics.bce, argnums=(0, 1)))(jnp.asarray(p), jnp.asarray(y))
    assert np.all(np.isfinite(gp))  # the targets' gradient is ±inf at p = 0 or 1 in both
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=1e-6)
    # through the head's sigmoid: saturated logits give finite gradients, as in PyTorch
    z = np.array([[30.0, -120.0, 30.0, 0.5]], np.float32)
    t = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
    tz = torch.from_numpy(z).requires_grad_()
    torch.nn.functional.binary_cross_entropy(torch.sigmoid(tz), torch.from_numpy(t)).backward()
    gz = jax.grad(lambda z: metrics.bce(jax.nn.sigmoid(z), jnp.asarray(t)))(jnp.asarray(z))
    np.testing.assert_allclose(gz, tz.grad.numpy(), rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Class-aware SDRi on hand-built signals. Sources live on disjoint supports, so every SNR has a
# closed form: a unit block of 1000 samples against a mixture of two such blocks is 0 dB; an
# estimate (1 − δ)·s of s is −20·log10(δ) dB (20 dB for δ = 0.1, 40 dB for δ = 0.01).

N = 1000
A, B, C = "AlarmClock", "Blender", "Cough"


def block(k, scale=1.0, length=3 * N):
    x = np.zeros(length, np.float32)
    x[k * N : (k + 1) * N] = scale
    return x


MIX = block(0) + block(1)  # two unit sources: SNR(mixture, either) = 0 dB


def ca(est_labels, ests, ref_labels, refs, mix=MIX, metric="snr"):
    shape = (0, mix.shape[0])
    ests = np.stack(ests) if len(ests) else np.zeros(shape, np.float32)
    refs = np.stack(refs) if len(refs) else np.zeros(shape, np.float32)
    return metrics.class_aware_sdri(est_labels, ests, ref_labels, refs, mix, metric=metric)


def test_ca_tp_only():
    r = ca([A, B], [block(0, 0.9), block(1, 0.99)], [B, A], [block(1), block(0)])
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert r.value == pytest.approx((20 + 40) / 2, abs=1e-4)
    assert r.improvements[L.class_index(A)] == [pytest.approx(20, abs=1e-4)]
    assert r.improvements[L.class_index(B)] == [pytest.approx(40, abs=1e-4)]


def test_ca_false_positive():
    r = ca([A, B], [block(0, 0.9), block(1, 0.9)], [A], [block(0)])
    assert (r.tp, r.fp, r.fn) == (1, 1, 0) and r.fp_classes == [L.class_index(B)]
    assert r.value == pytest.approx(20 / 2, abs=1e-4)


def test_ca_false_negative():
    r = ca([A], [block(0, 0.9)], [A, B], [block(0), block(1)])
    assert (r.tp, r.fp, r.fn) == (1, 0, 1) and r.fn_classes == [L.class_index(B)]
    assert r.value == pytest.approx(20 / 2, abs=1e-4)


def test_ca_false_positive_and_negative():
    r = ca([A, C], [block(0, 0.9), block(2, 0.5)], [A, B], [block(0), block(1)])
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    assert r.value == pytest.approx(20 / 3, abs=1e-4)
    # all wrong: only zeros
    r = ca([C], [block(2)], [A], [block(0)])
    assert (r.tp, r.fp, r.fn, r.value) == (0, 1, 1, 0.0)


def test_ca_empty_and_silence():
    r = ca([], [], [], [])
    assert math.isnan(r.value) and (r.tp, r.fp, r.fn) == (0, 0, 0)
    r = ca([A], [block(0)], [], [])
    assert (r.value, r.fp) == (0.0, 1)
    # silence / -1 slots are dropped with their signals (the baseline's padded layout)
    r = ca(
        [A, "silence", -1],
        [block(0, 0.9), block(1), block(2)],
        [A, L.EMPTY, L.EMPTY],
        [block(0), np.zeros(3 * N, np.float32), np.zeros(3 * N, np.float32)],
    )
    assert (r.tp, r.fp, r.fn) == (1, 0, 0) and r.value == pytest.approx(20, abs=1e-4)
    assert metrics.mean_value([r, ca([], [], [], [])]) == pytest.approx(20, abs=1e-4)


def test_ca_repeated_class_optimal_pairing():
    # Two AlarmClock references; the estimates come in the "wrong" order.
    # est0 = 0.9·s1 → 20 dB for s1, 10·log10(1000 / 1810) dB for s0;
    # est1 = 0.99·s0 → 40 dB for s0, 10·log10(1000 / 1980.1) dB for s1.
    refs = [block(0), block(1)]
    ests = [block(1, 0.9), block(0, 0.99)]
    r = ca([A, A], ests, [A, A], refs)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert r.value == pytest.approx(30, abs=1e-4)
    assert sorted(r.improvements[0]) == [pytest.approx(20, abs=1e-4), pytest.approx(40, abs=1e-4)]
    identity = (10 * math.log10(1000 / 1810) + 10 * math.log10(1000 / 1980.1)) / 2
    assert r.value > identity + 30
    # three estimates of the class for two references: the worst one is the false positive
    r = ca([A, A, A], [block(2, 0.5)] + ests, [A, A], refs)
    assert (r.tp, r.fp, r.fn) == (2, 1, 0) and r.fp_classes == [0]
    assert r.value == pytest.approx(60 / 3, abs=1e-4)
    # one estimate for two references: paired with the reference it improves most
    r = ca([A], [ests[1]], [A, A], refs)
    assert (r.tp, r.fn) == (1, 1) and r.value == pytest.approx(40 / 2, abs=1e-4)


def test_ca_si_snr_matches_torchmetrics():
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((2, 4000)).astype(np.float32)
    mix = refs.sum(0) + 0.1 * rng.standard_normal(4000).astype(np.float32)
    ests = (0.7 * refs + 0.2 * rng.standard_normal((2, 4000))).astype(np.float32)
    r = metrics.class_aware_sdri([B, A], ests, [B, A], refs, mix, metric="si_snr")
    gain = _torch_si_snr(ests, refs) - _torch_si_snr(np.stack([mix, mix]), refs)
    assert r.value == pytest.approx(float(gain.mean()), rel=1e-6)
    r = metrics.class_aware_sdri([B, A], ests, [B, A], refs, mix)
    gain = _torch_snr(ests, refs) - _torch_snr(np.stack([mix, mix]), refs)
    assert r.value == pytest.approx(float(gain.mean()), rel=1e-6)


def test_ca_input_errors():
    with pytest.raises(ValueError, match="2 labels for 1 signals"):
        ca([A, B], [block(0)], [A], [block(0)])
    with pytest.raises(ValueError, match="unknown class name 'Dog'"):
        ca(["Dog"], [block(0)], [A], [block(0)])
    with pytest.raises(ValueError, match="metric 'sdr'"):
        ca([A], [block(0)], [A], [block(0)], metric="sdr")
    with pytest.raises(ValueError, match=r"estimates of shape \(1, 10\): expected \(n, 3000\)"):
        metrics.class_aware_sdri([A], np.zeros((1, 10)), [A], block(0)[None], MIX)


def _ca_2025(est_labels, ests, ref_labels, refs, mix):
    """Straight DCASE 2025 definition (distinct labels), with torchmetrics' SNR."""
    est = dict(zip(est_labels, ests, strict=True))
    ref = dict(zip(ref_labels, refs, strict=True))
    tp, fp, fn = est.keys() & ref.keys(), est.keys() - ref.keys(), ref.keys() - est.keys()
    total = 0.0
    for c in tp:
        s = torch.from_numpy(ref[c])
        total += float(tm_audio.signal_noise_ratio(torch.from_numpy(est[c]), s))
        total -= float(tm_audio.signal_noise_ratio(torch.from_numpy(mix), s))
    n = len(tp) + len(fp) + len(fn)
    return total / n if n else math.nan


def _random_case(rng, est_labels, ref_labels, length=256):
    refs = rng.standard_normal((len(ref_labels), length)).astype(np.float32)
    mix = refs.sum(0) + rng.standard_normal(length).astype(np.float32)
    ests = rng.standard_normal((len(est_labels), length)).astype(np.float32)
    for i, c in enumerate(est_labels):  # estimates that resemble a same-class reference
        same = [j for j, k in enumerate(ref_labels) if k == c]
        if same:
            ests[i] = refs[same[rng.integers(len(same))]] + rng.uniform(0.1, 2) * ests[i]
    return ests, refs, mix


def test_distinct_labels_equal_2025_definition():
    rng = np.random.default_rng(5)
    for _ in range(40):
        est_labels = list(rng.choice(5, rng.integers(0, 4), replace=False))
        ref_labels = list(rng.choice(5, rng.integers(0, 4), replace=False))
        ests, refs, mix = _random_case(rng, est_labels, ref_labels)
        got = metrics.class_aware_sdri(est_labels, ests, ref_labels, refs, mix).value
        expected = _ca_2025(est_labels, ests, ref_labels, refs, mix)
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)


labels_st = st.lists(st.integers(0, 2), max_size=3)


@settings(max_examples=40, deadline=None)
@given(labels_st, labels_st, st.integers(0, 2**31 - 1), st.data())
def test_ca_invariant_to_slot_permutations(est_labels, ref_labels, seed, data):
    ests, refs, mix = _random_case(np.random.default_rng(seed), est_labels, ref_labels, 128)
    base = metrics.class_aware_sdri(est_labels, ests, ref_labels, refs, mix)
    pe = data.draw(st.permutations(range(len(est_labels))))
    pr = data.draw(st.permutations(range(len(ref_labels))))
    perm = metrics.class_aware_sdri(
        [est_labels[i] for i in pe],
        ests[list(pe)],
        [ref_labels[i] for i in pr],
        refs[list(pr)],
        mix,
    )
    assert (perm.tp, perm.fp, perm.fn) == (base.tp, base.fp, base.fn)
    assert sorted(perm.fp_classes) == sorted(base.fp_classes)
    assert sorted(perm.fn_classes) == sorted(base.fn_classes)
    if math.isnan(base.value):
        assert math.isnan(perm.value)
    else:
        assert perm.value == pytest.approx(base.value, rel=1e-9, abs=1e-9)
    assert base.tp == sum(
        min(est_labels.count(c), ref_labels.count(c)) for c in set(est_labels) | set(ref_labels)
    )


def test_label_accuracy():
    est = [[A, B], [C], [A], [], [A, A]]
    ref = [[B, A], [C, B], [A, A], [], [A, A]]
    assert metrics.label_accuracy(est, ref) == pytest.approx(100 * 3 / 5)
    slots = L.to_slots([[A, B], [C]])
    assert metrics.label_accuracy(slots, [[B, A], [C, "silence"]]) == 100.0
    assert math.isnan(metrics.label_accuracy([], []))
    with pytest.raises(ValueError, match="2 estimated vs 1 reference"):
        metrics.label_accuracy([[A], [B]], [[A]])


def test_per_class_breakdown():
    results = [
        ca([A, B], [block(0, 0.9), block(1, 0.99)], [A, B], [block(0), block(1)]),
        ca([A, C], [block(0, 0.99), block(2, 0.5)], [A, B], [block(0), block(1)]),
    ]
    table = metrics.per_class(results)
    assert list(table) == [A, B, C]
    assert (table[A]["tp"], table[A]["fp"], table[A]["fn"]) == (2, 0, 0)
    assert table[A]["tp_improvement"] == pytest.approx(30, abs=1e-4)
    assert table[A]["ca_sdri"] == pytest.approx(30, abs=1e-4)
    assert (table[B]["tp"], table[B]["fn"]) == (1, 1)
    assert table[B]["ca_sdri"] == pytest.approx(20, abs=1e-4)
    assert (table[C]["fp"], table[C]["ca_sdri"]) == (1, 0.0) and math.isnan(
        table[C]["tp_improvement"]
    )
    # the per-class pieces add up to the per-mixture counts
    assert sum(v["tp"] + v["fp"] + v["fn"] for v in table.values()) == sum(
        r.tp + r.fp + r.fn for r in results
    )
    assert metrics.mean_value(results) == pytest.approx((30 + (40 / 3)) / 2, abs=1e-4)


def test_pairing_is_exhaustive():
    # Random 3×3 gain matrices: the chosen pairing reaches the brute-force maximum.
    rng = np.random.default_rng(9)
    for n_est, n_ref in itertools.product(range(1, 4), repeat=2):
        gain = rng.standard_normal((n_est, n_ref))
        pairs, best = metrics._best_pairing(gain)
        assert len(pairs) == min(n_est, n_ref)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        brute = max(
            sum(gain[i, j] for i, j in zip(rows, cols, strict=False))
            for rows in itertools.permutations(range(n_est), min(n_est, n_ref))
            for cols in itertools.permutations(range(n_ref), min(n_est, n_ref))
        )
        assert best == pytest.approx(brute)


def test_scaled_mixture_is_the_least_squares_scale():
    rng = np.random.default_rng(3)
    m = rng.standard_normal(2000).astype(np.float32)
    refs = np.stack([0.3 * m + 0.1 * rng.standard_normal(2000),
                     -0.2 * m + rng.standard_normal(2000)]).astype(np.float32)
    floor = metrics.scaled_mixture(m, refs)
    assert floor.shape == refs.shape and floor.dtype == np.float32
    for k in range(2):
        best = metrics.snr(floor[k], refs[k])
        gain = float(floor[k] @ m / (m @ m))
        for g in (0.9 * gain, 1.1 * gain, 1.0):  # any other scale does worse
            assert best >= metrics.snr(np.float32(g) * m, refs[k])
        assert metrics.si_snr(floor[k], refs[k]) == pytest.approx(
            metrics.si_snr(m, refs[k]), abs=1e-4)
    assert metrics.scaled_mixture(m, refs[:0]).shape == (0, 2000)


def test_average_precision_matches_sklearn_and_ignores_row_order():
    """mAP (the tagger's valid/map) as sklearn's average_precision_score per class: tied scores
    are one threshold, so reordering the mixtures does not change it (a saturated sigmoid gives
    exact ties at 1.0)."""
    skm = pytest.importorskip("sklearn.metrics")
    # A hand case: AP 0.6944 whatever the order of the three tied rows.
    s = np.array([[1.0], [1.0], [1.0], [0.3]])
    y = np.array([[0], [1], [1], [1]])
    for perm in ([0, 1, 2, 3], [1, 2, 0, 3]):
        assert metrics.average_precision(s[perm], y[perm]) == pytest.approx(25 / 36, rel=1e-12)
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((60, 18)), 1)  # many ties
    targets = (rng.random((60, 18)) < 0.2).astype(np.float32)
    targets[:, 5] = 0  # a class without positives is skipped (sklearn would warn)
    keep = [c for c in range(18) if targets[:, c].any()]
    want = np.mean([skm.average_precision_score(targets[:, c], scores[:, c]) for c in keep])
    assert metrics.average_precision(scores, targets) == pytest.approx(want, rel=1e-12)
    perm = rng.permutation(60)
    assert metrics.average_precision(scores[perm], targets[perm]) == pytest.approx(want,
                                                                                  rel=1e-12)
