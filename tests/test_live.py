"""Offline tests of the live loaders: fake clients answer in Bybit's and yfinance's real reply formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests

from course_lib import DataError, DataWarning, load_csv
from course_lib.data.live import BYBIT_MAX_LIMIT, cache_path, load_bybit, load_yfinance

HOUR_MS = 3_600_000
T0 = pd.Timestamp("2023-01-01").value // 1_000_000  # epoch ms


class FakeBybit:
    """Serves klines like Bybit v5 ``/v5/market/kline``: candles with start <= t <= end, the newest ``limit``
    of them, newest-first, every number as a string."""

    def __init__(
        self, n: int = 2500, step_ms: int = HOUR_MS, t0: int = T0, symbol: str = "BTCUSDT", seed: int = 0
    ):
        rng = np.random.default_rng(seed)
        self.times = t0 + step_ms * np.arange(n, dtype=np.int64)
        close = 20000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        open_ = np.r_[close[0], close[:-1]]
        self.ohlcv = np.c_[
            open_,
            np.maximum(open_, close) * 1.002,
            np.minimum(open_, close) * 0.998,
            close,
            rng.uniform(1, 100, n),
        ]
        self.symbol = symbol
        self.calls: list[dict] = []

    def get_kline(self, **kw):
        self.calls.append(kw)
        limit = int(kw.get("limit", 200))
        assert 1 <= limit <= 1000, "Bybit rejects limit outside [1, 1000]"
        mask = np.ones(len(self.times), dtype=bool)
        if kw.get("start") is not None:
            mask &= self.times >= int(kw["start"])
        if kw.get("end") is not None:
            mask &= self.times <= int(kw["end"])
        idx = np.flatnonzero(mask)[::-1][:limit]  # newest first, the newest `limit` of them
        rows = [
            [str(self.times[i]), *(f"{v:.4f}" for v in self.ohlcv[i]), f"{self.ohlcv[i, 4] * 20000:.2f}"]
            for i in idx
        ]
        return {
            "retCode": 0,
            "retMsg": "OK",
            "result": {"category": kw["category"], "symbol": kw["symbol"], "list": rows},
            "retExtInfo": {},
            "time": 1700000000000,
        }


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms").isoformat()


def _no_sleep(delays):
    return lambda seconds: delays.append(seconds)


def test_bybit_paginates_past_1000_without_gaps_or_duplicates(tmp_path):
    fake = FakeBybit(n=2500)
    start, end = int(fake.times[3]), int(fake.times[2345])
    out = load_bybit("BTCUSDT", "60", start=start, end=end, client=fake, cache_dir=tmp_path)
    df = out["BTCUSDT"]
    expected = pd.to_datetime(fake.times[3:2346], unit="ms")
    assert df.index.equals(pd.DatetimeIndex(expected, name="time"))  # oldest-first, no gap, no duplicate
    assert len(fake.calls) >= 3  # 2343 candles cannot come in fewer than three pages of 1000
    assert all(c["limit"] <= BYBIT_MAX_LIMIT for c in fake.calls)
    np.testing.assert_allclose(df["close"].to_numpy(), np.round(fake.ohlcv[3:2346, 3], 4))
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(df[c].dtype == np.float64 for c in df.columns)


def test_bybit_daily_interval_and_latest_page(tmp_path):
    fake = FakeBybit(n=1500, step_ms=86_400_000, t0=pd.Timestamp("2015-01-01").value // 1_000_000)
    df = load_bybit(["BTCUSDT"], "D", end=int(fake.times[-1]), client=fake, cache_dir=tmp_path)["BTCUSDT"]
    # start=None -> the latest 1000 candles up to end
    assert len(df) == 1000
    assert df.index[-1] == pd.Timestamp(int(fake.times[-1]), unit="ms")
    assert df.index.is_monotonic_increasing


def test_bybit_ret_code_error_carries_bybit_message(tmp_path):
    class Bad:
        def get_kline(self, **kw):
            return {"retCode": 10001, "retMsg": "Illegal category", "result": {}, "time": 1}

    with pytest.raises(DataError, match="Illegal category"):
        load_bybit("BTCUSDT", "60", start="2023-01-01", end="2023-01-02", client=Bad(), cache_dir=tmp_path)


def test_bybit_pybit_invalid_request_error_is_a_data_error(tmp_path):
    from pybit.exceptions import InvalidRequestError

    class Bad:
        def get_kline(self, **kw):
            raise InvalidRequestError(request="GET /v5/market/kline", message="Invalid symbol", status_code=10001, time="x",
                                      resp_headers={})  # fmt: skip

    with pytest.raises(DataError, match="Invalid symbol"):
        load_bybit("NOPEUSDT", "60", start="2023-01-01", end="2023-01-02", client=Bad(), cache_dir=tmp_path)


@pytest.mark.parametrize("failure", ["retcode", "http429", "timeout"])
def test_bybit_retries_with_backoff_then_succeeds(tmp_path, failure):
    from pybit.exceptions import FailedRequestError

    fake = FakeBybit(n=50)
    failures = {"left": 2}

    class Flaky:
        def get_kline(self, **kw):
            if failures["left"]:
                failures["left"] -= 1
                if failure == "retcode":
                    return {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "time": 1}
                if failure == "http429":
                    raise FailedRequestError(request="GET", message="HTTP status code is not 200.", status_code=429,
                                             time="x", resp_headers={})  # fmt: skip
                raise requests.exceptions.ReadTimeout("read timed out")
            return fake.get_kline(**kw)

    delays: list[float] = []
    df = load_bybit("BTCUSDT", "60", start=int(fake.times[0]), end=int(fake.times[-1]), client=Flaky(),
                    cache_dir=tmp_path, sleep=_no_sleep(delays))["BTCUSDT"]  # fmt: skip
    assert len(df) == 50
    assert len(delays) == 2 and delays[1] > delays[0] > 0  # exponential back-off


def test_bybit_gives_up_after_max_retries_on_rate_limit(tmp_path):
    calls = []

    class Limited:
        def get_kline(self, **kw):
            calls.append(kw)
            return {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "time": 1}

    with pytest.raises(DataError, match="rate limit") as info:
        load_bybit("BTCUSDT", "60", start="2023-01-01", end="2023-01-02", client=Limited(), cache_dir=tmp_path,
                   max_retries=3, sleep=lambda s: None)  # fmt: skip
    assert "Too many visits" in str(info.value)
    assert len(calls) == 4  # first try + 3 retries


class Offline:
    def get_kline(self, **kw):
        raise requests.exceptions.ConnectionError("Failed to resolve 'api.bybit.com'")


def test_bybit_offline_without_cache_says_so(tmp_path):
    with pytest.raises(DataError, match="no network") as info:
        load_bybit("BTCUSDT", "60", start="2023-01-01", end="2023-01-02", client=Offline(), cache_dir=tmp_path,
                   max_retries=2, sleep=lambda s: None)  # fmt: skip
    assert "no cached copy" in str(info.value)


def test_bybit_cache_round_trip_and_offline_fallback(tmp_path):
    fake = FakeBybit(n=1200)
    start, end = _iso(int(fake.times[0])), _iso(int(fake.times[-1]))
    online = load_bybit("BTCUSDT", "60", start=start, end=end, client=fake, cache_dir=tmp_path)["BTCUSDT"]
    path = cache_path("bybit-linear", "BTCUSDT", "60", start, end, tmp_path)
    assert path.exists()
    assert not list(tmp_path.glob(".*"))  # atomic write left no temp file
    from_file = load_csv(path)
    pd.testing.assert_frame_equal(from_file, online, check_freq=False)

    # the same request is now served from the cache without touching the network
    n_calls = len(fake.calls)
    again = load_bybit("BTCUSDT", "60", start=start, end=end, client=fake, cache_dir=tmp_path)["BTCUSDT"]
    assert len(fake.calls) == n_calls
    pd.testing.assert_frame_equal(again, online, check_freq=False)

    # refresh=True while offline: warn and fall back to the cache
    with pytest.warns(DataWarning, match="no network"):
        fallback = load_bybit("BTCUSDT", "60", start=start, end=end, client=Offline(), cache_dir=tmp_path,
                              refresh=True, max_retries=1, sleep=lambda s: None)["BTCUSDT"]  # fmt: skip
    pd.testing.assert_frame_equal(fallback, online, check_freq=False)

    # an overlapping request offline: the newest cache file, cut to the requested range
    sub_start, sub_end = _iso(int(fake.times[100])), _iso(int(fake.times[200]))
    with pytest.warns(DataWarning, match="cached copy"):
        part = load_bybit("BTCUSDT", "60", start=sub_start, end=sub_end, client=Offline(), cache_dir=tmp_path,
                          max_retries=0, sleep=lambda s: None)["BTCUSDT"]  # fmt: skip
    assert len(part) == 101 and part.index[0] == online.index[100]


@pytest.mark.parametrize("interval", ["7", "1h2", "H", ""])
def test_bybit_rejects_unknown_interval(interval, tmp_path):
    with pytest.raises(DataError, match="interval"):
        load_bybit("BTCUSDT", interval, client=FakeBybit(n=10), cache_dir=tmp_path)


def test_bybit_rejects_start_after_end(tmp_path):
    with pytest.raises(DataError, match="after end"):
        load_bybit(
            "BTCUSDT", "60", start="2023-02-01", end="2023-01-01", client=FakeBybit(n=10), cache_dir=tmp_path
        )


def test_bybit_drops_still_forming_candle(tmp_path):
    now_ms = pd.Timestamp.now("UTC").value // 1_000_000
    t0 = (now_ms // HOUR_MS - 9) * HOUR_MS  # ten hourly candles, the last one opened within the hour
    fake = FakeBybit(n=10, t0=t0)
    with pytest.warns(DataWarning, match="still forming"):
        df = load_bybit("BTCUSDT", "60", start=t0, client=fake, cache_dir=tmp_path)["BTCUSDT"]
    assert len(df) == 9


def test_bybit_reports_gaps_without_filling_them(tmp_path):
    fake = FakeBybit(n=40)
    keep = np.r_[0:10, 15:40]  # five hours missing (exchange downtime)
    fake.times, fake.ohlcv = fake.times[keep], fake.ohlcv[keep]
    with pytest.warns(DataWarning, match="1 gap"):
        df = load_bybit("BTCUSDT", "60", start=int(fake.times[0]), end=int(fake.times[-1]), client=fake,
                        cache_dir=tmp_path)["BTCUSDT"]  # fmt: skip
    assert len(df) == 35


def test_bybit_multiple_symbols(tmp_path):
    fake = FakeBybit(n=30)
    out = load_bybit("BTCUSDT,ETHUSDT", "60", start=int(fake.times[0]), end=int(fake.times[-1]), client=fake,
                     cache_dir=tmp_path)  # fmt: skip
    assert list(out) == ["BTCUSDT", "ETHUSDT"]
    assert {c["symbol"] for c in fake.calls} == {"BTCUSDT", "ETHUSDT"}


# ---------------------------------------------------------------------------------------------- yfinance


def _yf_reply(symbol: str, index: pd.DatetimeIndex, multi: bool = True, seed: int = 0) -> pd.DataFrame:
    """The frame ``yfinance.download(..., auto_adjust=True, multi_level_index=True)`` returns."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(index))))
    data = {"Close": close, "High": close * 1.01, "Low": close * 0.99, "Open": close * 1.001,
            "Volume": rng.integers(1_000, 5_000, len(index))}  # fmt: skip
    df = pd.DataFrame(data, index=index)
    if multi:
        df.columns = pd.MultiIndex.from_product([list(data), [symbol]], names=["Price", "Ticker"])
    return df


def test_yfinance_multiindex_daily(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=20), name="Date")
    seen = {}

    def download(symbol, **kw):
        seen.update(kw, symbol=symbol)
        return _yf_reply(symbol, idx)

    df = load_yfinance("SPY", "2024-01-01", "2024-02-01", download=download, cache_dir=tmp_path)["SPY"]
    assert seen["symbol"] == "SPY" and seen["interval"] == "1d" and seen["auto_adjust"] is True
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert df.index.name == "time" and df.index.tz is None
    assert df.index.equals(pd.DatetimeIndex(idx, name="time"))
    ref = _yf_reply("SPY", idx)
    np.testing.assert_allclose(df["close"].to_numpy(), ref[("Close", "SPY")].to_numpy())
    # cached: a second call does not download
    again = load_yfinance("SPY", "2024-01-01", "2024-02-01", download=None, cache_dir=tmp_path)["SPY"]
    pd.testing.assert_frame_equal(again, df, check_freq=False)


def test_yfinance_ticker_first_multiindex_and_flat_columns(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=5), name="Date")
    grouped = _yf_reply("QQQ", idx).swaplevel(0, 1, axis=1)  # group_by="ticker" layout
    flat = _yf_reply("QQQ", idx, multi=False)
    for reply in (grouped, flat):
        df = load_yfinance("QQQ", "2024-01-01", "2024-01-10", download=lambda s, reply=reply, **kw: reply, cache_dir=tmp_path,
                           refresh=True)["QQQ"]  # fmt: skip
        assert list(df.columns) == ["open", "high", "low", "close", "volume"] and len(df) == 5


def test_yfinance_intraday_tz_aware_index_becomes_naive_utc(tmp_path):
    idx = pd.date_range("2024-03-01 09:30", periods=7, freq="h", tz="America/New_York", name="Datetime")
    df = load_yfinance("AAPL", "2024-03-01", "2024-03-02", interval="1h",
                       download=lambda s, **kw: _yf_reply(s, idx), cache_dir=tmp_path)["AAPL"]  # fmt: skip
    assert df.index.tz is None
    assert df.index[0] == pd.Timestamp("2024-03-01 14:30")  # 09:30 EST = 14:30 UTC
    # and the cache file written for it reads back identically
    cached = load_csv(cache_path("yfinance", "AAPL", "1h", "2024-03-01", "2024-03-02", tmp_path))
    pd.testing.assert_frame_equal(cached, df, check_freq=False)


def test_yfinance_daily_tz_aware_index_keeps_calendar_date(tmp_path):
    idx = pd.date_range("2024-03-01", periods=3, freq="D", tz="America/New_York", name="Date")
    df = load_yfinance("SPY", "2024-03-01", "2024-03-05", download=lambda s, **kw: _yf_reply(s, idx),
                       cache_dir=tmp_path)["SPY"]  # fmt: skip
    assert list(df.index) == list(pd.date_range("2024-03-01", periods=3, freq="D"))


def test_yfinance_empty_result_names_symbol_range_interval(tmp_path):
    empty = pd.DataFrame(columns=pd.MultiIndex.from_product([["Close", "High"], ["ZZZZ"]]))
    with pytest.raises(DataError) as info:
        load_yfinance("ZZZZ", "2024-01-01", "2024-02-01", interval="1d", download=lambda s, **kw: empty,
                      cache_dir=tmp_path)  # fmt: skip
    msg = str(info.value)
    assert "ZZZZ" in msg and "2024-01-01" in msg and "2024-02-01" in msg and "1d" in msg


def test_yfinance_offline_falls_back_to_cache(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=10), name="Date")
    first = load_yfinance("SPY", "2024-01-01", "2024-01-20", download=lambda s, **kw: _yf_reply(s, idx),
                          cache_dir=tmp_path)["SPY"]  # fmt: skip

    def offline(symbol, **kw):
        raise requests.exceptions.ConnectionError("no route to host")

    with pytest.warns(DataWarning, match="cached copy"):
        df = load_yfinance(
            "SPY", "2024-01-01", "2024-01-20", download=offline, cache_dir=tmp_path, refresh=True
        )["SPY"]
    pd.testing.assert_frame_equal(df, first, check_freq=False)


def test_yfinance_rejects_unknown_interval(tmp_path):
    with pytest.raises(DataError, match="interval"):
        load_yfinance(
            "SPY",
            "2024-01-01",
            "2024-02-01",
            interval="7d",
            download=lambda s, **kw: None,
            cache_dir=tmp_path,
        )


def test_yfinance_interval_alias(tmp_path):
    idx = pd.DatetimeIndex(pd.date_range("2024-01-01", periods=4, freq="W-MON"), name="Date")
    seen = {}
    load_yfinance("SPY", "2024-01-01", "2024-02-01", interval="W",
                  download=lambda s, **kw: seen.update(kw) or _yf_reply(s, idx), cache_dir=tmp_path)  # fmt: skip
    assert seen["interval"] == "1wk"


def test_default_cache_dir_is_data_cache(monkeypatch, tmp_path):
    import shutil

    from course_lib.data import data_dir

    (tmp_path / "data").mkdir()
    shutil.copy(data_dir() / "sp500.csv.gz", tmp_path / "data" / "sp500.csv.gz")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    path = cache_path("bybit-linear", "BTC/USDT", "60", "2023-01-01", None)
    assert path.parent == tmp_path / "data" / "cache" and path.parent.is_dir()
    assert path.name == "bybit-linear_BTC-USDT_60_20230101_now.csv"


# ------------------------------------------------------------------- open/close outside [low, high]


def test_yfinance_open_above_high_round_trips_through_cache_and_offline_fallback(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=10), name="Date")
    reply = _yf_reply("SPY", idx)
    reply.loc[idx[3], ("Open", "SPY")] = reply.loc[idx[3], ("High", "SPY")] * 1.01  # the feed's own glitch
    with pytest.warns(DataWarning, match="widened high/low of 1 bar"):
        online = load_yfinance("SPY", "2024-01-01", None, download=lambda s, **kw: reply, cache_dir=tmp_path)["SPY"]
    assert online["high"].iloc[3] == online["open"].iloc[3] == reply[("Open", "SPY")].iloc[3]
    pd.testing.assert_frame_equal(load_csv(cache_path("yfinance", "SPY", "1d", "2024-01-01", None, tmp_path)),
                                  online, check_freq=False)  # fmt: skip

    def offline(symbol, **kw):
        raise requests.exceptions.ConnectionError("no route to host")

    with pytest.warns(DataWarning, match="cached copy"):
        fallback = load_yfinance("SPY", "2024-01-01", None, download=offline, cache_dir=tmp_path)["SPY"]
    pd.testing.assert_frame_equal(fallback, online, check_freq=False)


def test_bybit_close_below_low_round_trips_through_cache_and_offline_fallback(tmp_path):
    fake = FakeBybit(n=50)
    fake.ohlcv[7, 3] = fake.ohlcv[7, 2] * 0.99  # close below the low
    start, end = _iso(int(fake.times[0])), _iso(int(fake.times[-1]))
    with pytest.warns(DataWarning, match="widened high/low of 1 bar"):
        online = load_bybit("BTCUSDT", "60", start=start, end=end, client=fake, cache_dir=tmp_path)["BTCUSDT"]
    assert online["low"].iloc[7] == online["close"].iloc[7]
    again = load_bybit("BTCUSDT", "60", start=start, end=end, client=Offline(), cache_dir=tmp_path)["BTCUSDT"]
    pd.testing.assert_frame_equal(again, online, check_freq=False)
    with pytest.warns(DataWarning, match="cached copy"):
        fallback = load_bybit("BTCUSDT", "60", start=start, end=end, client=Offline(), cache_dir=tmp_path,
                              refresh=True, max_retries=0, sleep=lambda s: None)["BTCUSDT"]  # fmt: skip
    pd.testing.assert_frame_equal(fallback, online, check_freq=False)


def _write_bad_cache(path):
    """A cache file load_csv rejects (written by an older version that did not widen the range)."""
    path.write_text("time,open,high,low,close,volume\n2024-01-02,101,100,99,100,5\n2024-01-03,100,101,99,100,5\n")


def test_fallback_warns_naming_a_rejected_cache_file(tmp_path):
    path = cache_path("yfinance", "SPY", "1d", "2024-01-01", "2024-01-20", tmp_path)
    _write_bad_cache(path)

    def offline(symbol, **kw):
        raise requests.exceptions.ConnectionError("no route to host")

    with pytest.warns(DataWarning, match="skipped") as record, pytest.raises(DataError, match="No usable cache"):
        load_yfinance("SPY", "2024-01-01", "2024-01-20", download=offline, cache_dir=tmp_path, refresh=True)
    msg = " ".join(str(w.message) for w in record)
    assert str(path) in msg and "outside the low..high range" in msg


def test_rejected_exact_cache_file_is_downloaded_again(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=10), name="Date")
    path = cache_path("yfinance", "SPY", "1d", "2024-01-01", "2024-01-20", tmp_path)
    _write_bad_cache(path)
    with pytest.warns(DataWarning, match="skipped"):
        df = load_yfinance("SPY", "2024-01-01", "2024-01-20", download=lambda s, **kw: _yf_reply(s, idx),
                           cache_dir=tmp_path)["SPY"]  # fmt: skip
    assert len(df) == 10
    pd.testing.assert_frame_equal(load_csv(path), df, check_freq=False)


def test_yfinance_repairs_are_reported_and_documented(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=6), name="Date")
    reply = _yf_reply("SPY", idx)
    reply.loc[idx[2], ("Volume", "SPY")] = np.nan
    reply = pd.concat([reply.iloc[[0, 1, 3, 2, 4, 5]], reply.iloc[[4]] * 1.001])  # unsorted, one duplicate
    with pytest.warns(DataWarning) as record:
        df = load_yfinance("SPY", "2024-01-01", "2024-01-10", download=lambda s, **kw: reply, cache_dir=tmp_path)["SPY"]
    assert df.index.is_monotonic_increasing and df.index.is_unique and len(df) == 6
    assert df["volume"].iloc[2] == 0.0 and df["close"].iloc[4] == pytest.approx(reply[("Close", "SPY")].iloc[-1])
    report = " | ".join(df.attrs["load_report"])
    assert "missing volume" in report and "sorted" in report and "duplicate" in report and "keeping the last" in report
    assert len(record) == len(df.attrs["load_report"])
    doc = " ".join(load_yfinance.__doc__.split())
    for phrase in ("filled with 0", "sorted by time", "duplicate timestamps are dropped, keeping the last",
                   "rows without any price are dropped", "high/low widened"):  # fmt: skip
        assert phrase in doc, phrase
