"""Recipe statistics (P15, spec §2.3) and cross-process determinism."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from s5jax import labels as labels_lib
from s5jax.data import recipes
from s5jax.data.catalog import Clip, Room, Split

SR = 32000
CFG = recipes.MixtureConfig()
N_DRAWS = 10_000


def fake_split() -> Split:
    """A catalog split without files: recipes only need frame counts and positions."""
    rng = np.random.default_rng(123)

    def clips(label, n, lo, hi):
        return tuple(
            Clip(Path(f"/x/{label}/{label}_{i}.wav"), label, int(rng.uniform(lo, hi) * SR), 1)
            for i in range(n)
        )

    targets = {c: clips(c, 3, 0.3, 14.0) for c in labels_lib.CLASSES}
    interference = {f"int{k}": clips(f"int{k}", 2, 0.5, 12.0) for k in range(5)}
    noise = tuple(
        Clip(Path(f"/x/noise/n{i}.wav"), "", int(d * SR), 4) for i, d in enumerate([15.5, 12, 4])
    )
    rooms = tuple(
        Room(Path(f"/x/room{i}.sofa"), rng.normal(size=(m, 3)), 8000, 4)
        for i, m in enumerate([7, 11, 40])
    )
    return Split(targets, interference, noise, rooms)


@pytest.fixture(scope="module")
def split():
    return fake_split()


@pytest.fixture(scope="module")
def draws(split):
    return [recipes.make_recipe(split, i, 7, CFG) for i in range(N_DRAWS)]


def _clip(split, r, slot):
    if slot < CFG.num_targets:
        return split.targets[labels_lib.CLASSES[r.cls[slot]]][r.file[slot]]
    return split.interference[recipes.interference_classes(split)[r.cls[slot]]][r.file[slot]]


def test_counts_uniform(draws):
    n_t = np.array([r.active[:3].sum() for r in draws])
    n_i = np.array([r.active[3:].sum() for r in draws])
    assert set(n_t) == {1, 2, 3} and set(n_i) == {1, 2}
    assert stats.chisquare(np.bincount(n_t)[1:]).pvalue > 0.01
    assert stats.chisquare(np.bincount(n_i)[1:]).pvalue > 0.01
    # Active slots are contiguous from the left (silence last).
    for r in draws[:500]:
        assert list(r.active[:3]) == sorted(r.active[:3], reverse=True)


def test_classes_distinct_and_uniform(draws):
    cls = []
    for r in draws:
        c = r.cls[:3][r.active[:3]]
        assert len(set(c.tolist())) == len(c)
        cls += c.tolist()
    assert stats.chisquare(np.bincount(cls, minlength=18)).pvalue > 0.01


def test_timing_rules(split, draws):
    onsets_u, snr_t, snr_i, offsets_u = [], [], [], []
    for r in draws:
        for s in np.nonzero(r.active)[0]:
            dur_file = _clip(split, r, s).frames / SR
            if dur_file > 10:
                assert r.duration[s] == 10.0
                assert 0 <= r.source_time[s] <= dur_file - 10
                offsets_u.append(r.source_time[s] / (dur_file - 10))
            else:
                assert r.duration[s] == dur_file and r.source_time[s] == 0
            assert 0 <= r.onset[s] <= 10 - r.duration[s]
            if r.duration[s] < 10:
                onsets_u.append(r.onset[s] / (10 - r.duration[s]))
            (snr_t if s < 3 else snr_i).append(r.snr[s])
        # onset order within target slots
        on = r.onset[:3][r.active[:3]]
        assert np.all(np.diff(on) >= 0)
    assert stats.kstest(onsets_u, "uniform").pvalue > 0.01
    assert stats.kstest(offsets_u, "uniform").pvalue > 0.01
    assert stats.kstest(snr_t, "uniform", args=(5, 15)).pvalue > 0.01
    assert stats.kstest(snr_i, "uniform", args=(0, 15)).pvalue > 0.01


def test_rooms_positions_noise(split, draws):
    rooms = np.array([int(r.room) for r in draws])
    assert stats.chisquare(np.bincount(rooms, minlength=3)).pvalue > 0.01
    pos = [int(r.position[s]) for r in draws if int(r.room) == 2 for s in np.nonzero(r.active)[0]]
    assert stats.chisquare(np.bincount(pos, minlength=40)).pvalue > 0.01
    noise = np.array([int(r.noise) for r in draws])
    assert stats.chisquare(np.bincount(noise, minlength=3)).pvalue > 0.01
    for r in draws[:2000]:
        off = float(r.noise_offset)
        dur = split.noise[int(r.noise)].frames / SR
        # Whole seconds, or "stretch the whole file" (the baseline's source_time null).
        assert (off == recipes.STRETCH) if dur <= 10 else (off == np.floor(off) and
                                                           0 <= off <= dur - 10)


def fake_split_2026() -> Split:
    """Odd classes keep their clips in sub-folders (two share "a"), as SpAudSyn allows; rooms
    with enough measurements that a repeat always finds one more than 60° away."""
    rng = np.random.default_rng(7)
    groups = (("a",), ("a",), ("b",), ("c", "deep"))

    def clips(ci, label):
        return tuple(
            Clip(Path(f"/x/{label}/{label}_{i}.wav"), label, int(rng.uniform(0.3, 14.0) * SR), 1,
                 subdir=groups[i] if ci % 2 else ())
            for i in range(4)
        )

    base = fake_split()
    targets = {c: clips(i, c) for i, c in enumerate(labels_lib.CLASSES)}
    rooms = tuple(Room(Path(f"/x/r{i}.sofa"), rng.normal(size=(36, 3)), 8000, 4) for i in range(2))
    return Split(targets, base.interference, base.noise, rooms)


def _angle(a, b) -> float:
    cos = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


@pytest.mark.parametrize("mode", ["tagger", "separator"])
def test_dcase2026_draw(mode):
    """DatasetS3 generate mode: event/interferer counts, repeats (rate, count, > 60° from every
    event of the class, files unused and from other first-level sub-folders), shuffled slots."""
    split = fake_split_2026()
    cfg = recipes.task_config("dcase2026", mode)
    assert (cfg.ref_db, cfg.task, cfg.ninterference_range) == (-55.0, "dcase2026", (0, 2))
    rs = [recipes.make_recipe(split, i, 5, cfg) for i in range(6000)]
    n_t = np.array([r.active[:3].sum() for r in rs])
    lo = 0 if mode == "tagger" else 1
    assert set(n_t) == set(range(lo, 4))
    assert stats.chisquare(np.bincount(n_t)[lo:]).pvalue > 0.01
    n_i = np.array([r.active[3:].sum() for r in rs])
    assert set(n_i) == {0, 1, 2} and stats.chisquare(np.bincount(n_i)).pvalue > 0.01
    repeats = {2: [], 3: []}
    unsorted = 0
    for r in rs:
        act = r.active[:3]
        assert list(act) == sorted(act, reverse=True)  # silence last
        cls = r.cls[:3][act].tolist()
        n = len(cls)
        if n >= 2:
            repeats[n].append(n - len(set(cls)))
            unsorted += bool(np.any(np.diff(r.onset[:3][act]) < 0))
        room = split.rooms[int(r.room)]
        for c in set(cls):
            slots = [s for s in range(3) if act[s] and r.cls[s] == c]
            files = [split.targets[labels_lib.CLASSES[c]][r.file[s]] for s in slots]
            assert len({f.path for f in files}) == len(files)
            sub = [f.subdir[:1] for f in files if f.subdir]
            assert len(set(sub)) == len(sub), sub  # depth-1 exclusion
            for a in range(len(slots)):
                for b in range(a):
                    pa, pb = (room.positions[r.position[slots[k]]] for k in (a, b))
                    assert _angle(pa, pb) > 60.0
    # P(repeat | n ≥ 2) = 0.5; k ~ U{1..min(n−1, 2)} (no repeat was left out here).
    for n, ks in repeats.items():
        ks = np.array(ks)
        assert abs((ks > 0).mean() - 0.5) < 0.05, (n, (ks > 0).mean())
        assert set(ks[ks > 0]) == set(range(1, min(n - 1, 2) + 1))
    assert abs(repeats[3].count(1) - repeats[3].count(2)) < 0.15 * len(repeats[3]) / 2
    # Shuffled slot order: a sorted one only by chance (1/2 for n = 2, 1/6 for n = 3).
    assert unsorted > 0.3 * (len(repeats[2]) + len(repeats[3]))


def test_dcase2026_repeat_left_out_when_impossible():
    """One measurement per room: no second one is > 60° away, so every repeat is left out (the
    official generator would stop with an assertion); the rest of the mixture is drawn."""
    base = fake_split_2026()
    rooms = tuple(Room(p.path, p.positions[:1], 8000, 4) for p in base.rooms)
    split = Split(base.targets, base.interference, base.noise, rooms)
    cfg = recipes.task_config("dcase2026", "separator")
    for i in range(300):
        r = recipes.make_recipe(split, i, 1, cfg)
        cls = r.cls[:3][r.active[:3]].tolist()
        assert len(set(cls)) == len(cls) >= 1


def test_short_clip_config(split):
    cfg = recipes.MixtureConfig(duration=2.0)
    for i in range(300):
        r = recipes.make_recipe(split, i, 3, cfg)
        a = r.active
        assert np.all(r.duration[a] <= 2.0) and np.all(r.onset[a] + r.duration[a] <= 2.0 + 1e-12)


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_recipes import fake_split
from s5jax.data import recipes
s = fake_split()
for i in (0, 5, 999):
    r = recipes.make_recipe(s, i, 42)
    for f in r.__dataclass_fields__:
        sys.stdout.write(f + ":" + getattr(r, f).tobytes().hex() + "\\n")
"""


def test_same_recipe_in_fresh_process(split):
    code = _CHILD.format(tests=str(Path(__file__).parent))
    env_hash = {"PYTHONHASHSEED": "random"}
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env_hash}).stdout.splitlines()
    mine = []
    for i in (0, 5, 999):
        r = recipes.make_recipe(split, i, 42)
        assert r.equals(recipes.make_recipe(split, i, 42))
        mine += [f + ":" + getattr(r, f).tobytes().hex() for f in r.__dataclass_fields__]
    assert out == mine
    assert not recipes.make_recipe(split, 0, 42).equals(recipes.make_recipe(split, 0, 43))


def test_metadata_round_trip(split):
    """recipe → per-mixture JSON → recipe reproduces every field; ref_event order is kept."""
    for i in range(50):
        r = recipes.make_recipe(split, i, 9)
        meta, ref = recipes.recipe_to_metadata(r, split, "valid", CFG)
        ref = ref[::-1]  # ask for another slot order
        back = recipes.recipe_from_metadata(recipes.ValidEntry("m", meta, tuple(ref)), split, CFG)
        got = back.target_labels(3)
        assert [labels_lib.CLASSES[c] if c >= 0 else "silence" for c in got] == ref
        order = [list(r.target_labels(3)).index(c) if c >= 0 else None for c in got]
        for s, o in enumerate(order):
            if o is None:
                assert not back.active[s]
                continue
            for f in ("cls", "file", "source_time", "duration", "onset", "position", "snr"):
                assert getattr(back, f)[s] == getattr(r, f)[o]
        for f in ("room", "noise", "noise_offset"):
            assert getattr(back, f) == getattr(r, f)
        np.testing.assert_array_equal(back.cls[3:], r.cls[3:])
        np.testing.assert_array_equal(back.snr[3:], r.snr[3:])


def test_durations_of_other_rates_are_seconds():
    """A clip at 48 kHz is timed by its own duration (frames / its rate), as librosa's
    get_duration gives the baseline, not by its frame count at 32 kHz."""
    long48 = Clip(Path("/x/Speech/s48.wav"), "Speech", 48000 * 12, 2, sample_rate=48000)
    short48 = Clip(Path("/x/Speech/t48.wav"), "Speech", 48000 * 3, 2, sample_rate=48000)
    assert (long48.seconds, short48.seconds) == (12.0, 3.0)
    base = fake_split()
    targets = {c: (long48, short48) if c == "Speech" else () for c in labels_lib.CLASSES}
    split = Split(targets, {}, base.noise, base.rooms)
    seen = set()
    for i in range(200):
        r = recipes.make_recipe(split, i, 0)
        f = int(r.file[0])
        seen.add(f)
        if f == 0:
            assert r.duration[0] == 10.0 and 0 <= r.source_time[0] <= 2.0
        else:
            assert r.duration[0] == 3.0 and r.source_time[0] == 0.0
    assert seen == {0, 1}


def test_noise_metadata_as_the_baseline(split):
    """Short noise is written "source_time": null and read back as STRETCH; a numeric
    source_time on a noise file too short for it, and noise of another channel count than the
    room, are refused (the baseline's renderer fails on both), naming the file."""
    r = next(r for i in range(100) if int((r := recipes.make_recipe(split, i, 9)).noise) == 2)
    meta, ref = recipes.recipe_to_metadata(r, split, "valid", CFG)
    assert meta["bg_events"][0]["source_time"] is None  # n2 lasts 4 s < 10 s
    entry = recipes.ValidEntry("m", meta, tuple(ref))
    assert float(recipes.recipe_from_metadata(entry, split, CFG).noise_offset) == recipes.STRETCH
    meta["bg_events"][0]["source_time"] = 0.0
    with pytest.raises(ValueError, match=r"validation mixture m: noise file /x/noise/n2.wav "
                                         r"lasts 4 s, shorter than source_time 0 s \+ the 10-s"):
        recipes.recipe_from_metadata(entry, split, CFG)
    meta["bg_events"][0]["source_file"] = "n0.wav"
    meta["bg_events"][0]["source_time"] = 5.0  # 15.5 s file: 5 + 10 fits
    assert float(recipes.recipe_from_metadata(entry, split, CFG).noise_offset) == 5.0
    stereo = Split(split.targets, split.interference,
                   (Clip(Path("/x/noise/n0.wav"), "", 16 * SR, 2),), split.rooms)
    with pytest.raises(ValueError, match="n0.wav has 2 channels, expected the room's 4"):
        recipes.recipe_from_metadata(entry, stereo, CFG)


def test_events_outside_their_file_or_the_mixture_are_refused(split):
    r = next(r for i in range(100) if (r := recipes.make_recipe(split, i, 9)).active[3])
    meta, ref = recipes.recipe_to_metadata(r, split, "valid", CFG)
    entry = recipes.ValidEntry("m", meta, tuple(ref))
    ev = meta["int_events"][0]
    ev["source_time"] = 99.0
    with pytest.raises(ValueError, match=r"validation mixture m: source_time 99 s is outside"):
        recipes.recipe_from_metadata(entry, split, CFG)
    ev["source_time"], ev["event_time"] = 0.0, 10.0 - ev["event_duration"] / 2
    with pytest.raises(ValueError, match=r"does not fit the 10-s mixture"):
        recipes.recipe_from_metadata(entry, split, CFG)


def test_bad_ref_event(split):
    r = recipes.make_recipe(split, 0, 9)
    meta, ref = recipes.recipe_to_metadata(r, split, "valid", CFG)
    bad = tuple(["Speech" if x == "silence" else x for x in ref] if "silence" in ref
                else ["silence"] * 3)
    with pytest.raises(ValueError, match="ref_event"):
        recipes.recipe_from_metadata(recipes.ValidEntry("m", meta, bad), split, CFG)


def test_nulls_in_metadata(split, tmp_path):
    """A null foreground source_time reads from the file's start (librosa.load(offset=None),
    as the official readers do); a background snr is kept; a null event_position (the official
    traj_2_ir_idx fails), a null background snr, metadata_path or config are refused by name."""
    r = next(r for i in range(100)
             if (r := recipes.make_recipe(split, i, 9)).active[3] and int(r.noise) >= 0)
    meta, ref = recipes.recipe_to_metadata(r, split, "valid", CFG)
    entry = recipes.ValidEntry("m", meta, tuple(ref))
    meta["int_events"][0]["source_time"] = None
    assert recipes.recipe_from_metadata(entry, split, CFG).source_time[3] == 0.0
    meta["int_events"][0]["event_position"] = None
    with pytest.raises(ValueError, match=r"validation mixture m: event_position None: expected "
                                         r"\[\[x, y, z\]\]"):
        recipes.recipe_from_metadata(entry, split, CFG)
    meta["int_events"][0]["event_position"] = [[0.0, 1.0]]
    with pytest.raises(ValueError, match=r"event_position \[\[0.0, 1.0\]\]: expected"):
        recipes.recipe_from_metadata(entry, split, CFG)
    meta["int_events"][0]["event_position"] = [[0.0, 1.0, 0.5]]
    meta["bg_events"][0]["snr"] = 10  # honoured, as the official renderers do (ref_db + snr)
    assert float(recipes.recipe_from_metadata(entry, split, CFG).noise_snr) == 10.0
    meta["bg_events"][0]["snr"] = None  # the official ref_db + None fails
    with pytest.raises(ValueError, match="background snr None: expected a number"):
        recipes.recipe_from_metadata(entry, split, CFG)
    meta["bg_events"][0]["snr"] = 0
    listing = tmp_path / "valid.json"
    (tmp_path / "a.json").write_text(json.dumps(dict(meta, config=None)))
    listing.write_text(json.dumps([{"metadata_path": None}, {"metadata_path": "a.json"}]))
    with pytest.raises(ValueError) as e:
        recipes.read_valid_metadata(listing)
    assert "2 problem(s)" in str(e.value) and "entry 0 lacks a metadata_path" in str(e.value)
    assert "a.json: mixture metadata's config must be an object" in str(e.value)
