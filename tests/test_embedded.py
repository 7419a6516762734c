"""The procedural embedded dataset: layout, determinism, add_data filters, class statistics."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s5jax.audio import wav
from s5jax.data import embedded, sounds
from s5jax.labels import CLASSES

SMALL = embedded.SCALES["small"]


def _hashes(root: Path, parts=("sound_event", "interference", "noise", "room_ir")) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for part in parts
        for p in sorted((root / part).rglob("*"))
        if p.is_file()
    }


def test_layout_complete(embedded_small):
    r = embedded_small
    for split in ("train", "valid"):
        classes = sorted(p.name for p in (r / "sound_event" / split).iterdir())
        assert classes == sorted(CLASSES)
        for label in CLASSES:
            assert len(list((r / "sound_event" / split / label).glob("*.wav"))) == \
                SMALL.clips[split]
        kinds = sorted(p.name for p in (r / "interference" / split).iterdir())
        assert kinds == sorted(sounds.INTERFERENCE)
        for kind in kinds:
            assert len(list((r / "interference" / split / kind).glob("*.wav"))) == \
                SMALL.interference[split]
        assert len(list((r / "noise" / split).glob("*.wav"))) == len(SMALL.noise_seconds[split])
        assert len(list((r / "room_ir" / split).glob("*.sofa"))) == SMALL.rooms[split]
    assert (r / "metadata" / "valid.json").is_file()
    listing = json.loads((r / "metadata" / "valid.json").read_text())
    assert listing and all((r / "metadata" / e["metadata_path"]).is_file() for e in listing)
    scapes = sorted((r / "test" / "soundscape").glob("*.wav"))
    assert scapes and all(wav.info(p).channels == 4 for p in scapes)
    assert list((r / "test" / "oracle_target").glob("*.wav"))
    manifest = embedded.read_manifest(r)
    assert manifest["seed"] == 0 and manifest["scale"] == "small"
    assert manifest["version"] == embedded.VERSION
    # No temporary leftovers next to the dataset.
    assert [p.name for p in r.parent.iterdir()] == [r.name]


def test_clips_obey_add_data_filters(embedded_small):
    long_clips = 0
    for role in ("sound_event", "interference"):
        for path in sorted((embedded_small / role).glob("*/*/*.wav")):
            i = sf.info(str(path))
            assert (i.samplerate, i.channels, i.subtype) == (32000, 1, "PCM_16"), path
            x = wav.read(path, channels=1)[0]
            assert np.abs(x).max() >= sounds.PEAK_MIN
            assert len(x) >= 0.1 * 32000
            assert x[0] != 0 and x[-1] != 0  # leading/trailing exact zeros trimmed
            assert sounds.passes_filters(x.astype(np.float64))
            long_clips += len(x) > 10 * 32000
    assert long_clips >= 2  # some clips > 10 s exercise the source offsets
    noise = sorted((embedded_small / "noise").glob("*/*.wav"))
    infos = [sf.info(str(p)) for p in noise]
    assert all((i.samplerate, i.channels, i.subtype) == (32000, 4, "PCM_16") for i in infos)
    assert any(i.frames > 10 * 32000 for i in infos)


def test_filters_reject_what_the_baseline_rejects():
    ok = np.full(32000, 0.5)
    assert sounds.passes_filters(ok)
    assert not sounds.passes_filters(np.full(32000, 0.01))  # peak < 0.02
    assert not sounds.passes_filters(np.full(3000, 0.5))  # < 0.1 s
    assert not sounds.passes_filters(np.concatenate([[0.0], ok]))  # leading zero
    gap = np.concatenate([ok, np.full(11 * 32000, 0.001), ok])  # a quiet 10-s window
    assert not sounds.passes_filters(gap)
    assert sounds.passes_filters(np.concatenate([ok, np.full(5 * 32000, 0.001), ok] * 3))


def test_deterministic_per_seed(embedded_small, tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    same.mkdir()
    other.mkdir()
    embedded.generate(same, "small", 0)
    embedded.generate(other, "small", 1)
    reference = _hashes(embedded_small)
    assert _hashes(same) == reference  # identical bytes, SOFA files included
    different = _hashes(other)
    assert different.keys() == reference.keys()
    assert all(different[k] != reference[k] for k in reference)


def test_valid_is_held_out(embedded_small):
    train = {h for k, h in _hashes(embedded_small).items() if "/train/" in k}
    valid = {h for k, h in _hashes(embedded_small).items() if "/valid/" in k}
    assert train and valid and not train & valid
    # The rooms differ too, not just their files.
    from s5jax.data import sofa

    positions = [sofa.open_room(p).positions for p in
                 sorted((embedded_small / "room_ir").glob("*/*.sofa"))]
    for a in range(len(positions)):
        for b in range(a + 1, len(positions)):
            assert not np.allclose(positions[a], positions[b])


def _stats(root: Path, label: str):
    """(spectral centroids in Hz, crest factors) of a class's clips over both splits."""
    centroids, crests = [], []
    for path in sorted((root / "sound_event").glob(f"*/{label}/*.wav")):
        x = wav.read(path)[0].astype(np.float64)
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / 32000)
        centroids.append((power * freqs).sum() / power.sum())
        crests.append(np.abs(x).max() / np.sqrt(np.mean(x**2)))
    return np.asarray(centroids), np.asarray(crests)


def test_classes_have_distinct_statistics(embedded_small):
    stats = {label: _stats(embedded_small, label) for label in CLASSES}
    # Spectral centroid: low-frequency classes sit entirely below high-frequency ones.
    for low, high in (("FootSteps", "Dishes"), ("MechanicalFans", "HairDryer"),
                      ("Blender", "Typing"), ("Doorbell", "AlarmClock")):
        assert stats[low][0].max() < stats[high][0].min(), (low, high)
    # Crest factor: impulsive classes against steady ones.
    impulsive = np.concatenate([stats[c][1] for c in ("Typing", "Clapping", "FootSteps")])
    steady = np.concatenate([stats[c][1] for c in ("Buzzer", "Blender", "VacuumCleaner")])
    assert impulsive.min() > 2 * steady.max()


def test_ensure_embedded_reuses_and_never_clobbers(embedded_small, tmp_path):
    marker = next((embedded_small / "noise" / "train").glob("*.wav"))
    before = marker.stat().st_mtime_ns
    assert embedded.ensure_embedded(embedded_small, "small", 0) == embedded_small
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="expected scale=small seed=3"):
        embedded.ensure_embedded(embedded_small, "small", 3)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="mine: exists and is not an embedded s5jax dataset"):
        embedded.ensure_embedded(foreign, "small", 0)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="scale 'huge'"):
        embedded.ensure_embedded(tmp_path / "x", "huge", 0)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(out, scale, seed, progress=None, task="dcase2025"):
        (Path(out) / "sound_event").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "generate", broken)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_embedded(tmp_path / "ds", "small", 0)
    assert list(tmp_path.iterdir()) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_redraws_on_a_terminal_and_logs_one_line_per_stage(monkeypatch, tty):
    stream = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    for stage, total in (("sound_event/train", 3), ("noise/train", 2)):
        for done in range(1, total + 1):
            embedded._printer(stage, done, total)
    text = stream.getvalue()
    lines = text.split("\n")[:-1]  # (str.splitlines would split at the carriage returns too)
    assert len(lines) == 2 and lines[-1].endswith("2/2")
    if tty:  # every count drawn over the last one
        assert text.count("\r") == 5 and "1/3" in lines[0]
    else:  # a log file: the finished counts only, no carriage returns
        assert "\r" not in text and lines[0] == f"[embedded] {'sound_event/train':24s}    3/3"


def test_default_root_and_cli(embedded_small, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("S5JAX_DATA", str(tmp_path))
    assert embedded.default_root("full", 7) == tmp_path / "embedded-full-7"
    assert embedded.default_root("small", 0, "dcase2026") == (tmp_path /
                                                              "embedded-dcase2026-small-0")
    monkeypatch.delenv("S5JAX_DATA")
    assert embedded.default_root() == Path(os.path.expanduser("~/.cache/s5jax/embedded-small-0"))
    assert embedded.main(["--out", str(embedded_small)]) == 0  # reuses, prints root + size
    assert str(embedded_small) in capsys.readouterr().out
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x").write_text("")
    assert embedded.main(["--out", str(tmp_path / "f")]) == 2
    assert "error:" in capsys.readouterr().err
    assert embedded.main(["--out", str(tmp_path / "f" / "x" / "data")]) == 2
    assert f"cannot create a folder there ({tmp_path / 'f' / 'x'} is a file)" in \
        capsys.readouterr().err


def test_a_2026_dataset_is_not_taken_for_a_2025_one(embedded_2026):
    assert embedded.ensure_embedded(embedded_2026, "small", 0, task="dcase2026") == embedded_2026
    with pytest.raises(ValueError, match="task=dcase2026, expected scale=small seed=0 "
                                         "task=dcase2025"):
        embedded.ensure_embedded(embedded_2026, "small", 0)
