"""scripts/memory.py: XLA's memory/FLOP analysis of the real training step, without running it."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _memory(*args: str) -> tuple[int, int, str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "memory.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"peak_bytes=(\d+) flops=(\d+)", last)
    assert m, last
    return int(m.group(1)), int(m.group(2)), done.stdout


def test_tagger_step_and_accumulated_flops():
    """The tagger config works; with accumulate=2 the FLOPs are still the whole batch's (XLA
    counts a compiled loop body once; the script counts the loop-free lowering)."""
    base = ("--config", "configs/m2d_at.py:smoke", "--batch", "4", "--seconds", "0.5")
    peak1, flops1, out = _memory(*base)
    state = float(re.search(r"state (\S+) GB", out).group(1)) * 1e9
    assert peak1 > state > 0 and flops1 > 0
    assert "XLA:CPU" in out and "global batch 4 = 1 × micro-batch 4" in out
    peak2, flops2, out2 = _memory(*base, "--config.optim.accumulate=2")
    assert "global batch 4 = 2 × micro-batch 2" in out2
    assert abs(flops2 - flops1) / flops1 < 0.02, (flops1, flops2)
    assert peak2 > state
    # The count that bench_train_step.py uses for a GPU's MFU (a CPU-only subprocess counting
    # the lowered step) is the same number, config overrides included.
    sys.path.insert(0, str(ROOT / "scripts"))
    import argparse

    import bench_train_step

    args = argparse.Namespace(config="configs/m2d_at.py:smoke", set=["optim.accumulate=2"])
    assert bench_train_step.cpu_flops(args, 4, 0.5) == flops2
