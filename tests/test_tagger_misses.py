"""scripts/tagger_misses.py as a user runs it: missed target events by SNR and duration."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_counts_match_the_metadata(tiny_models, embedded_small, tmp_path):
    tagger, _ = tiny_models  # always decides Blender + Speech
    out = tmp_path / "m.json"
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
