"""Evaluation report files and charts (matplotlib): class names on the axis, dB axis, legends;
learning curves: mean ± standard deviation over seeds."""

import json

import numpy as np
import pytest
from PIL import Image

from s5jax import plots
from s5jax.inference import report
from s5jax.labels import CLASSES


def _rows():
    rows = report.empty_per_class()
    for i, r in enumerate(rows):
        r.update(tp=i, fp=i % 3, fn=1, ca_sdri=float(i) - 4.0, oracle_sdri=float(i))
    rows[2]["ca_sdri"] = None  # a class without a value draws no bar
    return rows


def test_write_report_files_and_charts(tmp_path, monkeypatch):
    figs = []

    def spy(*args, **kwargs):
        figs.append(real(*args, **kwargs))
        return figs[-1]

    real = report.bar_chart
    monkeypatch.setattr(report, "bar_chart", spy)
    rows = _rows()
    paths = report.write_report(tmp_path, {"ca_sdri": 1.5, "setup": {"data": "x"}}, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["results.json", "per_class.csv", "report.md", "per_class.png", "fp_fn.png"])
    assert json.loads(paths["results"].read_text())["ca_sdri"] == 1.5
    md = paths["report"].read_text()
    assert all(f"| {c} |" in md for c in CLASSES) and "per_class.png" in md and "fp_fn.png" in md
    sdri, counts = figs
    for fig, legend in ((sdri, ["CA-SDRi", "oracle SDRi"]), (counts, ["TP", "FP", "FN"])):
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASSES)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == legend
    assert "dB" in sdri.axes[0].get_xlabel()
    bars = sdri.axes[0].containers
    np.testing.assert_allclose([b.get_width() for b in bars[0]],
                               [0.0 if r["ca_sdri"] is None else r["ca_sdri"] for r in rows])
    np.testing.assert_allclose([b.get_width() for b in counts.axes[0].containers[1]],
                               [r["fp"] for r in rows])
    with Image.open(paths["chart"]) as im:
        assert im.format == "PNG" and im.width >= 600 and im.height >= 600
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not blank


def test_learning_curves_mean_and_spread(tmp_path):
    data = {
        "baseline": {0: [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5}],
                     1: [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 0.7, "snr": 2.0}]},
        "seed": {0: [{"step": 10, "loss": 2.0}, {"step": 20, "loss": float("nan")}]},
    }
    fig = plots.plot_learning_curves(data, ["loss", "snr"], tmp_path / "curves.png")
    loss, snr = fig.axes
    base, seed = loss.lines
    np.testing.assert_allclose(base.get_xydata(), [[10, 2.0], [20, 0.6]])
    np.testing.assert_allclose(seed.get_xydata(), [[10, 2.0]])  # the NaN record is skipped
    band = loss.collections[0].get_paths()[0].vertices
    for step, lo, hi in ((10, 1.0, 3.0), (20, 0.5, 0.7)):  # ± the standard deviation (1, 0.1)
        y = band[band[:, 0] == step, 1]
        assert y.min() == pytest.approx(lo) and y.max() == pytest.approx(hi)
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["baseline (n=2)", "seed (n=1)"]
    assert len(snr.lines) == 1 and snr.get_xlabel() == "step" and snr.get_ylabel() == "snr"
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG"
