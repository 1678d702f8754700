"""Checks for exercises/09_best_practices: the honest reading of a seed table, recency weights for a kNN memory,
and two experiments (staleness with and without decay; a cold memory, frozen or online).

The write tasks run the learner's function on inputs built here (seeded) and compare with
:func:`course_lib.paired_seed_interval` / :func:`course_lib.recency_weights`, naming the classic slips
(an unpaired interval, 1.96 instead of the t quantile, e-folding instead of a half-life, weights that do not
sum to one) without printing the expected numbers. The experiment tasks recompute the truth here.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..exercise import CheckFailed, Task
from ._common import call, choice_checker, format_options

__all__ = ["BUGGY_RECENCY_WEIGHTS", "SEED_ACCURACY", "q1", "q2", "q3", "q4"]


def _triple(out: Any, what: str) -> tuple[float, float, float]:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise CheckFailed(f"{what} should return three numbers (difference, low, high), got {type(out).__name__}.")
    try:
        vals = tuple(float(v) for v in out)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what}: each of the three values must be a number.") from exc
    if not all(math.isfinite(v) for v in vals):
        raise CheckFailed(f"{what}: got a NaN or inf; are there at least two seeds, and no division by zero?")
    return vals  # type: ignore[return-value]


# --- q1: choose the honest reading of a seed table ----------------------------------------------------------
#: Test accuracy of six training seeds, default and setting (seed i ran both arms with the same data order).
SEED_ACCURACY = pd.DataFrame(
    {"default": [0.571, 0.542, 0.523, 0.521, 0.585, 0.593], "setting": [0.591, 0.559, 0.531, 0.526, 0.593, 0.605]},
    index=pd.RangeIndex(6, name="seed"),
)

_Q1_OPTIONS = {
    "a": "the two arms' own 95% intervals overlap, so there is no evidence that the setting matters",
    "b": "the 95% interval of the per-seed gains lies above zero: evidence that the setting helps, although the "
    "arms' own intervals overlap",
    "c": "the 95% interval of the per-seed gains covers zero: no evidence either way",
    "d": "the 95% interval of the per-seed gains lies below zero: evidence that the setting hurts",
}


def _q1_truth() -> str:
    from ..stats import interval_side, paired_seed_interval

    p = paired_seed_interval(SEED_ACCURACY["setting"], SEED_ACCURACY["default"])
    return {"above": "b", "covers": "c", "below": "d"}.get(interval_side(p["ci_low"], p["ci_high"]), "c")


def _check_reading(answer: Any) -> None:
    if isinstance(answer, str) and answer.strip().lower().rstrip(")") == "a" and _q1_truth() != "a":
        raise CheckFailed("the arms' own intervals are wide because seeds differ a lot, and a seed that is lucky "
                          "for one arm is lucky for the other too. Overlapping intervals of two arms say little "
                          "about their difference: look at the gains seed by seed.")
    letter = str(answer).strip().lower().rstrip(")") if isinstance(answer, str) else answer
    if letter in _Q1_OPTIONS and letter != _q1_truth():
        raise CheckFailed("compute the 95% interval of the per-seed gains and look where it lies relative to zero: "
                          "not where this option says.")
    choice_checker(_Q1_OPTIONS, _q1_truth, "the reading of the seed table")(answer)


q1 = Task(
    "lesson09.q1",
    "Interpret: ex.SEED_ACCURACY holds the test accuracy of six seeds for the default and for a setting (seed i "
    "ran both). Compute what you need and choose the honest reading: " + format_options(_Q1_OPTIONS),
    _check_reading,
    hint=(
        "Which numbers vary more from seed to seed: each arm's accuracy, or the gain of the setting on the same "
        "seed?",
        "Compute each arm's own interval over the seeds, then the interval of the per-seed gains (the library's "
        "paired seed interval, lesson 04 task 1). Note where each lies relative to zero and to the other, and "
        "choose the statement that the paired one supports.",
    ),
    solution="table = ex.SEED_ACCURACY\n"
    "print(cl.t_interval(table['setting']), cl.t_interval(table['default']))   # wide: they overlap\n"
    "paired = cl.paired_seed_interval(table['setting'], table['default'])\n"
    "print(paired, cl.interval_side(paired['ci_low'], paired['ci_high']))\n"
    "answer = {'above': 'b', 'covers': 'c', 'below': 'd'}[cl.interval_side(paired['ci_low'], paired['ci_high'])]",
)


# --- q2: recency weights ------------------------------------------------------------------------------------
def _check_weights(func: Any) -> None:
    from ..knn_memory import recency_weights

    rng = np.random.default_rng(3)
    for half_life, temperature in ((50.0, 0.05), (200.0, 0.1), (10.0, 0.5)):
        sim = rng.uniform(0.6, 1.0, 8)
        age = rng.integers(1, 600, 8).astype(float)
        out = call(func, sim.copy(), age.copy(), temperature, half_life)
        got = np.asarray(out, dtype=float)
        if got.shape != sim.shape:
            raise CheckFailed(f"recency_weights should return one weight per neighbour ({len(sim)}), got shape "
                              f"{got.shape}.")
        want = recency_weights(sim, age, temperature, half_life)
        if np.allclose(got, want, atol=1e-9):
            continue
        if not math.isclose(got.sum(), 1.0, rel_tol=1e-6):
            raise CheckFailed("the weights do not sum to one: normalise them (they are shares of the vote).")
        if np.allclose(got, recency_weights(sim, age / math.log(2.0), temperature, half_life), atol=1e-9):
            raise CheckFailed("that is an e-folding time, not a half-life: after one half-life an entry must count "
                              "exactly half as much.")
        if np.allclose(got, recency_weights(sim, age, temperature, None), atol=1e-9):
            raise CheckFailed("no decay was applied: older entries must count less.")
        back = np.exp((sim - sim.max()) / temperature) * 2.0 ** (age / half_life)
        if np.allclose(got, back / back.sum(), atol=1e-9):
            raise CheckFailed("the decay runs backwards: the oldest entries got the most weight.")
        naive = sim * 0.5 ** (age / half_life)
        soft = np.exp((naive - naive.max()) / temperature)
        if np.allclose(got, soft / soft.sum(), atol=1e-9):
            raise CheckFailed("the decay multiplies the similarity inside the softmax; it should multiply the "
                              "softmax weight (equivalently: subtract a term from the logit).")
        raise CheckFailed("not the weights the task describes: check the temperature, the direction of the decay "
                          "and where the age enters.")


#: The version the exercise hands out: it runs and its weights sum to one, but it is wrong in two places.
BUGGY_RECENCY_WEIGHTS = """def recency_weights(similarity, age_bars, temperature, half_life):
    decayed = similarity * np.exp(-age_bars / half_life)
    w = np.exp((decayed - decayed.max()) / temperature)
    return w / w.sum()
"""

q2 = Task(
    "lesson09.q2",
    "Fix recency_weights(similarity, age_bars, temperature, half_life): the weights of a kNN memory's neighbours "
    "in its vote, where more similar neighbours count more (a softmax with the given temperature) and a neighbour "
    "counts half as much for every half_life bars of age, summing to one. The version in the exercise has two "
    "bugs: find and fix them.",
    _check_weights,
    hint=(
        "Give two neighbours the same similarity, one of them exactly half_life bars older: what ratio of their "
        "weights does the task ask for, and what does this version give?",
        "The age enters in the wrong place: multiplied into the similarity inside the softmax, its effect depends "
        "on the temperature and on the similarity itself; it must scale the weight that the softmax gives. And "
        "the decay is an e-folding (a factor of e per half_life), not a halving.",
    ),
    solution="def recency_weights(similarity, age_bars, temperature, half_life):\n"
    "    w = np.exp((similarity - similarity.max()) / temperature) * 0.5 ** (age_bars / half_life)\n"
    "    return w / w.sum()",
)


# --- q3: experiment, staleness ------------------------------------------------------------------------------
STALE_ARGS = dict(n_bars=1500, seeds=(0, 1, 2), half_lives=(50,), control=False, progress=False)


@lru_cache(maxsize=1)
def _stale_summary() -> Any:
    from ..best_practices import staleness_study

    return staleness_study(**STALE_ARGS)["summary"]


def _stale_gain() -> float:
    s = _stale_summary()
    return float(s[(s.arm == "half-life 50") & (s.subset == "onset")]["diff"].iloc[0])


_STALE_OPTIONS = {
    "a": "decay helps after the flip: the 95% interval of the onset gain over the markets lies above zero",
    "b": "no evidence either way: the interval covers zero, whatever the sign of the mean gain",
    "c": "decay hurts: the interval lies below zero",
}


def _stale_row():
    s = _stale_summary()
    return s[(s.arm == "half-life 50") & (s.subset == "onset")].iloc[0]


def _stale_truth() -> str:
    from ..stats import interval_side

    row = _stale_row()
    return {"above": "a", "below": "c"}.get(interval_side(row["ci_low"], row["ci_high"]), "b")


def _check_stale(answer: Any) -> None:
    letter = answer.strip().lower().rstrip(")") if isinstance(answer, str) else answer
    truth = _stale_truth()
    if letter == "a" and truth == "b" and _stale_row()["diff"] > 0:
        raise CheckFailed("the mean gain is positive, but a mean over three markets says little by itself: read "
                          "both ends of its interval before calling it a gain.")
    choice_checker(_STALE_OPTIONS, _stale_truth, "what the staleness study shows")(answer)


q3 = Task(
    "lesson09.q3",
    "Predict then run: after the motifs' aftermath flips, does a 50-bar half-life help an online kNN memory on "
    "the motif-onset windows? Write down your prediction, then run cl.staleness_study(n_bars=1500, seeds=(0, 1, 2), "
    "half_lives=(50,), control=False) and choose the reading it supports: " + format_options(_STALE_OPTIONS),
    _check_stale,
    hint=(
        "Three markets make three gains: what does their mean tell you without its interval?",
        "In the study's summary take the row of the 50-bar half-life on the onset windows; read its interval over "
        "the markets on both sides (the library's interval side says above, below or covers), not only the sign "
        "of the mean gain.",
    ),
    solution="stale = cl.staleness_study(n_bars=1500, seeds=(0, 1, 2), half_lives=(50,), control=False)\n"
    "s = stale['summary']\n"
    "row = s[(s.arm == 'half-life 50') & (s.subset == 'onset')].iloc[0]\n"
    "answer = {'above': 'a', 'covers': 'b', 'below': 'c'}[cl.interval_side(row['ci_low'], row['ci_high'])]",
)


# --- q4: interpret, cold start ---------------------------------------------------------------------------------
COLD_ARGS = dict(n_bars=3000, seeds=(0, 1, 2, 3, 4), start_sizes=(0, None), progress=False)
_COLD_OPTIONS = {
    "a": "only the frozen empty memory is measurably worse than a full one (its interval lies below zero)",
    "b": "both the frozen and the online empty memory are measurably worse",
    "c": "neither is measurably worse (both intervals cover zero)",
    "d": "only the online empty memory is measurably worse",
}


@lru_cache(maxsize=1)
def _cold_truth() -> str:
    from ..best_practices import cold_start_study

    s = cold_start_study(**COLD_ARGS)["summary"]
    worse = {}
    for mode in ("frozen", "online"):
        r = s[(s["mode"] == mode) & (s.start_label == "0") & (s.subset == "all")].iloc[0]
        worse[mode] = bool(r.ci_high < 0)
    return {(True, False): "a", (True, True): "b", (False, False): "c", (False, True): "d"}[
        (worse["frozen"], worse["online"])]


q4 = Task(
    "lesson09.q4",
    "Interpret: run cl.cold_start_study(n_bars=3000, seeds=(0, 1, 2, 3, 4), start_sizes=(0, None)) and compare an "
    "empty starting memory with the full training memory on all test windows, frozen and online. Which is "
    "true? " + format_options(_COLD_OPTIONS),
    choice_checker(_COLD_OPTIONS, _cold_truth, "the cold-start comparison"),
    hint=(
        "An empty frozen memory never learns anything; an online one fills up as labels resolve. Then read the "
        "intervals, not the means.",
        "In the summary take the rows with start size 0 and subset 'all', one per mode; a memory is measurably "
        "worse when the upper end of its interval is below zero.",
    ),
    solution="cold = cl.cold_start_study(n_bars=3000, seeds=(0, 1, 2, 3, 4), start_sizes=(0, None))\n"
    "s = cold['summary']\n"
    "rows = s[(s.start_label == '0') & (s.subset == 'all')].set_index('mode')\n"
    "worse = {m: rows.loc[m, 'ci_high'] < 0 for m in ('frozen', 'online')}\n"
    "answer = {(True, False): 'a', (True, True): 'b', (False, False): 'c', (False, True): 'd'}"
    "[(worse['frozen'], worse['online'])]",
)
