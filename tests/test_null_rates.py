"""On noise, every verdict the lessons print fires at about its nominal rate.

Lessons 04-09 turn 95% intervals into verdicts: a hit rate "excludes one half", an R^2, an accuracy
difference, a Sharpe ratio or a gain "excludes zero". On a market with no structure at all (i.i.d. returns,
forecasts that only look at the past) such a verdict should fire in about 5% of markets; a test that fires
far more often is reading noise as skill (the mistake that treats overlapping h-bar outcomes as independent:
a Wilson interval then fires in about a third of null markets).

Each test simulates many small null markets at once (vectorised), applies the library function the lessons
use, with the lessons' block rules, and asserts the firing rate is at most ``MAX_RATE`` (8%; with 400
markets the standard error of a true 5% rate is 1.1 points, so 8% is nearly three standard errors away).
The forecasts are deliberately persistent (the sign of the trailing 12-bar return, as persistent as an
analog forecast whose query windows overlap), the worst case for dependence. ``python tests/test_null_rates.py``
prints the observed rates.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

import course_lib as cl

MAX_RATE = 0.08
N_MARKETS = 400  # bootstrap-based verdicts
N_CHEAP = 4000  # closed-form verdicts (t intervals)
N_OBS = 600  # scored windows per market (the lessons score 1,000-2,500: smaller is the harder case)
HORIZON = 10  # lesson 06's synthetic horizon
LOOKBACK = 12
N_BOOT = 400


def _null_markets(n_markets: int, n: int = N_OBS, horizon: int = HORIZON, seed: int = 0):
    """(forecast, outcome) per market: the trailing ``LOOKBACK``-bar return at each bar and the next
    ``horizon`` bars' return, on consecutive bars of i.i.d. Gaussian returns (outcomes overlap)."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((n_markets, n + horizon + LOOKBACK))
    c = np.concatenate([np.zeros((n_markets, 1)), np.cumsum(r, axis=1)], axis=1)
    past = c[:, LOOKBACK : n + LOOKBACK] - c[:, :n]
    future = c[:, LOOKBACK + horizon : n + LOOKBACK + horizon] - c[:, LOOKBACK : n + LOOKBACK]
    return past, future


def _fires(low, high, null: float = 0.0) -> bool:
    return cl.interval_side(low, high, null) in ("above", "below")


def hit_rate_excludes_one_half() -> float:
    """Lesson 06 (analog_skill, its leak test on the shuffled null): the hit rate of overlapping outcomes."""
    past, future = _null_markets(N_MARKETS)
    fired = [_fires(*(lambda h: (h["low"], h["high"]))(cl.hit_rate(p, y, horizon=HORIZON, n_boot=N_BOOT, seed=i)),
                    0.5) for i, (p, y) in enumerate(zip(past, future))]  # fmt: skip
    return float(np.mean(fired))


def wilson_excludes_one_half() -> float:
    """The interval the course used before: Wilson on overlapping outcomes, as if they were independent."""
    past, future = _null_markets(N_MARKETS)
    hits = (np.sign(past) == np.sign(future)).sum(axis=1)
    cis = [binomtest(int(k), N_OBS).proportion_ci(method="wilson") for k in hits]
    return float(np.mean([_fires(c.low, c.high, 0.5) for c in cis]))


def independent_hit_rate_excludes_one_half() -> float:
    """Lesson 06, queried at planted motif ends: events far apart (independent), Wilson interval."""
    rng = np.random.default_rng(1)
    pred = rng.choice([-1.0, 1.0], size=(N_CHEAP, 36))
    y = rng.choice([-1.0, 1.0], size=(N_CHEAP, 36))
    return float(np.mean([_fires(*(lambda h: (h["low"], h["high"]))(cl.hit_rate(p, t)), 0.5) for p, t in zip(pred, y)]))


def r2_excludes_zero() -> float:
    """Lesson 06 (analog_skill's return R^2): a forecast that is right in size (shrunk towards the mean)
    but knows nothing, against the historical mean; the R^2 interval should cover zero. R^2 is a ratio and
    its percentile interval is too narrow on its lower side with few blocks (about 9% firing at 600 windows,
    30 blocks); the lessons score about 2,500 windows, so the test uses 1,500."""
    past, future = _null_markets(N_MARKETS, n=1500, seed=2)  # a ratio: its percentile interval needs ~75 blocks
    fired = [_fires(*cl.r2_interval(0.02 * p, y, 0.0, horizon=HORIZON, n_boot=N_BOOT, seed=i))
             for i, (p, y) in enumerate(zip(past, future))]  # fmt: skip
    return float(np.mean(fired))


def accuracy_difference_excludes_zero() -> float:
    """Lessons 04 and 09 (memory minus no memory on the same test windows): the paired block bootstrap of the
    per-window accuracy difference of two forecasts that know nothing (5-bar outcomes, blocks of 20)."""
    past, future = _null_markets(N_MARKETS, n=1000, horizon=5, seed=3)
    other, _ = _null_markets(N_MARKETS, n=1000, horizon=5, seed=4)
    d = (np.sign(past) == np.sign(future)).astype(float) - (np.sign(other) == np.sign(future)).astype(float)
    rng = np.random.default_rng(12345)
    return float(np.mean([_fires(*cl.block_bootstrap_mean_ci(row, N_BOOT, 20, rng)) for row in d]))


def seed_t_interval_excludes_zero() -> float:
    """Lessons 04, 07 and 09: a paired difference over 5 independent seeds, Student-t interval."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, N_CHEAP, 5))
    return float(np.mean([_fires(*(lambda c: (c["ci_low"], c["ci_high"]))(cl.paired_seed_interval(x, z)))
                          for x, z in zip(a, b)]))  # fmt: skip


def sharpe_excludes_zero() -> float:
    """Lessons 05, 06 and 08 (a strategy's or composer's Sharpe): positions decided at t from the past, earning
    bar t+1 of an i.i.d. market; the Backtester's block bootstrap interval of the annualised Sharpe."""
    past, _ = _null_markets(N_MARKETS, n=1000, horizon=1, seed=6)
    rng = np.random.default_rng(7)
    nxt = rng.standard_normal(past.shape) * 0.01
    r = np.sign(past) * nxt
    return float(np.mean([_fires(*cl.sharpe_confidence_interval(x, 252.0, n_boot=N_BOOT, seed=i))
                          for i, x in enumerate(r)]))  # fmt: skip


def paired_gain_excludes_zero() -> float:
    """Lesson 08 (retrieval gain over independent questions): paired percentile bootstrap."""
    rng = np.random.default_rng(8)
    a, b = rng.random((2, N_MARKETS, 120))
    return float(np.mean([_fires(*cl.paired_bootstrap(x, z, N_BOOT, seed=i)[1:]) for i, (x, z) in enumerate(zip(a, b))]))


VERDICTS = {
    "hit rate of overlapping outcomes excludes 1/2 (06)": hit_rate_excludes_one_half,
    "hit rate at independent events excludes 1/2 (06)": independent_hit_rate_excludes_one_half,
    "return R^2 excludes 0 (06)": r2_excludes_zero,
    "accuracy difference, block bootstrap, excludes 0 (04, 09)": accuracy_difference_excludes_zero,
    "paired seed t-interval excludes 0 (04, 07, 09)": seed_t_interval_excludes_zero,
    "Sharpe interval excludes 0 (05, 06, 08)": sharpe_excludes_zero,
    "paired retrieval gain excludes 0 (08)": paired_gain_excludes_zero,
}


@pytest.mark.parametrize("name", list(VERDICTS))
def test_verdict_fires_at_about_its_nominal_rate_on_noise(name):
    rate = VERDICTS[name]()
    assert rate <= MAX_RATE, f"{name}: fired in {100 * rate:.1f}% of null markets (nominal 5%)"


def test_the_old_independent_interval_fails_this_test():
    """The simulation has power: Wilson on overlapping outcomes fires far above the nominal rate."""
    assert wilson_excludes_one_half() > 0.15


if __name__ == "__main__":
    import time

    for name, f in {**VERDICTS, "Wilson on overlapping outcomes (before)": wilson_excludes_one_half}.items():
        t = time.perf_counter()
        print(f"{name:60s} {100 * f():5.1f}%  ({time.perf_counter() - t:.1f} s)")
