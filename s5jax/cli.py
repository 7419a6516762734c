"""What every command line shares: usage errors and expected failures as ONE ``error:`` line on
stderr naming the file or flag and what was expected, exit status 2 — never a traceback."""

from __future__ import annotations

import argparse
import sys

EXIT_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with usage errors as one line (``error: … (see PROG --help)``), status 2."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def error_text(e: BaseException) -> str:
    """The one-line message of an expected failure (``OSError``: file and reason)."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split()) if "\n" in str(e) else str(e)


def fail(e: BaseException) -> int:
    """Print ``error: <message>`` on stderr; returns the exit status (2)."""
    print(f"error: {error_text(e)}", file=sys.stderr)
    return EXIT_ERROR
