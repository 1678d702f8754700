"""The lesson 08 checks accept correct answers, reject the classic mistakes and say which mistake it was."""

from __future__ import annotations

import numpy as np

import course_lib as cl
from course_lib import ____
from course_lib.checks import lesson08 as ex


def test_q1_recency():
    def right(created, now, half_life):
        return 0.5 ** np.asarray((now - created) / half_life, dtype=float)

    assert ex.q1.evaluate(right).status == "correct"
    assert "e-folding" in ex.q1.evaluate(lambda c, n, h: np.exp(-np.asarray((n - c) / h, float))).message
    assert "above 1" in ex.q1.evaluate(lambda c, n, h: 0.5 ** np.asarray((c - n) / h, float)).message
    days = ex.q1.evaluate(lambda c, n, h: 0.5 ** np.asarray((n - c) / np.timedelta64(1, "D") / 3, float))
    assert days.status == "incorrect"  # hard-coded 3 days: wrong for the 12-hour case
    assert ex.q1.evaluate(lambda c, n, h: ____).status == "not attempted"
    assert ex.q1.evaluate().status == "not attempted"


def test_q2_hybrid_score():
    def right(frame, weights):
        total = 0.0
        for col, w in weights.items():
            x = frame[col].to_numpy(dtype=float)
            span = x.max() - x.min()
            total = total + w * ((x - x.min()) / span if span > 0 else np.zeros_like(x))
        return total

    assert ex.q2.evaluate(right).status == "correct"  # a constant column as 0 (or 1) is fine
    raw = ex.q2.evaluate(lambda f, w: sum(w[c] * f[c] for c in w))
    assert raw.status == "incorrect" and "raw" in raw.message
    by_max = ex.q2.evaluate(lambda f, w: sum(w[c] * f[c] / f[c].max() for c in w))
    assert "maximum" in by_max.message
    nan = ex.q2.evaluate(lambda f, w: sum(w[c] * (f[c] - f[c].min()) / (f[c].max() - f[c].min()) for c in w))
    assert "NaN" in nan.message


def test_q3_stale_item():
    assert ex.q3.evaluate(cl.AgentMemoryConfig(age_from="created")).status == "correct"
    assert "still ranks first" in ex.q3.evaluate(cl.AgentMemoryConfig(age_from="accessed")).message
    heavy = cl.AgentMemoryConfig(age_from="accessed", weights={"importance": 5.0, "relevance": 1.0, "recency": 1.0})
    assert "weights" in ex.q3.evaluate(heavy).message
    short = cl.AgentMemoryConfig(half_lives={"short": "1h", "medium": "90D", "long": "365D"})
    assert "half-lives" in ex.q3.evaluate(short).message
    assert "AgentMemoryConfig" in ex.q3.evaluate("created").message
    res = ex.stale_memory().search(ex.STALE_QUERY["text"], now=ex.STALE_QUERY["now"], k=2, touch=False)
    assert res.loc[0, "kind"] == "lesson"  # the puzzle is real


def test_q4_thompson_step():
    def right(wins, losses, rng):
        return int(np.argmax(rng.beta(1 + wins, 1 + losses)))

    assert ex.q4.evaluate(right).status == "correct"
    assert "greedy" in ex.q4.evaluate(lambda w, lo, r: int(np.argmax((1 + w) / (2 + w + lo)))).message
    assert "prior" in ex.q4.evaluate(lambda w, lo, r: int(np.argmax(r.beta(w, lo)))).message
    assert "LOSE" in ex.q4.evaluate(lambda w, lo, r: int(np.argmax(r.beta(1 + lo, 1 + w)))).message
    assert ex.q4.evaluate(lambda w, lo, r: ____).status == "not attempted"


def test_q5_predict_then_run():
    slow = ex.regret_experiment().drop("equal").idxmin()
    fast = ex.regret_experiment(n_steps=ex.FAST_SWITCH_STEPS).drop("equal").idxmin()
    assert (slow, fast) == ("half_life=100", "half_life=25")  # the experiment teaches what the task says
    assert ex.q5.evaluate({"best_half_life": 25, "direction": "shorter"}).status == "correct"
    assert ex.q5.evaluate({"best_half_life": "half_life=25", "direction": "shorter"}).status == "correct"
    stale = ex.q5.evaluate({"best_half_life": 100, "direction": "same"})  # read the first table only
    assert stale.status == "incorrect" and "1200 steps" in stale.message
    wrong_way = ex.q5.evaluate({"best_half_life": 25, "direction": "longer"})
    assert wrong_way.status == "incorrect" and "direction" in wrong_way.message
    for h in (None, 400):
        assert ex.q5.evaluate({"best_half_life": h, "direction": "longer"}).status == "incorrect"
    assert "dict" in ex.q5.evaluate(25).message
    assert ex.q5.evaluate({"best_half_life": 25, "direction": "down"}).status == "incorrect"
    assert "25" not in ex.q5.evaluate(25).message  # no message gives the answer away


def test_q4_ignoring_the_given_generator_fails():
    global_rng = ex.q4.evaluate(lambda w, lo, r: int(np.argmax(np.random.beta(1 + w, 1 + lo))))
    assert global_rng.status == "incorrect" and "same seed" in global_rng.message, global_rng.message
    own_rng = ex.q4.evaluate(lambda w, lo, r: int(np.argmax(np.random.default_rng(1).beta(1 + w, 1 + lo))))
    assert own_rng.status == "incorrect" and "generator" in own_rng.message, own_rng.message


def test_q4_second_hint_states_the_approach_without_the_formula():
    assert "Beta(1" not in ex.q4.hints[1] and "argmax" not in ex.q4.hints[1]


def test_q1_nan_message_is_about_recency():
    res = ex.q1.evaluate(lambda c, n, h: 0.5 ** (np.asarray((n - c) / h, float) * np.nan))
    assert res.status == "incorrect" and "half-lives" in res.message and "candidate" not in res.message


def test_q2_the_planted_bugs_are_named_in_turn_and_the_fix_passes():
    import warnings

    def version(source):
        scope = {"np": np}
        exec(source, scope)  # noqa: S102 - the exercise's own code, defined in the check module
        return scope["hybrid_score"]

    buggy = ex.BUGGY_HYBRID_SCORE
    assert "keeps the offset" in ex.q2.evaluate(version(buggy)).message
    half = buggy.replace("x / x.max()", "(x - x.min()) / (x.max() - x.min())")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert "same for every candidate" in ex.q2.evaluate(version(half)).message
    fixed = buggy.replace("x / x.max()", "(x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.ones_like(x)")
    assert ex.q2.evaluate(version(fixed)).status == "correct"
    assert ex.q2.prompt.startswith("Fix")
