"""Lesson 08 figures: the two growth plots keep their names apart, and the reliability diagram shows how sure
each bin is instead of implying a function."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import course_lib as cl  # noqa: E402


def test_reliability_diagram_has_intervals_and_a_neutral_axis():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.3, 0.9, 400)
    y = (rng.uniform(size=400) < p).astype(float)
    tables = {"stated": cl.reliability_table(p, y), "calibrated (isotonic)": cl.reliability_table(p * 0.9, y)}
    ax = cl.plot_reliability(tables)
    assert "stated" not in ax.get_xlabel()  # the axis holds stated AND calibrated probabilities
    assert len(ax.collections) >= 4  # per series: error bars and sized points
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("decisions" in t for t in labels), labels
    plt.close(ax.figure)


def test_growth_curves_are_not_compounded_again():
    idx = pd.bdate_range("2020-01-01", periods=50)
    curve = pd.Series(np.linspace(1.0, 2.0, 50), index=idx)
    ax = cl.plot_growth_curves({"x": curve})
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), curve.to_numpy())
    plt.close(ax.figure)
