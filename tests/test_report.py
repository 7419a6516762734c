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
    r2 = np.sqrt(2.0)  # ± the sample standard deviation over the two seeds: √2 and 0.1·√2
    for step, lo, hi in ((10, 2.0 - r2, 2.0 + r2), (20, 0.6 - 0.1 * r2, 0.6 + 0.1 * r2)):
        y = band[band[:, 0] == step, 1]
        assert y.min() == pytest.approx(lo) and y.max() == pytest.approx(hi)
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["baseline (n=2)", "seed (n=1)"]
    # Each seed's last point at a step of its own (a time budget) is an unjoined marker, not
    # part of the mean line.
    cut = {"a": {0: [{"step": 0, "m": 0.0}, {"step": 100, "m": 1.0}, {"step": 111, "m": 5.0}],
                 1: [{"step": 0, "m": 2.0}, {"step": 100, "m": 3.0}, {"step": 105, "m": -5.0}]}}
    (ax,) = plots.plot_learning_curves(cut, ["m"], tmp_path / "cut.png").axes
    mean_line, markers = ax.lines
    np.testing.assert_allclose(mean_line.get_xydata(), [[0, 1.0], [100, 2.0]])
    np.testing.assert_allclose(markers.get_xydata(), [[105, -5.0], [111, 5.0]])
    assert markers.get_linestyle() == "None" and markers.get_color() == mean_line.get_color()
    assert len(snr.lines) == 1 and snr.get_xlabel() == "step" and snr.get_ylabel() == "snr"
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG"


def test_csv_cells_never_read_minus_zero():
    """A tiny negative improvement rounds to 0.000000 in per_mixture.csv, not -0.000000."""
    from s5jax.inference.evaluation import _num

    assert [_num(v) for v in (-1e-9, -0.0, -2.5e-7, 1.2345674, -1.5, None, float("nan"))] == [
        "0.000000", "0.000000", "0.000000", "1.234567", "-1.500000", "", ""]
