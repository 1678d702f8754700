"""Agent memory speed (lesson 08): batched adds, hybrid search p50/p99, cleanup, on a store of N items.

    python benchmarks/bench_agent_memory.py              # 100,000 items in a temporary file
    python benchmarks/bench_agent_memory.py --items 20000 --searches 200

Measures, on one SQLite file (WAL):

* batched adds: ``add_many`` of ``--batch`` items per transaction (text, an 8-dim state vector, importance;
  tiers 60/30/10% short/medium/long, creation times over four years);
* the first search after opening (it loads the NumPy mirror of the store and its word index);
* hybrid search (text + vector, k=10) at random times, without and with ``touch`` (an access is written);
* a search with text only and one with the vector only;
* ``maintain`` (tiers) and ``cleanup`` over the whole store, then the first search after it (the mirror reloads).

Prints a table; nothing passes or fails on time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import course_lib as cl
from course_lib.agents.diary import _EVENTS, _FILLER, _SYMBOLS


def _items(n: int, rng: np.random.Generator, t0: pd.Timestamp, span_days: float) -> list[dict]:
    syms = rng.choice(_SYMBOLS, n)
    evs = rng.choice(_EVENTS, n)
    fill = rng.choice(_FILLER, (n, 3))
    vecs = rng.normal(size=(n, 8))
    imp = rng.uniform(0.5, 5.0, n)
    ages = np.sort(rng.uniform(0, span_days, n))
    kinds = rng.choice(["observation", "signal", "reflection"], n)
    agents = rng.choice(["momentum", "mean_reversion", "volatility", "analog"], n)
    tiers = rng.choice(["short", "medium", "long"], n, p=[0.6, 0.3, 0.1])  # a store that has been maintained
    return [dict(agent=str(agents[i]), kind=str(kinds[i]), text=f"{syms[i]} {evs[i]} {' '.join(fill[i])}",
                 now=t0 + pd.Timedelta(days=float(ages[i])), importance=float(imp[i]), vector=vecs[i],
                 tier=str(tiers[i]))
            for i in range(n)]


def _pct(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--searches", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = pd.Timestamp("2020-01-01")
    span = 4 * 365.0
    items = _items(args.items, rng, t0, span)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sqlite"
        mem = cl.AgentMemory(path, vector_dim=8)
        start = time.perf_counter()
        for b in range(0, len(items), args.batch):
            mem.add_many(items[b : b + args.batch])
        add_s = time.perf_counter() - start
        rows.append(("add_many", f"{args.batch:,} per transaction", f"{len(items) / add_s:,.0f} items/s",
                     f"{add_s:.2f} s total"))
        mem.close()

        mem = cl.AgentMemory(path)
        start = time.perf_counter()
        mem.search("AAPL earnings miss", vector=rng.normal(size=8), now=t0 + pd.Timedelta(days=span), k=10,
                   touch=False)
        rows.append(("first search after open", "loads the NumPy mirror + word index",
                     f"{(time.perf_counter() - start) * 1e3:.0f} ms", f"{len(mem):,} items"))

        def timed(touch: bool, text: bool, vector: bool) -> list[float]:
            out = []
            for _ in range(args.searches):
                s, e = rng.choice(_SYMBOLS), rng.choice(_EVENTS)
                now = t0 + pd.Timedelta(days=float(rng.uniform(30, span)))
                q = f"{s} {e}" if text else None
                v = rng.normal(size=8) if vector else None
                begin = time.perf_counter()
                mem.search(q, vector=v, now=now, k=10, touch=touch)
                out.append((time.perf_counter() - begin) * 1e3)
            return out

        for label, kw in (("hybrid search, text + vector", dict(touch=False, text=True, vector=True)),
                          ("hybrid search + touch (writes accesses)", dict(touch=True, text=True, vector=True)),
                          ("text only", dict(touch=False, text=True, vector=False)),
                          ("vector only", dict(touch=False, text=False, vector=True))):
            p50, p99 = _pct(timed(**kw))
            rows.append((label, "k=10, random times", f"p50 {p50:.1f} ms", f"p99 {p99:.1f} ms"))

        end = t0 + pd.Timedelta(days=span + 1)
        start = time.perf_counter()
        changes = mem.maintain(now=end, policy=cl.TierPolicy(delete_below=0.0))
        rows.append(("maintain (tiers)", "whole store", f"{(time.perf_counter() - start) * 1e3:.0f} ms",
                     f"{len(changes):,} changes"))
        before = len(mem)
        start = time.perf_counter()
        removed = mem.cleanup(now=end, min_strength=0.01)
        rows.append(("cleanup", "strength < 0.01", f"{(time.perf_counter() - start) * 1e3:.0f} ms",
                     f"{len(removed):,} of {before:,} removed"))
        start = time.perf_counter()
        mem.search("AAPL earnings miss", vector=rng.normal(size=8), now=end, k=10, touch=False)
        rows.append(("first search after cleanup", "reloads the NumPy mirror",
                     f"{(time.perf_counter() - start) * 1e3:.0f} ms", f"{len(mem):,} items"))
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(folder).glob("bench.sqlite-*"))
        rows.append(("file size", "items + FTS5 + vectors (+ WAL)", f"{size / 1e6:.1f} MB", ""))
        mem.close()
    table = pd.DataFrame(rows, columns=["operation", "setting", "result", "note"])
    print(f"AgentMemory benchmark: {args.items:,} items, {args.searches} searches per row")
    print(table.to_string(index=False))
    cl.print_versions()


if __name__ == "__main__":
    main()
