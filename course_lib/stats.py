"""The course's one home for intervals and their readings.

Every interval a lesson prints comes from here, so every verdict uses the same rules:

* **Outcomes of overlapping windows are dependent.** Two h-bar outcomes that share bars are not two
  independent observations; a formula that assumes they are (Wilson, a plain t over windows) is too narrow.
  :func:`block_bootstrap_ci` resamples blocks of consecutive observations (``arch.bootstrap``), with blocks at
  least the horizon, so the dependence survives the resampling.
* **Replications (seeds) are independent.** :func:`t_interval` is Student's t over them (scipy's quantiles).
* **A bounded score gets a bounded interval.** Percentile bootstrap intervals of a bounded statistic stay in
  its range by construction; :func:`t_interval` takes ``bounds`` and clips (and says so in ``clipped``).
* **A verdict checks both sides.** :func:`interval_side` says above / below / covers; :func:`read_interval`
  turns a difference and its interval into the phrase the lessons print.
* **Many verdicts make a table, not a paragraph.** :func:`verdict_table` turns rows of estimates and intervals
  into a compact table with a ``reading`` column; :func:`summarize_verdicts` writes the one sentence that
  says which rows carry evidence, so a cell never assembles the same phrase row by row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "block_bootstrap_ci", "block_bootstrap_subset_ci", "interval_side", "overlap_block",
    "paired_seed_interval", "read_interval", "read_two_intervals", "summarize_verdicts", "t_interval",
    "verdict_table",
]

Side = Literal["above", "below", "covers", "undetermined"]


def t_interval(values: Sequence[float], level: float = 0.95,
               bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """Mean of independent replications with a Student-t interval: ``mean +- t_{n-1} * sd / sqrt(n)``.

    Non-finite values are dropped. Fewer than two values: no interval (NaN ends). ``bounds``: the range the
    quantity lives in (e.g. ``(0, 1)`` for an accuracy); the ends are clipped to it and ``clipped`` is 1.0
    when that happened, so a table can say so.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = np.asarray(values, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"diff": mean, "ci_low": float("nan"), "ci_high": float("nan"), "n": n, "clipped": 0.0}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    lo, hi = mean - half, mean + half
    clipped = 0.0
    if bounds is not None:
        c_lo, c_hi = max(lo, bounds[0]), min(hi, bounds[1])
        clipped = float((c_lo, c_hi) != (lo, hi))
        lo, hi = c_lo, c_hi
    return {"diff": mean, "ci_low": lo, "ci_high": hi, "n": n, "clipped": clipped}


def paired_seed_interval(values: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of ``values - baseline`` paired by seed, with a Student-t interval over the seeds.

    Pairing removes what a seed does to both arms alike (its initial weights, its market).
    """
    return t_interval(np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float), level)


def block_bootstrap_ci(x, block: int, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                       statistic: Callable[..., float] | None = None, *more) -> tuple[float, float]:
    """Percentile interval of ``statistic(x, *more)`` (default: the mean of ``x``) by circular block bootstrap.

    ``block``: the block length in observations. For outcomes over ``h`` bars on consecutive windows use at
    least ``h``; every observation then shares its overlapping neighbours' resample. ``more``: further arrays
    of the same length, resampled with the same blocks (paired data, e.g. predictions and outcomes).
    Non-finite rows are dropped first. Fewer than two rows: NaN ends. Percentile intervals of a bounded
    statistic stay inside its bounds.
    """
    from arch.bootstrap import CircularBlockBootstrap

    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    arrays = [np.asarray(a, dtype=float) for a in (x, *more)]
    if any(len(a) != len(arrays[0]) for a in arrays):
        raise ValueError(f"the arrays must have one length; got {[len(a) for a in arrays]}")
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays]) if arrays[0].size else np.zeros(0, bool)
    arrays = [a[ok] for a in arrays]
    n = len(arrays[0])
    if n < 2:
        return float("nan"), float("nan")
    block = int(max(1, min(block, n)))
    stat = statistic or (lambda a: float(np.mean(a)))
    bs = CircularBlockBootstrap(block, *arrays, seed=seed)
    ci = bs.conf_int(lambda *a: np.atleast_1d(stat(*a)), reps=n_boot, method="percentile", size=level)
    return float(ci[0, 0]), float(ci[1, 0])



def block_bootstrap_subset_ci(x, mask, block: int, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                              other=None) -> tuple[float, float]:
    """Percentile interval of the mean of ``x`` over the rows where ``mask`` is true (minus its mean over the
    rows of ``other``, when given), by a circular block bootstrap of the **whole** series (blocks of
    consecutive rows, at least the horizon).

    A subset of windows (the onsets after planted motifs, say) clusters in time; resampling blocks of the whole
    period keeps each cluster and its neighbours together, where resampling the subset's own rows would glue
    far-apart clusters into one block. A resample that happens to hold no row of a group has no mean and is
    left out. Non-finite ``x`` rows are dropped first; fewer than two rows in a group: NaN ends.
    """
    from arch.bootstrap import CircularBlockBootstrap

    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    x = np.asarray(x, dtype=float)
    m = np.asarray(mask, dtype=bool)
    o = np.zeros_like(m) if other is None else np.asarray(other, dtype=bool)
    if not (x.shape == m.shape == o.shape):
        raise ValueError(f"x and the masks must have one length; got {x.shape}, {m.shape} and {o.shape}")
    ok = np.isfinite(x)
    x, m, o = x[ok], m[ok].astype(float), o[ok].astype(float)
    if m.sum() < 2 or (other is not None and o.sum() < 2):
        return float("nan"), float("nan")
    block = int(max(1, min(block, len(x))))

    def stat(a, wa, wb):
        wa, wb = wa > 0.5, wb > 0.5
        if not wa.any() or (other is not None and not wb.any()):
            return np.array([np.nan])
        return np.array([a[wa].mean() - (a[wb].mean() if other is not None else 0.0)])

    draws = CircularBlockBootstrap(block, x, m, o, seed=seed).apply(stat, reps=n_boot)[:, 0]
    draws = draws[np.isfinite(draws)]
    if len(draws) < 2:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))

def interval_side(low: float, high: float, null: float = 0.0) -> Side:
    """Where an interval lies relative to ``null``: wholly ``above``, wholly ``below``, or ``covers`` it.

    ``undetermined`` when an end is missing (one replication, no scored windows).
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undetermined"
    if low > null:
        return "above"
    if high < null:
        return "below"
    return "covers"


def read_interval(diff: float, low: float, high: float, unit: str = "points", scale: float = 100.0,
                  gain: str = "a gain", loss: str = "a loss", null: float = 0.0) -> str:
    """One phrase for a difference and its 95% interval, with what a reader may conclude from it.

    Above ``null``: evidence of ``gain``; below: evidence of ``loss``; covering it: no evidence either way (a
    setting whose interval covers zero may still matter, by less than this experiment can see).
    """
    side = interval_side(low, high, null)
    if side == "undetermined":
        return f"{scale * diff:+.1f} {unit} (a single replication has no interval: no conclusion)"
    if low == high and diff != 0:
        return (f"{scale * diff:+.1f} {unit}, the same in every replication (no spread, so no interval: "
                "too few replications for a conclusion)")
    verdict = {"above": f"the interval lies above zero: evidence of {gain}",
               "below": f"the interval lies below zero: evidence of {loss}",
               "covers": "the interval covers zero: no evidence that this matters here"}[side]
    if null != 0.0:
        verdict = verdict.replace("zero", f"{scale * null:g}")
    return f"{scale * diff:+.1f} {unit}, 95% interval [{scale * low:+.1f}, {scale * high:+.1f}]: {verdict}"


def overlap_block(horizon: int) -> int:
    """Block length (in consecutive observations) for a bootstrap over outcomes that each span ``horizon``
    bars on consecutive windows: twice the horizon.

    Blocks of at least the horizon keep two overlapping outcomes together; blocks of *exactly* the horizon
    still cut the dependence at every block edge and give intervals that are too narrow (on i.i.d. noise a
    95% hit-rate interval then excludes one half in about 7% of markets instead of 5%); twice the horizon
    brings that back to its nominal rate (``tests/test_null_rates.py`` measures it).
    """
    if int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}.")
    return 2 * int(horizon) if int(horizon) > 1 else 1


def _reading(side: Side, null: float, gain: str, loss: str) -> str:
    ref = f"{null:g}"
    return {"above": f"above {ref}: evidence of {gain}",
            "below": f"below {ref}: evidence of {loss}",
            "covers": f"covers {ref}: no evidence either way",
            "undetermined": "no interval: no conclusion"}[side]


def _rows(table, estimate: str, low: str, high: str):
    """(name, estimate, low, high) per row of a DataFrame or of a mapping name -> (estimate, low, high)."""
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        missing = [c for c in (estimate, low, high) if c not in table.columns]
        if missing:
            raise KeyError(f"verdict table: columns {missing} not found; the table has {list(table.columns)}. "
                           "Name them with estimate=, low=, high=.")
        return [(name, float(r[estimate]), float(r[low]), float(r[high])) for name, r in table.iterrows()]
    return [(name, *map(float, v)) for name, v in dict(table).items()]


def verdict_table(table, estimate: str = "diff", low: str = "ci_low", high: str = "ci_high", *,
                  null: float = 0.0, scale: float = 1.0, digits: int = 2, unit: str = "",
                  gain: str = "a gain", loss: str = "a loss", name: str | None = None, level: float = 0.95):
    """A compact table of estimates, their intervals and what each one lets a reader conclude.

    Args:
        table: a DataFrame with one row per comparison (columns ``estimate``, ``low``, ``high``), or a
            mapping ``{row name: (estimate, low, high)}``.
        null: the value of "no effect" (0 for a difference, 0.5 for a hit rate, 1 for a ratio). The reading
            checks both sides of the interval (:func:`interval_side`): wholly above ``null`` is evidence of
            ``gain``, wholly below is evidence of ``loss``, covering it is no evidence either way, and a missing
            end (a single replication) is no conclusion.
        scale, digits, unit: how numbers are shown (``scale=100, unit=" pts"`` for accuracy points).
        name: the header of the estimate column (default: ``estimate``).

    Returns:
        A DataFrame indexed like ``table`` with the formatted estimate, the interval and a ``reading`` column;
        ``.attrs["sides"]`` keeps each row's side for :func:`summarize_verdicts`.

    Example::

        >>> verdict_table({"memory": (0.02, 0.005, 0.035), "no memory": (0.0, -0.01, 0.01)})  # doctest: +SKIP
                  estimate   95% interval                         reading
        memory       +0.02  [+0.01, +0.04]       above 0: evidence of a gain
        no memory    +0.00  [-0.01, +0.01]  covers 0: no evidence either way
    """
    import pandas as pd

    rows = _rows(table, estimate, low, high)
    sides = {n: interval_side(lo, hi, null) for n, _, lo, hi in rows}

    def fmt(v: float) -> str:
        if not np.isfinite(v):
            return "n/a"
        x = scale * v
        return f"{0.0 if round(x, digits) == 0 else x:+.{digits}f}{unit}"  # no "-0.0000": rounded to zero, no sign

    out = pd.DataFrame(
        {name or estimate: [fmt(e) for _, e, _, _ in rows],
         f"{level:.0%} interval": [f"[{fmt(lo)}, {fmt(hi)}]" if sides[n] != "undetermined" else "n/a"
                                   for n, _, lo, hi in rows],
         "reading": [_reading(sides[n], scale * null, gain, loss) for n, _, _, _ in rows]},
        index=pd.Index([n for n, *_ in rows], name=getattr(getattr(table, "index", None), "name", None)),
    )
    out.attrs["sides"] = sides
    out.attrs["gain"], out.attrs["loss"], out.attrs["null"] = gain, loss, f"{scale * null:g}"
    return out


def _label(name) -> str:
    """A row name as a reader sees it: the levels of a MultiIndex row joined by " / "."""
    return " / ".join(map(str, name)) if isinstance(name, tuple) else str(name)


def summarize_verdicts(verdicts, what: str = "comparisons") -> str:
    """One sentence over a :func:`verdict_table`: which rows carry evidence of a gain, which of a loss, and
    how many intervals cover the null. Names rows only where there is evidence, so it stays short."""
    sides: dict = verdicts.attrs["sides"]
    gain, loss = verdicts.attrs.get("gain", "a gain"), verdicts.attrs.get("loss", "a loss")
    null = verdicts.attrs.get("null", "0")
    groups = {s: [_label(n) for n, v in sides.items() if v == s] for s in ("above", "below", "covers", "undetermined")}
    n = len(sides)
    if n == 0:
        return f"No {what}."

    parts = []
    for side, evidence in (("above", gain), ("below", loss)):
        k = len(groups[side])
        if k:
            subject = f"{k} of {n} {what}" if n > 1 else "The estimate"
            verb = "shows" if k == 1 else "show"
            names = f" ({', '.join(groups[side])})" if n > 1 else ""
            parts.append(f"{subject} {verb} evidence of {evidence}{names}")
    c = len(groups["covers"])
    if c:
        if c == n:
            parts.append(f"the interval covers {null}: no evidence either way" if n == 1 else
                         f"{'both' if n == 2 else f'all {n}'} intervals cover {null}: no evidence either way")
        else:
            parts.append(f"{c} {'interval covers' if c == 1 else 'intervals cover'} {null} (no evidence either way)")
    u = len(groups["undetermined"])
    if u:
        parts.append(f"{u} without an interval (too few replications for a conclusion)")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."



def read_two_intervals(diff: float, seed_low: float, seed_high: float, boot_low: float, boot_high: float,
                       unit: str = "points", scale: float = 100.0, gain: str = "a gain", loss: str = "a loss",
                       digits: int = 1) -> str:
    """One phrase for a paired difference with its interval over seeds and its block bootstrap over test windows.

    ``digits``: decimals of the printed numbers (after ``scale``). Both wholly on one side of zero: evidence
    (neither the training seed nor the test days explain it); one
    only: suggestive, not conclusive; neither (or opposite sides): no evidence either way. An interval of zero
    width (every replication gave the same number: too few of them) counts as no interval.
    """
    def side(lo: float, hi: float) -> Side:
        return "undetermined" if abs(hi - lo) <= 1e-9 else interval_side(lo, hi)  # rounding-level width: none

    a, b = side(seed_low, seed_high), side(boot_low, boot_high)
    sides = {a, b} - {"covers", "undetermined"}
    if a == b and a in ("above", "below"):
        verdict = f"both intervals lie {a} zero: evidence of {gain if a == 'above' else loss}"
    elif len(sides) == 1:
        side = sides.pop()
        verdict = (f"only the interval over {'seeds' if a == side else 'test windows'} lies {side} zero: "
                   "suggestive, not conclusive")
    elif sides:
        verdict = "the two intervals lie on opposite sides of zero: no conclusion"
    elif "undetermined" in (a, b) and "covers" not in (a, b):
        verdict = "too few replications or windows for an interval: no conclusion"
    else:
        verdict = "no interval excludes zero: no evidence either way"
    def f(v: float) -> str:
        return f"{scale * v:+.{digits}f}"

    unit_ = f" {unit}" if unit else ""
    return (f"{f(diff)}{unit_} (over seeds [{f(seed_low)}, {f(seed_high)}], over test windows "
            f"[{f(boot_low)}, {f(boot_high)}]): {verdict}")
