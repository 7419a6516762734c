"""Evaluation outputs: ``results.json``, ``per_class.csv``, ``report.md`` and a bar chart PNG.

Every file is written to a temporary name in the target folder and renamed into place. The PNG is
drawn with numpy and encoded with zlib (no plotting library needed): one horizontal bar pair per
class, labelled with the class index (the legend is the table in ``report.md``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax.atomic import write_atomic
from s5jax.labels import CLASSES

RESULTS_JSON = "results.json"
PER_CLASS_CSV = "per_class.csv"
REPORT_MD = "report.md"
CHART_PNG = "per_class.png"

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


# ---------------------------------------------------------------------------------------------
# PNG


def encode_png(rgb: np.ndarray) -> bytes:
    """``uint8 (height, width, 3)`` → PNG bytes (8-bit RGB, no filtering)."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(
            ">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# 3×5 digit glyphs, rows top to bottom, 3 bits per row (MSB = left column).
_DIGITS = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), "-": (0, 0, 7, 0, 0),
}


def _text(img: np.ndarray, x: int, y: int, s: str, scale: int = 2, color=(0, 0, 0)) -> None:
    for ch in s:
        rows = _DIGITS.get(ch)
        if rows is not None:
            for r, bits in enumerate(rows):
                for c in range(3):
                    if bits >> (2 - c) & 1:
                        img[y + r * scale: y + (r + 1) * scale,
                            x + c * scale: x + (c + 1) * scale] = color
        x += 4 * scale


def bar_chart(series: Sequence[Sequence[float]], colors: Sequence[tuple[int, int, int]], *,
              bar_h: int = 8, width: int = 480) -> np.ndarray:
    """Horizontal grouped bars: ``series[s][i]`` is the bar of series ``s`` for row ``i``.

    Rows are labelled with their index; a vertical line marks zero and dotted lines every
    5 units (dB), labelled at the bottom. Non-finite values draw no bar.
    """
    vals = np.asarray(series, np.float64)
    n_series, n_rows = vals.shape
    finite = vals[np.isfinite(vals)]
    lo = min(0.0, float(finite.min()) if finite.size else 0.0)
    hi = max(0.0, float(finite.max()) if finite.size else 0.0)
    lo, hi = 5 * math.floor(lo / 5), 5 * math.ceil(hi / 5)
    if hi == lo:
        hi = lo + 5
    left, right, top = 30, 10, 6
    row_h = n_series * bar_h + 6
    height = top + n_rows * row_h + 20  # room for the dB tick labels at the bottom
    img = np.full((height, width, 3), 255, np.uint8)
    span = width - left - right

    def px(v: float) -> int:
        return left + int(round((v - lo) / (hi - lo) * span))

    axis_end = height - 16
    for g in range(int(lo), int(hi) + 1, 5):
        img[top:axis_end:3, px(g)] = (190, 190, 190)
        label = str(g)
        x = min(max(px(g) - 4 * len(label) + 1, 0), width - 8 * len(label))
        _text(img, x, axis_end + 3, label)
    for i in range(n_rows):
        y0 = top + i * row_h
        _text(img, 2, y0 + (row_h - 10) // 2, str(i))
        for s in range(n_series):
            v = vals[s, i]
            if not np.isfinite(v):
                continue
            a, b = sorted((px(0.0), px(v)))
            img[y0 + s * bar_h: y0 + (s + 1) * bar_h - 1, a:b + 1] = colors[s]
    img[top - 2:axis_end, px(0.0)] = (0, 0, 0)
    return img


# ---------------------------------------------------------------------------------------------
# Report files


_SUMMARY_ROWS = (
    ("ca_sdri", "CA-SDRi (dB)", "{:.3f}"),
    ("ca_si_sdri", "CA-SI-SDRi (dB)", "{:.3f}"),
    ("label_accuracy", "label accuracy (%)", "{:.2f}"),
    ("oracle_sdri", "SDRi with oracle labels (dB)", "{:.3f}"),
    ("oracle_si_sdri", "SI-SDRi with oracle labels (dB)", "{:.3f}"),
    ("tp", "true positives", "{}"),
    ("fp", "false positives", "{}"),
    ("fn", "false negatives", "{}"),
    ("n_mixtures", "mixtures", "{}"),
    ("n_references", "reference sources", "{}"),
)


def _fmt(v, f: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f.format(v)


def render_markdown(results: dict, per_class: Sequence[dict], chart: str | None) -> str:
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
        "negative; averaged over mixtures. Label accuracy: exact label-set match. SDRi with "
        "oracle labels: the separator queried with the true labels, mean SNR improvement over "
        "all references (class-agnostic separation quality).",
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
    if chart:
        lines += [
            "",
            f"![per-class SDRi]({chart})",
            "",
            "Bars per class index (table above): blue = CA-SDRi of the class (its TPs scored, "
            "its FPs/FNs as 0), orange = SDRi with oracle labels. Dotted lines every 5 dB; the "
            "solid line is 0 dB.",
        ]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, results: dict, per_class: Sequence[dict]) -> dict:
    """Write the four report files into ``out_dir`` (created if needed); returns their paths."""
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
    img = bar_chart(
        [[r["ca_sdri"] for r in per_class], [r["oracle_sdri"] for r in per_class]],
        [(31, 119, 180), (255, 127, 14)],
    )
    paths["chart"] = write_atomic(out / CHART_PNG, encode_png(img))
    paths["report"] = write_atomic(out / REPORT_MD, render_markdown(results, per_class, CHART_PNG))
    return paths


def empty_per_class() -> list[dict]:
    """Per-class rows with zero counts and no values, in class-index order."""
    return [
        {"class": c, "index": i, "n_references": 0, "tp": 0, "fp": 0, "fn": 0,
         "precision": None, "recall": None, "f1": None, "sdri_tp": None, "si_sdri_tp": None,
         "ca_sdri": None, "oracle_sdri": None}
        for i, c in enumerate(CLASSES)
    ]
