"""scripts/memory.py: XLA's memory/FLOP analysis of the real training step, without running it."""

import argparse
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # bench_train_step, memory


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
    import bench_train_step

    args = argparse.Namespace(config="configs/m2d_at.py:smoke", set=["optim.accumulate=2"])
    assert bench_train_step.cpu_flops(args, 4, 0.5) == flops2


def test_figures_off_the_cpu_count_no_flops(monkeypatch):
    """On a GPU the compiled count misses cuDNN convolutions and a lowered program has none
    (both seen on an H200): ``figures`` gives no FLOPs there, the report says so, and no
    accumulate=1 step is built for a count (the crash of the first H200 run)."""
    import memory

    from s5jax.cli import load_config

    config = load_config(str(ROOT / "configs" / "resunetk.py") + ":baseline_1gpu")
    mem = types.SimpleNamespace(argument_size_in_bytes=10, output_size_in_bytes=4,
                                alias_size_in_bytes=3, temp_size_in_bytes=20,
                                generated_code_size_in_bytes=1)
    compiled = types.SimpleNamespace(memory_analysis=lambda: mem,
                                     cost_analysis=lambda: {"flops": 3.3e11})
    monkeypatch.setattr(memory.jax, "devices", lambda: [types.SimpleNamespace(platform="gpu")])
    monkeypatch.setattr(memory, "lowered_flops", lambda *a: pytest.fail("counted on the GPU"))
    res = memory.figures(config, {"state": {}}, compiled, {})
    assert res["flops"] is None and res["peak"] == 32 and res["compiled_flops"] == 3.3e11
    text = memory.report(config, res, "cmd")
    assert text.splitlines()[-1] == "peak_bytes=32 flops=unknown"
    assert "not counted on gpu" in text


@pytest.mark.parametrize("args, culprit", [
    (("--config", "configs/nope.py"), "--config configs/nope.py: no such config file"),
    (("--config", "configs/resunetk.py:smokey"), "unknown config preset 'smokey'"),
    (("--config", "configs/resunetk.py:smoke", "--config.model.bogus=3"),
     "--config.model.bogus: config.model has no field 'bogus'"),
    # Refused when parsed, not by the step's tracing (ZeroDivisionError, gather and FFT errors).
    (("--config", "configs/resunetk.py:smoke", "--batch=0"), "--batch=0: expected an integer ≥ 1"),
    (("--config", "configs/resunetk.py:smoke", "--batch", "-2"),
     "--batch=-2: expected an integer ≥ 1"),
    (("--config", "configs/resunetk.py:smoke", "--seconds=0"),
     "--seconds=0.0: expected a number > 0"),
    (("--config", "configs/resunetk.py:smoke", "--ir_seconds=-1"),
     "--ir_seconds=-1.0: expected a number > 0"),
])
def test_bad_config_is_one_error_line(args, culprit):
    """The same flag parser as ``s5jax.train``: one ``error:`` line, status 2, no traceback."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "memory.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], lines
