"""Property tests: ``load_csv`` on randomly mutated CSV files returns a clean frame or raises DataError.

A valid OHLCV table is written in one of the layouts the loader promises to read (ISO dates, a Yahoo
export with ``Adj Close`` and m/d/Y dates, epoch milliseconds newest-first as Bybit serves them, a
European ``;`` file with decimal commas, a headerless Bybit kline dump), then damaged by a few random edits
a learner's file really suffers: emptied or garbled cells, ``nan``/``inf``/negative/zero prices, swapped,
repeated, dropped or reordered rows, high and low swapped, a broken date, a missing, renamed or extra
column, a truncated last line, stray bytes. Whatever comes out, it is either a :class:`course_lib.DataError`
(never another exception) or a frame the rest of the course may trust: a sorted, unique, naive
DatetimeIndex and the five float columns, all finite, prices > 0, low <= open, close <= high, volume >= 0.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import course_lib as cl

LAYOUTS = ("iso", "yahoo", "epoch_newest_first", "semicolon", "bybit_headerless")


def random_bars(seed: int, n: int, freq: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2019-01-01") + pd.Timedelta(days=int(rng.integers(0, 1500)))
    idx = pd.date_range(start, periods=n, freq=freq)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    volume = rng.integers(0, 10_000, n).astype(float)
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume},
                        index=pd.DatetimeIndex(idx, name="time")).round(6)


def render(df: pd.DataFrame, layout: str) -> tuple[list[list[str]], str, bool]:
    """Rows of fields (header first unless headerless), the separator, and whether there is a header."""
    num = df.to_numpy()
    if layout == "iso":
        header = ["time", "open", "high", "low", "close", "volume"]
        times = [t.isoformat(sep=" ") for t in df.index]
        rows = [[t, *(repr(float(v)) for v in r)] for t, r in zip(times, num)]
        return [header, *rows], ",", True
    if layout == "yahoo":
        header = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
        fmt = "%m/%d/%Y" if (df.index == df.index.normalize()).all() else "%m/%d/%Y %H:%M"
        rows = [[t.strftime(fmt), *(repr(float(v)) for v in r[:4]), repr(float(r[3])), repr(float(r[4]))]
                for t, r in zip(df.index, num)]
        return [header, *rows], ",", True
    if layout == "epoch_newest_first":
        header = ["startTime", "open", "high", "low", "close", "volume"]
        rows = [[str(int(t.value // 1_000_000)), *(repr(float(v)) for v in r)] for t, r in zip(df.index, num)]
        return [header, *rows[::-1]], ",", True
    if layout == "semicolon":
        header = ["Date", "Open", "High", "Low", "Close", "Volume"]
        rows = [[t.isoformat(sep=" "), *(repr(float(v)).replace(".", ",") for v in r)] for t, r in zip(df.index, num)]
        return [header, *rows], ";", True
    rows = [[str(int(t.value // 1_000_000)), *(repr(float(v)) for v in r)] for t, r in zip(df.index, num)]
    return rows[::-1], ",", False


BAD_VALUES = ["", "nan", "NaN", "null", "inf", "-inf", "1e400", "-1", "0", "-0.0", "abc", "1,,2", '"', "  ", "1e-320",
              "2024-13-45", "12:30", "0x10", "None", "∞"]


@st.composite
def mutations(draw, n_rows: int, n_cols: int, header: bool):
    first = 1 if header else 0
    kinds = st.sampled_from(["cell", "swap_rows", "dup_row", "drop_row", "swap_high_low", "drop_col", "extra_col",
                             "rename_col", "truncate", "blank_line", "bytes", "char", "reverse", "dup_time",
                             "scale", "scale"])
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(kinds)
        row = draw(st.integers(first, n_rows - 1))
        row2 = draw(st.integers(first, n_rows - 1))
        col = draw(st.integers(0, n_cols - 1))
        value = draw(st.sampled_from(BAD_VALUES) | st.text(max_size=6))
        out.append((kind, row, row2, col, value, draw(st.integers(0, 10_000))))
    return out


def apply(rows: list[list[str]], sep: str, header: bool, edits) -> bytes:
    rows = [list(r) for r in rows]
    first = 1 if header else 0
    raw_bytes: list[tuple[int, bytes]] = []
    truncate_at = None
    for kind, row, row2, col, value, pos in edits:
        row, row2 = min(row, len(rows) - 1), min(row2, len(rows) - 1)
        if row < first or not rows:
            continue
        if kind == "cell":
            rows[row][min(col, len(rows[row]) - 1)] = value
        elif kind == "scale":  # a plausible-looking number that may break the bar's consistency
            c = 1 + col % max(1, len(rows[row]) - 1)
            try:
                x = float(rows[row][c].replace(",", "."))
            except (ValueError, IndexError):
                continue
            factor = [0.5, 2.0, 1.0001, 1e-9, 1e9, -1.0, 0.0][pos % 7]
            rows[row][c] = repr(x * factor).replace(".", "," if sep == ";" else ".")
        elif kind == "swap_rows":
            rows[row], rows[row2] = rows[row2], rows[row]
        elif kind == "dup_row":
            rows.insert(row, list(rows[row]))
        elif kind == "dup_time" and row2 != row:
            rows[row2][0] = rows[row][0]
        elif kind == "drop_row" and len(rows) > first + 1:
            del rows[row]
        elif kind == "swap_high_low" and len(rows[row]) > 3:
            rows[row][2], rows[row][3] = rows[row][3], rows[row][2]
        elif kind == "drop_col":
            for r in rows:
                if col < len(r):
                    del r[col]
        elif kind == "extra_col":
            for i, r in enumerate(rows):
                r.insert(col, "extra" if (header and i == 0) else value)
        elif kind == "rename_col" and header:
            rows[0][col % len(rows[0])] = value
        elif kind == "truncate":
            truncate_at = pos
        elif kind == "blank_line":
            rows.insert(row, [])
        elif kind == "bytes":
            raw_bytes.append((pos, bytes([0xFF, 0xFE, 0x00][pos % 3: pos % 3 + 1 + pos % 2])))
        elif kind == "char":
            line = sep.join(rows[row])
            if line:
                i = pos % len(line)
                rows[row] = (line[:i] + (value[:1] or "x") + line[i + 1:]).split(sep)
        elif kind == "reverse":
            rows[first:] = rows[first:][::-1]
    text = "\n".join(sep.join(r) for r in rows) + "\n"
    data = text.encode("utf-8")
    for pos, b in raw_bytes:
        i = pos % (len(data) + 1)
        data = data[:i] + b + data[i:]
    if truncate_at is not None and len(data) > 10:
        data = data[: len(data) - 1 - truncate_at % min(len(data) // 3, 40)]
    return data


def assert_clean(df: pd.DataFrame) -> None:
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(cl.OHLCV_COLUMNS)
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.tz is None
    assert not df.index.hasnans
    assert df.index.is_monotonic_increasing and df.index.is_unique
    values = df.to_numpy()
    assert values.dtype == np.float64
    assert np.isfinite(values).all(), "a NaN or inf got through"
    o, h, lo, c, v = values.T
    assert (o > 0).all() and (h > 0).all() and (lo > 0).all() and (c > 0).all(), "a non-positive price got through"
    assert (h >= lo).all() and (v >= 0).all()
    tol = 1e-6 * h
    assert ((o <= h + tol) & (o >= lo - tol) & (c <= h + tol) & (c >= lo - tol)).all()
    assert len(df) >= 2


def load(data: bytes, name: str = "bars.csv", **kw) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cl.DataWarning)
            return cl.load_csv(path, **kw)


@given(st.data(), st.integers(0, 2**31), st.integers(4, 40), st.sampled_from(["D", "h", "B"]),
       st.sampled_from(LAYOUTS))
def test_mutated_csv_gives_a_clean_frame_or_a_data_error(data, seed, n, freq, layout):
    df = random_bars(seed, n, freq)
    rows, sep, header = render(df, layout)
    edits = data.draw(mutations(len(rows), len(rows[0]), header), label="edits")
    blob = apply(rows, sep, header, edits)
    try:
        out = load(blob)
    except cl.DataError as exc:
        words = re.sub(r"[^a-z ]+", " ", str(exc).split(": ", 1)[-1].lower()).split()
        event("DataError: " + " ".join(words[:4]))  # what the loader refused, for --hypothesis-show-statistics
        return
    event("clean frame")
    assert_clean(out)


@given(st.integers(0, 2**31), st.integers(3, 40), st.sampled_from(["D", "h", "B"]), st.sampled_from(LAYOUTS))
def test_unmutated_csv_round_trips(seed, n, freq, layout):
    """The control: every layout above is read back exactly (so the mutations are what the loader sees)."""
    df = random_bars(seed, n, freq)
    rows, sep, header = render(df, layout)
    out = load(apply(rows, sep, header, []))
    assert_clean(out)
    pd.testing.assert_frame_equal(out, df, check_freq=False, check_names=False, check_index_type=False,
                                  rtol=1e-12)


@given(st.integers(0, 2**31), st.integers(1, 12), st.integers(1, 12), st.integers(6, 30))
def test_dayfirst_override_reads_an_ambiguous_file_right(seed, day, month, n_hours):
    """Hourly bars on days 1..12 written d/m/Y (every field <= 12): ``dayfirst=True`` gives the true dates."""
    start = pd.Timestamp(2024, month, day, 0)
    df = random_bars(seed, n_hours, "4h").set_axis(pd.date_range(start, periods=n_hours, freq="4h", name="time"))
    if df.index[-1].day > 12:
        df = df[df.index.day <= 12]
    rows = [["Date", "Open", "High", "Low", "Close", "Volume"]]
    rows += [[t.strftime("%d/%m/%Y %H:%M"), *(repr(float(v)) for v in r)] for t, r in zip(df.index, df.to_numpy())]
    blob = apply(rows, ",", True, [])
    out = load(blob, dayfirst=True)
    assert (out.index == df.index).all()


@given(st.integers(0, 2**31), st.integers(1, 8), st.integers(1, 12))
def test_ambiguous_day_month_order_is_announced(seed, day, month):
    """Every field <= 12: the loader must say which order it chose and how to override it (dayfirst; issue 10
    item 8: it was read month-first without a word)."""
    start = pd.Timestamp(2024, month, day)
    df = random_bars(seed, 24, "4h").set_axis(pd.date_range(start, periods=24, freq="4h", name="time"))
    rows = [["Date", "Open", "High", "Low", "Close", "Volume"]]
    rows += [[t.strftime("%d/%m/%Y %H:%M"), *(repr(float(v)) for v in r)] for t, r in zip(df.index, df.to_numpy())]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bars.csv"
        path.write_bytes(apply(rows, ",", True, []))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cl.load_csv(path)
        except cl.DataError as exc:  # refusing is fine too, if the message names the override
            assert "dayfirst" in str(exc)
            return
    assert any("dayfirst" in str(w.message) for w in caught), "ambiguous dates were read without a word"


@given(st.integers(0, 2**31), st.integers(5, 30), st.sampled_from(["+09:00", "-05:00", "+05:30", "+01:00"]),
       st.integers(1, 23))
def test_local_midnight_daily_file_keeps_its_dates_with_a_partial_last_row(seed, n, offset, hour):
    """Daily bars stamped ``YYYY-MM-DD 00:00:00+09:00`` (an exchange in Tokyo) plus today's partial bar at
    ``hour``: the complete bars keep their calendar dates (issue 10 item 8: they moved to the day before)."""
    df = random_bars(seed, n, "B")
    rows = [["Date", "Open", "High", "Low", "Close", "Volume"]]
    stamps = [f"{t:%Y-%m-%d} 00:00:00{offset}" for t in df.index]
    stamps[-1] = f"{df.index[-1]:%Y-%m-%d} {hour:02d}:00:00{offset}"
    rows += [[s, *(repr(float(v)) for v in r)] for s, r in zip(stamps, df.to_numpy())]
    out = load(apply(rows, ",", True, []))
    assert (out.index[:-1] == df.index[:-1]).all()


@given(st.integers(0, 2**31), st.integers(3, 20), st.sampled_from(["inf", "-inf", "1e400", "1e30", "-1e30", "1e19"]),
       st.sampled_from([0, -1, 1]), st.booleans())
def test_non_finite_epoch_time_is_a_data_error(seed, n, bad, where, newest_first):
    """Epoch-millisecond files (Bybit): a time that is not a finite, representable number is refused with a
    DataError naming the row, wherever the row is (found by these properties: in the last row it was an
    IndexError from an overflowing order check)."""
    df = random_bars(seed, n, "h")
    rows, sep, header = render(df, "epoch_newest_first")
    if not newest_first:
        rows = [rows[0], *rows[1:][::-1]]
    row = {0: 1, -1: len(rows) - 1, 1: len(rows) // 2}[where]
    rows[row][0] = bad
    with pytest.raises(cl.DataError):
        load(apply(rows, sep, header, []))


@given(st.integers(0, 2**31), st.integers(5, 60), st.data())
def test_backtester_refuses_unusable_prices_with_a_data_error(seed, n, data):
    """The backtester checks prices as load_csv does (issue 10 items 6 and 11): a NaN, inf, zero or negative
    close beyond the first bar, or a repeated timestamp, is a DataError, never a silent 0% bar, a -100%
    return or a TypeError."""
    df = random_bars(seed, n, "h")
    close = df["close"].copy()
    bad = data.draw(st.sampled_from(["nan", "inf", "-inf", "zero", "negative", "duplicate"]), label="damage")
    at = data.draw(st.integers(1, n - 1), label="bar")
    if bad == "duplicate":
        idx = close.index.to_numpy().copy()
        idx[at] = idx[at - 1]
        close.index = pd.DatetimeIndex(idx, name="time")
    else:
        close.iloc[at] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "zero": 0.0, "negative": -close.iloc[at]}[bad]
    positions = pd.Series(1.0, index=close.index[~close.index.duplicated()])
    with pytest.raises(cl.DataError):
        cl.Backtester(cl.BacktestConfig(n_boot=0)).run(positions, prices=close)
