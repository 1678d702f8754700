"""The lesson 07 checks accept correct answers, reject the typical mistakes, and say which mistake it was."""

from __future__ import annotations

import numpy as np

import course_lib as cl
from course_lib import ____
from course_lib.checks import lesson07 as ex


def _filter(pi, A, lik):
    out = np.empty_like(lik)
    alpha = pi * lik[0]
    out[0] = alpha / alpha.sum()
    for t in range(1, len(lik)):
        alpha = (out[t - 1] @ A) * lik[t]
        out[t] = alpha / alpha.sum()
    return out


def test_q1_forward_filter():
    assert ex.q1.evaluate(_filter).status == "correct"
    cases = {
        "smoothed": lambda pi, A, lik: ex._variants(pi, A, lik)["smoothed"],
        "wrong way round": lambda pi, A, lik: _filter(pi, A.T, lik),
        "sum to 1": lambda pi, A, lik: ex._variants(pi, A, lik)["unnormalised"],
        "one-step predictions": lambda pi, A, lik: ex._variants(pi, A, lik)["prediction"],
        "initial distribution": lambda pi, A, lik: _filter(np.array([0.5, 0.5]), A, lik),
        "shape": lambda pi, A, lik: _filter(pi, A, lik)[:, 0],
    }
    for words, wrong in cases.items():
        res = ex.q1.evaluate(wrong)
        assert res.status == "incorrect" and words in res.message, (words, res.message)
    assert ex.q1.evaluate(lambda pi, A, lik: ____).status == "not attempted"
    assert ex.q1.evaluate().status == "not attempted"


def _score(true, pred, split, fit_on):
    mask = {"train": true.index < split, "test": true.index >= split, "all": true.index == true.index}[fit_on]
    mapping = cl.align_labels(true[mask], pred[mask])
    test = true.index >= split
    return cl.regime_scores(true[test], cl.relabel(pred[test], mapping))["balanced_accuracy"]


def test_q2_alignment_on_the_training_period():
    assert ex.q2.evaluate(lambda t, p, s: _score(t, p, s, "train")).status == "correct"
    res = ex.q2.evaluate(lambda t, p, s: _score(t, p, s, "test"))
    assert res.status == "incorrect" and "test bars" in res.message
    res = ex.q2.evaluate(lambda t, p, s: cl.regime_scores(t, cl.relabel(p, cl.align_labels(t, p)))["balanced_accuracy"])
    assert res.status == "incorrect" and "test bars only" in res.message
    # the check cannot be passed by accident: the drift makes the honest score differ from the flattering one
    true, pred, split = ex._drift_case(11)
    assert _score(true, pred, split, "test") > _score(true, pred, split, "train") + 0.2


def test_q2_a_map_fitted_on_all_bars_test_included_fails():
    res = ex.q2.evaluate(lambda t, p, s: _score(t, p, s, "all"))
    assert res.status == "incorrect" and "include the test bars" in res.message, res.message
    true, pred, split = ex._drift_case(13, 500)  # the case that tells the two maps apart
    assert not np.isclose(_score(true, pred, split, "all"), _score(true, pred, split, "train"))


def test_q3_causal_probability():
    assert ex.q3.evaluate(lambda d, r, t: d.filter(r.loc[:t]).iloc[-1]).status == "correct"
    assert ex.q3.evaluate(lambda d, r, t: d.filter(r).loc[t]).status == "correct"
    res = ex.q3.evaluate(lambda d, r, t: d.smooth(r).loc[t])
    assert res.status == "incorrect" and "smoothed" in res.message
    res = ex.q3.evaluate(lambda d, r, t: d.fit(r).filter(r).loc[t])
    assert res.status == "incorrect" and "refitted" in res.message
    res = ex.q3.evaluate(lambda d, r, t: d.filter(r.loc[:t]).iloc[-2])
    assert res.status == "incorrect" and "bar before" in res.message


def test_q4_and_q5():
    assert ex.q4.evaluate("b").status == "correct"
    assert ex.q4.evaluate(" B ").status == "correct"
    for wrong in ("a", "c", "d"):
        res = ex.q4.evaluate(wrong)
        assert res.status == "incorrect" and "b" not in res.message.split()
    assert ex.q4.evaluate("maybe").status == "incorrect"
    truth = ex.switch_experiment(2.5) > ex.switch_experiment(5.0)
    assert ex.q5.evaluate(truth).status == "correct"
    assert ex.q5.evaluate(not truth).status == "incorrect"
    assert ex.q5.evaluate("yes").status == "incorrect"
