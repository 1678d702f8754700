"""Checks for exercises/01_data_preparation: log returns, a causal z-score, an embargoed split, the target,
and an experiment with a leaky (centred) feature.

Each checker runs the learner's function on its own seeded random prices, then:

* hunts for look-ahead first, by changing the data *after* a time t and checking that nothing at or
  before t moved (the test every causal transform must pass);
* recognises the typical wrong answers (simple instead of log returns, a centred window, a full-sample
  z-score, a split without an embargo, a backward-looking target) and explains them;
* never prints the expected numbers.

The experiment tasks (q5, q6) recompute their truth here, on the bundled S&P 500, with the library's own
functions, so an answer cannot be copied and a wrong one is never answered with the right value.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..data.features import forward_log_return
from ..data.features import log_returns as _lib_log_returns
from ..data.loaders import load_sample
from ..exercise import CheckFailed, Task, _PlaceholderReturned, call_answer, is_placeholder
from ._common import choice_checker, format_options, numeric_checker

__all__ = ["q1", "q2", "q3", "q4", "q5", "q6"]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _prices(n: int, seed: int) -> pd.Series:
    """A random-walk close series on business days (its own data: nothing to copy from the notebook)."""
    rng = np.random.default_rng(seed)
    steps = 0.012 * rng.standard_t(5, n) + 0.0003
    index = pd.bdate_range("2015-01-05", periods=n, name="time")
    return pd.Series(100.0 * np.exp(np.cumsum(steps)), index=index, name="close")


def _noisy_level(n: int, seed: int) -> pd.Series:
    """A series whose level and spread drift over time, so full-sample and rolling statistics differ."""
    rng = np.random.default_rng(seed)
    level = np.cumsum(rng.standard_normal(n)) * 0.5
    spread = 1.0 + 0.5 * np.sin(np.linspace(0, 6, n))
    index = pd.bdate_range("2016-01-04", periods=n, name="time")
    return pd.Series(level + spread * rng.standard_normal(n), index=index, name="x")


def _contains_blank(value: Any) -> bool:
    if is_placeholder(value):
        return True
    if isinstance(value, (tuple, list)):
        return any(_contains_blank(v) for v in value)
    if isinstance(value, (pd.Series, np.ndarray)) and value.dtype == object and len(value):
        first = value.iloc[0] if isinstance(value, pd.Series) else value.flat[0]
        return is_placeholder(first)
    return False


def _source_has_blank(func: Any) -> bool:
    """True if the function's source code still contains the blank (works for notebook cells too)."""
    try:
        return "____" in inspect.getsource(func)
    except (OSError, TypeError):
        return False


def _call(func: Any, *args: Any) -> Any:
    """Call the learner's function; a blank ``____`` left anywhere in it means 'not attempted'."""
    try:
        out = call_answer(func, *args)
    except (CheckFailed, _PlaceholderReturned, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - an operation on ____ fails, often with an error naming it
        if "_Placeholder" in str(exc) or "____" in str(exc) or _source_has_blank(func):
            raise _PlaceholderReturned from exc
        raise
    if _contains_blank(out):
        raise _PlaceholderReturned
    return out


def _as_series(out: Any, like: pd.Series, what: str) -> pd.Series:
    """Accept a Series (or a same-length array) aligned with ``like``; explain anything else."""
    if isinstance(out, pd.DataFrame):
        raise CheckFailed(f"{what} returned a DataFrame; return a single pandas Series (one column).")
    if isinstance(out, np.ndarray) and out.ndim == 1 and len(out) == len(like):
        out = pd.Series(out, index=like.index)
    if not isinstance(out, pd.Series):
        raise CheckFailed(f"{what} should return a pandas Series, got {type(out).__name__}.")
    if len(out) != len(like):
        raise CheckFailed(
            f"{what} returned {len(out)} values for {len(like)} input bars. Keep one value per bar "
            "(undefined values stay NaN; don't dropna() inside the function)."
        )
    if not out.index.equals(like.index):
        raise CheckFailed(f"{what} changed the index. Keep the input's time index so values stay aligned with their bars.")
    try:
        return out.astype(float)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what} returned values that are not numbers ({exc}).") from exc


def _same(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    """Equal values with NaNs in the same places."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _first_mismatch(out: pd.Series, ref: pd.Series) -> str:
    a, b = out.to_numpy(dtype=float), ref.to_numpy(dtype=float)
    bad = ~(np.isclose(a, b, rtol=1e-6, atol=1e-9) | (np.isnan(a) & np.isnan(b)))
    pos = int(np.flatnonzero(bad)[0])
    return f"{int(bad.sum())} of {len(a)} values differ, the first at bar {pos} ({out.index[pos].date()})"


def _perturb_after(x: pd.Series, t: int, seed: int, multiplicative: bool) -> pd.Series:
    """A copy of ``x`` with every value after position ``t`` changed (prices stay positive)."""
    rng = np.random.default_rng(seed)
    y = x.copy()
    noise = rng.standard_normal(len(x) - t - 1)
    if multiplicative:
        y.iloc[t + 1 :] = y.iloc[t + 1 :].to_numpy() * np.exp(0.2 * noise)
    else:
        y.iloc[t + 1 :] = y.iloc[t + 1 :].to_numpy() + 3.0 * noise
    return y


def _looks_ahead(func: Any, x: pd.Series, t: int, *args: Any, multiplicative: bool = False) -> bool:
    """True if changing values after bar t changes the output at or before t."""
    before = np.asarray(_call(func, x.copy(), *args), dtype=float)[: t + 1]
    after = np.asarray(_call(func, _perturb_after(x, t, 7, multiplicative), *args), dtype=float)[: t + 1]
    return not _same(before, after)


# ----------------------------------------------------------------------------------------------------
# q1: log returns
# ----------------------------------------------------------------------------------------------------
def _check_log_returns(answer: Any) -> None:
    for n, seed in ((250, 11), (97, 12)):
        close = _prices(n, seed)
        out = _as_series(_call(answer, close.copy()), close, "log_returns(close)")
        t = n // 2
        if _looks_ahead(answer, close, t, multiplicative=True):
            raise CheckFailed(
                "your return at bar t changes when a price *after* t changes: it looks into the future. "
                "The return of bar t may only compare prices known at the close of bar t."
            )
        ref = np.log(close).diff()
        if _same(out, ref):
            continue
        if np.isfinite(out.iloc[0]):
            raise CheckFailed(
                "the first bar has no previous close, so its return is undefined: leave it NaN (not 0, not dropped)."
            )
        if _same(out, close.pct_change()):
            raise CheckFailed(
                "these are simple returns (percentage changes). The task asks for returns that add up over "
                "time, which simple returns don't."
            )
        if _same(out, -ref):
            raise CheckFailed("the sign is flipped: a rising price must give a positive return.")
        raise CheckFailed(f"not the log returns of the closes: {_first_mismatch(out, ref)}.")


q1 = Task(
    name="lesson01.q1",
    prompt="Write log_returns(close): each bar's price move as a number that adds up across bars (the moves of "
    "a week sum to the week's move) and is known at that bar's close; missing where there is no previous bar.",
    checker=_check_log_returns,
    hint=(
        "Which transform of a ratio of prices turns products (compounding) into sums?",
        "Take the logarithm of each close divided by the close one bar earlier. Pandas can line the previous "
        "bar up with the current row, or you can difference the log price. The first bar has no previous "
        "close: leave it missing, don't fill it and don't drop it.",
    ),
    solution="def log_returns(close):\n    return np.log(close).diff()   # same as np.log(close / close.shift(1))",
)


# ----------------------------------------------------------------------------------------------------
# q2: causal rolling z-score
# ----------------------------------------------------------------------------------------------------
def _check_zscore(answer: Any) -> None:
    for n, window, seed in ((300, 20, 21), (120, 7, 22)):
        x = _noisy_level(n, seed)
        out = _as_series(_call(answer, x.copy(), window), x, "causal_zscore(x, window)")
        t = n // 2
        if _looks_ahead(answer, x, t, window):
            full = (x - x.mean()) / x.std()
            full0 = (x - x.mean()) / x.std(ddof=0)
            centred = [
                (x - r.mean()) / r.std(ddof=d)
                for d in (0, 1)
                for r in (x.rolling(window, center=True, min_periods=1), x.rolling(window, center=True))
            ]
            if _same(out, full) or _same(out, full0):
                raise CheckFailed(
                    "your z-score at t changes when you change a value after t: it looks ahead. You standardised "
                    "with the mean and std of the *whole* series, which at bar t include the future. Use "
                    "statistics of the trailing window only."
                )
            if any(_same(out, c) for c in centred):
                raise CheckFailed(
                    "your z-score at t changes when you change a value after t: it looks ahead. A centred window "
                    "(center=True) averages bars on both sides of t; use a trailing window that ends at t."
                )
            raise CheckFailed(
                "your z-score at t changes when you change a value after t: it looks ahead. At bar t use only "
                "x up to and including t."
            )
        warm = out.iloc[: window - 1]
        if np.isfinite(warm.to_numpy()).any():
            raise CheckFailed(
                f"the first window - 1 bars (here {window - 1}) have no full window yet: leave them NaN "
                "(pandas: rolling(window) with the default min_periods does this)."
            )
        roll = x.rolling(window)
        accepted = [(x - roll.mean()) / roll.std(), (x - roll.mean()) / roll.std(ddof=0)]
        if any(_same(out, ref) for ref in accepted):
            continue
        past = x.shift(1).rolling(window)
        if _same(out, (x - past.mean()) / past.std()) or _same(out, (x - past.mean()) / past.std(ddof=0)):
            raise CheckFailed(
                "your statistics use the window *before* t (bars t-window .. t-1). Here the window ends at t "
                "and includes it: the last `window` bars up to and including t."
            )
        for w in (window - 1, window + 1):
            r = x.rolling(w)
            if _same(out.iloc[window + 1 :], ((x - r.mean()) / r.std()).iloc[window + 1 :]):
                raise CheckFailed(f"your rolling window is {w} bars long, not `window` = {window}.")
        if _same(out, x - roll.mean()) or _same(out, x / roll.std()):
            raise CheckFailed("a z-score subtracts the rolling mean *and* divides by the rolling std.")
        raise CheckFailed(f"values differ from the trailing z-score: {_first_mismatch(out, accepted[0])}.")


q2 = Task(
    name="lesson01.q2",
    prompt="Write causal_zscore(x, window): how many standard deviations x_t sits from its recent average, where "
    "'recent' means the last `window` values known at the close of t (t included); missing until a window is full.",
    checker=_check_zscore,
    hint=(
        "Which pandas tool computes statistics over a window that ends at each row?",
        "Take a trailing rolling mean and rolling standard deviation over `window` rows (not centred, not "
        "the whole series), subtract the one and divide by the other. The default minimum number of "
        "observations already leaves the first window - 1 rows missing.",
    ),
    solution="def causal_zscore(x, window):\n    roll = x.rolling(window)\n    return (x - roll.mean()) / roll.std()",
)


# ----------------------------------------------------------------------------------------------------
# q3: embargoed chronological split
# ----------------------------------------------------------------------------------------------------
def _as_index_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise CheckFailed(f"{name} should be a 1-D array of sample positions, got shape {arr.shape}.")
    if arr.dtype == bool:
        raise CheckFailed(f"{name} is a boolean mask; return the integer positions (np.arange(...) or np.flatnonzero).")
    if len(arr) and not np.issubdtype(arr.dtype, np.integer):
        if not np.allclose(arr, np.round(arr)):
            raise CheckFailed(f"{name} should hold integer sample positions.")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64)


def _check_split(answer: Any) -> None:
    cases = ((1000, 0.7, 0.15, 10), (503, 0.6, 0.2, 25), (250, 0.5, 0.25, 1), (777, 0.6, 0.1, 64))
    for n, train_frac, val_frac, gap in cases:
        out = _call(answer, n, train_frac, val_frac, gap)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise CheckFailed("return three arrays of sample positions: (train, val, test).")
        train, val, test = (_as_index_array(a, name) for a, name in zip(out, ("train", "val", "test")))
        where = f"(for n_samples={n}, train_frac={train_frac}, val_frac={val_frac}, gap={gap})"
        for arr, name in ((train, "train"), (val, "val"), (test, "test")):
            if len(arr) == 0:
                raise CheckFailed(f"{name} is empty {where}.")
            if len(arr) > 1 and not (np.diff(arr) == 1).all():
                raise CheckFailed(
                    f"{name} is not one contiguous block in time order {where}. A shuffled split lets the model "
                    "train on days that come after the days it is tested on: keep each part a consecutive block."
                )
        if not (train[-1] < val[0] and val[-1] < test[0]):
            raise CheckFailed(f"the parts must follow each other in time: train, then val, then test {where}.")
        if train[0] != 0:
            raise CheckFailed(f"train should start at the first sample (position 0) {where}.")
        if len(train) != int(n * train_frac):
            raise CheckFailed(f"train has the wrong size {where}: it holds the first int(n_samples * train_frac) samples.")
        if len(val) != int(n * val_frac):
            raise CheckFailed(f"val has the wrong size {where}: it holds int(n_samples * val_frac) samples.")
        if test[-1] != n - 1:
            raise CheckFailed(f"test should run to the last sample (position n_samples - 1) {where}.")
        for left, right, a, b in (("train", "val", train, val), ("val", "test", val, test)):
            skipped = int(b[0] - a[-1] - 1)
            if skipped == 0:
                raise CheckFailed(
                    f"there is no embargo between {left} and {right} {where}. The last {left} labels look "
                    f"{gap} bar(s) ahead, into the {right} period: skip `gap` samples at the boundary."
                )
            if skipped < gap:
                raise CheckFailed(f"only {skipped} sample(s) are skipped between {left} and {right} {where}; the embargo is `gap`.")
            if skipped > gap:
                raise CheckFailed(
                    f"{skipped} samples are skipped between {left} and {right} {where}: more than `gap`, which "
                    "wastes data. Start the next part exactly `gap` samples after the previous one ends."
                )


q3 = Task(
    name="lesson01.q3",
    prompt="Write embargoed_split(n_samples, train_frac, val_frac, gap) -> (train, val, test) sample positions in time "
    "order: the first int(n_samples * train_frac) train, int(n_samples * val_frac) validate, the rest test. Labels "
    "look `gap` samples ahead: no label of one part may reach into the next, and no more data is wasted than that.",
    checker=_check_split,
    hint=(
        "Take the last training sample: how far into the future does its label reach, and which samples does "
        "that make unusable for validation?",
        "Build three consecutive ranges of positions and leave exactly `gap` unused positions between train "
        "and validation and again between validation and test; test runs to the last sample.",
    ),
    solution=(
        "def embargoed_split(n_samples, train_frac, val_frac, gap):\n"
        "    n_train = int(n_samples * train_frac)\n"
        "    n_val = int(n_samples * val_frac)\n"
        "    train = np.arange(0, n_train)\n"
        "    val = np.arange(n_train + gap, n_train + gap + n_val)\n"
        "    test = np.arange(val[-1] + 1 + gap, n_samples)\n"
        "    return train, val, test"
    ),
)


# ----------------------------------------------------------------------------------------------------
# q4: target alignment
# ----------------------------------------------------------------------------------------------------
def _check_target(answer: Any) -> None:
    for n, horizon, seed in ((200, 1, 31), (150, 5, 32)):
        close = _prices(n, seed)
        out = _as_series(_call(answer, close.copy(), horizon), close, "forward_return(close, horizon)")
        logp = np.log(close)
        ref = logp.shift(-horizon) - logp
        if _same(out, ref):
            continue
        if _same(out, logp - logp.shift(horizon)):
            raise CheckFailed(
                "your target at t is the return that *ended* at t: it is already known at t, so there is "
                "nothing to predict. The target is the return over the *next* `horizon` bars, (t, t+horizon]."
            )
        if _same(out, logp.shift(-horizon - 1) - logp.shift(-1)):
            raise CheckFailed("your target starts one bar late: measure it from close_t to close_(t+horizon).")
        if _same(out, close.shift(-horizon) / close - 1.0):
            raise CheckFailed("these are simple returns; the course's targets are log returns (they add up over time).")
        for k in range(1, 2 * horizon + 3):
            if k != horizon and _same(out, logp.shift(-k) - logp):
                raise CheckFailed(f"your target looks {k} bar(s) ahead; it must look `horizon` = {horizon} bar(s) ahead.")
        tail = out.iloc[-horizon:].to_numpy()
        if np.isfinite(tail).any():
            raise CheckFailed(
                f"the last horizon = {horizon} bar(s) have no future price in the data: their target must be NaN "
                "(not 0, not a shorter return)."
            )
        raise CheckFailed(f"values differ from log(close_(t+horizon) / close_t): {_first_mismatch(out, ref)}.")


q4 = Task(
    name="lesson01.q4",
    prompt="Write forward_return(close, horizon): what a model at the close of bar t must predict: the log move from "
    "that close to the close `horizon` bars later; missing where that later close is not in the data.",
    checker=_check_target,
    hint=(
        "Which way must a series be shifted so that row t sees a later price?",
        "Bring the close `horizon` bars ahead up to row t with a negative shift, divide by the current close "
        "and take the log. The last `horizon` rows have no future price; the shift leaves them missing, "
        "which is exactly right.",
    ),
    solution="def forward_return(close, horizon):\n    return np.log(close.shift(-horizon) / close)",
)


# ----------------------------------------------------------------------------------------------------
# q5, q6: experiment - what a centred (leaky) feature seems to predict
# ----------------------------------------------------------------------------------------------------
def _rank_ic(feature: pd.Series, target: pd.Series) -> float:
    ok = feature.notna() & target.notna()
    return float(feature[ok].rank().corr(target[ok].rank()))


@lru_cache(maxsize=1)
def _leak_study() -> dict[tuple[int, bool], float]:
    """Rank IC of the w-bar mean log return (trailing or centred) with the next bar's log return."""
    close = load_sample("sp500")["close"]
    r, target = _lib_log_returns(close), forward_log_return(close, 1)
    return {(w, centred): _rank_ic(r.rolling(w, center=centred).mean(), target)
            for w in (3, 5, 21) for centred in (False, True)}


def _leak_mistakes(got: float) -> str | None:
    study = _leak_study()
    if abs(got - study[(5, False)]) < 0.005:
        return "that is the IC of the trailing (honest) 5-bar mean; the task asks for the centred one."
    close = load_sample("sp500")["close"]
    f = _lib_log_returns(close).rolling(5, center=True).mean()
    y = forward_log_return(close, 1)
    ok = f.notna() & y.notna()
    if abs(got - float(np.corrcoef(f[ok], y[ok])[0, 1])) < 0.005:
        return "that is the Pearson correlation of the raw values; the IC correlates their ranks (Spearman)."
    return None


q5 = Task(
    "lesson01.q5",
    "Experiment: on the bundled S&P 500, build the 5-bar mean of log returns centred on t (the window reaches 2 "
    "bars into the future) and report its rank IC (Spearman) with the next bar's log return, over the bars where "
    "both are defined.",
    numeric_checker(lambda: _leak_study()[(5, True)], "the centred feature's IC", abs_tol=0.005,
                    mistakes=_leak_mistakes),
    hint=(
        "You already wrote both halves: the feature is a rolling mean with one switch flipped, the target is "
        "your forward return with horizon 1.",
        "Compute the log returns, take a 5-bar rolling mean centred on each bar, keep the rows where feature "
        "and target are both defined, rank both and correlate the ranks. Compare with the trailing version "
        "of the same feature before you answer.",
    ),
    solution=(
        "r = log_returns(close)\n"
        "target = forward_return(close, 1)\n"
        "leaky = r.rolling(5, center=True).mean()\n"
        "ok = leaky.notna() & target.notna()\n"
        "centred_ic = leaky[ok].rank().corr(target[ok].rank())"
    ),
)

_LEAK_OPTIONS = {
    "a": "the 3-bar centred window",
    "b": "the 5-bar centred window",
    "c": "the 21-bar centred window",
    "d": "all three about the same (within 0.02 of each other)",
}


def _leak_truth() -> str:
    ics = {w: _leak_study()[(w, True)] for w in (3, 5, 21)}
    if max(ics.values()) - min(ics.values()) < 0.02:
        return "d"
    return {3: "a", 5: "b", 21: "c"}[max(ics, key=ics.get)]


q6 = Task(
    "lesson01.q6",
    "Interpret: repeat the experiment with centred windows of 3, 5 and 21 bars. Which shows the largest fake edge? "
    + format_options(_LEAK_OPTIONS),
    choice_checker(_LEAK_OPTIONS, _leak_truth, "the window with the largest fake edge"),
    hint=(
        "How many of the bars averaged by a centred window is the target itself, and what weight does it get?",
        "Loop over the three windows, compute the centred feature's IC as in the previous task, and compare. "
        "Then explain the order: the next bar's return is one of the w averaged values, so its share of the "
        "feature is 1 / w.",
    ),
    solution=(
        "def centred_ic(w):\n"
        "    f = r.rolling(w, center=True).mean()\n"
        "    ok = f.notna() & target.notna()\n"
        "    return f[ok].rank().corr(target[ok].rank())\n\n"
        "ics = {w: centred_ic(w) for w in (3, 5, 21)}\n"
        "answer = {3: 'a', 5: 'b', 21: 'c'}[max(ics, key=ics.get)]"
    ),
)
