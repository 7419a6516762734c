"""The tagger's log-mel front end (nnAudio 0.3.x ``MelSpectrogram`` semantics, spec §4.2).

32 kHz, n_fft = window = 800 (periodic Hann), hop 320, centre with reflect padding of 400,
power 2, 80 Slaney mel bands 50–16000 Hz with Slaney area normalisation, natural log of
``mel + 1.1920929e-07``, then ``(logmel − mean) / std`` with the checkpoint's ``norm_stats``.

Layout: every function returns ``(batch, frames, 80)`` (time before frequency, as the
channels-last convention ``(batch, time, freq, channels)`` with the single channel dropped);
``frames = 1 + samples // 320`` (1001 for a 10-s clip). nnAudio's own layout is
``(batch, 80, frames)``.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from s5jax.audio.stft import frame, hann
from s5jax.mesh import per_device

SAMPLE_RATE = 32000
N_FFT = 800
HOP = 320
N_MELS = 80
FMIN = 50.0
FMAX = 16000.0
N_BINS = N_FFT // 2 + 1
LOG_OFFSET = float(np.finfo(np.float32).eps)  # 1.1920929e-07
DEFAULT_NORM_STATS = (-7.1, 4.2)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    log = 15.0 + np.log(np.maximum(f, 1e-300) / 1000.0) / logstep
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


@functools.lru_cache(maxsize=8)
def mel_basis(
    sr: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Slaney mel filterbank with area normalisation, ``float32 (n_mels, n_fft // 2 + 1)``.

    Equals ``librosa.filters.mel(htk=False, norm='slaney')`` bit for bit: the triangles are
    computed in float64 and stored as float32 *before* the area normalisation, which is then
    applied in float64 and rounded again — the rounding order of librosa and nnAudio.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, n_fft // 2 + 1), np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def fourier_kernels(n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nnAudio's STFT buffers ``wsin, wcos (bins, 1, n_fft)`` and ``window_mask (1, n_fft, 1)``.

    Only used to check the buffers stored in a checkpoint (P5); the forward pass uses an rfft.
    """
    s = np.arange(n_fft, dtype=np.float64)
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)[:, None]
    win = hann(n_fft).astype(np.float32)
    wsin = np.sin(2 * np.pi * k * s / n_fft).astype(np.float32) * win
    wcos = np.cos(2 * np.pi * k * s / n_fft).astype(np.float32) * win
    return wsin[:, None, :], wcos[:, None, :], win[None, :, None]


def num_frames(samples: int) -> int:
    """Mel frames of ``samples`` samples: ``1 + samples // 320``."""
    return 1 + samples // HOP


def _rfft(frames: jnp.ndarray) -> jnp.ndarray:
    return jnp.fft.rfft(frames, n=N_FFT, axis=-1)


def mel_power(x: jnp.ndarray, center: bool = True) -> jnp.ndarray:
    """Mel power spectrogram.

    Args:
      x: waveform ``(batch, samples)`` (any leading axes), more than 400 samples.
      center: False if ``x`` is a window already cut from the reflect-padded signal (samples
        ``[320·f − 400, 320·(f + n − 1) + 400)`` give frames ``f … f + n − 1``, exactly as the
        whole signal does).

    Returns:
      ``(batch, frames, 80)`` = mel basis · |STFT|², ``frames = 1 + samples // 320``
      (``1 + (samples − 800) // 320`` without ``center``).
    """
    frames = frame(x, N_FFT, HOP, center) * jnp.asarray(hann(N_FFT), x.dtype)
    spec = per_device(_rfft)(frames)  # per device under a mesh, as in stft.py
    # nnAudio returns the magnitude and raises it to the power 2; keep that rounding.
    power = jnp.sqrt(spec.real**2 + spec.imag**2).astype(x.dtype) ** 2
    basis = jnp.asarray(mel_basis(), x.dtype)
    return jnp.einsum("...tk,mk->...tm", power, basis, precision="highest")


def log_mel(x: jnp.ndarray, center: bool = True) -> jnp.ndarray:
    """``ln(mel_power(x) + 1.1920929e-07)``, ``(batch, frames, 80)``."""
    return jnp.log(mel_power(x, center) + LOG_OFFSET)


def normalized_log_mel(
    x: jnp.ndarray, norm_stats: tuple[float, float] = DEFAULT_NORM_STATS, center: bool = True
) -> jnp.ndarray:
    """``(log_mel(x) − mean) / std``, ``(batch, frames, 80)``; ``norm_stats = (mean, std)``."""
    mean, std = norm_stats
    return (log_mel(x, center) - mean) / std


def padded_window(x: np.ndarray, first: int, frames: int) -> np.ndarray:
    """Samples of the reflect-padded signal that frames ``first … first + frames − 1`` of a
    centred STFT read: ``(..., L)`` host array → ``(..., 800 + 320·(frames − 1))``, for
    ``mel_power(…, center=False)``. Only the window is built, never the padded signal."""
    n = x.shape[-1]
    idx = np.arange(HOP * first - N_FFT // 2, HOP * (first + frames - 1) + N_FFT // 2)
    idx = np.abs(idx)  # reflect at the start ...
    idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx)  # ... and at the end
    return x[..., idx]
