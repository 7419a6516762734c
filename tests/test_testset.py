"""Test-set reader: prefix-free reference matching, label parsing, checks."""

import numpy as np
import pytest

from s5jax.audio import wav
from s5jax.data.testset import TestSet, parse_reference_name

SR = 32000


def _make(root, soundscapes, refs, length=800, channels=4):
    (root / "soundscape").mkdir(parents=True)
    (root / "oracle_target").mkdir()
    rng = np.random.default_rng(0)
    for n in soundscapes:
        wav.write(root / "soundscape" / f"{n}.wav",
                  rng.standard_normal((channels, length)).astype(np.float32) * 0.1)
    for f in refs:
        wav.write(root / "oracle_target" / f, rng.standard_normal(length).astype(np.float32) * 0.1)
    return root


def test_parse_reference_name():
    assert parse_reference_name("mix_1_Speech.wav") == ("mix_1", "Speech")
    assert parse_reference_name("mix_10_Speech_2.wav") == ("mix_10", "Speech")
    assert parse_reference_name("a_b_c_VacuumCleaner.wav") == ("a_b_c", "VacuumCleaner")
    # A trailing number after a non-class word is part of nothing we know: an error.
    for bad in ("mix_1_Violin.wav", "mix_1_2.wav", "Speech.wav", "mix_1_speech.wav"):
        with pytest.raises(ValueError, match="reference name"):
            parse_reference_name(bad)


def test_prefix_free_matching(tmp_path):
    root = _make(tmp_path, ["mix_1", "mix_10", "mix_2"],
                 ["mix_1_Speech.wav", "mix_1_Dishes.wav", "mix_10_Speech.wav",
                  "mix_10_Blender.wav", "mix_2_Cough.wav"])
    ts = TestSet(root)
    assert [it.name for it in ts] == ["mix_1", "mix_10", "mix_2"]
    # Class-index order: Blender(2) < Dishes(7) < Speech(15).
    assert ts[0].labels == ["Dishes", "Speech"]
    assert ts[1].labels == ["Blender", "Speech"]
    assert ts[2].labels == ["Cough"]
    mix, refs = ts.load(1)
    assert mix.shape == (4, 800) and refs.shape == (2, 800) and refs.dtype == np.float32
    expected = wav.read(root / "oracle_target" / "mix_10_Speech.wav")[0]
    np.testing.assert_array_equal(refs[1], expected)


def test_repeated_class_and_empty_mixture(tmp_path):
    root = _make(tmp_path, ["a", "b"], ["a_Speech.wav", "a_Speech_2.wav"])
    ts = TestSet(root)
    assert ts[0].labels == ["Speech", "Speech"]
    assert ts[1].labels == []
    _, refs = ts.load(1)
    assert refs.shape == (0, 800)


def test_dcase2026_names(tmp_path):
    """<soundscape>_<i>_<Label>.wav (the 2026 test set) next to 2025 names; a name that fits two
    soundscapes is refused."""
    root = _make(tmp_path / "a", ["soundscape_0000", "soundscape_0001", "mix_1"],
                 ["soundscape_0000_0_Speech.wav", "soundscape_0000_1_Speech.wav",
                  "soundscape_0000_2_Dishes.wav", "mix_1_Cough.wav"])
    ts = TestSet(root)
    assert [it.name for it in ts] == ["mix_1", "soundscape_0000", "soundscape_0001"]
    assert ts[0].labels == ["Cough"]
    assert ts[1].labels == ["Dishes", "Speech", "Speech"]
    assert ts[2].labels == []
    root = _make(tmp_path / "b", ["mix", "mix_1"], ["mix_1_Speech.wav"])
    with pytest.raises(ValueError, match="mix_1_Speech.wav: ambiguous"):
        TestSet(root)


def test_errors_name_the_file(tmp_path):
    root = _make(tmp_path / "a", ["mix_1"], ["mix_1_Violin.wav"])
    with pytest.raises(ValueError, match="mix_1_Violin.wav"):
        TestSet(root)
    root = _make(tmp_path / "b", ["mix_1"], ["mix_3_Speech.wav"])
    with pytest.raises(ValueError, match="mix_3_Speech.wav.*no soundscape"):
        TestSet(root)
    four = ["m_Speech.wav", "m_Cough.wav", "m_Pour.wav", "m_Dishes.wav"]
    root = _make(tmp_path / "c", ["m"], four)
    with pytest.raises(ValueError, match="4 references"):
        TestSet(root)
    root = _make(tmp_path / "d", ["m"], ["m_Speech.wav"], channels=2)
    with pytest.raises(ValueError, match=r"m\.wav: 2 channels, expected 4"):
        TestSet(root).load(0)
    with pytest.raises(ValueError, match="no soundscape/ folder"):
        TestSet(tmp_path / "nothing")


def test_reference_length_mismatch(tmp_path):
    root = _make(tmp_path, ["m"], [])
    wav.write(root / "oracle_target" / "m_Speech.wav", np.zeros(799, np.float32))
    with pytest.raises(ValueError, match="m_Speech.wav: 799 frames, expected 800"):
        TestSet(root).load(0)
