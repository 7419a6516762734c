"""STFT / ISTFT / magphase parity with torchlibrosa 0.1.0 (spec §3.1–3.2, checklist P1–P3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s5jax.audio import stft as S

torch = pytest.importorskip("torch")
tl_stft = pytest.importorskip("torchlibrosa.stft")

LENGTH = 320_000  # 10 s at 32 kHz
FRAMES = 2001


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.fixture(scope="module")
def jit_stft():
    return jax.jit(S.stft)


@pytest.fixture(scope="module")
def mixture():
    """Random 4-channel 10-s audio, batch 2; channel 2 of item 1 is silent."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, LENGTH)).astype(np.float32)
    x[1, 2] = 0.0
    return x


@pytest.fixture(scope="module")
def spectra(mixture, jit_stft):
    return tuple(np.asarray(a) for a in jit_stft(jnp.asarray(mixture)))


def _torch_stft(x):
    module = tl_stft.STFT(
        n_fft=1024,
        hop_length=160,
        win_length=1024,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    lead = x.shape[:-1]
    with torch.no_grad():
        re, im = module(torch.from_numpy(x.reshape(-1, x.shape[-1])))
    return (
        re.numpy().reshape(*lead, *re.shape[-2:]),
        im.numpy().reshape(*lead, *im.shape[-2:]),
    )


def _torch_istft(re, im, length):
    module = tl_stft.ISTFT(
        n_fft=1024,
        hop_length=160,
        win_length=1024,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    with torch.no_grad():
        y = module(torch.from_numpy(re[:, None]), torch.from_numpy(im[:, None]), length)
    return y.numpy()


@pytest.mark.slow
def test_p1_stft_matches_torchlibrosa(mixture, spectra):
    re, im = spectra
    assert re.shape == im.shape == (2, 4, FRAMES, 513) and re.dtype == np.float32
    t_re, t_im = _torch_stft(mixture)
    assert t_re.shape == re.shape
    assert rel(re, t_re) <= 1e-5
    assert rel(im, t_im) <= 1e-5


@pytest.mark.parametrize("length", [32_000, 1_025, 16_161])  # odd and short lengths too
def test_p2_istft_matches_torchlibrosa(length):
    rng = np.random.default_rng(1)
    frames = S.num_frames(length)
    re = rng.standard_normal((2, frames, 513)).astype(np.float32)
    im = rng.standard_normal((2, frames, 513)).astype(np.float32)
    expected = _torch_istft(re, im, length)
    got = np.asarray(jax.jit(S.istft, static_argnums=2)(jnp.asarray(re), jnp.asarray(im), length))
    assert got.shape == expected.shape == (2, length)
    assert rel(got, expected) <= 1e-5


@pytest.mark.parametrize("length", [32_000, 16_123])
def test_round_trip(length):
    x = np.random.default_rng(2).uniform(-1, 1, (3, length)).astype(np.float32)
    re, im = S.stft(jnp.asarray(x))
    assert re.shape == (3, 1 + length // 160, 513)
    y = np.asarray(S.istft(re, im, length))
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 1e-5


def test_p3_magphase(spectra):
    re, im = spectra
    silent = re[1, 2], im[1, 2]
    assert np.all(silent[0] == 0) and np.all(silent[1] == 0)  # rfft of zeros is exactly zero
    mag, cos, sin = (np.asarray(a) for a in jax.jit(S.magphase)(jnp.asarray(re), jnp.asarray(im)))
    floor = np.sqrt(np.float32(1e-10))  # what float32 sqrt(max(0, 1e-10)) computes
    assert floor == pytest.approx(1e-5, rel=1e-6)
    assert np.all(mag[1, 2] == floor)
    assert np.all(cos[1, 2] == 0) and np.all(sin[1, 2] == 0)
    re64, im64 = re.astype(np.float64), im.astype(np.float64)
    mag64 = np.sqrt(np.maximum(re64**2 + im64**2, 1e-10))
    assert rel(mag, mag64) <= 1e-6
    assert rel(cos, re64 / mag64) <= 1e-6
    assert rel(sin, im64 / mag64) <= 1e-6
    assert np.all(mag >= floor)


def test_stft_batched_over_leading_axes(mixture, spectra, jit_stft):
    re, im = spectra
    x = mixture[:, :, : 16 * 160]
    one = jit_stft(jnp.asarray(mixture[0, 1]))  # no leading axes
    assert one[0].shape == (FRAMES, 513)
    assert rel(one[0], re[0, 1]) <= 1e-6 and rel(one[1], im[0, 1]) <= 1e-6
    short = jit_stft(jnp.asarray(x))
    per_row = S.stft(jnp.asarray(x[1, 3]))
    np.testing.assert_allclose(short[0][1, 3], per_row[0], rtol=1e-6, atol=1e-5)
    deep = jit_stft(jnp.asarray(x[None]))
    assert deep[0].shape == (1, 2, 4, 17, 513)
    np.testing.assert_allclose(deep[1][0], short[1], rtol=1e-6, atol=1e-5)


def test_too_short_input():
    with pytest.raises(ValueError, match="512 samples is too short"):
        S.stft(jnp.zeros((2, 512)))
    re, _ = S.stft(jnp.zeros((513,)))
    assert re.shape == (4, 513)


def test_window_and_frames():
    w = S.hann()
    assert w.shape == (1024,) and w[0] == 0.0 and w[512] == 1.0  # periodic Hann
    assert (S.num_frames(LENGTH), S.N_FFT, S.HOP, S.N_BINS) == (FRAMES, 1024, 160, 513)
