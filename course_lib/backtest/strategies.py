"""Trading strategies: turn forecasts (or nothing at all) into positions decided at each bar's close.

Every strategy returns positions indexed by the *decision* time ``t`` (a window's ``end_time``); the
:class:`course_lib.Backtester` then lets them earn bar ``t+1``. None of them looks at anything later than
``t``: the model and memory forecasts are causal by construction (see :mod:`course_lib.training`), the
momentum baseline uses closes up to ``t``, and the kNN analog forecaster only retrieves windows whose
outcomes were known by ``t`` (``as_of``).

* :class:`MemoryTradingStrategy` - the chapter's strategy: direction from the model's forecast,
  confidence raised when the neighbours retrieved from memory agree (:func:`course_lib.agreement_sizing`).
* :class:`HistoricalSimilarityStrategy` - LONG / SHORT / HOLD from the share of the nearest past
  windows that were followed by a rise.
* :class:`KNNAnalogForecaster` - memory alone, no network: the nearest past windows (cosine on the scaled
  features of their last bars, searched by :mod:`course_lib.similarity`) vote with what followed them.
* :class:`MomentumStrategy`, :class:`BuyAndHoldStrategy` - the baselines any model has to beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..analog_index import AnalogIndex, embed_windows
from ..data.windows import WindowSet
from .sizing import agreement_sizing, trailing_scale

__all__ = [
    "BuyAndHoldStrategy",
    "ForecastStrategy",
    "HistoricalSimilarityStrategy",
    "KNNAnalogForecaster",
    "MemoryTradingStrategy",
    "MomentumStrategy",
]


def _rms(x: pd.Series | np.ndarray) -> float:
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.sqrt(np.mean(v * v))) if len(v) else float("nan")


class BuyAndHoldStrategy:
    """Always fully long: the benchmark that costs almost nothing to run."""

    def positions(self, index: pd.DatetimeIndex) -> pd.Series:
        return pd.Series(1.0, index=index, name="position")


@dataclass(frozen=True)
class MomentumStrategy:
    """Time-series momentum: hold the sign of the last ``lookback`` bars' log return (flat if short is off).

    Decided at the close of t from closes up to t only.
    """

    lookback: int = 20
    allow_short: bool = True

    def positions(self, close: pd.Series, index: pd.DatetimeIndex | None = None) -> pd.Series:
        mom = np.log(close.astype(float)).diff(self.lookback)
        pos = np.sign(mom).fillna(0.0)
        if not self.allow_short:
            pos = pos.clip(lower=0.0)
        if index is not None:
            pos = pos.reindex(index).fillna(0.0)
        return pos.rename("position")


@dataclass
class ForecastStrategy:
    """A model without memory (or any forecaster): position = sign(forecast) x strength.

    Strength is ``min(|forecast| / scale, 1)``, so a forecast as large as usual gives a full position.
    ``scale`` should be the forecasts' typical size (root-mean-square) on the *training* period:
    :meth:`calibrate` measures it there. Uncalibrated (``scale=None``), the scale is causal instead:
    :func:`course_lib.trailing_scale`, the RMS of the forecasts up to and including bar t. The RMS of the
    whole test period would be simpler, but it is look-ahead: the last forecast would move the first
    position. Warm-up: the first ``min_periods - 1`` bars (fewer forecasts than ``min_periods``) get
    position 0. ``sizing="sign"`` trades the bare sign. ``column`` names the forecast in a prediction frame.
    """

    column: str = "pred_return"
    sizing: str = "scaled"
    max_position: float = 1.0
    scale: float | None = None
    min_periods: int = 20

    def __post_init__(self) -> None:
        if self.sizing not in ("scaled", "sign"):
            raise ValueError(f"sizing must be 'scaled' or 'sign', got {self.sizing!r}.")
        if self.min_periods < 1:
            raise ValueError(f"min_periods must be >= 1, got {self.min_periods}.")

    def calibrate(self, train_predictions: pd.DataFrame) -> ForecastStrategy:
        """Set ``scale`` to the RMS of the training-period forecasts (known before the test starts)."""
        self.scale = _rms(train_predictions[self.column])
        return self

    def positions(self, predictions: pd.DataFrame) -> pd.Series:
        raw = predictions[self.column].astype(float)
        f = raw.fillna(0.0)
        if self.sizing == "sign":
            pos = np.sign(f)
        else:
            if self.scale and np.isfinite(self.scale):
                scale = pd.Series(float(self.scale), index=f.index)
            else:  # causal: RMS of the forecasts seen so far (NaN forecasts skipped), NaN in the warm-up
                scale = trailing_scale(raw, self.min_periods).set_axis(f.index)
            strength = (f.abs() / scale.where(scale > 0)).clip(upper=1.0).fillna(0.0)
            pos = np.sign(f) * strength
        return (pos * self.max_position).rename("position")


@dataclass
class MemoryTradingStrategy:
    """The chapter's strategy: the model's forecast gives the direction, the memory's neighbours the conviction.

    For each window: ``model_prediction`` (the transformer's forecast of the forward log return) and
    ``memory_avg_return`` (the retrieved neighbours' outcomes, weighted by attention) are turned into a
    signal and a confidence by :func:`course_lib.agreement_sizing`: agreeing signs add their strengths (capped
    at 1), disagreeing ones halve the model's. ``position = signal x confidence x max_position``.

    Call :meth:`calibrate` with predictions on the training period so strengths are measured against the
    training-period sizes (otherwise a causal expanding scale is used, and the first bars get no position).

    Args:
        trainer: a fitted :class:`course_lib.MemoryTransformerTrainer` (only needed for :meth:`generate_signals`
            from windows; a prediction frame can be passed instead).
    """

    trainer: Any = None
    disagree_factor: float = 0.5
    max_position: float = 1.0
    model_scale: float | None = None
    memory_scale: float | None = None

    def calibrate(self, train_predictions: pd.DataFrame | WindowSet) -> MemoryTradingStrategy:
        pred = self._predictions(train_predictions)
        self.model_scale = _rms(pred["pred_return"])
        self.memory_scale = _rms(pred["memory_return"]) if "memory_return" in pred else None
        return self

    def _predictions(self, data: pd.DataFrame | WindowSet) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame):
            return data
        if self.trainer is None:
            raise ValueError(
                "MemoryTradingStrategy needs a trainer to predict from windows; pass predictions instead."
            )
        return self.trainer.predict(data)

    def generate_signals(self, data: pd.DataFrame | WindowSet) -> pd.DataFrame:
        """One row per decision time: model and memory views, signal, agreement, confidence, position."""
        pred = self._predictions(data)
        memory = pred["memory_return"] if "memory_return" in pred else pd.Series(np.nan, index=pred.index)
        sized = agreement_sizing(
            pred["pred_return"],
            memory.fillna(0.0),
            model_scale=self.model_scale,
            memory_scale=self.memory_scale if self.memory_scale and np.isfinite(self.memory_scale) else None,
            disagree_factor=self.disagree_factor,
            max_position=self.max_position,
        )
        out = pd.DataFrame(
            {
                "model_prediction": pred["pred_return"].astype(float),
                "memory_avg_return": memory.astype(float),
                "memory_up_share": pred["memory_up_share"] if "memory_up_share" in pred else np.nan,
            },
            index=pred.index,
        )
        return out.join(sized.set_axis(pred.index))

    def positions(self, data: pd.DataFrame | WindowSet) -> pd.Series:
        return self.generate_signals(data)["position"].rename("position")


@dataclass(frozen=True)
class HistoricalSimilarityStrategy:
    """LONG when at least ``long_threshold`` of the neighbours were followed by a rise, SHORT when at most
    ``short_threshold`` were, HOLD (flat) otherwise or with fewer than ``min_neighbors`` valid neighbours.

    Reads ``memory_up_share`` (and ``n_neighbors`` if present) from a prediction frame: the transformer's
    retrieved neighbours or :class:`KNNAnalogForecaster`'s. :meth:`signals` reports the decision the way the
    chapter does (``LONG``/``SHORT``/``HOLD`` with a confidence); :meth:`positions` is its position column.

    The chapter's ``confidence_threshold=0.7`` is ``long_threshold=0.7, short_threshold=0.3`` here, with one
    difference: its inequalities are strict, so a share of exactly 0.7 holds there and goes long here.
    """

    long_threshold: float = 0.6
    short_threshold: float = 0.4
    min_neighbors: int = 5
    allow_short: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.short_threshold <= self.long_threshold <= 1:
            raise ValueError("need 0 <= short_threshold <= long_threshold <= 1.")

    def signals(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """One row per decision time: ``memory_up_share``, ``signal``, ``confidence`` and ``position``.

        ``signal`` is ``LONG`` / ``SHORT`` / ``HOLD``. ``confidence`` follows the chapter: the share of
        neighbours that rose for LONG, the share that fell (``1 - share``) for SHORT, and 0.5 ("no edge")
        for HOLD; NaN where no neighbour outcome is known. ``position`` is +1 / -1 / 0 accordingly.
        """
        share = predictions["memory_up_share"].astype(float)
        pos = pd.Series(0.0, index=predictions.index)
        pos[share >= self.long_threshold] = 1.0
        if self.allow_short:
            pos[share <= self.short_threshold] = -1.0
        if "n_neighbors" in predictions:
            pos[predictions["n_neighbors"].to_numpy() < self.min_neighbors] = 0.0
        pos[share.isna()] = 0.0
        p = pos.to_numpy()
        signal = np.select([p > 0, p < 0], ["LONG", "SHORT"], "HOLD")
        confidence = np.select([p > 0, p < 0], [share, 1.0 - share], 0.5)
        confidence = np.where(share.isna(), np.nan, confidence)
        return pd.DataFrame(
            {"memory_up_share": share, "signal": signal, "confidence": confidence, "position": pos},
            index=predictions.index,
        )

    def positions(self, predictions: pd.DataFrame) -> pd.Series:
        return self.signals(predictions)["position"].rename("position")


@dataclass
class KNNAnalogForecaster:
    """Memory alone: "what happened after the past moments that looked most like now?"

    Each window's key is its last ``lookback`` bars of scaled features, flattened (the ``"raw"`` description
    of :func:`course_lib.embed_windows`; cosine similarity by default, so the shape matters, not the overall
    size). :meth:`fit` stores the training windows with their outcomes and ``available_at`` times in a
    :class:`course_lib.AnalogIndex`; :meth:`predict` retrieves the ``k`` most similar windows *whose outcomes
    were known at the query's end time* (``as_of``), never the query itself or a later window. With
    ``online=True`` the predicted windows are added too and become retrievable once their own labels
    resolve (what a live system would do); each window is stored once, however many times it is queried
    (``predict`` then ``similar`` on the same windows does not duplicate it).

    ``method="shape"`` or ``"stats"`` describes each window differently (:data:`course_lib.EMBEDDING_DESCRIPTIONS`).
    ``exclusion`` (bars, default 0: plain k nearest neighbours) keeps the neighbours distinct episodes: no
    two of them, and none and the query, end fewer than ``exclusion`` bars apart (see
    :func:`course_lib.find_analogs`; ``exclusion=seq_len`` is the lesson's choice).

    Output columns: ``pred_return`` = ``memory_return`` (mean outcome of the neighbours, or
    similarity-softmax weighted with ``temperature``), ``memory_spread`` (their weighted standard
    deviation), ``memory_up_share``, ``n_neighbors``, ``top_similarity``.
    """

    k: int = 32
    lookback: int = 16
    temperature: float | None = None
    online: bool = False
    exclusion: int = 0
    metric: str = "cosine"
    method: str = "raw"

    def __post_init__(self) -> None:
        if self.method not in ("raw", "shape", "stats"):
            raise ValueError(f"method must be 'raw', 'shape' or 'stats' (see cl.embed_windows), got {self.method!r}.")
        self._memory: AnalogIndex | None = None
        self._added = np.zeros(0, np.int64)  # sorted end times (ns) of the windows already stored

    @property
    def n_stored(self) -> int:
        """Number of windows stored in the memory (each window once, however often it was queried)."""
        return len(self._added)

    @property
    def _slot_returns(self) -> np.ndarray:
        return self._memory.outcome if self._memory is not None else np.zeros(0)

    @property
    def _slot_times(self) -> np.ndarray:
        return self._memory.end_ns if self._memory is not None else np.zeros(0, np.int64)

    def _keys(self, windows: WindowSet) -> np.ndarray:
        return embed_windows(windows, self.method, min(self.lookback, windows.seq_len)).vectors

    def _add(self, windows: WindowSet) -> None:
        """Store the labelled windows not stored yet.

        A window is identified by its end time (one series, so one window per bar). Online mode calls this
        on every query batch; without the check, ``predict`` then ``similar`` on the same windows stored
        them twice, so each analog filled two of the ``k`` neighbour slots and counted double in the vote.
        """
        y = np.asarray(windows.y, dtype=float)
        ends = windows.end_time_ns()
        _, first = np.unique(ends, return_index=True)  # a window repeated within the batch counts once
        keep = np.zeros(len(y), dtype=bool)
        keep[first] = True
        keep &= np.isfinite(y) & ~np.isin(ends, self._added)
        if not keep.any():
            return
        w = windows.subset(np.flatnonzero(keep))
        self._memory.add(self._keys(w), w.end_time_ns(), w.available_at_ns(), w.end_pos, np.asarray(w.y, float))
        self._added = np.union1d(self._added, w.end_time_ns())

    def fit(self, windows: WindowSet, capacity: int = 1_000_000) -> KNNAnalogForecaster:
        """Store ``windows`` (past, labelled) as the memory. (``capacity`` is kept for compatibility: the
        analog index grows as needed.)"""
        self._memory = AnalogIndex(self._keys(windows.subset(slice(0, 1))).shape[1], self.metric)
        self._added = np.zeros(0, np.int64)
        self._add(windows)
        return self

    def remember(self, windows: WindowSet) -> KNNAnalogForecaster:
        """Add labelled windows to the memory without predicting (what ``online=True`` does on each query
        batch). Safe to call with future windows: each stays hidden from queries until its outcome is known
        (``available_at``), so adding a whole test period at once equals adding it bar by bar."""
        if self._memory is None:
            raise ValueError("KNNAnalogForecaster is not fitted: call fit(train_windows) first.")
        self._add(windows)
        return self

    def neighbours(self, windows: WindowSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot ids, similarities, valid mask), each ``(n, k)``, retrieved causally for each window."""
        if self._memory is None:
            raise ValueError("KNNAnalogForecaster is not fitted: call fit(train_windows) first.")
        if self.online:
            self._add(windows)
        res = self._memory.search(
            self._keys(windows), k=self.k, as_of=windows.end_time_ns(), query_pos=windows.end_pos,
            exclusion=self.exclusion,
        )
        return res.indices, res.similarity, res.mask

    def predict(self, windows: WindowSet) -> pd.DataFrame:
        idx, sims, mask = self.neighbours(windows)
        outcomes = np.where(mask, self._slot_returns[np.where(mask, idx, 0)], np.nan)
        if self.temperature:
            logits = np.where(mask, sims / self.temperature, -np.inf)
            peak = np.max(logits, axis=1, keepdims=True)
            logits = logits - np.where(np.isfinite(peak), peak, 0.0)
            w = np.where(mask, np.exp(logits), 0.0)
        else:
            w = mask.astype(float)
        n = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(w * np.nan_to_num(outcomes), axis=1) / w.sum(axis=1), np.nan)
            dev = np.where(mask, np.nan_to_num(outcomes) - np.nan_to_num(mean)[:, None], 0.0)
            spread = np.where(n > 0, np.sqrt(np.sum(w * dev * dev, axis=1) / w.sum(axis=1)), np.nan)
            up = np.where(n > 0, np.sum(mask & (np.nan_to_num(outcomes) > 0), axis=1) / n, np.nan)
        top = np.where(n > 0, np.max(np.where(mask, sims, -np.inf), axis=1), np.nan)
        return pd.DataFrame(
            {
                "pred_return": mean,
                "memory_return": mean,
                "memory_spread": spread,
                "memory_up_share": up,
                "n_neighbors": n,
                "top_similarity": top,
                "y": np.asarray(windows.y, dtype=float),
            },
            index=pd.DatetimeIndex(windows.end_time, name="time"),
        )

    def similar(self, windows: WindowSet, top: int = 5) -> pd.DataFrame:
        """Long table of the ``top`` most similar past windows for each query and what followed them."""
        idx, sims, mask = self.neighbours(windows)
        rows = []
        for i in range(len(windows)):
            for r in range(min(top, idx.shape[1])):
                if not mask[i, r]:
                    continue
                slot = idx[i, r]
                rows.append(
                    (
                        windows.end_time[i],
                        r + 1,
                        pd.Timestamp(int(self._slot_times[slot]), unit="ns"),
                        float(sims[i, r]),
                        float(self._slot_returns[slot]),
                    )
                )
        return pd.DataFrame(
            rows, columns=["time", "rank", "neighbour_time", "similarity", "neighbour_return"]
        )
