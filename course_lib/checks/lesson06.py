"""Checks for exercises/06_historical_similarity: a causal exclusion zone, simplex weights, a time-shuffled
null, and two questions about what the experiments show.

Each checker runs the learner's function on cases it builds here (seeded, with boundary cases planted: an
outcome known exactly at the query bar, two windows exactly one exclusion zone apart, an exact twin) and
compares with :mod:`course_lib.similarity`. It names the classic mistake it recognises (a neighbour whose
outcome is not yet known, overlapping neighbours, weights that do not sum to one, shuffled prices instead of
returns) without printing the expected answer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..exercise import CheckFailed, Task
from ..similarity import _distinct_top
from ._common import call as _call

__all__ = ["q1", "q2", "q3", "q4", "q5", "plain_neighbour_episodes"]


# --- q1: causal, distinct neighbours --------------------------------------------------------------------
def _reference_pick(scores, end_pos, query_pos, horizon, k, exclusion, strict: tuple[bool, bool, bool] = (False,) * 3
                    ) -> list[int]:  # fmt: skip
    """The right choice; ``strict`` flags (causal, query, pairwise) give the off-by-one variants (> for >=)."""
    s = np.asarray(scores, dtype=float).copy()
    e = np.asarray(end_pos, dtype=np.int64)
    unknown = e + horizon >= query_pos if strict[0] else e + horizon > query_pos
    near = query_pos - e <= exclusion if strict[1] else query_pos - e < exclusion
    s[unknown | near] = -np.inf
    return _distinct_top(s, e, k, exclusion + int(strict[2])).tolist()


def _pick_cases() -> list[tuple]:
    rng = np.random.default_rng(6)
    cases = []
    # boundary cases. First: a long horizon and a short zone. The top window (end 92) is unresolved at the
    # query (92 + 10 > 100) but far enough from it; the next (end 90) is known exactly at the query bar; two
    # more end exactly one zone (4 bars) apart. Second: a zone longer than the horizon.
    end = np.array([92, 90, 70, 66, 50, 30, 20, 10])
    scores = np.array([0.99, 0.97, 0.95, 0.94, 0.8, 0.85, 0.7, 0.6])
    cases.append((scores, end, 100, 10, 5, 4))
    cases.append((scores[::-1].copy(), end, 100, 3, 4, 20))
    for _ in range(25):
        m = int(rng.integers(10, 60))
        end = np.sort(rng.choice(400, size=m, replace=False))
        cases.append((rng.normal(size=m), end, int(rng.integers(150, 420)), int(rng.integers(1, 30)),
                      int(rng.integers(1, 6)), int(rng.integers(1, 25))))  # fmt: skip
    return cases


def _check_pick(func: Any) -> None:
    for scores, end, q, h, k, excl in _pick_cases():
        out = _call(func, scores.copy(), end.copy(), q, h, k, excl)
        try:
            got = [int(i) for i in np.asarray(out).reshape(-1)]
        except (TypeError, ValueError) as exc:
            raise CheckFailed(f"pick_analogs should return window indices (a list or array of ints), got {out!r}.") from exc
        want = _reference_pick(scores, end, q, h, k, excl)
        if got == want:
            continue
        if got and got == [int(end[i]) for i in want]:
            raise CheckFailed("these are the neighbours' end bars; return their positions in `scores` (indices into "
                              "the candidate arrays) instead.")
        if any(not 0 <= i < len(end) for i in got):
            raise CheckFailed("an index you returned is not a window of the input; return positions into `scores`.")
        if len(set(got)) < len(got):
            raise CheckFailed("the same window appears twice in your answer.")
        for i in got:
            if end[i] + h > q:
                raise CheckFailed(f"a neighbour whose outcome was not yet known: a window ending at bar {end[i]} needs bar "
                                  f"{end[i] + h} for its {h}-bar outcome, after the query bar {q}.")  # fmt: skip
        for i in got:
            if q - end[i] < excl:
                raise CheckFailed(f"a neighbour ending {q - end[i]} bars before the query overlaps the query's own "
                                  f"window (exclusion zone {excl} bars): it is 'similar' because it is the same moment.")  # fmt: skip
        for a in range(len(got)):
            for b in range(a):
                if abs(end[got[a]] - end[got[b]]) < excl:
                    raise CheckFailed(f"overlapping neighbours: two of them end {abs(end[got[a]] - end[got[b]])} bars "
                                      f"apart, inside the exclusion zone of {excl}: one episode counted twice.")  # fmt: skip
        if len(got) > k:
            raise CheckFailed(f"you returned {len(got)} neighbours; at most k={k}.")
        if sorted(got) == sorted(want):
            raise CheckFailed("the right neighbours, in the wrong order: best (highest score) first.")
        variants = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True) if a or b or c]
        if any(got == _reference_pick(scores, end, q, h, k, excl, v) for v in variants):
            raise CheckFailed("you skipped an allowed neighbour at a boundary: an outcome known exactly at the query bar "
                              "(end + horizon == query) is known, and windows exactly `exclusion` bars apart share no bar.")  # fmt: skip
        if len(got) < len(want):
            raise CheckFailed("you returned fewer neighbours than the rules allow: a window blocked by one you did NOT "
                              "choose is still available. Decide greedily, best first.")  # fmt: skip
        raise CheckFailed("not the best-first choice: walk the candidates from the highest score down and take each one "
                          "that is allowed given those already taken.")  # fmt: skip


q1 = Task(
    "lesson06.q1",
    "Write pick_analogs(scores, end_pos, query_pos, horizon, k, exclusion): the best k past windows that are "
    "resolved by the query and are distinct episodes.",
    _check_pick,
    hint=(
        "Two filters come first: is the window's outcome known at the query bar, and does the window overlap the "
        "query? Then the exclusion zone applies between the neighbours you pick.",
        "Sort the candidates by score, best first. Drop those whose end bar plus the horizon lies after the query "
        "bar, and those ending fewer than `exclusion` bars before it. Walk the rest in order and keep a candidate "
        "only if it ends at least `exclusion` bars from every one already kept; stop at k.",
    ),
    solution="def pick_analogs(scores, end_pos, query_pos, horizon, k, exclusion):\n"
    "    chosen = []\n"
    "    for i in np.argsort(-np.asarray(scores), kind='stable'):\n"
    "        e = end_pos[i]\n"
    "        if e + horizon > query_pos or query_pos - e < exclusion:\n"
    "            continue  # outcome unknown at the query, or overlaps the query\n"
    "        if all(abs(e - end_pos[j]) >= exclusion for j in chosen):\n"
    "            chosen.append(int(i))\n"
    "        if len(chosen) == k:\n"
    "            break\n"
    "    return chosen",
)


# --- q2: simplex weights --------------------------------------------------------------------------------------
def _check_simplex(func: Any) -> None:
    rng = np.random.default_rng(2)
    cases = [np.array([0.5, 1.0, 2.0]), np.sort(rng.uniform(0.2, 3.0, 8)), np.sort(rng.uniform(5.0, 9.0, 5)),
             np.array([0.0, 0.4, 0.9])]  # fmt: skip
    for d in cases:
        out = _call(func, d.copy())
        w = np.asarray(out, dtype=float).reshape(-1)
        if w.shape != d.shape:
            raise CheckFailed(f"simplex_weights should return one weight per distance ({len(d)}), got shape {w.shape}.")
        if d.min() == 0:
            if not np.all(np.isfinite(w)):
                raise CheckFailed("an exact twin (distance 0) makes d / d_1 divide by zero: give the twin all the weight.")
            if not np.allclose(w, (d == 0) / (d == 0).sum()):
                raise CheckFailed("with an exact twin (nearest distance 0) the twin should take all the weight.")
            continue
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise CheckFailed("weights must be finite and non-negative.")
        if not np.isclose(w.sum(), 1.0, rtol=1e-9):
            raise CheckFailed(f"the weights sum to {w.sum():.3f}: weights must sum to one (normalise them).")
        want = np.exp(-d / d.min())
        want = want / want.sum()
        if np.allclose(w, want, rtol=1e-9, atol=1e-12):
            continue
        unscaled = np.exp(-d) / np.exp(-d).sum()
        if np.allclose(w, unscaled, rtol=1e-9):
            raise CheckFailed("you used exp(-d): the simplex weights measure each distance in units of the NEAREST one, "
                              "so the result does not depend on the scale of the vectors.")  # fmt: skip
        inv = (1 / d) / (1 / d).sum()
        if np.allclose(w, inv, rtol=1e-9):
            raise CheckFailed("inverse-distance weights are another scheme; these are exponential in the scaled distance.")
        if np.argmax(w) != np.argmin(d):
            raise CheckFailed("the nearest neighbour must get the largest weight.")
        raise CheckFailed("not the simplex weights: check the exponent, the scale and the normalisation.")


q2 = Task(
    "lesson06.q2",
    "Write simplex_weights(distances): Sugihara & May's weights for neighbours at these distances.",
    _check_simplex,
    hint=(
        "The nearest neighbour sets the unit of distance; the weight decays exponentially in that unit, and the "
        "weights are a probability vector.",
        "Divide every distance by the smallest one, take exp of minus that, and divide by the total. When the "
        "smallest distance is zero (an exact twin), give the twin all the weight instead of dividing by zero.",
    ),
    solution="def simplex_weights(distances):\n"
    "    d = np.asarray(distances, dtype=float)\n"
    "    d1 = d.min()\n"
    "    w = (d == d1).astype(float) if d1 == 0 else np.exp(-d / d1)\n"
    "    return w / w.sum()",
)


# --- q3: a time-shuffled null --------------------------------------------------------------------------------
def _check_shuffle(func: Any) -> None:
    rng = np.random.default_rng(3)
    idx = pd.bdate_range("2020-01-01", periods=300)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0.001, 0.01, 300))), index=idx, name="close")
    out = _call(func, close.copy(), 0)
    if not isinstance(out, pd.Series):
        raise CheckFailed(f"time_shuffle should return a price Series, got {type(out).__name__}.")
    if len(out) != len(close) or not out.index.equals(close.index):
        raise CheckFailed("keep the original index (same dates, same length): only the order of the moves changes.")
    v = out.to_numpy(dtype=float)
    if not np.all(np.isfinite(v)) or (v <= 0).any():
        raise CheckFailed("prices must stay finite and positive: rebuild them by compounding the shuffled log returns.")
    if np.allclose(np.sort(v), np.sort(close.to_numpy())) and not np.allclose(v, close.to_numpy()):
        raise CheckFailed("you shuffled the PRICES: the path now jumps between levels far apart. Shuffle the returns, "
                          "then compound them from the first close.")  # fmt: skip
    if not np.isclose(v[0], close.iloc[0]):
        raise CheckFailed("start the null path at the first close of the original.")
    r0 = np.diff(np.log(close.to_numpy()))
    r1 = np.diff(np.log(v))
    if not np.allclose(np.sort(r0), np.sort(r1), rtol=1e-8, atol=1e-12):
        raise CheckFailed("the null must keep every return exactly once (a permutation): resampling with replacement or "
                          "changing returns alters the distribution the null is meant to keep.")  # fmt: skip
    if np.allclose(r0, r1):
        raise CheckFailed("the returns are in their original order: nothing was shuffled.")
    if np.allclose(r1, np.sort(r0)) or np.allclose(r1, np.sort(r0)[::-1]):
        raise CheckFailed("sorted returns are not a random order: use a seeded random permutation.")
    again = _call(func, close.copy(), 0)
    if not np.allclose(np.asarray(again, dtype=float), v):
        raise CheckFailed("the same seed must give the same null (use np.random.default_rng(seed)).")


q3 = Task(
    "lesson06.q3",
    "Write time_shuffle(close, seed): the null price path with the same returns in a random order.",
    _check_shuffle,
    hint=(
        "What must the null keep, and what must it destroy? Keep every bar's move; destroy the order of the moves.",
        "Take the log returns, permute them with a seeded generator, and rebuild a price path from the first close "
        "by adding the permuted returns cumulatively and exponentiating. Keep the original dates.",
    ),
    solution="def time_shuffle(close, seed):\n"
    "    r = np.diff(np.log(close.to_numpy()))\n"
    "    r = np.random.default_rng(seed).permutation(r)\n"
    "    logp = np.log(close.iloc[0]) + np.concatenate([[0.0], np.cumsum(r)])\n"
    "    return pd.Series(np.exp(logp), index=close.index)",
)


# --- q4: the experiment -----------------------------------------------------------------------------------------
def plain_neighbour_episodes(date: str = "2008-10-10", k: int = 10, seq_len: int = 64, lookback: int = 16,
                             scaler_until: str = "2005-12-30") -> int:  # fmt: skip
    """How many distinct episodes (groups ending fewer than ``seq_len`` bars apart) the ``k`` plain nearest
    neighbours of ``date`` on the bundled S&P 500 form: what exercise 06's experiment asks for."""
    from ..data.features import compute_features, forward_log_return
    from ..data.loaders import load_sample
    from ..data.windows import FeatureScaler, make_windows
    from ..similarity import find_analogs

    prices = load_sample("sp500")
    feats = compute_features(prices)
    scaler = FeatureScaler().fit(feats.loc[:scaler_until])
    target = forward_log_return(prices["close"], 1).reindex(feats.index)
    w = make_windows(scaler.transform(feats), target, seq_len, 1, drop_unlabeled=False)
    a = find_analogs(w, date, k=k, lookback=lookback, exclusion=0, close=prices["close"], horizons=(1, 5, 20))
    pos = np.sort(prices.index.get_indexer(a["end_time"]))
    return int(1 + (np.diff(pos) >= seq_len).sum())


@lru_cache(maxsize=1)
def _episode_counts() -> dict[str, int]:
    """The true count, and what the usual slips give: gaps in calendar days instead of bars, or months."""
    truth = plain_neighbour_episodes()
    ends = _plain_neighbour_ends()
    days = np.diff(np.sort(ends.to_numpy())).astype("timedelta64[D]").astype(int)
    seq_len = 64
    return {"truth": truth, "calendar": int(1 + (days >= seq_len).sum()),
            "months": int(pd.Series(ends).dt.to_period("M").nunique())}


def _plain_neighbour_ends() -> pd.Series:
    from ..data.features import compute_features, forward_log_return
    from ..data.loaders import load_sample
    from ..data.windows import FeatureScaler, make_windows
    from ..similarity import find_analogs

    prices = load_sample("sp500")
    feats = compute_features(prices)
    scaler = FeatureScaler().fit(feats.loc[:"2005-12-30"])
    target = forward_log_return(prices["close"], 1).reindex(feats.index)
    w = make_windows(scaler.transform(feats), target, 64, 1, drop_unlabeled=False)
    a = find_analogs(w, "2008-10-10", k=10, lookback=16, exclusion=0, close=prices["close"], horizons=(1, 5, 20))
    return pd.Series(a["end_time"].to_numpy())


def _check_episodes(answer: Any) -> None:
    if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)):
        raise CheckFailed(f"answer with a whole number of episodes, got {answer!r}.")
    counts = _episode_counts()
    if int(answer) == counts["truth"]:
        return
    if int(answer) == 10:
        raise CheckFailed("10 is the number of neighbours, not of episodes: neighbours whose windows share bars are "
                          "one moment of history, counted once.")  # fmt: skip
    if int(answer) in (counts["calendar"], counts["months"]):
        raise CheckFailed("windows share bars when their ends are fewer than SEQ_LEN BARS apart: bars are trading "
                          "days, so a gap measured in calendar days or months overstates the distance.")  # fmt: skip
    if int(answer) < 1:
        raise CheckFailed("ten neighbours form at least one episode.")
    raise CheckFailed("not the number of groups of neighbours that share bars: sort the neighbours in time and start "
                      "a new episode only where two consecutive ones share no bar.")  # fmt: skip


q4 = Task(
    "lesson06.q4",
    "Experiment: switch the exclusion zone off (exclusion=0) for 2008-10-10 with K=10. How many distinct episodes "
    "do the 10 neighbours form?",
    _check_episodes,
    hint=(
        "Windows that end a few bars apart share almost all their bars: they are one moment of history.",
        "Query with exclusion=0, take the neighbours' end dates, turn them into bar positions, sort them, and count "
        "one episode plus one for every gap of at least SEQ_LEN bars.",
    ),
    solution="plain = cl.find_analogs(windows, '2008-10-10', k=10, lookback=16, exclusion=0, close=close,\n"
    "                          horizons=(1, 5, 20))\n"
    "pos = np.sort(prices.index.get_indexer(plain['end_time']))\n"
    "answer_q4 = int(1 + (np.diff(pos) >= SEQ_LEN).sum())",
)


# --- q5: what the null proves --------------------------------------------------------------------------------
_Q5_RIGHT = "b"
_Q5_WHY = {
    "a": "a null cannot prove a method works anywhere else: it can only show that a skill is NOT explained by what "
    "the null keeps.",
    "c": "the null keeps the return distribution (skew and fat tails included); if the skill survived the shuffle it "
    "would come from the distribution, but it vanishes.",
    "d": "the shuffle destroys volatility clustering too, so it does not isolate volatility; and the analogs' skill "
    "after motifs is about direction.",
}


def _check_null(answer: Any) -> None:
    if not isinstance(answer, str) or answer.strip().lower() not in ("a", "b", "c", "d"):
        raise CheckFailed(f"answer with one letter, 'a' to 'd', got {answer!r}.")
    letter = answer.strip().lower()
    if letter != _Q5_RIGHT:
        raise CheckFailed(_Q5_WHY[letter])


q5 = Task(
    "lesson06.q5",
    "The analogs' hit rate after planted motifs is high on the synthetic market and indistinguishable from one half "
    "on its time-shuffled null. What does that show? (a) the method will work on real markets; (b) the skill comes "
    "from the order of the moves, the shapes that precede outcomes, not from the distribution of returns; (c) the "
    "skill comes from the skewed return distribution; (d) the analogs only forecast volatility.",
    _check_null,
    hint=(
        "Ask what the shuffle keeps and what it destroys.",
        "Every return survives the shuffle, only their order changes. A skill that disappears must have lived in "
        "what was destroyed.",
    ),
    solution="answer_q5 = 'b'  # the shuffle keeps every return and destroys their order; the skill vanished with "
    "the order",
)

