"""Renderer tests: jitted float32 vs float64 reference (P14 on synthetic arrays), levels (P15)."""

import numpy as np
import pytest

from s5jax.data import synth

E, S, R, N, L = 5, 3, 4, 2000, 16000


def _item(rng: np.random.Generator, negative_peak: bool = False) -> dict:
    src = np.zeros((E, L), np.float32)
    sl = np.zeros(E, np.int32)
    on = np.zeros(E, np.int32)
    act = rng.random(E) < 0.75
    act[0] = True
    for e in range(E):
        n = int(rng.integers(100, L + 1))
        sl[e] = n
        src[e, :n] = rng.standard_normal(n) * rng.uniform(0.01, 1)
        on[e] = rng.integers(0, L - n + 1)
    ir = np.zeros((E, R, N), np.float32)
    il = rng.integers(N // 2, N + 1, size=E).astype(np.int32)
    for e in range(E):
        d = int(rng.integers(0, 400))
        t = np.arange(il[e])
        ir[e, :, : il[e]] = rng.standard_normal((R, il[e])) * np.exp(-t / 300.0) * (t >= d) * 0.3
        ir[e, 0, d] = -3.0 if negative_peak else 3.0
    return dict(
        source=src, source_len=sl, ir=ir, ir_len=il, onset=on,
        level_db=(-50 + rng.uniform(5, 20, E)).astype(np.float32), active=act,
        noise=rng.standard_normal((R, L)).astype(np.float32), noise_active=np.bool_(True),
        noise_db=np.float32(-50.0),
        labels=np.where(act[:S], np.arange(S), -1).astype(np.int32),
    )


def _stack(items):
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


@pytest.fixture(scope="module")
def items():
    rng = np.random.default_rng(1)
    its = [_item(rng) for _ in range(3)] + [_item(rng, negative_peak=True)]
    its[1]["active"][:] = [True, False, False, True, False]  # inactive target slots in the middle
    its[2]["noise_active"] = np.bool_(False)
    # Digital silence: an active target whose source window is all zeros, and a present but
    # silent background (the float64 reference once gave ∞ · 0 = NaN for both).
    its[0]["active"][1] = True
    its[0]["source"][1] = 0.0
    its[3]["noise"][:] = 0.0
    return its


def test_reference_silent_or_empty_event_adds_nothing():
    """A silent or zero-length active event, and a silent background, add zeros (the official
    renderers' gain times zeros), as if the slot were off: no NaN, no empty-array error."""
    rng = np.random.default_rng(3)
    it = _item(rng)
    it["active"][:] = True
    off = dict(it, active=it["active"].copy(), noise_active=np.bool_(False))
    off["active"][1:3] = False
    want = synth.render_reference(off, length=L)
    it["source"][1] = 0.0  # silent target
    it["source_len"][2] = 0  # zero-length target
    it["noise"][:] = 0.0  # silent background
    for got, ref in zip(synth.render_reference(it, length=L), want, strict=True):
        np.testing.assert_array_equal(got, ref)


def test_fast_fft_length():
    assert synth.fast_fft_length(352_000) == 354_294  # 2 · 3^11
    assert synth.fast_fft_length(1) == 1
    assert synth.fast_fft_length(17) == 18
    for n in [7, 97, 1000, 12345]:
        m = synth.fast_fft_length(n)
        assert m >= n
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        assert k == 1
        assert all(not _smooth(j) for j in range(n, m))


def _smooth(j):
    for p in (2, 3, 5):
        while j % p == 0:
            j //= p
    return j == 1


@pytest.mark.parametrize("task", synth.TASKS)
def test_jit_matches_reference(items, task):
    out = synth.render(_stack(items), length=L, task=task)
    assert out["mixture"].shape == (4, R, L) and out["dry"].shape == (4, S, L)
    for b, it in enumerate(items):
        mix, dry = synth.render_reference(it, length=L, task=task)
        got_m, got_d = np.asarray(out["mixture"][b]), np.asarray(out["dry"][b])
        assert np.abs(got_m - mix).max() / np.abs(mix).max() <= 1e-5
        assert np.abs(got_d - dry).max() / np.abs(dry).max() <= 1e-5
        for s in range(S):
            if not it["active"][s]:
                assert np.all(got_d[s] == 0) and np.all(dry[s] == 0)
    np.testing.assert_array_equal(out["labels"], np.stack([it["labels"] for it in items]))


def test_power_fft_length_independent(items):
    """A power-of-two FFT gives the same result as the default 5-smooth length."""
    a = synth.render(_stack(items), length=L)
    b = synth.render(_stack(items), length=L, nfft=32768, with_dry=False)
    assert "dry" not in b
    err = np.abs(np.asarray(a["mixture"]) - np.asarray(b["mixture"])).max()
    assert err / np.abs(np.asarray(a["mixture"])).max() <= 1e-5


def test_levels_reference():
    """Event power = ref_db + snr on the full wet image; noise at −50 dB (float64)."""
    rng = np.random.default_rng(2)
    it = _item(rng)
    it["active"][:] = False
    it["noise_active"] = np.bool_(True)
    mix, _ = synth.render_reference(it, length=L)
    assert abs(10 * np.log10(np.mean(mix**2)) - (-50.0)) < 1e-9
    # The background at ref_db + its snr (noise_db), as the official renderers put it; the
    # jitted renderer agrees.
    louder = dict(it, noise_db=np.float32(-40.0))
    mix, _ = synth.render_reference(louder, length=L)
    assert abs(10 * np.log10(np.mean(mix**2)) - (-40.0)) < 1e-9
    out = synth.render({k: np.asarray(v)[None] for k, v in louder.items()}, length=L)
    assert abs(10 * np.log10(np.mean(np.asarray(out["mixture"], np.float64) ** 2)) + 40.0) < 1e-4
    for e in range(E):
        one = dict(it, active=np.arange(E) == e, noise_active=np.bool_(False))
        # A long mixture buffer keeps the whole wet image: its power is the event level.
        n = int(one["source_len"][e]) + int(one["ir_len"][e]) - 1
        one["onset"] = np.zeros(E, np.int32)
        mix, dry = synth.render_reference(one, length=L + N)
        p = 10 * np.log10(np.sum(mix**2) / (R * n))
        assert abs(p - float(one["level_db"][e])) < 1e-9


def test_dry_window_and_signed_peak():
    """The dry IR is channel 0 on [p − 192, p + 1600) with p the signed arg-max."""
    rng = np.random.default_rng(3)
    it = _item(rng)
    it["active"][:] = [True, False, False, False, False]
    it["noise_active"] = np.bool_(False)
    it["source"][0] = 0
    it["source"][0, 0] = 1.0  # impulse: the dry target is the windowed, scaled IR
    it["source_len"][0] = 1
    it["onset"][0] = 0
    h = np.zeros((R, N), np.float32)
    h[:, :] = 0.01
    h[0, 1000] = 0.5
    h[0, 900] = -0.9  # larger |h| but negative: must not be the peak
    it["ir"][0] = h
    it["ir_len"][0] = N
    _, dry = synth.render_reference(it, length=L)
    nz = np.nonzero(dry[0])[0]
    assert nz[0] == 1000 - 192 and nz[-1] == N - 1  # window end clamped at N
    out = synth.render(_stack([it]), length=L)
    np.testing.assert_allclose(np.asarray(out["dry"][0, 0]), dry[0], atol=1e-6 * np.abs(dry).max())


def test_dcase2026_ir_norm_and_dry_window():
    """SpAudSyn SofaRoom: the dry IR is channel 0 on [p − 192, p + 1600] (end included) around
    p = arg-max |h₀|, a negative peak included; the IR's scale cancels in the gain (SpAudSyn
    normalises by sqrt(mean_r ‖h_r‖²), SpatialScaper by mean_r ‖h_r‖: the same output)."""
    rng = np.random.default_rng(4)
    it = _item(rng)
    it["active"][:] = [True, False, False, False, False]
    it["noise_active"] = np.bool_(False)
    it["source"][0] = 0
    it["source"][0, 0] = 1.0
    it["source_len"][0] = 1
    it["onset"][0] = 0
    h = np.zeros((R, N), np.float32)
    h[:, :] = 0.01
    h[0, 1000] = 0.5
    h[0, 200] = -0.9  # the largest |h|: the peak in 2026
    h[1, :] = 0.02
    it["ir"][0] = h
    it["ir_len"][0] = N
    _, dry = synth.render_reference(it, length=L, task="dcase2026")
    nz = np.nonzero(dry[0])[0]
    assert nz[0] == 200 - 192 and nz[-1] == 200 + 1600  # inclusive end
    h64 = h.astype(np.float64)
    g = dry[0, 200] / h64[0, 200]  # dry = g · windowed h₀ for an impulse source
    np.testing.assert_allclose(dry[0, 8:1801], g * h64[0, 8:1801], rtol=1e-12)
    # SpAudSyn's normalisation, its gain from the wet image: the same dry target.
    hn = h64 / np.sqrt(np.mean(np.sum(h64**2, axis=-1)))
    level = float(it["level_db"][0])
    g2 = 10 ** ((level - 10 * np.log10(np.mean(hn**2))) / 20)  # wet of an impulse = hn
    np.testing.assert_allclose(g2 * hn[0, 200], dry[0, 200], rtol=1e-12)
    out = synth.render(_stack([it]), length=L, task="dcase2026")
    np.testing.assert_allclose(np.asarray(out["dry"][0, 0]), dry[0], atol=1e-6 * np.abs(dry).max())
    with pytest.raises(ValueError, match="dcase2025"):
        synth.rules("dcase2024")


def test_chunk_and_block_independent(items):
    """One block per loop step and blocks of the minimum length 2N − 1 (events over up to 9
    blocks) give the default's result."""
    a = synth.render(_stack(items), length=L)
    b = synth.render(_stack(items), length=L, chunk=1, nfft=2 * N - 1)
    for k in ("mixture", "dry"):
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert np.abs(x - y).max() / np.abs(x).max() <= 1e-5
    with pytest.raises(ValueError, match="nfft 3000: expected 3999"):
        synth.render(_stack(items), length=L, nfft=3000)


def test_channels_subset(items):
    """``channels=k`` (the tagger's render) gives the full render's first k channels: the gains
    and the background's level still come from all R channels (a gain from channel 0 alone
    would differ by several dB)."""
    a = np.asarray(synth.render(_stack(items), length=L)["mixture"])
    b = synth.render(_stack(items), length=L, with_dry=False, channels=1)
    assert b["mixture"].shape == (len(items), 1, L) and "dry" not in b
    np.testing.assert_allclose(np.asarray(b["mixture"]), a[:, :1], rtol=0,
                               atol=1e-6 * np.abs(a).max())
    for bad in (0, R + 1):
        with pytest.raises(ValueError, match=f"channels {bad}: expected 1 ≤ channels ≤ {R}"):
            synth.render(_stack(items), length=L, channels=bad)
