"""Causal features and targets computed from OHLCV bars.

Rule: the feature value at bar t uses bars <= t only (trailing windows, no centring, no back-fill), so a
model that reads features at the close of bar t could have traded on them. The target at t is the log
return over (t, t+h]: it *looks forward by construction*, which is why it is kept apart from the features
and why its availability time (t+h) travels with every sample (see :mod:`course_lib.data.windows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .loaders import DataError, validate_ohlcv

__all__ = [
    "FeatureConfig",
    "FEATURE_DESCRIPTIONS",
    "compute_features",
    "forward_log_return",
    "log_returns",
    "rolling_zscore",
    "rsi",
]


@dataclass(frozen=True)
class FeatureConfig:
    """Look-back lengths (in bars) of the rolling features."""

    vol_window: int = 20
    volume_window: int = 20
    rsi_window: int = 14
    momentum_window: int = 10
    trend_window: int = 50

    @property
    def warmup(self) -> int:
        """Bars before the first row where every feature is defined (what ``dropna=True`` removes).

        Return-based features need one extra bar (the first return is at bar 1); level-based rolling
        features (volume, SMA) are defined once their window is full.
        """
        return max(
            self.vol_window,
            self.volume_window - 1,
            self.rsi_window,
            self.momentum_window,
            self.trend_window - 1,
        )


FEATURE_DESCRIPTIONS: dict[str, str] = {
    "log_return": "log(close_t / close_{t-1}): the bar's return, additive over time",
    "volatility": "rolling std of log returns over vol_window bars: how wild the market is now",
    "volume_z": "log volume minus its rolling mean, over its rolling std: unusual activity",
    "range": "log(high_t / low_t): intrabar range, a second, faster volatility gauge",
    "rsi": "RSI over rsi_window (Wilder smoothing, flat market = 0), rescaled to [-1, 1]: overbought / oversold",
    "momentum": "log(close_t / close_{t-momentum_window}): recent trend",
    "trend_gap": "log(close_t / SMA_trend_window): distance from the slow moving average",
}


def log_returns(close: pd.Series) -> pd.Series:
    """Log return of each bar; the first bar has none (NaN)."""
    return np.log(close).diff()


def rolling_zscore(x: pd.Series, window: int, min_periods: int | None = None) -> pd.Series:
    """Trailing z-score: (x_t - mean(x_{t-w+1..t})) / std(same window). Uses no future value."""
    roll = x.rolling(window, min_periods=min_periods or window)
    std = roll.std()
    return (x - roll.mean()) / std.where(std > 0)


def rsi(close: pd.Series, window: int = 14) -> pd.Series:
    """Relative Strength Index in [0, 100], Wilder's definition (causal recursion).

    Wilder seeds the average gain and loss with the simple mean of the first ``window`` price changes and
    then smooths with ``avg_t = avg_{t-1} + (x_t - avg_{t-1}) / window``. The first value is at bar
    ``window`` (bars 1..window hold the first changes). A market that did not move (no gains, no losses)
    has RSI 50; one with gains only has RSI 100.
    """
    if window < 1:
        raise DataError(f"rsi window must be >= 1, got {window}.")
    delta = close.diff()
    gain = delta.clip(lower=0.0)
    loss = (-delta).clip(lower=0.0)

    def wilder(x: pd.Series) -> pd.Series:
        seeded = x.copy()
        seeded.iloc[: window + 1] = np.nan
        if len(x) > window:
            seeded.iloc[window] = x.iloc[1 : window + 1].mean()
        return seeded.ewm(alpha=1.0 / window, adjust=False).mean()

    avg_gain, avg_loss = wilder(gain), wilder(loss)
    total = avg_gain + avg_loss
    out = 100.0 * avg_gain / total.where(total > 0)
    return out.where(total > 0, 50.0).where(avg_gain.notna())


def forward_log_return(close: pd.Series, horizon: int = 1) -> pd.Series:
    """Target at t: log(close_{t+h} / close_t), the return over (t, t+h]. NaN for the last h bars.

    The horizon is recorded in ``target.attrs["horizon"]`` (pandas carries it through ``reindex`` and
    slicing) so that :func:`course_lib.make_windows` can refuse a different ``horizon``: it dates each
    label's availability from that argument, and a shorter one would let a model see labels early.
    A DataFrame column (``df["target"]``, ``.assign``) drops it: ``make_windows`` then asks for ``horizon``.
    """
    if horizon < 1:
        raise DataError(f"horizon must be >= 1 bar, got {horizon}.")
    logp = np.log(close)
    target = logp.shift(-horizon) - logp
    target.attrs = {**target.attrs, "horizon": int(horizon)}
    return target


def compute_features(
    ohlcv: pd.DataFrame, config: FeatureConfig | None = None, dropna: bool = True
) -> pd.DataFrame:
    """The course's feature set (see ``FEATURE_DESCRIPTIONS``), each causal.

    Args:
        ohlcv: Frame from :func:`course_lib.load_csv` / :func:`course_lib.load_sample`.
        config: Look-back lengths.
        dropna: Drop the warm-up rows where some rolling feature is still undefined.
    """
    cfg = config or FeatureConfig()
    validate_ohlcv(ohlcv, where="compute_features input", min_rows=cfg.warmup + 2)
    close = ohlcv["close"]
    ret = log_returns(close)
    log_volume = np.log1p(ohlcv["volume"])
    feats = pd.DataFrame(
        {
            "log_return": ret,
            "volatility": ret.rolling(cfg.vol_window).std(),
            "volume_z": rolling_zscore(log_volume, cfg.volume_window)
            .fillna(0.0)
            .where(log_volume.rolling(cfg.volume_window).count() >= cfg.volume_window),
            "range": np.log(ohlcv["high"] / ohlcv["low"]),
            "rsi": rsi(close, cfg.rsi_window) / 50.0 - 1.0,
            "momentum": np.log(close / close.shift(cfg.momentum_window)),
            "trend_gap": np.log(close / close.rolling(cfg.trend_window).mean()),
        },
        index=ohlcv.index,
    )
    return feats.dropna() if dropna else feats
