"""scripts/class_equaliser.py as a user runs it: the per-class equaliser trained through the real
train step and scored by the held-out evaluation of the training loop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "class_equaliser.py"


def _run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_trains_and_scores_on_the_held_out_split(embedded_small, tmp_path):
    out = tmp_path / "runs" / "eq.json"  # its folder is created
    r = _run("--root", str(embedded_small), "--steps", "6", "--eval-every", "3", "--lr", "0.3",
             "--valid-limit", "0", "--json", str(out), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    points = json.loads(out.read_text())
    assert [p["step"] for p in points] == [0, 3, 6]
    assert r.stdout.count("held-out CA-SI-SDRi") == 3
    # Untrained, every gain is sigmoid(0) = 0.5: a scaled copy of mixture channel 0 through an
    # exact STFT/ISTFT round trip, i.e. the scaled-mixture floor's 0 dB CA-SI-SDRi.
    assert points[0]["ca_si_sdri"] == pytest.approx(0.0, abs=1e-3)
    for p in points:
        assert p["floor_ca_si_sdri"] == pytest.approx(0.0, abs=1e-3)
        assert p["floor_ca_sdri"] == pytest.approx(points[0]["floor_ca_sdri"])
    assert points[-1]["seconds"] > 0
    assert points[-1]["ca_si_sdri"] != points[0]["ca_si_sdri"]  # the table was trained


@pytest.mark.parametrize("args,says", [
    (["--config", "configs/resunetk.py:smoke"], "valid_split"),
    (["--seed", "-1"], "--seed: '-1': expected an integer ≥ 0"),
    (["--json", "."], "is a folder, expected a file"),  # a missing folder is created
    (["--json", "{tmp}/x.json/eq.json"], "cannot create its folder ({tmp}/x.json is a file)"),
])
def test_bad_arguments_are_one_error_line(tmp_path, args, says):
    (tmp_path / "x.json").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    says = says.replace("{tmp}", str(tmp_path))
    r = _run(*(["--json", str(tmp_path / "y.json")] if "--json" not in args else []), *args,
             cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert says in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "y.json").exists() and (tmp_path / "x.json").read_text() == ""
