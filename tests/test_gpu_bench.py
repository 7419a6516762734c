"""scripts/gpu_bench.sh --cpu: the GPU benchmark suite runs end to end at tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_cpu_mode(tmp_path):
    # The timings are not checked here: the benchmarks' programs are compiled quickly.
    env = quick_compile.env(PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--cpu", "--profile",
                           str(tmp_path / "traces")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "gpu_bench: 0 failed" in out
    assert "TFLOP/s, MFU" in out  # train step with XLA's FLOP count
    assert "mixtures/s" in out  # synthesis
    assert "clips/s" in out  # inference
    # The train-step row's profile (scripts/profiling.py): where the step's time went.
    assert "device busy" in out and "by kind" in out and "profile failed" not in out
    summary = json.loads((tmp_path / "traces" / "baseline_1gpu_smoke" / "profile.json").read_text())
    assert summary["op_ms"] > 0 and 0 < summary["busy_ms"] <= summary["traced_step_ms"]
    assert summary["kinds"].get("convolution", 0) > 0 and summary["matched"] == 1.0
