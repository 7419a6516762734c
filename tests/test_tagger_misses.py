"""scripts/tagger_misses.py as a user runs it: missed target events by SNR and duration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_counts_match_the_metadata(tiny_models, embedded_small, tmp_path):
    tagger, _ = tiny_models  # always decides Blender + Speech
    out = tmp_path / "runs" / "m.json"  # its folder is created
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "tagger_misses.py"), "--tagger",
                        str(tagger), "--root", str(embedded_small), "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    said = {"Blender", "Speech"}
    events, fps, exact = [], 0, 0
    for f in sorted((embedded_small / "metadata" / "test").glob("*.json")):
        labels = [e["label"] for e in json.loads(f.read_text())["fg_events"]]
        events += [(e, e not in said) for e in labels]
        fps += len(said - set(labels))
        exact += set(labels) == said
    assert res["events"] == len(events) and res["mixtures"] == len(
        list((embedded_small / "metadata" / "test").glob("*.json")))
    assert res["missed"] == sum(m for _, m in events) and res["false_positives"] == fps
    assert res["mixture_accuracy"] == 100.0 * exact / res["mixtures"]
    for key in ("by_snr", "by_duration"):
        assert sum(b["events"] for b in res[key]) == res["events"]
        assert sum(b["missed"] for b in res[key]) == res["missed"]
    assert "target events missed" in r.stdout


@pytest.mark.parametrize("where, says", [
    (".", ".: is a folder, expected a file"),
    ("{tmp}/f/m.json", "{tmp}/f/m.json: cannot create its folder ({tmp}/f is a file)"),
])
def test_a_json_that_cannot_be_written_is_refused_when_parsed(tmp_path, where, says):
    """Before the tagger is loaded or the test set read (the same check as class_equaliser's
    --json: benchlib.new_output_file)."""
    (tmp_path / "f").write_text("")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "tagger_misses.py"), "--tagger",
                        str(tmp_path / "no-tagger"), "--json",
                        where.replace("{tmp}", str(tmp_path))],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert f"error: argument --json: {says.replace('{tmp}', str(tmp_path))}" in r.stderr
    assert "Traceback" not in r.stderr and "no-tagger" not in r.stderr


def test_write_output_creates_the_folder(tmp_path):
    import benchlib

    path = benchlib.new_output_file(str(tmp_path / "a" / "b" / "m.json"))
    assert not (tmp_path / "a").exists()  # checked, not created, when parsed
    benchlib.write_output(path, "{}\n")
    assert path.read_text() == "{}\n"
