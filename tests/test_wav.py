"""Checked WAV I/O: round trips, windowed reads, each bad-input error, atomic writes."""

import os

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
    def boom(*args, **kwargs):
        raise sf.LibsndfileError(0, "simulated disk error")

    monkeypatch.setattr(wav.sf, "write", boom)
    with pytest.raises(ValueError, match=r"b\.wav: write failed"):
        wav.write(tmp_path / "b.wav", _noise(1, 10))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    x = _noise(1, 10)
    wav.write(tmp_path / "k.wav", x)

    def interrupted(file, *args, **kwargs):
        open(file, "wb").write(b"RIFF partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(wav.sf, "write", interrupted)
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
