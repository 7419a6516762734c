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
    ± one sample standard deviation over the seeds (legend: ``variant (n=seeds)``).

    ``data[variant][seed]`` is a list of records ``{"step": int, <metric>: float, …}`` (e.g.
    ``s5jax.training.logging.read_jsonl(workdir)``); records without the metric, or with a
    non-finite value, are skipped. The line joins the steps that every seed logging the metric
    logged; a point fewer seeds logged (a run's last step, cut by a time budget at a step of its
    own) is drawn as an unjoined marker, so that one seed's point does not pass for the mean.
    ``lines[metric] = (value, label)`` draws a dashed horizontal reference line (e.g. the
    scaled-mixture floor) in that metric's panel.
    """
    fig = Figure(figsize=(4.5 * len(metrics), 3.5), layout="constrained")
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for variant, runs in data.items():
            at: dict[int, list[float]] = {}
            logging_runs = 0  # runs with at least one value of the metric
            for records in runs.values():
                values = [(int(r["step"]), float(r[metric])) for r in records
                          if r.get(metric) is not None and math.isfinite(r[metric])]
                logging_runs += bool(values)
                for step, v in values:
                    at.setdefault(step, []).append(v)
            if at:
                steps = [s for s in sorted(at) if len(at[s]) == logging_runs]
                mean = np.array([np.mean(at[s]) for s in steps])
                sd = np.array([np.std(at[s], ddof=1) if len(at[s]) > 1 else 0.0 for s in steps])
                (line,) = ax.plot(steps, mean, marker="o", markersize=3,
                                  label=f"{variant} (n={len(runs)})")
                ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2,
                                linewidth=0)
                partial = [(s, v) for s in sorted(at) if len(at[s]) < logging_runs
                           for v in at[s]]
                if partial:
                    xs, ys = np.asarray(partial).T
                    ax.plot(xs, ys, linestyle="none", marker="x", markersize=5,
                            color=line.get_color())
        if lines and metric in lines:
            value, label = lines[metric]
            ax.axhline(value, color="black", linestyle="--", linewidth=0.8, label=label)
        ax.set(xlabel="step", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)
