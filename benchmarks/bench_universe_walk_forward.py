"""A universe walk-forward: several synthetic instruments, each evaluated fold by fold, serially and on a
local process pool; prints the measured speed-up and checks that both give the same numbers.

    python benchmarks/bench_universe_walk_forward.py                 # 4 instruments, 2 workers
    python benchmarks/bench_universe_walk_forward.py --instruments 8 --workers 2 --epochs 3

Each instrument is ``course_lib.make_synthetic_market`` with its own seed; each task is one instrument's
whole walk-forward (every strategy, both models), so tasks are independent and seeded. The pool's workers
are spawned (``course_lib.parallel.process_pool``) and run one torch thread each (two workers on two
cores); the serial run it is compared with uses one thread too, so both compute the same numbers
(``--serial-all-threads`` also times a serial run on every core). The pool's time includes starting it. The same
loop runs on a Dask cluster by passing ``executor=distributed.Client("tcp://scheduler:8786").get_executor()``.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

import course_lib as cl
from course_lib.parallel import process_pool, run_tasks


def _started(_: int) -> int:
    """A no-op task: the first one a spawned worker runs, after importing course_lib (its start-up)."""
    return os.getpid()


def evaluate_instrument(seed: int, n_bars: int, cfg: cl.WalkForwardConfig) -> pd.DataFrame:
    """One instrument's walk-forward table (a module-level function: a process pool pickles it)."""
    market = cl.make_synthetic_market(n_bars=n_bars, seed=seed)
    res = cl.walk_forward_evaluate(market.ohlcv, cfg, progress=False)
    return res.table[["sharpe", "total_return", "max_drawdown"]].assign(instrument=f"SYN{seed}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instruments", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bars", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--serial-all-threads", action="store_true",
                   help="also time the serial run with torch's default threads (results then round differently)")
    args = p.parse_args(argv)
    cfg = cl.WalkForwardConfig(
        n_folds=2, seq_len=16, knn_lookback=8, knn_k=16,
        model=dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, key_dim=16, n_neighbors=8),
        trainer=dict(epochs=args.epochs, batch_size=64),
        backtest=cl.BacktestConfig(n_boot=200),
    )  # fmt: skip
    tasks = [(seed, args.bars, cfg) for seed in range(args.instruments)]
    print(f"# universe walk-forward: {args.instruments} synthetic instruments x {cfg.n_folds} folds, "
          f"{args.bars} bars each; cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    import torch

    default_threads = torch.get_num_threads()
    rows = []
    if args.serial_all_threads:
        t0 = time.perf_counter()
        run_tasks(evaluate_instrument, tasks, desc=f"serial, {default_threads} threads")
        rows.append((f"serial, {default_threads} torch threads", time.perf_counter() - t0))
    torch.set_num_threads(1)  # the pool's workers use one thread each: same arithmetic, same numbers
    t0 = time.perf_counter()
    serial = run_tasks(evaluate_instrument, tasks, desc="serial")
    t_serial = time.perf_counter() - t0
    rows.append(("serial, 1 torch thread", t_serial))
    torch.set_num_threads(default_threads)
    t0 = time.perf_counter()
    with process_pool(max_workers=args.workers) as pool:  # spawned workers, one torch thread each
        list(pool.map(_started, range(4 * args.workers)))  # every worker up and importing done
        t_startup = time.perf_counter() - t0
        parallel = run_tasks(evaluate_instrument, tasks, executor=pool, desc=f"{args.workers} processes")
    t_pool = time.perf_counter() - t0
    same = all(a.equals(b) for a, b in zip(serial, parallel))
    table = pd.concat(parallel).reset_index().pivot(index="strategy", columns="instrument", values="sharpe")
    print("\nSharpe per strategy and instrument (process pool run):")
    print(table.round(2).to_string())
    print()
    rows.append((f"process pool x{args.workers}", t_pool))
    rows.append(("  of which start-up (spawn, import)", t_startup))
    rows.append(("  pool without its start-up", t_pool - t_startup))
    print(f"{'run':<36}{'seconds':>10}{'serial / this':>16}")
    for name, t in rows:
        ratio = "" if "start-up" in name and "without" not in name else f"{t_serial / t:.2f}"
        print(f"{name:<36}{t:>10.1f}{ratio:>16}")
    print(f"identical tables (serial vs pool): {same}"
          + ("" if same else " (they should be: report this)"))


if __name__ == "__main__":
    main()
