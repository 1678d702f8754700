"""Memory bank benchmark: add throughput, search latency per backend, recall of approximate search.

Prints tables (medians); never asserts on time. ``--quick`` is a smoke run (small sizes, a few seconds).

    python benchmarks/bench_memory.py            # full run (several minutes on 2 CPU cores)
    python benchmarks/bench_memory.py --quick
    python benchmarks/bench_memory.py --sections add     # add throughput only (every eviction policy)
    python benchmarks/bench_memory.py --sections single  # one causal query per call (the per-bar loops)

Data: keys are PCA embeddings (d=64) of windows of the bundled S&P 500 data (course_lib.WindowEmbedder,
fitted on the training period). The data has ~4,900 windows, so the larger memories are made of those
embeddings plus small Gaussian jitter (10% of the typical nearest-neighbour distance); queries are jittered
test-period windows. Latencies of exact kernels do not depend on the data; recall of IVF/HNSW does.
"""

# ruff: noqa: B023, I001  (timing lambdas are called at once, in the loop that defines them; faiss after course_lib)
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import course_lib as cl  # first: it sets faiss's OpenMP wait policy before faiss loads (see memory/backends)
import faiss
from course_lib.memory import NO_TIME_FILTER, ExternalMemoryBank, MemoryConfig, WindowEmbedder, recall_at_k
from course_lib.memory.backends import faiss_blas_threshold

K, D = 32, 64
SECTIONS = ("add", "search", "single", "ann", "int8")


def timeit(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def embeddings(m_max: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    splits = cl.prepare_dataset(cl.load_sample("sp500"), seq_len=32)
    emb = WindowEmbedder(n_components=D, lookback=16).fit(splits.train.X)
    base = emb.transform(splits.windows.X if hasattr(splits, "windows") else splits.train.X)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    test = emb.transform(splits.test.X)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    sim = base[:500] @ base.T
    sim[np.arange(500), np.arange(500)] = -1
    nn_dist = float(np.median(np.sqrt(np.maximum(0, 2 - 2 * sim.max(1)))))
    noise = 0.1 * nn_dist / np.sqrt(D)
    keys = base[rng.integers(0, len(base), m_max)] + rng.normal(0, noise, (m_max, D))
    queries = test[rng.integers(0, len(test), n_queries)] + rng.normal(0, noise, (n_queries, D))
    return keys.astype(np.float32), queries.astype(np.float32)


# ---------------------------------------------------------------- raw kernels (the yardsticks)
def raw_numpy(xb, xq, k, chunk_mb=256):
    step = max(1, (chunk_mb << 20) // (4 * len(xb)))
    for s in range(0, len(xq), step):
        sc = xq[s:s + step] @ xb.T
        np.argpartition(sc, sc.shape[1] - k, axis=1)[:, -k:]


def raw_torch(tb, tq, k, chunk_mb=256):
    step = max(1, (chunk_mb << 20) // (4 * len(tb)))
    for s in range(0, len(tq), step):
        torch.topk(tq[s:s + step] @ tb.T, k, dim=1)


def raw_faiss(xb, xq, k):
    """faiss's brute-force kernel on its BLAS path (the setting the bank uses)."""
    with faiss_blas_threshold():
        faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


class ReferenceRebuildMemory:
    """The reference chapter's add: a Python loop per row, then the whole index rebuilt (for comparison)."""

    def __init__(self, size, dim):
        self.keys = np.zeros((size, dim), np.float32)
        self.size, self.pos, self.cur = size, 0, 0
        self.index = faiss.IndexFlatIP(dim)

    def add(self, keys):
        keys = keys / (np.linalg.norm(keys, axis=1, keepdims=True) + 1e-8)
        for i in range(len(keys)):
            p = self.pos % self.size
            self.keys[p] = keys[i]
            self.pos += 1
            self.cur = min(self.cur + 1, self.size)
        self.index.reset()
        self.index.add(self.keys[: self.cur])


def bench_add(keys: np.ndarray, m: int) -> None:
    print(f"\n## add throughput, M={m:,}, d={D} (microseconds per vector, whole fill from empty)")
    print(f"{'design':<44}{'batch':>8}{'us/vector':>12}{'total s':>10}")
    ts = np.arange(m, dtype=np.int64)
    keys = keys[:m]
    for batch in (1, 256, 4096):
        n_rows = min(m, 20_000) if batch == 1 else m
        bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m))
        t0 = time.perf_counter()
        for s in range(0, n_rows, batch):
            bank.add(keys[s:s + batch], timestamp=ts[s:s + batch], available_at=ts[s:s + batch] + 1)
        dt = time.perf_counter() - t0
        print(f"{'ExternalMemoryBank.add (ring buffer)':<44}{batch:>8}{dt / n_rows * 1e6:>12.2f}{dt:>10.2f}")
    for batch in (256,):
        ref = ReferenceRebuildMemory(m, D)
        n_rows = m
        t0 = time.perf_counter()
        for s in range(0, n_rows, batch):
            ref.add(keys[s:s + batch])
        dt = time.perf_counter() - t0
        print(f"{'reference: loop per row + rebuild per add':<44}{batch:>8}{dt / n_rows * 1e6:>12.2f}{dt:>10.2f}")
    bench_evicting_add(keys, m)


def bench_evicting_add(keys: np.ndarray, m: int) -> None:
    """Adds into a *full* memory, so every row evicts one, for each eviction policy (lru and importance
    choose victims in blocks: one O(M) selection per capacity//64 rows, see course_lib/memory/eviction)."""
    print(f"\n## add throughput into a full memory (each row evicts one), M={m:,}, d={D} (microseconds per vector)")
    print(f"{'eviction':<12}{'batch':>8}{'us/vector':>12}{'rows':>10}{'total s':>10}")
    rng = np.random.default_rng(0)
    ts = np.arange(2 * m, dtype=np.int64)
    prio = np.abs(rng.normal(size=2 * m)).astype(np.float32)  # e.g. |future return|
    new = keys[:m][::-1].copy()
    for policy in ("fifo", "lru", "importance"):
        for batch in (1, 256, 4096):
            bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, eviction=policy))
            bank.add(keys[:m], timestamp=ts[:m], available_at=ts[:m] + 1, importance=prio[:m])
            bank.search(keys[:64], k=K, as_of=NO_TIME_FILTER)  # some entries retrieved (drives lru)
            n_rows = min(m, 20_000) if batch == 1 else m
            t0 = time.perf_counter()
            for s in range(0, n_rows, batch):
                e = min(s + batch, n_rows)
                bank.add(new[s:e], timestamp=ts[m + s:m + e], available_at=ts[m + s:m + e] + 1,
                         importance=prio[m + s:m + e])
            dt = time.perf_counter() - t0
            print(f"{policy:<12}{batch:>8}{dt / n_rows * 1e6:>12.2f}{n_rows:>10,}{dt:>10.2f}")


def bench_search(keys, queries, sizes, batches, ann_params, with_hnsw: bool = True) -> dict:
    print(f"\n## search latency, k={K}, d={D}, ms per batch (median); threads torch={torch.get_num_threads()} "
          f"faiss={faiss.omp_get_max_threads()}")
    cols = ["raw np", "raw torch", "raw faiss", "faiss IP", "bank np", "bank torch", "bank faiss", "bank auto", "ivf", "hnsw"]
    print(f"{'M':>9}{'batch':>7}" + "".join(f"{c:>12}" for c in cols) + f"{'auto/raw':>10}{'IP/auto':>9}")
    recalls = {}
    for m in sizes:
        xb = np.ascontiguousarray(keys[:m])
        xb_unit = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        tb = torch.from_numpy(xb_unit)
        flat = faiss.IndexFlatIP(D)
        flat.add(xb_unit)
        banks = {}
        for name in ("numpy", "torch", "faiss", "auto", "ivf", "hnsw"):
            if name == "hnsw" and not with_hnsw:
                continue
            cfg = MemoryConfig(key_dim=D, capacity=m, backend=name, **ann_params.get(name, {}))
            banks[name] = ExternalMemoryBank(cfg)
            banks[name].add(xb)
        t0 = time.perf_counter()
        banks["ivf"].search(queries[:1], k=K, as_of=NO_TIME_FILTER)
        t_ivf = time.perf_counter() - t0
        t_hnsw = float("nan")
        if with_hnsw:
            t0 = time.perf_counter()
            banks["hnsw"].search(queries[:1], k=K, as_of=NO_TIME_FILTER)
            t_hnsw = time.perf_counter() - t0
        print(f"{'':>16}(index build at M={m:,}: ivf {t_ivf:.1f} s, hnsw {t_hnsw:.1f} s; hnsw at 1e6: see below)")
        for b in batches:
            xq = np.ascontiguousarray(queries[:b])
            xq_unit = xq / np.linalg.norm(xq, axis=1, keepdims=True)
            tq = torch.from_numpy(xq_unit)
            big = m * b >= 1_000_000 * 4096
            reps = 1 if m * b >= 2e8 else 3 if m * b >= 1e7 else 7
            # at M=1e6 x 4096 the slow raw kernels run on 1024 queries and are scaled x4 (they are linear in
            # the batch: both process queries in fixed-size chunks); marked with *
            sub = 1024 if big else b
            scale = b / sub
            row = {
                "raw np": timeit(lambda: raw_numpy(xb_unit, xq_unit[:sub], K), reps) * scale,
                "raw torch": timeit(lambda: raw_torch(tb, tq[:sub], K), reps) * scale,
                "raw faiss": timeit(lambda: raw_faiss(xb_unit, xq_unit, K), reps),
                "faiss IP": timeit(lambda: flat.search(xq_unit, K), reps),
                "bank np": timeit(lambda: banks["numpy"].search(xq[:sub], k=K, as_of=NO_TIME_FILTER), reps) * scale,
            }
            row["hnsw"] = float("nan")
            for name in ("torch", "faiss", "auto", "ivf", "hnsw"):
                if name not in banks:
                    continue
                row[f"bank {name}" if name in ("torch", "faiss", "auto") else name] = timeit(
                    lambda name=name: banks[name].search(xq, k=K, as_of=NO_TIME_FILTER), reps)
            best_raw = min(row["raw np"], row["raw torch"], row["raw faiss"])
            mark = "*" if big else " "
            cells = "".join(f"{row[c] * 1e3:>11.1f}{mark if c in ('raw np', 'raw torch', 'bank np') else ' '}"
                            for c in cols)
            print(f"{m:>9,}{b:>7}{cells}{row['bank auto'] / best_raw:>10.2f}{row['faiss IP'] / row['bank auto']:>9.1f}")
            if b == batches[min(1, len(batches) - 1)]:
                exact = banks["torch"].search(xq, k=K, as_of=NO_TIME_FILTER).indices
                recalls[m] = {name: recall_at_k(banks[name].search(xq, k=K, as_of=NO_TIME_FILTER).indices, exact)
                              for name in ("ivf", "hnsw") if name in banks}
                print(f"{'':>16}recall@{K} at batch {b}: " + ", ".join(f"{n} {r:.3f}" for n, r in recalls[m].items()))
        banks.clear()
    return recalls


def raw_one_query_batch_style(xb, q, k):
    """One query through the batch kernel's numpy calls: normalise, (1, d) x (d, M), argpartition per row,
    sort of the k (what the bank ran for every batch size until a one-query path was added)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = q @ xb.T
    part = np.argpartition(s, s.shape[1] - k, axis=1)[:, -k:]
    top = np.take_along_axis(s, part, axis=1)
    return np.take_along_axis(part, np.argsort(-top, axis=1), axis=1)


def raw_one_query(xb, q, k):
    """The leanest numpy answer for one query: normalise, matrix-vector product, argpartition, sort of k."""
    q = q[0] / np.linalg.norm(q[0])
    s = xb @ q
    part = np.argpartition(s, len(s) - k)[-k:]
    return part[np.argsort(-s[part])]


def bench_single_query(keys, queries, m: int, reps: int) -> None:
    """A per-bar loop's search: one query, ``as_of`` = now, over a memory filled in time order whose last
    10% of labels are still pending. Every variant runs once per round, in turn, on the same query, so all
    share the machine's state (caches, load); medians over the rounds."""
    print(f"\n## one causal query per call, M={m:,}, k={K}, d={D}: µs per call (median of {reps} rounds, "
          "run in turn)")
    xb = np.ascontiguousarray(keys[:m])
    t = np.arange(m, dtype=np.int64) * 60_000_000_000  # one bar a minute
    avail = t + 60_000_000_000 * (m // 10)  # labels known m/10 bars later: the last 10% still pending
    fr = np.random.default_rng(0).normal(size=m)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="auto"))
    bank.add(xb, timestamp=t, available_at=avail, future_return=fr)
    shuffled = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="auto"))  # same entries, no time order
    perm = np.random.default_rng(1).permutation(m)
    shuffled.add(xb[perm], timestamp=t[perm], available_at=avail[perm], future_return=fr[perm])
    xb_unit = bank.keys
    now = int(t[-1])
    variants = {
        "raw numpy, batch-style calls": lambda q: raw_one_query_batch_style(xb_unit, q, K),
        "raw numpy, 1-d calls": lambda q: raw_one_query(xb_unit, q, K),
        "bank.search, as_of (time-ordered)": lambda q: bank.search(q, k=K, as_of=now),
        "bank.search, as_of (out of order)": lambda q: shuffled.search(q, k=K, as_of=now),
        "bank.search, NO_TIME_FILTER": lambda q: bank.search(q, k=K, as_of=NO_TIME_FILTER),
        "bank.search, torch query, as_of": lambda q: bank.search(torch.from_numpy(q), k=K, as_of=now),
    }
    times = {name: [] for name in variants}
    for r in range(reps + 200):
        q = np.ascontiguousarray(queries[r % len(queries)][None])
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn(q)
            if r >= 200:  # the first rounds warm up
                times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(v)) for name, v in times.items()}
    base, lean = med["raw numpy, batch-style calls"], med["raw numpy, 1-d calls"]
    print(f"{'':<38}{'µs':>8}{'/ batch-style raw':>19}{'/ 1-d raw':>11}")
    for name, v in med.items():
        print(f"{name:<38}{v * 1e6:>8.1f}{v / base:>19.2f}{v / lean:>11.2f}")


def bench_ann_settings(keys, queries, m, batch, nprobes, efs) -> None:
    print(f"\n## approximate search at M={m:,}, batch {batch}: recall@{K} vs exact, speed-up vs bank auto")
    xb = keys[:m]
    xq = queries[:batch]
    ts = np.arange(m, dtype=np.int64)  # entry i is resolved at time i + 1 (for the causal rows below)
    as_of = np.random.default_rng(1).integers(m // 10, m, batch)  # a walk-forward-like mix of query times
    exact_bank = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="auto"))
    exact_bank.add(xb, timestamp=ts, available_at=ts + 1)
    t_exact = timeit(lambda: exact_bank.search(xq, k=K, as_of=NO_TIME_FILTER), 1)
    exact = exact_bank.search(xq, k=K, as_of=NO_TIME_FILTER).indices
    print(f"{'setting':<28}{'recall@32':>10}{'ms':>10}{'speed-up':>10}")
    print(f"{'exact (auto)':<28}{1.0:>10.3f}{t_exact * 1e3:>10.1f}{1.0:>10.1f}")
    t_exact_causal = timeit(lambda: exact_bank.search(xq, k=K, as_of=as_of), 1)
    exact_causal = exact_bank.search(xq, k=K, as_of=as_of).indices
    exact_bank = None

    def causal_row(bank, label):
        t = timeit(lambda: bank.search(xq, k=K, as_of=as_of), 1)
        r = recall_at_k(bank.search(xq, k=K, as_of=as_of).indices, exact_causal)
        print(f"{label:<28}{r:>10.3f}{t * 1e3:>10.1f}{t_exact_causal / t:>10.1f}   (as_of mixed, exact "
              f"{t_exact_causal * 1e3:.0f} ms)")

    ivf = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="ivf"))
    ivf.add(xb, timestamp=ts, available_at=ts + 1)
    for npb in nprobes:
        ivf.config.ivf_nprobe = npb
        ivf._kernels.ann.nprobe = npb
        t = timeit(lambda: ivf.search(xq, k=K, as_of=NO_TIME_FILTER), 2)
        r = recall_at_k(ivf.search(xq, k=K, as_of=NO_TIME_FILTER).indices, exact)
        print(f"{f'ivf nlist={ivf._kernels.ann.index.nlist} nprobe={npb}':<28}{r:>10.3f}{t * 1e3:>10.1f}{t_exact / t:>10.1f}")
    causal_row(ivf, f"ivf nprobe={nprobes[-1]}, causal")
    ivf = None
    hnsw = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="hnsw", hnsw_m=16,
                                           hnsw_ef_construction=40))
    hnsw.add(xb, timestamp=ts, available_at=ts + 1)
    t0 = time.perf_counter()
    hnsw.search(xq[:1], k=K, as_of=NO_TIME_FILTER)
    print(f"{'(hnsw M=16 build, s)':<28}{'':>10}{time.perf_counter() - t0:>10.1f}")
    for ef in efs:
        hnsw._kernels.ann.efs = ef
        t = timeit(lambda: hnsw.search(xq, k=K, as_of=NO_TIME_FILTER), 2)
        r = recall_at_k(hnsw.search(xq, k=K, as_of=NO_TIME_FILTER).indices, exact)
        print(f"{f'hnsw M=16 efSearch={ef}':<28}{r:>10.3f}{t * 1e3:>10.1f}{t_exact / t:>10.1f}")
    causal_row(hnsw, f"hnsw efSearch={efs[-1]}, causal")


def bench_int8(keys, queries) -> None:
    print(f"\n## tiered storage: recall@{K} of int8 (warm tier) vs float32 keys")
    for m in (10_000, 100_000):
        if m <= len(keys):
            r = cl.int8_recall(keys[:m], queries[:256], K)
            print(f"M={m:>7,}  recall@{K} int8 = {r:.4f}   (RAM per key: float32 {D * 4} B, int8 {D + 4} B)")
    m = min(100_000, len(keys))
    tiers = cl.TieredMemory(cl.TierConfig(key_dim=D, hot_capacity=m // 10, warm_capacity=m // 2, cold_capacity=m))
    ids = tiers.add(keys[:m])
    exact = ExternalMemoryBank(MemoryConfig(key_dim=D, capacity=m, backend="numpy"))
    exact.add(keys[:m])
    truth = ids[exact.search(queries[:256], k=K, as_of=NO_TIME_FILTER).indices]
    t = timeit(lambda: tiers.search(queries[:256], k=K, as_of=NO_TIME_FILTER), 3)
    r = recall_at_k(tiers.search(queries[:256], k=K, as_of=NO_TIME_FILTER)["ids"], truth)
    sizes, nbytes = tiers.tier_sizes(), tiers.nbytes()
    print(f"TieredMemory M={m:,} (hot {sizes['hot']:,} / warm int8 {sizes['warm']:,} / cold mmap {sizes['cold']:,}): "
          f"recall@{K} = {r:.4f}, {t * 1e3:.1f} ms per batch of 256; RAM {(nbytes['hot'] + nbytes['warm']) / 2**20:.1f} "
          f"MiB + {nbytes['cold'] / 2**20:.1f} MiB on disk (all float32 in RAM: {m * D * 4 / 2**20:.1f} MiB)")
    tiers.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every section")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    args = p.parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    print(f"# bench_memory  python {platform.python_version()}  torch {torch.__version__}  faiss {faiss.__version__}"
          f"  numpy {np.__version__}  cores {torch.get_num_threads()}")
    if args.quick:
        sizes, batches, m_add, m_ann = [2_000, 10_000], [1, 64, 512], 10_000, 10_000
    else:
        sizes, batches, m_add, m_ann = [10_000, 100_000, 1_000_000], [1, 256, 4096], 100_000, 1_000_000
    need = max(sizes) if set(sections) - {"add"} else m_add
    keys, queries = embeddings(need, max(batches))
    if "add" in sections:
        bench_add(keys, m_add)
    if "search" in sections:
        ann = {"hnsw": {"hnsw_m": 16, "hnsw_ef_construction": 40, "hnsw_ef_search": 64}, "ivf": {"ivf_nprobe": 8}}
        search_sizes = sizes if args.quick else sizes[:2]  # the 1e6 row is measured below, with ANN settings
        bench_search(keys, queries, search_sizes, batches, ann)
        if not args.quick:
            bench_search(keys, queries, sizes[2:], batches, ann, with_hnsw=False)
    if "single" in sections:
        bench_single_query(keys, queries, 2_000 if args.quick else 10_000, 500 if args.quick else 3000)
    if "ann" in sections:
        bench_ann_settings(keys, queries, m_ann, 256, nprobes=(4, 8, 16), efs=(32, 64, 128))
    if "int8" in sections:
        bench_int8(keys, queries)


if __name__ == "__main__":
    main()
