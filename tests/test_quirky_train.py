"""Acceptance: a dataset in the official layout with real-data quirks trains from the command
line, and the catalog summary says what was adapted, skipped and ignored; broken input gets one
error listing every problem and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import quick_compile
from tests.quirky import STEREO_NOISE, make_quirky

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quirky(embedded_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("quirky_train") / "dev_set"
    return root, make_quirky(embedded_small, root)


def _train(root: Path, workdir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "s5jax.train", "--config", "configs/resunetk.py:smoke",
           f"--config.data.root={root}", "--workdir", str(workdir)]
    env = quick_compile.env(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=900)


def test_quirky_dataset_trains(quirky, tmp_path):
    root, made = quirky
    r = _train(root, tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    n = made["resampled"]
    assert (f"adapted {n} files: {n} resampled to 32000 Hz when read (from 48000 Hz: {n}); "
            f"{n} averaged to mono (from 2 channels: {n})") in lines
    assert (f"skipped: noise/train/{STEREO_NOISE}: 2 channels, the rooms have 4: a mixture that "
            "draws it gets no background (as in the baseline)") in lines
    assert any(x.startswith(f"ignored {made['hidden']} hidden files/folders") for x in lines)
    assert (tmp_path / "run" / "model").is_dir()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("valid/loss" in rec for rec in log)


def test_broken_dataset_fails_once_and_writes_nothing(quirky, tmp_path):
    src, _ = quirky
    root = tmp_path / "broken"
    import shutil

    shutil.copytree(src, root)
    clip = sorted((root / "sound_event" / "train" / "Speech").glob("[!.]*.wav"))[0]
    clip.write_bytes(clip.read_bytes()[:-5000])  # truncated download
    listing = json.loads((root / "metadata" / "valid.json").read_text())
    meta_path = root / "metadata" / listing[1]["metadata_path"]
    meta = json.loads(meta_path.read_text())
    meta["room"] = "no_such_room.sofa"
    meta_path.write_text(json.dumps(meta))
    r = _train(root, tmp_path / "run")
    assert r.returncode == 2
    err = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "1 problem(s) in the dataset" in err[0]
    assert f"{clip}: truncated file" in r.stderr
    assert not (tmp_path / "run").exists()
    # With the clip fixed, the metadata problem is reported the same way, still before anything
    # is written.
    shutil.copy(src / clip.relative_to(root), clip)
    r = _train(root, tmp_path / "run")
    assert r.returncode == 2
    assert "validation mixture(s) cannot be rendered" in r.stderr
    assert "room 'no_such_room.sofa' is not in the catalog split" in r.stderr
    assert not (tmp_path / "run").exists()
