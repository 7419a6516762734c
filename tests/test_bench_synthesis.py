"""scripts/bench_synthesis.py --dataset as a user runs it: s5jax's loader (one worker process) +
render on a dataset root over a mesh of two CPU devices (``--cpu-devices 2``), with its row
appended (the timing is a benchmark, not a test: only that it ran, on what, and what it wrote,
and that it released its worker's shared memory)."""

import subprocess
import sys
from pathlib import Path

from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]


def test_dataset_mode_on_two_cpu_devices_appends_its_row(embedded_small, tmp_path):
    table = tmp_path / "bench.md"
    cmd = [sys.executable, "scripts/bench_synthesis.py", "--dataset", "--root",
           str(embedded_small), "--batch", "2", "--batches", "1", "--rounds", "1",
           "--cpu-devices", "2", "--workers", "1", "--append", str(table)]
    proc = subprocess.run(cmd, cwd=ROOT, env=quick_compile.env(JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device cpu:cpu × 2  batch 2  workers 1" in proc.stdout
    assert "leaked shared_memory" not in proc.stderr  # the loader was closed
    assert "ms/mixture wall" in proc.stdout
    row = table.read_text().strip().splitlines()[-1]
    assert row.startswith("| ") and "synthesis on a dataset (loader + render)" in row
    assert "B=2, 1 workers, 1 read thread(s), 2 device(s), medians of 1 batches" in row


def test_dataset_mode_on_a_folder_that_is_no_dataset_says_so_in_one_message(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    cmd = [sys.executable, "scripts/bench_synthesis.py", "--dataset", "--root", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=quick_compile.env(JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("bench_synthesis.py --dataset: ")
    assert str(tmp_path) in proc.stderr
