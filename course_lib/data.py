"""Load and validate OHLCV price data from the bundled snapshot or any CSV a learner is likely to have.

Every loader in the course returns the same shape: a DataFrame indexed by a sorted, unique, timezone-naive
UTC ``DatetimeIndex`` named ``time`` with float columns ``open, high, low, close, volume``. Checking that
shape once, here, with errors that say what is wrong and how to fix it, is what lets the rest of the
library assume clean data.

Silent repairs are limited to three documented cases, each reported with a :class:`DataWarning` and listed
in ``df.attrs["load_report"]``:

* a file stored newest-first (Bybit's order) is reversed to oldest-first;
* rows whose price fields are *all* empty (Yahoo writes ``null`` rows for some holidays) are dropped;
* an ``adj_close`` column, when ``adjust=True``, rescales open/high/low/close by ``adj_close / close``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DataError",
    "DataWarning",
    "OHLCV_COLUMNS",
    "SAMPLES",
    "data_dir",
    "load_csv",
    "load_sample",
    "validate_ohlcv",
]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

#: Bundled offline datasets: name -> file name inside ``data/``.
SAMPLES: dict[str, str] = {"sp500": "sp500.csv.gz"}

_TIME_ALIASES = ("time", "date", "datetime", "timestamp", "starttime", "start_time", "open_time", "opentime", "ts")
_COLUMN_ALIASES = {
    "o": "open",
    "h": "high",
    "l": "low",
    "c": "close",
    "v": "volume",
    "vol": "volume",
    "adjclose": "adj_close",
    "adj_close": "adj_close",
    "adjusted_close": "adj_close",
    "close_adj": "adj_close",
}


class DataError(ValueError):
    """Input data the course cannot use. The message names the problem, where it is, and the fix."""


class DataWarning(UserWarning):
    """A documented repair was applied to loaded data (see ``df.attrs['load_report']``)."""


def data_dir() -> Path:
    """Directory holding the bundled data.

    Looks at ``$COURSE_DATA_DIR`` first, then the repository's ``data/`` next to the package (editable
    install, the course's normal setup), then ``./data`` and ``../data`` (a notebook run from a sub-folder).
    """
    candidates = []
    if os.environ.get("COURSE_DATA_DIR"):
        candidates.append(Path(os.environ["COURSE_DATA_DIR"]))
    candidates += [Path(__file__).resolve().parents[1] / "data", Path.cwd() / "data", Path.cwd().parent / "data"]
    for cand in candidates:
        if (cand / SAMPLES["sp500"]).exists():
            return cand
    raise DataError(
        "Could not find the bundled data folder (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Install the course with `pip install -e .` from the repository root, or set COURSE_DATA_DIR."
    )


def load_sample(name: str = "sp500", min_rows: int = 2) -> pd.DataFrame:
    """Load a bundled, offline dataset by name (``"sp500"``: S&P 500 daily bars, 1999-01-04..2018-12-31)."""
    if name not in SAMPLES:
        raise DataError(f"Unknown sample {name!r}. Available samples: {sorted(SAMPLES)}.")
    df = load_csv(data_dir() / SAMPLES[name], min_rows=min_rows)
    df.attrs["source"] = f"sample:{name}"
    return df


def _normalise_name(name: object) -> str:
    text = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    return _COLUMN_ALIASES.get(text, text)


def _parse_time(raw: pd.Series, where: str) -> pd.DatetimeIndex:
    """Parse epoch numbers (s, ms, us, ns: chosen by magnitude) or date strings (ISO or US m/d/Y)."""
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise DataError(f"{where}: empty timestamp in data row {row + 1}. Remove the row or fill in its time.")
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all() and len(raw):
        magnitude = float(np.nanmedian(np.abs(numeric.to_numpy(dtype=float))))
        if magnitude > 1e17:
            unit = "ns"
        elif magnitude > 1e14:
            unit = "us"
        elif magnitude > 1e11:
            unit = "ms"
        elif magnitude > 1e8:
            unit = "s"
        else:
            unit = None
        if unit is not None:
            return pd.DatetimeIndex(pd.to_datetime(numeric.astype("int64"), unit=unit))
    text = raw.astype(str).str.strip()
    fmt = None
    if text.str.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}").all():
        # US m/d/Y (Yahoo's export) unless a first field above 12 proves the file is day-first (d/m/Y).
        first = text.str.split("/").str[0].astype(int)
        fmt = "%d/%m/%Y" if (first > 12).any() else "%m/%d/%Y"
    try:
        parsed = pd.to_datetime(text, format=fmt, utc=True) if fmt else pd.to_datetime(text, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        bad = None
        for i, value in enumerate(text):
            try:
                pd.to_datetime(value, utc=True)
            except (ValueError, TypeError):
                bad = (i, value)
                break
        loc = f" (data row {bad[0] + 1}: {bad[1]!r})" if bad else ""
        raise DataError(f"{where}: could not parse timestamps{loc}. Use ISO dates like 2024-01-31 or epoch milliseconds.") from exc
    return pd.DatetimeIndex(parsed).tz_convert("UTC").tz_localize(None)


def validate_ohlcv(df: pd.DataFrame, where: str = "data", min_rows: int = 2) -> pd.DataFrame:
    """Check a frame already in the course's shape; raise :class:`DataError` naming the first problem.

    Returns the frame unchanged so it can be used inline. Checks: required columns, numeric finite values,
    a sorted unique DatetimeIndex, positive prices, ``high >= low`` and enough rows (``min_rows``).
    """
    if len(df) == 0:
        raise DataError(f"{where}: no data rows. Check the file is not empty and has a header line.")
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; found {list(df.columns)}. "
            "Rename your columns to open, high, low, close, volume (any case) or add the missing ones."
        )
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{where}: the index must be a DatetimeIndex; use course_lib.load_csv to parse times.")
    idx = df.index
    dup = idx.duplicated()
    if dup.any():
        first = idx[np.flatnonzero(dup)[0]]
        raise DataError(
            f"{where}: duplicate timestamp {first} ({int(dup.sum())} duplicate row(s)). "
            "Drop the repeated rows (e.g. df[~df.index.duplicated(keep='last')]) before loading."
        )
    if not idx.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(idx.asi8) < 0)[0])
        raise DataError(
            f"{where}: timestamps out of order at row {pos + 2}: {idx[pos + 1]} comes after {idx[pos]}. "
            "Sort the file by time (df.sort_index()) before loading."
        )
    for col in OHLCV_COLUMNS:
        values = df[col].to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: column {col!r} has a missing or non-finite value at {idx[pos]}. Fill or drop that row.")
    prices = df[["open", "high", "low", "close"]].to_numpy(dtype=float)
    nonpos = (prices <= 0).any(axis=1)
    if nonpos.any():
        pos = int(np.flatnonzero(nonpos)[0])
        raise DataError(
            f"{where}: non-positive price at {idx[pos]} ({dict(df.iloc[pos][['open', 'high', 'low', 'close']])}). "
            "Prices must be > 0 for log returns; remove the row or fix the value."
        )
    inverted = df["high"].to_numpy(dtype=float) < df["low"].to_numpy(dtype=float)
    if inverted.any():
        pos = int(np.flatnonzero(inverted)[0])
        raise DataError(
            f"{where}: high < low at {idx[pos]} (high={df['high'].iloc[pos]}, low={df['low'].iloc[pos]}). "
            "The columns may be swapped or mislabelled."
        )
    if (df["volume"].to_numpy(dtype=float) < 0).any():
        pos = int(np.flatnonzero(df["volume"].to_numpy(dtype=float) < 0)[0])
        raise DataError(f"{where}: negative volume at {idx[pos]}. Volume must be >= 0.")
    if len(df) < min_rows:
        raise DataError(
            f"{where}: only {len(df)} rows, fewer than the {min_rows} needed (for the window and horizon you chose). "
            "Load a longer date range or use a shorter seq_len."
        )
    return df


def load_csv(
    path: str | os.PathLike,
    *,
    min_rows: int = 2,
    adjust: bool = False,
    time_column: str | None = None,
) -> pd.DataFrame:
    """Load an OHLCV CSV (Yahoo export, ``DataFrame.to_csv``, Bybit kline dump; daily or intraday).

    Column names are matched case-insensitively (``Adj Close`` -> ``adj_close``); the time column is the
    first of ``time/date/datetime/timestamp/startTime/...`` or, failing that, an unnamed first column (a
    saved index). Epoch numbers are read in s/ms/us/ns by magnitude; timezone-aware times become naive UTC.

    Args:
        path: CSV file (``.gz``/``.zip`` compression is inferred from the name).
        min_rows: Raise if fewer rows remain (pass ``seq_len + horizon + 1`` to check a window fits).
        adjust: If the file has ``adj_close``, rescale open/high/low/close by ``adj_close / close`` so that
            returns include dividends and splits (reported).
        time_column: Name of the time column when it cannot be guessed.

    Raises:
        DataError: missing file or column, unparseable time, non-numeric value, duplicate or unsorted
            timestamps, non-positive prices, ``high < low``, empty file or too few rows.
    """
    path = Path(path)
    where = path.name
    if not path.exists():
        raise DataError(f"{path}: file not found. Check the path (relative paths start at {Path.cwd()}).")
    try:
        raw = pd.read_csv(path, na_values=["null", "NaN", "nan", ""], keep_default_na=True)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{where}: the file is empty. Download it again or choose another file.") from exc
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{where}: not a readable CSV ({exc}). Export the data as comma-separated text.") from exc
    if raw.shape[1] == 0:
        raise DataError(f"{where}: the file is empty. Download it again or choose another file.")

    report: list[str] = []
    names = [_normalise_name(c) for c in raw.columns]
    if names and (names[0] == "" or names[0].startswith("unnamed")):
        names[0] = "time"
    raw.columns = names
    if time_column is not None:
        tcol = _normalise_name(time_column)
        if tcol not in raw.columns:
            raise DataError(f"{where}: time column {time_column!r} not found; columns are {list(raw.columns)}.")
    else:
        tcol = next((c for c in _TIME_ALIASES if c in raw.columns), None)
        if tcol is None:
            raise DataError(
                f"{where}: no time column; found {list(raw.columns)}. Name it Date, time or timestamp, "
                "or pass time_column=..."
            )
    missing = [c for c in OHLCV_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; found {list(raw.columns)}. "
            "Rename your columns to open, high, low, close, volume (any case) or add the missing ones."
        )
    if len(raw) == 0:
        raise DataError(f"{where}: header only, no data rows.")

    value_cols = [c for c in (*OHLCV_COLUMNS, "adj_close") if c in raw.columns]
    numeric = {}
    for col in value_cols:
        converted = pd.to_numeric(raw[col], errors="coerce")
        bad = converted.isna() & raw[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{where}: non-numeric value {raw[col].iloc[row]!r} in column {col!r}, data row {row + 1} "
                f"(time {raw[tcol].iloc[row]}). Fix or remove that row."
            )
        numeric[col] = converted.astype(float)
    frame = pd.DataFrame(numeric)

    empty_rows = frame[["open", "high", "low", "close"]].isna().all(axis=1).to_numpy()
    if empty_rows.any():
        report.append(f"dropped {int(empty_rows.sum())} row(s) with no prices (e.g. data row {int(np.flatnonzero(empty_rows)[0]) + 1})")
        frame = frame.loc[~empty_rows]
        raw = raw.loc[~empty_rows]
    if len(frame) == 0:
        raise DataError(f"{where}: every row is empty.")

    frame.index = _parse_time(raw[tcol].reset_index(drop=True), where)
    frame.index.name = "time"
    idx = frame.index
    if len(idx) > 1 and idx.is_monotonic_decreasing and not idx.has_duplicates:
        frame = frame.iloc[::-1]
        report.append("file was newest-first; reversed to oldest-first")

    if adjust and "adj_close" in frame.columns:
        factor = frame["adj_close"] / frame["close"]
        for col in ("open", "high", "low", "close"):
            frame[col] = frame[col] * factor
        report.append("rescaled open/high/low/close by adj_close/close")
    frame = frame[list(OHLCV_COLUMNS)].astype("float64")
    validate_ohlcv(frame, where=where, min_rows=min_rows)
    frame.attrs["source"] = str(path)
    frame.attrs["load_report"] = report
    for line in report:
        warnings.warn(f"{where}: {line}", DataWarning, stacklevel=2)
    return frame


def concat_symbols(frames: dict[str, pd.DataFrame], field: str = "close") -> pd.DataFrame:
    """One column per symbol for a field, aligned on time (helper for multi-symbol loaders)."""
    return pd.DataFrame({sym: df[field] for sym, df in frames.items()}).sort_index()


def _as_list(symbols: str | Iterable[str]) -> list[str]:
    if isinstance(symbols, str):
        return [s.strip() for s in symbols.split(",") if s.strip()]
    return list(symbols)
