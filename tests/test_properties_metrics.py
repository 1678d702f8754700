"""Property tests: every metric of course_lib.metrics equals an independent formula on random returns.

The references below are written from the definitions in the metrics module's table, with plain Python
loops and the standard library (``statistics``, ``math``) instead of the vectorised NumPy the library
uses, so a shared mistake is unlikely. Returns are random floats in (-0.5, 0.5), with runs of zeros and
repeated values mixed in (flat bars, constant positions); positions are drawn from a few levels so that
trades, resizes and reversals all occur.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import course_lib as cl

REL = 1e-9
ABS = 1e-12


def close(a: float, b: float, rel: float = REL, abs_: float = ABS) -> bool:
    """Equal within tolerance; NaN equals NaN and infinities must match exactly."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def assert_close(got: float, want: float, what: str, rel: float = REL, abs_: float = ABS) -> None:
    assert close(float(got), float(want), rel, abs_), f"{what}: library {got!r} != reference {want!r}"


# ---------------------------------------------------------------------------------------------- data
bar_return = st.one_of(
    # rounded to 1e-8 (a thousandth of a basis point): no subnormal floats whose squares underflow to 0
    st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 8)),
    st.sampled_from([0.0, 0.01, -0.01, 0.25, -0.25]),
)


@st.composite
def returns_lists(draw, min_size: int = 2, max_size: int = 120) -> list[float]:
    r = draw(st.lists(bar_return, min_size=min_size, max_size=max_size))
    if draw(st.booleans()):  # a flat stretch (a strategy out of the market)
        at = draw(st.integers(0, len(r)))
        r[at:at] = [0.0] * draw(st.integers(1, 10))
    return r


def spread(r: list[float]) -> float:
    """Exact sample standard deviation (statistics works in exact fractions for floats)."""
    return statistics.stdev(r) if len(r) > 1 else float("nan")


def varied(r: list[float]) -> bool:
    """Not a constant series (those are tested separately: zero spread, see test_constant_returns...)."""
    return len(set(r)) > 1


periods = st.sampled_from([12.0, 52.0, 252.0, 365.0, 1764.0, 8760.0])
rates = st.sampled_from([0.0, 0.0, 0.02, 0.05])


# ---------------------------------------------------------------------------------------------- references
def ref_total(r):
    g = 1.0
    for x in r:
        g *= 1.0 + x
    return g - 1.0


def ref_cagr(r, p):
    g = ref_total(r) + 1.0
    if g <= 0:
        return -1.0
    try:
        return g ** (p / len(r)) - 1.0
    except OverflowError:  # e.g. +50% in 2 hourly bars, annualised: beyond float range
        return float("inf")


def ref_rf_bar(rf, p):
    return (1.0 + rf) ** (1.0 / p) - 1.0 if rf else 0.0


def ref_sharpe(r, p, rf=0.0):
    ex = [x - ref_rf_bar(rf, p) for x in r]
    sd = spread(ex)
    return statistics.fmean(ex) / sd * math.sqrt(p) if sd > 0 else float("nan")


def ref_sortino(r, p, rf=0.0):
    ex = [x - ref_rf_bar(rf, p) for x in r]
    dd = math.sqrt(sum(min(x, 0.0) ** 2 for x in ex) / len(ex))
    return statistics.fmean(ex) * math.sqrt(p) / dd if dd > 0 else float("nan")


def ref_equity(r):
    out, g = [], 1.0
    for x in r:
        g *= 1.0 + x
        out.append(g)
    return out


def ref_drawdowns(r):
    """Drawdown after each bar, the peak starting at the initial equity 1."""
    peak, out = 1.0, []
    for e in ref_equity(r):
        peak = max(peak, e)
        out.append(e / peak - 1.0)
    return out


def ref_max_dd(r):
    return min(0.0, *ref_drawdowns(r))


def ref_dd_duration(r):
    """Longest run of consecutive bars strictly below the running peak (the start counts as a peak)."""
    peak, run, best = 1.0, 0, 0
    for e in ref_equity(r):
        if e >= peak:
            peak, run = e, 0
        else:
            run += 1
            best = max(best, run)
    return best


def ref_trades(gross, held, cost_rate=0.0):
    """Maximal runs of same-sign held positions; each pays entry, resizes and exit at ``cost_rate``."""
    out, i, n = [], 0, len(held)
    while i < n:
        s = np.sign(held[i])
        if s == 0:
            i += 1
            continue
        j, g, traded = i, 1.0, abs(held[i])
        while j < n and np.sign(held[j]) == s:
            g *= 1.0 + gross[j]
            if j > i:
                traded += abs(held[j] - held[j - 1])
            j += 1
        traded += abs(held[j - 1])
        out.append(g - 1.0 - cost_rate * traded)
        i = j
    return out


def ref_turnover(held, p):
    prev, tot = 0.0, 0.0
    for h in held:
        tot += abs(h - prev)
        prev = h
    return tot / len(held) * p


@st.composite
def held_for(draw, n: int) -> list[float]:
    levels = st.sampled_from([0.0, 0.0, 1.0, -1.0, 0.5, -0.5, 0.25])
    held = draw(st.lists(levels, min_size=n, max_size=n))
    held[0] = 0.0  # as the backtester holds: nothing before the first decision
    return held


# ---------------------------------------------------------------------------------------------- properties
@given(returns_lists(), periods)
def test_return_and_risk_metrics_equal_reference(r, p):
    assume(varied(r))
    a = np.array(r)
    assert_close(cl.total_return(a), ref_total(r), "total_return", rel=1e-9, abs_=1e-12)
    assert_close(cl.annual_return(a, p), ref_cagr(r, p), "annual_return", rel=1e-8, abs_=1e-12)
    assert_close(cl.annual_volatility(a, p), spread(r) * math.sqrt(p), "volatility")
    assert_close(cl.sharpe_ratio(a, p), ref_sharpe(r, p), "sharpe", rel=1e-8)
    assert_close(cl.sortino_ratio(a, p), ref_sortino(r, p), "sortino", rel=1e-8)
    assert_close(cl.max_drawdown(a), ref_max_dd(r), "max_drawdown")
    assert cl.max_drawdown_duration(a) == ref_dd_duration(r)
    mdd = ref_max_dd(r)
    want_calmar = ref_cagr(r, p) / abs(mdd) if mdd < 0 else float("nan")
    assert_close(cl.calmar_ratio(a, p), want_calmar, "calmar", rel=1e-8)
    np.testing.assert_allclose(cl.equity_curve(a), ref_equity(r), rtol=1e-12)
    np.testing.assert_allclose(cl.drawdown(a), ref_drawdowns(r), rtol=1e-12, atol=1e-15)


@given(returns_lists(), periods, rates)
def test_risk_free_rate_is_converted_per_bar(r, p, rf):
    assume(varied(r))
    a = np.array(r)
    assert_close(cl.sharpe_ratio(a, p, rf), ref_sharpe(r, p, rf), "sharpe with rf", rel=1e-7)
    assert_close(cl.sortino_ratio(a, p, rf), ref_sortino(r, p, rf), "sortino with rf", rel=1e-7)


@given(st.data(), returns_lists(min_size=3), periods, st.sampled_from([0.0, 0.0005, 0.002]))
def test_trade_metrics_equal_reference(data, r, p, cost_rate):
    n = len(r)
    held = data.draw(held_for(n))
    gross = [h * x for h, x in zip(held, r)]
    want = ref_trades(gross, held, cost_rate)
    got = cl.trade_returns(np.array(gross), np.array(held), cost_rate)
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    wins = [t for t in want if t > 0]
    losses = [t for t in want if t < 0]
    assert_close(cl.win_rate(got), len(wins) / len(want) if want else float("nan"), "win_rate")
    if not want:
        pf = float("nan")
    elif not losses:
        pf = float("inf") if wins else float("nan")
    else:
        pf = sum(wins) / -sum(losses)
    # profit factor is a ratio of sums of the (tolerance-equal) trade returns
    if not (math.isinf(pf) or math.isnan(pf)):
        assert_close(cl.profit_factor(got), pf, "profit_factor", rel=1e-7, abs_=1e-9)
    else:
        small = [t for t in want if abs(t) < 1e-9]  # a trade at ~0 may fall on either side of zero
        if not small:
            assert_close(cl.profit_factor(got), pf, "profit_factor")
    assert_close(cl.turnover(np.array(held), p), ref_turnover(held, p), "turnover")
    assert_close(cl.exposure(np.array(held)), sum(h != 0 for h in held) / n, "exposure")


@given(st.data(), returns_lists(min_size=3), periods, rates, st.sampled_from([0.0, 0.001]))
def test_compute_metrics_agrees_with_the_single_metrics(data, r, p, rf, cost_rate):
    assume(varied(r))
    held = data.draw(held_for(len(r)))
    gross = np.array([h * x for h, x in zip(held, r)])
    net = gross - cost_rate * np.abs(np.diff(np.array(held), prepend=0.0))
    assume((net > -1).all())
    m = cl.compute_metrics(net, np.array(held), periods_per_year=p, gross_returns=gross, cost_rate=cost_rate,
                           risk_free_rate=rf, n_boot=0)
    nl = list(net)
    assert_close(m["total_return"], ref_total(nl), "total_return", rel=1e-9)
    assert_close(m["annual_return"], ref_cagr(nl, p), "annual_return", rel=1e-8)
    if varied(nl):
        assert_close(m["volatility"], spread(nl) * math.sqrt(p), "volatility", rel=1e-8)
        assert_close(m["sharpe"], ref_sharpe(nl, p, rf), "sharpe", rel=1e-7)
    assert_close(m["sortino"], ref_sortino(nl, p, rf), "sortino", rel=1e-7)
    assert_close(m["max_drawdown"], ref_max_dd(nl), "max_drawdown")
    assert m["max_drawdown_duration"] == ref_dd_duration(nl)
    trades = ref_trades(list(gross), held, cost_rate)
    assert m["n_trades"] == len(trades)
    assert_close(m["turnover"], ref_turnover(held, p), "turnover")
    assert_close(m["exposure"], sum(h != 0 for h in held) / len(held), "exposure")
    assert m["n_bars"] == len(r) and m["periods_per_year"] == p
    assert math.isnan(m["sharpe_ci_low"]) and math.isnan(m["sharpe_ci_high"])  # n_boot=0 skips it


@given(returns_lists(min_size=40, max_size=150), st.integers(5, 30), periods)
def test_rolling_sharpe_equals_windowed_reference(r, window, p):
    got = cl.rolling_sharpe(pd.Series(r), window, p).to_numpy()
    for t in range(len(r)):
        if t < window - 1:
            assert math.isnan(got[t])
            continue
        w = r[t - window + 1 : t + 1]
        sd = spread(w)
        if sd > 1e-12 * max(1.0, max(abs(x) for x in w)):  # clearly non-zero spread
            assert_close(got[t], statistics.fmean(w) / sd * math.sqrt(p), f"rolling sharpe at {t}", rel=1e-6)


@given(returns_lists(min_size=10, max_size=80), st.integers(1, 6), st.integers(0, 3), periods)
def test_sharpe_interval_equals_an_explicit_block_bootstrap(r, block, seed, p):
    """The prefix-sum bootstrap equals gluing the circular blocks by hand, with the same random draws."""
    assume(varied(r))
    n_boot, n = 60, len(r)
    lo, hi = cl.sharpe_confidence_interval(np.array(r), p, 0.9, n_boot, block, seed)
    L = min(block, n)
    n_blocks = -(-n // L)
    starts = np.random.default_rng(seed).integers(0, n, size=(n_boot, n_blocks))
    stats = []
    for row in starts:
        sample: list[float] = []
        for s in row:
            sample += [r[(s + j) % n] for j in range(L)]
        sample = sample[:n]
        sd = statistics.stdev(sample)
        if sd > 1e-12:
            stats.append(statistics.fmean(sample) / sd * math.sqrt(p))
    assume(len(stats) == n_boot)  # a resample with zero spread is dropped by both; keep the count equal
    want_lo, want_hi = np.quantile(stats, [0.05, 0.95])
    assert_close(lo, want_lo, "sharpe_ci_low", rel=1e-6, abs_=1e-9)
    assert_close(hi, want_hi, "sharpe_ci_high", rel=1e-6, abs_=1e-9)
    assert lo <= hi


@given(returns_lists(min_size=1, max_size=30), st.integers(0, 29))
def test_a_total_loss_bar_ruins_the_strategy(r, at):
    r = list(r)
    r[min(at, len(r) - 1)] = -1.0
    a = np.array(r)
    assert cl.total_return(a) == -1.0
    assert cl.annual_return(a, 252.0) == -1.0
    assert cl.max_drawdown(a) == pytest.approx(-1.0)


@given(st.sampled_from([0.1, 0.3, -0.07, 0.001, 1 / 3]), st.integers(2, 50))
def test_constant_returns_have_no_sharpe(c, n):
    """The docstring's promise: zero spread gives NaN, not an infinite (or 1e16) Sharpe (found by these
    properties: a constant 0.1 has a rounding-sized spread of ~1e-17)."""
    r = np.full(n, c)
    assert math.isnan(cl.sharpe_ratio(r, 252.0))
    assert math.isnan(cl.compute_metrics(r, periods_per_year=252.0, n_boot=0)["sharpe"])


# ---------------------------------------------------------------------------------------------- frequency
def _daily(start: pd.Timestamp, n: int, weekdays: set[int]) -> pd.DatetimeIndex:
    days = pd.date_range(start, periods=n * 2 + 14, freq="D")
    return days[np.isin(days.day_of_week, sorted(weekdays))][:n]


starts = st.dates(min_value=pd.Timestamp("2000-01-01").date(), max_value=pd.Timestamp("2030-01-01").date())


@given(starts, st.integers(30, 400))
def test_daily_weekday_and_seven_day_markets(start, n):
    start = pd.Timestamp(start)
    assert cl.infer_frequency(_daily(start, n, {0, 1, 2, 3, 4})).periods_per_year == 252.0
    assert cl.infer_frequency(pd.date_range(start, periods=n, freq="D")).periods_per_year == 365.0


@given(starts, st.integers(30, 400))
def test_five_day_week_starting_sunday_is_252(start, n):
    """FX daily candles stamped at the New York close, Middle-East exchanges: 5 bars a week, not 7 (issue 10
    item 7: they were called a 24/7 market)."""
    assert cl.infer_frequency(_daily(pd.Timestamp(start), n, {6, 0, 1, 2, 3})).periods_per_year == 252.0


@given(starts, st.integers(200, 2000), st.sampled_from([1, 2, 4]))
def test_intraday_24_7_is_365_days_of_bars(start, n, hours):
    idx = pd.date_range(pd.Timestamp(start), periods=n, freq=f"{hours}h")
    assert cl.infer_frequency(idx).periods_per_year == pytest.approx(365.0 * 24 / hours)


@given(starts, st.integers(3, 40))
def test_weekly_and_monthly(start, n):
    start = pd.Timestamp(start)
    assert cl.infer_frequency(pd.date_range(start, periods=n, freq="7D")).periods_per_year == 52.0
    assert cl.infer_frequency(pd.date_range(start, periods=n, freq="MS")).periods_per_year == 12.0
