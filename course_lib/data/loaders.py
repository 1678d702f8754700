"""Load and validate OHLCV price data from the bundled snapshot or any CSV a learner is likely to have.

Every loader in the course returns the same shape: a DataFrame indexed by a sorted, unique, timezone-naive
UTC ``DatetimeIndex`` named ``time`` with float columns ``open, high, low, close, volume``. Checking that
shape once, here, with errors that say what is wrong and how to fix it, is what lets the rest of the
library assume clean data.

Silent repairs are limited to four documented cases, each reported with a :class:`DataWarning` and listed
in ``df.attrs["load_report"]``:

* a file stored newest-first (Bybit's order) is reversed to oldest-first;
* a file without a header line whose rows are 6 or 7 numbers (Bybit's ``result.list`` saved as it came)
  gets Bybit's kline column names ``startTime, open, high, low, close, volume[, turnover]``;
* rows whose price fields are *all* empty (Yahoo writes ``null`` rows for some holidays) are dropped;
* an ``adj_close`` column, when ``adjust=True``, rescales open/high/low/close by ``adj_close / close``.

Advisories are reported the same way: an ``adj_close`` column loaded with ``adjust=False`` whose ratio to
``close`` moves by more than 1% over the file (splits or dividends: unadjusted returns jump at those dates);
ambiguous d/m/Y-or-m/d/Y dates (the reading chosen and the ``dayfirst`` that gives the other); a last daily
row stamped off local midnight (possibly a partial bar), dated like the rows before it.

Where things are, in lesson 01's order: the bundled data (:data:`SAMPLES`, :func:`data_dir`,
:func:`load_sample`); the shape every loader returns and its checks (:data:`OHLCV_COLUMNS`,
:func:`validate_ohlcv`); your own file (:func:`load_csv`, read in named stages: read, name columns, numeric
bars, index by time, adjust). Engineering lives next door: :mod:`.csv_formats` reads the many CSV layouts and
time stamps, :mod:`.errors` holds :class:`DataError` and :class:`DataWarning`, :mod:`.live` the live loaders.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .csv_formats import (  # the CSV formats a learner may have: also importable from here
    _CLOCK,
    _TIME_ALIASES,
    _column_names,
    _date_and_clock,
    _normalise_name,
    _parse_time,
    _read_raw,
)
from .errors import DataError, DataWarning

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

#: An open or close may exceed high/low by this fraction of the price (float rounding) before it is an error.
_RANGE_TOLERANCE = 1e-6
#: adj_close / close moving by more than this over a file (with adjust=False) is reported.
_ADJ_SPREAD_WARN = 0.01


def data_dir() -> Path:
    """Directory holding the bundled data.

    Looks at ``$COURSE_DATA_DIR`` first, then the repository's ``data/`` next to the package (editable
    install, the course's normal setup), then ``./data`` and ``../data`` (a notebook run from a sub-folder).
    """
    candidates = []
    if os.environ.get("COURSE_DATA_DIR"):
        candidates.append(Path(os.environ["COURSE_DATA_DIR"]))
    candidates += [Path(__file__).resolve().parents[2] / "data", Path.cwd() / "data", Path.cwd().parent / "data"]
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
        values = ", ".join(f"{k}={float(df[k].iloc[pos])}" for k in ("open", "high", "low", "close"))
        raise DataError(
            f"{where}: non-positive price at {idx[pos]} ({values}). "
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


def _outside_range(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose open / close lie outside [low, high] by more than a relative ``_RANGE_TOLERANCE``."""
    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    tol = _RANGE_TOLERANCE * h
    return (o > h + tol) | (o < lo - tol), (c > h + tol) | (c < lo - tol)


def _check_ohlc_range(frame: pd.DataFrame, rows: np.ndarray | None, where: str) -> None:
    """Raise if an open or close lies outside [low, high] by more than a relative ``_RANGE_TOLERANCE``.

    ``rows`` are the 1-based data rows in the source file (for the message); None for data not read from a file.
    """
    bad_open, bad_close = _outside_range(frame)
    bad = bad_open | bad_close
    if not bad.any():
        return
    pos = int(np.flatnonzero(bad)[0])
    o, h, lo, c = (float(frame[k].iloc[pos]) for k in ("open", "high", "low", "close"))
    which = " and ".join(k for k, flag in (("open", bad_open[pos]), ("close", bad_close[pos])) if flag)
    row = f"data row {int(rows[pos])}: " if rows is not None else ""
    raise DataError(
        f"{where}: {which} outside the low..high range at {frame.index[pos]} ({row}"
        f"open={o}, high={h}, low={lo}, close={c}; {int(bad.sum())} such row(s)). "
        "The columns may be mislabelled (check the header order) or the row is corrupt; fix or remove it."
    )


def _validate_bars(frame: pd.DataFrame, where: str, min_rows: int, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Every check a loader applies before it returns or caches bars: :func:`validate_ohlcv` plus open and
    close inside ``[low, high]``.

    :func:`load_csv` and the live loaders both call this, so whatever a live loader writes to its cache,
    :func:`load_csv` reads back (a stricter reader would strand the offline fallback on a file it rejects).
    """
    validate_ohlcv(frame, where=where, min_rows=min_rows)
    _check_ohlc_range(frame, rows, where)
    return frame


def _widen_range_to_open_close(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Raise ``high`` / lower ``low`` to cover open and close where they lie outside the bar's range.

    For feeds whose columns are known (Yahoo, Bybit): there an open above the high is the feed's own
    inconsistency, not a mislabelled file, and widening the range keeps open and close (which the returns
    use) while making the bar valid. Only rows beyond ``_RANGE_TOLERANCE`` change. Returns the repaired
    copy and how many rows changed (callers report it).
    """
    bad_open, bad_close = _outside_range(frame)
    bad = bad_open | bad_close
    if not bad.any():
        return frame, 0
    out = frame.copy()
    ends = out.loc[bad, ["open", "close"]]
    out.loc[bad, "high"] = np.maximum(out.loc[bad, "high"], ends.max(axis=1))
    out.loc[bad, "low"] = np.minimum(out.loc[bad, "low"], ends.min(axis=1))
    return out, int(bad.sum())


def load_csv(
    path: str | os.PathLike,
    *,
    min_rows: int = 2,
    adjust: bool = False,
    time_column: str | None = None,
    dayfirst: bool | None = None,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Load an OHLCV CSV (Yahoo export, yfinance ``download().to_csv()``, ``DataFrame.to_csv``, Bybit kline dump).

    Column names are matched case-insensitively (``Adj Close`` -> ``adj_close``); the time column is the
    first of ``time/date/datetime/timestamp/startTime/start/...`` or, failing that, an unnamed first column
    (a saved index). A ``Date`` column next to a ``Time`` column holding only times of day (``09:30``:
    MetaTrader and broker exports) is combined into one timestamp, ``Date + " " + Time`` (a documented
    repair: ``Time`` alone would put every bar on today's date); times of day with no date are an error.
    An unnamed first column next to a real time column (``df.reset_index().to_csv()``) is a saved integer
    index and is ignored. The three-line header yfinance >= 0.2.48 writes
    (``Price,...`` / ``Ticker,...`` / ``Date,,,``) is recognised; ``symbol`` picks one ticker from a file
    holding several. Epoch numbers are read in s/ms/us/ns by magnitude (fractions kept); timezone-aware
    times become naive UTC, except daily bars stamped at local midnight with an offset (yfinance's
    ``2024-01-02 00:00:00-05:00``), which keep their calendar date (in UTC a ``+09:00`` bar would move to the
    previous day), also when the last row is stamped at another time of a later date (a partial bar; reported).
    A file with no header line whose first row is 6 or 7 numbers is read as a
    saved Bybit ``result.list`` (startTime, open, high, low, close, volume[, turnover]; reported). A file
    whose header splits on ``;``, tab or ``|`` but not on commas (European Excel) is read with that
    separator, and with ``,`` as the decimal mark if the data rows contain commas.

    Dates written d/m/Y or m/d/Y (separated by ``/``, ``.`` or ``-``, optionally with a time such as
    ``13/01/2024 09:30``) are parsed with one format for the whole column: day-first if some first field
    is above 12, month-first if some second field is. When neither is (an ambiguous column) the default
    is month-first (US, Yahoo's export) for ``/`` and ``-`` and day-first for ``.`` (``02.01.2024``), and a
    :class:`DataWarning` names the reading chosen and the ``dayfirst`` to pass for the other one; if the
    times then come out of order the error suggests passing ``dayfirst``.

    Args:
        path: CSV file (``.gz``/``.zip`` compression is inferred from the name).
        min_rows: Raise if fewer rows remain (pass ``seq_len + horizon + 1`` to check a window fits).
        adjust: If the file has ``adj_close``, rescale open/high/low/close by ``adj_close / close`` so that
            returns include dividends and splits (reported). With ``adjust=False`` a ratio that moves by
            more than 1% over the file is reported, since unadjusted returns jump at splits and dividends.
        time_column: Name of the time column when it cannot be guessed.
        dayfirst: Force day-first (True) or month-first (False) d/m/Y-style dates; None detects. Ignored
            for ISO dates and epoch numbers.
        symbol: The ticker to load from a multi-ticker yfinance file (required there); ignored for files
            without a ``Ticker`` header line.

    Raises:
        DataError: missing file or column, a directory, unparseable or inconsistent dates, duplicate column
            names, several tickers without ``symbol``, non-numeric value, duplicate or unsorted timestamps,
            non-positive prices, ``high < low``, an open or close outside ``[low, high]``, empty file or too
            few rows.
    """
    path = Path(path)
    where = path.name
    _check_path(path)
    raw, written, ticker, note = _read_raw(path, where, symbol)  # 1. read: header style, delimiter, ticker
    report: list[str] = [note] if note else []
    raw, tcol = _name_columns(raw, written, where, time_column)  # 2. name the columns, find the time
    frame, raw, data_rows = _numeric_bars(raw, tcol, where, report)  # 3. numbers, empty rows dropped
    # 4. parse the times, oldest first
    frame, data_rows = _index_by_time(frame, raw, tcol, where, dayfirst, time_column is None, data_rows, report)
    frame = _adjusted(frame, adjust, report)  # 5. dividends and splits
    frame = frame[list(OHLCV_COLUMNS)].astype("float64")
    _validate_bars(frame, where, min_rows, rows=data_rows)  # 6. every bar valid, enough of them
    frame.attrs["source"] = str(path)
    if ticker:
        frame.attrs["symbol"] = ticker
    frame.attrs["load_report"] = report
    for line in report:
        warnings.warn(f"{where}: {line}", DataWarning, stacklevel=2)
    return frame


def _check_path(path: Path) -> None:
    """A readable file, or an error that says what was passed instead."""
    if not path.exists():
        raise DataError(f"{path}: file not found. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        csvs = sorted(p.name for p in path.iterdir() if ".csv" in p.name.lower())
        inside = f"e.g. {path / csvs[0]}" if csvs else "it holds no .csv files"
        raise DataError(f"{path}: is a directory, not a CSV file. Pass the path of one file inside it ({inside}).")


def _name_columns(raw: pd.DataFrame, written: list[str], where: str,
                  time_column: str | None) -> tuple[pd.DataFrame, str]:
    """The course's column names on ``raw`` and the name of its time column; every OHLCV column present."""
    if raw.shape[1] == 0:
        raise DataError(f"{where}: the file is empty. Download it again or choose another file.")
    names, drop_first = _column_names(written, where, time_column)
    raw.columns = names
    if drop_first:
        raw = raw.iloc[:, 1:]
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
    return raw, tcol


def _numeric_bars(raw: pd.DataFrame, tcol: str, where: str,
                  report: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The value columns as floats (a non-numeric cell is an error naming its row), rows with no price at
    all dropped (reported); returns the values, the matching raw rows and their 1-based data row numbers."""
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
    frame = pd.DataFrame(numeric).reset_index(drop=True)
    raw = raw.reset_index(drop=True)

    empty_rows = frame[["open", "high", "low", "close"]].isna().all(axis=1).to_numpy()
    if empty_rows.any():
        report.append(f"dropped {int(empty_rows.sum())} row(s) with no prices (e.g. data row {int(np.flatnonzero(empty_rows)[0]) + 1})")
        frame = frame.loc[~empty_rows]
        raw = raw.loc[~empty_rows]
    if len(frame) == 0:
        raise DataError(f"{where}: every row is empty.")
    return frame, raw, frame.index.to_numpy() + 1


def _index_by_time(frame: pd.DataFrame, raw: pd.DataFrame, tcol: str, where: str, dayfirst: bool | None,
                   guess_clock: bool, data_rows: np.ndarray, report: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Index ``frame`` by its parsed times, oldest first (a newest-first file is reversed, reported), with
    the data row numbers in the same order (for the messages of the last check)."""
    stamps = _date_and_clock(raw) if guess_clock else None
    if stamps is None:
        stamps = raw[tcol]
        clock = stamps.dropna().astype(str).str.strip()
        if len(clock) and clock.str.fullmatch(_CLOCK.pattern).all():
            raise DataError(
                f"{where}: the time column {tcol!r} holds only times of day (e.g. {clock.iloc[0]!r}) and no date. "
                "Add a Date column (it is combined with Time) or write full timestamps like 2024-01-31 09:30."
            )
    frame.index, date_hint, partial_note = _parse_time(stamps.reset_index(drop=True), where, dayfirst)
    if partial_note:
        report.append(partial_note)
    frame.index.name = "time"
    idx = frame.index
    if len(idx) > 1 and idx.is_monotonic_decreasing and not idx.has_duplicates:
        frame = frame.iloc[::-1]
        data_rows = data_rows[::-1]
        report.append("file was newest-first; reversed to oldest-first" + (f". {date_hint}" if date_hint else ""))
    elif date_hint:
        report.append(date_hint)
    idx = frame.index
    if date_hint and not idx.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(idx.asi8) < 0)[0])
        raise DataError(
            f"{where}: timestamps out of order at row {pos + 2}: {idx[pos + 1]} comes after {idx[pos]}. "
            f"{date_hint} Otherwise sort the file by time before loading."
        )
    return frame, data_rows


def _adjusted(frame: pd.DataFrame, adjust: bool, report: list[str]) -> pd.DataFrame:
    """With ``adjust``, prices rescaled by ``adj_close / close`` (reported); without it, a warning when that
    ratio moves by more than 1% over the file (unadjusted returns jump at splits and dividends)."""
    if "adj_close" not in frame.columns:
        return frame
    factor = frame["adj_close"] / frame["close"]
    if adjust:
        for col in ("open", "high", "low", "close"):
            frame[col] = frame[col] * factor
        report.append("rescaled open/high/low/close by adj_close/close")
    else:
        ratio = factor.to_numpy(dtype=float)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio) and ratio.max() / ratio.min() - 1 > _ADJ_SPREAD_WARN:
            report.append(
                f"adj_close/close moves from {ratio.min():.4g} to {ratio.max():.4g} over the file (splits or "
                "dividends), so returns of the unadjusted close jump at those dates; pass adjust=True to use "
                "adjusted prices"
            )
    return frame


def concat_symbols(frames: dict[str, pd.DataFrame], field: str = "close") -> pd.DataFrame:
    """One column per symbol for a field, aligned on time (helper for multi-symbol loaders)."""
    return pd.DataFrame({sym: df[field] for sym, df in frames.items()}).sort_index()


def _as_list(symbols: str | Iterable[str]) -> list[str]:
    if isinstance(symbols, str):
        return [s.strip() for s in symbols.split(",") if s.strip()]
    return list(symbols)
