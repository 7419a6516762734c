"""separate CLI: outputs, repeated labels, input validation, no overwriting."""

import json

import numpy as np
import pytest
import soundfile as sf

from s5jax import separate
from s5jax.audio import wav
from s5jax.inference.files import output_names

SR = 32000


def _input(path, channels=4, sr=SR, n=SR, seed=0):
    x = np.random.default_rng(seed).standard_normal((channels, n)).astype(np.float32) * 0.1
    wav.write(path, x, sample_rate=sr)
    return x


def test_output_names_repeats():
    assert output_names("a", ["Speech", 2, -1, "Speech", "Speech"]) == [
        "a_Speech.wav", "a_Blender.wav", "a_Speech_2.wav", "a_Speech_3.wav"]


def test_separate_writes_expected_files(tiny_models, tmp_path):
    tagger, separator = tiny_models
    _input(tmp_path / "scene.wav")
    out = tmp_path / "out"
    args = ["--tagger", str(tagger), "--separator", str(separator), str(tmp_path / "scene.wav"),
            "--out", str(out)]
    assert separate.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "scene.json", "scene_Blender.wav", "scene_Speech.wav"]
    y = wav.read(out / "scene_Speech.wav")
    assert y.shape == (1, SR) and np.isfinite(y).all()
    assert sf.info(str(out / "scene_Speech.wav")).subtype == "FLOAT"
    info = json.loads((out / "scene.json").read_text())
    assert info["labels"] == ["Blender", "Speech"] and not info["oracle_labels"]
    assert info["probabilities"]["Speech"] > 0.5 > info["probabilities"]["Cough"]
    # Existing outputs are not replaced without --overwrite.
    before = wav.read(out / "scene_Speech.wav")
    (out / "scene_Speech.wav").write_bytes(b"keep")
    assert separate.main(args) == 2
    assert (out / "scene_Speech.wav").read_bytes() == b"keep"
    assert separate.main(args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(wav.read(out / "scene_Speech.wav"), before)


def test_given_labels_and_submission(tiny_models, tmp_path):
    _, separator = tiny_models
    _input(tmp_path / "a.wav")
    out = tmp_path / "sub"
    assert separate.main(["--separator", str(separator), str(tmp_path / "a.wav"), "--out",
                          str(out), "--labels", "Speech,Dishes,Speech", "--submission"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_Dishes.wav", "a_Speech.wav", "a_Speech_2.wav"]
    assert all(sf.info(str(out / n)).subtype == "PCM_16" for n in names)


def test_other_rates_are_resampled_and_said_once(tiny_models, tmp_path, capsys):
    _, separator = tiny_models
    for name, sr in (("a", 48000), ("b", 44100), ("c", SR)):
        _input(tmp_path / f"{name}.wav", sr=sr, n=sr // 2)
    out = tmp_path / "out"
    assert separate.main(["--separator", str(separator), "--labels", "Speech", "--out", str(out),
                          *(str(tmp_path / f"{n}.wav") for n in "abc")]) == 0
    err = capsys.readouterr().err
    assert err.count("resampled") == 1, err
    assert "2 input(s) resampled to 32000 Hz" in err and "a.wav (48000 Hz)" in err
    for n in "abc":
        i = wav.info(out / f"{n}_Speech.wav")
        assert (i.sample_rate, i.frames) == (SR, SR // 2)
        assert json.loads((out / f"{n}.json").read_text())["sample_rate"] == SR
    assert json.loads((out / "b.json").read_text())["input_sample_rate"] == 44100


@pytest.mark.parametrize("kind,message", [
    ("mono", r"1 channel\(s\); 4-channel first-order ambisonics \(FOA.*\) is required"),
    ("channels", r"2 channel\(s\); 4-channel first-order ambisonics"),
    ("truncated", "truncated"),
    ("nonfinite", "non-finite"),
])
def test_bad_inputs_write_nothing(tiny_models, tmp_path, capsys, kind, message):
    tagger, separator = tiny_models
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    _input(good)
    if kind == "mono":
        _input(bad, channels=1)
    elif kind == "channels":
        _input(bad, channels=2)
    elif kind == "truncated":
        _input(bad)
        raw = bad.read_bytes()
        bad.write_bytes(raw[: len(raw) - 1000])
    else:
        x = np.zeros((SR, 4), np.float32)
        x[100, 1] = np.nan
        sf.write(str(bad), x, SR, subtype="FLOAT")
    out = tmp_path / "out"
    rc = separate.main(["--tagger", str(tagger), "--separator", str(separator), str(good),
                        str(bad), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.wav" in err
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_argument_errors(tmp_path, capsys):
    _input(tmp_path / "a.wav")
    assert separate.main(["--separator", "s", str(tmp_path / "a.wav"), "--out", "o"]) == 2
    assert "--tagger is required" in capsys.readouterr().err
    assert separate.main(["--separator", "s", str(tmp_path / "a.wav"), "--out", "o",
                          "--labels", "Speech,Violin"]) == 2
    assert "Violin" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    _input(tmp_path / "d" / "a.wav")
    assert separate.main(["--separator", "s", "--labels", "Speech", str(tmp_path / "a.wav"),
                          str(tmp_path / "d"), "--out", "o"]) == 2
    assert "two inputs named 'a'" in capsys.readouterr().err
