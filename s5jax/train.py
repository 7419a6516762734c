"""Train a separator or the tagger: ``python -m s5jax.train --config configs/resunetk.py``.

Flags:
  --config      config file, optionally ``:preset[,preset…]``; ``--config.a.b=value`` overrides
  --workdir     run directory (default ``runs/<config name>``, e.g. ``runs/resunetk-smoke``);
                re-running the same command resumes from its latest checkpoint
  --distributed call ``jax.distributed.initialize()`` first (multi-host; one process per host)
  --dry_run     check the config's values, print it resolved (JSON) and exit: no dataset scan,
                no compilation, nothing written
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from s5jax import hostmem
from s5jax.cli import fail, parse_config_flags
from s5jax.data import loader
from s5jax.training.checkpoint import checkpoint_steps
from s5jax.training.loop import NonFiniteError, check_config, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file[:presets].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<config name>).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Check the config, print it resolved (JSON), exit without training.")
flags.mark_flags_as_required(["config"])


def default_workdir(config) -> Path:
    """``runs/<config.name>``: the same command always maps to the same directory (resume)."""
    return Path("runs") / str(config.get("name", "run"))


def dry_run(config, workdir: Path) -> int:
    """``--dry_run``: the config's value checks only; the resolved config on stdout."""
    try:
        task = check_config(config)
    except ValueError as e:
        return fail(e)
    print(config.to_json(indent=2))
    print(f"dry run: {task} config is valid; would train in {workdir.absolute()} "
          "(dataset and config.init are checked when the run starts)", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    config = _CONFIG.value
    workdir = Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config)
    if _DRY_RUN.value:
        return dry_run(config, workdir)
    try:
        result = train_and_evaluate(config, str(workdir))
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted_message(workdir.absolute()), file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        return fail(e)
    finally:
        # Whichever way the run ended (a worker's dataset error holds batches in its traceback):
        # no shared-memory block left for Python's resource tracker to warn about at exit.
        loader.release_worker_batches()
    if jax.process_index() == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.items()))
        print(f"done: {workdir.absolute()} ({summary or 'not validated'})")
    return 0


def interrupted_message(workdir: Path) -> str:
    """What Ctrl-C leaves: the checkpoint the same command resumes from, or none yet."""
    try:
        steps = checkpoint_steps(workdir)
    except ValueError:  # a foreign step folder: the next run names it
        steps = []
    if steps:
        return (f"interrupted: the same command resumes {workdir} from its checkpoint at step "
                f"{steps[-1]}")
    return (f"interrupted before the first checkpoint: the same command starts {workdir} again "
            "from step 0")


if __name__ == "__main__":
    # Only where s5jax owns the process (not when main() is called from other code): the
    # allocator settings are process-wide. Before JAX starts its threads (s5jax/hostmem.py).
    hostmem.keep_freed_memory()
    app.run(main, flags_parser=parse_config_flags)
