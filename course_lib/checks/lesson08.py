"""Checks for exercises/08_agent_memory: recency decay, the hybrid score, a stale item that outranks a fresh
one, a Thompson sampling step, and the discounting experiment.

Each checker runs the learner's answer on cases built here (seeded), compares with :mod:`course_lib`'s own
functions, and names the classic mistake it recognises (an e-folding time instead of a half-life, an age with
the wrong sign, no normalisation, normalising by the maximum only, a greedy pick instead of a posterior draw,
a Beta without its prior...) without printing the expected values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..agents.composer import (
    EqualWeightComposer,
    ThompsonComposer,
    make_skill_schedule,
    simulate_skill_switch,
)
from ..agents.scoring import hybrid_scores
from ..agents.store import AgentMemory, AgentMemoryConfig
from ..exercise import CheckFailed, Task
from ._common import call as _call

__all__ = ["BUGGY_HYBRID_SCORE", "q1", "q2", "q3", "q4", "q5", "regret_experiment", "stale_memory", "STALE_QUERY"]


_NAN_HINT = "a column that is the same for every candidate must not divide by zero."


def _array(out: Any, n: int, what: str, nan_hint: str = _NAN_HINT) -> np.ndarray:
    try:
        arr = np.asarray(out, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what} should return numbers (an array or Series), got {type(out).__name__}.") from exc
    if arr.shape != (n,):
        raise CheckFailed(f"{what} should return one value per item ({n}), got shape {np.shape(out)}.")
    if not np.isfinite(arr).all():
        raise CheckFailed(f"{what} returned NaN or inf; {nan_hint}")
    return arr


# --- q1: recency ---------------------------------------------------------------------------------------------
def _check_recency(func: Any) -> None:
    now = pd.Timestamp("2024-06-01 12:00")
    cases = [
        (pd.DatetimeIndex(["2024-06-01 12:00", "2024-05-29 12:00", "2024-05-26 12:00", "2024-03-01"]), "3D"),
        (pd.DatetimeIndex(["2024-06-01 06:00", "2024-06-01", "2024-05-31 12:00"]), "12h"),
    ]
    for created, half in cases:
        hl = pd.Timedelta(half)
        got = _array(_call(func, created, now, hl), len(created), "recency",
                     nan_hint="the age must become a plain number of half-lives (a duration divided by a duration), "
                     "and an item created exactly now has age zero, not an undefined one.")
        age = (now - created) / hl
        want = 0.5 ** np.asarray(age, float)
        if np.allclose(got, want, rtol=1e-9, atol=1e-12):
            continue
        if (got > 1 + 1e-9).any():
            raise CheckFailed("some recency is above 1: an old item became 'fresher than new'. Age is now minus "
                              "the creation time, never the other way round.")
        if np.allclose(got, np.exp(-np.asarray(age, float)), rtol=1e-6):
            raise CheckFailed("this decays with an e-folding time (exp(-age / h)); a half-life means the value is "
                              "exactly 1/2 after one half-life.")
        with np.errstate(divide="ignore"):
            inverted = 0.5 ** (1 / np.asarray(age, float))
        if np.allclose(got[age > 0], inverted[age > 0], rtol=1e-6):
            raise CheckFailed("age and half-life are swapped in the exponent: older items must decay MORE.")
        if np.allclose(got, np.clip(1 - np.asarray(age, float), 0, 1), rtol=1e-6):
            raise CheckFailed("this is a linear decay; the course's decay is exponential (halves every half-life).")
        raise CheckFailed(f"for a half-life of {half} the values differ from the exponential half-life decay. "
                          "Check the units: divide the age (a Timedelta) by the half-life (a Timedelta).")


q1 = Task(
    "lesson08.q1",
    "Write recency(created, now, half_life): 1 for an item created now, 1/2 one half-life later, and so on.",
    _check_recency,
    hint=("A half-life says how long until the value is halved. Which base and which exponent give exactly 1/2 "
          "when the age equals the half-life?",
          "Compute the age as now minus the creation times, divide it by the half-life (both Timedeltas, so the "
          "ratio has no unit), and raise one half to that power."),
    solution="def recency(created, now, half_life):\n    age = (now - created) / half_life\n"
    "    return 0.5 ** np.asarray(age, dtype=float)",
)


# --- q2: hybrid score ----------------------------------------------------------------------------------------
def _frames() -> list[pd.DataFrame]:
    rng = np.random.default_rng(8)
    a = pd.DataFrame({"importance": rng.uniform(1, 10, 8), "relevance": rng.uniform(0, 12, 8),
                      "recency": rng.uniform(0, 1, 8)})
    b = pd.DataFrame({"importance": [2.0, 2.0, 2.0], "relevance": [0.3, 0.9, 0.6], "recency": [0.9, 0.2, 0.5]})
    return [a, b]


def _check_hybrid(func: Any) -> None:
    weights = [{"importance": 1.0, "relevance": 1.0, "recency": 1.0},
               {"importance": 0.5, "relevance": 2.0, "recency": 1.0}]
    for k, frame in enumerate(_frames()):
        for w in weights:
            got = _array(_call(func, frame.copy(), dict(w)), len(frame), "hybrid_score")
            want = hybrid_scores(frame["importance"], frame["relevance"], frame["recency"], w)["score"].to_numpy()
            diff = got - want
            if np.allclose(diff, diff[0], atol=1e-9):  # a constant column may count as all 0 or all 1
                continue
            raw = sum(w[c] * frame[c].to_numpy() for c in w)
            if np.allclose(got, raw, atol=1e-9):
                raise CheckFailed("the components are added raw: importance (1-10) and BM25 (unbounded) swamp "
                                  "recency (0-1). Put each on the same [0, 1] scale over the candidates first.")
            by_max = sum(w[c] * frame[c].to_numpy() / frame[c].max() for c in w)
            if np.allclose(got, by_max, atol=1e-9):
                raise CheckFailed("dividing by the maximum keeps the offset: the smallest value should map to 0, "
                                  "the largest to 1.")
            z = sum(w[c] * (frame[c] - frame[c].mean()).to_numpy() / frame[c].std() for c in w)
            if np.allclose(got, z, atol=1e-6):
                raise CheckFailed("this standardises (z-score); the hybrid score uses min-max normalisation.")
            if np.allclose(got, want[::-1], atol=1e-9) or np.corrcoef(got, want)[0, 1] < -0.5:
                raise CheckFailed("the ranking comes out reversed; higher importance, relevance and recency must all "
                                  "raise the score.")
            raise CheckFailed(f"case {k + 1} with weights {w}: the scores differ from the weighted sum of min-max "
                              "normalised components.")


#: The version the exercise hands out: it runs, and it ranks some candidates in the wrong order.
BUGGY_HYBRID_SCORE = """def hybrid_score(frame, weights):
    total = 0.0
    for col, w in weights.items():
        x = frame[col].to_numpy(dtype=float)
        normalised = x / x.max()
        total = total + w * normalised
    return total
"""

q2 = Task(
    "lesson08.q2",
    "Fix hybrid_score(frame, weights): the weighted sum of importance, relevance and recency, each put on a common "
    "scale over the candidates in frame. The version in the exercise runs but ranks some candidates in the wrong "
    "order: find why, fix it, and make sure the fix survives a column that is the same for every candidate.",
    _check_hybrid,
    hint=("Take importances of 8, 9 and 10: after dividing by the maximum, how far apart are they, compared with "
          "recencies of 0.1 and 1.0?",
          "Dividing by the maximum keeps each column's offset, so a column whose values sit far from zero barely "
          "separates the candidates while another dominates. Map each column so that its smallest candidate gets 0 "
          "and its largest 1; a column whose candidates all share one value separates nobody and must give them "
          "all the same number, not a division by zero."),
    solution="def hybrid_score(frame, weights):\n    total = 0.0\n    for col, w in weights.items():\n"
    "        x = frame[col].to_numpy(dtype=float)\n        span = x.max() - x.min()\n"
    "        total = total + w * ((x - x.min()) / span if span > 0 else np.ones_like(x))\n    return total",
)


# --- q3: a stale item outranks a fresh one -------------------------------------------------------------------
STALE_QUERY = {"text": "copper inventories drawdown", "now": pd.Timestamp("2024-09-01 09:00")}


def stale_memory(config: AgentMemoryConfig | None = None) -> AgentMemory:
    """The exercise's store: a two-month-old lesson the agents kept re-reading, and yesterday's observation on
    the same topic. With its config, a search at ``STALE_QUERY['now']`` ranks the old item first."""
    cfg = config if config is not None else AgentMemoryConfig(age_from="accessed")
    mem = AgentMemory(":memory:", config=cfg)
    now = STALE_QUERY["now"]
    mem.add("analog", "lesson", "copper inventories drawdown", now=now - pd.Timedelta("60D"), importance=3.0)
    mem.add("momentum", "observation", "copper inventories drawdown reported overnight by the exchange",
            now=now - pd.Timedelta("1D"), importance=3.2)
    for hours in (20, 14, 10, 6, 3):  # the lesson was read again and again
        mem.search("copper lesson", now=now - pd.Timedelta(hours=hours), kinds=["lesson"], k=1)
    return mem


def _check_stale(config: Any) -> None:
    if not isinstance(config, AgentMemoryConfig):
        raise CheckFailed(f"answer with an AgentMemoryConfig (cl.AgentMemoryConfig(...)), got {type(config).__name__}.")
    default = AgentMemoryConfig()
    if dict(config.weights) != dict(default.weights):
        raise CheckFailed("you changed the weights. The ranking problem is not in the weights: leave them at their "
                          "defaults and change how the memory measures age.")
    if {k: pd.Timedelta(v) for k, v in config.half_lives.items()} != {
            k: pd.Timedelta(v) for k, v in default.half_lives.items()}:
        raise CheckFailed("you changed the half-lives; with the same way of measuring age, the old item would "
                          "still look young. Leave the half-lives at their defaults.")
    mem = stale_memory(config)
    res = mem.search(STALE_QUERY["text"], now=STALE_QUERY["now"], k=2, touch=False)
    if res.loc[0, "kind"] != "observation":
        raise CheckFailed("with this config the two-month-old lesson still ranks first. Look at created_at, "
                          "age_days and access_count of the two rows.")


q3 = Task(
    "lesson08.q3",
    "In stale_memory(), a two-month-old lesson outranks yesterday's observation on the same question. Return an "
    "AgentMemoryConfig that puts the fresh observation first, without changing weights or half-lives.",
    _check_stale,
    hint=("Compare created_at with age_days in the result table: for which item do they disagree, and why?",
          "The age can be counted from when an item was written or from when it was last read; reading it "
          "again and again made the old lesson look young. Choose the other way to count."),
    solution='config = cl.AgentMemoryConfig(age_from="created")',
)


# --- q4: a Thompson sampling step ----------------------------------------------------------------------------
_CASES = [
    (np.array([8.0, 2.0, 0.0]), np.array([2.0, 2.0, 0.0])),
    (np.array([30.0, 28.0, 5.0, 1.0]), np.array([20.0, 22.0, 5.0, 3.0])),
]


def _frequencies(func: Any, wins: np.ndarray, losses: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = np.zeros(len(wins))
    for _ in range(n):
        out = _call(func, wins.copy(), losses.copy(), rng)
        try:
            i = int(out)
        except (TypeError, ValueError) as exc:
            raise CheckFailed(f"thompson_pick should return the index of one agent (an int), got {out!r}.") from exc
        if not 0 <= i < len(wins) or i != out:
            raise CheckFailed(f"thompson_pick returned {out!r}; return an index between 0 and {len(wins) - 1}.")
        picks[i] += 1
    return picks / n


def _picks(func: Any, wins: np.ndarray, losses: np.ndarray, seed: int, n: int = 40) -> list:
    rng = np.random.default_rng(seed)
    return [_call(func, wins.copy(), losses.copy(), rng) for _ in range(n)]


def _check_thompson(func: Any) -> None:
    wins, losses = _CASES[1]
    same = _picks(func, wins, losses, 5), _picks(func, wins, losses, 5)
    if same[0] != same[1]:
        raise CheckFailed("two generators with the same seed gave different picks: draw from the generator you are "
                          "given (rng), not from numpy's global one, so that a run can be repeated.")
    other = [_picks(func, wins, losses, s) for s in (6, 7, 8)]
    if len(set(map(tuple, [same[0], *other]))) == 1 and len(set(same[0])) == 1:
        mean = (1 + wins) / (2 + wins + losses)
        if int(same[0][0]) != int(np.argmax(mean)):
            raise CheckFailed("every call gives the same pick whatever the generator: the draws must come from the "
                              "generator you are given, not from one created inside your function.")
    n = 3000
    for k, (wins, losses) in enumerate(_CASES):
        try:
            got = _frequencies(func, wins, losses, n, seed=100 + k)
        except ValueError as exc:
            if "a <= 0" in str(exc) or "b <= 0" in str(exc) or "must be" in str(exc):
                raise CheckFailed("an agent without wins (or losses) breaks your Beta: start from a uniform prior, "
                                  "one pseudo-win and one pseudo-loss.") from exc
            raise
        draws = np.random.default_rng(7).beta(1 + wins, 1 + losses, size=(200_000, len(wins)))
        want = np.bincount(draws.argmax(axis=1), minlength=len(wins)) / len(draws)
        if np.abs(got - want).max() < 0.035:
            continue
        mean = (1 + wins) / (2 + wins + losses)
        if got[np.argmax(mean)] > 0.99:
            raise CheckFailed("you always pick the best posterior mean (greedy). Thompson sampling draws a "
                              "plausible win rate for every agent and follows the best DRAW, so uncertain agents "
                              "still get tried.")
        swapped = np.random.default_rng(7).beta(1 + losses, 1 + wins, size=(200_000, len(wins))).argmax(axis=1)
        if np.abs(got - np.bincount(swapped, minlength=len(wins)) / len(swapped)).max() < 0.035:
            raise CheckFailed("you favour the agents that LOSE: the first Beta parameter counts wins.")
        no_prior = np.random.default_rng(7).beta(np.maximum(wins, 1e-3), np.maximum(losses, 1e-3),
                                                  size=(200_000, len(wins))).argmax(axis=1)
        if np.abs(got - np.bincount(no_prior, minlength=len(wins)) / len(no_prior)).max() < 0.035:
            raise CheckFailed("the posterior has no prior: an agent's belief must start from a uniform one before its "
                              "wins and losses are counted.")
        if np.allclose(got, 1 / len(wins), atol=0.05):
            raise CheckFailed("the picks are uniform: the wins and losses are not used.")
        raise CheckFailed(f"case {k + 1}: how often each agent is picked does not match Thompson sampling "
                          "(one posterior draw per agent, follow the largest).")


q4 = Task(
    "lesson08.q4",
    "Write thompson_pick(wins, losses, rng): one Thompson sampling step over agents with Beta posteriors; "
    "return the index of the agent to follow.",
    _check_thompson,
    hint=("Each agent's unknown win rate has a posterior after its wins and losses. Instead of trusting the best "
          "average, what do you do with the posteriors?",
          "Give every agent a posterior over its win rate that starts from a uniform belief and counts its wins "
          "and losses. Let each posterior propose one plausible win rate, using only the generator you are given "
          "(so that equal seeds give equal picks), and follow the agent whose proposal is highest."),
    solution="def thompson_pick(wins, losses, rng):\n    draws = rng.beta(1 + wins, 1 + losses)\n"
    "    return int(np.argmax(draws))",
)


# --- q5: the experiment ------------------------------------------------------------------------------------
def regret_experiment(half_lives=(None, 25, 100, 400), n_steps: int = 1200, n_runs: int = 40,
                      seed: int = 0) -> pd.Series:
    """Mean final cumulative regret of Thompson sampling with each half-life (None: no discounting) on the
    exercise's skill schedule (two switches), plus equal weights for reference."""
    sched = make_skill_schedule(n_steps, n_agents=4, seed=seed)
    comps = [EqualWeightComposer()] + [ThompsonComposer(f"half_life={h}", half_life=h) for h in half_lives]
    regret = simulate_skill_switch(sched, comps, n_runs=n_runs, seed=seed)
    return pd.Series({k: float(v[:, -1].mean()) for k, v in regret.items()}, name="final regret")


FAST_SWITCH_STEPS = 300  # the same two switches, four times closer together than regret_experiment()'s 1200


def _best_half_life(table: pd.Series) -> int | None:
    best = table.drop("equal").idxmin()
    return None if best.endswith("None") else int(best.split("=")[1])


def _as_half_life(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("half_life="):
        value = value.split("=")[1]
        value = None if value == "None" else value
    if value is None:
        return None
    try:
        h = float(value)
    except (TypeError, ValueError):
        h = float("nan")
    if h not in (25.0, 100.0, 400.0):
        raise CheckFailed(f"best_half_life must be one of the half-lives tried (None, 25, 100 or 400), got {value!r}.")
    return int(h)


def _direction(slow: int | None, fast: int | None) -> str:
    """How the best half-life moved from the slow schedule to the fast one (None = no discounting = longest)."""
    a = float("inf") if slow is None else float(slow)
    b = float("inf") if fast is None else float(fast)
    return "same" if a == b else ("shorter" if b < a else "longer")


def _check_experiment(answer: Any) -> None:
    if not isinstance(answer, dict) or set(answer) != {"best_half_life", "direction"}:
        raise CheckFailed("answer with a dict with two keys: {'best_half_life': ..., 'direction': ...}.")
    direction = answer["direction"]
    if direction not in ("shorter", "same", "longer"):
        raise CheckFailed(f"direction must be 'shorter', 'same' or 'longer', got {direction!r}.")
    slow_best = _best_half_life(regret_experiment())
    fast_best = _best_half_life(regret_experiment(n_steps=FAST_SWITCH_STEPS))
    got = _as_half_life(answer["best_half_life"])
    if got != fast_best:
        if got == slow_best:
            raise CheckFailed("that is the best half-life of the original run (1200 steps); the question is about "
                              f"the run with n_steps={FAST_SWITCH_STEPS}.")
        raise CheckFailed(f"that half-life does not have the lowest final regret with n_steps={FAST_SWITCH_STEPS}; "
                          "compare every Thompson row of that table.")
    if direction != _direction(slow_best, fast_best):
        raise CheckFailed("best_half_life is right, but direction does not describe how it moved from the 1200-step "
                          "run to this one: compare the two winners.")


q5 = Task(
    "lesson08.q5",
    "Predict, then run: with the skill switching four times as often (regret_experiment(n_steps=300) instead of "
    "1200 steps), is the best half-life shorter, the same or longer? Answer with a dict: the observed best "
    "half-life and the direction it moved.",
    _check_experiment,
    hint=("An outcome recorded before a switch describes an agent that no longer exists. How long does a "
          "composer's evidence stay true when switches come more often?",
          "Run regret_experiment() and regret_experiment(n_steps=300); in each table drop the equal-weight row and "
          "find the Thompson setting with the smallest final regret, then compare the two winners."),
    solution="slow = ex.regret_experiment()\nfast = ex.regret_experiment(n_steps=300)\n"
    "print(pd.concat({'1200 steps': slow, '300 steps': fast}, axis=1).round(1))\n"
    "answer = {'best_half_life': 25, 'direction': 'shorter'}  # the winner moved from 100 to 25",
)
