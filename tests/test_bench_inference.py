"""scripts/bench_inference.py --no-torch as the GPU suite runs it: s5jax alone, where torch (and
the reference models' torchlibrosa and librosa) may be missing (the timing is a benchmark)."""

import subprocess
import sys
from pathlib import Path

from tests import quick_compile

ROOT = Path(__file__).resolve().parents[1]

# `import torch` fails in this child, as on a machine without it.
_NO_TORCH = """
import runpy, sys
sys.modules["torch"] = None
sys.path.insert(0, "scripts")  # as running the script puts its folder first
sys.argv = ["bench_inference.py", *sys.argv[1:]]
runpy.run_path("scripts/bench_inference.py", run_name="__main__")
"""


def test_no_torch_runs_without_torch():
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "--small", "--seconds", "0.5", "--batch", "1",
         "--repeats", "1", "--no-torch"],
        cwd=ROOT, env=quick_compile.env(JAX_PLATFORMS="cpu"), capture_output=True, text=True,
        timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "clips/s" in done.stdout and "torch" not in done.stdout
