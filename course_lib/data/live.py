"""Live market data from Yahoo Finance (yfinance) and Bybit (pybit), cached to ``data/cache/``.

Both loaders return ``{symbol: DataFrame}`` in the course's shape (see :mod:`course_lib.data`): a sorted,
unique, naive-UTC ``DatetimeIndex`` named ``time`` and float columns ``open, high, low, close, volume``,
checked with the same checks :func:`course_lib.load_csv` applies (:func:`course_lib.validate_ohlcv` plus
open and close inside ``[low, high]``). Every download is written to a CSV that :func:`course_lib.load_csv`
reads back, so a lesson keeps working when the network does not. A bar whose open or close lies outside
its own ``[low, high]`` (both feeds publish a few) gets its high/low widened to cover them, reported with a
:class:`course_lib.DataWarning`; a cache file that still cannot be read back is skipped with a warning that
names it and the reason.

Why so much care for "just download prices"? A naive loader fetches Bybit klines once with
``limit=1000``: anything longer than 1,000 bars is silently truncated, a rate-limit reply crashes the run,
and an error reply (``retCode != 0``) is parsed as if it were data. Here:

* Bybit requests are split into chunks of at most 1,000 candles and paged, then merged oldest-first with
  duplicates removed; the still-forming newest candle is dropped (its close is not final yet);
* ``retCode != 0`` raises :class:`course_lib.DataError` carrying Bybit's own ``retMsg``;
* time-outs, connection errors and rate limits (``retCode`` 10006, HTTP 429) are retried with exponential
  back-off; if the network stays unreachable the loader says so and falls back to the cache (with a
  :class:`course_lib.DataWarning`), or raises a ``DataError`` explaining that there is neither network
  nor cache.

Cache policy: a request whose ``end`` is given is fully determined, so it is served from its cache file when
present (``refresh=True`` downloads again). An open-ended request (``end=None``, "up to now") always asks
the network and uses the cache only as the offline fallback.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import atomic_path
from .loaders import (
    OHLCV_COLUMNS,
    DataError,
    DataWarning,
    _as_list,
    _normalise_name,
    _validate_bars,
    _widen_range_to_open_close,
    data_dir,
    load_csv,
)

__all__ = [
    "BYBIT_INTERVALS",
    "YFINANCE_INTERVALS",
    "BYBIT_MAX_LIMIT",
    "cache_path",
    "default_cache_dir",
    "load_bybit",
    "load_yfinance",
]

#: Bybit v5 kline intervals: minutes as strings, then day, week, month.
BYBIT_INTERVALS: tuple[str, ...] = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")  # fmt: skip
#: Most candles Bybit returns per ``get_kline`` call.
BYBIT_MAX_LIMIT = 1000
#: Intervals yfinance accepts (intraday ones only reach back ~60 days, 1m only ~7 days).
YFINANCE_INTERVALS: tuple[str, ...] = (
    "1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo",
)  # fmt: skip
_YF_ALIASES = {"1D": "1d", "D": "1d", "daily": "1d", "1W": "1wk", "W": "1wk", "weekly": "1wk", "1M": "1mo", "monthly": "1mo",
               "1H": "1h", "hourly": "1h"}  # fmt: skip
_BYBIT_ALIASES = {"1d": "D", "d": "D", "1w": "W", "w": "W", "1M": "M", "1h": "60", "4h": "240", "1m": "1"}
_BYBIT_RETRY_CODES = {10000, 10006, 10016}  # server timeout, too many visits (rate limit), server error
_INTERVAL_MS = {iv: int(iv) * 60_000 for iv in BYBIT_INTERVALS if iv.isdigit()} | {
    "D": 86_400_000,
    "W": 7 * 86_400_000,
    "M": 31 * 86_400_000,  # upper bound: only used to size chunks and spot unfinished candles
}


def default_cache_dir() -> Path:
    """``data/cache/`` next to the bundled data (created on first use; git-ignored)."""
    path = data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stamp(value: Any, missing: str) -> str:
    if value is None:
        return missing
    ts = _to_timestamp(value, "time")
    return ts.strftime("%Y%m%d") if ts == ts.normalize() else ts.strftime("%Y%m%dT%H%M%S")


def cache_path(
    source: str, symbol: str, interval: str, start: Any, end: Any, cache_dir: str | Path | None = None
) -> Path:
    """Where a request is cached: ``<cache_dir>/<source>_<symbol>_<interval>_<start>_<end>.csv``."""
    safe = re.sub(r"[^0-9A-Za-z.=-]+", "-", symbol).strip("-") or "symbol"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{source}_{safe}_{interval}_{_stamp(start, 'open')}_{_stamp(end, 'now')}.csv"


def _to_timestamp(value: Any, what: str) -> pd.Timestamp:
    """Naive-UTC timestamp from a string, datetime, Timestamp or epoch milliseconds (int)."""
    try:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            ts = pd.Timestamp(int(value), unit="ms")
        else:
            ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"could not read {what}={value!r} as a time; use '2024-01-31' or epoch milliseconds."
        ) from exc
    if ts is pd.NaT:
        raise DataError(f"{what} is missing (NaT); use '2024-01-31' or epoch milliseconds.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _to_ms(value: Any, what: str) -> int:
    return int(_to_timestamp(value, what).value // 1_000_000)


def _delivered(df: pd.DataFrame, path: Path, source: str, report: list[str], where: str) -> pd.DataFrame:
    """A live loader's last step: cache the checked frame, label it, and warn once per reported repair (the
    warning points at the caller of ``load_yfinance``/``load_bybit``)."""
    _write_cache(df, path)
    df.attrs["source"] = source
    df.attrs["load_report"] = report
    for line in report:
        warnings.warn(f"{where}: {line}", DataWarning, stacklevel=3)
    return df


def _write_cache(df: pd.DataFrame, path: Path) -> None:
    """Write atomically (temp file + rename) so an interrupted download never leaves half a cache file."""
    out = df[list(OHLCV_COLUMNS)].copy()
    out.index.name = "time"
    with atomic_path(path, suffix=".csv") as tmp:
        out.to_csv(tmp, date_format="%Y-%m-%dT%H:%M:%S")


def _read_cache(path: Path) -> pd.DataFrame:
    df = load_csv(path, min_rows=1)
    df.attrs["source"] = f"cache:{path}"
    return df


def _try_read_cache(path: Path, stacklevel: int) -> pd.DataFrame | None:
    """The cache file's bars, or None with a :class:`DataWarning` naming the file and why it was rejected."""
    try:
        return _read_cache(path)
    except DataError as exc:
        warnings.warn(
            f"cache file {path} was skipped: it cannot be read back ({exc}) Delete it; the next online "
            "download writes a fresh one.",
            DataWarning,
            stacklevel=stacklevel + 1,
        )
        return None


def _checked(df: pd.DataFrame, where: str, report: list[str]) -> pd.DataFrame:
    """Widen bars whose open/close lie outside [low, high] (reported), then apply load_csv's checks, so
    the cache file written from ``df`` is one :func:`load_csv` accepts."""
    df, widened = _widen_range_to_open_close(df)
    if widened:
        report.append(
            f"widened high/low of {widened} bar(s) whose open or close lay outside [low, high] "
            "(the feed's own inconsistency; open and close kept)"
        )
    return _validate_bars(df, where, min_rows=1)


def _fallback_cache(
    source: str, symbol: str, interval: str, start: Any, end: Any, cache_dir: str | Path | None
):
    """The exact cache file for this request, else the newest file for symbol+interval cut to [start, end].

    A file that cannot be read back is skipped with a :class:`DataWarning` (never silently).
    """
    exact = cache_path(source, symbol, interval, start, end, cache_dir)
    folder = exact.parent
    prefix = exact.name.rsplit("_", 2)[0] + "_"
    others = sorted(
        (p for p in folder.glob(prefix + "*.csv") if p != exact), key=lambda p: p.stat().st_mtime, reverse=True
    )
    lo = _to_timestamp(start, "start") if start is not None else None
    hi = _to_timestamp(end, "end") if end is not None else None
    for cand in ([exact] if exact.exists() else []) + others:
        df = _try_read_cache(cand, stacklevel=4)
        if df is None:
            continue
        if cand == exact:
            return df, exact
        if lo is not None:
            df = df.loc[df.index >= lo]
        if hi is not None:
            df = df.loc[df.index <= hi]
        if len(df):
            return df, cand
    return None, exact


# --------------------------------------------------------------------------------------------- yfinance


def _yf_interval(interval: str) -> str:
    iv = _YF_ALIASES.get(interval, interval)
    if iv not in YFINANCE_INTERVALS:
        raise DataError(f"unknown yfinance interval {interval!r}; use one of {list(YFINANCE_INTERVALS)}.")
    return iv


def _yf_frame_to_ohlcv(
    raw: pd.DataFrame, symbol: str, interval: str, where: str
) -> tuple[pd.DataFrame, list[str]]:
    """yfinance output (flat or MultiIndex columns, naive or tz-aware index) -> course shape."""
    report: list[str] = []
    df = raw
    if isinstance(df.columns, pd.MultiIndex):
        field_level = next(
            (
                lvl
                for lvl in range(df.columns.nlevels)
                if "close" in {str(v).lower() for v in df.columns.get_level_values(lvl)}
            ),
            None,
        )
        if field_level is None:
            raise DataError(f"{where}: yfinance returned columns {list(df.columns)} without a Close field.")
        other = [lvl for lvl in range(df.columns.nlevels) if lvl != field_level]
        for lvl in other:
            values = df.columns.get_level_values(lvl)
            if symbol in set(values):
                df = df.xs(symbol, axis=1, level=lvl)
            elif len(set(values)) == 1:
                df = df.droplevel(lvl, axis=1)
            else:
                raise DataError(
                    f"{where}: yfinance returned data for {sorted(set(values))}, not for {symbol!r}."
                )
            break
    df = df.copy()
    df.columns = [_normalise_name(c) for c in df.columns]
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: yfinance result lacks column(s) {missing}; got {list(df.columns)}.")
    df = df[list(OHLCV_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype("float64")
    idx = pd.DatetimeIndex(pd.to_datetime(df.index))
    if idx.tz is not None:
        # Intraday bars are instants: convert to UTC. Daily-or-longer bars are labelled by the exchange's
        # calendar date, so keep that date instead of shifting midnight New York to 05:00 UTC.
        intraday = interval.endswith("m") or interval.endswith("h")
        idx = idx.tz_convert("UTC").tz_localize(None) if intraday else idx.tz_localize(None)
    df.index = idx
    df.index.name = "time"
    empty = df[["open", "high", "low", "close"]].isna().all(axis=1)
    if empty.any():
        report.append(f"dropped {int(empty.sum())} row(s) without prices")
        df = df.loc[~empty.to_numpy()]
    if df["volume"].isna().any():
        report.append(f"filled {int(df['volume'].isna().sum())} missing volume value(s) with 0")
        df["volume"] = df["volume"].fillna(0.0)
    if not df.index.is_monotonic_increasing:
        df = df.sort_index(kind="stable")  # stable: "keep the last" below means the last one Yahoo sent
        report.append("sorted rows by time")
    if df.index.has_duplicates:
        report.append(f"dropped {int(df.index.duplicated().sum())} duplicate timestamp(s), keeping the last")
        df = df.loc[~df.index.duplicated(keep="last")]
    return df, report


def load_yfinance(
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
    interval: str = "1d",
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    download: Callable[..., pd.DataFrame] | None = None,
) -> dict[str, pd.DataFrame]:
    """Daily or intraday bars from Yahoo Finance, one symbol at a time, cached as CSV.

    Args:
        symbols: ``"SPY"``, ``"SPY,QQQ"`` or a list.
        start, end: Dates (``end`` exclusive, as in yfinance); ``end=None`` means "up to now".
        interval: A yfinance interval (``"1d"``, ``"1h"``, ``"5m"``, ...; ``"D"``/``"W"``/``"M"`` are accepted).
        cache_dir: Defaults to ``data/cache/``.
        refresh: Download even when a cache file for this exact request exists.
        download: Replacement for ``yfinance.download`` (tests inject a fake; no network needed).

    Prices are split/dividend adjusted (``auto_adjust=True``). yfinance does not raise when offline or
    when a symbol is wrong: it returns an empty frame. Then the cache is used if one exists (with a
    warning), otherwise a :class:`DataError` names the symbol, the range and the interval.

    Repairs, each reported with a :class:`course_lib.DataWarning` and listed in ``df.attrs["load_report"]``:

    * rows without any price are dropped;
    * missing volume values are filled with 0 (Yahoo leaves them empty for some indices and bars);
    * rows are sorted by time;
    * duplicate timestamps are dropped, keeping the last (Yahoo's latest revision of that bar);
    * a bar whose open or close lies outside its ``[low, high]`` gets high/low widened to cover them.
    """
    iv = _yf_interval(interval)
    if download is None:
        import yfinance  # imported lazily: the offline course never needs it

        download = yfinance.download
    out: dict[str, pd.DataFrame] = {}
    for symbol in _as_list(symbols):
        path = cache_path("yfinance", symbol, iv, start, end, cache_dir)
        if end is not None and path.exists() and not refresh:
            cached = _try_read_cache(path, stacklevel=2)
            if cached is not None:
                out[symbol] = cached
                continue
        where = f"yfinance {symbol} {start}..{end} interval={iv}"
        try:
            raw = download(symbol, start=start, end=end, interval=iv, auto_adjust=True, progress=False,
                           multi_level_index=True, threads=False)  # fmt: skip
            error = None
        except Exception as exc:  # noqa: BLE001 - yfinance raises many network-ish types; report them all
            raw, error = None, exc
        if raw is None or len(raw) == 0:
            cached, used = _fallback_cache("yfinance", symbol, iv, start, end, cache_dir)
            reason = f"failed ({type(error).__name__}: {error})" if error else "returned no rows"
            if cached is not None:
                warnings.warn(
                    f"{where}: download {reason}; using the cached copy {used}.", DataWarning, stacklevel=2
                )
                out[symbol] = cached
                continue
            raise DataError(
                f"{where}: Yahoo {reason}. Check the symbol (Yahoo spells the S&P 500 index '^GSPC'), that the "
                "range holds trading days (intraday intervals only reach back ~60 days) and that you are online. "
                f"No usable cache file either ({path}). Offline? Use course_lib.load_sample('sp500')."
            ) from error
        df, report = _yf_frame_to_ohlcv(raw, symbol, iv, where)
        if len(df) == 0:
            raise DataError(f"{where}: every row Yahoo returned was empty. Try another range or interval.")
        df = _checked(df, where, report)
        out[symbol] = _delivered(df, path, f"yfinance:{symbol}", report, where)
    return out


# ------------------------------------------------------------------------------------------------ Bybit


def _bybit_interval(interval: str | int) -> str:
    iv = str(interval)
    iv = _BYBIT_ALIASES.get(iv, iv)
    if iv not in BYBIT_INTERVALS:
        raise DataError(
            f"unknown Bybit interval {interval!r}; use one of {list(BYBIT_INTERVALS)} "
            "(minutes as strings, 'D' day, 'W' week, 'M' month)."
        )
    return iv


class _Offline(Exception):
    """Network unreachable (or rate-limited) after every retry."""

    def __init__(self, message: str, no_network: bool):
        super().__init__(message)
        self.no_network = no_network


def _is_network_error(exc: BaseException) -> bool:
    try:
        import requests

        if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
            return True
    except ImportError:  # pragma: no cover - requests comes with pybit and yfinance
        pass
    return isinstance(exc, (TimeoutError, ConnectionError))


def _classify(exc: BaseException) -> tuple[str, str]:
    """('network' | 'retry' | 'fatal', message) for an exception raised by the client."""
    if _is_network_error(exc):
        return "network", f"{type(exc).__name__}: {exc}"
    code = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    name = type(exc).__name__
    if name == "InvalidRequestError":  # pybit: Bybit answered with retCode != 0
        return ("retry" if code in _BYBIT_RETRY_CODES else "fatal"), f"Bybit error {code}: {message}"
    if name == "FailedRequestError":  # pybit: HTTP status != 200 or its own retries ran out
        retry = code in (403, 429) or (isinstance(code, int) and code >= 500)
        return ("retry" if retry else "fatal"), f"HTTP {code}: {message}"
    raise exc


def _get_kline_page(client: Any, query: dict, max_retries: int, sleep: Callable[[float], Any]) -> list:
    """One ``get_kline`` call with retries; returns Bybit's ``result.list`` (newest-first)."""
    last = ""
    network_only = True
    for attempt in range(max_retries + 1):
        try:
            resp = client.get_kline(**query)
        except Exception as exc:  # noqa: BLE001 - sorted into network / retry / fatal by _classify
            kind, last = _classify(exc)
            if kind == "fatal":
                raise DataError(
                    f"Bybit rejected {query}: {last}. Check the symbol, category and interval."
                ) from exc
            network_only &= kind == "network"
        else:
            if isinstance(resp, tuple):  # pybit with record_request_time / return_response_headers
                resp = resp[0]
            code = resp.get("retCode", resp.get("ret_code", 0))
            msg = resp.get("retMsg", resp.get("ret_msg", ""))
            if code in (0, None):
                result = resp.get("result") or {}
                rows = result.get("list")
                if rows is None:
                    raise DataError(f"Bybit reply for {query} has no result.list: {str(resp)[:200]}")
                return rows
            last = f"Bybit error {code}: {msg}"
            if code not in _BYBIT_RETRY_CODES:
                raise DataError(
                    f"Bybit returned retCode={code} ({msg!r}) for {query}. Check the symbol, category and interval."
                )
            network_only = False
        if attempt < max_retries:
            sleep(min(30.0, 0.5 * 2**attempt))
    raise _Offline(last, no_network=network_only)


def _fetch_bybit(
    client: Any,
    symbol: str,
    category: str,
    interval: str,
    start_ms: int | None,
    end_ms: int,
    max_retries: int,
    sleep: Callable[[float], Any],
) -> pd.DataFrame:
    """Page through [start_ms, end_ms] in chunks of <= 1,000 candles; merge oldest-first without duplicates."""
    step = _INTERVAL_MS[interval]
    base = {"category": category, "symbol": symbol, "interval": interval, "limit": BYBIT_MAX_LIMIT}
    pages: list[list] = []
    if start_ms is None:  # the latest 1,000 candles up to end
        pages.append(_get_kline_page(client, {**base, "end": end_ms}, max_retries, sleep))
    else:
        chunk_start = start_ms
        while chunk_start <= end_ms:
            chunk_end = min(end_ms, chunk_start + (BYBIT_MAX_LIMIT - 1) * step)
            page_end = chunk_end
            while page_end >= chunk_start:  # page backwards inside the chunk (newest-first replies)
                rows = _get_kline_page(
                    client, {**base, "start": chunk_start, "end": page_end}, max_retries, sleep
                )
                if not rows:
                    break
                pages.append(rows)
                oldest = min(int(r[0]) for r in rows)
                if len(rows) < BYBIT_MAX_LIMIT or oldest <= chunk_start:
                    break
                page_end = oldest - 1
            chunk_start = chunk_end + 1
    rows = [r for page in pages for r in page]
    if not rows:
        return pd.DataFrame(
            columns=list(OHLCV_COLUMNS), index=pd.DatetimeIndex([], name="time"), dtype="float64"
        )
    arr = np.asarray([[float(v) for v in r[:6]] for r in rows], dtype="float64")
    times = arr[:, 0].astype("int64")
    df = pd.DataFrame(
        arr[:, 1:6],
        columns=list(OHLCV_COLUMNS),
        index=pd.DatetimeIndex(pd.to_datetime(times, unit="ms"), name="time"),
    )
    df = df.loc[~df.index.duplicated(keep="last")].sort_index()
    lo = pd.Timestamp(start_ms, unit="ms") if start_ms is not None else df.index[0]
    return df.loc[(df.index >= lo) & (df.index <= pd.Timestamp(end_ms, unit="ms"))]


def _candle_close_ms(open_time: pd.Timestamp, interval: str) -> int:
    """When a candle opened at ``open_time`` closes (months have different lengths)."""
    if interval == "M":
        return int((open_time + pd.DateOffset(months=1)).value // 1_000_000)
    return int(open_time.value // 1_000_000) + _INTERVAL_MS[interval]


def _make_client(testnet: bool = False) -> Any:
    from pybit.unified_trading import HTTP

    # Our loop owns the retry policy (back-off, offline fallback), so pybit must not sleep and retry on its
    # own: a non-empty retry_codes set without 10006 makes rate limits surface as InvalidRequestError.
    return HTTP(testnet=testnet, timeout=10, max_retries=1, retry_codes={10002})


def load_bybit(
    symbols: str | Iterable[str],
    interval: str = "60",
    start: Any = None,
    end: Any = None,
    category: str = "linear",
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    client: Any = None,
    max_retries: int = 5,
    sleep: Callable[[float], Any] = time.sleep,
) -> dict[str, pd.DataFrame]:
    """Bybit v5 klines for one or more symbols, paginated past the 1,000-candle limit and cached.

    Args:
        symbols: ``"BTCUSDT"``, ``"BTCUSDT,ETHUSDT"`` or a list.
        interval: One of :data:`BYBIT_INTERVALS` (``"60"`` = hourly, ``"D"`` = daily).
        start, end: Times (string, datetime, Timestamp or epoch ms), both inclusive, UTC. ``start=None``:
            the latest 1,000 candles; ``end=None``: up to now.
        category: ``"linear"`` (USDT perpetuals), ``"inverse"`` or ``"spot"``.
        cache_dir: Defaults to ``data/cache/``.
        refresh: Download even when a cache file for this exact request exists.
        client: Object with ``get_kline(**kwargs)`` (default: ``pybit.unified_trading.HTTP()``; tests inject a
            fake that serves recorded-format replies).
        max_retries: Retries per request on time-outs, connection errors and rate limits.
        sleep: Called with the back-off delay in seconds (tests pass a no-op).

    Repairs, each reported with a :class:`course_lib.DataWarning` and listed in ``df.attrs["load_report"]``:
    the still-forming newest candle is dropped; a bar whose open or close lies outside its ``[low, high]``
    gets high/low widened to cover them. Gaps between candles are reported, not filled.

    Raises:
        DataError: unknown interval, ``retCode != 0`` (with Bybit's message), no rows in the range, or no
            network and no cache.
    """
    iv, now_ms, start_ms, end_ms = _bybit_request(interval, start, end, max_retries)
    out: dict[str, pd.DataFrame] = {}
    for symbol in _as_list(symbols):
        path = cache_path(f"bybit-{category}", symbol, iv, start, end, cache_dir)
        if end is not None and start is not None and path.exists() and not refresh:
            cached = _try_read_cache(path, stacklevel=2)
            if cached is not None:
                out[symbol] = cached
                continue
        where = f"Bybit {category} {symbol} interval={iv} {start}..{end if end is not None else 'now'}"
        try:
            if client is None:
                client = _make_client()
            df = _fetch_bybit(client, symbol, category, iv, start_ms, end_ms, max_retries, sleep)
        except _Offline as off:
            cached, used = _fallback_cache(f"bybit-{category}", symbol, iv, start, end, cache_dir)
            what = (
                "no network connection to Bybit"
                if off.no_network
                else "Bybit kept failing (rate limit or server error)"
            )
            if cached is not None:
                warnings.warn(
                    f"{where}: {what} after {max_retries} retries ({off}); using the cached copy {used} "
                    f"({cached.index[0]}..{cached.index[-1]}).",
                    DataWarning,
                    stacklevel=2,
                )
                out[symbol] = cached
                continue
            raise DataError(
                f"{where}: {what} after {max_retries} retries ({off}), and no cached copy at {path}. "
                "Connect to the internet and try again, or use the bundled data: course_lib.load_sample('sp500')."
            ) from None
        df, report = _bybit_repaired(df, iv, now_ms, where)
        out[symbol] = _delivered(df, path, f"bybit:{category}:{symbol}", report, where)
    return out


def _bybit_request(interval: str | int, start: Any, end: Any, max_retries: int) -> tuple[str, int, int | None, int]:
    """``load_bybit``'s arguments checked: (interval code, now, start, end), times in epoch ms."""
    iv = _bybit_interval(interval)
    if max_retries < 0:
        raise DataError(f"max_retries must be >= 0, got {max_retries}.")
    now_ms = int(time.time() * 1000)
    end_ms = _to_ms(end, "end") if end is not None else now_ms
    start_ms = _to_ms(start, "start") if start is not None else None
    if start_ms is not None and start_ms > end_ms:
        raise DataError(f"start {start} is after end {end}; swap them.")
    return iv, now_ms, start_ms, end_ms


def _bybit_repaired(df: pd.DataFrame, iv: str, now_ms: int, where: str) -> tuple[pd.DataFrame, list[str]]:
    """Downloaded candles made usable, and the report of each repair: the still-forming newest candle
    dropped, bars widened to cover their open and close, gaps counted (not filled)."""
    report: list[str] = []
    if len(df) and _candle_close_ms(df.index[-1], iv) > now_ms:
        df = df.iloc[:-1]
        report.append("dropped the newest candle: it is still forming (its close is not final)")
    if len(df) == 0:
        raise DataError(
            f"{where}: Bybit returned no candles. Check the dates (is the symbol listed then?)."
        )
    df = _checked(df, where, report)
    gaps = int((np.diff(df.index.as_unit("ns").asi8) // 1_000_000 > _INTERVAL_MS[iv]).sum()) if iv != "M" else 0
    if gaps:
        report.append(f"{gaps} gap(s) between candles (exchange downtime or listing date); not filled")
    return df, report
