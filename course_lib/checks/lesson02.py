"""Checks for exercises/02_memory_bank: cosine kNN in numpy, a ring-buffer write, the causal filter.

Each checker runs the learner's function on its own seeded random data, compares with a reference
computed here, and explains the typical mistakes (forgetting to normalise, sorting ascending, a Python
loop that ignores wrap-around, ``<`` instead of ``<=``) without printing the expected values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exercise import CheckFailed, Task, call_answer

__all__ = ["q1", "q2", "q3"]


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
    want = _ref_knn(keys, queries, k)
    if np.array_equal(out, want):
        return
    if np.array_equal(out, want[:, ::-1]) or np.array_equal(np.sort(out, 1), np.sort(want, 1)):
        raise CheckFailed("the right neighbours, but not best first: sort by similarity, largest first")
    raw = np.argsort(-(queries @ keys.T), axis=1)[:, :k]
    if np.array_equal(out, raw):
        raise CheckFailed("you ranked by raw dot product: long keys win. Normalise keys and queries to unit length")
    worst = np.argsort(queries @ keys.T, axis=1)[:, :k]
    if np.array_equal(np.sort(out, 1), np.sort(worst, 1)):
        raise CheckFailed("these are the *least* similar keys: argsort sorts ascending")
    raise CheckFailed("some rows return the wrong neighbours; compare cosine similarity = q.k / (|q| |k|)")


q1 = Task(
    "lesson02.q1",
    "Write knn(keys, queries, k) -> (q, k) indices of the k most cosine-similar keys, best first.",
    _check_knn,
    "Divide each row by its L2 norm (np.linalg.norm(..., axis=1, keepdims=True)); then queries @ keys.T "
    "are cosine similarities. np.argsort(-scores, axis=1)[:, :k] gives the best k, best first.",
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
    if not np.array_equal(buf, ref):
        raise CheckFailed("after writing 5 rows at position 0 into an empty buffer, rows 0..4 should hold them")
    if int(out) != 5:
        raise CheckFailed("the returned position should point just past the last row written")
    pos = call_answer(func, buf, rows_b, int(out))
    ref[[5, 6, 0, 1]] = rows_b
    if not np.array_equal(buf, ref):
        if np.array_equal(buf[5:7], rows_b[:2]):
            raise CheckFailed("the rows that do not fit at the end must wrap around to slot 0 (use % capacity)")
        raise CheckFailed("the second write (4 rows starting at position 5 of 7) landed in the wrong slots")
    if int(pos) != 2:
        raise CheckFailed("after wrapping, the position should continue from the start (modulo the capacity)")


q2 = Task(
    "lesson02.q2",
    "Write ring_write(buffer, rows, pos) that writes rows into buffer starting at pos, wrapping around, "
    "in place and without a Python loop, and returns the next write position.",
    _check_ring,
    "The slots are (pos + np.arange(len(rows))) % capacity; a single fancy-index assignment writes them all.",
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
        raise CheckFailed("an entry whose label became known exactly at as_of is already usable: use <=")
    if np.array_equal(out, ~want):
        raise CheckFailed("the mask is inverted: True must mean 'known by as_of' (available_at <= as_of)")
    raise CheckFailed("some entries are marked wrongly: each query has its own as_of, so compare every entry "
                      "with every query's time (available_at[None, :] against as_of[:, None])")


q3 = Task(
    "lesson02.q3",
    "Write causal_mask(available_at, as_of) -> (q, n) bool: True where entry j may be retrieved by query i.",
    _check_causal,
    "Broadcasting: available_at[None, :] has shape (1, n), as_of[:, None] has shape (q, 1).",
    "def causal_mask(available_at, as_of):\n"
    "    return available_at[None, :] <= as_of[:, None]",
)
