"""s5jax renders official metadata as the baseline's renderer does (float64 reference written
from its semantics, tests/reference/scaper_render.py): the embedded validation and test
metadata, and a copy with real-data quirks (48-kHz stereo clips, a short background with
``"source_time": null`` that the baseline stretches with ``np.repeat``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s5jax import labels as labels_lib
from s5jax.audio import wav
from s5jax.data import catalog, loader, recipes
from tests.quirky import SHORT_NOISE, make_quirky
from tests.reference import scaper_render


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def quirky(embedded_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("quirky") / "dev_set"
    make_quirky(embedded_small, root)
    return root


def _s5jax_valid(root):
    """s5jax's validation mixtures (jitted float32, the training path) by name."""
    cat = catalog.scan(root)
    vb = loader.make_valid_batches(cat, batch_size=3)
    out, i = {}, 0
    for batch in vb:
        r = loader.render_batch(batch, vb.config)
        for b in range(len(batch["weight"])):
            if batch["weight"][b] > 0:
                names = [labels_lib.CLASSES[c] if c >= 0 else "silence" for c in r["labels"][b]]
                out[vb.names[i]] = (np.asarray(r["mixture"][b]), np.asarray(r["dry"][b]), names)
                i += 1
    return out


@pytest.mark.parametrize("which", ["embedded", "quirky"])
def test_validation_metadata_renders_as_the_baseline(which, embedded_small, quirky):
    root = embedded_small if which == "embedded" else quirky
    mine = _s5jax_valid(root)
    worst, n = 0.0, 0
    for name, mix, dry, labels in scaper_render.render_listing(root,
                                                               root / "metadata" / "valid.json"):
        m_mix, m_dry, m_labels = mine[name]
        assert m_labels == labels
        worst = max(worst, _rel(m_mix, mix), _rel(m_dry, dry))
        n += 1
    assert n == len(mine) == 6
    assert worst <= 1e-5, worst


def test_short_background_is_stretched_not_tiled(quirky):
    """The 1.5-s background of the first quirky mixture: each sample repeated ⌈L/len⌉ = 3 times,
    whole (the baseline's np.repeat), in the item the loader builds."""
    cat = catalog.scan(quirky)
    split = cat.splits["valid"]
    cfg, entries, rs = recipes.resolve_valid(cat.valid_metadata, split)
    assert entries[0].metadata["bg_events"][0]["source_time"] is None
    assert float(rs[0].noise_offset) == recipes.STRETCH
    item = loader.read_item(rs[0], split, cfg, loader.split_layout(split, cfg))
    raw = wav.read(quirky / "noise" / "valid" / SHORT_NOISE)
    np.testing.assert_array_equal(item["noise"], np.repeat(raw, 3, axis=1)[:, : cfg.frames])


def test_metadata_the_baseline_cannot_render_is_refused(quirky, tmp_path):
    """A numeric source_time on a background too short for it fails in the baseline's renderer
    (broadcast error); s5jax refuses it up front, naming the mixture and the file."""
    listing = json.loads((quirky / "metadata" / "valid.json").read_text())
    first = quirky / "metadata" / listing[0]["metadata_path"]
    meta = json.loads(first.read_text())
    meta["bg_events"][0]["source_time"] = 0.0
    with pytest.raises(ValueError, match="broadcast"):
        scaper_render.render(quirky, meta, listing[0]["ref_event"])
    bad = tmp_path / "valid.json"
    (tmp_path / "m.json").write_text(json.dumps(meta))
    bad.write_text(json.dumps([{"metadata_path": "m.json", "ref_event": listing[0]["ref_event"]},
                               {"metadata_path": "gone.json", "ref_event": []}]))
    with pytest.raises(ValueError, match="problem") as e:
        recipes.resolve_valid(bad, catalog.scan(quirky).splits["valid"])
    assert "gone.json: cannot read mixture metadata" in str(e.value)
    bad.write_text(json.dumps([{"metadata_path": "m.json", "ref_event": listing[0]["ref_event"]}]))
    with pytest.raises(ValueError) as e:
        recipes.resolve_valid(bad, catalog.scan(quirky).splits["valid"])
    assert f"{SHORT_NOISE} lasts 1.5 s, shorter than source_time 0 s + the 4-s mixture" in str(
        e.value)


def test_test_soundscapes_match_their_metadata(embedded_small):
    """metadata/test.json renders (baseline semantics) to the test/ wav files the generator
    wrote: mixtures and, per ref_event label, the oracle dry targets."""
    root = embedded_small
    test = root / "test"
    n = 0
    for name, mix, dry, labels in scaper_render.render_listing(root,
                                                               root / "metadata" / "test.json"):
        assert _rel(wav.read(test / "soundscape" / f"{name}.wav"), mix) <= 1e-6
        for s, label in enumerate(labels):
            ref = test / "oracle_target" / f"{name}_{label}.wav"
            if label == "silence":
                assert not ref.exists()
                continue
            assert _rel(wav.read(ref)[0], dry[s]) <= 1e-6
        n += 1
    assert n == len(list((test / "soundscape").glob("*.wav"))) == 6
