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

import importlib.util
import sys
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from s5jax.cli import fail
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


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _load_config(spec: str):
    """The config ``--config spec`` names (``file.py[:presets]``), loaded as config_flags does;
    only for error messages, when config_flags itself failed."""
    file, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("s5jax_train_config", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _unknown_field(spec: str | None, argv: list[str]) -> str | None:
    """The message for the first ``--config.a.b=…`` naming a field the config does not have."""
    try:
        config = _load_config(spec)
    except Exception:  # noqa: BLE001 - only for a message: the flag parser already failed
        return None
    for a in argv:
        if not a.startswith("--config."):
            continue
        name = a[2:].split("=", 1)[0]
        node, where = config, "config"
        for part in name.split(".")[1:]:
            if not hasattr(node, "keys") or part not in node.keys():
                known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
                return f"--{name}: {where} has no field {part!r} (its fields: {known})"
            node, where = node[part], f"{where}.{part}"
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every error as one ``error:`` line and exit status 2."""
    path = _flag_value(argv, "config")
    if path is not None and not Path(path.split(":", 1)[0]).is_file():
        sys.exit(fail(ValueError(f"--config {path}: no such config file "
                                 f"({Path(path.split(':', 1)[0]).absolute()})")))
    try:
        return flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        name = e.flagname
        msg = f"--{name}: unknown flag"
        if name.startswith("config."):
            msg = _unknown_field(path, argv) or f"--{name}: no such config field"
    except flags.Error as e:
        # A failing config file arrives as a traceback inside the message: keep its last line.
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        msg = lines[0].removeprefix("flag ")
        if len(lines) > 1:
            msg = f"--config {path}: {lines[-1].split(': ', 1)[-1]}"
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for an override of a field the config does not have.
        msg = _unknown_field(path, argv) or f"{type(e).__name__}: {e}"
    except (OSError, ValueError, TypeError) as e:
        msg = str(e)
    sys.exit(fail(ValueError(msg)))


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
    except (ValueError, OSError) as e:
        return fail(e)
    if jax.process_index() == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.items()))
        print(f"done: {workdir.absolute()} ({summary})")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
