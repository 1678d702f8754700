"""Plots for lesson 09: sensitivity curves and pitfall measurements, every point with its interval."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_interval_bars", "plot_pruning", "plot_sensitivity"]


def _errors(df: pd.DataFrame, value: str, low: str, high: str) -> np.ndarray:
    v = df[value].to_numpy(float)
    lo = np.nan_to_num(v - df[low].to_numpy(float), nan=0.0)
    hi = np.nan_to_num(df[high].to_numpy(float) - v, nan=0.0)
    return np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])


def plot_sensitivity(summary: pd.DataFrame, subset: str = "all", params: Sequence[str] | None = None,
                     axes=None, bootstrap: bool = True):
    """One panel per setting: accuracy difference to the default (same seeds) for each value tried.

    Thick bars: 95% t-interval over seeds; thin grey bars: block bootstrap over test windows. The default
    is the hollow marker at zero. A bar that crosses the dotted zero line is no evidence of an effect.
    """
    s = summary[summary["subset"] == subset]
    params = list(params or dict.fromkeys(s["param"]))
    if axes is None:
        _, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 3.2), squeeze=False)
        axes = axes[0]
    for ax, p in zip(np.atleast_1d(axes), params):
        g = s[s["param"] == p].reset_index(drop=True)
        x = np.arange(len(g))
        if bootstrap:
            ax.errorbar(x + 0.12, 100 * g["diff"], yerr=100 * _errors(g, "diff", "boot_low", "boot_high"),
                        fmt="none", ecolor="grey", elinewidth=1, capsize=2, label="bootstrap (test days)")
        ax.errorbar(x, 100 * g["diff"], yerr=100 * _errors(g, "diff", "ci_low", "ci_high"), fmt="o",
                    color="tab:blue", elinewidth=2.2, capsize=3, label="t-interval (seeds)")
        dflt = g["is_default"].to_numpy(bool)
        ax.plot(x[dflt], np.zeros(dflt.sum()), "o", mfc="white", mec="k", ms=8, label="default")
        ax.axhline(0, color="k", lw=0.7, ls=":")
        ax.set_xticks(x, [f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v) for v in g["value"]])
        ax.set(title=p, xlabel="value")
    axes = np.atleast_1d(axes)
    axes[0].set_ylabel(f"accuracy - default, points ({subset})")
    axes[0].legend(fontsize=7, loc="best")
    plt.gcf().tight_layout()
    return axes


def plot_interval_bars(summary: pd.DataFrame, x: str, group: str | None = None, subset: str = "all",
                       value: str = "diff", low: str = "ci_low", high: str = "ci_high", ax=None,
                       title: str | None = None, scale: float = 100.0, ylabel: str | None = None):
    """Points with interval bars: ``value`` per ``x`` (one colour per ``group``), from a study's summary."""
    s = summary[summary["subset"] == subset] if "subset" in summary else summary
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    groups = list(dict.fromkeys(s[group])) if group else [None]
    labels = list(dict.fromkeys(s[x].astype(str)))
    pos = {lab: i for i, lab in enumerate(labels)}
    width = 0.6 / max(1, len(groups))
    for j, gname in enumerate(groups):
        g = s if gname is None else s[s[group] == gname]
        xs = np.array([pos[v] for v in g[x].astype(str)]) + (j - (len(groups) - 1) / 2) * width
        ax.errorbar(xs, scale * g[value], yerr=scale * _errors(g, value, low, high), fmt="o", capsize=3,
                    elinewidth=2, label=None if gname is None else str(gname))
    ax.axhline(0, color="k", lw=0.7, ls=":")
    ax.set_xticks(range(len(labels)), labels, rotation=15)
    ax.set(title=title or f"{value} by {x} ({subset})",
           ylabel=ylabel or ("points" if scale == 100 else value))
    if group:
        ax.legend(fontsize=8)
    return ax


def plot_pruning(summary: pd.DataFrame, subset: str = "all", ax=None):
    """Accuracy against memory size: pruning by retrieval count versus dropping as many entries at random."""
    s = summary[summary["subset"] == subset]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    full = s[s["rule"] == "full"]
    for rule, color in (("pruned", "tab:red"), ("random", "tab:grey")):
        g = pd.concat([full, s[s["rule"] == rule]]).sort_values("memory_share")
        ax.errorbar(100 * g["memory_share"], 100 * g["acc"],
                    yerr=100 * _errors(g.assign(lo=g["acc"] - (g["diff"] - g["ci_low"]),
                                                hi=g["acc"] + (g["ci_high"] - g["diff"])), "acc", "lo", "hi"),
                    fmt="o-", color=color, capsize=3, label="by retrieval count" if rule == "pruned" else "at random")
    ax.set(xlabel="memory kept, % of training windows", ylabel=f"direction accuracy, % ({subset})",
           title="pruning: what is left, and what it knows")
    ax.legend(fontsize=8)
    return ax
