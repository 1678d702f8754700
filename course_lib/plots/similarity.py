"""Pictures for historical similarity (lesson 06): the query next to its past episodes, and the fan of what
followed them next to what really followed (drawn as hindsight, never used by the forecast)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..similarity import forward_paths

__all__ = ["plot_analog_fan", "plot_analog_windows", "plot_analogs", "plot_learning_curve"]

HINDSIGHT_LABEL = "what really followed (hindsight: unknown at the query date)"


def _ax(ax, figsize=(7, 4)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_analog_windows(close: pd.Series, analogs: pd.DataFrame, lookback: int | None = None, ax=None):
    """The query's last ``lookback`` bars of log price (bold) and each neighbour's, all ending at 0."""
    ax = _ax(ax)
    L = int(lookback or analogs.attrs.get("lookback") or 20)
    bars = pd.DatetimeIndex(close.index)
    logc = np.log(close.to_numpy(dtype=float))
    t = analogs.attrs.get("query_time")

    def past(end) -> np.ndarray:
        p = bars.get_loc(pd.Timestamp(end))
        lo = max(0, p - L)
        seg = logc[lo : p + 1] - logc[p]
        return np.r_[np.full(L + 1 - len(seg), np.nan), seg]

    x = np.arange(-L, 1)
    for _, row in analogs.iterrows():
        ax.plot(x, past(row["end_time"]), lw=1, alpha=0.35 + 0.65 * float(row["weight"]) / analogs["weight"].max(),
                label=f"{pd.Timestamp(row['end_time']).date()} (w={row['weight']:.2f})")  # fmt: skip
    if t is not None:
        ax.plot(x, past(t), color="black", lw=2.5, label=f"query {pd.Timestamp(t).date()}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("bars before the window's end")
    ax.set_ylabel("log price, relative to the end")
    ax.set_title("The query and its distinct past episodes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.18), ncol=3, frameon=False)  # below: off the lines
    return ax


def plot_analog_fan(
    close: pd.Series, analogs: pd.DataFrame, horizon: int = 20, hindsight: bool = True, ax=None,
    quantiles: tuple[float, float] = (0.1, 0.9),
):  # fmt: skip
    """What followed each neighbour over ``horizon`` bars (thin lines), their weighted mean path and a
    weighted quantile band; with ``hindsight`` also what followed the query, dashed and labelled as such.

    Only what was known at the query date is drawn: a neighbour's path stops at the query's bar (the search
    guarantees only its longest ``horizons`` entry), and the mean and band stop where any path stops. When
    ``horizon`` reaches past what was known, the title says so.
    """
    ax = _ax(ax)
    t = analogs.attrs.get("query_time")
    paths = forward_paths(close, analogs["end_time"], horizon, as_of=t)
    w = analogs["weight"].to_numpy(dtype=float)
    vals = paths.to_numpy()
    for j in range(vals.shape[1]):
        ax.plot(paths.index, vals[:, j], color="tab:blue", lw=0.8, alpha=0.25 + 0.6 * w[j] / w.max())
    known = np.isfinite(vals).all(axis=1)  # steps at which every neighbour's outcome was known at the query
    if vals.shape[1] and known.any():
        wv = w / w.sum()
        mean = np.where(known, np.nan_to_num(vals) @ wv, np.nan)
        ax.plot(paths.index, mean, color="tab:blue", lw=2.5, label="neighbours' weighted mean")
        if vals.shape[1] >= 3:
            lo, hi = (np.array([_wq(row, wv, q) if k else np.nan for row, k in zip(vals, known)]) for q in quantiles)
            ax.fill_between(paths.index, lo, hi, color="tab:blue", alpha=0.12,
                            label=f"neighbours' {int(100 * quantiles[0])}-{int(100 * quantiles[1])}% band")  # fmt: skip
    if hindsight and t is not None:
        real = forward_paths(close, [pd.Timestamp(t)], horizon).iloc[:, 0]
        ax.plot(real.index, real.to_numpy(), color="tab:red", lw=2, ls="--", label=HINDSIGHT_LABEL)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("bars after the window's end")
    ax.set_ylabel("cumulative log return")
    title = f"What followed {pd.Timestamp(t).date() if t is not None else 'the query'}'s analogs"
    if not known.all():
        title += f"\n(known at the query: {int(np.argmin(known)) - 1} bars; later bars not drawn)"
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.18), ncol=1, frameon=False)  # below: off the lines
    return ax


def _wq(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order]) - 0.5 * w[order]
    return float(np.interp(q, cw / w.sum(), x[order]))


def plot_analogs(close: pd.Series, analogs: pd.DataFrame, horizon: int = 20, lookback: int | None = None,
                 hindsight: bool = True, figsize=(13, 4)):  # fmt: skip
    """Both panels side by side: the query with its episodes, and the fan of what followed them."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=figsize)
    plot_analog_windows(close, analogs, lookback, ax=axes[0])
    plot_analog_fan(close, analogs, horizon, hindsight, ax=axes[1])
    fig.tight_layout()
    return fig


def plot_learning_curve(curves: Mapping[str, pd.DataFrame], ax=None, title: str = "Accuracy on the new motif",
                        max_band: float = 0.5):
    """Accuracy against occurrences seen, one line per arm with its interval band.

    Each frame is indexed by occurrences seen and has ``mean``, ``low`` and ``high`` columns. A band wider than
    ``max_band`` (too few markets for the interval to say anything) is not drawn, and the legend says so: a
    band that fills the whole axis would hide the lines and tell nothing.
    """
    ax = _ax(ax, (7, 4))
    for name, frame in curves.items():
        x = frame.index.to_numpy(dtype=float)
        width = (frame["high"] - frame["low"]).to_numpy(dtype=float)
        narrow = np.isfinite(width) & (width <= max_band)
        label = name if narrow.all() else f"{name} (band not drawn where wider than {max_band:.0%})"
        (line,) = ax.plot(x, frame["mean"], marker="o", ms=3, label=label)
        if narrow.any():
            ax.fill_between(x, frame["low"].where(narrow), frame["high"].where(narrow), color=line.get_color(),
                            alpha=0.15)
    ax.axhline(0.5, color="grey", lw=0.7, ls=":")
    ax.set_xlabel("occurrences of the new motif already resolved in memory")
    ax.set_ylabel("direction accuracy after the motif")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.18), ncol=1, frameon=False)  # below the lines
    return ax
