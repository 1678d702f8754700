"""Sliding windows, train-only scaling, purged chronological splits and walk-forward folds.

Every sample carries two times:

* ``end_time``: the bar t whose close ends the input window (the model may act at that close);
* ``available_at``: the bar t+h at whose close the label (return over (t, t+h]) becomes known.

The memory bank, the trainer and the backtester all read these two times instead of guessing, which is
how the course keeps look-ahead out of every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .features import FeatureConfig, compute_features, forward_log_return
from .loaders import DataError

__all__ = [
    "DatasetSplits",
    "FeatureScaler",
    "Fold",
    "SplitIndices",
    "WindowSet",
    "chronological_split",
    "make_windows",
    "prepare_dataset",
    "walk_forward_folds",
]


@dataclass(frozen=True)
class WindowSet:
    """Model-ready samples: ``X[i]`` holds the ``seq_len`` feature rows ending at bar ``end_pos[i]``.

    Attributes:
        X: ``(n, seq_len, n_features)`` float32 inputs.
        y: ``(n,)`` float32 forward log return over (t, t+h]; NaN where not yet known.
        end_time: time of bar t (window end) per sample.
        available_at: time of bar t+h, when the label is known (``NaT`` beyond the data's end).
        end_pos: integer position of bar t in the source feature frame.
        feature_names: column names of the last axis of ``X``.
        horizon, seq_len: the label horizon and window length in bars.
    """

    X: np.ndarray
    y: np.ndarray
    end_time: pd.DatetimeIndex
    available_at: pd.DatetimeIndex
    end_pos: np.ndarray
    feature_names: tuple[str, ...]
    horizon: int
    seq_len: int

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_features(self) -> int:
        return self.X.shape[-1]

    def subset(self, index: np.ndarray | slice) -> WindowSet:
        """Samples at positional ``index`` (array of ints, bool mask or slice)."""
        return WindowSet(
            X=self.X[index],
            y=self.y[index],
            end_time=self.end_time[index],
            available_at=self.available_at[index],
            end_pos=self.end_pos[index],
            feature_names=self.feature_names,
            horizon=self.horizon,
            seq_len=self.seq_len,
        )

    def end_time_ns(self) -> np.ndarray:
        """``end_time`` as int64 nanoseconds (the time type the memory bank uses)."""
        return self.end_time.as_unit("ns").asi8.copy()

    def available_at_ns(self) -> np.ndarray:
        """``available_at`` as int64 nanoseconds; unknown labels get the maximum int64 (never available)."""
        out = self.available_at.as_unit("ns").asi8.copy()
        out[self.available_at.isna()] = np.iinfo(np.int64).max
        return out


def _check_finite(features: pd.DataFrame, where: str) -> None:
    """Raise :class:`DataError` naming the column and the first bar of a NaN or +-inf feature value.

    An inf used to pass into the windows and make :meth:`FeatureScaler.fit` store ``mean = inf``, which
    silently mapped the whole column to the clip value.
    """
    values = features.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{where}: features contain NaN or inf: column {features.columns[col]!r} is {values[row, col]} at "
            f"{features.index[row]} (the first bar with one; {int(bad.any(axis=0).sum())} column(s) affected). "
            "NaN: drop the warm-up rows (compute_features(dropna=True)); inf (a log or ratio of 0): fix that "
            "feature, or drop the rows (features.replace([np.inf, -np.inf], np.nan).dropna())."
        )


def make_windows(
    features: pd.DataFrame,
    target: pd.Series | None,
    seq_len: int,
    horizon: int | None = None,
    drop_unlabeled: bool = True,
) -> WindowSet:
    """Cut ``features`` into overlapping windows of ``seq_len`` rows, one per possible end bar.

    The window ending at bar t contains rows t-seq_len+1 .. t; its label is ``target[t]`` (use
    :func:`course_lib.forward_log_return`), known at bar t+h. With ``drop_unlabeled=False`` the last h
    windows are kept with ``y = NaN`` (needed to trade on the most recent bars). The array is a strided
    view copied once, so this is O(n * seq_len) memory and no Python loop.

    ``available_at`` is computed from ``horizon``, so it must be the horizon the target was built with:
    a target from :func:`course_lib.forward_log_return` carries it in ``target.attrs["horizon"]`` and a
    different ``horizon`` raises :class:`DataError` (a shorter one would release labels before they are
    known, i.e. look-ahead). Everyday pandas operations drop ``attrs`` (``df["target"]``, ``.assign``), so
    a target that does not carry its horizon needs ``horizon`` passed explicitly: assuming 1 would let a
    5-bar label out 4 bars early. Leaving ``horizon`` out means 1 for a target that records 1, and for
    windows without a target.
    """
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}.")
    built = target.attrs.get("horizon") if target is not None else None
    if horizon is None:
        if target is not None and built is None:
            raise DataError(
                "make_windows: pass horizon=h, the number of bars the target looks ahead (forward_log_return("
                "close, h)). This target does not record it (pandas drops target.attrs['horizon'] in operations "
                "such as df['target'] or .assign), and each label's availability time is dated from it: "
                "assuming 1 would release longer-horizon labels before they are known (look-ahead)."
            )
        horizon = 1
    if horizon < 1:
        raise DataError(f"horizon must be >= 1 bar, got {horizon}.")
    if built is not None and int(built) != horizon:
        effect = "before it is known (look-ahead)" if horizon < int(built) else "later than it is known"
        raise DataError(
            f"make_windows got horizon={horizon} but the target was built with horizon={built} "
            f"(target.attrs['horizon'], set by forward_log_return); each label would be marked available "
            f"{effect}. Pass horizon={built}, or build the target with forward_log_return(close, {horizon})."
        )
    _check_finite(features, "make_windows")
    n = len(features)
    if n < seq_len:
        raise DataError(f"only {n} feature rows for seq_len={seq_len}. Use more data or a shorter window.")
    values = features.to_numpy(dtype=np.float32)
    X = np.lib.stride_tricks.sliding_window_view(values, seq_len, axis=0).transpose(0, 2, 1)
    end_pos = np.arange(seq_len - 1, n)
    if target is None:
        y = np.full(n, np.nan, dtype=np.float32)
    else:
        y = target.reindex(features.index).to_numpy(dtype=np.float32)
    y = y[end_pos]
    # Times are kept at nanosecond resolution whatever the input's unit (pandas 3 often builds "us"
    # indexes), so ``.asi8`` and the ``*_ns()`` helpers always mean int64 nanoseconds.
    index = pd.DatetimeIndex(features.index).as_unit("ns")
    avail_pos = end_pos + horizon
    available = pd.DatetimeIndex(index[np.minimum(avail_pos, n - 1)]).where(avail_pos < n)
    keep = np.isfinite(y) & (avail_pos < n) if drop_unlabeled else np.ones(len(y), dtype=bool)
    return WindowSet(
        X=np.ascontiguousarray(X[keep]),
        y=y[keep],
        end_time=index[end_pos[keep]],
        available_at=available[keep],
        end_pos=end_pos[keep],
        feature_names=tuple(features.columns),
        horizon=horizon,
        seq_len=seq_len,
    )


class FeatureScaler:
    """Per-feature standardisation fitted on the training period only.

    ``fit`` records mean and std of the rows you give it (pass only training rows!); ``transform`` applies
    them to any rows. Optional clipping (in standard deviations) tames fat tails such as 1987-style crashes.
    """

    def __init__(self, clip: float | None = 5.0):
        self.clip = clip
        self.mean_: pd.Series | None = None
        self.std_: pd.Series | None = None
        self.fitted_until_: pd.Timestamp | None = None

    def fit(self, train_features: pd.DataFrame) -> FeatureScaler:
        if len(train_features) < 2:
            raise DataError("FeatureScaler.fit needs at least 2 training rows.")
        _check_finite(train_features, "FeatureScaler.fit")
        self.mean_ = train_features.mean()
        std = train_features.std(ddof=0)
        self.std_ = std.where(std > 0, 1.0)
        self.fitted_until_ = train_features.index[-1]
        return self

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        if self.mean_ is None or self.std_ is None:
            raise DataError("FeatureScaler is not fitted: call fit(train_features) first.")
        missing = [c for c in self.mean_.index if c not in features.columns]
        if missing:
            raise DataError(f"FeatureScaler.transform: columns {missing} were seen in fit but are missing now.")
        out = (features[self.mean_.index] - self.mean_) / self.std_
        if self.clip is not None:
            out = out.clip(-self.clip, self.clip)
        return out.astype("float32")

    def state_dict(self) -> dict:
        """JSON-friendly parameters (saved next to model checkpoints)."""
        if self.mean_ is None or self.std_ is None:
            raise DataError("FeatureScaler is not fitted.")
        until = None if self.fitted_until_ is None else pd.Timestamp(self.fitted_until_).isoformat()
        return {"clip": self.clip, "mean": self.mean_.to_dict(), "std": self.std_.to_dict(), "fitted_until": until}

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureScaler:
        """Inverse of :meth:`state_dict`, including ``fitted_until_`` (the last training bar): a restored
        scaler can still be checked against the period it is applied to. States saved before it was
        recorded restore it as None."""
        scaler = cls(clip=state["clip"])
        scaler.mean_ = pd.Series(state["mean"], dtype=float)
        scaler.std_ = pd.Series(state["std"], dtype=float)
        until = state.get("fitted_until")
        scaler.fitted_until_ = pd.Timestamp(until) if until is not None else None
        return scaler


@dataclass(frozen=True)
class SplitIndices:
    """Positional sample indices of a chronological split (all arrays sorted, disjoint, gap-separated)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    gap: int


def _check_purge_gap(gap: int, horizon: int | None, seq_len: int | None, where: str) -> None:
    """Raise unless ``gap`` purges what GUIDE's causality rules require for this horizon and window length.

    ``gap >= horizon``: the last training label (return up to bar t+h) must be known before the next part
    starts. With ``seq_len`` (overlapping windows): ``gap >= horizon + seq_len - 1``, so no later window
    reads a bar whose return was an earlier part's label. Without ``horizon`` nothing is checked (the
    caller's own responsibility, as before).
    """
    if gap < 0:
        raise DataError(f"{where}: gap must be >= 0, got {gap}.")
    if horizon is None:
        if seq_len is not None:
            raise DataError(f"{where}: seq_len={seq_len} was given without horizon; pass horizon too.")
        return
    if horizon < 1 or (seq_len is not None and seq_len < 1):
        raise DataError(f"{where}: horizon and seq_len must be >= 1, got horizon={horizon}, seq_len={seq_len}.")
    need = horizon + (seq_len - 1 if seq_len is not None else 0)
    if gap < need:
        why = f"horizon {horizon}" + (f" + seq_len {seq_len} - 1" if seq_len is not None else "")
        raise DataError(
            f"{where}: gap={gap} is shorter than the purge the labels need ({why} = {need} samples): the last "
            f"training labels would overlap the next part's period (look-ahead). Pass gap={need} or more."
        )


def chronological_split(
    n_samples: int,
    train_frac: float = 0.7,
    val_frac: float = 0.15,
    gap: int = 1,
    *,
    horizon: int | None = None,
    seq_len: int | None = None,
) -> SplitIndices:
    """Split ``n_samples`` time-ordered samples into train / val / test, purging ``gap`` samples at each
    boundary.

    Use ``gap >= horizon`` so no training label overlaps validation inputs' period, and ``gap >= horizon
    + seq_len - 1`` (the default in :func:`prepare_dataset`) so no validation window contains a bar whose
    return was a training label. Pass ``horizon`` (and ``seq_len``) to have that checked: a shorter gap
    raises :class:`DataError`. Sizes depend only on ``n_samples``, so appending data later never moves
    the training set's earlier members.
    """
    if not 0 < train_frac < 1 or not 0 <= val_frac < 1 or train_frac + val_frac >= 1:
        raise DataError(f"need 0 < train_frac, 0 <= val_frac and train_frac + val_frac < 1; got {train_frac}, {val_frac}.")
    _check_purge_gap(gap, horizon, seq_len, "chronological_split")
    n_train = int(n_samples * train_frac)
    n_val = int(n_samples * val_frac)
    val_start = n_train + gap
    test_start = val_start + n_val + (gap if n_val else 0)
    if n_train < 1 or test_start >= n_samples:
        raise DataError(
            f"{n_samples} samples are too few for train_frac={train_frac}, val_frac={val_frac} and gap={gap}. "
            "Use more data, a smaller gap or a shorter seq_len."
        )
    return SplitIndices(
        train=np.arange(0, n_train),
        val=np.arange(val_start, val_start + n_val),
        test=np.arange(test_start, n_samples),
        gap=gap,
    )


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: fit on ``train`` (and early-stop on ``val``), evaluate on ``test``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def walk_forward_folds(
    n_samples: int,
    n_folds: int = 5,
    min_train: int | None = None,
    val_size: int = 0,
    gap: int = 1,
    expanding: bool = True,
    *,
    horizon: int | None = None,
    seq_len: int | None = None,
) -> list[Fold]:
    """Walk-forward folds over time-ordered samples: the test blocks tile the tail of the data in order.

    Each fold trains on everything before its test block (``expanding=True``) or on the last
    ``min_train`` samples before it (rolling), with ``gap`` samples purged between train, val and test.
    Pass ``horizon`` (and ``seq_len``) to check the gap is long enough, as in :func:`chronological_split`.
    """
    if n_folds < 1:
        raise DataError(f"n_folds must be >= 1, got {n_folds}.")
    if gap < 0 or val_size < 0:
        raise DataError(f"gap and val_size must be >= 0, got gap={gap}, val_size={val_size}.")
    _check_purge_gap(gap, horizon, seq_len, "walk_forward_folds")
    min_train = min_train if min_train is not None else n_samples // (n_folds + 1)
    first_test = min_train + val_size + gap * (2 if val_size else 1)
    test_len = (n_samples - first_test) // n_folds
    if min_train < 1 or test_len < 1:
        raise DataError(
            f"{n_samples} samples cannot hold {n_folds} folds with min_train={min_train}, val_size={val_size}, "
            f"gap={gap}. Use fewer folds or more data."
        )
    folds = []
    for k in range(n_folds):
        test_start = first_test + k * test_len
        test_end = n_samples if k == n_folds - 1 else test_start + test_len
        val_end = test_start - gap if val_size else test_start - gap
        val_start = val_end - val_size
        train_end = (val_start - gap) if val_size else val_end
        train_start = 0 if expanding else max(0, train_end - min_train)
        folds.append(
            Fold(
                train=np.arange(train_start, train_end),
                val=np.arange(val_start, val_end) if val_size else np.arange(0),
                test=np.arange(test_start, test_end),
            )
        )
    return folds


@dataclass
class DatasetSplits:
    """Everything a lesson needs from one price series, split without look-ahead.

    ``windows`` holds every labelled sample; ``train``/``val``/``test`` are its chronological parts,
    scaled with ``scaler`` (fitted on the bars of the training windows only).
    """

    prices: pd.DataFrame
    features: pd.DataFrame
    scaled_features: pd.DataFrame
    target: pd.Series
    windows: WindowSet
    split: SplitIndices
    scaler: FeatureScaler
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)

    @property
    def train(self) -> WindowSet:
        return self.windows.subset(self.split.train)

    @property
    def val(self) -> WindowSet:
        return self.windows.subset(self.split.val)

    @property
    def test(self) -> WindowSet:
        return self.windows.subset(self.split.test)


def prepare_dataset(
    ohlcv: pd.DataFrame,
    seq_len: int = 64,
    horizon: int = 1,
    train_frac: float = 0.7,
    val_frac: float = 0.15,
    gap: int | None = None,
    feature_config: FeatureConfig | None = None,
    feature_columns: Sequence[str] | None = None,
    scaler_clip: float | None = 5.0,
) -> DatasetSplits:
    """Features -> target -> windows -> purged chronological split -> scaler fitted on training bars only.

    ``gap`` defaults to ``horizon + seq_len - 1`` samples (see :func:`chronological_split`); a shorter one
    raises :class:`DataError`.
    """
    cfg = feature_config or FeatureConfig()
    features = compute_features(ohlcv, cfg)
    if feature_columns is not None:
        unknown = [c for c in feature_columns if c not in features.columns]
        if unknown:
            raise DataError(f"unknown feature column(s) {unknown}; available: {list(features.columns)}.")
        features = features[list(feature_columns)]
    target = forward_log_return(ohlcv["close"], horizon).reindex(features.index)
    raw_windows = make_windows(features, target, seq_len, horizon)
    gap = horizon + seq_len - 1 if gap is None else gap
    split = chronological_split(len(raw_windows), train_frac, val_frac, gap, horizon=horizon, seq_len=seq_len)
    last_train_bar = int(raw_windows.end_pos[split.train[-1]])
    scaler = FeatureScaler(clip=scaler_clip).fit(features.iloc[: last_train_bar + 1])
    scaled = scaler.transform(features)
    windows = make_windows(scaled, target, seq_len, horizon)
    return DatasetSplits(
        prices=ohlcv,
        features=features,
        scaled_features=scaled,
        target=target,
        windows=windows,
        split=split,
        scaler=scaler,
        feature_config=cfg,
    )
