"""The commands the documentation promises, collected so that the suite can run them.

Collected: in README.md and docs/*.md, every fenced code block whose info string is empty or
one of :data:`SHELL_LANGS`; in it, lines are joined at a trailing backslash, a leading ``$ ``
prompt is dropped, ``# comments`` are dropped, a line is split at ``&&``, ``||`` and ``;``, and
every part that starts with ``python -m s5jax.`` is a command. Blocks tagged ``python``, ``text``
or anything else are not commands. A command written twice (same words) is one command.

A command line may be a synopsis: ``[optional part]`` and ``a|b`` alternatives. The suite runs
it with every optional part included and the first alternative of each choice
(:func:`expand_synopsis`), metavariables (``DIR``, ``N``, ``PRESETS``, ``FIELD=VALUE``, an
ellipsis) replaced as :data:`METAVARIABLES` says.

How each command is run (placeholders, tiny sizes, what must come out) is in
tests/test_doc_commands.py; the conventions for doc authors are in docs/training.md
("Documented commands are tests").
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = frozenset({"", "bash", "sh", "shell", "console"})
PREFIX = ("python", "-m")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")

# Synopsis metavariables → what the suite substitutes (whole words only).
METAVARIABLES = {
    "DIR": "DIR",  # a new folder of that name in the command's sandbox
    "N": "0",  # a number (seed, count)
    "PRESETS": "smoke",  # a preset list
    "FIELD=VALUE": "train.log_every=1",  # any config override
    "…": "",  # "and more of the same"
}


@dataclass
class DocCommand:
    """One documented command: its words and every place it is written (``file:line``)."""

    text: str  # as written (continuations joined, prompt and comment dropped)
    sources: list[str] = field(default_factory=list)

    @property
    def module(self) -> str:
        return self.text.split()[2]

    @property
    def is_synopsis(self) -> bool:
        return bool(re.search(r"\[|\||…", self.text))


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join backslash continuations; keep the first line's number."""
    out, buf, start = [], "", None
    for number, line in lines:
        if start is None:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        out.append((start, buf + stripped))
        buf, start = "", None
    if start is not None:
        out.append((start, buf))
    return out


def _commands_in_line(line: str) -> list[str]:
    """The ``python -m s5jax.…`` parts of one shell line."""
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:]
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts, words = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "&", "|"):
            parts.append(words)
            words = []
        else:
            words.append(token)
    parts.append(words)
    return [_join(p) for p in parts
            if len(p) > 2 and tuple(p[:2]) == PREFIX and p[2].startswith("s5jax.")]


def _join(words: list[str]) -> str:
    """Words back to a line, quoting only those that need it (synopsis brackets stay as written)."""
    return " ".join(shlex.quote(w) if re.search(r"[\s'\"$]", w) else w for w in words)


def _synopsis_safe_words(line: str) -> str:
    """Protect synopsis ``a|b`` choices from being read as shell pipes (outside quotes they
    are never pipes in our docs: a pipe is written with spaces around it)."""
    return re.sub(r"(?<=\S)\|(?=\S)", "\x00", line)


def fenced_blocks(path: Path) -> list[tuple[str, list[tuple[int, str]]]]:
    """``(info, [(line number, text), …])`` of every fenced code block of a markdown file."""
    blocks, current, fence = [], None, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = _FENCE.match(line)
        if current is None:
            if m:
                fence, current = m.group("fence"), (m.group("info").lower(), [])
        elif m and m.group("fence").startswith(fence[0] * len(fence)) and not m.group("info"):
            blocks.append(current)
            current = None
        else:
            current[1].append((number, line))
    return blocks


def collect(root: Path = ROOT) -> list[DocCommand]:
    """Every documented ``python -m s5jax.`` command, once, in the order first written."""
    found: dict[str, DocCommand] = {}
    for path in doc_files(root):
        rel = path.relative_to(root)
        for info, lines in fenced_blocks(path):
            if info not in SHELL_LANGS:
                continue
            for number, line in _logical_lines(lines):
                for text in _commands_in_line(_synopsis_safe_words(line)):
                    text = text.replace("\x00", "|")
                    found.setdefault(text, DocCommand(text)).sources.append(f"{rel}:{number}")
    return list(found.values())


def unfenced_commands(root: Path = ROOT) -> list[str]:
    """``file:line`` of every line outside fenced blocks that starts (after indentation or a
    ``$`` prompt) with ``python -m s5jax.``: an indented code block, which must be fenced so
    that the suite collects it."""
    out = []
    for path in doc_files(root):
        inside = {n for _, lines in fenced_blocks(path) for n, _ in lines}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if number not in inside and re.match(r"^\s+(\$ )?python -m s5jax\.", line):
                out.append(f"{path.relative_to(root)}:{number}")
    return out


def expand_synopsis(text: str) -> str:
    """One runnable instance of a synopsis: optional parts included, the first of each ``a|b``
    choice, metavariables replaced by :data:`METAVARIABLES`."""
    text = text.replace("[", " ").replace("]", " ")
    text = re.sub(r"(\S+?)\|\S+", r"\1", text.replace("\\|", "|"))
    for name, value in METAVARIABLES.items():
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", value, text)
    text = re.sub(r"(\S)\s+:", r"\1:", text)  # "resunetk.py [:PRESETS]" → "resunetk.py:smoke"
    return " ".join(text.split())
