"""The CSV formats a learner is likely to have, read into one raw table (lesson 01's engineering).

Behind :func:`course_lib.load_csv`: which delimiter and header rows a file uses (``;``/tab/``|`` separators,
Yahoo's two-row headers, Bybit dumps without a header), which column holds the time and what the others are
called, and how its time stamps are written (epoch seconds or milliseconds, ISO with or without offsets,
d/m/Y or m/d/Y, a date and a clock in two columns). The checks of the bars themselves stay in
:mod:`course_lib.data.loaders`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

_TIME_ALIASES = (
    "time", "date", "datetime", "timestamp", "starttime", "start_time", "start", "open_time", "opentime", "ts",
)  # fmt: skip
_NA_VALUES = ["null", "NaN", "nan", ""]
#: Field order of a Bybit v5 kline row (``result.list``), for dumps saved without a header.
_BYBIT_KLINE_COLUMNS = ("startTime", "open", "high", "low", "close", "volume", "turnover")
#: Field separators tried when the header does not split on commas.
_OTHER_DELIMITERS = (";", "\t", "|")
# d/m/Y or m/d/Y with "/", "." or "-", optionally followed by a time of day H:M[:S[.fraction]].
_DMY = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:([ T])(\d{1,2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?)?")
# A time of day on its own (H:M[:S[.fraction]]), as in files that split Date and Time into two columns.
_CLOCK = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?")
# A time of day followed by a UTC offset: "... 00:00:00-05:00", "...T00:00+0900", "... 00:00:00Z".
_TRAILING_OFFSET = re.compile(_CLOCK.pattern + r"\s*(Z|[+-]\d{2}:?\d{2})$")
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


def _normalise_name(name: object) -> str:
    text = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    return _COLUMN_ALIASES.get(text, text)


def _check_epoch_range(numeric: pd.Series, unit: str, where: str) -> None:
    """Refuse epoch numbers that are not finite or lie outside the datetimes pandas can hold (1677-2262)."""
    values = numeric.to_numpy(dtype=float)
    ns = values * {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}[unit]
    bad = ~np.isfinite(ns) | (np.abs(ns) >= 9.2e18)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: timestamp {_raw_repr(numeric.iloc[row])} in data row {row + 1} is not a usable epoch time in "
            f"{unit} (the other rows are): it is not finite or lies outside 1677-2262. Fix or remove that row."
        )


def _raw_repr(value: object) -> str:
    return repr(value.item() if hasattr(value, "item") else value)


def _epoch_index(numeric: pd.Series, unit: str) -> pd.DatetimeIndex:
    """Epoch numbers in ``unit``; fractional values are kept (to the microsecond), not truncated."""
    if pd.api.types.is_integer_dtype(numeric):
        return pd.DatetimeIndex(pd.to_datetime(numeric.astype("int64"), unit=unit))
    values = numeric.to_numpy(dtype=float)
    if np.all(values == np.round(values)):
        return pd.DatetimeIndex(pd.to_datetime(values.astype("int64"), unit=unit))
    if unit == "ns":
        return pd.DatetimeIndex(pd.to_datetime(np.round(values).astype("int64"), unit="ns"))
    to_us = {"s": 1e6, "ms": 1e3, "us": 1.0}[unit]
    return pd.DatetimeIndex(pd.to_datetime(np.round(values * to_us).astype("int64"), unit="us"))


def _day_month_format(text: pd.Series, where: str, dayfirst: bool | None) -> tuple[str, bool, str | None] | None:
    """Choose one explicit format for a column of d/m/Y or m/d/Y dates (``/``, ``.`` or ``-``, optional time).

    Returns ``(format, dayfirst, hint)`` or None when the column is not of that shape. The format is
    ``"mixed"`` only when rows differ in time-of-day precision. ``hint`` is set when the order was a guess.
    """
    if len(text) == 0 or not _DMY.fullmatch(text.iloc[0]):
        return None
    parts = text.str.extract("^" + _DMY.pattern + "$")
    if parts[0].isna().any():
        return None
    seps = parts[1].to_numpy()
    if (seps != seps[0]).any():
        row = int(np.flatnonzero(seps != seps[0])[0])
        raise DataError(
            f"{where}: data row {row + 1} ({text.iloc[row]!r}) separates the date with {seps[row]!r} but data row 1 "
            f"({text.iloc[0]!r}) uses {seps[0]!r}. Write every date the same way (ISO 2024-01-31 is safest)."
        )
    sep = str(seps[0])
    first, second = parts[0].astype(int).to_numpy(), parts[2].astype(int).to_numpy()
    hint = None
    if dayfirst is None:
        day_rows, month_rows = np.flatnonzero(first > 12), np.flatnonzero(second > 12)
        if len(day_rows) and len(month_rows):
            i, j = int(day_rows[0]), int(month_rows[0])
            raise DataError(
                f"{where}: the dates fit neither day-first nor month-first: data row {i + 1} ({text.iloc[i]!r}) has a "
                f"first field above 12 but data row {j + 1} ({text.iloc[j]!r}) has a second field above 12. "
                "Write every date the same way (ISO 2024-01-31 is safest)."
            )
        if len(day_rows):
            dayfirst = True
        elif len(month_rows):
            dayfirst = False
        else:  # ambiguous: US m/d/Y for "/" and "-" (Yahoo's export), European d.m.Y for "."
            dayfirst = sep == "."
            differ = np.flatnonzero(first != second)
            if len(differ):  # the order matters (else both readings give the same dates)
                i = int(differ[0])
                day, month = (first[i], second[i]) if dayfirst else (second[i], first[i])
                example = f"{text.iloc[i]!r} = {parts[3].iloc[i]}-{month:02d}-{day:02d}"
                read_as, other = ("day/month/year", "month-first") if dayfirst else ("month/day/year", "day-first")
                hint = (
                    f"The dates are ambiguous (no day or month field above 12) and were read as {read_as} "
                    f"({example}); they may be {other}: if so, pass dayfirst={not dayfirst}."
                )
    date_fmt = sep.join(["%d", "%m", "%Y"] if dayfirst else ["%m", "%d", "%Y"])
    shapes = parts[4].fillna("") + parts[7].notna().astype(str) + parts[8].notna().astype(str)
    if shapes.nunique() > 1:
        return "mixed", dayfirst, hint
    fmt = date_fmt
    if parts[4].notna().iloc[0]:
        fmt += parts[4].iloc[0] + "%H:%M" + (":%S" if parts[7].notna().iloc[0] else "")
        fmt += ".%f" if parts[8].notna().iloc[0] else ""
    return fmt, dayfirst, hint


def _parse_time(
    raw: pd.Series, where: str, dayfirst: bool | None = None
) -> tuple[pd.DatetimeIndex, str | None, str | None]:
    """Parse epoch numbers (s, ms, us, ns: chosen by magnitude) or date strings (ISO, m/d/Y or d/m/Y).

    Returns the index; when the day/month order of the dates was a guess, a hint (warned, and repeated in
    errors); and a note when a partial last daily bar was dated (see :func:`_local_midnight_dates`).
    """
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
            _check_epoch_range(numeric, unit, where)
            return _epoch_index(numeric, unit), None, None
    text = raw.astype(str).str.strip()
    fmt, hint, how = "mixed", None, ""
    chosen = _day_month_format(text, where, dayfirst)
    if chosen is not None:
        fmt, first, hint = chosen
        how = f" as {'day/month/year' if first else 'month/day/year'}" + (f" ({fmt!r})" if fmt != "mixed" else "")
        kwargs = {"format": fmt, "dayfirst": first} if fmt == "mixed" else {"format": fmt}
    else:
        kwargs = {"format": "mixed"}
    try:
        parsed = pd.to_datetime(text, utc=True, **kwargs)
    except (ValueError, TypeError) as exc:
        bad = None
        for i, value in enumerate(text):
            try:
                pd.to_datetime(value, utc=True, **({} if kwargs["format"] == "mixed" else kwargs))
            except (ValueError, TypeError):
                bad = (i, value)
                break
        loc = f" (data row {bad[0] + 1}: {bad[1]!r})" if bad else ""
        order = " Pass dayfirst=True or dayfirst=False if the day/month order is wrong." if how else ""
        raise DataError(
            f"{where}: could not parse timestamps{loc}{how}. Use ISO dates like 2024-01-31 or epoch milliseconds.{order}"
        ) from exc
    utc = pd.DatetimeIndex(parsed).tz_convert("UTC").tz_localize(None)
    index, note = _local_midnight_dates(text, utc)
    return index, hint, note


def _local_midnight_dates(text: pd.Series, utc: pd.DatetimeIndex) -> tuple[pd.DatetimeIndex, str | None]:
    """Daily bars stamped at local midnight with an offset (yfinance's ``2024-01-02 00:00:00-05:00``,
    an exchange in Tokyo at ``+09:00``) keep their calendar date: in UTC they would move to 05:00, or to
    15:00 of the *previous* day, and no longer match the dates a learner types. Anything else stays UTC.

    A last row at another time of a later date (a daily bar saved while still trading: ``10:30+09:00``)
    does not turn the whole file to UTC: it is read as that date's bar, and the returned note says so.
    """
    offsets = text.str.extract(_TRAILING_OFFSET, expand=False)
    if len(text) == 0 or offsets.isna().any():
        return utc, None
    digits = offsets.str.replace(":", "", regex=False).str.replace("Z", "+0000", regex=False)
    minutes = digits.str[1:3].astype(int) * 60 + digits.str[3:5].astype(int)
    minutes = np.where(digits.str[0] == "-", -minutes, minutes)
    local = utc + pd.to_timedelta(minutes, unit="min")
    midnight = local == local.normalize()
    if midnight.all():
        return local, None
    dates = local.normalize()
    if len(local) >= 3 and midnight[:-1].all() and dates[-1] > dates[-2]:
        note = (
            f"the last row ({text.iloc[-1]!r}) is not at local midnight like the others: read as the daily bar "
            f"of {dates[-1].date()} (a bar saved while still trading is partial: drop that row if so)"
        )
        return dates, note
    return utc, None


def _date_and_clock(raw: pd.DataFrame) -> pd.Series | None:
    """``date + " " + time`` when the file splits the timestamp into a Date and a Time-of-day column.

    MetaTrader and many broker exports write ``Date,Time,Open,...`` with ``Time`` like ``09:30``; reading
    ``Time`` alone would put every bar on today's date. None when the columns are not of that shape.
    """
    if "date" not in raw.columns or "time" not in raw.columns:
        return None
    clock = raw["time"].astype(str).str.strip()
    present = raw["time"].notna().to_numpy()
    if not present.any() or not clock[present].str.fullmatch(_CLOCK.pattern).all():
        return None
    return (raw["date"].astype(str).str.strip() + " " + clock).where(raw["time"].notna() & raw["date"].notna())


def _peek_rows(path: Path, n: int = 3, delimiter: str = ",") -> list[list[str]]:
    """The first ``n`` non-blank lines split into fields, names exactly as written (pandas renames duplicates)."""
    head = pd.read_csv(
        path, header=None, nrows=n, sep="\x01", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
    )
    return [next(csv.reader([line], delimiter=delimiter), []) for line in head[0]]


def _other_delimiter(header: list[str]) -> str | None:
    """``;``, tab or ``|`` when the header line does not split on commas but does on one of those.

    Excel in many European locales saves "CSV" with ``;`` between fields (and ``,`` as the decimal mark).
    """
    if len(header) != 1:
        return None
    counts = {d: header[0].count(d) for d in _OTHER_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def _headerless_kline(rows: list[list[str]]) -> list[str] | None:
    """Column names for a headerless dump of Bybit kline rows, or None when the first line is a header.

    Bybit's ``result.list`` rows are ``[startTime, open, high, low, close, volume, turnover]`` (7 numbers;
    6 without turnover) and learners often save them as they come, with no header line.
    """
    if not rows or len(rows[0]) not in (6, 7):
        return None
    try:
        [float(field) for field in rows[0]]
    except ValueError:
        return None
    return list(_BYBIT_KLINE_COLUMNS[: len(rows[0])])


def _multi_header(rows: list[list[str]]) -> tuple[int, int, int] | None:
    """``(price_row, ticker_row, header_lines)`` for a CSV saved from two-level columns (yfinance >= 0.2.48).

    That layout is ``Price,Close,...`` / ``Ticker,SPY,...`` (either order) and, when the index had a name,
    a third line ``Date,,,...``. Returns None for an ordinary one-line header.
    """
    if len(rows) < 3 or len(rows[0]) < 2 or len(rows[1]) != len(rows[0]):
        return None
    labels = {rows[0][0].strip().lower(), rows[1][0].strip().lower()}
    index_line = len(rows[2]) == len(rows[0]) and rows[2][0].strip() != "" and not any(c.strip() for c in rows[2][1:])
    if labels != {"price", "ticker"} and not (labels == {""} and index_line):
        return None
    price_row = next((r for r in (0, 1) if "close" in {_normalise_name(c) for c in rows[r][1:]}), None)
    if price_row is None:
        return None
    return price_row, 1 - price_row, 3 if index_line else 2


def _read_raw(path: Path, where: str, symbol: str | None) -> tuple[pd.DataFrame, list[str], str | None, str | None]:
    """The CSV's data, its column names as written, the ticker when the file names one, and a note to
    report when the names had to be supplied (a headerless Bybit dump)."""
    try:
        rows = _peek_rows(path)
        kline = _headerless_kline(rows)
        if kline is not None:
            raw = pd.read_csv(path, header=None, na_values=_NA_VALUES, keep_default_na=True)
            if raw.shape[1] == len(kline):
                note = f"no header line; read the columns in Bybit's kline order ({', '.join(kline)})"
                return raw, kline, None, note
        sep = _other_delimiter(rows[0]) if rows else None
        if sep is not None:
            rows = _peek_rows(path, delimiter=sep)
            # with ";" or tab between fields, a comma inside a field is a decimal comma (1,5 = 1.5)
            decimal = "," if any("," in field for row in rows[1:] for field in row) else "."
            raw = pd.read_csv(path, sep=sep, decimal=decimal, na_values=_NA_VALUES, keep_default_na=True)
            names = rows[0] if len(rows[0]) == raw.shape[1] else [str(c) for c in raw.columns]
            return raw, names, None, None
        layout = _multi_header(rows)
        if layout is None:
            raw = pd.read_csv(path, na_values=_NA_VALUES, keep_default_na=True)
            names = rows[0] if rows and len(rows[0]) == raw.shape[1] else [str(c) for c in raw.columns]
            return raw, names, None, None
        price_row, ticker_row, n_header = layout
        try:
            raw = pd.read_csv(path, header=None, skiprows=n_header, na_values=_NA_VALUES, keep_default_na=True)
        except pd.errors.EmptyDataError:
            raw = pd.DataFrame(columns=range(len(rows[0])))
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{where}: the file is empty. Download it again or choose another file.") from exc
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{where}: not a readable CSV ({exc}). Export the data as comma-separated text.") from exc
    if raw.shape[1] != len(rows[0]):
        raise DataError(
            f"{where}: the header has {len(rows[0])} fields but the data rows have {raw.shape[1]}. "
            "Save the file again with DataFrame.to_csv."
        )
    time_name = rows[2][0] if n_header == 3 else ""
    names = [time_name, *rows[price_row][1:]]
    tickers = [t.strip() for t in rows[ticker_row][1:]]
    found = list(dict.fromkeys(t for t in tickers if t))
    if symbol is None:
        if len(found) > 1:
            raise DataError(
                f"{where}: a yfinance file with {len(found)} tickers {found}; load_csv reads one series. Pass "
                f"symbol={found[0]!r} (or another of them), or save one ticker per file "
                f"(yf.download({found[0]!r}).to_csv(...))."
            )
        return raw.set_axis(range(raw.shape[1]), axis=1), names, found[0] if found else None, None
    match = [t for t in found if t.upper() == symbol.strip().upper()]
    if not match:
        raise DataError(f"{where}: symbol {symbol!r} is not in this file; its tickers are {found}.")
    keep = [0] + [i + 1 for i, t in enumerate(tickers) if t == match[0]]
    raw = raw.iloc[:, keep]
    return raw.set_axis(range(raw.shape[1]), axis=1), [names[i] for i in keep], match[0], None


def _column_names(written: list[str], where: str, time_column: str | None) -> tuple[list[str], bool]:
    """Normalised names, and whether the unnamed first column (a saved index) is to be dropped.

    The unnamed first column is the time only when no other column can be: ``df.reset_index().to_csv()``
    writes the integer index first and the real ``Date`` after it.
    """
    names = [_normalise_name(c) for c in written]
    drop_first = False
    if names and (names[0] == "" or names[0].startswith("unnamed")):
        others = names[1:]
        if time_column is not None:
            has_time = _normalise_name(time_column) in others
        else:
            has_time = any(a in others for a in _TIME_ALIASES)
        drop_first = has_time
        names[0] = "" if has_time else "time"
    seen: dict[str, list[str]] = {}
    for i, (name, original) in enumerate(zip(names, written)):
        if name and not (drop_first and i == 0):
            seen.setdefault(name, []).append(original)
    clashes = {name: originals for name, originals in seen.items() if len(originals) > 1}
    if clashes:
        name, originals = next(iter(clashes.items()))
        raise DataError(
            f"{where}: columns {originals} all mean {name!r} (names are matched ignoring case, spaces and "
            "punctuation), so it is not clear which one to use. Delete or rename all but one of them."
        )
    return names, drop_first
