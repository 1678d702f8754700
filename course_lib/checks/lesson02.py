"""Checks for exercises/02_memory_bank: cosine kNN in numpy, a ring-buffer write, the causal filter, and an
experiment with a memory too small for its history.

Each checker runs the learner's function on its own seeded random data, compares with a reference
computed here, and explains the typical mistakes (forgetting to normalise, sorting ascending, a Python
loop that ignores wrap-around, ``<`` instead of ``<=``) without printing the expected values. The experiment
tasks (q4, q5) rebuild the same seeded study here with the library's memory bank and compare.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..exercise import CheckFailed, Task, call_answer
from ._common import choice_checker, format_options, numeric_checker

__all__ = ["q1", "q2", "q3", "q4", "q5"]


def _as_array(out: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(out)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{what} should be a numpy array, got {type(out).__name__}") from exc


# ----------------------------------------------------------------------------------------------------
# q1: cosine kNN
# ----------------------------------------------------------------------------------------------------
def _ref_knn(keys: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(qn @ kn.T), axis=1, kind="stable")[:, :k]


def _check_knn(func: Any) -> None:
    rng = np.random.default_rng(2)
    keys = rng.normal(size=(200, 8)) * rng.uniform(0.1, 10, size=(200, 1))  # very different lengths
    queries = rng.normal(size=(6, 8)) * 3.0
    k = 5
    out = _as_array(call_answer(func, keys.copy(), queries.copy(), k), "the result")
    if out.shape != (6, k):
        raise CheckFailed(f"expected one row per query and k={k} columns, got shape {out.shape}")
    if not np.issubdtype(out.dtype, np.integer):
        raise CheckFailed("return the positions of the neighbours (integers), not their similarities")
    want = _ref_knn(keys, queries, k)
    if np.array_equal(out, want):
        return
    if np.array_equal(out, want[:, ::-1]) or np.array_equal(np.sort(out, 1), np.sort(want, 1)):
        raise CheckFailed("the right neighbours, but not best first: the most similar key must come first")
    raw = np.argsort(-(queries @ keys.T), axis=1)[:, :k]
    if np.array_equal(out, raw):
        raise CheckFailed("you ranked by raw dot product: long keys win. Only the direction of a vector may count")
    cos = _ref_cosine(keys, queries)
    for scores in (cos, queries @ keys.T):
        worst = np.argsort(scores, axis=1)[:, :k]
        if np.array_equal(np.sort(out, 1), np.sort(worst, 1)):
            raise CheckFailed("these are the *least* similar keys: argsort puts the smallest values first")
    by_column = (queries / np.linalg.norm(queries, axis=0)) @ (keys / np.linalg.norm(keys, axis=0)).T
    if np.array_equal(out, np.argsort(-by_column, axis=1)[:, :k]):
        raise CheckFailed("you scaled each coordinate (each column) instead of each vector (each row): a key's "
                          "length still matters")
    dist = np.linalg.norm(queries[:, None, :] - keys[None, :, :], axis=-1)
    if np.array_equal(out, np.argsort(dist, axis=1)[:, :k]):
        raise CheckFailed("you ranked by distance, which depends on length: two vectors pointing the same way "
                          "can be far apart")
    raise CheckFailed("some rows return the wrong neighbours: rank every key by the angle between it and the query")


def _ref_cosine(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return qn @ kn.T


q1 = Task(
    "lesson02.q1",
    "Write knn(keys, queries, k): for each query, the positions of the k keys pointing in the most similar "
    "direction (a key's length must not matter), most similar first.",
    _check_knn,
    (
        "What makes two vectors of very different lengths comparable by their direction only?",
        "Scale every key and every query to unit length; the product of the query matrix with the transposed "
        "key matrix then holds all cosine similarities at once. Order each row from the largest similarity "
        "to the smallest and keep the first k positions.",
    ),
    "def knn(keys, queries, k):\n"
    "    keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)\n"
    "    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)\n"
    "    scores = queries @ keys.T\n"
    "    return np.argsort(-scores, axis=1)[:, :k]",
)


# ----------------------------------------------------------------------------------------------------
# q2: ring-buffer write
# ----------------------------------------------------------------------------------------------------
def _check_ring(func: Any) -> None:
    cap, d = 7, 3
    buf = np.zeros((cap, d))
    rows_a = np.arange(5 * d, dtype=float).reshape(5, d) + 1
    rows_b = -np.arange(4 * d, dtype=float).reshape(4, d) - 1
    ref = np.zeros((cap, d))
    out = call_answer(func, buf, rows_a, 0)
    if not isinstance(out, (int, np.integer)):
        raise CheckFailed(f"ring_write should return the new write position (an int), got {type(out).__name__}")
    ref[:5] = rows_a
    if not buf.any():
        raise CheckFailed("the buffer you were given is unchanged: write into it in place (a new array built inside "
                          "the function is lost when it returns)")
    if not np.array_equal(buf, ref):
        raise CheckFailed("after writing 5 rows at position 0 into an empty buffer, rows 0..4 should hold them")
    if int(out) != 5:
        raise CheckFailed("the returned position should point just past the last row written")
    try:
        pos = call_answer(func, buf, rows_b, int(out))
    except (ValueError, IndexError) as exc:
        raise CheckFailed("writing 4 rows at position 5 of a buffer of 7 failed: the rows that do not fit before "
                          f"the end must continue at slot 0 ({type(exc).__name__}: {exc})") from exc
    ref[[5, 6, 0, 1]] = rows_b
    if not np.array_equal(buf, ref):
        if np.array_equal(buf[5:7], rows_b[:2]):
            raise CheckFailed("the rows that do not fit at the end must continue at slot 0, overwriting the oldest")
        raise CheckFailed("the second write (4 rows starting at position 5 of 7) landed in the wrong slots")
    if int(pos) != 2:
        raise CheckFailed("after wrapping, the returned position should continue from the start of the buffer, "
                          "not run past its end")


q2 = Task(
    "lesson02.q2",
    "Write ring_write(buffer, rows, pos): store rows in the fixed-size buffer from slot pos on, continuing at slot "
    "0 past the end (the oldest rows are overwritten), in place and without a Python loop; return where the next "
    "write starts.",
    _check_ring,
    (
        "Which arithmetic operation makes a counter wrap around at a fixed size?",
        "Give every row its slot, its offset from pos taken modulo the buffer length, write all rows with one "
        "fancy-index assignment, and return the position just past the last row, modulo the length as well.",
    ),
    "def ring_write(buffer, rows, pos):\n"
    "    slots = (pos + np.arange(len(rows))) % len(buffer)\n"
    "    buffer[slots] = rows\n"
    "    return int((pos + len(rows)) % len(buffer))",
)


# ----------------------------------------------------------------------------------------------------
# q3: causal filter
# ----------------------------------------------------------------------------------------------------
def _check_causal(func: Any) -> None:
    rng = np.random.default_rng(3)
    avail = np.sort(rng.integers(0, 100, size=40))
    as_of = np.array([avail[10], 5, 1000, avail[25] - 1])  # exact tie, early, late, just before
    out = _as_array(call_answer(func, avail.copy(), as_of.copy()), "the mask")
    if out.shape != (len(as_of), len(avail)):
        raise CheckFailed(f"expected a (n_queries, n_entries) = {(len(as_of), len(avail))} mask, got {out.shape}")
    if out.dtype != bool:
        raise CheckFailed(f"return booleans (True = may be retrieved), got dtype {out.dtype}")
    want = avail[None, :] <= as_of[:, None]
    if np.array_equal(out, want):
        return
    if np.array_equal(out, avail[None, :] < as_of[:, None]):
        raise CheckFailed("an entry whose label became known exactly at the query's time is already usable, and "
                          "your mask refuses it")
    if np.array_equal(out, ~want):
        raise CheckFailed("the mask is inverted: True must mean 'the outcome was known by the query's time'")
    if np.array_equal(out, (avail[:, None] <= as_of[None, :]).T) and len(avail) == len(as_of):
        raise CheckFailed("rows and columns are swapped: one row per query, one column per entry")
    raise CheckFailed("some entries are marked wrongly: each query has its own time, so every entry must be "
                      "compared with every query's time, one pair at a time")


q3 = Task(
    "lesson02.q3",
    "Write causal_mask(available_at, as_of): for every query (each at its own time) and every entry, may the "
    "query use the entry, i.e. was the entry's outcome known by the query's time? One boolean per pair.",
    _check_causal,
    (
        "You need every entry compared with every query at once: which numpy feature turns two 1-D arrays "
        "into a matrix of pairs?",
        "Give the entry times a leading axis and the query times a trailing axis, so broadcasting compares "
        "every pair into a (queries, entries) matrix. An outcome that became known exactly at the query's "
        "time is already usable.",
    ),
    "def causal_mask(available_at, as_of):\n"
    "    return available_at[None, :] <= as_of[:, None]",
)


# ----------------------------------------------------------------------------------------------------
# q4, q5: experiment - a FIFO memory far smaller than its history
# ----------------------------------------------------------------------------------------------------
SMALL_CAPACITY = 500
N_QUERIES = 250
K = 10


@lru_cache(maxsize=1)
def _capacity_study() -> dict[str, float]:
    from ..data.loaders import load_sample
    from ..data.windows import prepare_dataset
    from ..memory import ExternalMemoryBank, MemoryConfig, WindowEmbedder, recall_at_k

    splits = prepare_dataset(load_sample("sp500"), seq_len=32)
    w = splits.windows
    keys = WindowEmbedder(n_components=16, lookback=8).fit(splits.train.X).transform(w.X)
    ns, avail = w.end_time_ns(), w.available_at_ns()
    stored, queries = np.arange(len(w) - N_QUERIES), np.arange(len(w) - N_QUERIES, len(w))
    found = {}
    for capacity in (len(stored), SMALL_CAPACITY):
        bank = ExternalMemoryBank(MemoryConfig(key_dim=16, capacity=capacity, eviction="fifo"))
        bank.add(keys[stored], timestamp=ns[stored], available_at=avail[stored], window=stored)
        found[capacity] = bank.search(keys[queries], k=K, as_of=ns[queries]).metadata("window")
    return {"recall": recall_at_k(found[SMALL_CAPACITY], found[len(stored)]),
            "share": SMALL_CAPACITY / len(stored)}


def _capacity_mistakes(got: float) -> str | None:
    if not 0.0 <= got <= 1.0:
        return "recall@k is a share of the exact neighbours that were found: it lies between 0 and 1."
    if abs(got - _capacity_study()["share"]) < 0.005:
        return ("that is the share of the history the small memory holds (capacity / entries offered), not the "
                "recall you measured; search both banks and compare their neighbours.")
    return None


q4 = Task(
    "lesson02.q4",
    f"Experiment: store every S&P 500 window except the last {N_QUERIES} (in time order) in a bank with room for all "
    f"of them and in a FIFO bank of capacity {SMALL_CAPACITY}. Search the last {N_QUERIES} windows (k={K}, each at its "
    "own end time) in both and report recall@10 of the small bank against the full one.",
    numeric_checker(lambda: _capacity_study()["recall"], "recall@10 of the small memory", abs_tol=0.01,
                    mistakes=_capacity_mistakes),
    hint=(
        "A slot number means different windows in the two banks once the small one has wrapped around: compare "
        "neighbours by which window they are, not by slot.",
        "Store a window number as metadata when you add the entries, search both banks with the same queries "
        "and times, read that metadata field from both results, and hand the two arrays to the library's "
        "recall function (small bank first, full bank as the truth).",
    ),
    solution=(
        "stored = np.arange(len(w) - 250)\nqueries = np.arange(len(w) - 250, len(w))\nfound = {}\n"
        "for capacity in (len(stored), 500):\n"
        "    b = cl.ExternalMemoryBank(cl.MemoryConfig(key_dim=16, capacity=capacity, eviction='fifo'))\n"
        "    b.add(keys[stored], timestamp=ns[stored], available_at=avail[stored], window=stored)\n"
        "    found[capacity] = b.search(keys[queries], k=10, as_of=ns[queries]).metadata('window')\n"
        "small_recall = cl.recall_at_k(found[500], found[len(stored)])"
    ),
)

_CAPACITY_OPTIONS = {
    "a": "recall is about that share (within 20% of it): the true neighbours are spread evenly over the past",
    "b": "recall is clearly higher than that share: the true neighbours of recent windows cluster in the recent past",
    "c": "recall is clearly lower than that share: the small memory keeps the least useful part of the past",
}


def _capacity_truth() -> str:
    study = _capacity_study()
    ratio = study["recall"] / study["share"]
    return "a" if 0.8 <= ratio <= 1.2 else ("b" if ratio > 1.2 else "c")


q5 = Task(
    "lesson02.q5",
    "Interpret: compare the recall you measured with the share of the history the small memory holds "
    "(its capacity divided by the number of windows offered to it). Which holds? " + format_options(_CAPACITY_OPTIONS),
    choice_checker(_CAPACITY_OPTIONS, _capacity_truth, "what the recall says about where neighbours live"),
    hint=(
        "If a query's neighbours were drawn from the whole past at random, what recall would a memory holding "
        "the newest part of it get?",
        "Compute the share (capacity over windows offered) and divide your recall by it: a ratio near one means "
        "the neighbours are spread evenly in time, well above one means they crowd into the recent past that "
        "FIFO keeps, well below one means they avoid it.",
    ),
    solution=(
        "share = 500 / len(stored)\nratio = small_recall / share\n"
        "answer = 'a' if 0.8 <= ratio <= 1.2 else ('b' if ratio > 1.2 else 'c')"
    ),
)
