"""Charts as PNG files: matplotlib's Agg canvas (no pyplot, so no global backend state and no
display needed), written atomically."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from s5jax.atomic import write_atomic


def _save(fig: Figure, path: str | os.PathLike) -> Figure:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(Path(path), buf.getvalue())
    return fig


def bar_chart(categories: Sequence[str], series: Mapping[str, Sequence[float | None]],
              path: str | os.PathLike, *, xlabel: str, title: str) -> Figure:
    """Horizontal grouped bars: one group per category (top to bottom), one bar per series (its
    key is the legend entry). ``None`` or non-finite values draw no bar."""
    fig = Figure(figsize=(7, 1.5 + 0.3 * len(categories) * max(1, len(series)) ** 0.5),
                 layout="constrained")
    ax = fig.add_subplot()
    y, h = np.arange(len(categories)), 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        v = np.array([np.nan if x is None else float(x) for x in values])
        ax.barh(y - 0.4 + (k + 0.5) * h, np.where(np.isfinite(v), v, 0.0), h, label=name)
    ax.set_yticks(y, list(categories))
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(xlabel)
    fig.suptitle(title)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(series), frameon=False)
    return _save(fig, path)


def plot_learning_curves(data: Mapping[str, Mapping[Any, Sequence[Mapping[str, Any]]]],
                         metrics: Sequence[str], path: str | os.PathLike, *,
                         lines: Mapping[str, tuple[float, str]] | None = None) -> Figure:
    """One panel per metric: per variant, the mean over seeds against ``step`` with a band of
    ± one standard deviation over the seeds logged at that step (legend: ``variant (n=seeds)``).

    ``data[variant][seed]`` is a list of records ``{"step": int, <metric>: float, …}`` (e.g.
    ``s5jax.training.logging.read_jsonl(workdir)``); records without the metric, or with a
    non-finite value, are skipped. ``lines[metric] = (value, label)`` draws a dashed horizontal
    reference line (e.g. the scaled-mixture floor) in that metric's panel.
    """
    fig = Figure(figsize=(4.5 * len(metrics), 3.5), layout="constrained")
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for variant, runs in data.items():
            at: dict[int, list[float]] = {}
            for records in runs.values():
                for r in records:
                    v = r.get(metric)
                    if v is not None and math.isfinite(v):
                        at.setdefault(int(r["step"]), []).append(float(v))
            if at:
                steps = sorted(at)
                mean = np.array([np.mean(at[s]) for s in steps])
                sd = np.array([np.std(at[s]) for s in steps])
                (line,) = ax.plot(steps, mean, marker="o", markersize=3,
                                  label=f"{variant} (n={len(runs)})")
                ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2,
                                linewidth=0)
        if lines and metric in lines:
            value, label = lines[metric]
            ax.axhline(value, color="black", linestyle="--", linewidth=0.8, label=label)
        ax.set(xlabel="step", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)
