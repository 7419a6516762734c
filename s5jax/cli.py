"""What every command line shares: usage errors and expected failures as ONE ``error:`` line on
stderr naming the file or flag and what was expected, exit status 2 — never a traceback."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

EXIT_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with usage errors as one line (``error: … (see PROG --help)``), status 2."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def first_few(items: Sequence[str], n: int = 3) -> str:
    """``"a, b, c and 4 more"``: the first ``n`` of ``items``, for a one-line message."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def error_text(e: BaseException) -> str:
    """The one-line message of an expected failure (``OSError``: file and reason)."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split()) if "\n" in str(e) else str(e)


def fail(e: BaseException) -> int:
    """Print ``error: <message>`` on stderr; returns the exit status (2)."""
    print(f"error: {error_text(e)}", file=sys.stderr)
    return EXIT_ERROR


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _config_file(spec: str) -> tuple[str, str]:
    """``file.py[:presets]`` → ``(file, presets)``; ``ValueError`` if the file does not exist."""
    file, _, arg = str(spec).partition(":")
    if not Path(file).is_file():
        raise ValueError(f"{file}: no such config file ({Path(file).absolute()})")
    return file, arg


def load_config(spec: str):
    """``file.py[:presets]`` → the config, as ``--config`` loads it (``get_config(presets)``);
    ``ValueError`` if the file is not a Python file that can be loaded."""
    file, arg = _config_file(spec)
    module_spec = importlib.util.spec_from_file_location(f"cfg_{abs(hash(spec))}", file)
    if module_spec is None:
        raise ValueError(f"{file}: not a Python config file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _unknown_field(spec: str | None, argv: list[str]) -> str | None:
    """The message for the first ``--config.a.b=…`` naming a field the config does not have."""
    try:
        config = load_config(spec)
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


def parse_config_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for a command with a ``--config file.py[:presets]`` flag
    (``s5jax.train``, ``scripts/memory.py``), with every error as one ``error:`` line and exit
    status 2: ``app.run(main, flags_parser=parse_config_flags)``."""
    path = _flag_value(argv, "config")
    if path is not None:
        try:
            _config_file(path)
        except ValueError as e:
            sys.exit(fail(ValueError(f"--config {e}")))
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
