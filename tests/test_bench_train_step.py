"""scripts/bench_train_step.py's FLOP accounting (the timing itself is a benchmark, not a test)."""

import math
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_separate_memory  # noqa: E402
import bench_train_step  # noqa: E402
import benchlib  # noqa: E402

from s5jax.models import conv  # noqa: E402


def test_gemm_rate_is_a_positive_rate():
    rate = benchlib.gemm_rate(n=128, repeats=2)
    assert math.isfinite(rate) and rate > 1e6  # FLOP/s, not seconds


def test_roofline_rates_and_fractions():
    # 100 GFLOP in 1 s (ours) and 0.5 s (reference) on a 400 GFLOP/s device.
    text = bench_train_step.roofline(100e9, 1.0, 0.5, 400e9)
    assert "s5jax 100 GFLOP/s (25%)" in text
    assert "reference 200 GFLOP/s (50%)" in text
    assert "0.8 × the reference's time: 250 GFLOP/s (62%)" in text


def test_peaks_only_for_the_parts_in_the_table():
    peak = bench_train_step.peak_tflops
    assert peak("bfloat16", "gpu:NVIDIA H100 80GB HBM3") == 989.4
    assert peak("float32", "gpu:NVIDIA H200") == 494.7
    # PCIe and NVL parts run slower clocks than the SXM ones: no MFU against the wrong peak.
    assert peak("bfloat16", "gpu:NVIDIA H100 PCIe") is None
    assert peak("bfloat16", "gpu:NVIDIA H200 NVL") is None
    assert peak("bfloat16", "cpu:cpu") is None


def test_fwd_bwd_flops_counts_the_kernel_gradients_the_cpu_loops_hide():
    if jax.default_backend() != "cpu":
        pytest.skip("XLA counts lowered programs on the CPU only")
    data = bench_train_step.make_batch(1, 16000)
    flops = bench_train_step.fwd_bwd_flops(data)
    assert conv.use_gemm() is True  # restored
    steps, loop = bench_train_step.steps, bench_train_step.loop
    cfg, model = bench_train_step.baseline_model()
    variables = jax.eval_shape(lambda: loop.init_variables(steps.SEPARATOR, model, cfg, 0))
    args, key = (variables["params"], variables["batch_stats"], data), jax.random.key(0)

    def loss(p, s, d):
        return steps.loss_fn(steps.SEPARATOR, model, p, s, d, key)[0]

    def count(f):
        return jax.jit(f).lower(*args).cost_analysis()["flops"]

    forward = count(loss)
    cpu_path = count(lambda p, s, d: jax.grad(loss)(p, s, d))
    # A forward + backward is about three forwards (forward, input and kernel gradients; measured
    # 2.99 at 1 × 4 s). XLA counts the CPU path's kernel-gradient loops once per loop body
    # (measured 2.45 × the forward at 1 × 4 s); the accelerators' convolutions have no loops.
    assert 2.8 < flops / forward < 3.2, (flops, forward)
    assert cpu_path < 0.9 * flops, (cpu_path, flops)


@pytest.mark.parametrize("case", ["no config", "uncreatable folder"])
def test_profile_arguments_are_refused_before_any_compiling(case, tmp_path):
    """A --profile the script cannot honour is one usage error at once, not a failure after the
    minutes of compiling and timing (the folder used to be created only when tracing)."""
    import subprocess

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = (["--profile", str(tmp_path / "prof")] if case == "no config" else
            ["--config", "configs/resunetk.py:smoke", "--profile", str(blocker / "prof")])
    done = subprocess.run([sys.executable, "scripts/bench_train_step.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if case == "no config":
        assert "--profile traces the --config step: give --config too" in done.stderr
    else:
        assert f"--profile {blocker / 'prof'}: cannot create the folder" in done.stderr


def test_bench_arguments_are_checked_before_the_run(tmp_path, capsys):
    """Every bench script's --batch/--repeats/--append are checked when parsed (a zero, or an
    --append folder, ended a finished run in a traceback), and the recorded command keeps its
    shell quoting (a variant list with ';' was recorded unquoted)."""
    p = benchlib.parser("doc", batch=2, repeats=3)
    for argv, says in ((["--batch", "0"], "expected an integer ≥ 1"),
                       (["--repeats", "x"], "expected an integer ≥ 1"),
                       (["--append", str(tmp_path)], "is a folder, expected a file"),
                       (["--append", str(tmp_path / "no" / "rows.md")], "folder does not exist")):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        assert says in capsys.readouterr().err
    assert p.parse_args(["--append", str(tmp_path / "rows.md")]).batch == 2
    with pytest.raises(Exception, match="expected a number > 0"):
        benchlib.positive_float("-1")
    assert benchlib.command("bench_learning.py", ["--variants", "a.py:x;b.py:y"]) == \
        "python scripts/bench_learning.py --variants 'a.py:x;b.py:y'"


@pytest.mark.parametrize(("main", "argv", "says"), [
    (bench_train_step.main, ["--peak-tflops", "0"], "--peak-tflops: '0': expected a number > 0"),
    (bench_separate_memory.main, ["--seconds", "10", "-5"], "'-5': expected a number > 0"),
    (bench_separate_memory.main, ["--batch-chunks", "0"], "expected an integer ≥ 1"),
])
def test_numeric_options_are_checked_when_parsed(main, argv, says, capsys):
    """A zero or negative number is one usage error before any work (it ended a run in a
    division by zero, or was silently used)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


SMOKE = ["--config", "configs/resunetk.py:smoke"]


@pytest.mark.parametrize(("argv", "says"), [
    ([*SMOKE, "--set", "optim.nokey=1"],
     "--set optim.nokey=1: the config has no field optim.nokey"),
    ([*SMOKE, "--set", "bogus.key=1"], "--set bogus.key=1: the config has no field bogus.key"),
    ([*SMOKE, "--set", "optim.lr=abc"], "--set optim.lr=abc: optim.lr is a float, not 'abc'"),
    ([*SMOKE, "--set", "optim"], "--set optim: expected KEY=VALUE"),
    (["--set", "optim.lr=1"], "--set overrides the --config step's config: give --config too"),
    (["--config", "nope.py"], "--config nope.py: no such config file"),
])
def test_set_names_a_field_of_the_config(argv, says):
    """--set refuses, by name and before any compiling, a key the config does not have (a
    ConfigDict added ``optim.nokey`` silently; ``bogus.key`` was a KeyError traceback), a value
    of the wrong type, or an override with no --config to apply it to."""
    import subprocess

    done = subprocess.run([sys.executable, "scripts/bench_train_step.py", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert says in done.stderr


def test_set_overrides_a_field():
    config = bench_train_step.load_config("configs/resunetk.py:smoke")
    bench_train_step._override(config, "optim.accumulate=2")
    bench_train_step._override(config, "optim.lr=1")
    assert config.optim.accumulate == 2 and config.optim.lr == 1.0
