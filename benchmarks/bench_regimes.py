"""How long lesson 07's regime tools take: fits, causal filters, the memory vote, one walk-forward study.

Prints a table (never passes or fails on time). Usage::

    python benchmarks/bench_regimes.py [--bars 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

import course_lib as cl


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", cl.RegimeFitWarning)
    market = cl.make_synthetic_market(args.bars, seed=0)
    r = cl.log_returns(market.ohlcv["close"]).dropna()
    half = r.iloc[: len(r) // 2]
    true = cl.group_regimes(market.regimes).reindex(r.index)
    hmm = cl.HMMRegimeDetector(2).fit(half)
    ms = cl.MarkovSwitchingDetector(2).fit(half)
    feats = cl.compute_features(market.ohlcv)
    keys = cl.window_keys(cl.FeatureScaler().fit(feats.iloc[: len(feats) // 2]).transform(feats), 16)
    vote = cl.KNNRegimeDetector(32).fit(keys, true)
    rows = {
        "HMM fit (2 states, half the bars)": lambda: cl.HMMRegimeDetector(2).fit(half),
        "HMM fit (4 states, half the bars)": lambda: cl.HMMRegimeDetector(4).fit(half),
        "HMM forward filter (all bars)": lambda: hmm.filter(r),
        "HMM smoother (all bars, oracle)": lambda: hmm.smooth(r),
        "Markov switching fit (2 states)": lambda: cl.MarkovSwitchingDetector(2).fit(half),
        "Markov switching filter (all bars)": lambda: ms.filter(r),
        "volatility rule fit + filter": lambda: cl.VolatilityThresholdDetector(2).fit(half).filter(r),
        "kNN vote, all bars queried": lambda: vote.filter(keys),
    }
    table = {name: _best(fn, args.repeats) for name, fn in rows.items()}
    cfg = cl.RegimeStudyConfig(detectors=tuple(d for d in cl.DETECTORS if d != "knn_transformer"))
    table["run_regime_study (2 folds, no transformer)"] = _best(lambda: cl.run_regime_study(market, cfg), 1)
    out = pd.DataFrame({"seconds": table})
    out["bars per second"] = np.where(out.index.str.contains("filter|smoother|vote"), len(r) / out["seconds"], np.nan)
    print(f"{len(r)} bars, best of {args.repeats}")
    print(out.round(4).to_string())


if __name__ == "__main__":
    main()
