"""Plots for lesson 08 (agent memory): decay per tier, cleanup, retrieval quality, regret, weights, calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .axes import plain_log_scale

__all__ = [
    "plot_cleanup",
    "plot_composer_weights",
    "plot_decay_by_tier",
    "plot_growth_curves",
    "plot_regret_curves",
    "plot_reliability",
    "plot_retrieval_quality",
]


def _ax(ax, figsize=(8, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_decay_by_tier(half_lives: Mapping[str, object], days: int = 400, importance: float = 1.0, ax=None):
    """Strength ``importance * 0.5 ** (age / half_life)`` over an item's age, one line per tier."""
    ax = _ax(ax)
    age = np.linspace(0, days, 400)
    for tier, h in half_lives.items():
        hl = pd.Timedelta(h) / pd.Timedelta("1D")
        ax.plot(age, importance * 0.5 ** (age / hl), label=f"{tier} (half-life {hl:g} days)")
    ax.set(xlabel="age (days)", ylabel="strength = importance x recency", title="Decay per memory tier")
    ax.axhline(0.5 * importance, color="grey", lw=0.6, ls=":")
    ax.legend()
    return ax


def plot_cleanup(kept: pd.DataFrame, removed: pd.DataFrame, ax=None):
    """Items per kind that cleanup kept and removed (stacked bars)."""
    ax = _ax(ax, (7, 3.5))
    kinds = sorted(set(kept["kind"]) | set(removed["kind"]))
    k = kept["kind"].value_counts().reindex(kinds, fill_value=0)
    r = removed["kind"].value_counts().reindex(kinds, fill_value=0)
    ax.bar(kinds, k, label="kept")
    ax.bar(kinds, r, bottom=k, label="removed", color="tab:red", alpha=0.7)
    ax.set(ylabel="items", title="What cleanup kept and removed, per kind")
    ax.legend()
    return ax


def plot_retrieval_quality(table: pd.DataFrame, metrics: Sequence[str] = ("precision", "ndcg"), axes=None):
    """Mean precision@k and nDCG@k per weight setting, with the bootstrap interval of the gain over the
    baseline drawn around each bar."""
    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        base = table[m] - table[f"{m}_gain"]
        lo = base + table[f"{m}_gain_low"]
        hi = base + table[f"{m}_gain_high"]
        ax.bar(table.index, table[m], color="tab:blue", alpha=0.8)
        ax.errorbar(table.index, table[m], yerr=[table[m] - lo, hi - table[m]], fmt="none", color="black",
                    capsize=4)
        ax.set(ylim=(0, 1.05), ylabel=m, title=f"{m}@k (bars: 95% interval of the gain, paired)")
        ax.tick_params(axis="x", rotation=20)
    return axes


def plot_regret_curves(regret: Mapping[str, np.ndarray], switch_at: Sequence[int] = (), ax=None):
    """Mean cumulative regret per composer with a 10-90% band over runs; dotted lines mark skill switches."""
    ax = _ax(ax)
    for name, r in regret.items():
        steps = np.arange(r.shape[1])
        ax.plot(steps, r.mean(axis=0), label=name)
        ax.fill_between(steps, np.quantile(r, 0.1, axis=0), np.quantile(r, 0.9, axis=0), alpha=0.15)
    for s in switch_at:
        ax.axvline(s, color="grey", ls=":", lw=1)
    ax.set(xlabel="step", ylabel="cumulative regret", title="Regret when the best agent changes (dotted)")
    ax.legend()
    return ax


def plot_composer_weights(weights: pd.DataFrame, ax=None, title: str = "Composer weights over time"):
    """Stacked weights of each agent over time (smoothed over 20 bars so the picture is readable)."""
    ax = _ax(ax, (9, 3.5))
    smooth = weights.rolling(20, min_periods=1).mean()
    ax.stackplot(smooth.index, smooth.T.to_numpy(), labels=smooth.columns, alpha=0.85)
    ax.set(ylim=(0, 1), ylabel="weight", title=title)
    ax.legend(loc="upper left", fontsize=8, ncol=len(weights.columns))
    return ax


def plot_reliability(tables: Mapping[str, pd.DataFrame], ax=None):
    """Reliability diagram: the observed win rate in each probability bin against the bin's mean forecast
    probability, one series per table (e.g. the stated confidences and their calibrated version).

    Each point carries its 95% Wilson interval (the bin holds ``n`` decisions) and a size that grows with ``n``:
    a bin of twelve decisions can sit far from the diagonal by chance, which is why an honest curve is not
    monotone even when the probabilities behind it are. The diagonal is perfect calibration.
    """
    from statsmodels.stats.proportion import proportion_confint

    ax = _ax(ax, (5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    largest = max((int(t["n"].max()) for t in tables.values() if len(t)), default=1)
    for k, (name, t) in enumerate(tables.items()):
        n = t["n"].to_numpy()
        wins = np.round(t["win_rate"].to_numpy() * n)
        lo, hi = proportion_confint(wins, n, alpha=0.05, method="wilson")
        x = t["mean_confidence"].to_numpy() + (k - (len(tables) - 1) / 2) * 0.006  # side by side, not on top
        y = t["win_rate"].to_numpy()
        ax.errorbar(x, y, yerr=[np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)], fmt="none", color=f"C{k}", alpha=0.6, lw=1)
        ax.scatter(x, y, s=15 + 120 * n / largest, color=f"C{k}", zorder=3, label=f"{name} ({int(n.sum())} decisions)")
        ax.plot(x, y, color=f"C{k}", lw=0.6, alpha=0.5)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="forecast probability of a win (bin mean)", ylabel="observed win rate",
           title="Reliability diagram (bars: 95% interval; size: decisions per bin)")
    ax.legend(loc="upper left", fontsize=8, markerscale=0.5)
    return ax


def plot_growth_curves(curves: Mapping[str, pd.Series], ax=None, title: str = "Growth of 1 after costs"):
    """Curves that already are growth of 1 (e.g. from :func:`course_lib.compare_composers`), log scale.

    Takes the *curves*, not bar returns; for bar returns use :func:`course_lib.plot_equity_curves`, which
    compounds them first.
    """
    ax = _ax(ax, (9, 4))
    for name, c in curves.items():
        ax.plot(c.index, c.to_numpy(), label=name, lw=1.5 if name == "buy_and_hold" else 1.0)
    plain_log_scale(ax)
    ax.set(ylabel="growth of 1", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # off the curves
    return ax
