"""kill -9 between checkpoints, then resume: each step is logged once (log.jsonl and TensorBoard
as it reads the event files) and the losses equal those of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s5jax.training.checkpoint import checkpoint_steps
from s5jax.training.logging import read_jsonl
from tests import quick_compile
from tests.test_logging import tensorboard_scalars

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 16, 4


def _command(workdir: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "s5jax.train", "--config", "configs/m2d_at.py:smoke",
            f"--workdir={workdir}", f"--config.data.root={data}",
            f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
            f"--config.train.checkpoint_every={EVERY}", "--config.train.eval_every=1000",
            "--config.train.eval_at_end=false", "--config.train.progress=false",
            "--config.data.clip_seconds=0.5"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")  # the three runs compile their step once
    return quick_compile.env(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                             JAX_COMPILATION_CACHE_DIR=str(cache),
                             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _logged_steps(workdir: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(workdir) if "train/loss" in r]


def _kill_between_checkpoints(workdir: Path, data: Path, env: dict) -> tuple[int, int]:
    """Start a run and SIGKILL it once it has logged steps after its last finished checkpoint;
    returns (last checkpoint, last logged step) at the kill."""
    proc = subprocess.Popen(_command(workdir, data), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None:
            done, logged = checkpoint_steps(workdir), _logged_steps(workdir)
            if done and logged and max(logged) > done[-1]:
                os.kill(proc.pid, signal.SIGSTOP)  # freeze, then look again
                done, logged = checkpoint_steps(workdir), _logged_steps(workdir)
                if done and max(logged) > done[-1]:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return done[-1], max(logged)
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError("the run ended before it could be killed between checkpoints:\n"
                         + proc.stderr.read().decode()[-2000:])


def test_kill_between_checkpoints_then_resume_logs_each_step_once(tmp_path, embedded_small, env):
    full, part = tmp_path / "full", tmp_path / "part"
    r = subprocess.run(_command(full, embedded_small), cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt, last = _kill_between_checkpoints(part, embedded_small, env)
    assert last > ckpt >= EVERY  # steps were logged that the resumed run will log again
    r = subprocess.run(_command(part, embedded_small), cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {part} from step {ckpt} of {STEPS}" in r.stderr

    ref = {x["step"]: x["train/loss"] for x in read_jsonl(full) if "train/loss" in x}
    got = [(x["step"], x["train/loss"]) for x in read_jsonl(part) if "train/loss" in x]
    assert [s for s, _ in got] == list(range(1, STEPS + 1))  # each step once, in order
    assert dict(got) == ref  # identical losses: the resumed run continued exactly
    tb_full, tb_part = tensorboard_scalars(full / "tb"), tensorboard_scalars(part / "tb")
    assert len(list((part / "tb").iterdir())) == 2  # the killed run's file is still there
    for tag in ("train/loss", "train/grad_norm", "train/learning_rate"):
        steps = [s for s, _ in tb_part[tag]]
        assert steps == list(range(1, STEPS + 1)), (tag, steps)
        assert tb_part[tag] == tb_full[tag]
    assert json.loads((part / "train_config.json").read_text())["train"]["num_steps"] == STEPS


# Grain's worker processes hand batches over in POSIX shared memory (/dev/shm). Every process of
# a run stopped by a signal names its blocks with its test's prefix (a sitecustomize on its
# PYTHONPATH), so each test finds exactly its own blocks while other tests run beside it.


def _own_shm_env(env: dict, tmp_path: Path, prefix: str, extra: str = "") -> dict:
    """``env`` whose Python processes name their shared-memory blocks ``/<prefix>…`` (and run
    the code ``extra`` at start-up)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f'import multiprocessing.shared_memory as m\nm._SHM_NAME_PREFIX = "/{prefix}"\n' + extra)
    return dict(env, PYTHONPATH=f"{site}{os.pathsep}{env['PYTHONPATH']}")


def _own_shm(prefix: str) -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob(prefix + "*")} if shm.is_dir() else set()


def _terminate(cmd: list[str], env: dict, workdir: Path, after: int, group: bool,
               sig: int = signal.SIGTERM, prefix: str = "psmT"):
    """Start ``cmd`` and send it ``sig`` (its whole process group if ``group``, as Slurm or a
    terminal's Ctrl-C does) once it has logged a step past ``after``; returns (exit status,
    stderr, own shared-memory blocks seen in use)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=group)
    try:
        while proc.poll() is None and max(_logged_steps(workdir), default=0) <= after:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        in_use = _own_shm(prefix)
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, in_use


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory")
def test_sigterm_saves_a_checkpoint_releases_shared_memory_and_resumes(
        tmp_path, embedded_small, env):
    env = _own_shm_env(env, tmp_path, "psmT")
    before = _own_shm("psmT")  # a crashed earlier run of this test may have left some
    workdir = tmp_path / "run"
    cmd = [*_command(workdir, embedded_small), "--config.data.num_workers=1"]
    stopped = 0
    # `kill PID` (the main process only), then, resumed, a scheduler's SIGTERM to the process
    # group (the loader's worker gets it too, ignores it and is closed by the main process).
    for group in (False, True):
        code, err, in_use = _terminate(cmd, env, workdir, stopped, group)
        assert in_use - before  # the worker's batches did travel through shared memory
        assert code == 143, err[-3000:]
        assert "leaked" not in err, err[-3000:]  # the worker's blocks were released, not swept
        if stopped:
            assert f"resuming {workdir} from step {stopped} of {STEPS}" in err
        last = max(_logged_steps(workdir))
        assert stopped < last < STEPS
        stopped = last
        assert f"stopping at step {stopped}: SIGTERM received; checkpoint {stopped} saved" in err
        assert checkpoint_steps(workdir)[-1] == stopped  # saved where it stopped, not at 4·k
        assert not (workdir / "model").exists()  # an interrupted run exports nothing
        assert not _own_shm("psmT") - before, "shared memory left behind by the stopped run"

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {workdir} from step {stopped} of {STEPS}" in r.stderr
    assert _logged_steps(workdir) == list(range(1, STEPS + 1))  # each step once, in order
    assert (workdir / "model").is_dir()
    assert not _own_shm("psmT") - before


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory")
def test_ctrl_c_with_workers_says_what_resumes_without_worker_tracebacks(
        tmp_path, embedded_small, env):
    """Ctrl-C in a terminal signals the loader's workers too: they leave the stopping to the main
    process (no traceback of theirs, no leaked shared memory), and the message says whether the
    same command resumes from a checkpoint or starts again."""
    env = _own_shm_env(env, tmp_path, "psmI")  # not the SIGTERM test's: they may run together
    before = _own_shm("psmI")
    workdir = tmp_path / "run"
    cmd = [*_command(workdir, embedded_small), "--config.data.num_workers=1"]
    code, err, _ = _terminate(cmd, env, workdir, 0, group=True, sig=signal.SIGINT,
                              prefix="psmI")
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "leaked" not in err, err[-3000:]
    done = checkpoint_steps(workdir)
    if done:  # the interrupt came after step 4's checkpoint
        assert f"interrupted: the same command resumes {workdir} from its checkpoint at step " \
            f"{done[-1]}" in err
    else:
        assert f"interrupted before the first checkpoint: the same command starts {workdir} " \
            "again from step 0" in err
    assert not _own_shm("psmI") - before


_SLOW_UNLINKS = """
import time
from grain.multiprocessing import SharedMemoryArray as A
_close = A.close_shm_async.__func__
def _slow(cls, shm, unlink):
    time.sleep(0.02)
    _close(cls, shm, unlink)
A.close_shm_async = classmethod(_slow)
"""


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory")
def test_a_workers_dataset_error_is_one_line_and_leaves_no_shared_memory(
        tmp_path, embedded_small, env):
    """A file that breaks while the run reads it (a download still being replaced, a full disk)
    fails in a loader worker: one `error:` line names it, and the batches in flight are released
    by the run, not swept at exit by Python's resource tracker with its "leaked" warning (22
    blocks in a repro, from the batches the error's traceback held and the unlinks queued)."""
    data = tmp_path / "data"
    shutil.copytree(embedded_small, data)
    # Grain unlinks a dropped batch's blocks on a background thread; on a loaded machine that
    # thread runs late, and a process that exits with unlinks queued leaves them behind. Each
    # unlink is made 20 ms slower here, so the run must wait for them (30 were left without).
    env = _own_shm_env(env, tmp_path, "psmE", extra=_SLOW_UNLINKS)
    before = _own_shm("psmE")
    workdir = tmp_path / "run"
    cmd = [*_command(workdir, data), "--config.data.num_workers=1",
           "--config.train.num_steps=1000"]  # the error comes after the read-ahead is used up
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and max(_logged_steps(workdir), default=0) < 2:
            time.sleep(0.01)
        for f in (data / "sound_event" / "train").glob("*/*.wav"):
            f.write_bytes(f.read_bytes()[:100])
        err = proc.communicate(timeout=300)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err[-3000:]
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "truncated file" in errors[0], err[-3000:]
    assert "leaked" not in err and "Traceback" not in err, err[-3000:]
    assert not _own_shm("psmE") - before
