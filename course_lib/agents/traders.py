"""Small rule-based agents that perceive, remember and act on one shared memory, and the loop that runs them.

Each agent turns the bars up to t into a *signal*: a direction (+1 long, -1 short, 0 no opinion) and a stated
confidence (its own guess of the chance that the trade wins). The rules are deliberately simple; the lesson is
about what a shared memory of their decisions and outcomes lets a composer do with them.

* :class:`MomentumAgent` - the sign of the last ``lookback`` bars' return;
* :class:`MeanReversionAgent` - against a stretch of more than ``entry`` standard deviations from the mean;
* :class:`VolatilityAgent` - long while trailing volatility is below its own past median, out (or short on a
  falling market) when it is high: a minimal regime agent;
* :class:`AnalogAgent` - lesson 06's idea: the nearest past windows (:class:`course_lib.KNNAnalogForecaster`,
  retrieved only once their outcomes were known) vote on the next bar.

:func:`run_agents` walks the bars in time order. At the close of bar t it resolves the decisions of bar t-1
(their P&L is the return of bar t, known now), updates each composer with those outcomes, records every
agent's new decision in the memory (each in its own namespace), and asks each composer for weights. The
composed position decided at t is ``sum_i w_i * direction_i``; the backtester lets it earn bar t+1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..backtest.strategies import KNNAnalogForecaster
from ..data.features import compute_features, forward_log_return
from ..data.windows import FeatureScaler, make_windows
from .composer import OutcomeCounts
from .store import AgentMemory

__all__ = [
    "AgentRun",
    "AnalogAgent",
    "MeanReversionAgent",
    "MomentumAgent",
    "VolatilityAgent",
    "compare_composers",
    "market_state",
    "run_agents",
    "trailing_vol_regime",
]


def _close(prices: pd.DataFrame | pd.Series) -> pd.Series:
    close = prices["close"] if isinstance(prices, pd.DataFrame) else prices
    return close.astype(float)


def _signal_frame(direction: pd.Series, confidence: pd.Series, note: str) -> pd.DataFrame:
    d = direction.fillna(0.0)
    c = confidence.where(d != 0).clip(0.5, 0.99)
    return pd.DataFrame({"direction": d, "confidence": c, "note": note})


def trailing_vol_regime(prices: pd.DataFrame | pd.Series, window: int = 20, min_history: int = 100) -> pd.Series:
    """``"volatile"`` when the trailing ``window``-bar volatility is above its own median up to t, else
    ``"calm"`` (``"warmup"`` before ``min_history`` bars). Uses bars up to t only."""
    r = np.log(_close(prices)).diff()
    vol = r.rolling(window).std()
    med = vol.expanding(min_periods=min_history).median()
    out = pd.Series(np.where(vol > med, "volatile", "calm"), index=r.index, dtype=object)
    out[med.isna() | vol.isna()] = "warmup"
    return out.rename("regime")


def market_state(prices: pd.DataFrame | pd.Series, window: int = 20) -> pd.DataFrame:
    """A small market-state vector per bar (momentum z, volatility ratio, stretch z), causal, NaN -> 0."""
    close = _close(prices)
    r = np.log(close).diff()
    vol = r.rolling(window).std()
    mom = np.log(close).diff(window) / (vol * np.sqrt(window))
    ratio = np.log(vol / vol.expanding(min_periods=window).median())
    stretch = (close - close.rolling(window).mean()) / close.rolling(window).std()
    return pd.DataFrame({"momentum_z": mom, "vol_ratio": ratio, "stretch_z": stretch}).fillna(0.0).clip(-5, 5)


@dataclass(frozen=True)
class MomentumAgent:
    name: str = "momentum"
    lookback: int = 20

    def signals(self, prices) -> pd.DataFrame:
        r = np.log(_close(prices)).diff()
        z = np.log(_close(prices)).diff(self.lookback) / (r.rolling(self.lookback).std() * np.sqrt(self.lookback))
        return _signal_frame(np.sign(z), 0.5 + 0.5 * np.tanh(z.abs()), f"{self.lookback}-bar trend")


@dataclass(frozen=True)
class MeanReversionAgent:
    name: str = "mean_reversion"
    window: int = 10
    entry: float = 1.0

    def signals(self, prices) -> pd.DataFrame:
        close = _close(prices)
        z = (close - close.rolling(self.window).mean()) / close.rolling(self.window).std()
        direction = -np.sign(z).where(z.abs() > self.entry, 0.0)
        return _signal_frame(direction, 0.5 + 0.5 * np.tanh(z.abs() - self.entry + 0.5), "stretched from the mean")


@dataclass(frozen=True)
class VolatilityAgent:
    name: str = "volatility"
    window: int = 20
    min_history: int = 100

    def signals(self, prices) -> pd.DataFrame:
        close = _close(prices)
        regime = trailing_vol_regime(close, self.window, self.min_history)
        falling = np.log(close).diff(self.window) < 0
        direction = pd.Series(0.0, index=close.index)
        direction[regime == "calm"] = 1.0
        direction[(regime == "volatile") & falling] = -1.0
        r = np.log(close).diff()
        vol = r.rolling(self.window).std()
        ratio = np.log(vol / vol.expanding(min_periods=self.min_history).median()).abs()
        return _signal_frame(direction, 0.55 + 0.4 * np.tanh(ratio.fillna(0.0)), "volatility regime")


@dataclass
class AnalogAgent:
    """Lesson 06's analog search as an agent: the ``k`` nearest past windows vote. The training period (the
    first memory; the scaler is fitted on it only) is fixed when the agent is built: the bars up to
    ``train_until`` (a time) or, without it, the first ``train_bars`` bars. Afterwards every window joins once
    its label is known. No opinion while ``|up_share - 1/2| < min_edge`` or before the training period ends.

    The cut never depends on how many bars follow it, so a decision at t uses bars up to t only (appending
    bars after t changes nothing at or before t).
    """

    name: str = "analog"
    k: int = 32
    lookback: int = 8
    seq_len: int = 16
    train_bars: int = 500
    train_until: Any = None
    min_edge: float = 0.05
    forecaster: KNNAnalogForecaster | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.train_bars < 1:
            raise ValueError(f"train_bars must be >= 1, got {self.train_bars}.")

    def _n_train(self, index: pd.DatetimeIndex) -> int:
        if self.train_until is None:
            return min(int(self.train_bars), len(index))
        return int(index.searchsorted(pd.Timestamp(self.train_until), side="right"))

    def signals(self, prices: pd.DataFrame) -> pd.DataFrame:
        feats = compute_features(prices)
        n_train = self._n_train(pd.DatetimeIndex(feats.index))
        if n_train < self.seq_len + 10:
            where = f"up to {self.train_until}" if self.train_until is not None else f"train_bars={self.train_bars}"
            raise ValueError(f"AnalogAgent needs more training bars: {n_train} feature bars ({where}) for "
                             f"seq_len={self.seq_len}; train on a longer period.")  # fmt: skip
        scaled = FeatureScaler().fit(feats.iloc[:n_train]).transform(feats)
        target = forward_log_return(prices["close"], 1).reindex(feats.index)
        windows = make_windows(scaled, target, self.seq_len, 1, drop_unlabeled=False)
        last_train = feats.index[n_train - 1]
        train = windows.subset(np.flatnonzero(np.asarray(windows.available_at <= last_train)))
        rest = windows.subset(np.flatnonzero(np.asarray(windows.end_time > last_train)))
        self.forecaster = KNNAnalogForecaster(k=self.k, lookback=self.lookback, online=True).fit(train)
        pred = self.forecaster.predict(rest)
        share = pred["memory_up_share"].reindex(_close(prices).index)
        edge = share - 0.5
        direction = np.sign(edge).where(edge.abs() >= self.min_edge, 0.0)
        return _signal_frame(direction, 0.5 + edge.abs(), "nearest past windows")


@dataclass
class AgentRun:
    """What :func:`run_agents` produced.

    Attributes:
        signals: per agent, its signal frame (direction, confidence) on the run's bars.
        positions: one column per composer (and per agent alone), decided at each bar's close.
        weights: per composer, a (time x agent) frame of the weights it used.
        decisions: every decision the memory holds at the end (with pnl where resolved).
    """

    signals: dict[str, pd.DataFrame]
    positions: pd.DataFrame
    weights: dict[str, pd.DataFrame]
    decisions: pd.DataFrame


def run_agents(prices: pd.DataFrame, agents: Sequence, composers: Sequence, memory: AgentMemory, *,
               start: int | str | pd.Timestamp = 0, symbol: str = "ASSET", seed: int = 0,
               progress: bool = False) -> AgentRun:
    """Let ``agents`` trade ``prices`` from bar ``start`` on, sharing ``memory``; compose them with each of
    ``composers``. Everything decided at bar t uses bars up to t and outcomes resolved by t only."""
    close = _close(prices)
    index = close.index
    s = index.get_loc(pd.Timestamp(start)) if not isinstance(start, (int, np.integer)) else int(start)
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agent names must be unique (they are the memory's namespaces), got {names}.")
    sig = {a.name: a.signals(prices).reindex(index) for a in agents}
    direction = np.column_stack([sig[n]["direction"].fillna(0.0).to_numpy() for n in names])
    confidence = np.column_stack([sig[n]["confidence"].to_numpy() for n in names])
    regime = trailing_vol_regime(close).to_numpy()
    state = market_state(close).to_numpy()
    ret = np.log(close).diff().to_numpy()
    notes = {n: sig[n]["note"].fillna("").tolist() for n in names}
    times = index.as_unit("ns").asi8  # int nanoseconds: what the store keeps (fast to pass)
    views = [memory.namespace(n) for n in names]
    counts = [OutcomeCounts(len(names), c.half_life) for c in composers]
    rngs = [np.random.default_rng([seed, k]) for k in range(len(composers))]
    weights = np.zeros((len(composers), len(index) - s, len(names)))
    composed = np.zeros((len(composers), len(index) - s))
    pending: list[tuple[int, int, float]] = []
    steps = range(s, len(index))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="agents", leave=False)
    for t in steps:
        now = int(times[t])
        won = np.zeros(len(names))
        lost = np.zeros(len(names))
        with memory.batch():
            for did, a, d in pending:  # yesterday's decisions earn bar t: known at this close
                pnl = d * ret[t]
                memory.resolve(did, pnl, at=now)
                won[a] += pnl > 0
                lost[a] += pnl < 0
            pending = []
            for a, view in enumerate(views):
                d = direction[t, a]
                if d == 0 or t == len(index) - 1:
                    continue
                side = "long" if d > 0 else "short"
                did = view.record_decision(
                    f"{side} {symbol}: {notes[names[a]][t]}, regime {regime[t]}", now=now,
                    direction=d, confidence=float(confidence[t, a]), regime=regime[t], symbol=symbol,
                    vector=state[t], importance=1.0)
                pending.append((did, a, d))
        for c, comp in enumerate(composers):
            counts[c].step()
            counts[c].add(won, lost)
            w = comp.weights(counts[c].wins, counts[c].losses, rngs[c])
            weights[c, t - s] = w
            composed[c, t - s] = float(np.clip(w @ direction[t], -1.0, 1.0))
    run_index = index[s:]
    positions = pd.DataFrame({comp.name: composed[c] for c, comp in enumerate(composers)}, index=run_index)
    for a, n in enumerate(names):
        positions[n] = direction[s:, a]
    return AgentRun(
        signals={n: f.iloc[s:] for n, f in sig.items()},
        positions=positions,
        weights={comp.name: pd.DataFrame(weights[c], index=run_index, columns=names)
                 for c, comp in enumerate(composers)},
        decisions=memory.decisions(now=index[-1], agents=names),
    )


def compare_composers(run: AgentRun, prices: pd.DataFrame, cost_bps: float = 5.0, n_boot: int = 1000,
                      seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Backtest every column of ``run.positions`` (composers and agents alone) and buy-and-hold on the same
    bars after costs (:class:`course_lib.Backtester`). Returns (metrics table, equity curves as growth of 1)."""
    from ..backtest.engine import BacktestConfig, Backtester

    bt = Backtester(BacktestConfig(cost_bps=cost_bps, n_boot=n_boot, seed=seed))
    rows, curves = {}, {}
    for name in run.positions.columns:
        res = bt.run(run.positions[name], prices)
        rows[name] = res.metrics
        curves[name] = (1 + res.returns).cumprod()
    rows["buy_and_hold"] = res.benchmark_metrics
    curves["buy_and_hold"] = (1 + res.benchmark_returns).cumprod()
    cols = ["sharpe", "sharpe_ci_low", "sharpe_ci_high", "annual_return", "max_drawdown", "turnover", "exposure"]
    return pd.DataFrame(rows).T[cols], curves
