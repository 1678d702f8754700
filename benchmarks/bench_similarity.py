"""Time one analog query over the ~5,000 windows of the bundled S&P 500 and print a table of medians.

Target: one query (causal filter, distinct episodes, the result as a DataFrame) in a few milliseconds, so a
date picker redraws at once and a walk-forward over every test bar stays cheap. Rows: the bare index search
(one matrix-vector product, the causal mask, the greedy exclusion zone), a prepared
:class:`course_lib.AnalogSearch` query (search + weights + forward returns as a DataFrame), and the one-shot
:func:`course_lib.find_analogs` that also embeds every window first; for each description and a few dates.

Usage: ``python benchmarks/bench_similarity.py [--repeat 50] [--seq-len 64] [--lookback 16] [--k 10]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import pandas as pd

import course_lib as cl

DATES = ("2008-10-10", "2011-08-08", "2015-08-24", "2018-12-24")


def _median_ms(fn, repeat: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU milliseconds (CPU time is robust to a busy machine)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lookback", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    prices = cl.load_sample("sp500")
    feats = cl.compute_features(prices)
    scaler = cl.FeatureScaler().fit(feats.loc[:"2005-12-30"])
    target = cl.forward_log_return(prices["close"], 1).reindex(feats.index)
    windows = cl.make_windows(scaler.transform(feats), target, args.seq_len, 1, drop_unlabeled=False)
    rows = []
    for method in ("raw", "shape", "stats"):
        search = cl.AnalogSearch(windows, method=method, lookback=args.lookback, close=prices["close"],
                                 horizons=(1, 5, 20))  # fmt: skip
        dim = search.embedding.vectors.shape[1]
        for date in DATES:
            row = int(pd.DatetimeIndex(windows.end_time).searchsorted(pd.Timestamp(date), side="right")) - 1
            q = search.embedding.vectors[row : row + 1]
            t_ns = int(windows.end_time_ns()[row])
            qpos = int(search.pos[row])
            bare = _median_ms(partial(search.index.search, q, args.k, as_of=t_ns, query_pos=qpos,
                                      exclusion=args.seq_len), args.repeat)  # fmt: skip
            prepared = _median_ms(partial(search.query, date, k=args.k), args.repeat)
            cold = _median_ms(partial(cl.find_analogs, windows, date, k=args.k, method=method, lookback=args.lookback,
                                      close=prices["close"], horizons=(1, 5, 20)), max(3, args.repeat // 10))  # fmt: skip
            n_ok = int((search.index.ready_ns <= t_ns).sum())
            rows.append({"method": method, "dim": dim, "date": date, "searchable": n_ok,
                         "index.search ms": bare[0], "index.search cpu ms": bare[1],
                         "AnalogSearch.query ms": prepared[0], "find_analogs (embeds all) ms": cold[0]})  # fmt: skip
    table = pd.DataFrame(rows)
    print(f"{len(windows)} windows of {args.seq_len} bars x {windows.n_features} features, lookback "
          f"{args.lookback}, k={args.k}, exclusion {args.seq_len} bars; medians of {args.repeat} runs")  # fmt: skip
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(2).to_string(index=False))
    print(f"median over all rows: index.search {np.median(table['index.search ms']):.2f} ms, "
          f"AnalogSearch.query {np.median(table['AnalogSearch.query ms']):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
