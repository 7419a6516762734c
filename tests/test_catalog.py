"""catalog.scan on the embedded dataset and on broken copies of it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from s5jax.audio import wav
from s5jax.data import catalog, embedded, sofa
from s5jax.labels import CLASSES

SMALL = embedded.SCALES["small"]


def test_scan_embedded(embedded_small):
    cat = catalog.scan(embedded_small)
    assert cat.root == embedded_small
    assert list(cat.splits) == ["train", "valid"]
    assert cat.valid_metadata == embedded_small / "metadata" / "valid.json"
    assert cat.test_dir == embedded_small / "test"
    for name, split in cat.splits.items():
        assert tuple(split.targets) == CLASSES
        for label, clips in split.targets.items():
            assert len(clips) == SMALL.clips[name]
            assert [c.path for c in clips] == sorted(c.path for c in clips)
            assert all(c.label == label and c.channels == 1 for c in clips)
        assert list(split.interference) == sorted(split.interference)
        assert sum(len(v) for v in split.interference.values()) == \
            4 * SMALL.interference[name]
        assert len(split.noise) == len(SMALL.noise_seconds[name])
        assert all(c.channels == 4 and c.label == "" for c in split.noise)
        assert len(split.rooms) == SMALL.rooms[name]
        for room in split.rooms:
            assert room.positions.shape == (SMALL.positions, 3)
            assert (room.channels, room.ir_frames) == (4, 8000)
            assert not room.positions.flags.writeable
        clip = split.targets["Speech"][0]
        assert clip.frames == wav.info(clip.path).frames
    # Only one split, if asked.
    assert list(catalog.scan(embedded_small, splits=("valid",)).splits) == ["valid"]


@pytest.fixture
def copy(embedded_small, tmp_path):
    dst = tmp_path / "dev_set"
    shutil.copytree(embedded_small, dst, ignore=shutil.ignore_patterns("test", "metadata"))
    return dst


def _problems(root) -> list[str]:
    with pytest.raises(ValueError) as e:
        catalog.scan(root)
    return str(e.value).splitlines()[1:]


def test_copy_scans_clean(copy):
    cat = catalog.scan(copy)
    assert cat.valid_metadata is None and cat.test_dir is None


def test_missing_root(tmp_path):
    with pytest.raises(ValueError, match="nope: no such dataset folder"):
        catalog.scan(tmp_path / "nope")


def test_missing_folder(copy):
    shutil.rmtree(copy / "noise" / "valid")
    (problem,) = _problems(copy)
    assert str(copy / "noise" / "valid") in problem and "missing folder" in problem


def test_unknown_and_missing_class(copy):
    shutil.rmtree(copy / "sound_event" / "valid" / "Cough")
    shutil.copytree(copy / "sound_event" / "train" / "Speech", copy / "sound_event" / "train" /
                    "Singing")
    problems = _problems(copy)
    assert len(problems) == 2
    assert any(str(copy / "sound_event/train/Singing") in p and "unknown class folder" in p
               for p in problems)
    assert any(str(copy / "sound_event/valid/Cough") in p and "missing class folder" in p
               for p in problems)


def test_empty_class_folder_and_no_recursion(copy):
    folder = copy / "sound_event" / "train" / "Pour"
    (folder / "nested").mkdir()
    for p in folder.glob("*.wav"):
        p.rename(folder / "nested" / p.name)  # nested files are not listed (no '**' glob)
    (problem,) = _problems(copy)
    assert str(folder) in problem and "empty class folder" in problem


def test_wrong_rate_channels_truncated(copy):
    cls = copy / "sound_event" / "train" / "Dishes"
    wav.write(cls / "rate.wav", np.full(4800, 0.5), sample_rate=48000, subtype="PCM_16")
    wav.write(cls / "stereo.wav", np.full((2, 3200), 0.5), subtype="PCM_16")
    wav.write(copy / "noise" / "train" / "mono.wav", np.full(3200, 0.5), subtype="PCM_16")
    victim = next((copy / "interference" / "valid" / "Rain").glob("*.wav"))
    victim.write_bytes(victim.read_bytes()[:-1000])
    problems = _problems(copy)
    assert len(problems) == 4
    text = "\n".join(problems)
    assert f"{cls / 'rate.wav'}: sample rate 48000 Hz, expected 32000 Hz" in text
    assert f"{cls / 'stereo.wav'}: 2 channels, expected 1" in text
    assert f"{copy / 'noise/train/mono.wav'}: 1 channels, expected 4" in text
    assert f"{victim}: truncated file" in text


def test_bad_sofa(copy):
    corrupt = copy / "room_ir" / "train" / "broken.sofa"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    fast = copy / "room_ir" / "valid" / "fast.sofa"
    sofa.write_room(fast, np.zeros((2, 4, 100)), np.ones((2, 3)), sample_rate=48000)
    problems = _problems(copy)
    assert len(problems) == 2
    assert any(str(corrupt) in p and "not a readable SOFA" in p for p in problems)
    assert any(str(fast) in p and "48000" in p and "expected 32000 Hz" in p for p in problems)


def test_noise_must_match_room_channels(copy):
    for p in (copy / "room_ir" / "train").glob("*.sofa"):
        p.unlink()
    sofa.write_room(copy / "room_ir" / "train" / "stereo.sofa", np.zeros((2, 2, 100)),
                    np.ones((2, 3)))
    problems = _problems(copy)
    assert len(problems) == len(SMALL.noise_seconds["train"])
    assert all("4 channels, expected 2" in p for p in problems)


def test_all_problems_in_one_error(copy):
    shutil.rmtree(copy / "room_ir" / "valid")
    shutil.rmtree(copy / "sound_event" / "train" / "Typing")
    (copy / "sound_event" / "valid" / "Whistle").mkdir()
    wav.write(copy / "sound_event" / "valid" / "Speech" / "r.wav", np.full(3200, 0.5),
              sample_rate=16000, subtype="PCM_16")
    with pytest.raises(ValueError) as e:
        catalog.scan(copy)
    msg = str(e.value)
    assert msg.startswith(f"{copy}: 4 problem(s) in the dataset:")
    for needle in ("room_ir/valid: missing folder", "sound_event/train/Typing: missing class",
                   "sound_event/valid/Whistle: unknown class folder",
                   "Speech/r.wav: sample rate 16000 Hz"):
        assert needle in msg
