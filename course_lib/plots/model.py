"""Plots for lessons 03-04: learning curves, gates, attention over neighbours, memory vs no memory."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "plot_fusion_comparison",
    "plot_gate",
    "plot_learning_curves",
    "plot_memory_comparison",
    "plot_neighbour_attention",
    "plot_retrieved_dates",
]


def plot_learning_curves(history: pd.DataFrame | dict[str, pd.DataFrame], axes=None):
    """Train/val loss and validation direction accuracy per epoch (one history or a dict of named ones)."""
    histories = history if isinstance(history, dict) else {"": history}
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for name, h in histories.items():
        tag = f"{name} " if name else ""
        line = axes[0].plot(h.index, h["train_loss"], label=f"{tag}train")[0]
        if "val_loss" in h:
            axes[0].plot(h.index, h["val_loss"], "--", color=line.get_color(), label=f"{tag}val")
        if "val_direction_accuracy" in h:
            axes[1].plot(h.index, h["val_direction_accuracy"], color=line.get_color(), label=name or "val")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set(title="validation direction accuracy", xlabel="epoch")
    for ax in axes:
        ax.legend(fontsize=8)
    return axes


def plot_gate(values: np.ndarray | pd.Series, title: str = "gate: share of memory in the fused output", ax=None):
    """Histogram of gate values (0 = local context only, 1 = memory only)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=30, range=(0, 1), color="tab:purple", alpha=0.8)
    ax.axvline(v.mean() if len(v) else np.nan, color="k", lw=1, label=f"mean {v.mean():.2f}" if len(v) else None)
    ax.set(title=title, xlabel="gate", ylabel="windows")
    ax.legend()
    return ax


def plot_neighbour_attention(weights: np.ndarray, mask: np.ndarray | None = None, outcomes: np.ndarray | None = None,
                             ax=None, title: str = "attention over retrieved neighbours"):
    """Heatmap: rows are query windows, columns neighbours (in search order); optional outcome colouring.

    ``outcomes`` (same shape) marks each neighbour's subsequent return: '+' or '-' drawn on the cell.
    """
    w = np.asarray(weights, dtype=float)
    if mask is not None:
        w = np.where(mask, w, np.nan)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12, 1 + 0.35 * w.shape[1]), 0.5 + 0.4 * w.shape[0]))
    im = ax.imshow(w, aspect="auto", cmap="viridis")
    plt.colorbar(im, ax=ax, label="weight")
    if outcomes is not None:
        o = np.asarray(outcomes)
        for i, j in zip(*np.nonzero(np.isfinite(w))):
            ax.text(j, i, "+" if o[i, j] > 0 else "-", ha="center", va="center", color="w", fontsize=7)
    ax.set(title=title, xlabel="neighbour (search rank)", ylabel="query window")
    return ax


def plot_fusion_comparison(table: pd.DataFrame, column: str, ax=None, title: str | None = None):
    """Bar chart of one statistic per fusion strategy (rows of ``table``)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.bar(table.index.astype(str), table[column], color="tab:blue")
    ax.set(title=title or column, ylabel=column)
    ax.tick_params(axis="x", rotation=20)
    return ax


def plot_memory_comparison(per_seed: pd.DataFrame, summary: pd.DataFrame | None = None, subset: str = "", ax=None):
    """Direction accuracy of memory vs no-memory per seed (paired lines), with the mean difference and CI."""
    suffix = f"_{subset}" if subset else ""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    a, b = per_seed[f"acc_local{suffix}"], per_seed[f"acc_memory{suffix}"]
    for seed in per_seed.index:
        ax.plot([0, 1], [a[seed], b[seed]], "o-", color="grey", alpha=0.6)
    ax.plot([0, 1], [a.mean(), b.mean()], "o-", color="tab:red", lw=2.5, label="mean")
    ax.set_xticks([0, 1], ["no memory", "memory"])
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    title = f"direction accuracy{(' (' + subset + ')') if subset else ''}"
    if summary is not None:
        row = summary.loc[subset or "all"]
        title += f"\ndiff {row['diff']:+.3f}, bootstrap 95% CI [{row['boot_ci_low']:+.3f}, {row['boot_ci_high']:+.3f}]"
    ax.set(title=title, ylabel="accuracy")
    ax.legend()
    return ax


def plot_retrieved_dates(close: pd.Series, neighbours: pd.DataFrame, query_times: Sequence, ax=None):
    """Price chart with, for each query day, vertical marks at the past dates the model retrieved."""
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 3.5))
    ax.plot(close.index, close.to_numpy(), color="k", lw=0.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, t in enumerate(query_times):
        c = colors[i % len(colors)]
        nb = neighbours[neighbours["time"] == t]
        ax.axvline(t, color=c, lw=2, label=f"query {pd.Timestamp(t).date()}")
        for nt in nb["neighbour_time"]:
            ax.axvline(nt, color=c, lw=0.8, alpha=0.7, ls="--")
    ax.set(title="retrieved past windows (dashed) for a few test days (solid)", ylabel="close")
    ax.legend(fontsize=8, loc="upper left")
    return ax
