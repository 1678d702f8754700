"""Historical similarity: "when have we seen this market before, and what happened next?" (lesson 06).

One home for analog search. The CLI's ``similar`` command, :class:`course_lib.KNNAnalogForecaster` and
:class:`course_lib.HistoricalSimilarityStrategy` all go through this module, so the two rules that make an
analog honest live in one place:

* **Causal.** A past window is a candidate for a query at time t only if its outcome over the horizon was
  known by t (its end bar + horizon <= t). A window that ends at t-2 with a 5-bar outcome is *not* a
  candidate: what followed it is still in the future.
* **Distinct episodes.** Windows one bar apart share almost all their bars, so the ten "most similar
  moments" of a naive search are often one episode counted ten times (and the windows just before the
  query resemble it because they *are* it). No two returned neighbours, and no neighbour and the query,
  end closer than an exclusion zone (default: the window length), as in the matrix-profile literature.

Where things are, in the lesson's order:

1. a window, described - :func:`embed_windows`, :class:`AnalogIndex` (in :mod:`course_lib.analog_index`);
2. "this looks like..." - search: :class:`AnalogSearch`, :func:`find_analogs` (distinct past episodes and
   what followed them);
3. from neighbours to a forecast - weights and forecast: :func:`analog_weights`, :func:`analog_forecast`,
   :func:`explain`, :func:`forward_paths`;
4. does similarity forecast anything? - measures: :func:`oos_r2`, :func:`hit_rate`, :func:`r2_interval`,
   :func:`analog_skill`, :func:`motif_recall`, :func:`time_shuffled`;
5. trading on analogs - strategy: :class:`AnalogSpreadStrategy`, :func:`walk_forward_analogs` (through the
   :class:`course_lib.Backtester`);
6. inference-time learning - :func:`novel_motif_market`, :func:`inference_time_learning`;

then engineering: :func:`memory_windows` (the windows a trained model holds, for the CLI's ``similar``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .analog_index import (  # the shared pieces, also importable from here
    EMBEDDING_DESCRIPTIONS,
    AnalogHits,
    AnalogIndex,
    WindowEmbedding,
    _distinct_top,  # noqa: F401 - its old home, still importable
    embed_windows,
)
from .backtest.engine import BacktestConfig, Backtester, BacktestResult
from .data.features import FeatureConfig, compute_features, forward_log_return
from .data.loaders import DataError
from .data.windows import FeatureScaler, WindowSet, make_windows, walk_forward_folds

__all__ = [
    "EMBEDDING_DESCRIPTIONS",
    "AnalogBacktest",
    "AnalogBacktestConfig",
    "AnalogForecast",
    "AnalogHits",
    "AnalogIndex",
    "AnalogSearch",
    "AnalogSpreadStrategy",
    "LearningExperiment",
    "WindowEmbedding",
    "analog_forecast",
    "analog_skill",
    "analog_weights",
    "embed_windows",
    "explain",
    "find_analogs",
    "forward_paths",
    "hit_rate",
    "inference_time_learning",
    "memory_windows",
    "motif_recall",
    "novel_motif_market",
    "oos_r2",
    "r2_interval",
    "time_shuffled",
    "walk_forward_analogs",
]

_NEVER = np.iinfo(np.int64).max


# ------------------------------------------------------------------------------------------- search
def _bars_and_ready(
    windows: WindowSet, close: pd.Series | None, need_h: int
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """The bar axis, each window's bar position on it, and when its ``need_h``-bar outcome is known."""
    if close is not None:
        bars = pd.DatetimeIndex(close.index).as_unit("ns")
        pos = bars.get_indexer(pd.DatetimeIndex(windows.end_time).as_unit("ns"))
        if (pos < 0).any():
            missing = windows.end_time[pos < 0][0]
            raise DataError(f"window ending {missing} is not a bar of `close`; pass the closes the windows were "
                            "cut from.")  # fmt: skip
        later = pos + need_h
        ready = np.full(len(pos), _NEVER, dtype=np.int64)
        ok = later < len(bars)
        ready[ok] = bars.asi8[later[ok]]
        return bars, pos, ready
    if need_h != windows.horizon:
        raise ValueError(f"outcomes over {need_h} bars need `close` (the windows' own labels are over "
                         f"{windows.horizon} bars).")  # fmt: skip
    bars = pd.DatetimeIndex(windows.end_time).as_unit("ns")
    return bars, np.arange(len(windows), dtype=np.int64), windows.available_at_ns()


def _query_row(windows: WindowSet, query: Any) -> int:
    if isinstance(query, (int, np.integer)):
        row = int(query)
        if not -len(windows) <= row < len(windows):
            raise IndexError(f"query row {row} is outside the {len(windows)} windows.")
        return row % len(windows)
    t = pd.Timestamp(query)
    row = int(pd.DatetimeIndex(windows.end_time).searchsorted(t, side="right")) - 1
    if row < 0:
        raise DataError(f"no window ends at or before {t} (the first ends {windows.end_time[0]}).")
    return row


class AnalogSearch:
    """Analog search over one history, prepared once and queried many times (:func:`find_analogs` is the
    one-shot form; the arguments mean the same). Building it embeds every window and precomputes when each
    outcome is known and what followed; :meth:`query` then costs one pass over the vectors."""

    def __init__(
        self,
        windows: WindowSet,
        *,
        method: str = "raw",
        lookback: int | None = None,
        metric: str | None = None,
        close: pd.Series | None = None,
        horizons: Sequence[int] | None = None,
        regimes: pd.Series | None = None,
        trainer: Any = None,
        embedding: WindowEmbedding | None = None,
    ):
        self.horizons = tuple(int(h) for h in (horizons or (windows.horizon,)))
        if min(self.horizons) < 1:
            raise ValueError(f"horizons must be >= 1 bar, got {self.horizons}.")
        if close is None and set(self.horizons) != {windows.horizon}:
            raise ValueError(f"horizons {self.horizons} need `close`: without it the only outcome known is the "
                             f"windows' own {windows.horizon}-bar label, so every fwd_<h> column would hold it. "
                             "Pass close=<the closes the windows were cut from>, or horizons=None.")  # fmt: skip
        self.windows = windows
        self.trainer = trainer
        self.embedding = embedding if embedding is not None else embed_windows(windows, method, lookback, trainer)
        if len(self.embedding) != len(windows):
            raise ValueError("embedding must describe `windows` (one vector per window).")
        self.metric = metric or ("cosine" if self.embedding.method == "memory_keys" else "euclidean")
        self.bars, self.pos, ready = _bars_and_ready(windows, close, max(self.horizons))
        self.index = AnalogIndex(self.embedding.vectors.shape[1], self.metric)
        self.index.add(self.embedding.vectors, windows.end_time_ns(), ready, self.pos)
        self._end = pd.DatetimeIndex(windows.end_time)
        self._fwd: dict[int, np.ndarray] = {}
        for h in self.horizons:
            if close is not None:
                logc = np.log(close.to_numpy(dtype=float))
                later = self.pos + h
                ok = later < len(logc)
                self._fwd[h] = np.where(ok, logc[np.minimum(later, len(logc) - 1)] - logc[self.pos], np.nan)
            else:
                self._fwd[h] = np.asarray(windows.y, dtype=float)
        self._regimes = None if regimes is None else pd.Series(regimes).reindex(self._end).to_numpy()

    def __len__(self) -> int:
        return len(self.index)

    def query(
        self,
        query: Any = -1,
        *,
        k: int = 5,
        exclusion: int | None = None,
        weighting: str = "simplex",
        temperature: float = 0.1,
        query_window: WindowSet | None = None,
    ) -> pd.DataFrame:
        """The ``k`` most similar distinct past episodes to ``query`` (a date or a row); see :func:`find_analogs`."""
        emb = self.embedding
        excl = self.windows.seq_len if exclusion is None else int(exclusion)
        if query_window is not None:
            if len(query_window) != 1:
                raise ValueError("query_window must hold exactly one window.")
            qvec = embed_windows(query_window, emb.method, emb.lookback, self.trainer).vectors
            t = pd.Timestamp(query_window.end_time[0])
        else:
            row = _query_row(self.windows, query)
            qvec = emb.vectors[row : row + 1]
            t = pd.Timestamp(self._end[row])
        t_ns = int(t.as_unit("ns").value)
        qpos = int(self.bars.searchsorted(t, side="right")) - 1
        hits = self.index.search(qvec, k=k, as_of=t_ns, query_pos=qpos, exclusion=excl)
        sel = hits.mask[0]
        rows = hits.indices[0, sel]
        sims, dists = hits.similarity[0, sel], hits.distance[0, sel]
        data = {
            "rank": np.arange(1, len(rows) + 1),
            "end_time": self._end[rows],
            "similarity": sims,
            "distance": dists,
            "weight": analog_weights(sims, dists, weighting, temperature),
        }
        data.update({f"fwd_{h}": self._fwd[h][rows] for h in self.horizons})
        if self._regimes is not None:
            data["regime"] = self._regimes[rows]
        out = pd.DataFrame(data)
        out.attrs.update(query_time=t, method=emb.method, metric=self.metric, exclusion=excl,
                         horizons=self.horizons, lookback=emb.lookback, weighting=weighting)  # fmt: skip
        return out


def find_analogs(
    windows: WindowSet,
    query: Any = -1,
    *,
    k: int = 5,
    method: str = "raw",
    lookback: int | None = None,
    metric: str | None = None,
    exclusion: int | None = None,
    close: pd.Series | None = None,
    horizons: Sequence[int] | None = None,
    regimes: pd.Series | None = None,
    weighting: str = "simplex",
    temperature: float = 0.1,
    trainer: Any = None,
    embedding: WindowEmbedding | None = None,
    query_window: WindowSet | None = None,
) -> pd.DataFrame:
    """The ``k`` most similar *distinct* past episodes to a moment, and what followed each.

    Args:
        windows: the searchable history, scaled (keep the unlabelled last windows with
            ``make_windows(..., drop_unlabeled=False)`` to query the most recent bar).
        query: a date (the last window ending at or before it) or a row of ``windows``.
        method, lookback, trainer: the window description (:func:`embed_windows`); ``embedding``: a
            precomputed one of ``windows``. To query many dates, build an :class:`AnalogSearch` once.
        metric: ``"cosine"`` or ``"euclidean"`` (default: cosine for memory keys, euclidean otherwise).
        exclusion: bars between any two returned episodes and between an episode and the query (default
            ``windows.seq_len``: windows that close share bars, so they are one episode).
        close: the close prices the windows were cut from; gives forward returns over ``horizons``.
        horizons: outcome horizons in bars (default ``(windows.horizon,)``). A window is a candidate only if
            its outcome over the *longest* horizon was known at the query time: end + horizon <= query.
        regimes: optional regime label per bar, reported at each neighbour's end.
        weighting, temperature: see :func:`analog_weights` (default: the simplex weights, scale-free).
        query_window: a one-window set to use as the query instead of a row of ``windows`` (e.g. another
            market at the same date); its end time is the query time.

    Returns:
        One row per neighbour (best first): ``rank``, ``end_time``, ``similarity``, ``distance``, ``weight``,
        ``fwd_<h>`` (forward log return over h bars) for each horizon, ``regime`` when given. ``attrs`` hold
        the query time, method, metric, exclusion and horizons. Fewer than ``k`` rows when the resolved
        history holds fewer distinct episodes.
    """
    search = AnalogSearch(windows, method=method, lookback=lookback, metric=metric, close=close,
                          horizons=horizons, regimes=regimes, trainer=trainer, embedding=embedding)  # fmt: skip
    return search.query(query, k=k, exclusion=exclusion, weighting=weighting, temperature=temperature,
                        query_window=query_window)  # fmt: skip


# ------------------------------------------------------------------------------------------ weights
def analog_weights(
    similarity: Any = None, distance: Any = None, scheme: str = "softmax", temperature: float = 0.1
) -> np.ndarray:
    """Weights over the neighbours, non-negative and summing to one.

    * ``"softmax"``: ``exp(similarity / temperature)`` (small temperature: the nearest dominates);
    * ``"simplex"``: ``exp(-d_i / d_1)`` with ``d_1`` the nearest distance, the simplex projection of
      Sugihara & May (1990); an exact twin (``d_1 = 0``) takes all the weight;
    * ``"uniform"``: every neighbour counts the same (the chapter's plain average).
    """
    if scheme == "uniform":
        base = similarity if similarity is not None else distance
        n = len(np.asarray(base))
        return np.full(n, 1.0 / n) if n else np.zeros(0)
    if scheme == "softmax":
        if similarity is None:
            raise ValueError("scheme='softmax' needs similarity.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        s = np.asarray(similarity, dtype=float) / temperature
        if len(s) == 0:
            return np.zeros(0)
        w = np.exp(s - s.max())
    elif scheme == "simplex":
        if distance is None:
            raise ValueError("scheme='simplex' needs distance.")
        d = np.asarray(distance, dtype=float)
        if len(d) == 0:
            return np.zeros(0)
        d1 = d.min()
        w = (d <= d1).astype(float) if d1 <= 0 else np.exp(-d / d1)
    else:
        raise ValueError(f"scheme must be 'softmax', 'simplex' or 'uniform', got {scheme!r}.")
    return w / w.sum()


# ----------------------------------------------------------------------------------------- forecast
@dataclass(frozen=True)
class AnalogForecast:
    """What the neighbours say about one horizon: weighted ``mean``, weighted ``quantiles``, ``spread``
    (weighted standard deviation), ``up_share`` (share of neighbours followed by a rise, unweighted as in the
    chapter) and ``n`` neighbours."""

    mean: float
    quantiles: dict[float, float]
    spread: float
    up_share: float
    n: int
    column: str


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cw = np.cumsum(w) - 0.5 * w
    return float(np.interp(q, cw / w.sum(), x))


def _column(analogs: pd.DataFrame, column: str | None) -> str:
    if column is None:
        cols = [c for c in analogs.columns if c.startswith("fwd_")]
        if not cols:
            raise ValueError("no fwd_<h> column: pass the DataFrame returned by find_analogs.")
        return cols[-1]
    if column not in analogs:
        raise ValueError(f"no column {column!r}; available: {list(analogs.columns)}.")
    return column


def explain(analogs: pd.DataFrame, column: str | None = None) -> pd.DataFrame:
    """One row per neighbour: its date, similarity, weight, outcome and ``contribution = weight x outcome``.

    The contributions add up to :func:`analog_forecast`'s ``mean`` (exactly: both use ``math.fsum``), so the
    forecast can be read as "this much from 2002-07-23, that much from 1987-10-19".
    """
    col = _column(analogs, column)
    w = analogs["weight"].to_numpy(dtype=float)
    r = analogs[col].to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "end_time": analogs["end_time"].to_numpy(),
            "similarity": analogs["similarity"].to_numpy(dtype=float),
            "weight": w,
            "outcome": r,
            "contribution": w * r,
        },
        index=pd.Index(analogs["rank"].to_numpy(), name="rank"),
    )
    out.attrs.update(column=col, forecast=math.fsum(w * r))
    return out


def analog_forecast(
    analogs: pd.DataFrame, column: str | None = None, quantiles: Sequence[float] = (0.1, 0.5, 0.9)
) -> AnalogForecast:
    """The analog forecast of ``column`` (default: the longest ``fwd_<h>``) from :func:`find_analogs`' rows."""
    col = _column(analogs, column)
    w = analogs["weight"].to_numpy(dtype=float)
    r = analogs[col].to_numpy(dtype=float)
    if len(r) == 0:
        nan = float("nan")
        return AnalogForecast(nan, {q: nan for q in quantiles}, nan, nan, 0, col)
    if not np.isfinite(r).all():
        raise ValueError(f"{col} has unknown outcomes; find_analogs only returns neighbours whose outcome is known.")
    if not math.isclose(math.fsum(w), 1.0, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError("weights must sum to one; use analog_weights().")
    mean = math.fsum(w * r)
    spread = math.sqrt(max(math.fsum(w * (r - mean) ** 2), 0.0))
    return AnalogForecast(
        mean=mean,
        quantiles={q: _weighted_quantile(r, w, q) for q in quantiles},
        spread=spread,
        up_share=float(np.mean(r > 0)),
        n=len(r),
        column=col,
    )


def forward_paths(close: pd.Series, end_times: Any, horizon: int, as_of: Any = None) -> pd.DataFrame:
    """Cumulative log return over the ``horizon`` bars after each end time (row 0 is 0): the fan chart's
    lines. NaN where the data ends first, and, with ``as_of``, at every bar after ``as_of`` (what was not yet
    known then). Columns are the end times."""
    bars = pd.DatetimeIndex(close.index)
    pos = bars.get_indexer(pd.DatetimeIndex(end_times))
    if (pos < 0).any():
        raise DataError("an end time is not a bar of `close`.")
    logc = np.log(close.to_numpy(dtype=float))
    last = len(logc) - 1
    if as_of is not None:
        last = min(last, int(bars.searchsorted(pd.Timestamp(as_of), side="right")) - 1)
    steps = np.arange(horizon + 1)
    later = pos[None, :] + steps[:, None]
    ok = later <= last
    vals = np.where(ok, logc[np.clip(later, 0, len(logc) - 1)] - logc[pos][None, :], np.nan)
    return pd.DataFrame(vals, index=pd.Index(steps, name="bars_after"), columns=pd.DatetimeIndex(end_times))


# ----------------------------------------------------------------------------------------- measures
def oos_r2(pred: Any, y: Any, benchmark: Any) -> float:
    """Out-of-sample R^2 against a benchmark forecast: ``1 - SSE(pred) / SSE(benchmark)`` (Campbell &
    Thompson, 2008). Positive: the forecast beats the benchmark; 0: no better; negative: worse."""
    p, t = np.asarray(pred, float), np.asarray(y, float)
    b = np.broadcast_to(np.asarray(benchmark, float), t.shape)
    ok = np.isfinite(p) & np.isfinite(t) & np.isfinite(b)
    den = float(np.sum((t[ok] - b[ok]) ** 2))
    return 1.0 - float(np.sum((t[ok] - p[ok]) ** 2)) / den if den > 0 else float("nan")


def hit_rate(pred: Any, y: Any, level: float = 0.95, horizon: int = 1, n_boot: int = 2000,
             seed: int = 0) -> dict[str, float]:
    """Share of non-zero forecasts whose sign matches the outcome, with an interval that respects how the
    outcomes were made.

    ``horizon``: the bars each outcome spans, on consecutive windows (in time order). Outcomes of windows
    fewer than ``horizon`` bars apart share bars, so their hits are dependent: for ``horizon > 1`` the
    interval is a percentile circular block bootstrap (:func:`course_lib.stats.block_bootstrap_ci`, blocks of
    :func:`course_lib.stats.overlap_block` scored windows). ``horizon=1`` (one-bar outcomes, or events that
    never overlap): the Wilson binomial interval. Zero forecasts (abstentions) and zero outcomes are not
    scored. Returns ``rate``, ``low``, ``high``, ``n``.
    """
    from scipy.stats import binomtest

    from .stats import block_bootstrap_ci, overlap_block

    p, t = np.asarray(pred, float), np.asarray(y, float)
    ok = np.isfinite(p) & np.isfinite(t) & (p != 0) & (t != 0)
    n = int(ok.sum())
    if n == 0:
        return {"rate": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    hit = (np.sign(p[ok]) == np.sign(t[ok])).astype(float)
    if int(horizon) > 1:
        lo, hi = block_bootstrap_ci(hit, overlap_block(horizon), level=level, n_boot=n_boot, seed=seed)
    else:
        ci = binomtest(int(hit.sum()), n).proportion_ci(confidence_level=level, method="wilson")
        lo, hi = float(ci.low), float(ci.high)
    return {"rate": float(hit.mean()), "low": lo, "high": hi, "n": n}


def r2_interval(pred: Any, y: Any, benchmark: float, horizon: int = 1, level: float = 0.95, n_boot: int = 2000,
                seed: int = 0) -> tuple[float, float]:
    """Percentile interval of :func:`oos_r2` against a fixed ``benchmark`` forecast, by circular block
    bootstrap of (forecast, outcome) pairs in time order, blocks of :func:`course_lib.stats.overlap_block`
    (``horizon``) windows, so overlapping outcomes stay together."""
    from .stats import block_bootstrap_ci, overlap_block

    return block_bootstrap_ci(pred, overlap_block(horizon), level, n_boot, seed,
                              lambda a, b: oos_r2(a, b, benchmark), y)  # fmt: skip


def _trailing_variance(close: pd.Series, window: int, lam: float) -> tuple[pd.Series, pd.Series]:
    """Per-bar variance of log returns known at each bar's close: a trailing window and RiskMetrics EWMA."""
    r = np.log(close.astype(float)).diff()
    trailing = r.rolling(window, min_periods=window).var(ddof=0)
    ewma = (r * r).ewm(alpha=1 - lam, adjust=False, min_periods=window).mean()
    return trailing, ewma


def analog_skill(
    ohlcv: pd.DataFrame,
    *,
    seq_len: int = 32,
    horizon: int = 5,
    lookback: int | None = None,
    k: int = 10,
    method: str = "raw",
    feature_columns: Sequence[str] | None = None,
    exclusion: int | None = None,
    train_frac: float = 0.5,
    subsets: Any = None,
    vol_window: int = 20,
    ewma_lambda: float = 0.94,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Does the analog forecast know anything out of sample? Direction, size and volatility, with baselines.

    ``method``, ``lookback`` and ``feature_columns`` choose what is compared (e.g. ``("log_return",)`` and
    ``"shape"``: the path of returns only). One chronological cut at ``train_frac`` of the bars: the scaler is fitted on the bars up to the cut, the
    kNN analog memory (distinct episodes, online: test windows join it once resolved) starts with the windows
    resolved by the cut, and every later window is forecast. Scores, per row (``all`` and each mask that
    ``subsets(test_windows)`` returns, a dict of name -> boolean mask):

    * ``hit_rate`` (``hit_low``, ``hit_high``: 95% interval) of the sign of the forecast return;
    * ``r2_return``: out-of-sample R^2 of the forecast return against the historical mean (training windows);
    * ``r2_var_analog`` / ``r2_var_trailing`` / ``r2_var_ewma``: R^2 of forecasts of the squared return
      over the horizon against the historical mean square: the neighbours' mean squared outcome, a
      ``vol_window``-bar trailing variance and an EWMA variance (``ewma_lambda``) scaled to the horizon.

    Consecutive test windows' ``horizon``-bar outcomes overlap, so every interval (``*_low``, ``*_high``:
    95%) is a circular block bootstrap over the windows in time order with blocks of twice the horizon
    (:func:`hit_rate`, :func:`r2_interval`; ``n_boot`` resamples, ``seed``), never a formula that treats
    overlapping outcomes as independent.
    """
    from .backtest.strategies import KNNAnalogForecaster

    features = compute_features(ohlcv)
    if feature_columns is not None:
        features = features[list(feature_columns)]
    cut = features.index[int(train_frac * len(features))]
    scaler = FeatureScaler().fit(features.loc[:cut])
    target = forward_log_return(ohlcv["close"], horizon).reindex(features.index)
    w = make_windows(scaler.transform(features), target, seq_len, horizon)
    train = w.subset(np.flatnonzero(w.available_at <= cut))
    test = w.subset(np.flatnonzero(w.end_time > cut))
    knn = KNNAnalogForecaster(k=k, lookback=lookback or seq_len, online=True, method=method,
                              exclusion=seq_len if exclusion is None else exclusion).fit(train)  # fmt: skip
    pred = knn.predict(test)
    y = np.asarray(test.y, dtype=float)
    trailing, ewma = _trailing_variance(ohlcv["close"], vol_window, ewma_lambda)
    var_fc = {
        "analog": (pred["memory_spread"] ** 2 + pred["memory_return"] ** 2).to_numpy(),
        "trailing": horizon * trailing.reindex(test.end_time).to_numpy(),
        "ewma": horizon * ewma.reindex(test.end_time).to_numpy(),
    }
    ytr = np.asarray(train.y, dtype=float)
    masks = {"all": np.ones(len(test), dtype=bool), **(subsets(test) if subsets is not None else {})}
    rows = []
    for name, mask in masks.items():
        m = np.asarray(mask, dtype=bool)
        pr = pred["pred_return"].to_numpy()[m]
        hr = hit_rate(pr, y[m], horizon=horizon, n_boot=n_boot, seed=seed)
        lo, hi = r2_interval(pr, y[m], ytr.mean(), horizon, n_boot=n_boot, seed=seed)
        row = {"subset": name, "n": int(m.sum()), "hit_rate": hr["rate"], "hit_low": hr["low"], "hit_high": hr["high"],
               "r2_return": oos_r2(pr, y[m], ytr.mean()), "r2_return_low": lo, "r2_return_high": hi}  # fmt: skip
        for arm, fc in var_fc.items():
            row[f"r2_var_{arm}"] = oos_r2(fc[m], y[m] ** 2, np.mean(ytr**2))
            row[f"r2_var_{arm}_low"], row[f"r2_var_{arm}_high"] = r2_interval(
                fc[m], y[m] ** 2, float(np.mean(ytr**2)), horizon, n_boot=n_boot, seed=seed)
        rows.append(row)
    return pd.DataFrame(rows).set_index("subset")


def motif_recall(market: Any, query_times_: Any, neighbour_times: Sequence[Any], tolerance: int = 2) -> pd.DataFrame:
    """For queries at planted motif ends: the share of retrieved neighbours that are planted occurrences of
    the *same* motif (a neighbour counts if it ends within ``tolerance`` bars of such an occurrence's end).

    ``chance`` is the share of all bars that lie that close to an occurrence of the same motif: what a
    random pick of past windows would score. Returns one row per query: ``motif``, ``n``, ``recall``,
    ``chance``.
    """
    index = market.ohlcv.index
    motifs = market.motifs
    ends = motifs["end_pos"].to_numpy()
    names = motifs["name"].to_numpy()
    rows = []
    for qt, nts in zip(pd.DatetimeIndex(query_times_), neighbour_times):
        qp = index.get_loc(qt)
        which = np.flatnonzero(np.abs(ends - qp) <= tolerance)
        if len(which) == 0:
            continue
        name = names[which[0]]
        same = ends[names == name]
        npos = index.get_indexer(pd.DatetimeIndex(nts))
        near = np.abs(npos[:, None] - same[None, :]) <= tolerance if len(npos) else np.zeros((0, 1), bool)
        past_bars = np.arange(qp)
        chance = float((np.abs(past_bars[:, None] - same[None, :]) <= tolerance).any(axis=1).mean()) if qp else 0.0
        rows.append({"query": qt, "motif": name, "n": len(npos),
                     "recall": float(near.any(axis=1).mean()) if len(npos) else float("nan"), "chance": chance})  # fmt: skip
    return pd.DataFrame(rows)


def time_shuffled(ohlcv: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The null market: the same bars in a random order (each bar's open/high/low/close relative to the
    previous close, and its volume, move together), rebuilt into prices from the first close.

    Every bar's size and the return distribution survive; any link between a shape and what follows it does
    not. An analog method's skill should vanish here; if it does not, the skill came from somewhere else
    (volatility clustering is destroyed too, so a volatility forecast should lose its edge as well).

    Raises :class:`course_lib.DataError` (naming the bar and the fix) for a missing column, a missing,
    infinite or non-positive price, unsorted times or fewer than two bars: one bad close would otherwise
    spread through the rebuilt prices.
    """
    from .data.loaders import validate_ohlcv

    validate_ohlcv(ohlcv, where="time_shuffled", min_rows=2)  # NaN, zero or missing columns: say so, never spread
    logc = np.log(ohlcv["close"].to_numpy(dtype=float))
    prev = np.r_[logc[0], logc[:-1]]
    rel = {c: np.log(ohlcv[c].to_numpy(dtype=float)) - prev for c in ("open", "high", "low", "close")}
    rng = np.random.default_rng(seed)
    order = np.r_[0, 1 + rng.permutation(len(ohlcv) - 1)]
    new_close = logc[0] + np.cumsum(rel["close"][order] * (np.arange(len(order)) > 0))
    new_prev = np.r_[logc[0], new_close[:-1]]
    out = pd.DataFrame(
        {c: np.exp(new_prev + rel[c][order]) for c in ("open", "high", "low")} | {"close": np.exp(new_close)},
        index=ohlcv.index,
    )
    out["volume"] = ohlcv["volume"].to_numpy()[order]
    return out[["open", "high", "low", "close", "volume"]]


# ----------------------------------------------------------------------------------------- strategy
@dataclass(frozen=True)
class AnalogSpreadStrategy:
    """Trade the sign of the neighbours' mean outcome only when it is large next to their disagreement:
    ``|memory_return| / memory_spread >= min_ratio`` (a t-statistic-like rule; the chapter's rule looks at
    the share of rising neighbours instead, see :class:`course_lib.HistoricalSimilarityStrategy`)."""

    min_ratio: float = 0.3
    allow_short: bool = True

    def positions(self, predictions: pd.DataFrame) -> pd.Series:
        mean = predictions["memory_return"].astype(float)
        spread = predictions["memory_spread"].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (mean.abs() / spread).where(spread > 0, np.inf).where(mean.notna())
        pos = np.sign(mean).where(ratio >= self.min_ratio, 0.0).fillna(0.0)
        if not self.allow_short:
            pos = pos.clip(lower=0.0)
        return pos.astype(float).rename("position")


@dataclass
class AnalogBacktestConfig:
    """Walk-forward analog trading: folds of :func:`course_lib.walk_forward_folds`, a scaler fitted per fold on
    its training bars, a kNN analog memory that grows online with distinct episodes (``exclusion`` bars,
    default ``seq_len``), and two rules backtested with costs."""

    seq_len: int = 32
    horizon: int = 5
    lookback: int | None = None
    k: int = 10
    exclusion: int | None = None
    temperature: float | None = None
    n_folds: int = 4
    long_threshold: float = 0.6
    short_threshold: float = 0.4
    min_ratio: float = 0.3
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    backtest: BacktestConfig = field(default_factory=lambda: BacktestConfig(cost_bps=5.0))


@dataclass
class AnalogBacktest:
    """Out-of-sample predictions, positions, backtests and one metrics table (with Sharpe intervals)."""

    predictions: pd.DataFrame
    positions: dict[str, pd.Series]
    results: dict[str, BacktestResult]
    table: pd.DataFrame


def walk_forward_analogs(ohlcv: pd.DataFrame, config: AnalogBacktestConfig | None = None) -> AnalogBacktest:
    """Walk-forward backtest of the share rule, the mean/spread rule and buy-and-hold on the same bars.

    The target of each window is the forward log return over ``horizon`` bars; the position decided at a
    bar's close is held for the next bar (the backtester's rule), re-decided every bar.
    """
    from .backtest.strategies import BuyAndHoldStrategy, HistoricalSimilarityStrategy, KNNAnalogForecaster

    cfg = config or AnalogBacktestConfig()
    features = compute_features(ohlcv, cfg.feature_config)
    target = forward_log_return(ohlcv["close"], cfg.horizon).reindex(features.index)
    raw = make_windows(features, target, cfg.seq_len, cfg.horizon)
    gap = cfg.horizon + cfg.seq_len - 1
    folds = walk_forward_folds(len(raw), cfg.n_folds, gap=gap, horizon=cfg.horizon, seq_len=cfg.seq_len)
    preds = []
    for fold in folds:
        last_train_bar = int(raw.end_pos[fold.train[-1]])
        scaler = FeatureScaler().fit(features.iloc[: last_train_bar + 1])
        w = make_windows(scaler.transform(features), target, cfg.seq_len, cfg.horizon)
        knn = KNNAnalogForecaster(k=cfg.k, lookback=cfg.lookback or cfg.seq_len, temperature=cfg.temperature,
                                  online=True, exclusion=cfg.seq_len if cfg.exclusion is None else cfg.exclusion)  # fmt: skip
        knn.fit(w.subset(fold.train))
        preds.append(knn.predict(w.subset(fold.test)))
    pred = pd.concat(preds).sort_index()
    share = HistoricalSimilarityStrategy(cfg.long_threshold, cfg.short_threshold, min_neighbors=1)
    positions = {
        "buy_and_hold": BuyAndHoldStrategy().positions(pd.DatetimeIndex(pred.index)),
        "analog_share": share.positions(pred),
        "analog_mean_spread": AnalogSpreadStrategy(cfg.min_ratio).positions(pred),
    }
    bt = Backtester(cfg.backtest)
    results = {name: bt.run(pos, ohlcv) for name, pos in positions.items()}
    table = pd.DataFrame({name: r.metrics for name, r in results.items()}).T
    table.index.name = "strategy"
    return AnalogBacktest(pred, positions, results, table)


# -------------------------------------------------------------------------- inference-time learning
def novel_motif_market(
    n_before: int = 3000,
    n_after: int = 2000,
    seed: int = 0,
    novel: Sequence[str] = ("failed_rebound", "failed_selloff"),
    config: Any = None,
) -> Any:
    """A synthetic market in which the ``novel`` motifs first appear after bar ``n_before`` (the end of
    training).

    Before: the other library motifs. After: only the novel ones, planted as often as the coverage allows
    (so their occurrences can be counted). The default novel pair is a motif and its mirror image, with
    opposite aftermaths, so always guessing "up" scores one half on them, not 1. Prices continue from the
    last close; the motifs table, regimes and per-bar ground truth cover both parts (positions refer to the
    joined series). Returns a :class:`course_lib.SyntheticMarket`.
    """
    from dataclasses import replace

    from .data.synthetic import MOTIF_LIBRARY, SyntheticConfig, append_market, make_synthetic_market

    novel = (novel,) if isinstance(novel, str) else tuple(novel)
    unknown = [m for m in novel if m not in MOTIF_LIBRARY]
    if unknown or not novel:
        raise ValueError(f"unknown motif(s) {unknown or novel}; choose from {sorted(MOTIF_LIBRARY)}.")
    base = config or SyntheticConfig()
    old = tuple(m for m in base.motifs if m not in novel)
    a = make_synthetic_market(n_before, seed, replace(base, motifs=old))
    b_cfg = replace(base, motifs=novel, start=str(a.ohlcv.index[-1].date()))  # its bar 0 = a's last bar
    b = make_synthetic_market(n_after + 1, seed + 10_000, b_cfg)
    return append_market(a, b, source=f"synthetic:novel={'+'.join(novel)}:seed={seed}", motif_id_offset=len(old),
                         motif_names=old + novel, config=base, seed=seed)


@dataclass
class LearningExperiment:
    """Result of :func:`inference_time_learning`: one row per (seed, arm, novel occurrence after training)
    with ``seen`` (earlier occurrences whose outcome was known at its end) and ``correct``."""

    per_occurrence: pd.DataFrame
    arms: tuple[str, ...]

    def curve(self, bins: Sequence[int] = (0, 1, 3, 6, 11, 21)) -> dict[str, pd.DataFrame]:
        """Accuracy per bin of ``seen`` (bin edges: ``[0], [1, 2], [3, 5], ...``): mean over seeds with a 95%
        t-interval over seeds (each seed is one market and, for the transformer, one training), clipped to
        [0, 1] (:func:`course_lib.stats.t_interval`); NaN ends with one seed."""
        from .stats import t_interval

        df = self.per_occurrence.copy()
        edges = list(bins) + [np.inf]
        df["bin"] = pd.cut(df["seen"], edges, right=False, labels=list(bins)).astype(int)
        out = {}
        for arm in self.arms:
            per_seed = df[df.arm == arm].groupby(["bin", "seed"])["correct"].mean().unstack("seed")
            ci = [t_interval(row, bounds=(0.0, 1.0)) for row in per_seed.to_numpy()]  # accuracy lives in [0, 1]
            out[arm] = pd.DataFrame({"mean": [c["diff"] for c in ci], "low": [c["ci_low"] for c in ci],
                                     "high": [c["ci_high"] for c in ci], "n_seeds": [c["n"] for c in ci]},
                                    index=per_seed.index).rename_axis("seen")  # fmt: skip
        return out

    def summary(self) -> pd.DataFrame:
        """Accuracy per arm over all novel occurrences, early (``seen < 3``) and late (``seen >= 10``)."""
        df = self.per_occurrence
        rows = {}
        for arm in self.arms:
            d = df[df.arm == arm]
            rows[arm] = {"all": d.correct.mean(), "early (seen < 3)": d[d.seen < 3].correct.mean(),
                         "late (seen >= 10)": d[d.seen >= 10].correct.mean(), "n": len(d)}  # fmt: skip
        return pd.DataFrame(rows).T


def inference_time_learning(
    seeds: Sequence[int] = (0, 1, 2),
    n_before: int = 3000,
    n_after: int = 2000,
    seq_len: int = 32,
    horizon: int = 5,
    knn_k: int = 10,
    lookback: int = 12,
    method: str = "shape",
    feature_columns: Sequence[str] | None = ("log_return",),
    transformer: dict | None = None,
    trainer: dict | None = None,
    progress: bool = True,
) -> LearningExperiment:
    """Add to memory, no retraining: does a memory that grows online learn a motif it never saw in training?

    For each seed: a :func:`novel_motif_market`; a scaler fitted on the first ``n_before`` bars only; every
    model fitted on the windows whose label resolved by then. Then, without any retraining, each arm predicts
    every later window in time order and is scored at the last bar of each novel motif occurrence (sign of the
    forecast vs the planted aftermath direction). Every model reads ``feature_columns`` (default: the log
    returns only, the motifs' medium); the kNN compares the ``method`` description of the last ``lookback``
    bars:

    * ``knn frozen``: the kNN analog forecaster with its training memory; ``knn online``: the same, adding
      each window once its outcome is known (``online=True``);
    * with ``transformer`` (a dict of :class:`course_lib.MemoryTransformerConfig` fields, e.g. a small
      model; ``trainer``: :class:`course_lib.TrainerConfig` fields): ``transformer frozen``
      (``predict_memory="train"``), ``transformer online`` (``predict_memory="online"``, same weights) and
      ``transformer no memory`` (the same network trained with ``use_memory=False``).
    """
    from tqdm.auto import tqdm

    rows = []
    arms = ["knn frozen", "knn online"]
    if transformer is not None:
        arms += ["transformer frozen", "transformer online", "transformer no memory"]
    for seed in tqdm(list(seeds), desc="seeds", disable=not progress):
        w, scaler, train, test, novel, at, seen = _novel_occurrences(seed, n_before, n_after, seq_len, horizon,
                                                                      feature_columns)
        preds = _knn_predictions(train, test, at, knn_k, lookback, seq_len, method)
        if transformer is not None:
            preds.update(_transformer_predictions(w, scaler, train, test, seed, seq_len, transformer, trainer))
        direction = novel.direction.to_numpy()
        for arm in arms:
            p = preds[arm][at]
            for j in range(len(at)):
                rows.append({"seed": seed, "arm": arm, "occurrence": j, "seen": int(seen[j]), "motif": novel.name.iloc[j],
                             "correct": float(np.sign(p[j]) == direction[j])})  # fmt: skip
    return LearningExperiment(pd.DataFrame(rows), tuple(arms))


def _novel_occurrences(seed: int, n_before: int, n_after: int, seq_len: int, horizon: int,
                       feature_columns: Sequence[str] | None) -> tuple:
    """One seed's market and windows: (windows, scaler, train, test, novel occurrences after training, their
    rows in ``test``, how many earlier occurrences had a known outcome at each one's end)."""
    m = novel_motif_market(n_before, n_after, seed)
    feats = compute_features(m.ohlcv)
    if feature_columns is not None:
        feats = feats[list(feature_columns)]
    cut = m.ohlcv.index[n_before - 1]
    scaler = FeatureScaler().fit(feats.loc[:cut])
    target = forward_log_return(m.ohlcv["close"], horizon).reindex(feats.index)
    w = make_windows(scaler.transform(feats), target, seq_len, horizon)
    train = w.subset(np.flatnonzero(w.available_at <= cut))
    test = w.subset(np.flatnonzero(w.end_time > cut))
    novel = m.motifs[m.motifs.end_pos >= n_before].sort_values("end_pos")
    ends = m.ohlcv.index[novel.end_pos.to_numpy()]
    at = pd.DatetimeIndex(test.end_time).get_indexer(ends)
    keep = at >= 0
    novel, ends, at = novel[keep], ends[keep], at[keep]
    resolved = m.ohlcv.index[np.minimum(novel.end_pos.to_numpy() + horizon, len(m.ohlcv) - 1)]
    seen = np.array([(resolved[:i] <= e).sum() for i, e in enumerate(ends)])
    return w, scaler, train, test, novel, at, seen


def _knn_predictions(train: WindowSet, test: WindowSet, at: np.ndarray, knn_k: int, lookback: int, seq_len: int,
                     method: str) -> dict[str, np.ndarray]:
    """The frozen and the online kNN's forecasts for ``test`` (NaN except at the rows ``at``)."""
    from .backtest.strategies import KNNAnalogForecaster

    preds: dict[str, np.ndarray] = {}
    scored = test.subset(at)  # the kNN is scored at the occurrences only (its memory still grows)
    for name, online in (("knn frozen", False), ("knn online", True)):
        knn = KNNAnalogForecaster(k=knn_k, lookback=lookback, exclusion=seq_len, method=method).fit(train)
        if online:
            knn.remember(test)  # every test window, each retrievable only once its outcome is known
        preds[name] = np.full(len(test), np.nan)
        preds[name][at] = knn.predict(scored)["pred_return"].to_numpy()
    return preds


def _transformer_predictions(w: WindowSet, scaler: FeatureScaler, train: WindowSet, test: WindowSet, seed: int,
                             seq_len: int, transformer: dict, trainer: dict | None) -> dict[str, np.ndarray]:
    """The transformer's forecasts for ``test``: frozen memory, online memory (same weights), no memory."""
    from .model import MemoryTransformerConfig
    from .training import MemoryTransformerTrainer, TrainerConfig

    preds: dict[str, np.ndarray] = {}
    tkw = {"progress": False, "seed": seed, **(trainer or {})}
    for use_memory in (True, False):
        mcfg = MemoryTransformerConfig(**{"input_dim": w.n_features, "seq_len": seq_len, **transformer,
                                          "use_memory": use_memory})  # fmt: skip
        tr = MemoryTransformerTrainer(mcfg, TrainerConfig(**tkw), scaler=scaler)
        tr.fit(train)
        if use_memory:
            preds["transformer frozen"] = tr.predict(test)["pred_return"].to_numpy()
            tr.config.predict_memory = "online"
            preds["transformer online"] = tr.predict(test)["pred_return"].to_numpy()
        else:
            preds["transformer no memory"] = tr.predict(test)["pred_return"].to_numpy()
    return preds


# -------------------------------------------------------------------------------------- engineering
def memory_windows(trainer: Any) -> WindowSet:
    """The windows a trained :class:`course_lib.MemoryTransformerTrainer` holds in its memory (its training
    windows, with their labels and times), to search with ``method="memory_keys"``."""
    memory = getattr(trainer, "training_memory", None)
    windows = None if memory is None else memory.windows
    if windows is None:
        raise ValueError("this trainer has no memory (trained with use_memory=False, or not fitted yet).")
    return windows
