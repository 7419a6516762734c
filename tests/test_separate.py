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
    assert separate.main(["--separator", "s", str(tmp_path / "a.wav"), "--out", "o",
                          "--labels", ""]) == 2
    assert "--labels: no class names given" in capsys.readouterr().err
    assert separate.main(["--separator", "s", "--labels", "Speech", str(tmp_path / "a.wav"),
                          "--out", ""]) == 2
    assert "--out: expected a folder name" in capsys.readouterr().err


def test_awkward_names_folders_and_loud_input(tiny_models, tmp_path, capsys):
    import math
    import os

    tagger, separator = tiny_models
    d = tmp_path / "in"
    d.mkdir()
    latin1 = os.fsdecode(b"caf\xe9")  # a Latin-1 name on a UTF-8 system: surrogates in Python
    _input(d / f"{latin1}.wav")
    (d / "takes.wav").mkdir()  # a folder named like a wav is not an input
    x = _input(d / "loud.wav", seed=1)
    wav.write(d / "loud.wav", x * 32767)  # a float WAV written at integer scale
    out = tmp_path / "out"
    assert separate.main(["--tagger", str(tagger), "--separator", str(separator), str(d),
                          "--out", str(out), "--task", "dcase2026", "--submission"]) == 0
    assert "loud.wav: samples reach ±" in capsys.readouterr().err
    names = sorted(os.listdir(out / "eval_out"))
    assert f"{latin1}_0_Blender.wav" in names and "loud_0_Blender.wav" in names
    # The 18-sigmoid tagger's probability of each class (sigmoid(3) here), not 1.0.
    listing = json.loads((out / "eval_results.json").read_text())["probabilities"]
    probs = [e["probability"] for m in listing for e in m["estimate"]]
    assert len(probs) == 4
    assert probs == pytest.approx([1 / (1 + math.exp(-3.0))] * 4, abs=1e-3)


def test_header_problems_are_named_plainly(tmp_path):
    from s5jax.inference.files import check_soundscape

    _input(tmp_path / "a.wav")
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    at = raw.index(b"data")
    raw[at + 4: at + 8] = (0).to_bytes(4, "little")  # a streaming writer's unfinished header
    (tmp_path / "stream.wav").write_bytes(raw)
    with pytest.raises(ValueError, match="its header declares no samples, yet the file holds"):
        check_soundscape(tmp_path / "stream.wav")
    _input(tmp_path / "short.wav", sr=16000, n=100)
    with pytest.raises(ValueError, match=r"short.wav \(100 frames at 16000 Hz, resampled to "
                                         r"32000\): 200 samples"):
        check_soundscape(tmp_path / "short.wav")
