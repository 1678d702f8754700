"""Lesson 02 exercise checks accept the reference answers and reject the typical mistakes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from course_lib import ____
from course_lib.checks import lesson02 as ex


def _knn(keys, queries, k):
    keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(queries @ keys.T), axis=1)[:, :k]


def _ring(buffer, rows, pos):
    slots = (pos + np.arange(len(rows))) % len(buffer)
    buffer[slots] = rows
    return int((pos + len(rows)) % len(buffer))


def _ring_no_wrap(buffer, rows, pos):
    n = min(len(rows), len(buffer) - pos)
    buffer[pos:pos + n] = rows[:n]
    return pos + len(rows)


def test_q1_knn():
    assert ex.q1.evaluate(_knn).passed
    assert ex.q1.evaluate(lambda K, Q, k: np.argsort(-(Q @ K.T), 1)[:, :k]).status == "incorrect"
    assert ex.q1.evaluate(lambda K, Q, k: _knn(K, Q, k)[:, ::-1]).status == "incorrect"
    assert ex.q1.evaluate(____).status == "not attempted"


def test_q2_ring_write():
    assert ex.q2.evaluate(_ring).passed
    res = ex.q2.evaluate(_ring_no_wrap)
    assert res.status == "incorrect" and "continue at slot 0" in res.message


def _cos(K, Q):
    return (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (K / np.linalg.norm(K, axis=1, keepdims=True)).T


def _ring_slice(buffer, rows, pos):  # the usual first try: a slice, which cannot wrap
    buffer[pos:pos + len(rows)] = rows
    return (pos + len(rows)) % len(buffer)


def _ring_copy(buffer, rows, pos):  # builds a new array: the caller's buffer never changes
    buffer = buffer.copy()
    buffer[(pos + np.arange(len(rows))) % len(buffer)] = rows
    return int((pos + len(rows)) % len(buffer))


@pytest.mark.parametrize("task, answer, words", [
    (ex.q1, lambda K, Q, k: np.argsort(_cos(K, Q), axis=1)[:, :k], "least"),  # ascending, on cosine
    (ex.q1, lambda K, Q, k: np.argsort(-(Q @ K.T), 1)[:, :k], "raw dot product"),
    (ex.q1, lambda K, Q, k: np.argsort(_cos(K, Q), axis=1)[:, -k:], "best first"),
    (ex.q1, lambda K, Q, k: np.argsort(-(Q / np.linalg.norm(Q, axis=0)) @ (K / np.linalg.norm(K, axis=0)).T,
                                       axis=1)[:, :k], "each vector"),
    (ex.q1, lambda K, Q, k: np.sort(_cos(K, Q), axis=1)[:, ::-1][:, :k], "positions"),
    (ex.q1, lambda K, Q, k: np.argsort(np.linalg.norm(Q[:, None] - K[None], axis=-1), axis=1)[:, :k], "distance"),
    (ex.q2, _ring_slice, "continue at slot 0"),
    (ex.q2, _ring_copy, "in place"),
    (ex.q3, lambda a, t: a[None, :] < t[:, None], "exactly at the query's time"),
    (ex.q3, lambda a, t: a[None, :] > t[:, None], "inverted"),
])
def test_typical_mistakes_get_their_own_message_without_the_code(task, answer, words):
    res = task.evaluate(answer)
    assert res.status == "incorrect", res
    assert words in res.message, res.message
    assert not re.search(r"<=|\[None|% ?capacity|\|q\||q\.k", res.message), f"gives the code away: {res.message}"


def test_q3_causal_mask():
    assert ex.q3.evaluate(lambda a, t: a[None, :] <= t[:, None]).passed
    res = ex.q3.evaluate(lambda a, t: a[None, :] < t[:, None])
    assert res.status == "incorrect" and "exactly at the query's time" in res.message
    assert ex.q3.evaluate(lambda a, t: np.ones((len(t), len(a)), bool)).status == "incorrect"
    assert ex.q3.evaluate(lambda a, t: ____).status == "not attempted"


def _small_memory_recall():
    """The experiment of q4, written independently of the checker (window ids as metadata)."""
    import course_lib as cl

    splits = cl.prepare_dataset(cl.load_sample("sp500"), seq_len=32)
    w = splits.windows
    keys = cl.WindowEmbedder(n_components=16, lookback=8).fit(splits.train.X).transform(w.X)
    ns, avail = w.end_time_ns(), w.available_at_ns()
    stored, queries = np.arange(len(w) - 250), np.arange(len(w) - 250, len(w))
    found = {}
    for capacity in (len(stored), 500):
        bank = cl.ExternalMemoryBank(cl.MemoryConfig(key_dim=16, capacity=capacity, eviction="fifo"))
        bank.add(keys[stored], timestamp=ns[stored], available_at=avail[stored], window=stored)
        found[capacity] = bank.search(keys[queries], k=10, as_of=ns[queries]).metadata("window")
    slots = {}
    for capacity in (len(stored), 500):  # the classic slip: comparing slot numbers across the two banks
        bank = cl.ExternalMemoryBank(cl.MemoryConfig(key_dim=16, capacity=capacity, eviction="fifo"))
        bank.add(keys[stored], timestamp=ns[stored], available_at=avail[stored])
        slots[capacity] = bank.search(keys[queries], k=10, as_of=ns[queries]).indices
    return (cl.recall_at_k(found[500], found[len(stored)]), cl.recall_at_k(slots[500], slots[len(stored)]),
            500 / len(stored))


def test_q4_q5_experiment_truth_is_recomputed():
    recall, by_slot, share = _small_memory_recall()
    assert ex.q4.evaluate(recall).passed
    assert ex.q4.evaluate(np.float64(recall + 0.005)).passed  # tolerant
    assert ex.q4.evaluate(by_slot).status == "incorrect"  # slot numbers mean different windows in the two banks
    assert "share of the history" in ex.q4.evaluate(share).message
    assert "between 0 and 1" in ex.q4.evaluate(1.5).message
    assert ex.q4.evaluate(____).status == "not attempted"
    ratio = recall / share
    right = "a" if 0.8 <= ratio <= 1.2 else ("b" if ratio > 1.2 else "c")
    assert ex.q5.evaluate(right).passed
    assert all(ex.q5.evaluate(x).status == "incorrect" for x in "abc" if x != right)
    for letter in "abc":  # a wrong answer never names the right letter
        assert f"({right})" not in ex.q5.evaluate(letter).message
