"""Plots for lesson 07: price with true and detected regimes as colour strips, probability ribbons, the
confusion matrix, and the detector grid with seed intervals. Every function returns the ``Figure``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .axes import plain_log_scale
from .data import REGIME_COLORS

__all__ = [
    "REGIME_GROUP_COLORS",
    "plot_confusion",
    "plot_detector_grid",
    "plot_regime_probabilities",
    "plot_regime_strips",
]

#: Colours of grouped and real-data labels (fine synthetic regimes use ``REGIME_COLORS``).
#: "stressed" is brown, not the bear regime's red: one colour, one meaning, wherever both kinds of label meet.
REGIME_GROUP_COLORS: dict[str, str] = {**REGIME_COLORS, "calm": "#2ca02c", "stressed": "#8c564b",
                                        "correction": "#ff7f0e"}


def _color(name) -> str:
    return REGIME_GROUP_COLORS.get(str(name), "#bbbbbb")


def _strip(ax, labels: pd.Series, name: str) -> None:
    """One row of coloured spans, one colour per label."""
    values = labels.to_numpy()
    idx = labels.index
    if len(values) == 0:
        return
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.r_[0, change]
    ends = np.r_[change, len(values) - 1]
    for s, e in zip(starts, ends):
        ax.axvspan(idx[s], idx[e], color=_color(values[s]), lw=0)
    ax.set_yticks([])
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)


def plot_regime_strips(close: pd.Series, labellings: Mapping[str, pd.Series],
                       episodes: Sequence[tuple[str, str, str]] | None = None, title: str | None = None,
                       log_scale: bool = True, figsize=(12, None)) -> Figure:
    """Price on top, then one colour strip per labelling (true regimes, each detector) on the same bars.

    ``episodes``: (start, end, name) spans shaded on the price panel, e.g. :data:`course_lib.SP500_EPISODES`.
    """
    n = len(labellings)
    height = figsize[1] or 3.0 + 0.45 * n
    fig, axes = plt.subplots(n + 1, 1, figsize=(figsize[0], height), sharex=True,
                             gridspec_kw={"height_ratios": [6] + [1] * n, "hspace": 0.08})
    axes = np.atleast_1d(axes)
    start, end = min(lab.index[0] for lab in labellings.values()), max(lab.index[-1] for lab in labellings.values())
    px = close.loc[start:end]
    axes[0].plot(px.index, px.to_numpy(), color="black", lw=0.8)
    if log_scale:
        plain_log_scale(axes[0])
    # episodes: neutral grey spans (no regime colour), named above the panel where no price line runs
    shown = [(pd.Timestamp(s), pd.Timestamp(e), name) for s, e, name in episodes or ()
             if pd.Timestamp(e) >= px.index[0] and pd.Timestamp(s) <= px.index[-1]]
    for s, e, name in shown:
        axes[0].axvspan(s, e, color="0.5", alpha=0.18, lw=0)
        axes[0].text(max(s, px.index[0]), 1.01, name, transform=axes[0].get_xaxis_transform(), fontsize=7,
                     ha="left", va="bottom", rotation=35, rotation_mode="anchor", color="0.25", clip_on=False)
    axes[0].set_ylabel("price")
    if title:
        axes[0].set_title(title, pad=45 if shown else 6)
    names = []
    for ax, (name, lab) in zip(axes[1:], labellings.items()):
        _strip(ax, lab.loc[start:end], name)
        names += [str(v) for v in pd.unique(lab)]
    handles = [Patch(color=_color(v), label=v) for v in dict.fromkeys(names)]
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, fontsize=8)
    return fig


def plot_regime_probabilities(probs: pd.DataFrame, true: pd.Series | None = None, title: str | None = None,
                              ax=None) -> Figure:
    """Stacked probability ribbons of one detector over time, with the true regime as a strip below."""
    if ax is None:
        rows = 2 if true is not None else 1
        fig, axes = plt.subplots(rows, 1, figsize=(12, 3.2 if rows == 2 else 2.6), sharex=True,
                                 gridspec_kw={"height_ratios": [5, 1][:rows], "hspace": 0.08})
        axes = np.atleast_1d(axes)
    else:
        fig, axes = ax.figure, np.array([ax])
    values = probs.to_numpy().T
    axes[0].stackplot(probs.index, values, colors=[_color(c) for c in probs.columns],
                      labels=[str(c) for c in probs.columns], alpha=0.85, lw=0)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("P(regime)")
    axes[0].legend(loc="upper left", fontsize=8, ncol=len(probs.columns))
    if title:
        axes[0].set_title(title)
    if true is not None and len(axes) > 1:
        _strip(axes[1], true.loc[probs.index[0]:probs.index[-1]], "true")
    return fig


def plot_confusion(confusion: pd.DataFrame, title: str | None = None, normalise: bool = True, ax=None) -> Figure:
    """Confusion matrix (true rows x predicted columns); ``normalise`` shows each row as shares (recalls)."""
    fig, ax = (plt.subplots(figsize=(3.8, 3.2)) if ax is None else (ax.figure, ax))
    mat = confusion.to_numpy(dtype=float)
    shown = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1) if normalise else mat
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            ax.text(j, i, f"{shown[i, j]:.2f}" if normalise else f"{int(mat[i, j])}", ha="center", va="center",
                    color="white" if shown[i, j] > (0.6 if normalise else shown.max() * 0.6) else "black")
    ax.set_xticks(range(len(confusion.columns)), [str(c) for c in confusion.columns])
    ax.set_yticks(range(len(confusion.index)), [str(c) for c in confusion.index])
    ax.set_xlabel("detected")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_detector_grid(summary: pd.DataFrame, metric: str = "balanced accuracy", oracle: str = "hmm_smoothed",
                       ax=None) -> Figure:
    """Mean and seed interval per detector (rows) and market (colours), from :func:`course_lib.summarise_seeds`;
    the oracle row is hatched: it uses the future. Bars stay inside the score's range (the summary's intervals
    are clipped to it; the axis label says so when one was)."""
    fig, ax = (plt.subplots(figsize=(8, 3.8)) if ax is None else (ax.figure, ax))
    markets = list(dict.fromkeys(summary["market"]))
    detectors = list(dict.fromkeys(summary["detector"]))
    width = 0.8 / max(len(markets), 1)
    for m, market in enumerate(markets):
        sub = summary[summary["market"] == market].set_index("detector").reindex(detectors)
        y = np.arange(len(detectors)) + (m - (len(markets) - 1) / 2) * width
        err = np.vstack([sub["mean"] - sub["low"], sub["high"] - sub["mean"]])
        bars = ax.barh(y, sub["mean"], height=width, xerr=np.nan_to_num(err), capsize=3, label=market,
                       color=f"C{m}", alpha=0.8)
        for bar, det in zip(bars, detectors):
            if det == oracle:
                bar.set_hatch("//")
    ax.set_yticks(range(len(detectors)), [f"{d} (look-ahead)" if d == oracle else d for d in detectors])
    ax.invert_yaxis()
    clipped = "clipped" in summary and bool(summary["clipped"].any())
    ax.set_xlabel(f"{metric} (mean over seeds, 95% t interval" + (", clipped to the score's range)" if clipped else ")"))
    ax.legend(fontsize=8, loc="lower right")
    return fig
