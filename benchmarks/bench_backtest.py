"""Time the backtester and every metric over 1,000,000 bars and print a table of medians.

Anchor: vectorbt advertises ~70-100 ms for one million orders (Numba). The course's engine is plain
NumPy; the target is a full backtest with all metrics, Sharpe bootstrap included, well under 1 s.

Usage: ``python benchmarks/bench_backtest.py [--bars 1000000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from course_lib import (
    BacktestConfig,
    Backtester,
    compute_metrics,
    max_drawdown,
    max_drawdown_duration,
    sharpe_confidence_interval,
    simulate,
    trade_returns,
)


def _median_ms(fn, repeat: int) -> tuple[float, float]:
    """Median wall-clock and median process-CPU milliseconds (CPU time is robust to a busy machine:
    these NumPy kernels are single-threaded, so CPU time is the work itself)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.bars
    rng = np.random.default_rng(0)
    asset = rng.standard_t(4, n) * 0.004
    # a signal that flips often: about one trade every 10 bars
    target = np.sign(np.convolve(rng.standard_normal(n), np.ones(5), mode="same"))
    index = pd.date_range("1990-01-01", periods=n, freq="h")
    pos_s = pd.Series(target, index=index)
    ret_s = pd.Series(asset, index=index)
    sim = simulate(target, asset, 5e-4)
    cfg = BacktestConfig(cost_bps=5, n_boot=1000)
    cfg_stops = BacktestConfig(cost_bps=5, stop_loss=0.02, take_profit=0.04, n_boot=1000)

    rows = [
        ("simulate (positions -> net returns, costs)", lambda: simulate(target, asset, 5e-4)),
        (
            "simulate + stop-loss/take-profit",
            lambda: simulate(target, asset, 5e-4, stop_loss=0.02, take_profit=0.04),
        ),
        ("max drawdown + duration", lambda: (max_drawdown(sim["net"]), max_drawdown_duration(sim["net"]))),
        (
            "per-trade returns (win rate, profit factor)",
            lambda: trade_returns(sim["gross"], sim["held"], 5e-4),
        ),
        (
            "Sharpe block bootstrap CI (1000 resamples)",
            lambda: sharpe_confidence_interval(sim["net"], 8760.0),
        ),
        (
            "all metrics, no bootstrap",
            lambda: compute_metrics(sim["net"], sim["held"], periods_per_year=8760.0, n_boot=0),
        ),
        (
            "all metrics incl. bootstrap",
            lambda: compute_metrics(sim["net"], sim["held"], periods_per_year=8760.0, n_boot=1000),
        ),
        (
            "Backtester.run, arrays (strategy + buy&hold, all metrics)",
            lambda: Backtester(BacktestConfig(cost_bps=5, periods_per_year=8760.0)).run(
                target, returns=asset
            ),
        ),
        (
            "Backtester.run, pandas Series + frequency inference",
            lambda: Backtester(cfg).run(pos_s, returns=ret_s),
        ),
        ("Backtester.run, pandas + stops", lambda: Backtester(cfg_stops).run(pos_s, returns=ret_s)),
    ]
    print(f"Backtest benchmark: {n:,} bars, median of {args.repeat} runs (after one warm-up)")
    print(f"{'step':<60} {'wall ms':>9} {'CPU ms':>9}")
    print("-" * 80)
    for name, fn in rows:
        wall, cpu = _median_ms(fn, args.repeat)
        print(f"{name:<60} {wall:>9.1f} {cpu:>9.1f}")
    trades = len(trade_returns(sim["gross"], sim["held"]))
    print(f"({trades:,} trades in the test signal; vectorbt's anchor: ~70-100 ms per 1M orders with Numba)")


if __name__ == "__main__":
    main()
