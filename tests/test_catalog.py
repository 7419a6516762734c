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
    shutil.rmtree(copy / "noise" / "train")
    (problem,) = _problems(copy)
    assert str(copy / "noise" / "train") in problem and "missing folder" in problem


def test_unknown_and_missing_class(copy):
    shutil.rmtree(copy / "sound_event" / "train" / "Cough")
    shutil.copytree(copy / "sound_event" / "train" / "Speech", copy / "sound_event" / "train" /
                    "Singing")
    problems = _problems(copy)
    assert len(problems) == 2
    assert any(str(copy / "sound_event/train/Singing") in p and "unknown class folder" in p
               for p in problems)
    assert any(str(copy / "sound_event/train/Cough") in p and "missing class folder" in p
               for p in problems)


def test_sparse_valid(copy):
    """The baseline reads ``valid`` only through its metadata: missing classes, folders, noise
    and unknown class folders are fine there (rooms and files still get checked)."""
    shutil.rmtree(copy / "sound_event" / "valid" / "Cough")
    (copy / "sound_event" / "valid" / "Whistle").mkdir()
    for p in (copy / "sound_event" / "valid" / "Pour").glob("*.wav"):
        p.unlink()
    shutil.rmtree(copy / "noise" / "valid")
    shutil.rmtree(copy / "interference" / "valid")
    cat = catalog.scan(copy)
    v = cat.splits["valid"]
    assert v.targets["Cough"] == () and v.targets["Pour"] == () and not v.noise
    assert v.interference == {} and len(v.rooms) == SMALL.rooms["valid"]
    assert "sound_event/valid/Whistle: not one of the 18 classes; ignored" in cat.summary()
    # Sparse means "may be missing", not "may be broken".
    bad = copy / "sound_event" / "valid" / "Speech" / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    (problem,) = _problems(copy)
    assert str(bad) in problem
    bad.unlink()
    # Sparse is a choice of the caller.
    assert catalog.scan(copy, splits=("valid",), sparse=("valid",)).splits.keys() == {"valid"}
    with pytest.raises(ValueError, match="sound_event/valid/Cough: missing class folder"):
        catalog.scan(copy, splits=("valid",), sparse=())


def test_empty_class_folder_and_no_recursion(copy):
    folder = copy / "sound_event" / "train" / "Pour"
    (folder / "nested").mkdir()
    for p in folder.glob("*.wav"):
        p.rename(folder / "nested" / p.name)  # nested files are not listed (no '**' glob)
    (problem,) = _problems(copy)
    assert str(folder) in problem and "empty class folder" in problem


def test_hidden_files_are_ignored(copy):
    """AppleDouble ``._x.wav`` files and dot-folders are never read (the baseline's glob and
    SpatialScaper's label listing skip them), and the summary says how many were ignored."""
    speech = copy / "sound_event" / "train" / "Speech"
    (speech / "._Speech_train_000.wav").write_bytes(b"\x00\x05\x16\x07junk")
    (speech / ".hidden.wav").write_bytes(b"junk")
    (copy / "noise" / "train" / "._noise_train_000.wav").write_bytes(b"junk")
    (copy / "room_ir" / "train" / "._room_train_000.sofa").write_bytes(b"junk")
    (copy / "sound_event" / "train" / ".ipynb_checkpoints").mkdir()
    cat = catalog.scan(copy)
    assert len(cat.splits["train"].targets["Speech"]) == SMALL.clips["train"]
    assert len(cat.notes.hidden) == 5
    assert "ignored 5 hidden files/folders" in cat.summary()


def test_other_rates_and_channels_are_adapted(copy):
    """48-kHz and stereo clips are accepted (resampled / averaged to mono when read, as the
    baseline's librosa.load); the summary counts them. Truncated and empty files are refused."""
    cls = copy / "sound_event" / "train" / "Dishes"
    wav.write(cls / "rate.wav", np.full(4800, 0.5), sample_rate=48000, subtype="PCM_16")
    wav.write(cls / "stereo.wav", np.full((2, 3200), 0.5), subtype="PCM_16")
    wav.write(copy / "interference" / "train" / "Rain" / "both.wav", np.full((2, 4410), 0.5),
              sample_rate=44100, subtype="PCM_16")
    wav.write(copy / "noise" / "train" / "n48.wav", np.full((4, 48000), 0.1), sample_rate=48000)
    cat = catalog.scan(copy)
    clips = {c.path.name: c for c in cat.splits["train"].targets["Dishes"]}
    assert (clips["rate.wav"].sample_rate, clips["rate.wav"].seconds) == (48000, 0.1)
    assert clips["stereo.wav"].channels == 2
    lines = cat.summary().splitlines()
    assert ("adapted 4 files: 3 resampled to 32000 Hz when read (from 44100 Hz: 1, 48000 Hz: 2);"
            " 2 averaged to mono (from 2 channels: 2)") in lines

    victim = next((copy / "interference" / "valid" / "Rain").glob("*.wav"))
    victim.write_bytes(victim.read_bytes()[:-1000])
    wav.write(cls / "empty.wav", np.zeros((1, 0)), subtype="PCM_16")
    problems = _problems(copy)
    assert len(problems) == 2
    text = "\n".join(problems)
    assert f"{victim}: truncated file" in text
    assert f"{cls / 'empty.wav'}: no audio frames" in text


def test_bad_sofa_and_other_rate_room(copy):
    corrupt = copy / "room_ir" / "train" / "broken.sofa"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    (problem,) = _problems(copy)
    assert str(corrupt) in problem and "not a readable SOFA" in problem
    corrupt.unlink()
    fast = copy / "room_ir" / "valid" / "fast.sofa"
    sofa.write_room(fast, np.zeros((2, 4, 300)), np.ones((2, 3)), sample_rate=48000)
    cat = catalog.scan(copy)
    room = next(r for r in cat.splits["valid"].rooms if r.path == fast)
    assert (room.sample_rate, room.ir_frames) == (48000, 200)
    assert "1 resampled to 32000 Hz when read (from 48000 Hz: 1)" in cat.summary()


def test_noise_of_another_channel_count_is_skipped(copy):
    """Kept in the pool with one note each: a mixture that draws it gets no background, which
    is what the baseline's add_background does."""
    wav.write(copy / "noise" / "train" / "stereo.wav", np.full((2, 32000), 0.1))
    cat = catalog.scan(copy)
    names = [c.path.name for c in cat.splits["train"].noise]
    assert "stereo.wav" in names
    (line,) = [x for x in cat.summary().splitlines() if x.startswith("skipped")]
    assert line == ("skipped: noise/train/stereo.wav: 2 channels, the rooms have 4: a mixture "
                    "that draws it gets no background (as in the baseline)")


def test_all_problems_in_one_error(copy):
    shutil.rmtree(copy / "room_ir" / "train")
    shutil.rmtree(copy / "sound_event" / "train" / "Typing")
    (copy / "sound_event" / "train" / "Whistle").mkdir()
    (copy / "sound_event" / "valid" / "Speech" / "r.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError) as e:
        catalog.scan(copy)
    msg = str(e.value)
    assert msg.startswith(f"{copy}: 4 problem(s) in the dataset:")
    for needle in ("room_ir/train: missing folder", "sound_event/train/Typing: missing class",
                   "sound_event/train/Whistle: unknown class folder",
                   "Speech/r.wav: not a readable audio file"):
        assert needle in msg


def test_test_dir_follows_the_task_where_a_root_holds_both(tmp_path):
    for sub in ("test", "synthesized/test"):
        (tmp_path / sub / "soundscape").mkdir(parents=True)
    assert catalog.find_test_dir(tmp_path) == tmp_path / "test"
    assert catalog.find_test_dir(tmp_path, "dcase2025") == tmp_path / "test"
    assert catalog.find_test_dir(tmp_path, "dcase2026") == tmp_path / "synthesized" / "test"
    (tmp_path / "test" / "soundscape").rmdir()
    assert catalog.find_test_dir(tmp_path, "dcase2025") == tmp_path / "synthesized" / "test"


def test_broken_link_and_a_clip_too_short_for_32_khz_are_refused(copy):
    speech = copy / "sound_event" / "train" / "Speech"
    (speech / "gone.wav").symlink_to(copy / "nowhere.wav")
    wav.write(speech / "tiny48.wav", np.zeros(1, np.float32), sample_rate=48000)
    with pytest.raises(ValueError) as e:
        catalog.scan(copy)
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert "Speech/gone.wav: a broken symbolic link (to " in msg
    assert "Speech/tiny48.wav: 1 frame(s) at 48000 Hz, none left at 32000 Hz" in msg
