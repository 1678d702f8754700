"""load_csv on the files learners actually have, and every DataError it promises."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

from course_lib import OHLCV_COLUMNS, DataError, DataWarning, load_csv, load_sample, validate_ohlcv

HEADER = "time,open,high,low,close,volume\n"


def write(tmp_path, text: str, name: str = "prices.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_course_shape(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(OHLCV_COLUMNS)
    assert all(df[c].dtype == np.float64 for c in OHLCV_COLUMNS)
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "time" and df.index.tz is None
    assert df.index.is_monotonic_increasing and df.index.is_unique


# ------------------------------------------------------------------------------------------ formats


YAHOO_US = """Date,Open,High,Low,Close,Adj Close,Volume
12/31/2019,100.0,101.5,99.5,101.0,95.0,1000
01/02/2020,101.0,103.0,100.5,102.5,96.4,1200
01/03/2020,null,null,null,null,null,null
01/06/2020,102.5,104.0,102.0,103.0,96.9,900
"""


def test_yahoo_export_us_dates_null_rows_reported(tmp_path):
    with pytest.warns(DataWarning, match="dropped 1 row"):
        df = load_csv(write(tmp_path, YAHOO_US))
    assert_course_shape(df)
    assert list(df.index) == [
        pd.Timestamp("2019-12-31"),
        pd.Timestamp("2020-01-02"),
        pd.Timestamp("2020-01-06"),
    ]
    assert df["close"].tolist() == [101.0, 102.5, 103.0]
    assert any("dropped 1 row" in line for line in df.attrs["load_report"])


def test_yahoo_export_iso_dates_and_adjustment(tmp_path):
    text = YAHOO_US.replace("12/31/2019", "2019-12-31").replace("01/02/2020", "2020-01-02")
    text = text.replace("01/03/2020", "2020-01-03").replace("01/06/2020", "2020-01-06")
    path = write(tmp_path, text)
    with pytest.warns(DataWarning):
        raw = load_csv(path)
    assert raw.index[1] == pd.Timestamp("2020-01-02")
    with pytest.warns(DataWarning, match="adj_close"):
        adj = load_csv(path, adjust=True)
    np.testing.assert_allclose(adj["close"].to_numpy(), [95.0, 96.4, 96.9])
    np.testing.assert_allclose(
        adj["open"].to_numpy(), raw["open"].to_numpy() * np.array([95.0, 96.4, 96.9]) / raw["close"]
    )
    np.testing.assert_allclose(adj["volume"].to_numpy(), raw["volume"].to_numpy())


def test_day_first_dates_detected_when_unambiguous(tmp_path):
    text = HEADER + "31/12/2019,1,2,0.5,1.5,3\n02/01/2020,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, text))
    assert list(df.index) == [pd.Timestamp("2019-12-31"), pd.Timestamp("2020-01-02")]


def test_pandas_to_csv_with_unnamed_datetime_index(tmp_path):
    idx = pd.date_range("2021-03-01", periods=6, freq="D")
    src = pd.DataFrame(
        {"Open": 1.0 + np.arange(6), "High": 2.0 + np.arange(6), "Low": 0.5 + np.arange(6),
         "Close": 1.5 + np.arange(6), "Volume": 10.0 * np.arange(6)},
        index=idx,
    )  # fmt: skip
    path = tmp_path / "saved.csv"
    src.to_csv(path)
    assert path.read_text().startswith(",Open")  # the unnamed first column a saved index produces
    df = load_csv(path)
    assert_course_shape(df)
    assert df.index.equals(pd.DatetimeIndex(idx, name="time"))
    np.testing.assert_allclose(df["close"].to_numpy(), src["Close"].to_numpy())


def test_round_trip_through_to_csv_gzip(tmp_path):
    df = load_sample("sp500").iloc[:50]
    path = tmp_path / "sp.csv.gz"
    df.to_csv(path)
    again = load_csv(path)
    pd.testing.assert_frame_equal(again, df, check_freq=False)


def test_bybit_kline_dump_epoch_ms_newest_first(tmp_path):
    t0 = 1_700_000_000_000
    rows = [[t0 + i * 3_600_000, 100 + i, 101 + i, 99 + i, 100.5 + i, 5 + i, 500 + i] for i in range(5)][::-1]
    text = (
        "startTime,open,high,low,close,volume,turnover\n"
        + "\n".join(",".join(map(str, r)) for r in rows)
        + "\n"
    )
    with pytest.warns(DataWarning, match="newest-first"):
        df = load_csv(write(tmp_path, text))
    assert_course_shape(df)
    assert df.index[0] == pd.Timestamp(t0, unit="ms") and df.index[-1] == pd.Timestamp(
        t0 + 4 * 3_600_000, unit="ms"
    )
    assert df["open"].tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert "reversed" in df.attrs["load_report"][0]


@pytest.mark.parametrize(
    ("stamps", "unit"),
    [([1_700_000_000, 1_700_000_060], "s"), ([1_700_000_000_000_000, 1_700_000_060_000_000], "us")],
)
def test_epoch_units_inferred(tmp_path, stamps, unit):
    text = "timestamp,open,high,low,close,volume\n" + "".join(f"{s},1,2,0.5,1.5,3\n" for s in stamps)
    df = load_csv(write(tmp_path, text))
    assert df.index[0] == pd.Timestamp(stamps[0], unit=unit)
    assert df.index[1] - df.index[0] == pd.Timedelta(minutes=1)


def test_intraday_timestamps(tmp_path):
    text = (
        HEADER
        + "2024-01-02 09:30:00,1,2,0.5,1.5,3\n2024-01-02 09:35:00,1,2,0.5,1.6,3\n2024-01-02 09:40:00,1,2,0.5,1.7,3\n"
    )
    df = load_csv(write(tmp_path, text))
    assert list(df.index.strftime("%H:%M")) == ["09:30", "09:35", "09:40"]


def test_tz_aware_strings_become_naive_utc(tmp_path):
    text = HEADER + "2024-01-02T09:30:00-05:00,1,2,0.5,1.5,3\n2024-01-02T16:00:00+00:00,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, text))
    assert df.index.tz is None
    assert list(df.index) == [pd.Timestamp("2024-01-02 14:30"), pd.Timestamp("2024-01-02 16:00")]


def test_column_names_are_matched_case_insensitively(tmp_path):
    text = "DATE,OPEN,High,low,Close ,VOLUME\n2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,3\n"
    assert_course_shape(load_csv(write(tmp_path, text)))


def test_explicit_time_column(tmp_path):
    text = "when,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError, match="no time column"):
        load_csv(write(tmp_path, text))
    assert len(load_csv(tmp_path / "prices.csv", time_column="when")) == 2
    with pytest.raises(DataError, match="'missing' not found"):
        load_csv(tmp_path / "prices.csv", time_column="missing")


def test_clean_file_loads_without_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = load_csv(write(tmp_path, HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,3\n"))
    assert df.attrs["load_report"] == []


def test_load_sample_sp500():
    df = load_sample("sp500")
    assert_course_shape(df)
    assert len(df) == 5031
    assert df.index[0] == pd.Timestamp("1999-01-04") and df.index[-1] == pd.Timestamp("2018-12-31")
    assert (df["high"] >= df["low"]).all() and (df["close"] > 0).all()
    with pytest.raises(DataError, match="Unknown sample"):
        load_sample("nasdaq")


# ------------------------------------------------------------------------------------------- errors


def test_file_not_found(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_csv(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_csv(write(tmp_path, ""))


def test_empty_gzip_file(tmp_path):
    path = tmp_path / "e.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("")
    with pytest.raises(DataError, match="empty"):
        load_csv(path)


def test_header_only(tmp_path):
    with pytest.raises(DataError, match="header only"):
        load_csv(write(tmp_path, HEADER))


@pytest.mark.parametrize("drop", ["open", "volume", "close"])
def test_missing_column_is_named(tmp_path, drop):
    cols = [c for c in OHLCV_COLUMNS if c != drop]
    text = "time," + ",".join(cols) + "\n" + "2024-01-02," + ",".join(["1"] * len(cols)) + "\n"
    with pytest.raises(DataError, match=rf"missing column\(s\) \['{drop}'\]"):
        load_csv(write(tmp_path, text))


def test_non_numeric_value_names_column_row_and_time(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,3\n2024-01-04,1,2,0.5,n/a?,3\n"
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, text))
    msg = str(info.value)
    assert "'close'" in msg and "n/a?" in msg and "row 3" in msg and "2024-01-04" in msg


def test_missing_single_value_names_column_and_time(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,,1.5,3\n"
    with pytest.raises(DataError, match=r"'low'.*2024-01-03"):
        load_csv(write(tmp_path, text))


def test_duplicate_timestamps_named(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError, match=r"duplicate timestamp 2024-01-03"):
        load_csv(write(tmp_path, text))


def test_unsorted_timestamps_named(tmp_path):
    text = (
        HEADER
        + "2024-01-02,1,2,0.5,1.5,3\n2024-01-05,1,2,0.5,1.5,3\n2024-01-04,1,2,0.5,1.5,3\n2024-01-08,1,2,0.5,1.5,3\n"
    )
    with pytest.raises(DataError, match=r"out of order.*2024-01-04.*2024-01-05"):
        load_csv(write(tmp_path, text))


@pytest.mark.parametrize(
    "bad_row", ["2024-01-03,0,2,0.5,1.5,3", "2024-01-03,1,2,0.5,-1.5,3", "2024-01-03,1,2,0,1.5,3"]
)
def test_non_positive_price_named(tmp_path, bad_row):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n" + bad_row + "\n"
    with pytest.raises(DataError, match=r"non-positive price at 2024-01-03"):
        load_csv(write(tmp_path, text))


def test_high_below_low_named(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,0.5,2,1.5,3\n"
    with pytest.raises(DataError, match=r"high < low at 2024-01-03"):
        load_csv(write(tmp_path, text))


def test_negative_volume(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,1,2,0.5,1.5,-3\n"
    with pytest.raises(DataError, match="negative volume at 2024-01-03"):
        load_csv(write(tmp_path, text))


def test_too_few_rows(tmp_path):
    text = HEADER + "".join(f"2024-01-{d:02d},1,2,0.5,1.5,3\n" for d in range(2, 12))
    path = write(tmp_path, text)
    assert len(load_csv(path, min_rows=10)) == 10
    with pytest.raises(DataError, match="only 10 rows, fewer than the 11"):
        load_csv(path, min_rows=11)


def test_unparseable_time_names_row_and_value(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\nyesterday-ish,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError, match=r"could not parse timestamps \(data row 2: 'yesterday-ish'\)"):
        load_csv(write(tmp_path, text))


def test_empty_timestamp(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError, match="empty timestamp in data row 2"):
        load_csv(write(tmp_path, text))


def test_not_a_csv(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(DataError):
        load_csv(path)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_validate_ohlcv_rejects_non_datetime_index():
    df = pd.DataFrame({c: [1.0, 1.0] for c in OHLCV_COLUMNS})
    with pytest.raises(DataError, match="DatetimeIndex"):
        validate_ohlcv(df)
    with pytest.raises(DataError, match="no data rows"):
        validate_ohlcv(df.iloc[:0])


# ------------------------------------------------------------- yfinance >= 0.2.48 three-line header

YF_SPY = """Price,Adj Close,Close,High,Low,Open,Volume
Ticker,SPY,SPY,SPY,SPY,SPY,SPY
Date,,,,,,
2024-01-02,470.1,472.6,473.6,470.4,472.1,123456
2024-01-03,466.0,468.4,471.2,468.1,470.4,103585
2024-01-04,464.8,467.3,470.9,467.0,468.3,84232
"""


def _yf_frame(tickers: list[str], fields=("Close", "High", "Low", "Open", "Volume")) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=4), name="Date")
    cols = pd.MultiIndex.from_product([list(fields), tickers], names=["Price", "Ticker"])
    base = {"Close": 101.0, "High": 102.0, "Low": 99.0, "Open": 100.0, "Volume": 1000.0}
    data = {
        (f, t): base[f] * (k + 1) + np.arange(4) * (0 if f == "Volume" else 0.1)
        for f in fields for k, t in enumerate(tickers)
    }  # fmt: skip
    out = pd.DataFrame(data, index=idx)[cols]
    out.columns.names = ["Price", "Ticker"]
    return out


def test_yfinance_three_line_header_with_adj_close(tmp_path):
    df = load_csv(write(tmp_path, YF_SPY))
    assert_course_shape(df)
    assert df.index[0] == pd.Timestamp("2024-01-02") and len(df) == 3
    assert df.iloc[0].tolist() == [472.1, 473.6, 470.4, 472.6, 123456.0]
    assert df.attrs["symbol"] == "SPY" and df.attrs["load_report"] == []


@pytest.mark.parametrize("layout", ["price_first", "ticker_first", "no_index_name"])
def test_yfinance_to_csv_without_adj_close(tmp_path, layout):
    src = _yf_frame(["QQQ"])
    if layout == "ticker_first":  # yf.download(..., group_by="ticker")
        src = src.swaplevel(0, 1, axis=1)
    if layout == "no_index_name":
        src.index.name = None
    path = tmp_path / "qqq.csv"
    src.to_csv(path)
    assert path.read_text().splitlines()[1].startswith("Ticker,QQQ" if layout != "ticker_first" else "Price,")
    df = load_csv(path)
    assert_course_shape(df)
    assert df.index.equals(pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=4), name="time"))
    np.testing.assert_allclose(df["close"].to_numpy(), 101.0 + 0.1 * np.arange(4))
    assert df.attrs["symbol"] == "QQQ"


def test_yfinance_several_tickers_needs_symbol(tmp_path):
    path = tmp_path / "two.csv"
    _yf_frame(["AAPL", "MSFT"]).to_csv(path)
    with pytest.raises(DataError) as info:
        load_csv(path)
    msg = str(info.value)
    assert "['AAPL', 'MSFT']" in msg and "symbol='AAPL'" in msg and "one ticker per file" in msg
    msft = load_csv(path, symbol="msft")
    np.testing.assert_allclose(msft["close"].to_numpy(), 202.0 + 0.1 * np.arange(4))
    np.testing.assert_allclose(msft["volume"].to_numpy(), 2000.0)
    assert msft.attrs["symbol"] == "MSFT"
    with pytest.raises(DataError, match=r"symbol 'TSLA' is not in this file; its tickers are \['AAPL', 'MSFT'\]"):
        load_csv(path, symbol="TSLA")


# ------------------------------------------------------------------ saved RangeIndex, column names


def test_saved_range_index_uses_the_real_date_column(tmp_path):
    src = pd.DataFrame(
        {"Date": pd.bdate_range("2024-01-02", periods=5), "Open": 1.0, "High": 2.0, "Low": 0.5,
         "Close": 1.5 + 0.1 * np.arange(5), "Volume": 7.0},
    )  # fmt: skip
    path = tmp_path / "reset.csv"
    src.to_csv(path)  # RangeIndex 0..4 written as an unnamed first column
    assert path.read_text().startswith(",Date,Open")
    df = load_csv(path)
    assert_course_shape(df)
    assert df.index.equals(pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=5), name="time"))
    np.testing.assert_allclose(df["close"].to_numpy(), src["Close"].to_numpy())


def test_saved_range_index_with_time_column_and_epoch_ms(tmp_path):
    text = ",time,open,high,low,close,volume\n0,1700000000000,1,2,0.5,1.5,3\n1,1700000060000,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, text))
    assert list(df.index) == [pd.Timestamp(1_700_000_000_000, unit="ms"), pd.Timestamp(1_700_000_060_000, unit="ms")]


@pytest.mark.parametrize("header", ["Date,Open,High,Low,Close,close,Volume", "Date,Open,High,Low,Close,Close,Volume"])
def test_duplicate_columns_after_normalisation(tmp_path, header):
    text = header + "\n2024-01-02,1,2,0.5,1.5,1.5,3\n2024-01-03,1,2,0.5,1.5,1.5,3\n"
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, text))
    msg = str(info.value)
    assert "all mean 'close'" in msg and "'Close'" in msg and "rename all but one" in msg


def test_bybit_start_column_is_the_time(tmp_path):
    text = "start,open,high,low,close,volume,turnover\n1700000000000,1,2,0.5,1.5,3,4\n1700000060000,1,2,0.5,1.5,3,4\n"
    df = load_csv(write(tmp_path, text))
    assert df.index[0] == pd.Timestamp(1_700_000_000_000, unit="ms")


# ------------------------------------------------------------------------------ day-first dates


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (["12/01/2024 09:30", "13/01/2024 09:30"], ["2024-01-12 09:30", "2024-01-13 09:30"]),
        (["02.01.2024", "15.01.2024"], ["2024-01-02", "2024-01-15"]),
        (["02-01-2024", "15-01-2024"], ["2024-01-02", "2024-01-15"]),
        (["02/01/2024 09:30:05.25", "15/01/2024 16:00:00.5"], ["2024-01-02 09:30:05.25", "2024-01-15 16:00:00.5"]),
        (["01/12/2024 09:30", "01/13/2024 09:30"], ["2024-01-12 09:30", "2024-01-13 09:30"]),  # US with times
    ],
)
def test_day_first_with_times_and_separators(tmp_path, stamps, expected):
    text = HEADER + "".join(f"{s},1,2,0.5,1.5,3\n" for s in stamps)
    df = load_csv(write(tmp_path, text))
    assert list(df.index) == [pd.Timestamp(e) for e in expected]


def test_dayfirst_argument_forces_the_order(tmp_path):
    text = HEADER + "01/02/2024,1,2,0.5,1.5,3\n03/02/2024,1,2,0.5,1.5,3\n"
    path = write(tmp_path, text)
    assert list(load_csv(path).index) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-03-02")]  # US default
    assert list(load_csv(path, dayfirst=True).index) == [pd.Timestamp("2024-02-01"), pd.Timestamp("2024-02-03")]
    us = write(tmp_path, HEADER + "01/13/2024,1,2,0.5,1.5,3\n", name="us.csv")
    with pytest.raises(DataError, match=r"data row 1: '01/13/2024'.*day/month/year"):
        load_csv(us, dayfirst=True, min_rows=1)


def test_ambiguous_dot_dates_default_to_day_first(tmp_path):
    df = load_csv(write(tmp_path, HEADER + "02.01.2024,1,2,0.5,1.5,3\n03.01.2024,1,2,0.5,1.5,3\n"))
    assert list(df.index) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]


def test_ambiguous_dates_out_of_order_suggest_dayfirst(tmp_path):
    # day-first Jan 10, 11, 12, Feb 1: read month-first they become Oct 1, Nov 1, Dec 1, Jan 2 (out of order)
    days = ["10/01/2024", "11/01/2024", "12/01/2024", "01/02/2024"]
    path = write(tmp_path, HEADER + "".join(f"{d},1,2,0.5,1.5,3\n" for d in days))
    with pytest.raises(DataError) as info:
        load_csv(path)
    msg = str(info.value)
    assert "out of order" in msg and "ambiguous" in msg and "day-first" in msg and "dayfirst=True" in msg
    assert load_csv(path, dayfirst=True).index[-1] == pd.Timestamp("2024-02-01")


def test_ambiguous_dates_reversed_newest_first_say_so(tmp_path):
    days = ["03/01/2024", "02/01/2024", "01/01/2024"]
    with pytest.warns(DataWarning, match=r"newest-first.*ambiguous.*dayfirst=True"):
        load_csv(write(tmp_path, HEADER + "".join(f"{d},1,2,0.5,1.5,3\n" for d in days)))


def test_ambiguous_dates_warn_naming_the_reading_and_the_override(tmp_path):
    # hourly bars 04/03/2024..08/03/2024 (every day <= 12): read month-first, the calendar is wrong unnoticed
    rows = [f"0{d}/03/2024 {h:02d}:00,1,2,0.5,1.5,3\n" for d in range(4, 9) for h in range(9, 12)]
    path = write(tmp_path, HEADER + "".join(rows))
    with pytest.warns(DataWarning, match=r"ambiguous.*month/day/year \('04/03/2024 09:00' = 2024-04-03\).*dayfirst=True"):
        df = load_csv(path)
    assert "dayfirst=True" in df.attrs["load_report"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice is not warned about
        assert load_csv(path, dayfirst=True).index[0] == pd.Timestamp("2024-03-04 09:00")
        # dates whose two fields agree read the same either way: nothing to warn about
        assert load_csv(write(tmp_path, HEADER + "01/01/2024,1,2,0.5,1.5,3\n02/02/2024,1,2,0.5,1.5,3\n", "same.csv")).attrs[
            "load_report"
        ] == []


def test_dates_fitting_neither_order(tmp_path):
    text = HEADER + "13/01/2024,1,2,0.5,1.5,3\n01/14/2024,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError, match=r"neither day-first nor month-first.*'13/01/2024'.*'01/14/2024'"):
        load_csv(write(tmp_path, text))


def test_mixed_date_separators(tmp_path):
    text = HEADER + "13/01/2024,1,2,0.5,1.5,3\n14.01.2024,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError, match=r"data row 2 \('14.01.2024'\).*same way"):
        load_csv(write(tmp_path, text))


# --------------------------------------------------------------------- adj_close, epoch, checks


def test_unadjusted_yahoo_prices_with_a_split_warn(tmp_path):
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,100,101,99,100,50,10\n2024-01-03,100,101,99,100,50,10\n"
        "2024-01-04,50,51,49,50,50,20\n2024-01-05,50,51,49,50,50,20\n"
    )
    path = write(tmp_path, text)
    with pytest.warns(DataWarning, match=r"adj_close/close moves from 0.5 to 1.*pass adjust=True"):
        df = load_csv(path)
    assert any("adjust=True" in line for line in df.attrs["load_report"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adj = load_csv(path, adjust=True)
    assert not any("adjust=True" in str(w.message) for w in caught)
    np.testing.assert_allclose(adj["close"].to_numpy(), 50.0)


def test_constant_adj_ratio_does_not_warn(tmp_path):
    text = "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,0.5,1.5,1.5,3\n2024-01-03,1,2,0.5,1.6,1.6,3\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_csv(write(tmp_path, text)).attrs["load_report"] == []


def test_fractional_epoch_seconds_are_kept(tmp_path):
    text = "timestamp,open,high,low,close,volume\n1700000000.25,1,2,0.5,1.5,3\n1700000000.75,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, text))
    assert df.index[0] == pd.Timestamp(1_700_000_000, unit="s") + pd.Timedelta(milliseconds=250)
    assert df.index[1] - df.index[0] == pd.Timedelta(milliseconds=500)


def test_directory_path(tmp_path):
    write(tmp_path, HEADER, name="inside.csv")
    with pytest.raises(DataError, match=r"is a directory, not a CSV file.*inside\.csv"):
        load_csv(tmp_path)


@pytest.mark.parametrize(
    ("bad_row", "which"), [("2024-01-03,2.5,2,0.5,1.5,3", "open"), ("2024-01-03,1,2,0.5,0.4,3", "close")]
)
def test_open_or_close_outside_low_high(tmp_path, bad_row, which):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n" + bad_row + "\n2024-01-04,1,2,0.5,1.5,3\n"
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, text))
    msg = str(info.value)
    assert f"{which} outside the low..high range at 2024-01-03" in msg and "data row 2" in msg
    assert "mislabelled" in msg


def test_open_or_close_range_check_tolerates_rounding_and_names_file_row(tmp_path):
    ok = HEADER + "2024-01-02,2.0000000001,2,0.5,0.4999999999,3\n2024-01-03,1,2,0.5,1.5,3\n"
    assert len(load_csv(write(tmp_path, ok))) == 2
    # newest-first with a dropped empty row: the message still names the row as numbered in the file
    bad = HEADER + "2024-01-04,1,2,0.5,1.5,3\n2024-01-03,,,,,\n2024-01-02,1,2,0.5,3,3\n"
    with pytest.raises(DataError, match=r"close outside .* 2024-01-02 .*data row 3"):
        load_csv(write(tmp_path, bad, name="bad.csv"))


# ------------------------------------------------------------------------------- separate Date and Time


@pytest.mark.parametrize(
    "header, rows",
    [
        ("Date,Time,Open,High,Low,Close,Volume", ["2024-01-02,09:30,10,11,9,10.5,100", "2024-01-02,09:35,10.5,11,10,10.8,50",
                                                   "2024-01-03,09:30,10.8,11.2,10.1,11,70"]),
        ("<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>", ["01/02/2024,09:30:00,10,11,9,10.5,100",
                                                            "01/02/2024,09:35:00,10.5,11,10,10.8,50",
                                                            "01/03/2024,09:30:00,10.8,11.2,10.1,11,70"]),
    ],
)  # fmt: skip
def test_separate_date_and_time_columns_are_combined(tmp_path, header, rows):
    df = load_csv(write(tmp_path, header + "\n" + "\n".join(rows) + "\n"))
    assert_course_shape(df)
    expected = pd.DatetimeIndex(["2024-01-02 09:30", "2024-01-02 09:35", "2024-01-03 09:30"], name="time")
    assert df.index.equals(expected)


def test_times_of_day_without_a_date_are_an_error(tmp_path):
    text = "Time,Open,High,Low,Close,Volume\n09:30,10,11,9,10.5,100\n09:35,10.5,11,10,10.8,50\n"
    with pytest.raises(DataError, match="only times of day"):
        load_csv(write(tmp_path, text))


def test_date_with_full_timestamps_in_time_column_still_uses_time(tmp_path):
    text = HEADER.replace("time,", "date,time,") + "2024-01-01,2024-01-02 09:30,10,11,9,10.5,100\n2024-01-01,2024-01-02 09:35,10.5,11,10,10.8,50\n"
    df = load_csv(write(tmp_path, text))
    assert df.index[0] == pd.Timestamp("2024-01-02 09:30")


def test_non_positive_price_message_shows_plain_numbers(tmp_path):
    text = HEADER + "2024-01-02,1,2,0.5,1.5,3\n2024-01-03,0,2,0.5,1.5,3\n"
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, text))
    assert "open=0.0, high=2.0, low=0.5, close=1.5" in str(info.value) and "np." not in str(info.value)


# ------------------------------------------------------------------------------------- other delimiters


@pytest.mark.parametrize(
    "text",
    [
        "Date;Open;High;Low;Close;Volume\n2024-01-02;1,5;2,25;1;2;300\n2024-01-03;2;2,5;1,75;2,25;400\n",
        "Date;Open;High;Low;Close;Volume\n2024-01-02;1.5;2.25;1;2;300\n2024-01-03;2;2.5;1.75;2.25;400\n",
        "Date\tOpen\tHigh\tLow\tClose\tVolume\n2024-01-02\t1.5\t2.25\t1\t2\t300\n2024-01-03\t2\t2.5\t1.75\t2.25\t400\n",
    ],
    ids=["semicolon-decimal-comma", "semicolon", "tab"],
)
def test_semicolon_and_tab_separated_files(tmp_path, text):
    df = load_csv(write(tmp_path, text))
    assert_course_shape(df)
    np.testing.assert_allclose(df["open"].to_numpy(), [1.5, 2.0])
    np.testing.assert_allclose(df["high"].to_numpy(), [2.25, 2.5])
    assert df.index[1] == pd.Timestamp("2024-01-03")


# ------------------------------------------------------------------------------ headerless Bybit dumps


@pytest.mark.parametrize("n_fields", [7, 6])
def test_headerless_bybit_kline_dump(tmp_path, n_fields):
    """Bybit's result.list saved as it came: newest-first rows of strings, no header line."""
    t0 = 1_700_000_000_000
    rows = [[t0 + i * 3_600_000, 100 + i, 101 + i, 99 + i, 100.5 + i, 5 + i, 500 + i][:n_fields] for i in range(5)]
    text = "\n".join(",".join(map(str, r)) for r in rows[::-1]) + "\n"
    with pytest.warns(DataWarning, match="no header line"):
        df = load_csv(write(tmp_path, text))
    assert_course_shape(df)
    assert len(df) == 5  # the first row is data, not a header
    assert df.index[0] == pd.Timestamp(t0, unit="ms")
    assert df["close"].tolist() == [100.5, 101.5, 102.5, 103.5, 104.5]
    assert df["volume"].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert any("Bybit's kline order" in line for line in df.attrs["load_report"])


def test_a_numeric_header_of_another_width_is_not_taken_for_a_kline_dump(tmp_path):
    text = "1,2,3,4,5\n1,2,3,4,5\n"
    with pytest.raises(DataError, match="no time column|missing column"):
        load_csv(write(tmp_path, text))


def test_tz_aware_daily_bars_keep_their_calendar_date(tmp_path):
    """yfinance writes daily bars as local midnight with an offset; UTC would move Tokyo's to the day before."""
    tokyo = HEADER + "2024-01-04 00:00:00+09:00,1,2,0.5,1.5,3\n2024-01-05 00:00:00+09:00,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, tokyo))
    assert list(df.index) == [pd.Timestamp("2024-01-04"), pd.Timestamp("2024-01-05")]
    new_york = HEADER + "2024-01-04 00:00:00-05:00,1,2,0.5,1.5,3\n2024-01-05T00:00:00-0500,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, new_york, "ny.csv"))
    assert list(df.index) == [pd.Timestamp("2024-01-04"), pd.Timestamp("2024-01-05")]
    # intraday (not all at local midnight) stays UTC, and US dates with dashes are not read as offsets
    intraday = HEADER + "2024-01-04 00:00:00+09:00,1,2,0.5,1.5,3\n2024-01-04 09:00:00+09:00,1,2,0.5,1.5,3\n"
    df = load_csv(write(tmp_path, intraday, "intraday.csv"))
    assert list(df.index) == [pd.Timestamp("2024-01-03 15:00"), pd.Timestamp("2024-01-04 00:00")]
    us = HEADER + "01-04-2024,1,2,0.5,1.5,3\n01-05-2024,1,2,0.5,1.5,3\n"
    assert list(load_csv(write(tmp_path, us, "us.csv")).index) == [pd.Timestamp("2024-01-04"), pd.Timestamp("2024-01-05")]


def test_tz_aware_daily_bars_with_a_partial_last_row_keep_their_dates(tmp_path):
    """A Tokyo daily file saved during the session: its last row is stamped 10:30, not midnight."""
    days = ["2024-01-04", "2024-01-05", "2024-01-09"]
    text = HEADER + "".join(f"{d} 00:00:00+09:00,1,2,0.5,1.5,3\n" for d in days) + "2024-01-10 10:30:00+09:00,1,2,0.5,1.5,3\n"
    with pytest.warns(DataWarning, match=r"last row \('2024-01-10 10:30:00\+09:00'\).*daily bar of 2024-01-10.*partial"):
        df = load_csv(write(tmp_path, text))
    assert list(df.index) == [pd.Timestamp(d) for d in [*days, "2024-01-10"]]  # was every date the day before


def test_bundled_data_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """A notebook's kernel may start anywhere (nbval's copies in build/, Colab's /content): the bundled data
    is found next to the package, not through the working directory."""
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    from course_lib.data import SAMPLES, data_dir

    assert (data_dir() / SAMPLES["sp500"]).exists()
    assert len(load_sample("sp500")) > 1000
