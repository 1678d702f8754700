"""Checks for exercises/07_market_regimes: the forward filter, honest label alignment, the causal probability
at one bar, why the smoother's accuracy is out of reach, and a heavy-tail experiment.

Each checker builds its own seeded data, compares with :mod:`course_lib.regimes`, and recognises the usual
mistakes (smoothed probabilities, a transposed transition matrix, a forgotten update, no normalisation, a label
map fitted on the test bars, a detector refitted on the future) to say which one was made, without printing
the expected values.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..exercise import CheckFailed, Task
from ..regimes.detection import (
    HMMRegimeDetector,
    RegimeFitWarning,
    align_labels,
    forward_filter,
    regime_scores,
    relabel,
    switches_per_year,
)
from ._common import call as _call

__all__ = ["q1", "q2", "q3", "q4", "q5", "switch_experiment"]


# --- q1: the forward filter of a two-state HMM ------------------------------------------------------------
_PI = np.array([0.3, 0.7])
_A = np.array([[0.95, 0.05], [0.20, 0.80]])


def _hmm_sample(T: int, seed: int) -> np.ndarray:
    """Emission likelihoods (T, 2) of a simulated two-state Gaussian HMM (sd 1 and 3)."""
    rng = np.random.default_rng(seed)
    s = np.empty(T, dtype=int)
    s[0] = rng.choice(2, p=_PI)
    for t in range(1, T):
        s[t] = rng.choice(2, p=_A[s[t - 1]])
    x = rng.standard_normal(T) * np.where(s == 0, 1.0, 3.0)
    sd = np.array([1.0, 3.0])
    return np.exp(-0.5 * (x[:, None] / sd) ** 2) / (np.sqrt(2 * np.pi) * sd)


def _norm(a: np.ndarray) -> np.ndarray:
    return a / a.sum(axis=-1, keepdims=True)


def _variants(pi: np.ndarray, A: np.ndarray, lik: np.ndarray) -> dict[str, np.ndarray]:
    """Typical wrong answers, computed here to recognise them."""
    T = len(lik)
    out: dict[str, np.ndarray] = {}
    # forward-backward (smoothed)
    alpha = forward_filter(np.log(pi), np.log(A), np.log(lik))
    beta = np.ones((T, 2))
    for t in range(T - 2, -1, -1):
        beta[t] = _norm(A @ (lik[t + 1] * beta[t + 1]))
    out["smoothed"] = _norm(alpha * beta)
    out["transposed"] = forward_filter(np.log(pi), np.log(A.T), np.log(lik))
    out["uniform_start"] = forward_filter(np.log([0.5, 0.5]), np.log(A), np.log(lik))
    pred = np.empty((T, 2))
    pred[0] = pi
    pred[1:] = _norm(alpha[:-1] @ A)
    out["prediction"] = pred
    raw = np.empty((T, 2))
    a = pi * lik[0]
    raw[0] = a
    for t in range(1, T):
        a = (a @ A) * lik[t]
        raw[t] = a
    out["unnormalised"] = raw
    return out


def _check_filter(func: Any) -> None:
    for seed in (3, 4):
        lik = _hmm_sample(120, seed)
        got = _call(func, _PI.copy(), _A.copy(), lik.copy())
        got = np.asarray(got, dtype=float)
        if got.shape != lik.shape:
            raise CheckFailed(f"return one row of two probabilities per bar: expected shape {lik.shape}, got {got.shape}.")
        want = forward_filter(np.log(_PI), np.log(_A), np.log(lik))
        if np.allclose(got, want, atol=1e-8):
            continue
        wrong = _variants(_PI, _A, lik)
        if np.allclose(got, wrong["smoothed"], atol=1e-6):
            raise CheckFailed("these are smoothed probabilities: row t uses the bars after t (a backward pass). "
                              "The filter may only use bars up to t.")
        changed = lik.copy()
        changed[80:] = changed[80:][:, ::-1]
        again = np.asarray(_call(func, _PI.copy(), _A.copy(), changed), dtype=float)
        if not np.allclose(again[:80], got[:80], atol=1e-10):
            raise CheckFailed("your probabilities before bar 80 change when only bars from 80 on change: the "
                              "answer at t must not depend on later bars.")
        if not np.allclose(got.sum(axis=1), 1.0, atol=1e-6):
            raise CheckFailed("a row does not sum to 1: each row is a distribution over the two states given the "
                              "bars so far; normalise at every step (this also keeps the numbers from underflowing).")
        if np.allclose(got, wrong["transposed"], atol=1e-6):
            raise CheckFailed("the transition matrix is used the wrong way round: A[i, j] is the probability of "
                              "going FROM state i TO state j.")
        if np.allclose(got, wrong["prediction"], atol=1e-6):
            raise CheckFailed("these are one-step predictions P(s_t | bars before t): the evidence of bar t itself "
                              "is missing.")
        if np.allclose(got, wrong["uniform_start"], atol=1e-6):
            raise CheckFailed("the first bar should start from the initial distribution pi, not from equal odds.")
        raise CheckFailed("the values differ from P(s_t | bars up to t); compare your first two rows with a hand "
                          "computation.")


q1 = Task(
    "lesson07.q1",
    "Write forward_filter_2state(pi, A, lik): P(state at t | bars up to t) for each bar of a two-state HMM.",
    _check_filter,
    hint=("The probability at t combines where you could have been at t-1, how states move, and how likely bar "
          "t is under each state. Nothing after t may enter.",
          "Start with pi times the first bar's likelihoods and normalise. Then at each later bar: push the previous "
          "row through the transition matrix (row state to column state), multiply by this bar's likelihoods, "
          "normalise so the row sums to one."),
    solution="def forward_filter_2state(pi, A, lik):\n    out = np.empty_like(lik)\n    alpha = pi * lik[0]\n"
    "    out[0] = alpha / alpha.sum()\n    for t in range(1, len(lik)):\n        alpha = (out[t - 1] @ A) * lik[t]\n"
    "        out[t] = alpha / alpha.sum()\n    return out",
)


# --- q2: align on the training period, score on the test period ---------------------------------------------
def _drift_case(seed: int, split_pos: int = 900) -> tuple[pd.Series, pd.Series, pd.Timestamp]:
    """Three regimes; the detector's states keep their meaning for a while, then two of them swap.

    With a late split the training bars outnumber the test bars; with an early one (``split_pos=500``) the test
    bars dominate, so a map fitted on all bars follows the test bars and differs from the honest one."""
    rng = np.random.default_rng(seed)
    names = np.array(["bull", "bear", "crash"])
    lengths = rng.integers(20, 60, 60)
    codes = np.repeat(rng.integers(0, 3, len(lengths)), lengths)[:1500]
    idx = pd.bdate_range("2005-01-03", periods=len(codes))
    perm_train, perm_test = np.array([2, 0, 1]), np.array([0, 2, 1])
    states = np.where(np.arange(len(codes)) < split_pos, perm_train[codes], perm_test[codes])
    noise = rng.random(len(codes)) < 0.15
    states = np.where(noise, rng.integers(0, 3, len(codes)), states)
    return pd.Series(names[codes], index=idx), pd.Series(states, index=idx), idx[split_pos]


def _check_alignment(func: Any) -> None:
    for seed, split_pos in ((11, 900), (12, 900), (13, 500)):
        true, pred, split = _drift_case(seed, split_pos)
        got = _call(func, true.copy(), pred.copy(), split)
        if not isinstance(got, (float, int, np.floating)):
            raise CheckFailed(f"return the balanced accuracy as one number, got {type(got).__name__}.")
        got = float(got)
        train, test = true.index < split, true.index >= split
        mapping = align_labels(true[train], pred[train])
        want = regime_scores(true[test], relabel(pred[test], mapping))["balanced_accuracy"]
        if np.isclose(got, want, atol=1e-9):
            continue
        fit_all = regime_scores(true[test], relabel(pred[test], align_labels(true, pred)))["balanced_accuracy"]
        if np.isclose(got, fit_all, atol=1e-9):
            raise CheckFailed("the label map was fitted on bars that include the test bars: at the split nobody knew "
                              "them yet, so name the states with the bars before the split only.")
        on_test = regime_scores(true[test], relabel(pred[test], align_labels(true[test], pred[test])))
        if np.isclose(got, on_test["balanced_accuracy"], atol=1e-9):
            raise CheckFailed("the label map was chosen on the test bars, so the test labels decide how the test "
                              "labels are read: fit it on the bars before the split only.")
        on_all = regime_scores(true, relabel(pred, mapping))["balanced_accuracy"]
        all_map = regime_scores(true, relabel(pred, align_labels(true, pred)))["balanced_accuracy"]
        if np.isclose(got, on_all, atol=1e-9) or np.isclose(got, all_map, atol=1e-9):
            raise CheckFailed("score the test bars only (from the split on), after naming the states with the "
                              "training bars.")
        raise CheckFailed("not the balanced accuracy of the test bars under a one-to-one naming of the states "
                          "chosen on the training bars.")


q2 = Task(
    "lesson07.q2",
    "Write test_balanced_accuracy(true, predicted, split): name the states using only bars before split, "
    "then score the bars from split on.",
    _check_alignment,
    hint=("State numbers mean nothing until you map them to regimes; ask which bars you are allowed to use for "
          "that mapping at the split.",
          "Fit the one-to-one assignment (cl.align_labels) on the bars before the split, apply it to the later "
          "bars (cl.relabel), and compute the balanced accuracy there (cl.regime_scores)."),
    solution="def test_balanced_accuracy(true, predicted, split):\n    train = true.index < split\n"
    "    mapping = cl.align_labels(true[train], predicted[train])\n"
    "    named = cl.relabel(predicted[~train], mapping)\n"
    "    return cl.regime_scores(true[~train], named)[\"balanced_accuracy\"]",
)


# --- q3: the probability a live system had at the close of t ----------------------------------------------
def _q3_data() -> tuple[pd.Series, HMMRegimeDetector]:
    rng = np.random.default_rng(21)
    n = 700
    vol = np.where((np.arange(n) // 90) % 2 == 0, 0.008, 0.025)
    r = pd.Series(rng.standard_normal(n) * vol, index=pd.bdate_range("2012-01-02", periods=n), name="log_return")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegimeFitWarning)
        det = HMMRegimeDetector(2, seed=0).fit(r.iloc[:350])
    return r, det


def _check_causal_probability(func: Any) -> None:
    r, det = _q3_data()
    transmat = det.model_.transmat_.copy()
    for pos in (400, 455, 600):
        t = r.index[pos]
        got = _call(func, det, r.copy(), t)
        if not np.allclose(det.model_.transmat_, transmat) or det.fitted_until_ != r.index[349]:
            raise CheckFailed("your function refitted the detector, on bars up to and after t: the model must stay "
                              "the one fitted on the training period. Only apply it.")
        vec = np.asarray(got, dtype=float).reshape(-1)
        if vec.shape != (2,):
            raise CheckFailed(f"return the two regime probabilities at bar t, got shape {vec.shape}.")
        want = det.filter(r).loc[t].to_numpy()
        if np.allclose(vec, want, atol=1e-8):
            continue
        if np.allclose(vec, det.smooth(r).loc[t].to_numpy(), atol=1e-8):
            raise CheckFailed("these are smoothed probabilities over the whole series: they use bars after t, which "
                              "did not exist at the close of t.")
        if np.allclose(vec, det.filter(r).iloc[pos - 1].to_numpy(), atol=1e-8):
            raise CheckFailed("that is the row of the bar before t; the close of t is known at t.")
        raise CheckFailed("the values differ from what the causal detector said at the close of t.")


q3 = Task(
    "lesson07.q3",
    "Write probability_at(detector, returns, t): the regime probabilities a live system had at the close of t.",
    _check_causal_probability,
    hint=("A live system at the close of t has every bar up to t and none after. Which of the detector's methods "
          "gives an answer that does not change when later bars change?",
          "Use the forward filter (detector.filter) on the history, and read the row of t. The smoother on the "
          "history cut at t gives the same last row; on the full series it does not."),
    solution="def probability_at(detector, returns, t):\n    return detector.filter(returns.loc[:t]).iloc[-1]",
)


# --- q4: why the smoothed accuracy is out of reach ---------------------------------------------------------
_Q4_FEEDBACK = {
    "a": "both use the very same fitted parameters (one EM fit on the training period); look at which bars enter "
         "the probability of bar t.",
    "c": "in the lesson both are mapped to regimes the same way, on the training period.",
    "d": "filter and smoother share one model and one transition matrix.",
}


def _check_q4(answer: Any) -> None:
    if not isinstance(answer, str) or answer.strip().lower() not in ("a", "b", "c", "d"):
        raise CheckFailed("answer with one letter: 'a', 'b', 'c' or 'd'.")
    letter = answer.strip().lower()
    if letter != "b":
        raise CheckFailed(_Q4_FEEDBACK[letter])


q4 = Task(
    "lesson07.q4",
    "Why can no trader reach the smoothed HMM's accuracy? Answer 'a', 'b', 'c' or 'd'.",
    _check_q4,
    hint=("Run the cell that changes the returns after one date, and watch which probabilities before that date "
          "move.",
          "Compare what each method needs to know to produce its answer at bar t with what exists at the close of t."),
    solution="answer = 'b'  # the smoothed probability at t uses bars after t, which do not exist yet at t",
)


# --- q5: an experiment: heavy tails and the number of switches -------------------------------------------
@lru_cache(maxsize=4)
def switch_experiment(tail_df: float | None, seed: int = 0, n_bars: int = 2000) -> float:
    """Switches per year of a 2-state HMM filter on the second half of a synthetic market whose innovations
    have ``tail_df`` degrees of freedom (the HMM is fitted on the first half)."""
    from ..data.synthetic import make_synthetic_market
    from ..regimes.study import heavy_tail_config

    cfg = heavy_tail_config(tail_df) if tail_df is not None else None
    market = make_synthetic_market(n_bars, seed=seed, config=cfg)
    r = np.log(market.ohlcv["close"]).diff().dropna()
    half = len(r) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegimeFitWarning)
        det = HMMRegimeDetector(2, seed=seed).fit(r.iloc[:half])
    return switches_per_year(det.predict(r).iloc[half:])


def _check_q5(answer: Any) -> None:
    if not isinstance(answer, (bool, np.bool_)):
        raise CheckFailed("answer True or False (a bool), after running the experiment cell.")
    more = switch_experiment(2.5) > switch_experiment(5.0)
    if bool(answer) != more:
        raise CheckFailed("that is not what the experiment shows: print both numbers and compare them again.")


q5 = Task(
    "lesson07.q5",
    "Experiment: does the HMM filter switch more often on the heavy-tailed market (tail_df=2.5) than on the "
    "course market (tail_df=5)? Answer True or False.",
    _check_q5,
    hint=("Run switch_experiment for both tail settings and compare.",
          "A Gaussian state with a small variance finds a single huge return very unlikely; ask what the filter "
          "does at such a bar."),
    solution="calm, heavy = ex.switch_experiment(5.0), ex.switch_experiment(2.5)\nanswer = heavy > calm",
)
