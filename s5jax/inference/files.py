"""Estimate files: ``<soundscape>_<Label>.wav`` (repeats ``_2``, ``_3``, …), as separate and
evaluate write them and evaluate ``--estimates`` reads them (matched prefix-free, like the
references of ``s5jax.data.testset``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax.data.testset import parse_reference_name
from s5jax.labels import CLASSES, EMPTY, class_index


def output_names(name: str, labels: Sequence[int | str]) -> list[str]:
    """``<name>_<Label>.wav`` per non-empty label, in order; repeats get ``_2``, ``_3``, …"""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if isinstance(lab, (int, np.integer)) and int(lab) == EMPTY:
            continue
        c = CLASSES[class_index(lab)]
        seen[c] = seen.get(c, 0) + 1
        out.append(f"{name}_{c}.wav" if seen[c] == 1 else f"{name}_{c}_{seen[c]}.wav")
    return out


def read_estimates(est_dir: Path, names: Sequence[str]) -> dict[str, list[tuple[str, Path]]]:
    """``<name>_<Label>[_k].wav`` files in ``est_dir`` grouped by soundscape (prefix-free)."""
    found: dict[str, list[tuple[str, Path]]] = {n: [] for n in names}
    for p in sorted(est_dir.iterdir()):
        if p.suffix != ".wav" or p.name.startswith("."):
            continue
        name, label = parse_reference_name(p.name)
        if name not in found:
            raise ValueError(f"{p}: no soundscape named {name!r} in the test set")
        found[name].append((label, p))
    return found


def check_submission(out_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """Every soundscape in ``names`` has at least one ``<name>_<Label>.wav`` in ``out_dir``."""
    have = set()
    for p in Path(out_dir).iterdir():
        if p.suffix == ".wav" and not p.name.startswith("."):
            try:
                have.add(parse_reference_name(p.name)[0])
            except ValueError:
                continue
    missing = [n for n in names if n not in have]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise ValueError(f"{out_dir}: no estimate for {len(missing)} soundscape(s): {shown} "
                         "(the challenge expects at least one per soundscape)")
