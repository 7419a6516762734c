"""Learning benchmark: do s5jax's training runs learn to separate held-out sounds?

Trains each variant (a ``configs/<file>.py:<presets>`` string) with K seeds through the real
training loop (``s5jax.training.loop.train_and_evaluate``), one work directory per run under
``OUT/runs/``, and reads the validation points the runs logged. The ``small`` presets validate on
the dataset's held-out test soundscapes (``data.valid_split="test"``, ``s5jax.training.heldout``:
the computation of ``python -m s5jax.evaluate``), including step 0; for the embedded ``full``
dataset these are sounds, interferers, noise and rooms the training split never uses. A separator
variant records its scores with oracle labels, a tagger variant its mixture accuracy.

Budget per run: ``--steps`` (train.num_steps) and ``--minutes`` (train.max_minutes, training
wall time with validation excluded); whichever is reached first ends the run, and the JSON says
which one bound. Defaults: the presets' own (the separators' small: 4000 steps, 45 minutes; the
tagger's: 2500 steps, 45 minutes).

    python scripts/bench_learning.py [--variants 'a;b'] [--seeds K] [--minutes M] [--steps N]
        [--eval-every E] [--valid-limit V] --out DIR [--append docs/benchmarks.md]

Variants are separated by ``;`` (quoted in a shell), since a comma already joins one config's
presets: ``configs/resunetk.py:small,baseline`` is one variant.

Writes ``DIR/learning.json`` (``{variant: {seed: [{step, seconds, ca_sdri, ca_si_sdri, sdri,
floor_ca_sdri, floor_ca_si_sdri}, …]}}``; a tagger: ``{step, seconds, accuracy}``; ``seconds`` =
training wall time at that step, validation excluded, compilation included), ``DIR/runs.json``
(per run: steps reached, what bound, load average at the start and end), ``DIR/learning.png``
(``s5jax.plots.plot_learning_curves``: mean ± one sample standard deviation over the seeds) and
prints a summary; ``--append`` adds its row to docs/benchmarks.md. Work directories are resumed,
so an interrupted benchmark continues where it stopped (SIGTERM stops it after a checkpoint of the
current run's last step: ``kill PID``); a re-run whose options change what a run's checkpoints
mean (``--steps``, ``--valid-limit``) is refused before anything trains: use a new ``--out``, or
delete that run's folder. Runs are sequential (one at a time) and
seed-major (every variant's seed 0, then every variant's seed 1, …).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import benchlib
import jax

from s5jax import hostmem
from s5jax.atomic import write_atomic
from s5jax.cli import load_config
from s5jax.data import loader
from s5jax.plots import plot_learning_curves
from s5jax.training import checkpoint, loop
from s5jax.training.logging import read_jsonl

DEFAULT_VARIANTS = "configs/resunetk.py:small,baseline;configs/resunetk.py:small"
SEPARATOR_KEYS = benchlib.SEPARATOR_KEYS
TAGGER_KEYS = {"valid/accuracy": "accuracy"}
BAR = 3.0  # acceptance (issue 13): CA-SI-SDRi ≥ +3 dB; tagger accuracy ≥ 80 %
TAGGER_BAR = 80.0


def slug(spec: str) -> str:
    """A run folder name for ``file.py[:presets]``: the file's stem and the presets
    (``configs/resunetk.py:small,baseline`` → ``resunetk-small-baseline``). Only the stem of the
    file is used, so a config given by an absolute path stays under ``OUT/runs/``."""
    file, _, arg = spec.partition(":")
    return "-".join([Path(file).stem, *(p.strip() for p in arg.split(",") if p.strip())])


def points(records: list[dict]) -> list[dict]:
    """The validation points of a run's ``log.jsonl``: step, training seconds and metrics."""
    out = []
    for r in records:
        keys = SEPARATOR_KEYS if "valid/ca_sdri" in r else (
            TAGGER_KEYS if "valid/accuracy" in r else None)
        if keys is None:
            continue
        out.append({"step": int(r["step"]), "seconds": float(r.get("train/seconds", 0.0)),
                    **{v: r.get(k) for k, v in keys.items()}})
    return out


def run_config(spec: str, seed: int, args):
    """The config of ``spec``'s run with ``seed``: the variant's, with the options applied."""
    cfg = load_config(spec)
    cfg.train.seed = seed
    cfg.data.seed = seed
    cfg.train.eval_at_start = True
    cfg.train.progress = not args.no_progress
    if args.steps is not None:
        cfg.train.num_steps = args.steps
    if args.minutes is not None:
        cfg.train.max_minutes = args.minutes
    if args.eval_every is not None:
        cfg.train.eval_every = args.eval_every
        cfg.train.checkpoint_every = args.eval_every
    if args.valid_limit is not None:
        cfg.data.valid_limit = args.valid_limit
    return cfg


def resume_conflict(cfg, workdir: Path) -> str | None:
    """Why training would refuse to resume the run in ``workdir`` with ``cfg`` (``None`` if it
    would not): the same check (``loop.check_resume``), made before any run trains, with what
    to do about it here — training's own message suggests ``--workdir`` and
    ``allow_config_change``, which this script does not take."""
    try:
        loop.check_resume(cfg, workdir)
        return None
    except ValueError as e:
        try:
            saved = checkpoint.read_train_config(workdir)
        except ValueError:  # invalid JSON: training's message says so
            saved = None
        changes = [] if saved is None else [
            (k, a, b) for k, a, b in loop.config_changes(saved, cfg)
            if not any(k == f or k.startswith(f + ".") for f in loop.RESUME_FREE)]
        what = (f"{workdir} holds a run trained with another config ("
                + "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in changes) + ")"
                if changes else str(e))
    return (f"{what}; the runs under --out are resumed, not restarted: use a new --out, or "
            f"delete {workdir} to train that run again")


def run_one(cfg, workdir: Path) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        loop.train_and_evaluate(cfg, str(workdir))
    finally:  # as `python -m s5jax.train` does: the loader workers' shared memory is unlinked
        loader.release_worker_batches()
    pts = points(read_jsonl(workdir))
    last = pts[-1]["step"] if pts else 0
    return {"workdir": str(workdir), "steps": last, "num_steps": int(cfg.train.num_steps),
            "max_minutes": cfg.train.get("max_minutes"),
            "bound": "steps" if last >= int(cfg.train.num_steps) else "minutes",
            "wall_seconds": time.perf_counter() - t0,
            "training_seconds": pts[-1]["seconds"] if pts else 0.0,
            "load_average_start": load0, "load_average_end": os.getloadavg()[0],
            "points": pts}


def _mean_sd(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def summarise(learning: dict, runs: dict) -> str:
    """One line per variant: the final points, mean ± sd over seeds (sample sd)."""
    parts = []
    for variant, by_seed in learning.items():
        finals = [pts[-1] for pts in by_seed.values() if pts]
        if not finals:
            continue
        steps = [f["step"] for f in finals]
        minutes = [f["seconds"] / 60 for f in finals]
        if "ca_si_sdri" in finals[0]:
            si = [f["ca_si_sdri"] for f in finals]
            parts.append(
                f"{variant} (n={len(finals)}, {min(steps)}–{max(steps)} steps, "
                f"{min(minutes):.0f}–{max(minutes):.0f} min): CA-SI-SDRi {_mean_sd(si)} dB "
                f"(bar {BAR:+.0f}: {'met' if min(si) >= BAR else 'NOT met'}), CA-SDRi "
                f"{_mean_sd([f['ca_sdri'] for f in finals])} dB vs floor "
                f"{finals[0]['floor_ca_sdri']:.2f} dB, oracle SDRi "
                f"{_mean_sd([f['sdri'] for f in finals])} dB")
        else:
            acc = [f["accuracy"] for f in finals]
            parts.append(f"{variant} (n={len(finals)}, {min(steps)}–{max(steps)} steps, "
                         f"{min(minutes):.0f}–{max(minutes):.0f} min): held-out label accuracy "
                         f"{_mean_sd(acc)} % (bar {TAGGER_BAR:.0f}: "
                         f"{'met' if min(acc) >= TAGGER_BAR else 'NOT met'})")
    loads = [r["load_average_start"] for v in runs.values() for r in v.values()]
    if loads:
        parts.append(f"load average {min(loads):.1f}–{max(loads):.1f} at the runs' starts")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help="config:presets strings separated by ';' (default: ResUNetK baseline "
                   "and seed at the small size)")
    p.add_argument("--seeds", type=benchlib.positive_int, default=3)
    p.add_argument("--steps", type=benchlib.positive_int,
                   help="train.num_steps (default: the preset's)")
    p.add_argument("--minutes", type=benchlib.positive_float,
                   help="train.max_minutes (default: the preset's)")
    p.add_argument("--eval-every", type=benchlib.positive_int,
                   help="train.eval_every (default: the preset's)")
    p.add_argument("--valid-limit", type=benchlib.positive_int,
                   help="validate on the first V held-out mixtures only (default: all)")
    p.add_argument("--out", required=True)
    p.add_argument("--append", type=benchlib.output_file,
                   help="append the result row to this markdown file")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    if not variants:
        p.error(f"--variants {args.variants!r}: no config given")
    folders = [slug(spec) for spec in variants]
    if len(set(folders)) < len(folders):  # two config files with one stem would share runs
        raise SystemExit(f"--variants: run folders {folders} collide; give the config files "
                         "different names")
    for spec in variants:  # every variant loads before anything is written or trained
        try:
            cfg = load_config(spec)
        except (ValueError, OSError) as e:
            p.error(f"--variants {spec!r}: {e}")
        if cfg.data.get("valid_split", "valid") != "test":  # its curves would have no points
            p.error(f"--variants {spec!r}: it does not validate on the held-out test "
                    "soundscapes (data.valid_split='test'; the `small` presets do)")
    out = Path(args.out)
    # Seed-major: every variant's seed 0 first, so an interrupted benchmark already compares
    # the variants on equal terms.
    jobs = [(spec, seed, run_config(spec, seed, args), out / "runs" / slug(spec) / f"seed{seed}")
            for seed in range(args.seeds) for spec in variants]
    for _, _, cfg, workdir in jobs:  # before any run trains, not when this one's turn comes
        conflict = resume_conflict(cfg, workdir)
        if conflict:
            p.error(f"--out {out}: {conflict}")
    out.mkdir(parents=True, exist_ok=True)
    # Runs of one variant share their shapes: a persistent compilation cache compiles each jitted
    # step once per variant instead of once per run (minutes on a loaded 2-core CPU).
    jax.config.update("jax_compilation_cache_dir", str(out / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    learning: dict = {}
    runs: dict = {}
    # A finished run is only read again on a re-run: keep what was measured while it trained.
    before = (json.loads((out / "runs.json").read_text()) if (out / "runs.json").is_file()
              else {})
    for spec, seed, cfg, workdir in jobs:
        r = run_one(cfg, workdir)
        pts = r.pop("points")
        old = before.get(spec, {}).get(str(seed))
        if old is not None and old.get("steps") == r["steps"]:
            r = old
        learning.setdefault(spec, {})[str(seed)] = pts
        runs.setdefault(spec, {})[str(seed)] = r
        # Written after every run: an interrupted benchmark keeps what it measured.
        write_atomic(out / "learning.json", json.dumps(learning, indent=1) + "\n")
        write_atomic(out / "runs.json", json.dumps(runs, indent=1) + "\n")
        have = {k for v in learning.values() for s in v.values() for p in s
                for k, x in p.items() if x is not None}
        metrics = [m for m in ("ca_si_sdri", "ca_sdri", "sdri", "accuracy") if m in have]
        floor = [p for v in learning.values() for s in v.values() for p in s
                 if p.get("floor_ca_sdri") is not None]
        lines = {"ca_sdri": (floor[0]["floor_ca_sdri"], "scaled-mixture floor"),
                 "ca_si_sdri": (0.0, "scaled-mixture floor")} if floor else None
        plot_learning_curves(learning, metrics, out / "learning.png", lines=lines)
    line = summarise(learning, runs)
    print(line)
    if args.append:
        # Separators are queried with the true labels; a tagger is scored on its own decisions.
        separators = any("ca_sdri" in p for v in learning.values() for s in v.values() for p in s)
        what = "held-out, oracle labels" if separators else "held-out"
        row = benchlib.append_row(args.append, benchmark=f"learning ({what})",
                                  command=benchlib.command("bench_learning.py", argv),
                                  result=line, ratio="–")
        print(row, end="")
    return 0


if __name__ == "__main__":
    # Only where s5jax owns the process (not when main() is called from other code): the
    # allocator settings are process-wide. Before JAX starts its threads (s5jax/hostmem.py).
    hostmem.keep_freed_memory()
    sys.exit(main())
