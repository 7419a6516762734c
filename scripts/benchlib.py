"""Shared helpers of scripts/bench_*.py: timing, machine description, docs/benchmarks.md rows.

The bench scripts run as ``python scripts/bench_x.py``, which puts this folder first on
``sys.path`` whatever the working directory, so they ``import benchlib`` directly.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from s5jax.atomic import write_atomic

# Held-out validation records (s5jax.training.heldout) → the names the learning scripts write.
SEPARATOR_KEYS = {"valid/ca_sdri": "ca_sdri", "valid/ca_si_sdri": "ca_si_sdri",
                  "valid/sdri": "sdri", "valid/floor_ca_sdri": "floor_ca_sdri",
                  "valid/floor_ca_si_sdri": "floor_ca_si_sdri"}
HEADER = (
    "# Benchmarks\n\nRows appended by scripts/bench_*.py.\n\n"
    "| date | benchmark | machine | command | result | ratio |\n"
    "|---|---|---|---|---|---|\n"
)


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        v = low - 1
    if v < low:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer ≥ {low}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse prints one usage error otherwise)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0 (a count where 0 means none, e.g. worker processes)."""
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return v


def output_file(text: str, *, create_folder: bool = False) -> Path:
    """argparse type: a file to write at the end of a run, checked before it (its folder exists,
    it is not a folder), so that a long run does not end in a traceback. With
    ``create_folder`` (:func:`new_output_file`), a missing folder is fine if it can be created
    (no file in its way): :func:`write_output` creates it."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file")
    parent = path.absolute().parent
    if not create_folder and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: its folder does not exist")
    above = next(p for p in (parent, *parent.parents) if p.exists())
    if not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: cannot create its folder ({above} is a file)")
    return path


def new_output_file(text: str) -> Path:
    """argparse type: :func:`output_file` whose folder is created when written if missing (a
    ``runs/x.json`` in a fresh checkout)."""
    return output_file(text, create_folder=True)


def write_output(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` (atomically), creating its folder if missing; the writer of
    :func:`new_output_file` arguments."""
    Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, text)


def folder(text: str) -> Path:
    """argparse type: an existing folder (a checkout to import from, a dataset root)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: {'is not a folder' if path.exists() else 'no such folder'}")
    return path


def executable(text: str) -> str:
    """argparse type: a program to run, a path or a name on ``PATH`` (``shutil.which``), checked
    to exist and be executable before the run that would start it (a subprocess's
    ``FileNotFoundError`` came after the minutes of the other side's round). Returns the path."""
    found = shutil.which(text)
    if found is None:
        why = ("is not an executable file" if Path(text).exists() else
               "no such file" if os.sep in text else "no such program on PATH")
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return found


def parser(doc: str, *, batch: int, repeats: int) -> argparse.ArgumentParser:
    """Argument parser with the options every bench script has: --batch, --repeats, --append.

    ``doc`` is the script's module docstring; its first line becomes the description.
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=batch)
    p.add_argument("--repeats", type=positive_int, default=repeats)
    p.add_argument("--append", type=output_file, default=None,
                   help="benchmarks.md to append a row to")
    return p


def median_time(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn()``.

    ``warmup`` untimed calls come first (JAX compilation, allocator and thread-pool start-up).
    """
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def alternating_times(fns: dict[str, Callable[[], object]], repeats: int, *,
                      warmup: int = 0) -> dict[str, list[float]]:
    """Wall times in seconds of ``repeats`` calls of each ``fns[name]()``, in alternating rounds.

    ``warmup`` untimed rounds come first, alternating like the timed ones: a function whose
    inputs another one produces (a train step's donated state) is compiled for those inputs too.
    Then each round times every function once, in order, so that load from other processes
    falls on all of them alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    return times


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a jitted float32 ``n × n`` matrix product on the default device: the best of
    ``repeats`` calls after a warm-up call (compilation).

    The yardstick for a step's achieved FLOP rate on a CPU, where XLA's dots and convolutions run
    through the same library (on a GPU, JAX's default float32 precision uses TF32).
    """
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    product(a).block_until_ready()
    best = min(_timed(lambda: product(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def device_kind() -> str:
    """``platform:device_kind`` of the first JAX device, e.g. ``cpu:cpu`` or ``gpu:NVIDIA H100``."""
    device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def machine() -> str:
    """``host (platform:device_kind, cpu)``: the machine column of docs/benchmarks.md."""
    return (f"{platform.node() or '?'} "
            f"({device_kind()}, {platform.processor() or platform.machine()})")


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line to record: ``python scripts/<script> <argv or sys.argv[1:]>``."""
    args = sys.argv[1:] if not argv else argv
    return f"python scripts/{script} {shlex.join(args)}".strip()


def append_row(path: Path | str, *, benchmark: str, command: str, result: str,
               ratio: str) -> str:
    """Append ``| date | benchmark | machine | `command` | result | ratio |`` to ``path``.

    Creates the file with the table header first if it does not exist. Returns the row.
    """
    path = Path(path)
    if not path.exists():
        path.write_text(HEADER, encoding="utf-8")
    row = (f"| {datetime.date.today()} | {benchmark} | {machine()} | `{command.strip()}` | "
           f"{result} | {ratio} |\n")
    with path.open("a", encoding="utf-8") as f:
        f.write(row)
    return row


def clip_report(t_jax: float, t_ref: float | None, *, batch: int, repeats: int,
                threads: int | None, digits: int, title: str = "") -> tuple[str, str]:
    """Print per-clip times of the jitted JAX side and the optional torch CPU reference.

    ``t_jax``, ``t_ref``: seconds per clip; ``digits``: decimals of the clips/s figures;
    ``title`` starts the first printed line. Returns ``(result, ratio)`` for
    :func:`append_row` (ratio ``–`` without a reference).
    """
    print(f"{title + '  ' if title else ''}device {device_kind()}  batch {batch}"
          + (f"  torch threads {threads}" if threads is not None else ""))
    ms = 6 + digits  # width of the ms column, so that the two printed lines stay aligned
    print(f"jax jit   {t_jax * 1e3:{ms}.1f} ms/clip  {1 / t_jax:7.{digits}f} clips/s")
    result = (f"jitted {t_jax * 1e3:.0f} ms/clip ({1 / t_jax:.{digits}f} clips/s), B={batch}, "
              f"median of {repeats}")
    if t_ref is None:
        return result, "–"
    print(f"torch     {t_ref * 1e3:{ms}.1f} ms/clip  {1 / t_ref:7.{digits}f} clips/s")
    print(f"speed-up  {t_ref / t_jax:.2f}x")
    result += (f"; torch CPU reference {t_ref * 1e3:.0f} ms/clip ({1 / t_ref:.{digits}f} clips/s, "
               f"{threads} threads)")
    return result, f"{t_ref / t_jax:.2f}x"
