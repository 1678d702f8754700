"""Lesson 01 plots return a Figure, draw what they are given and refuse inconsistent input clearly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib import (  # noqa: E402
    FEATURE_DESCRIPTIONS,
    chronological_split,
    compute_features,
    make_synthetic_market,
    plot_features,
    plot_lookahead_demo,
    plot_motif_examples,
    plot_prices_with_regimes,
    plot_windows_and_splits,
)
from course_lib.plots.data import _spells  # noqa: E402


@pytest.fixture(scope="module")
def market():
    return make_synthetic_market(800, seed=3)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_spells_cover_every_bar_in_order():
    labels = pd.Series(list("aabbbac"), index=pd.bdate_range("2020-01-01", periods=7))
    spells = _spells(labels)
    assert [s[2] for s in spells] == ["a", "b", "a", "c"]
    assert spells[0][0] == labels.index[0] and spells[-1][1] == labels.index[-1]


def test_prices_with_regimes_and_motifs(market):
    fig = plot_prices_with_regimes(market.ohlcv, market.regimes, market.motifs)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    n_spells = len(_spells(market.regimes))
    assert len(ax.patches) == n_spells, "one shaded span per regime spell"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "motif end" in labels and set(market.regimes.unique()) <= set(labels)
    assert plot_prices_with_regimes(market.ohlcv["close"], log_scale=False).axes[0].get_yscale() == "linear"


def test_features_panels(market):
    feats = compute_features(market.ohlcv)
    fig = plot_features(feats, columns=["volatility", "rsi"], descriptions=FEATURE_DESCRIPTIONS)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title(loc="left").startswith("volatility: rolling std")
    with pytest.raises(KeyError, match="not in the features"):
        plot_features(feats, columns=["nope"])


def test_windows_and_splits_layout():
    split = chronological_split(300, gap=20)
    fig = plot_windows_and_splits(split, seq_len=16, horizon=3)
    assert len(fig.axes) == 2
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "purge gap: 20 samples" in legend and "train: 210" in legend
    assert ">=" in fig.axes[1].get_title(loc="left")
    small = plot_windows_and_splits(chronological_split(300, gap=2), seq_len=16, horizon=3)
    assert "too small" in small.axes[1].get_title(loc="left")
    with pytest.raises(ValueError, match="end_time"):
        plot_windows_and_splits(split, 16, 3, end_time=pd.bdate_range("2020-01-01", periods=10))


def test_motif_examples(market):
    fig = plot_motif_examples(market, n_examples=3)
    assert len(fig.axes) == len(market.motif_names)
    counts = market.motifs["motif_id"].value_counts()
    for k, ax in enumerate(fig.axes):  # examples + average + the motif-end marker
        assert len(ax.lines) == min(3, counts.get(k, 0)) + 2


def test_lookahead_demo():
    idx = pd.bdate_range("2020-01-01", periods=50)
    fig = plot_lookahead_demo({"a": pd.Series(0.01, index=idx), "b": pd.Series(-0.01, index=idx)})
    lines = [ln for ln in fig.axes[0].lines if ln.get_label() in ("a", "b")]
    assert lines[0].get_ydata()[-1] == pytest.approx(0.5)


def _tick_texts(ax, axis="y"):
    ax.figure.canvas.draw()
    target = getattr(ax, f"{axis}axis")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    ticks = target.get_majorticklabels() + target.get_minorticklabels()
    return [t.get_text() for t in ticks if t.get_text() and lo <= t.get_position()[1 if axis == "y" else 0] <= hi]


@pytest.mark.parametrize("low, high", [(700.0, 1600.0), (0.6, 2.5), (90.0, 60_000.0)])
def test_log_price_axes_read_as_plain_numbers(low, high):
    """A log axis over a price that moves within a decade is labelled 800, 1,000, 1,500, not 8x10^2."""
    import course_lib as cl

    idx = pd.bdate_range("2020-01-01", periods=300)
    close = pd.Series(np.geomspace(low, high, 300), index=idx)
    fig = cl.plot_prices_with_regimes(close)
    labels = _tick_texts(fig.axes[0])
    plt.close(fig)
    assert len(labels) >= 2, labels
    assert not [t for t in labels if "$" in t or "e+" in t or "^" in t], labels


def test_window_ticks_t_and_t_plus_one_do_not_overlap():
    import course_lib as cl

    split = chronological_split(1000, gap=64)
    fig = cl.plot_windows_and_splits(split, 64, 1)
    fig.canvas.draw()
    labels = {t.get_text(): t.get_window_extent() for t in fig.axes[0].get_xticklabels()}
    assert not labels["t"].overlaps(labels["t+1"])
    plt.close(fig)


def test_one_colour_one_meaning_across_regime_labels():
    from course_lib.plots.regimes import REGIME_GROUP_COLORS

    by_colour = {}
    for name, colour in REGIME_GROUP_COLORS.items():
        by_colour.setdefault(colour, []).append(name)
    # "calm" may share the bull regime's green (both mean: the good times); red must mean bear only
    assert by_colour[REGIME_GROUP_COLORS["bear"]] == ["bear"], by_colour


def test_a_narrow_log_axis_gets_several_round_labels():
    import course_lib as cl

    idx = pd.bdate_range("2020-01-01", periods=200)
    ax = cl.plot_growth_curves({"a": pd.Series(np.linspace(0.8, 1.2, 200), index=idx)})
    labels = _tick_texts(ax)
    plt.close(ax.figure)
    assert len(labels) >= 3 and "1.1" in labels, labels


def test_price_legend_sits_beside_the_price():
    import course_lib as cl

    m = make_synthetic_market(600, seed=0)
    fig = cl.plot_prices_with_regimes(m.ohlcv["close"], regimes=m.regimes, motifs=m.motifs)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert not ax.get_window_extent().overlaps(ax.get_legend().get_window_extent())
    plt.close(fig)
