"""Causal memory at scale: recall@32 and latency of approximate search, unfiltered and causally filtered,
for the FAISS backends (IVF, HNSW) and Milvus (Milvus Lite in process, or a Milvus server), against exact search.

    python benchmarks/bench_milvus.py --quick          # M = 1e5 only (a few minutes on 2 CPU cores)
    python benchmarks/bench_milvus.py                  # M = 1e5 and 1e6 (FAISS at 1e6; slow to build)
    python benchmarks/bench_milvus.py --milvus-1e6     # also load 1e6 vectors into Milvus Lite (very slow)
    python tests/milvus_server.py serve                # a Milvus server (prints its URI), then:
    python benchmarks/bench_milvus.py --uri http://127.0.0.1:19530 --sizes 1e5,1e6 --no-faiss

"Causal" queries carry a training-like mix of times: ``as_of`` uniform over the last 90% of the stored
period, so the earliest queries may see 10% of the memory; the exact answer is the exact bank's causal
search. Keys and queries are the same jittered S&P 500 window embeddings as ``bench_memory.py``. Prints
a table; never asserts on time. Needs the optional extra ``scale`` for the Milvus rows (skipped without).

With ``--uri`` the Milvus rows measure that server, at every size: load (all adds), index build (flush until
every entry is indexed), the causal batch per ``nprobe`` / ``ef``, its recall@32, leaks (neighbours with
``available_at`` after the query's time), short results (queries with fewer than ``min(k, visible)``
neighbours) and ``engine short`` (queries the engine left short, completed by the bank's exact pass).
"""

# ruff: noqa: B023, I001  (timing lambdas run at once in their loop; course_lib before faiss: OpenMP policy)
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import course_lib  # noqa: F401,E402
import faiss  # noqa: E402
from bench_memory import embeddings  # noqa: E402
from course_lib.memory import NO_TIME_FILTER, ExternalMemoryBank, MemoryConfig, recall_at_k  # noqa: E402

K, D, BATCH = 32, 64, 256


def _time(fn, reps: int) -> tuple[float, object]:
    out = fn()  # warm-up (and the answer)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


def bench(m: int, keys: np.ndarray, queries: np.ndarray, with_hnsw: bool, with_milvus: bool, reps: int,
          uri: str = "", with_faiss: bool = True, indexes=("FLAT", "IVF_FLAT", "HNSW"), ef_list=(128,),
          nprobe_list=(16,), reuse: str = "") -> None:
    xb, xq = keys[:m], queries[:BATCH]
    ts = np.arange(m, dtype=np.int64)  # entry i resolved at time i + 1
    as_of = np.random.default_rng(1).integers(m // 10, m, BATCH)
    print(f"\n## M={m:,}, d={D}, k={K}, batch {BATCH}: ms per batch (median of {reps}), recall@{K} vs exact")
    print(f"{'backend':<34}{'build s':>9}{'unfilt ms':>11}{'recall':>8}{'causal ms':>11}{'recall':>8}{'vs exact':>10}")
    exact = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="auto"))
    exact.add(xb, timestamp=ts, available_at=ts + 1)
    t_u, truth_u = _time(lambda: exact.search(xq, k=K, as_of=NO_TIME_FILTER), reps)
    t_c, truth_c = _time(lambda: exact.search(xq, k=K, as_of=as_of), reps)
    print(f"{'exact (bank auto)':<34}{0:>9.1f}{t_u * 1e3:>11.1f}{1:>8.3f}{t_c * 1e3:>11.1f}{1:>8.3f}{1:>10.1f}")
    exact = None  # free its memory before the next index
    rows = [("ivf", dict(ivf_nprobe=16)), ("ivf", dict(ivf_nprobe=32))] if with_faiss else []
    if with_hnsw and with_faiss:
        rows.append(("hnsw", dict(hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=128)))
    for backend, kw in rows:
        bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend=backend, **kw))
        bank.add(xb, timestamp=ts, available_at=ts + 1)
        t0 = time.perf_counter()
        bank.search(xq[:1], k=K, as_of=NO_TIME_FILTER)  # builds the index
        build = time.perf_counter() - t0
        tu, ru = _time(lambda: bank.search(xq, k=K, as_of=NO_TIME_FILTER), reps)
        tc, rc = _time(lambda: bank.search(xq, k=K, as_of=as_of), reps)
        label = f"faiss {backend} " + " ".join(f"{a.split('_')[-1]}={b}" for a, b in kw.items())
        print(f"{label:<34}{build:>9.1f}{tu * 1e3:>11.1f}{recall_at_k(ru.indices, truth_u.indices):>8.3f}"
              f"{tc * 1e3:>11.1f}{recall_at_k(rc.indices, truth_c.indices):>8.3f}{t_c / tc:>10.1f}")
        bank = None
    if not with_milvus:
        return
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        print('(Milvus rows skipped: pip install "course-lib[scale]")')
        return
    milvus_rows(m, xb, ts, xq, as_of, truth_u, truth_c, t_c, uri, indexes, ef_list, nprobe_list, reps, reuse)


def _wait_indexed(bank, m: int, timeout: float = 3600.0) -> None:
    """Flush the collection and wait until the server has indexed every entry (a server builds in the background)."""
    client, name = bank._client, bank._name
    client.flush(name)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        info = client.describe_index(name, "key") or {}
        if int(info.get("indexed_rows", 0)) >= m:  # (Milvus 2.3 may keep reporting pending rows once done)
            return
        time.sleep(1.0)
    print(f"  (index not complete after {timeout:.0f} s: {client.describe_index(name, 'key')})")


def milvus_rows(m, xb, ts, xq, as_of, truth_u, truth_c, t_c, uri, indexes, ef_list, nprobe_list, reps,
                reuse: str = "") -> None:
    server = bool(uri)
    tmp = None if server else tempfile.mkdtemp(prefix="bench_milvus_")
    where = "milvus-server" if server else "milvus-lite"
    eligible = np.minimum(K, as_of)  # entry i is visible from time i + 1: a query at t sees t entries
    print(f"\n{where} at M={m:,}: load s, index s (after the load), causal ms (median of {reps}), "
          f"recall@{K}, leaks, short (of {BATCH} queries), engine short (completed exactly)")
    print(f"{'index / search param':<30}{'load s':>8}{'index s':>9}{'unfilt ms':>11}{'causal ms':>11}"
          f"{'recall':>8}{'leaks':>7}{'short':>7}{'eng.short':>10}{'vs exact':>10}")
    for index in indexes:
        name = reuse or f"bench_{index.lower()}_{m}_{os.getpid()}"
        cfg = MemoryConfig(key_dim=D, capacity=m, backend="milvus", milvus_index=index, hnsw_m=16,
                           hnsw_ef_construction=40, milvus_collection=name,
                           uri=uri if server else os.path.join(tmp, f"{index}.db"))
        bank = ExternalMemoryBank(cfg)
        try:
            t0 = time.perf_counter()
            for s in range(0, m if not reuse else 0, 50_000):
                bank.add(xb[s:s + 50_000], timestamp=ts[s:s + 50_000], available_at=ts[s:s + 50_000] + 1)
            load = time.perf_counter() - t0
            t0 = time.perf_counter()
            if server:
                _wait_indexed(bank, m)
            bank.search(xq[:1], k=K, as_of=NO_TIME_FILTER)
            build = time.perf_counter() - t0
            params = ([dict(ef=e) for e in ef_list] if index == "HNSW" else
                      [dict(nprobe=p) for p in nprobe_list] if index == "IVF_FLAT" else [{}])
            for kw in params:
                tu, ru = _time(lambda: bank.search(xq, k=K, as_of=NO_TIME_FILTER, **kw), 1)
                before = dict(bank.stats)
                tc, rc = _time(lambda: bank.search(xq, k=K, as_of=as_of, **kw), reps)
                runs = reps + 1
                avail = rc.metadata("available_at")
                leaks = int((rc.mask & (avail > as_of[:, None])).sum())
                short = int((rc.mask.sum(1) < eligible).sum())
                eng_short = (bank.stats["engine_short"] - before["engine_short"]) / runs
                label = f"{index} " + " ".join(f"{a}={b}" for a, b in kw.items())
                print(f"{label:<30}{load:>8.1f}{build:>9.1f}{tu * 1e3:>11.1f}{tc * 1e3:>11.1f}"
                      f"{recall_at_k(rc.indices, truth_c.indices):>8.3f}{leaks:>7}{short:>7}{eng_short:>10.1f}"
                      f"{t_c / tc:>10.2f}", flush=True)
                load = build = float("nan")
        finally:
            bank.drop()
            bank.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="M = 1e5 only")
    p.add_argument("--no-milvus", action="store_true", help="FAISS rows only")
    p.add_argument("--milvus-1e6", action="store_true", help="also load 1e6 vectors into Milvus Lite")
    p.add_argument("--hnsw-1e6", action="store_true", help="also build HNSW at 1e6 (minutes on 2 cores)")
    p.add_argument("--sizes", default=None, help="comma-separated M values (overrides --quick)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--uri", default="", help="a Milvus server (http://host:port): its rows at every size")
    p.add_argument("--no-faiss", action="store_true", help="skip the FAISS rows (exact and Milvus only)")
    p.add_argument("--indexes", default="FLAT,IVF_FLAT,HNSW", help="Milvus indexes to measure")
    p.add_argument("--ef", default="64,128,256", help="HNSW ef values (Milvus rows)")
    p.add_argument("--nprobe", default="16,64", help="IVF_FLAT nprobe values (Milvus rows)")
    p.add_argument("--reuse", default="", help="measure this existing server collection (filled by an earlier "
                   "run with the same --sizes and one --indexes) instead of loading a new one")
    args = p.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")] if args.sizes else (
        [100_000] if args.quick else [100_000, 1_000_000])
    print(f"# bench_milvus  python {platform.python_version()}  torch {torch.__version__}  faiss {faiss.__version__}"
          f"  cores {os.cpu_count()}  load {os.getloadavg()[0]:.1f}")
    keys, queries = embeddings(max(sizes), BATCH)
    for m in sizes:
        big = m >= 1_000_000
        bench(m, keys, queries, with_hnsw=not big or args.hnsw_1e6,
              with_milvus=not args.no_milvus and (not big or args.milvus_1e6 or bool(args.uri)),
              reps=1 if big and not args.uri else args.reps, uri=args.uri, with_faiss=not args.no_faiss,
              indexes=args.indexes.split(","), ef_list=[int(e) for e in args.ef.split(",")],
              nprobe_list=[int(n) for n in args.nprobe.split(",")], reuse=args.reuse)


if __name__ == "__main__":
    main()
