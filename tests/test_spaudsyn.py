"""DCASE 2026 data: the SpAudSyn metadata of the embedded 2026 dataset renders as the official
renderer renders it (float64 reference written from its semantics,
tests/reference/spaudsyn_render.py) — the written test set, and s5jax's jitted validation
batches; the layout is the one the official code reads; metadata it cannot render is refused."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import soundfile as sf

from s5jax import labels as labels_lib
from s5jax.audio import wav
from s5jax.data import catalog, embedded, loader, sofa, spaudsyn
from s5jax.data.testset import TestSet
from tests.reference import spaudsyn_render

ROOM_KEYS = {"sofa_path", "sr", "nchan", "nrir", "rir_len", "direct_range_ms"}


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def test_layout_is_the_official_one(embedded_2026):
    root = embedded_2026
    assert embedded.read_manifest(root)["task"] == "dcase2026"
    for role in ("sound_event", "interference", "noise", "room_ir"):
        for split in ("train", "valid"):
            assert (root / role / split).is_dir()
    for p in sorted((root / "room_ir").rglob("*.sofa")):  # what SofaRoom reads
        info = sofa.open_room(p)
        assert (info.channels, info.sample_rate) == (4, 32000)
    for p in sorted((root / "noise").rglob("*.wav")):  # add_background opens noise with wave
        with wave.open(str(p), "rb") as f:
            assert (f.getnchannels(), f.getframerate()) == (4, 32000)
    nested = [p for p in (root / "sound_event" / "train").rglob("*.wav")
              if p.parent.name.startswith("set_")]
    assert nested  # clips in sub-folders (SpAudSyn's recursive listing, the repeat rule)

    test = root / "synthesized" / "test"
    kinds = {"empty": 0, "repeat": 0}
    for kind in ("valid", "test"):
        listing = json.loads((root / "metadata" / f"{kind}.json").read_text())
        assert listing and all(set(e) == {"metadata_path"} for e in listing)
        for k, e in enumerate(listing):
            meta = json.loads((root / "metadata" / e["metadata_path"]).read_text())
            assert list(meta) == ["config", "fg_events", "bg_events", "int_events", "room"]
            assert "interference_dir" in meta["config"]
            for d in ("foreground_dir", "background_dir", "interference_dir"):
                assert (root / meta["config"][d]).is_dir()
            room = meta["room"]
            assert room["module"] == "src.modules.spatial_audio_synthesizer.room"
            assert room["main"] == "SofaRoom.from_metadata"
            assert set(room["args"]["metadata"]) == ROOM_KEYS
            assert (root / room["args"]["metadata"]["sofa_path"]).is_file()
            times = [ev["event_time"] for ev in meta["fg_events"]]
            assert times == sorted(times)
            labels = [ev["label"] for ev in meta["fg_events"]]
            if kind == "test":
                name = f"soundscape_{k:04d}"
                assert e["metadata_path"] == f"test/{name}.json"
                mix = test / "soundscape" / f"{name}.wav"
                assert sf.info(str(mix)).subtype == "FLOAT" and sf.info(str(mix)).channels == 4
                oracle = sorted(p.name for p in (test / "oracle_target").glob(f"{name}_*"))
                assert oracle == sorted(f"{name}_{i}_{lab}.wav" for i, lab in enumerate(labels))
                for o in oracle:
                    i = sf.info(str(test / "oracle_target" / o))
                    assert (i.subtype, i.channels) == ("FLOAT", 1)
                    assert i.frames == sf.info(str(mix)).frames
                kinds["empty"] += not labels
                kinds["repeat"] += len(set(labels)) < len(labels)
    assert kinds["empty"] >= 1 and kinds["repeat"] >= 1
    ts = TestSet(catalog.find_test_dir(root))
    assert len(ts) == len(list((test / "soundscape").glob("*.wav")))


def test_test_set_renders_as_the_official_renderer(embedded_2026):
    """metadata/test.json rendered with SpAudSyn's semantics = the synthesized/test files."""
    test = embedded_2026 / "synthesized" / "test"
    n = 0
    nulls = 0
    for name, mix, dry, labels in spaudsyn_render.render_listing(
            embedded_2026 / "metadata" / "test.json"):
        assert _rel(wav.read(test / "soundscape" / f"{name}.wav"), mix) <= 1e-6
        for i, label in enumerate(labels):
            assert _rel(wav.read(test / "oracle_target" / f"{name}_{i}_{label}.wav")[0],
                        dry[i]) <= 1e-6
        meta = json.loads((embedded_2026 / "metadata" / "test" / f"{name}.json").read_text())
        nulls += any(b["source_time"] is None for b in meta["bg_events"])
        n += 1
    assert n == 6 and nulls >= 1  # a looped (np.tile) short background is exercised


def test_validation_batches_render_as_the_official_renderer(embedded_2026):
    """The training path (catalog → SpAudSyn metadata → loader → jitted float32 renderer)."""
    cat = catalog.scan(embedded_2026, task="dcase2026")
    vb = loader.make_valid_batches(cat, batch_size=3)
    assert vb.config.task == "dcase2026" and vb.config.ref_db == -55.0
    mine, i = {}, 0
    for batch in vb:
        r = loader.render_batch(batch, vb.config)
        for b in range(len(batch["weight"])):
            if batch["weight"][b] > 0:
                mine[vb.names[i]] = (np.asarray(r["mixture"][b]), np.asarray(r["dry"][b]),
                                     np.asarray(r["labels"][b]))
                i += 1
    worst = 0.0
    for name, mix, dry, labels in spaudsyn_render.render_listing(
            embedded_2026 / "metadata" / "valid.json"):
        m_mix, m_dry, m_labels = mine[name]
        assert [labels_lib.CLASSES[c] for c in m_labels if c >= 0] == labels
        assert np.all(m_labels[len(labels):] == -1)
        worst = max(worst, _rel(m_mix, mix))
        for s in range(len(labels)):
            worst = max(worst, _rel(m_dry[s], dry[s]))
        assert np.all(m_dry[len(labels):] == 0)
    assert len(mine) == 6 and worst <= 1e-5, worst


def test_metadata_it_cannot_render_is_refused(embedded_2026, tmp_path):
    """A position that is not a measurement (SpAudSyn takes it exactly), a label that is not
    its file's folder, an unknown file: one error, a line per mixture."""
    listing = json.loads((embedded_2026 / "metadata" / "valid.json").read_text())
    metas = [json.loads((embedded_2026 / "metadata" / e["metadata_path"]).read_text())
             for e in listing]
    withfg = [m for m in metas if m["fg_events"]]
    a, b, c = (json.loads(json.dumps(m)) for m in withfg[:3])
    a["fg_events"][0]["event_position"][0][0] += 1e-3
    b["fg_events"][0]["label"] = "Speech" if b["fg_events"][0]["label"] != "Speech" else "Pour"
    c["fg_events"][0]["source_file"] = "Speech/none.wav"
    for k, m in enumerate((a, b, c)):
        (tmp_path / f"m{k}.json").write_text(json.dumps(m))
    bad = tmp_path / "valid.json"
    bad.write_text(json.dumps([{"metadata_path": f"m{k}.json"} for k in range(3)]))
    split = catalog.scan(embedded_2026, task="dcase2026").splits["valid"]
    with pytest.raises(ValueError) as e:
        spaudsyn.resolve_valid(bad, split)
    msg = str(e.value)
    assert "3 validation mixture(s) cannot be rendered" in msg
    assert "m0: event_position" in msg and "exact position" in msg
    assert "m1: event label" in msg
    assert "m2: source_file 'Speech/none.wav' is not in the catalog split" in msg
