"""Every search states its time: ``as_of`` is required, and searching without one is a named opt-out.

A kNN memory that is searched without a time silently leaks: a training window retrieves itself, later
windows and labels that were not yet known. So nothing in the course searches with a default of "no filter".
A caller either gives ``as_of`` (one time per query, or one for all) or passes :data:`NO_TIME_FILTER`,
which reads as what it is in the code that uses it (latency and recall studies, or a memory known to hold
only the past).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["NO_TIME_FILTER", "MissingTimeError", "entry_times", "query_times", "to_ns"]

NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds
NEVER = np.iinfo(np.int64).max  # "never available" (WindowSet.available_at_ns() writes this for NaT)


class _NoTimeFilter:
    """The explicit opt-out from causal filtering (one instance: :data:`NO_TIME_FILTER`)."""

    _instance: _NoTimeFilter | None = None

    def __new__(cls) -> _NoTimeFilter:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_TIME_FILTER"

    def __reduce__(self) -> str:  # survives pickling (e.g. multiprocessing) as the same singleton
        return "NO_TIME_FILTER"


NO_TIME_FILTER = _NoTimeFilter()


class MissingTimeError(ValueError):
    """A search was asked for without ``as_of`` (and without the explicit opt-out)."""


def to_ns(times: Any, n: int | None = None) -> np.ndarray | None:
    """Times as int64 nanoseconds: accepts int64 ns, datetime64, ``DatetimeIndex``/``Series``, Timestamps.

    A scalar is broadcast to ``n`` rows. ``None`` stays ``None``.
    """
    if times is None:
        return None
    if isinstance(times, (int, np.integer)) and not isinstance(times, (bool, np.timedelta64)):
        return np.full(1 if n is None else n, times, dtype=np.int64)  # the per-bar case: one int64 time
    if isinstance(times, torch.Tensor):
        times = times.detach().cpu().numpy()
    if isinstance(times, pd.DatetimeIndex):
        out = times.as_unit("ns").asi8
    elif isinstance(times, pd.Series) and pd.api.types.is_datetime64_any_dtype(times):
        out = pd.DatetimeIndex(times).as_unit("ns").asi8
    elif isinstance(times, (pd.Timestamp, np.datetime64)) or times is pd.NaT:
        out = np.array([pd.Timestamp(times).as_unit("ns").value])
    elif isinstance(times, str):
        out = np.array([pd.Timestamp(times).as_unit("ns").value])
    else:
        arr = np.asarray(times)
        if np.issubdtype(arr.dtype, np.datetime64):
            out = arr.astype("datetime64[ns]").view(np.int64)
        elif arr.dtype.kind in "iu":
            out = arr.astype(np.int64)
        else:
            raise TypeError(f"times must be int64 nanoseconds or datetimes, got dtype {arr.dtype}")
    out = np.asarray(out, dtype=np.int64).reshape(-1)
    if n is not None:
        if out.size == 1 and n != 1:
            out = np.full(n, out[0], dtype=np.int64)
        if out.size != n:
            raise ValueError(f"expected {n} times (one per row), got {out.size}")
    return out


def query_times(as_of: Any, n: int, where: str = "search") -> np.ndarray | None:
    """``as_of`` as (n,) int64 ns, ``None`` for :data:`NO_TIME_FILTER`; a missing time is an error."""
    if as_of is NO_TIME_FILTER:
        return None
    if as_of is None:
        raise MissingTimeError(
            f"{where} needs as_of: the time each query is made (e.g. windows.end_time_ns()), so it only "
            "sees entries whose outcome was known by then. To search every entry whatever its time (look-"
            "ahead: only for latency or recall studies, or a memory that holds nothing from the queries' "
            "future), pass as_of=cl.NO_TIME_FILTER."
        )
    return to_ns(as_of, n)


def entry_times(timestamp: Any, available_at: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(timestamp, available_at) of ``n`` new memory entries as int64 ns; a NaT ``available_at`` means never
    available, a NaT timestamp or an ``available_at`` before its timestamp is refused."""
    ts = to_ns(timestamp, n)
    if ts is not None and (ts == NAT).any():
        raise ValueError(
            f"timestamp is NaT in {int((ts == NAT).sum())} of {n} rows: every entry needs the end time of "
            "its window. Drop those rows before adding them."
        )
    av = to_ns(available_at, n)
    if av is None:
        return (ts, ts.copy()) if ts is not None else (np.zeros(n, np.int64), np.zeros(n, np.int64))
    av = np.where(av == NAT, NEVER, av)  # unresolved label: never retrievable (WindowSet.available_at_ns)
    if ts is None:
        return np.zeros(n, np.int64), av
    early = av < ts
    if early.any():
        i = int(np.flatnonzero(early)[0])
        raise ValueError(
            f"available_at is before timestamp in {int(early.sum())} of {n} rows (row {i}: available_at "
            f"{pd.Timestamp(av[i])} < timestamp {pd.Timestamp(ts[i])}): a label cannot be known before its "
            "window ends. Pass the time the label becomes known (WindowSet.available_at_ns())."
        )
    return ts, av


def refuse_outcomes_without_time(known_at_timestamp: tuple[str, ...], **fields_given: Any) -> None:
    """Refuse fields that may hold outcomes when no ``available_at`` says when they are known."""
    given = [name for name, val in fields_given.items() if val is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} given without available_at: pass when each label becomes known "
            "(WindowSet.available_at_ns()), otherwise searches could see unresolved labels "
            "(values, returns, regimes, priorities and free-form fields usually carry what happened next). "
            "If these fields are known at the window's end, pass available_at=timestamp; without "
            f"available_at only {known_at_timestamp} are accepted."
        )
