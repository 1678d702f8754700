"""Plots for lesson 01: prices with regimes, features, planted motifs, the window/split layout, and the
look-ahead demonstration. Every function returns the matplotlib ``Figure`` (call ``plt.show()`` in a
notebook, ``fig.savefig(...)`` in a script) and draws into ``ax`` when one is given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .axes import plain_log_scale

__all__ = [
    "REGIME_COLORS",
    "plot_features",
    "plot_lookahead_demo",
    "plot_motif_examples",
    "plot_prices_with_regimes",
    "plot_windows_and_splits",
]

#: Background colour per regime name (unknown names get grey).
REGIME_COLORS: dict[str, str] = {
    "bull": "#2ca02c",
    "bear": "#d62728",
    "sideways": "#7f7f7f",
    "crash": "#9467bd",
}
_SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "gap": "#d9d9d9"}


def _spells(labels: pd.Series) -> list[tuple[pd.Timestamp, pd.Timestamp, str]]:
    """Contiguous runs of equal labels as (first time, first time of the next run, label)."""
    values = labels.to_numpy()
    if len(values) == 0:
        return []
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.r_[0, change]
    ends = np.r_[change, len(values) - 1]
    idx = labels.index
    return [(idx[s], idx[e], str(values[s])) for s, e in zip(starts, ends)]


def _shade_regimes(ax: Axes, regimes: pd.Series, alpha: float = 0.15) -> list[Patch]:
    for start, end, name in _spells(regimes):
        ax.axvspan(start, end, color=REGIME_COLORS.get(name, "#bbbbbb"), alpha=alpha, lw=0)
    seen = list(dict.fromkeys(str(r) for r in regimes.unique()))
    return [Patch(color=REGIME_COLORS.get(n, "#bbbbbb"), alpha=0.4, label=n) for n in seen]


def plot_prices_with_regimes(
    prices: pd.DataFrame | pd.Series,
    regimes: pd.Series | None = None,
    motifs: pd.DataFrame | None = None,
    log_scale: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Close price (log scale by default) over time, with regime spells shaded and motif spans marked.

    Args:
        prices: OHLCV frame (its ``close`` is used) or a price series.
        regimes: Regime name per bar (e.g. ``SyntheticMarket.regimes`` or a detector's output).
        motifs: Frame with ``start``/``end`` columns (``SyntheticMarket.motifs``): drawn as short ticks.
    """
    close = prices["close"] if isinstance(prices, pd.DataFrame) else prices
    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 4))
    else:
        fig = ax.figure
    ax.plot(close.index, close.to_numpy(), color="black", lw=0.8, label="close")
    handles = [ax.get_lines()[0]]
    if regimes is not None:
        handles += _shade_regimes(ax, regimes.reindex(close.index).ffill())
    if motifs is not None and len(motifs):
        y = close.reindex(pd.DatetimeIndex(motifs["end"])).to_numpy()
        (line,) = ax.plot(pd.DatetimeIndex(motifs["end"]), y, "v", ms=4, color="#1f77b4", label="motif end")
        handles.append(line)
    if log_scale:
        plain_log_scale(ax)
    ax.set_ylabel("price" + (" (log scale)" if log_scale else ""))
    ax.set_title(title or "Price" + (" and regimes" if regimes is not None else ""))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, fontsize=8)
    ax.margins(x=0)  # the legend sits beside the price, never over it
    fig.tight_layout()
    return fig


def plot_features(
    features: pd.DataFrame,
    columns: Sequence[str] | None = None,
    regimes: pd.Series | None = None,
    descriptions: Mapping[str, str] | None = None,
    height: float = 1.6,
) -> Figure:
    """One small panel per feature column, sharing the time axis (optionally with regimes shaded).

    ``descriptions`` (e.g. ``course_lib.FEATURE_DESCRIPTIONS``) puts the first clause of each feature's
    description in its panel title, so the picture explains itself.
    """
    cols = list(columns) if columns is not None else list(features.columns)
    missing = [c for c in cols if c not in features.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in the features frame (has {list(features.columns)}).")
    fig, axes = plt.subplots(len(cols), 1, figsize=(12, height * len(cols)), sharex=True, squeeze=False)
    for ax, col in zip(axes[:, 0], cols):
        if regimes is not None:
            _shade_regimes(ax, regimes.reindex(features.index).ffill(), alpha=0.12)
        ax.plot(features.index, features[col].to_numpy(), lw=0.7, color="#1f77b4")
        label = col
        if descriptions and col in descriptions:
            label += ": " + descriptions[col].split(":")[0]
        ax.set_title(label, fontsize=9, loc="left")
        ax.margins(x=0)
    fig.tight_layout()
    return fig


def plot_windows_and_splits(
    split,
    seq_len: int,
    horizon: int,
    end_time: pd.DatetimeIndex | None = None,
    example_end: int | None = None,
) -> Figure:
    """The two layouts that keep the future out: one sample's window/label, and the purged split.

    Top: bars around one sample, the ``seq_len`` input bars ending at t, the decision at t's close and the
    label window (t, t+h] that becomes known at t+h. Bottom: every sample on a time line, coloured by
    train / val / test, with the purge gaps that keep a training label out of the validation inputs.

    Args:
        split: A :class:`course_lib.SplitIndices` (from ``chronological_split`` or ``prepare_dataset``).
        seq_len, horizon: Window length and label horizon in bars.
        end_time: Window-end time per sample (``WindowSet.end_time``) to put dates on the time line.
        example_end: Bar offset of the example's t in the top panel (default: a readable position).
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5), gridspec_kw={"height_ratios": [1.2, 1]})
    _draw_one_sample(top, seq_len, horizon, example_end)
    _draw_split(bottom, split, seq_len, horizon, end_time)
    fig.tight_layout()
    return fig


def _draw_one_sample(top, seq_len: int, horizon: int, example_end: int | None) -> None:
    """Top panel of :func:`plot_windows_and_splits`: one sample's input window, decision and label window."""
    t = example_end if example_end is not None else seq_len + 2
    lo, hi = t - seq_len - 3, t + horizon + 4
    bars = np.arange(lo, hi + 1)
    colors = np.where(
        (bars > t - seq_len) & (bars <= t),
        _SPLIT_COLORS["train"],
        np.where((bars > t) & (bars <= t + horizon), _SPLIT_COLORS["val"], "#e0e0e0"),
    )
    top.bar(bars, np.ones_like(bars), color=colors, width=0.85)
    top.axvline(t + 0.5, color="black", lw=1.2)
    top.annotate(
        "decide at close of t",
        (t + 0.5, 1.05),
        ha="right",
        fontsize=8,
        xytext=(-4, 0),
        textcoords="offset points",
    )
    top.annotate(
        f"label known at t+{horizon}",
        (t + horizon + 0.5, 1.05),
        ha="left",
        fontsize=8,
        xytext=(4, 0),
        textcoords="offset points",
    )
    top.axvline(t + horizon + 0.5, color="black", lw=0.8, ls="--")
    top.set_ylim(0, 1.3)
    top.set_yticks([])
    ticks = [t - seq_len + 1, t, t + horizon]
    top.set_xticks(ticks, [f"t-{seq_len - 1}" if seq_len > 1 else "t", "t", f"t+{horizon}"])
    # t and t+h are neighbours when h is small: push their labels apart, each away from the other
    labels = top.get_xticklabels()
    labels[1].set_horizontalalignment("right")
    labels[2].set_horizontalalignment("left")
    top.legend(
        handles=[
            Patch(color=_SPLIT_COLORS["train"], label=f"input window: {seq_len} bars up to t"),
            Patch(color=_SPLIT_COLORS["val"], label=f"target: return over (t, t+{horizon}]"),
        ],
        loc="upper left",
        fontsize=8,
        ncol=2,
    )
    top.set_title("One sample: what the model sees and what it must predict", fontsize=10, loc="left")


def _draw_split(bottom, split, seq_len: int, horizon: int, end_time: pd.DatetimeIndex | None) -> None:
    """Bottom panel of :func:`plot_windows_and_splits`: the chronological split and its purge gaps."""
    n = int(max(split.train.max(initial=-1), split.val.max(initial=-1), split.test.max(initial=-1))) + 1
    if end_time is not None and len(end_time) != n:
        raise ValueError(f"end_time has {len(end_time)} entries but the split covers {n} samples.")
    x = np.asarray(end_time) if end_time is not None else np.arange(n)

    def span(idx: np.ndarray, name: str, label: str) -> None:
        if len(idx):
            bottom.axvspan(
                x[idx[0]], x[idx[-1]], color=_SPLIT_COLORS[name], alpha=0.8, label=f"{label}: {len(idx)}"
            )

    span(split.train, "train", "train")
    span(split.val, "val", "val")
    span(split.test, "test", "test")
    gaps = []
    if len(split.train) and len(split.val):
        gaps.append((split.train[-1], split.val[0]))
    if len(split.val) and len(split.test):
        gaps.append((split.val[-1], split.test[0]))
    elif len(split.train) and len(split.test):
        gaps.append((split.train[-1], split.test[0]))
    for i, (a, b) in enumerate(gaps):
        bottom.axvspan(
            x[a],
            x[b],
            color="#333333",
            lw=0,
            label=f"purge gap: {b - a - 1} samples" if i == 0 else None,
        )
    bottom.set_yticks([])
    bottom.set_xlabel("window end time" if end_time is not None else "sample index (time order)")
    bottom.legend(loc="upper left", fontsize=8, ncol=4)
    need = horizon + seq_len - 1
    verdict = ">=" if split.gap >= need else "< (too small!)"
    bottom.set_title(
        f"Chronological split with purge gaps: gap = {split.gap} {verdict} horizon + seq_len - 1 = {need}",
        fontsize=10,
        loc="left",
    )
    bottom.margins(x=0)


def plot_motif_examples(market, n_examples: int = 12, show_aftermath: bool = True) -> Figure:
    """Overlay the occurrences of each planted motif (cumulative log return from the motif's start).

    Same shape, same aftermath: the picture that explains why a memory of past shapes can help. The thick
    line is the average; the dashed line marks the motif's end, where a model must decide.

    Args:
        market: A :class:`course_lib.SyntheticMarket`.
        n_examples: Occurrences drawn per motif type (the average uses all of them).
    """
    motifs = market.motifs
    names = list(market.motif_names)
    if not names or motifs.empty:
        raise ValueError("this market has no planted motifs (config.motifs is empty).")
    cfg = market.config
    after = cfg.aftermath_bars if show_aftermath else 0
    logp = np.log(market.ohlcv["close"].to_numpy())
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True, squeeze=False)
    x = np.arange(-1, cfg.motif_len + after)
    for ax, (k, name) in zip(axes[0], enumerate(names)):
        rows = motifs[motifs["motif_id"] == k]
        paths = []
        for s in rows["start_pos"].to_numpy():
            stop = min(s + cfg.motif_len + after, len(logp))
            seg = logp[s - 1 : stop] - logp[s - 1]
            if len(seg) == len(x):
                paths.append(seg)
        paths = np.array(paths)
        for p in paths[:n_examples]:
            ax.plot(x, p, color="grey", lw=0.6, alpha=0.6)
        if len(paths):
            ax.plot(x, paths.mean(axis=0), color="black", lw=2, label="average")
        ax.axvline(cfg.motif_len - 1, color="black", ls="--", lw=0.8)
        direction = "up" if rows["direction"].iloc[0] > 0 else "down" if len(rows) else "?"
        ax.set_title(f"{name}\n({len(rows)} times, aftermath {direction})", fontsize=9)
        ax.set_xlabel("bars from motif start")
    axes[0, 0].set_ylabel("cumulative log return")
    fig.tight_layout()
    return fig


def plot_lookahead_demo(curves: Mapping[str, pd.Series], title: str = "Cumulative log return") -> Figure:
    """Cumulative sums of per-bar log returns of several strategies, e.g. a leaky and a causal one.

    Log returns add up, so the cumulative sum is the log of the growth of 1 unit invested.
    """
    fig, ax = plt.subplots(figsize=(12, 3.8))
    for name, ret in curves.items():
        ax.plot(ret.index, ret.fillna(0.0).cumsum().to_numpy(), lw=1.0, label=name)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_ylabel("cumulative log return")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.margins(x=0)
    fig.tight_layout()
    return fig
