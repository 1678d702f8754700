"""Input checks of the regime detectors (lesson 07): each turns what a learner passes into the shape a
detector reads, or raises an error that names the problem and the fix.

Engineering, not an idea of the lesson: the detectors themselves are in :mod:`.detection`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.loaders import DataError


def _as_frame(data: pd.Series | pd.DataFrame, where: str) -> pd.DataFrame:
    """Observations as a float DataFrame indexed by bar; refuses NaN (say which bar)."""
    if isinstance(data, pd.Series):
        data = data.to_frame(data.name or "x")
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"{where}: pass a returns Series or a feature DataFrame indexed by bar, got {type(data).__name__}.")
    if len(data) == 0:
        raise DataError(f"{where}: no rows.")
    values = data.to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: NaN or inf at {data.index[np.flatnonzero(bad)[0]]}; drop warm-up rows first "
                        "(e.g. cl.log_returns(close).dropna()).")
    return data.astype(float)


def _keys_frame(keys: pd.DataFrame | np.ndarray, index: pd.Index | None, where: str) -> pd.DataFrame:
    if isinstance(keys, pd.DataFrame):
        frame = keys
    else:
        if index is None:
            raise ValueError(f"{where}: pass keys as a DataFrame indexed by bar time (or give index=...).")
        frame = pd.DataFrame(np.asarray(keys), index=index)
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{where}: keys must be indexed by bar time (DatetimeIndex): the time drives as_of.")
    return frame


def _paired(true: pd.Series, predicted: pd.Series, where: str) -> tuple[pd.Series, pd.Series]:
    if isinstance(true, pd.Series) and isinstance(predicted, pd.Series):
        true, predicted = true.align(predicted, join="inner")
    t = pd.Series(np.asarray(true)).reset_index(drop=True)
    p = pd.Series(np.asarray(predicted)).reset_index(drop=True)
    if len(t) != len(p):
        raise ValueError(f"{where}: true and predicted have different lengths ({len(t)} vs {len(p)}).")
    ok = t.notna() & p.notna()
    if not ok.any():
        raise ValueError(f"{where}: no bar has both a true and a predicted label.")
    return t[ok], p[ok]


def _ns(times: Any) -> np.ndarray:
    from ..memory.time_filter import to_ns

    return to_ns(times)
