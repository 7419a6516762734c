"""P4: the tagger's mel front end against nnAudio's ``MelSpectrogram``."""

import jax
import numpy as np
import pytest

from s5jax.audio import mel

torch = pytest.importorskip("torch")
features = pytest.importorskip("nnAudio.features")


@pytest.fixture(scope="module")
def nnaudio_mel():
    return features.MelSpectrogram(
        sr=32000, n_fft=800, win_length=800, hop_length=320, n_mels=80, fmin=50, fmax=16000,
        center=True, pad_mode="reflect", power=2.0, htk=False, trainable_mel=False,
        trainable_STFT=False, verbose=False,
    )


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def test_mel_basis_bit_equal_to_nnaudio(nnaudio_mel):
    ours = mel.mel_basis()
    theirs = nnaudio_mel.mel_basis.numpy()
    assert ours.dtype == np.float32 and ours.shape == (80, 401)
    np.testing.assert_array_equal(ours, theirs)


def test_fourier_kernels_equal_nnaudio_buffers(nnaudio_mel):
    wsin, wcos, win = mel.fourier_kernels()
    np.testing.assert_allclose(wsin, nnaudio_mel.stft.wsin.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(wcos, nnaudio_mel.stft.wcos.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(win, nnaudio_mel.stft.window_mask.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("samples", [32000, 40160])
def test_mel_power_and_log_match_nnaudio(nnaudio_mel, samples):
    rng = np.random.default_rng(samples)
    x = (0.1 * rng.standard_normal((2, samples))).astype(np.float32)
    x[1, : samples // 2] = 0.0  # silence exercises the log floor
    with torch.no_grad():
        ref = nnaudio_mel(torch.from_numpy(x)).numpy()  # (B, 80, T)
    ours = np.asarray(jax.jit(mel.mel_power)(x))
    assert ours.shape == (2, mel.num_frames(samples), 80)
    assert rel(ours, ref.transpose(0, 2, 1)) <= 1e-5
    log_ref = np.log(ref + np.float32(1.1920929e-07)).transpose(0, 2, 1)
    ours_log = np.asarray(mel.log_mel(x))
    assert np.max(np.abs(ours_log - log_ref)) <= 1e-4
    norm = np.asarray(mel.normalized_log_mel(x, (-3.0, 2.0)))
    np.testing.assert_allclose(norm, (ours_log + 3.0) / 2.0, rtol=1e-6, atol=1e-6)


def test_ten_second_clip_has_1001_frames():
    assert mel.num_frames(320000) == 1001
