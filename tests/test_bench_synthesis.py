"""scripts/bench_synthesis.py --dataset as a user runs it: s5jax's loader (one worker process) +
render on a dataset root over a mesh of two CPU devices (``--cpu-devices 2``), with its row
appended (the timing is a benchmark, not a test: only that it ran, on what, and what it wrote,
and that it released its worker's shared memory)."""

import subprocess
import sys
from pathlib import Path

import pytest

from s5jax.data import loader
from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_synthesis  # noqa: E402


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


def test_a_render_that_fails_before_timing_still_stops_the_loader(embedded_small, monkeypatch):
    # Without the close, a loader with workers would keep its processes and their shared memory.
    closed = []

    class Spy:
        def __init__(self, it):
            self.it = it

        def __next__(self):
            return next(self.it)

        def close(self):
            closed.append(True)

    real = loader.make_train_iterator
    monkeypatch.setattr(loader, "make_train_iterator", lambda *a, **k: Spy(real(*a, **k)))

    def no_render(batch, cfg):
        raise RuntimeError("render failed to compile (test)")

    monkeypatch.setattr(loader, "render_batch", no_render)
    with pytest.raises(RuntimeError, match="render failed to compile"):
        bench_synthesis.s5jax_dataset_timer(embedded_small, batch=1, workers=0, read_threads=1,
                                            profile=False)
    assert closed == [True]


@pytest.mark.parametrize(("argv", "says"), [
    (["--dataset", "--batch", "1", "--cpu-devices", "2"],
     "--batch 1: --dataset splits the batch over the 2 JAX devices (--cpu-devices 2): "
     "expected a multiple of 2"),
    (["--dataset", "--official", "{tmp}", "--official-python", "/nope"],
     "argument --official-python: /nope: no such file"),
    (["--dataset", "--official", "{tmp}", "--official-python", "{tmp}"],
     "argument --official-python: {tmp}: is not an executable file"),
    (["--dataset", "--official-python", sys.executable],
     "--official-python is for the official generator: give --official too"),
    (["--dataset", "--official", "{tmp}/nope"], "argument --official: {tmp}/nope: no such folder"),
    (["--nfft", "bogus"], "argument --nfft: invalid choice: 'bogus'"),
    (["--dataset", "--workers", "-1"], "argument --workers: '-1': expected an integer ≥ 0"),
    (["--dataset", "--profile", "--workers", "1"], "--profile needs --workers 0"),
])
def test_arguments_are_refused_when_parsed(argv, says, tmp_path):
    """Each bad argument is one usage error naming it, before any rendering or loading (a missing
    --official-python was a FileNotFoundError traceback after the s5jax round, --nfft bogus ran
    as pow2, --workers -1 ran, a batch that does not split over the devices ended in JAX's
    sharding error)."""
    root = ["--root", str(tmp_path)] if "--dataset" in argv else []
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "scripts/bench_synthesis.py", *argv, *root], cwd=ROOT,
                          env=quick_compile.env(JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert says.replace("{tmp}", str(tmp_path)) in proc.stderr


def test_the_checked_arguments_that_are_fine_pass():
    import benchlib

    assert benchlib.executable(sys.executable) == sys.executable
    assert Path(benchlib.executable(Path(sys.executable).name)).is_file()  # a name on PATH
    assert benchlib.nonnegative_int("0") == 0
    assert benchlib.folder(str(ROOT)) == ROOT
