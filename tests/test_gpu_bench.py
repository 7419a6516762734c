"""scripts/gpu_bench.sh --cpu: the GPU benchmark suite runs end to end at tiny sizes."""

import json
import re
import subprocess
import sys
from pathlib import Path

from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]


def _gpu_bench(tmp_path, *args: str, timeout: int = 300, **env: str):
    """``scripts/gpu_bench.sh *args --profile tmp_path/traces`` on the CPU (quick compilation)."""
    env = {"PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_bench.sh"), *args, "--profile",
         str(tmp_path / "traces")], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        check=False, env=quick_compile.env(**env))


def test_gpu_bench_cpu_mode(tmp_path):
    # The timings are not checked here: the benchmarks' programs are compiled quickly. A device
    # machine may have no torch: here `import torch` fails (a package that raises, first on the
    # path), so every row must do without it.
    (tmp_path / "no-torch" / "torch").mkdir(parents=True)
    (tmp_path / "no-torch" / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is not installed here (tests/test_gpu_bench.py)')\n")
    done = _gpu_bench(tmp_path, "--cpu", timeout=900, PYTHONPATH=str(tmp_path / "no-torch"))
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "gpu_bench: 0 failed" in out
    assert "TFLOP/s, MFU" in out  # train step with XLA's FLOP count
    assert re.search(r"traced and compiled in \d+\.\d s \(persistent compilation cache on\)",
                     out)  # the suite's cache (tests/conftest.py), inherited by the scripts
    assert "mixtures/s" in out  # synthesis
    assert "clips/s" in out  # inference
    # The train-step row's profile (scripts/profiling.py): where the step's time went.
    assert "device busy" in out and "by kind" in out and "profile failed" not in out
    summary = json.loads((tmp_path / "traces" / "baseline_1gpu_smoke" / "profile.json").read_text())
    assert summary["op_ms"] > 0 and 0 < summary["busy_ms"] <= summary["traced_step_ms"]
    assert summary["kinds"].get("convolution", 0) > 0 and summary["matched"] == 1.0


def test_a_row_past_the_limit_is_stopped_and_the_rest_skipped(tmp_path):
    # GPU_BENCH_LIMIT bounds the whole run (the device tool kills a command at 600 s and keeps
    # nothing it had not written): a row still running at the limit is stopped, not waited for.
    # The Python given to the script runs its own checks (-c) but hangs in every row.
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n'
                    "sleep 300\n")
    slow.chmod(0o755)
    done = _gpu_bench(tmp_path, "--cpu", GPU_BENCH_LIMIT="15", PYTHON=str(slow))
    out = done.stdout
    assert done.returncode == 1, out[-3000:] + done.stderr[-3000:]
    assert "TIMED OUT (stopped at the suite's 15-s limit)" in out  # the first row
    assert "gpu_bench: 1 failed, 2 skipped" in out  # the others find the time spent


def test_gpu_mode_without_a_gpu_stops_before_any_row(tmp_path):
    done = _gpu_bench(tmp_path)
    assert done.returncode == 1
    assert "gpu_bench: JAX sees no GPU (backend: cpu). Use --cpu for the CPU suite." in done.stderr
    assert "== " not in done.stdout  # no row started
