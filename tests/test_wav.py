"""Checked WAV I/O: round trips, windowed reads, each bad-input error, atomic writes."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s5jax.audio import wav


def _noise(channels=4, frames=3200, seed=0):
    return (np.random.default_rng(seed).uniform(-0.9, 0.9, (channels, frames))).astype(np.float32)


def test_round_trip_float(tmp_path):
    x = _noise()
    p = wav.write(tmp_path / "x.wav", x)
    assert p == tmp_path / "x.wav"
    assert wav.info(p) == wav.WavInfo(sample_rate=32000, channels=4, frames=3200)
    y = wav.read(p, channels=4)
    assert y.dtype == np.float32 and y.shape == (4, 3200)
    np.testing.assert_array_equal(y, x)


def test_round_trip_mono_1d_and_pcm16(tmp_path):
    x = _noise(1, 1000)[0]
    wav.write(tmp_path / "m.wav", x, subtype="PCM_16")
    assert sf.info(str(tmp_path / "m.wav")).subtype == "PCM_16"
    y = wav.read(tmp_path / "m.wav", channels=1)
    assert y.shape == (1, 1000)
    np.testing.assert_allclose(y[0], x, atol=1.0 / 32768)


def test_pcm16_clips_to_minus_one_one(tmp_path):
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32)
    wav.write(tmp_path / "c.wav", x, subtype="PCM_16")
    ints, _ = sf.read(str(tmp_path / "c.wav"), dtype="int16")
    np.testing.assert_array_equal(ints, [-32768, -32768, 0, 16384, 32767, 32767])


def test_partial_read_equals_slice(tmp_path):
    x = _noise(2, 5000, seed=1)
    wav.write(tmp_path / "x.wav", x)
    np.testing.assert_array_equal(
        wav.read(tmp_path / "x.wav", start=1234, frames=777), x[:, 1234:2011]
    )
    np.testing.assert_array_equal(wav.read(tmp_path / "x.wav", start=4000), x[:, 4000:])
    assert wav.read(tmp_path / "x.wav", start=5000, frames=0).shape == (2, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start": 4000, "frames": 2000}, r"window \[4000, 6000\) is outside the file's 5000"),
        ({"start": -1, "frames": 10}, "outside"),
        ({"start": 0, "frames": -1}, "outside"),
        ({"start": 6000}, "outside"),
    ],
)
def test_window_outside_file(tmp_path, kwargs, match):
    wav.write(tmp_path / "x.wav", _noise(2, 5000))
    with pytest.raises(ValueError, match=match):
        wav.read(tmp_path / "x.wav", **kwargs)


def test_wrong_sample_rate(tmp_path):
    sf.write(str(tmp_path / "r.wav"), _noise(1, 100).T, 16000)
    with pytest.raises(ValueError, match=r"r\.wav: sample rate 16000 Hz, expected 32000 Hz"):
        wav.read(tmp_path / "r.wav")
    assert wav.read(tmp_path / "r.wav", sample_rate=16000).shape == (1, 100)


def test_wrong_channels(tmp_path):
    sf.write(str(tmp_path / "c.wav"), _noise(2, 100).T, 32000)
    with pytest.raises(ValueError, match=r"c\.wav: 2 channels, expected 4"):
        wav.read(tmp_path / "c.wav", channels=4)


def test_non_finite_samples(tmp_path):
    x = _noise(1, 100)
    x[0, 50] = np.nan
    sf.write(str(tmp_path / "n.wav"), x.T, 32000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"n\.wav: non-finite"):
        wav.read(tmp_path / "n.wav")


def test_truncated_file(tmp_path):
    sf.write(str(tmp_path / "full.wav"), _noise(2, 1000).T, 32000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "t.wav").write_bytes(data[: len(data) - 1001])
    with pytest.raises(ValueError, match=r"t\.wav: truncated file: header declares 1000 frames"):
        wav.info(tmp_path / "t.wav")
    with pytest.raises(ValueError, match="truncated"):
        wav.read(tmp_path / "t.wav", channels=2)


def test_garbage_and_missing(tmp_path):
    (tmp_path / "g.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"g\.wav: not a readable audio file"):
        wav.read(tmp_path / "g.wav")
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.wav: not a readable audio file"):
        wav.info(tmp_path / "e.wav")
    with pytest.raises(ValueError, match=r"nope\.wav: no such file"):
        wav.read(tmp_path / "nope.wav")


def test_atomic_write_leaves_only_target(tmp_path):
    wav.write(tmp_path / "a.wav", _noise(1, 10))
    wav.write(tmp_path / "a.wav", _noise(1, 20))  # overwrite in place
    assert os.listdir(tmp_path) == ["a.wav"]
    assert wav.info(tmp_path / "a.wav").frames == 20


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def full(self, data):  # a full disk: the bytes cannot be written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(ValueError, match=r"b\.wav: write failed \(No space left on device\)"):
        wav.write(tmp_path / "b.wav", _noise(1, 10))
    assert os.listdir(tmp_path) == []


def test_failed_encoding_is_an_error(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise sf.LibsndfileError(0, "simulated encoder error")

    monkeypatch.setattr(wav.sf, "write", boom)
    with pytest.raises(ValueError, match=r"b\.wav: cannot encode the audio as WAV"):
        wav.write(tmp_path / "b.wav", _noise(1, 10))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    x = _noise(1, 10)
    wav.write(tmp_path / "k.wav", x)
    real = Path.write_bytes

    def interrupted(self, data):
        real(self, b"RIFF partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wav.write(tmp_path / "k.wav", _noise(1, 30))
    assert os.listdir(tmp_path) == ["k.wav"]
    np.testing.assert_array_equal(wav.read(tmp_path / "k.wav"), x)


@pytest.mark.parametrize(
    "audio, match",
    [
        (np.full((1, 10), np.inf, np.float32), "non-finite"),
        (np.zeros((1, 2, 10), np.float32), r"shape \(1, 2, 10\), expected \(channels, frames\)"),
        (np.zeros((10,), np.int16), "dtype int16"),
    ],
)
def test_write_rejects_bad_audio(tmp_path, audio, match):
    with pytest.raises(ValueError, match=match):
        wav.write(tmp_path / "bad.wav", audio)
    assert os.listdir(tmp_path) == []


def test_write_rejects_bad_subtype_and_dir(tmp_path):
    with pytest.raises(ValueError, match="subtype 'PCM_24'"):
        wav.write(tmp_path / "s.wav", _noise(1, 10), subtype="PCM_24")
    with pytest.raises(ValueError, match="does not exist"):
        wav.write(tmp_path / "no" / "s.wav", _noise(1, 10))
    assert os.listdir(tmp_path) == []


# --- resampling and librosa.load-style windows ---------------------------------------------


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_resample_tone_and_length(rate):
    """A 1 kHz tone at another rate becomes the same tone at 32 kHz (away from the edges), with
    librosa's output length ⌈n·32000/rate⌉. (Bit-identity with librosa.resample / librosa.load
    was checked once against librosa 0.11 outside the suite: max |diff| 0 over 5 rates, 1/2/4
    channels, PCM and float files, mono and multichannel, 5 windows.)"""
    n = int(0.5 * rate) + 7
    t = np.arange(n) / rate
    x = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.cos(2 * np.pi * 1000 * t)])
    y = wav.resample(x.astype(np.float32), rate, 32000)
    assert y.dtype == np.float32 and y.shape == (2, int(np.ceil(n * 32000 / rate)))
    u = np.arange(y.shape[1]) / 32000
    want = np.stack([np.sin(2 * np.pi * 1000 * u), 0.5 * np.cos(2 * np.pi * 1000 * u)])
    mid = slice(800, y.shape[1] - 800)
    err = y[:, mid] - want[:, mid]
    snr = 10 * np.log10(np.sum(want[:, mid] ** 2) / np.sum(err**2))
    assert snr > 80, snr
    assert wav.resample(x, 32000, 32000) is x


def test_load_window_at_native_rate(tmp_path):
    """offset/duration count frames at the file's own rate (⌊offset·r⌋, ⌊duration·r⌋); the window
    alone is resampled; mono averages the channels first."""
    x = _noise(2, 48000 * 2, seed=3)
    wav.write(tmp_path / "s.wav", x, sample_rate=48000)
    y = wav.load(tmp_path / "s.wav", offset=0.30001, duration=0.5, mono=True)
    start, frames = int(0.30001 * 48000), int(0.5 * 48000)
    want = wav.resample(x[:, start : start + frames].mean(0, keepdims=True), 48000, 32000)
    np.testing.assert_array_equal(y, want)
    assert y.shape == (1, 16000)
    # Past the end: cut at the file's end, as librosa.load.
    z = wav.load(tmp_path / "s.wav", offset=1.5, duration=5.0)
    assert z.shape == (2, int(np.ceil(24000 * 2 / 3)))
    with pytest.raises(ValueError, match="s.wav: window of 1.0 s at 2.5 s is outside"):
        wav.load(tmp_path / "s.wav", offset=2.5, duration=1.0)
    with pytest.raises(ValueError, match="s.wav: 2 channels, expected 4"):
        wav.load(tmp_path / "s.wav", channels=4)


def test_load_at_32k_is_read(tmp_path):
    x = _noise(4, 6400, seed=4)
    wav.write(tmp_path / "n.wav", x)
    np.testing.assert_array_equal(wav.load(tmp_path / "n.wav", offset=0.05, duration=0.1),
                                  wav.read(tmp_path / "n.wav", start=1600, frames=3200))
