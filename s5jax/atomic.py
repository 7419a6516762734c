"""Atomic file writes and all-or-nothing output folders.

Every writer in s5jax (wav, SOFA, JSON, reports, model directories) goes through here, so an
interrupted or failed write never leaves a half-written file under the final name. Files and
folders get the permissions ``open()`` / ``mkdir()`` would give them (``0o666`` / ``0o777``
less the umask), not the private ``0o600`` / ``0o700`` of ``tempfile``.

``Staging`` extends this to a whole run of outputs (``separate``, ``evaluate``, ``convert``):
everything is written into temporary folders beside the targets and moved into place together
at the end, or removed on failure, so a failed run leaves the targets exactly as they were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

FILE_MODE = 0o666
DIR_MODE = 0o777


def umask() -> int:
    """The process's umask, read without changing it where ``/proc`` tells it (Linux ≥ 4.7)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file: ``0o666 & ~umask``, as ``open()`` creates files."""
    return FILE_MODE & ~umask()


def dir_mode() -> int:
    """Mode of a new folder: ``0o777 & ~umask``, as ``mkdir()`` creates folders."""
    return DIR_MODE & ~umask()


def make_temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new empty hidden folder ``parent/.<name>.<random>.tmp`` with the umask's permissions."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))
    os.chmod(tmp, dir_mode())
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (with the umask's
    permissions), on error it is deleted and the error propagates."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | memoryview | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


def existing_ancestor(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_free_space(path: str | os.PathLike, nbytes: int, what: str = "the outputs") -> None:
    """``ValueError`` if the disk that ``path`` is (or would be) on has under ``nbytes`` free."""
    where = existing_ancestor(path)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # cannot be told: the write itself will say
    if free < nbytes:
        raise ValueError(f"{path}: {what} need {nbytes / 1e6:.1f} MB, only {free / 1e6:.1f} MB "
                         f"free on that disk")


class _Target:
    def __init__(self, target: Path, staging: Path, kind: str, overwrite: bool):
        self.target, self.staging, self.kind, self.overwrite = target, staging, kind, overwrite


class Staging:
    """All-or-nothing outputs.

    ``stage(target)`` checks that ``target`` can be written (before any computation: its nearest
    existing ancestor is a folder, a temporary folder can be created there) and returns an empty
    temporary folder; write everything meant for ``target`` into it, then ``commit()`` moves it
    all into place. If anything fails before or during the commit — or the ``with`` block is left
    without a commit — everything staged is removed, every move undone, and the targets are as
    they were.

    Three kinds of target:

    * a missing folder: the staging folder (a hidden sibling) is renamed to it;
    * an existing folder, merged (default): each staged file is moved to the same relative path;
      an existing file of that name is replaced only with ``overwrite``, nothing else in the
      folder is touched;
    * an existing folder replaced as a whole (``replace=check``): only with ``overwrite`` (or
      if it is empty), and only if ``check(folder)`` returns None — a string is the reason to
      refuse (e.g. "not an s5jax model directory"), so nothing the user owns is deleted.

    A target inside a missing target staged before it is staged inside that one's folder.
    Errors while the ``with`` block runs are re-raised with staging paths shown as the target
    paths; ``OSError`` (a full disk, permissions) becomes ``ValueError`` naming the target.
    """

    def __init__(self):
        self._targets: list[_Target] = []
        self._created: list[Path] = []  # missing ancestors created by stage(), outermost first
        self._committed = False

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        msg = None
        if isinstance(exc, ValueError):
            msg = self.shown(str(exc))
        elif isinstance(exc, OSError):
            msg = self.shown(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        if not self._committed:
            self.discard()
        if msg is not None:
            raise ValueError(msg) from exc

    # -- staging --

    def _nested(self, target: Path) -> Path | None:
        for t in self._targets:
            if t.kind == "new" and target.is_relative_to(t.target):
                return t.staging / target.relative_to(t.target)
        return None

    def stage(self, target: str | os.PathLike, *, overwrite: bool = False,
              replace: Callable[[Path], str | None] | None = None) -> Path:
        """A temporary folder whose contents become ``target`` (see the class docstring)."""
        target = Path(target).absolute()
        nested = self._nested(target)
        if nested is not None:
            nested.mkdir(parents=True, exist_ok=True)
            return nested
        if target.exists() and not target.is_dir():
            raise ValueError(f"{target}: exists and is not a folder")
        anc = existing_ancestor(target)
        if not anc.is_dir():
            raise ValueError(f"{target}: cannot create a folder there ({anc} is a file)")
        if target.is_dir():
            kind = "merge" if replace is None else "replace"
            if kind == "replace" and any(target.iterdir()):
                if not overwrite:
                    raise ValueError(f"{target}: exists and is not empty (pass --overwrite)")
                reason = replace(target)
                if reason is not None:
                    raise ValueError(f"{target}: {reason}; refusing to replace it")
        else:
            kind = "new"
        try:
            for p in reversed(target.parents):
                if not p.exists():
                    p.mkdir(mode=DIR_MODE)
                    self._created.append(p)
            where = target if kind == "merge" else target.parent
            staging = make_temp_dir(where, "s5jax-staging" if kind == "merge" else target.name)
        except OSError as e:
            raise ValueError(f"{target}: cannot write there ({e.strerror or e})") from None
        self._targets.append(_Target(target, staging, kind, overwrite))
        return staging

    def require_absent(self, target: str | os.PathLike, names: Iterable[str],
                       overwrite: bool) -> None:
        """``ValueError`` listing the ``names`` (relative to ``target``) that already exist,
        unless ``overwrite``; call it early for outputs whose names are known up front."""
        target = Path(target)
        found = [target / n for n in names if (target / n).exists()]
        bad = [p for p in found if p.is_dir()]
        if bad:
            raise ValueError(f"{bad[0]}: a folder is in the way of an output file")
        if found and not overwrite:
            shown = ", ".join(str(p) for p in found[:3]) + (" …" if len(found) > 3 else "")
            raise ValueError(f"{len(found)} output(s) already exist: {shown} (pass --overwrite)")

    def shown(self, text: str) -> str:
        """``text`` with staging paths replaced by the paths they stand for."""
        for t in self._targets:
            text = text.replace(str(t.staging), str(t.target))
        return text

    # -- commit / discard --

    def _merge_moves(self, t: _Target) -> list[tuple[Path, Path]]:
        moves = []
        for src in sorted(t.staging.rglob("*")):
            if src.is_dir():
                continue
            dst = t.target / src.relative_to(t.staging)
            if dst.is_dir():
                raise ValueError(f"{dst}: a folder is in the way of an output file")
            if dst.exists() and not t.overwrite:
                raise ValueError(f"{dst}: already exists (pass --overwrite)")
            moves.append((src, dst))
        return moves

    def commit(self) -> None:
        """Move everything staged into place; all or nothing."""
        plans = []
        for t in self._targets:  # every check before the first move
            if t.kind == "new" and t.target.exists():
                raise ValueError(f"{t.target}: appeared while this run was writing; nothing "
                                 "was written")
            plans.append(self._merge_moves(t) if t.kind == "merge" else None)
        undo: list[Callable[[], None]] = []
        later: list[Path] = []  # replaced originals, deleted once everything is in place
        try:
            for t, moves in zip(self._targets, plans, strict=True):
                if t.kind == "new":
                    os.rename(t.staging, t.target)
                    undo.append(lambda t=t: os.rename(t.target, t.staging))
                elif t.kind == "replace":
                    old = make_temp_dir(t.target.parent, f"{t.target.name}.old")
                    os.rename(t.target, old / "x")
                    undo.append(lambda t=t, old=old: os.rename(old / "x", t.target))
                    os.rename(t.staging, t.target)
                    undo.append(lambda t=t: os.rename(t.target, t.staging))
                    later.append(old)
                else:
                    backup = make_temp_dir(t.target, "s5jax-replaced")
                    later.append(backup)
                    for src, dst in moves:
                        for d in reversed(dst.relative_to(t.target).parents[:-1]):
                            if not (t.target / d).exists():
                                (t.target / d).mkdir(mode=DIR_MODE)
                                undo.append(lambda p=t.target / d: p.rmdir())
                        if dst.exists():
                            keep = backup / dst.relative_to(t.target)
                            keep.parent.mkdir(parents=True, exist_ok=True)
                            os.rename(dst, keep)
                            undo.append(lambda a=keep, b=dst: os.rename(a, b))
                        os.rename(src, dst)
                        undo.append(lambda a=dst, b=src: os.rename(a, b))
        except OSError as e:
            for fn in reversed(undo):
                with contextlib.suppress(OSError):
                    fn()
            for p in later:
                shutil.rmtree(p, ignore_errors=True)
            raise ValueError(f"{e.filename}: could not move the outputs into place "
                             f"({e.strerror}); nothing was written") from None
        self._committed = True
        for p in later:
            shutil.rmtree(p, ignore_errors=True)
        for t in self._targets:
            if t.kind == "merge":
                shutil.rmtree(t.staging, ignore_errors=True)

    def discard(self) -> None:
        """Remove everything staged and the folders ``stage`` created."""
        for t in self._targets:
            shutil.rmtree(t.staging, ignore_errors=True)
        for p in reversed(self._created):
            with contextlib.suppress(OSError):
                p.rmdir()  # only if still empty
        self._targets, self._created = [], []
