"""Checks for exercises/09_best_practices: a paired interval over seeds, recency weights for a kNN memory,
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

from ..exercise import CheckFailed, Task
from ._common import call, choice_checker, format_options, numeric_checker

__all__ = ["q1", "q2", "q3", "q4"]


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


# --- q1: the paired interval over seeds ------------------------------------------------------------------
def _check_paired(func: Any) -> None:
    from ..best_practices import paired_seed_interval

    rng = np.random.default_rng(9)
    for n in (3, 5, 8):
        base = rng.uniform(0.5, 0.6, n)
        setting = base + rng.normal(0.01, 0.01, n)  # seeds vary much more than the paired differences do
        got = _triple(call(func, setting.copy(), base.copy()), "paired_interval")
        want = paired_seed_interval(setting, base)
        w = (want["diff"], want["ci_low"], want["ci_high"])
        if np.allclose(got, w, atol=1e-9):
            continue
        d = setting - base
        if np.allclose(got, (-w[0], -w[2], -w[1]), atol=1e-9):
            raise CheckFailed("the sign is flipped: report setting minus default.")
        if not math.isclose(got[0], w[0], abs_tol=1e-9):
            raise CheckFailed("the difference itself is off: it is the average gain of the setting over the default "
                              "across the seeds.")
        half = (got[2] - got[1]) / 2
        se = d.std(ddof=1) / math.sqrt(n)
        if math.isclose(half, 1.96 * se, rel_tol=1e-6):
            raise CheckFailed(f"with {n} seeds the normal quantile is too small: a handful of seeds needs the wider "
                              "quantile of a distribution that knows how few they are.")
        if math.isclose(half, (w[2] - w[1]) / 2 * d.std(ddof=0) / d.std(ddof=1), rel_tol=1e-6):
            raise CheckFailed("the spread is the population one; an interval from a sample uses the sample standard "
                              "deviation (one degree of freedom fewer).")
        unpaired = math.sqrt(setting.var(ddof=1) / n + base.var(ddof=1) / n)
        if half > 1.5 * (w[2] - w[1]) / 2 and any(math.isclose(half, q * unpaired, rel_tol=1e-3)
                                                  for q in (1.96, _t(n - 1), _t(2 * n - 2))):
            raise CheckFailed("this is an unpaired interval: it treats the two arms as independent samples. The "
                              "same seed ran both, so take the differences seed by seed first.")
        raise CheckFailed("not the 95% interval of the mean per-seed gain; check the quantile, the spread and how "
                          "the width shrinks with the number of seeds.")


def _t(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


q1 = Task(
    "lesson09.q1",
    "Write paired_interval(setting, default): two arrays of test accuracies, one per training seed (the same "
    "seeds in the same order). Return (difference, low, high): the mean accuracy gain of the setting over the "
    "default and its 95% interval over seeds, using that each seed ran both arms.",
    _check_paired,
    hint=(
        "The same seed trained both arms: what cancels if you compare them seed by seed, and how many numbers "
        "is your interval then built from?",
        "Take the per-seed differences, their mean, and their sample standard deviation over the square root of "
        "the number of seeds; multiply by the two-sided 95% quantile of Student's t with one degree of freedom "
        "fewer than seeds (scipy.stats.t.ppf) and go that far either side of the mean.",
    ),
    solution="from scipy import stats\n\ndef paired_interval(setting, default):\n    d = setting - default\n"
    "    n = len(d)\n    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)\n"
    "    return d.mean(), d.mean() - half, d.mean() + half",
)


# --- q2: recency weights ------------------------------------------------------------------------------------
def _check_weights(func: Any) -> None:
    from ..best_practices import recency_weights

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


q2 = Task(
    "lesson09.q2",
    "Write recency_weights(similarity, age_bars, temperature, half_life): the weights of a kNN memory's neighbours "
    "in its vote, where more similar neighbours count more (a softmax with the given temperature) and a neighbour "
    "counts half as much for every half_life bars of age. They must sum to one.",
    _check_weights,
    hint=(
        "Two factors multiply: one from similarity, one from age. Which function halves every half_life bars?",
        "Exponentiate similarity over temperature (subtract the maximum first for numerical safety), multiply by "
        "one half to the power age over half-life, and divide by the sum.",
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


def _stale_mistakes(got: float) -> str | None:
    s = _stale_summary()
    all_gain = float(s[(s.arm == "half-life 50") & (s.subset == "all")]["diff"].iloc[0])
    acc = float(s[(s.arm == "half-life 50") & (s.subset == "onset")]["acc"].iloc[0])
    if math.isclose(got, all_gain, abs_tol=1e-4) and not math.isclose(all_gain, _stale_gain(), abs_tol=0.003):
        return "that is the gain on all windows after the flip; the task asks for the onset windows."
    if math.isclose(got, acc, abs_tol=1e-4):
        return "that is the accuracy with decay; the task asks for the gain over no decay."
    return None


q3 = Task(
    "lesson09.q3",
    "Experiment: run cl.staleness_study(n_bars=1500, seeds=(0, 1, 2), half_lives=(50,), control=False) and report "
    "the mean gain in direction accuracy (a fraction) of a 50-bar half-life over no decay on the motif-onset "
    "windows after the flip.",
    numeric_checker(_stale_gain, "the onset accuracy gain of decay", abs_tol=0.003, mistakes=_stale_mistakes),
    hint=(
        "The study returns a summary table: which row compares the half-life with no decay, on which windows?",
        "Select the row of the summary whose arm is the 50-bar half-life and whose subset is the onset windows; "
        "its difference column is the mean over the three markets of (with decay - without).",
    ),
    solution="stale = cl.staleness_study(n_bars=1500, seeds=(0, 1, 2), half_lives=(50,), control=False)\n"
    "s = stale['summary']\n"
    "gain = s[(s.arm == 'half-life 50') & (s.subset == 'onset')]['diff'].iloc[0]",
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
