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
