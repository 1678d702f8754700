"""Plots for lesson 02 (memory bank): similar past moments on the price chart, backend latency versus
memory size, which entries survive an eviction policy, and the leaky-versus-causal comparison.
Every function returns the matplotlib ``Figure`` and draws into ``ax`` when one is given."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .axes import plain_log_scale

__all__ = ["plot_eviction_survivors", "plot_latency", "plot_leak_comparison", "plot_neighbours"]


def _axes(ax: Axes | None, figsize=(10, 4)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_neighbours(close: pd.Series, query_time, neighbour_times, neighbour_scores=None,
                    ax: Axes | None = None) -> Figure:
    """Price (log scale) with the query date (black line) and its retrieved past moments (dots; darker =
    more similar)."""
    fig, ax = _axes(ax)
    ax.plot(close.index, close.to_numpy(), color="0.6", lw=0.8, label="close")
    times = pd.DatetimeIndex(neighbour_times)
    prices = close.reindex(times).to_numpy()
    c = np.asarray(neighbour_scores) if neighbour_scores is not None else "tab:blue"
    sc = ax.scatter(times, prices, c=c, cmap="viridis", s=30, zorder=3, label="retrieved moments")
    if neighbour_scores is not None:
        fig.colorbar(sc, ax=ax, label="cosine similarity")
    ax.axvline(pd.Timestamp(query_time), color="k", ls="--", lw=1, label="query (as_of)")
    plain_log_scale(ax)
    ax.set_title("Similar past moments retrieved from the memory")
    ax.legend(loc="upper left")
    return fig


def plot_latency(table: pd.DataFrame, ax: Axes | None = None, batch: int | None = None) -> Figure:
    """Search latency (ms per batch) against memory size, one line per backend, log-log."""
    fig, ax = _axes(ax, (7, 4))
    for name, g in table.groupby("backend", sort=False):
        ax.plot(g["M"], g["ms"], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entries in memory (M)")
    ax.set_ylabel("ms per search batch")
    ax.set_title("Search latency" + (f" (batch of {batch} queries)" if batch else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def plot_eviction_survivors(survivors: Mapping[str, np.ndarray], start, end, highlight=None,
                            ax: Axes | None = None) -> Figure:
    """One row per policy: a tick at the date of every entry still in memory after the stream ends.

    ``survivors``: policy -> array of datetimes (or int64 ns). ``highlight``: (start, end) shaded, e.g. 2008.
    """
    fig, ax = _axes(ax, (10, 1 + 0.8 * len(survivors)))
    for row, times in enumerate(survivors.values()):
        t = pd.to_datetime(np.asarray(times))
        ax.scatter(t, np.full(len(t), row), marker="|", s=200, lw=1)
    ax.set_yticks(range(len(survivors)), list(survivors))
    ax.set_xlim(pd.Timestamp(start), pd.Timestamp(end))
    ax.set_ylim(-0.7, len(survivors) - 0.3)
    if highlight is not None:
        ax.axvspan(pd.Timestamp(highlight[0]), pd.Timestamp(highlight[1]), color="tab:red", alpha=0.15,
                   label="crash period")
        ax.legend(loc="upper left")
    ax.set_title("Entries still in memory at the end of the stream")
    return fig


def plot_leak_comparison(table: pd.DataFrame, column: str = "correlation", ax: Axes | None = None) -> Figure:
    """Bar chart of a forecast-quality column (index = variant, e.g. leaky vs causal)."""
    fig, ax = _axes(ax, (6, 3.5))
    vals = table[column]
    colors = ["tab:red" if "leak" in str(i).lower() else "tab:green" for i in table.index]
    ax.bar([str(i) for i in table.index], vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel(column)
    ax.set_title("kNN forecast vs realised next-day return")
    return fig
