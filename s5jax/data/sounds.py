"""Procedural sound generators: one per target class, a few interference kinds, FOA noise.

Synthetic, but each class has its own recognisable structure (tonal beeps, inharmonic bell
partials, motor noise with harmonics, impact patterns, formant bursts, …) so that a tagger can
learn to tell them apart and a separator has distinct spectra to pull apart. Every generator is
a pure function of a numpy Generator and a duration; levels are set by the caller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from s5jax.labels import CLASSES

SAMPLE_RATE = 32000
_SR = SAMPLE_RATE

Generator = Callable[[np.random.Generator, float], np.ndarray]


# --- building blocks -----------------------------------------------------------------------

def _t(n: int) -> np.ndarray:
    return np.arange(n) / _SR


def _snap(f: float | None) -> float | None:
    """Round a corner frequency to a 1/48-octave grid, so filter designs can be cached."""
    return None if not f else float(2.0 ** (np.round(np.log2(f) * 48) / 48))


@functools.lru_cache(maxsize=4096)
def _sos(lo: float | None, hi: float | None, order: int) -> np.ndarray:
    from scipy import signal  # deferred: importing scipy adds ~1 s to every command's start-up

    if lo and hi:
        return signal.butter(order, [lo, hi], btype="bandpass", fs=_SR, output="sos")
    if lo:
        return signal.butter(order, lo, btype="highpass", fs=_SR, output="sos")
    return signal.butter(order, hi, btype="lowpass", fs=_SR, output="sos")


def _band(x: np.ndarray, lo: float | None, hi: float | None, order: int = 4) -> np.ndarray:
    from scipy import signal  # deferred, as in _sos

    return signal.sosfilt(_sos(_snap(lo), _snap(hi), order), x)


def _norm(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def _decay(n: int, tau: float) -> np.ndarray:
    return np.exp(-_t(n) / tau)


def _place(out: np.ndarray, event: np.ndarray, start: int) -> None:
    end = min(len(out), start + len(event))
    if start < end:
        out[start:end] += event[: end - start]


def _events(rng, n: int, gap: tuple[float, float], first: float = 0.02) -> list[int]:
    """Event onsets (samples) with random gaps, covering the clip."""
    onsets, t = [], first
    while t * _SR < n:
        onsets.append(int(t * _SR))
        t += rng.uniform(*gap)
    return onsets


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    k = min(len(x) // 2, int(seconds * _SR))
    if k > 0:
        ramp = np.linspace(0.0, 1.0, k)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _tone(f: float | np.ndarray, n: int, harmonics=(1.0,), phase=0.0) -> np.ndarray:
    """Sum of harmonics; ``f`` may be a per-sample frequency track."""
    inst = np.cumsum(np.broadcast_to(f, (n,))) / _SR * 2 * np.pi + phase
    return sum(a * np.sin((h + 1) * inst) for h, a in enumerate(harmonics))


def _motor(rng, n, f0, harmonics, noise_band, noise_level, wobble) -> np.ndarray:
    """Motor-like sound: a jittery harmonic series over band-limited noise."""
    drift = 1 + wobble * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * _t(n) + rng.uniform(0, 6))
    jitter = 1 + 0.01 * _band(rng.standard_normal(n), None, 20, order=2) * 30
    tone = _tone(f0 * drift * jitter, n, harmonics)
    noise = _band(rng.standard_normal(n), *noise_band)
    return _norm(tone) + noise_level * _norm(noise)


# --- target classes ------------------------------------------------------------------------

def alarm_clock(rng, dur):
    n = int(dur * _SR)
    f = rng.uniform(2000, 4000)
    on, off, group = rng.uniform(0.06, 0.12), rng.uniform(0.05, 0.1), int(rng.integers(2, 5))
    beep = _fade(_tone(f, int(on * _SR), (1.0, 0.3)), 0.003)
    out = np.zeros(n)
    for g in _events(rng, n, (group * (on + off) + 0.3, group * (on + off) + 0.6)):
        for b in range(group):
            _place(out, beep, g + int(b * (on + off) * _SR))
    return out


def bicycle_bell(rng, dur):
    n = int(dur * _SR)
    f = rng.uniform(1800, 3200)
    tau = rng.uniform(0.25, 0.6)
    ratios, amps = (1.0, 2.76, 5.4, 8.93), (1.0, 0.6, 0.35, 0.2)
    m = int(min(dur, 4 * tau) * _SR)
    strike = sum(a * _tone(f * r, m) * _decay(m, tau / (1 + i)) for i, (r, a) in
                 enumerate(zip(ratios, amps, strict=True)) if f * r < 15000)
    out = np.zeros(n)
    for s in _events(rng, n, (0.15, 0.5)):
        _place(out, strike * rng.uniform(0.6, 1.0), s)
    return out


def blender(rng, dur):
    n = int(dur * _SR)
    return _motor(rng, n, rng.uniform(150, 280), (1, 0.7, 0.5, 0.4, 0.3, 0.2),
                  (800, 5000), 0.8, 0.05)


def buzzer(rng, dur):
    n = int(dur * _SR)
    f = rng.uniform(150, 500)
    square = np.sign(np.sin(2 * np.pi * f * _t(n))) * 0.8
    gate = np.zeros(n)
    on = rng.uniform(0.4, 1.5)
    for s in _events(rng, n, (on + 0.2, on + 0.6), first=0.0):
        gate[s : s + int(on * _SR)] = 1
    return _band(square * _band(gate, None, 100, 2), None, 8000)


def clapping(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    lo = rng.uniform(800, 1500)
    period = rng.uniform(0.2, 0.45)
    for s in _events(rng, n, (0.9 * period, 1.1 * period)):
        m = int(rng.uniform(0.005, 0.015) * _SR) + 200
        burst = _band(rng.standard_normal(m), lo, lo * 3) * _decay(m, 0.006)
        _place(out, burst, s)
    return out


def cough(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    for s in _events(rng, n, (0.35, 0.9)):
        m = int(rng.uniform(0.2, 0.35) * _SR)
        env = (1 - np.exp(-_t(m) / 0.005)) * _decay(m, rng.uniform(0.05, 0.1))
        x = rng.standard_normal(m)
        f1 = rng.uniform(400, 700)
        x = _band(x, f1, f1 * 4, order=2) + 0.5 * _band(x, 2000, 4000, order=2)
        _place(out, x * env, s)
    return out


def cupboard(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    for s in _events(rng, n, (0.8, 1.6)):
        m = int(rng.uniform(0.3, 0.6) * _SR)
        f = rng.uniform(250, 500) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 5) * _t(m)))
        creak = _tone(f, m, (1, 0.5, 0.4, 0.3)) * np.abs(np.sin(np.pi * _t(m) * 30)) ** 4
        thud_len = int(0.12 * _SR)
        thud = _band(rng.standard_normal(thud_len), None, 300) * _decay(thud_len, 0.03)
        _place(out, 0.3 * _fade(creak), s)
        _place(out, 4 * thud, s + m)
    return out


def dishes(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    for s in _events(rng, n, (0.08, 0.4)):
        m = int(rng.uniform(0.05, 0.2) * _SR)
        f = rng.uniform(2500, 6000)
        clink = sum(a * _tone(f * r, m) for r, a in ((1, 1), (1.58, 0.6), (2.31, 0.4)))
        _place(out, clink * _decay(m, m / _SR / 4) * rng.uniform(0.3, 1), s)
    return out


def doorbell(rng, dur):
    n = int(dur * _SR)
    f1 = rng.uniform(550, 800)
    f2 = f1 * rng.uniform(0.75, 0.82)
    m = int(0.9 * _SR)
    ding = _tone(f1, m, (1, 0.2, 0.1)) * _decay(m, 0.35)
    dong = _tone(f2, m, (1, 0.2, 0.1)) * _decay(m, 0.45)
    out = np.zeros(n)
    for s in _events(rng, n, (1.3, 2.0)):
        _place(out, ding, s)
        _place(out, dong, s + int(0.45 * _SR))
    return out


def footsteps(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    period = rng.uniform(0.4, 0.65)
    for s in _events(rng, n, (0.9 * period, 1.1 * period)):
        m = int(0.08 * _SR)
        step = _band(rng.standard_normal(m), 60, rng.uniform(300, 600), 2) * _decay(m, 0.02)
        _place(out, step, s)
    return out


def hair_dryer(rng, dur):
    n = int(dur * _SR)
    return _motor(rng, n, rng.uniform(300, 500), (0.4, 0.2, 0.1), (2000, 12000), 2.0, 0.01)


def mechanical_fans(rng, dur):
    n = int(dur * _SR)
    blade = rng.uniform(40, 90)
    x = _motor(rng, n, blade, (1, 0.6, 0.3), (80, 900), 1.2, 0.02)
    return x * (1 + 0.3 * np.sin(2 * np.pi * blade / rng.integers(3, 7) * _t(n)))


def musical_keyboard(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    note_len = rng.uniform(0.2, 0.5)
    for s in _events(rng, n, (note_len, note_len * 1.5)):
        f = 440 * 2 ** ((rng.integers(48, 85) - 69) / 12)
        m = int(note_len * 1.4 * _SR)
        env = (1 - np.exp(-_t(m) / 0.004)) * _decay(m, note_len / 2)
        _place(out, _tone(f, m, (1, 0.5, 0.33, 0.25, 0.2)) * env, s)
    return out


def percussion(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    beat = rng.uniform(0.15, 0.3)
    for i, s in enumerate(_events(rng, n, (beat, beat))):
        m = int(0.25 * _SR)
        if i % 2 == 0:  # drum: pitch drop
            f = rng.uniform(60, 160) * (1 + 2 * _decay(m, 0.02))
            hit = _tone(f, m) * _decay(m, 0.08)
        else:  # snare-like: tone + noise
            hit = (0.5 * _tone(rng.uniform(180, 250), m)
                   + _band(rng.standard_normal(m), 2000, 9000)) * _decay(m, 0.05)
        _place(out, hit * rng.uniform(0.5, 1), s)
    return out


def pour(rng, dur):
    n = int(dur * _SR)
    x = rng.standard_normal(n)
    f = rng.uniform(700, 1400) * (1 + 0.5 * _t(n) / max(dur, 1e-3))  # filling: rising pitch
    # Bubbly trickle: noise through a resonance whose centre follows f, gated by random drops.
    out = np.zeros(n)
    hop = int(0.02 * _SR)
    for s in range(0, n, hop):
        seg = x[s : s + hop + 64]
        fc = float(f[min(s, n - 1)])
        y = _band(seg, fc * 0.8, fc * 1.25, 2)[: hop]
        out[s : s + len(y)] += y
    gate = _band((rng.random(n) < 60 / _SR).astype(float), None, 40, 2)
    return out * (0.3 + np.abs(gate) / max(np.max(np.abs(gate)), 1e-9))


def speech(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    f0 = rng.uniform(95, 230)
    vowels = ((700, 1200), (400, 2200), (300, 900), (500, 1700), (300, 2500))
    for s in _events(rng, n, (0.2, 0.45)):
        if rng.random() < 0.15:  # pause between phrases
            continue
        m = int(rng.uniform(0.12, 0.3) * _SR)
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 5 * _t(m)) + 0.1 * _t(m) / (m / _SR))
        pulses = _band(np.sign(np.sin(np.cumsum(pitch) / _SR * 2 * np.pi)) + 1, 60, None, 2)
        f1, f2 = vowels[rng.integers(len(vowels))]
        syl = _band(pulses, f1 * 0.8, f1 * 1.2, 2) + 0.5 * _band(pulses, f2 * 0.85, f2 * 1.15, 2)
        _place(out, syl * np.sin(np.pi * _t(m) / (m / _SR)) ** 2, s)
    return out


def typing(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    for s in _events(rng, n, (0.08, 0.25)):
        m = int(rng.uniform(0.003, 0.008) * _SR) + 100
        click = _band(rng.standard_normal(m), 3000, 10000, 2) * _decay(m, 0.002)
        _place(out, click * rng.uniform(0.4, 1), s)
    return out


def vacuum_cleaner(rng, dur):
    n = int(dur * _SR)
    x = _motor(rng, n, rng.uniform(800, 1400), (1, 0.3), (300, 7000), 3.0, 0.005)
    return x


TARGETS: dict[str, Generator] = dict(zip(CLASSES, (
    alarm_clock, bicycle_bell, blender, buzzer, clapping, cough, cupboard, dishes, doorbell,
    footsteps, hair_dryer, mechanical_fans, musical_keyboard, percussion, pour, speech, typing,
    vacuum_cleaner,
), strict=True))


# --- interference (non-target) kinds -------------------------------------------------------

def bird(rng, dur):
    n = int(dur * _SR)
    out = np.zeros(n)
    for s in _events(rng, n, (0.15, 0.6)):
        m = int(rng.uniform(0.05, 0.15) * _SR)
        f = rng.uniform(3000, 6000) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(10, 30) * _t(m)))
        _place(out, _tone(f, m) * np.sin(np.pi * _t(m) / (m / _SR)), s)
    return out


def engine(rng, dur):
    n = int(dur * _SR)
    return _motor(rng, n, rng.uniform(25, 45), (1, 0.8, 0.6, 0.5, 0.4), (40, 400), 0.5, 0.1)


def rain(rng, dur):
    n = int(dur * _SR)
    drops = (rng.random(n) < 400 / _SR) * rng.standard_normal(n)
    return _band(drops, 1000, 8000, 2) + 0.1 * _band(rng.standard_normal(n), 500, 6000, 2)


def siren(rng, dur):
    n = int(dur * _SR)
    f = rng.uniform(600, 900) * (1 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * _t(n)))
    return _tone(f, n, (1, 0.3, 0.15))


INTERFERENCE: dict[str, Generator] = {"Bird": bird, "Engine": engine, "Rain": rain, "Siren": siren}


# --- background noise ----------------------------------------------------------------------

def foa_noise(rng: np.random.Generator, dur: float) -> np.ndarray:
    """Diffuse-field FOA (ACN/SN3D) background, ``(4, frames)``.

    In an isotropic diffuse field the first-order SN3D channels are uncorrelated with each
    other and with W, each with 1/3 of W's power; the noise colour and a slow level drift are
    shared, as they would be for one physical field.
    """
    n = int(dur * _SR)
    white = rng.standard_normal((4, n))
    tilt = rng.uniform(-1.0, 0.0)  # spectral slope, 0 = white, −1 = pink-ish (power ∝ f^tilt)
    freqs = np.fft.rfftfreq(n, 1 / _SR)
    shape = np.maximum(freqs, 20.0) ** (tilt / 2)
    colored = np.fft.irfft(np.fft.rfft(white, axis=1) * shape, n=n, axis=1)
    hum_f = rng.choice([50.0, 60.0])
    hum = rng.uniform(0, 0.5) * _tone(hum_f, n, (1, 0.5, 0.25))
    colored[0] += hum * np.std(colored[0])
    drift = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.02, 0.1) * _t(n) + rng.uniform(0, 6))
    scale = np.array([1.0, 3 ** -0.5, 3 ** -0.5, 3 ** -0.5])[:, None]
    return colored / np.std(colored[0]) * scale * drift


# --- the baseline's add_data filters -------------------------------------------------------

PEAK_MIN = 0.02
MIN_SECONDS = 0.1
WINDOW_SECONDS = 10.0
WINDOW_HOP_SECONDS = 0.1


def passes_filters(x: np.ndarray) -> bool:
    """True if a mono clip (frames,) passes the baseline's ``add_data`` checks (spec §2.1).

    Peak ≥ 0.02, at least 0.1 s long, no exact zeros at either end, and no 10-s window
    (0.1-s hop) whose peak is below 0.02.
    """
    if len(x) < MIN_SECONDS * _SR or x[0] == 0 or x[-1] == 0:
        return False
    if np.max(np.abs(x)) < PEAK_MIN:
        return False
    win, hop = int(WINDOW_SECONDS * _SR), int(WINDOW_HOP_SECONDS * _SR)
    if len(x) <= win:
        return True
    # Peak per 0.1-s block, then the max over each 10-s run of blocks.
    blocks = np.abs(x[: len(x) // hop * hop]).reshape(-1, hop).max(axis=1)
    runs = np.lib.stride_tricks.sliding_window_view(blocks, win // hop).max(axis=1)
    return bool(runs.min() >= PEAK_MIN)


def finish_clip(x: np.ndarray, peak: float) -> np.ndarray:
    """Scale to ``peak``, quantise to the 16-bit grid and trim exact zeros at both ends.

    Quantising here (×32768, as soundfile does) means the clip written as PCM_16 reads back
    bit-identical, so the trimmed ends stay non-zero on disk.
    """
    x = np.round(_norm(np.asarray(x, dtype=np.float64)) * peak * 32768) / 32768
    nz = np.flatnonzero(x)
    if nz.size == 0:
        return x[:0]
    return x[nz[0] : nz[-1] + 1]
