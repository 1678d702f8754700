"""The lesson 09 checks accept correct answers, reject the typical mistakes, and never reveal the numbers."""

from __future__ import annotations

import re

import numpy as np
from scipy import stats

import course_lib as cl
from course_lib import ____
from course_lib.checks import lesson09 as ex


def _right_interval(a, b):
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def test_q1_reading_of_the_seed_table():
    table = ex.SEED_ACCURACY
    a, b = cl.t_interval(table["setting"]), cl.t_interval(table["default"])
    assert a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]  # the arms' intervals overlap...
    paired = cl.paired_seed_interval(table["setting"], table["default"])
    assert paired["ci_low"] > 0  # ...while the paired one excludes zero: the trap is real
    assert ex.q1.evaluate("b").status == "correct" and ex.q1.evaluate(" B) ").status == "correct"
    assert "seed by seed" in ex.q1.evaluate("a").message  # the usual mistake gets its own explanation
    for wrong in "cd":
        res = ex.q1.evaluate(wrong)
        assert res.status == "incorrect" and not re.search(r"\d\.\d", res.message)
    assert ex.q1.evaluate("e").status == "incorrect"
    assert ex.q1.evaluate(____).status == "not attempted"


def test_q2_recency_weights():
    def right(s, age, t, h):
        w = np.exp((s - s.max()) / t) * 0.5 ** (age / h)
        return w / w.sum()

    def efold(s, age, t, h):
        w = np.exp((s - s.max()) / t) * np.exp(-age / h)
        return w / w.sum()

    def unnormalised(s, age, t, h):
        return np.exp((s - s.max()) / t) * 0.5 ** (age / h)

    def no_decay(s, age, t, h):
        w = np.exp((s - s.max()) / t)
        return w / w.sum()

    assert ex.q2.evaluate(right).status == "correct"
    assert "half-life" in ex.q2.evaluate(efold).message
    assert "sum to one" in ex.q2.evaluate(unnormalised).message
    assert "no decay" in ex.q2.evaluate(no_decay).message
    assert ex.q2.evaluate(lambda s, a, t, h: ____).status == "not attempted"


def test_q2_messages_give_no_formula():
    formula = re.compile(r"1\.96|0\.5 \*\*|softmax\(|sqrt\(|ddof=|\(setting - default\)|n - 1")
    wrong = [
        (ex.q2, lambda s, age, t, h: (lambda w: w / w.sum())(np.exp((s - s.max()) / t) * np.exp(-age / h))),
        (ex.q2, lambda s, age, t, h: (lambda w: w / w.sum())(np.exp(s / (2 * t)) * 0.5 ** (age / h))),
    ]
    for task, answer in wrong:
        res = task.evaluate(answer)
        assert res.status == "incorrect" and not formula.search(res.message), res.message


def test_q3_staleness_experiment():
    s = cl.staleness_study(n_bars=1500, seeds=(0, 1, 2), half_lives=(50,), control=False, progress=False)["summary"]
    row = s[(s.arm == "half-life 50") & (s.subset == "onset")].iloc[0]
    right = {"above": "a", "covers": "b", "below": "c"}[cl.interval_side(row["ci_low"], row["ci_high"])]
    assert ex.q3.evaluate(right).passed
    for wrong in "abc":
        if wrong != right:
            res = ex.q3.evaluate(wrong)
            assert res.status == "incorrect" and not re.search(r"\d\.\d", res.message)
    if right == "b" and row["diff"] > 0:  # the tempting reading of a positive mean gets its own explanation
        assert "both ends of its interval" in ex.q3.evaluate("a").message
    assert ex.q3.evaluate(row["diff"]).status == "incorrect"  # a number is not a reading
    assert ex.q3.evaluate(____).status == "not attempted"


def test_q4_cold_start_interpretation():
    truth = ex._cold_truth()
    assert ex.q4.evaluate(truth).passed
    assert ex.q4.evaluate(f" {truth.upper()}) ").passed
    for other in {"a", "b", "c", "d"} - {truth}:
        assert ex.q4.evaluate(other).status == "incorrect"
    assert "letters" in ex.q4.evaluate("e").message
    assert ex.q4.evaluate(____).status == "not attempted"


def test_q2_each_planted_bug_is_named_once_the_other_is_fixed():
    def version(source):
        scope = {"np": np}
        exec(source, scope)  # noqa: S102 - the exercise's own code, defined in the check module
        return scope["recency_weights"]

    buggy = ex.BUGGY_RECENCY_WEIGHTS
    assert ex.q2.evaluate(version(buggy)).status == "incorrect"
    moved = buggy.replace(
        "    decayed = similarity * np.exp(-age_bars / half_life)\n"
        "    w = np.exp((decayed - decayed.max()) / temperature)\n",
        "    w = np.exp((similarity - similarity.max()) / temperature) * np.exp(-age_bars / half_life)\n")
    assert moved != buggy and "e-folding" in ex.q2.evaluate(version(moved)).message
    halved = buggy.replace("np.exp(-age_bars / half_life)", "0.5 ** (age_bars / half_life)")
    assert "inside the softmax" in ex.q2.evaluate(version(halved)).message
    fixed = moved.replace("np.exp(-age_bars / half_life)", "0.5 ** (age_bars / half_life)")
    assert ex.q2.evaluate(version(fixed)).status == "correct"
