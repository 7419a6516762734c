"""Evaluation outputs: ``results.json``, ``per_class.csv``, ``report.md`` and two charts,
``per_class.png`` (CA-SDRi and oracle-label SDRi per class) and ``fp_fn.png`` (TP/FP/FN per
class). Every file is written to a temporary name in the target folder and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax.atomic import write_atomic
from s5jax.inference.editions import DCASE2025, edition
from s5jax.labels import CLASSES
from s5jax.plots import bar_chart

RESULTS_JSON = "results.json"
PER_CLASS_CSV = "per_class.csv"
PER_MIXTURE_CSV = "per_mixture.csv"
REPORT_MD = "report.md"
CHART_PNG = "per_class.png"
COUNTS_PNG = "fp_fn.png"

PER_CLASS_FIELDS = (
    "class", "index", "n_references", "tp", "fp", "fn", "precision", "recall", "f1",
    "sdri_tp", "si_sdri_tp", "ca_sdri", "oracle_sdri",
)


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


_SUMMARY_ROWS = (
    ("task", "challenge edition", "{}"),
    ("ca_sdri", "CA-SDRi (dB)", "{:.3f}"),
    ("ca_si_sdri", "CA-SI-SDRi (dB)", "{:.3f}"),
    ("capi_sdri", "CAPI-SDRi (dB)", "{:.3f}"),
    ("capi_si_sdri", "CAPI-SI-SDRi (dB)", "{:.3f}"),
    ("floor_ca_sdri", "scaled-mixture floor CA-SDRi (dB)", "{:.3f}"),
    ("floor_ca_si_sdri", "scaled-mixture floor CA-SI-SDRi (dB)", "{:.3f}"),
    ("floor_capi_sdri", "scaled-mixture floor CAPI-SDRi (dB)", "{:.3f}"),
    ("floor_capi_si_sdri", "scaled-mixture floor CAPI-SI-SDRi (dB)", "{:.3f}"),
    ("label_accuracy", "label accuracy (%)", "{:.2f}"),
    ("mixture_accuracy", "mixture accuracy (%)", "{:.2f}"),
    ("source_accuracy", "source accuracy (%)", "{:.2f}"),
    ("oracle_sdri", "SDRi with oracle labels (dB)", "{:.3f}"),
    ("oracle_si_sdri", "SI-SDRi with oracle labels (dB)", "{:.3f}"),
    ("tp", "true positives", "{}"),
    ("fp", "false positives", "{}"),
    ("fn", "false negatives", "{}"),
    ("n_mixtures", "mixtures", "{}"),
    ("n_references", "reference sources", "{}"),
    ("n_without_references", "mixtures without references", "{}"),
    ("n_empty_mixtures", "mixtures not scored (nothing estimated, nothing to find)", "{}"),
)


def _fmt(v, f: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f.format(v)


def render_markdown(results: dict, per_class: Sequence[dict]) -> str:
    lines = ["# S5 evaluation report", ""]
    meta = results.get("setup", {})
    for k, v in meta.items():
        lines.append(f"- {k}: `{v}`")
    lines += ["", "| metric | value |", "|---|---|"]
    for key, name, f in _SUMMARY_ROWS:
        if key in results:
            lines.append(f"| {name} | {_fmt(results[key], f)} |")
    lines += [
        "",
        "CA-SDRi / CA-SI-SDRi: per mixture, the mean over TP ∪ FP ∪ FN of the (SI-)SNR "
        "improvement over mixture channel 0 for a true positive and 0 for a false positive or "
        "negative; averaged over mixtures (DCASE 2026 CAPI-SDRi: the same, a repeated class "
        "paired by the best mean SDR; a mixture with nothing estimated and nothing to find is "
        "not scored). Label (mixture) accuracy: exact label-multiset match; source accuracy: "
        "TP / (TP + FP + FN) over all sources. SDRi with "
        "oracle labels: the separator queried with the true labels, mean SNR improvement over "
        "all references (class-agnostic separation quality). Scaled-mixture floor: what a "
        "do-nothing separator scores with oracle labels, mixture channel 0 scaled by the "
        "least-squares gain of each reference put in its slot (its CA-SI-SDRi is 0 dB unless a "
        "reference is silent: its floor estimate is then silent too, and scores high); read "
        "CA-SDRi against it.",
        "",
        "## Per class",
        "",
        "| # | class | refs | TP | FP | FN | F1 | SDRi TP (dB) | SI-SDRi TP (dB) "
        "| CA-SDRi (dB) | oracle SDRi (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in per_class:
        lines.append(
            f"| {r['index']} | {r['class']} | {r['n_references']} | {r['tp']} | {r['fp']} | "
            f"{r['fn']} | {_fmt(r['f1'], '{:.3f}')} | {_fmt(r['sdri_tp'], '{:.2f}')} | "
            f"{_fmt(r['si_sdri_tp'], '{:.2f}')} | {_fmt(r['ca_sdri'], '{:.2f}')} | "
            f"{_fmt(r['oracle_sdri'], '{:.2f}')} |"
        )
    lines += ["", f"![per-class SDRi]({CHART_PNG})", "", f"![per-class TP/FP/FN]({COUNTS_PNG})",
              "", "CA-SDRi of a class: its TPs scored, its FPs and FNs as 0 dB."]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, results: dict, per_class: Sequence[dict]) -> dict:
    """Write the five report files into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["results"] = write_atomic(
        out / RESULTS_JSON, json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PER_CLASS_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in per_class:
        w.writerow({k: ("" if _json_safe(r[k]) is None else r[k]) for k in PER_CLASS_FIELDS})
    paths["per_class"] = write_atomic(out / PER_CLASS_CSV, buf.getvalue())
    names = [r["class"] for r in per_class]
    metric = edition(results.get("task", DCASE2025)).sdri_name  # CA-SDRi or CAPI-SDRi
    bar_chart(names, {metric: [r["ca_sdri"] for r in per_class],
                      "oracle SDRi": [r["oracle_sdri"] for r in per_class]}, out / CHART_PNG,
              xlabel="SDR improvement (dB)", title=f"{metric} and oracle-label SDRi per class")
    bar_chart(names, {k.upper(): [r[k] for r in per_class] for k in ("tp", "fp", "fn")},
              out / COUNTS_PNG, xlabel="count", title="TP, FP and FN per class")
    paths["chart"], paths["counts"] = out / CHART_PNG, out / COUNTS_PNG
    paths["report"] = write_atomic(out / REPORT_MD, render_markdown(results, per_class))
    return paths


def empty_per_class() -> list[dict]:
    """Per-class rows with zero counts and no values, in class-index order."""
    return [
        {"class": c, "index": i, "n_references": 0, "tp": 0, "fp": 0, "fn": 0,
         "precision": None, "recall": None, "f1": None, "sdri_tp": None, "si_sdri_tp": None,
         "ca_sdri": None, "oracle_sdri": None}
        for i, c in enumerate(CLASSES)
    ]
