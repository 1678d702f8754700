"""Lesson 02 exercise checks accept the reference answers and reject the typical mistakes."""

from __future__ import annotations

import numpy as np

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
    assert res.status == "incorrect" and "wrap" in res.message


def test_q3_causal_mask():
    assert ex.q3.evaluate(lambda a, t: a[None, :] <= t[:, None]).passed
    res = ex.q3.evaluate(lambda a, t: a[None, :] < t[:, None])
    assert res.status == "incorrect" and "<=" in res.message
    assert ex.q3.evaluate(lambda a, t: np.ones((len(t), len(a)), bool)).status == "incorrect"
    assert ex.q3.evaluate(lambda a, t: ____).status == "not attempted"
