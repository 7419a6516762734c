"""scripts/gpu_bench.sh --cpu: the GPU benchmark suite runs end to end at tiny sizes."""

import subprocess
import sys
from pathlib import Path

from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_cpu_mode():
    # The timings are not checked here: the benchmarks' programs are compiled quickly.
    env = quick_compile.env(PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--cpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "gpu_bench: 0 failed" in out
    assert "TFLOP/s, MFU" in out  # train step with XLA's FLOP count
    assert "mixtures/s" in out  # synthesis
    assert "clips/s" in out  # inference
