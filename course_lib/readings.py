"""Readings that lessons 06-08 print more than once, built on :mod:`course_lib.stats`.

:func:`course_lib.verdict_table` turns any estimate and interval into a reading. Three kinds of verdict come back
in several cells with the same words, so their wording lives here, once, and is tested:

* :func:`hit_rate_verdicts`: direction hit rates against a coin (one half), in percent (lesson 06);
* :func:`sharpe_verdicts` and :func:`sharpe_summary`: Sharpe ratios of trading rules against zero (a reliable
  earner, a reliable loser) and against a benchmark's Sharpe (lessons 06 and 08);
* :func:`paired_seed_differences`: "arm a minus arm b", paired by seed, with a t interval over the seeds, ready
  for :func:`course_lib.verdict_table` (lesson 07).

Every reading checks both sides of its interval (:func:`course_lib.interval_side`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from .stats import interval_side, t_interval, verdict_table

__all__ = ["hit_rate_verdicts", "paired_seed_differences", "sharpe_summary", "sharpe_verdicts"]

_SHARPE_READING = {"above": "above 0: a reliable earner", "below": "below 0: a reliable loser",
                   "covers": "covers 0: no evidence either way", "undetermined": "no interval: no conclusion"}
_BENCHMARK_READING = {"above": "interval above it: the strategy did better",
                      "below": "interval below it: {b} did better",
                      "covers": "inside the interval: no evidence either way",
                      "undetermined": "no interval: no conclusion"}


def hit_rate_verdicts(table, estimate: str = "hit_rate", low: str = "hit_low", high: str = "hit_high", *,
                      digits: int = 1, name: str = "hit rate"):
    """Direction hit rates (shares in [0, 1]) read against a coin: is the interval above one half, below it, or
    does it cover it?

    ``table``: a DataFrame with the three columns, or a mapping ``{row: (rate, low, high)}``. Returns a
    :func:`course_lib.verdict_table` in percent (``58.0%``, no sign: a rate is not a difference) whose reading
    is "above 50%: evidence of direction skill", "below 50%: evidence of a forecast that points the wrong way",
    "covers 50%: no evidence either way" or "no interval: no conclusion". :func:`course_lib.summarize_verdicts`
    reads it.
    """
    out = verdict_table(table, estimate, low, high, null=0.5, scale=100, digits=digits, unit="%", name=name,
                        gain="direction skill", loss="a forecast that points the wrong way")
    for col in out.columns[:2]:  # a rate is shown without the sign of a difference
        out[col] = out[col].str.replace("+", "", regex=False)
    out["reading"] = out["reading"].str.replace(r"^(above|below|covers) 50:", r"\1 50%:", regex=True)
    out.attrs["null"] = "50%"
    return out


def sharpe_verdicts(table: pd.DataFrame, rows: Sequence[str] | None = None, *, benchmark: str | None = None,
                    estimate: str = "sharpe", low: str = "sharpe_ci_low", high: str = "sharpe_ci_high",
                    benchmark_name: str = "buy-and-hold"):
    """Sharpe ratios with their intervals and what each lets a reader conclude.

    Args:
        table: one row per strategy with columns ``estimate``, ``low``, ``high`` (e.g. ``walk_forward_analogs``'s
            or ``compare_composers``' table).
        rows: the strategies to read (default: all rows except ``benchmark``).
        benchmark: a row of ``table`` (e.g. ``"buy_and_hold"``). When given, a second reading column places the
            benchmark's Sharpe against each strategy's interval: above the benchmark means the strategy did
            better, below means the benchmark did, inside means no evidence either way.

    Returns:
        A DataFrame (``Sharpe``, ``95% interval``, ``reading`` and, with a benchmark, ``vs <benchmark_name>``)
        whose ``reading`` checks both sides of zero: "a reliable earner", "a reliable loser", "no evidence
        either way". ``.attrs["sides"]`` holds each row's side; :func:`sharpe_summary` names them.
    """
    if benchmark is not None and benchmark not in table.index:
        raise KeyError(f"sharpe_verdicts: benchmark {benchmark!r} is not a row of the table; rows are "
                       f"{list(table.index)}. Pass benchmark=None to read against zero only.")
    rows = [r for r in table.index if r != benchmark] if rows is None else list(rows)
    missing = [r for r in rows if r not in table.index]
    if missing:
        raise KeyError(f"sharpe_verdicts: rows {missing} not found; the table has {list(table.index)}.")
    out = verdict_table(table.loc[rows], estimate, low, high, digits=2, name="Sharpe",
                        gain="a reliable earner", loss="a reliable loser")
    out["reading"] = [_SHARPE_READING[out.attrs["sides"][r]] for r in rows]
    if benchmark is not None:
        b = float(table.loc[benchmark, estimate])
        out[f"vs {benchmark_name} (Sharpe {b:.2f})"] = [
            _BENCHMARK_READING[interval_side(float(table.loc[r, low]), float(table.loc[r, high]), b)]
            .format(b=benchmark_name) for r in rows]
    return out


def sharpe_summary(verdicts: pd.DataFrame, rows: Sequence[str] | None = None, what: str | None = None) -> str:
    """One sentence over :func:`sharpe_verdicts`: which strategies are reliable earners (interval above zero)
    and which reliable losers (wholly below zero); "none" where there are none.

    ``rows``: read only these rows (e.g. the composers, not the benchmark); ``what``: their name in the sentence
    ("composers" gives "Reliable earners among the composers ...")."""
    sides: dict = verdicts.attrs["sides"]
    keep = list(sides) if rows is None else list(rows)
    missing = [r for r in keep if r not in sides]
    if missing:
        raise KeyError(f"sharpe_summary: rows {missing} are not in the verdict table; it has {list(sides)}.")
    earners = [str(n) for n in keep if sides[n] == "above"]
    losers = [str(n) for n in keep if sides[n] == "below"]
    among = f" among the {what}" if what else ""
    return (f"Reliable earners{among} (Sharpe interval above zero): {', '.join(earners) or 'none'}; "
            f"reliable losers (wholly below zero): {', '.join(losers) or 'none'}.")


def paired_seed_differences(table: pd.DataFrame, metric: str, pairs: Iterable[tuple[str, str]], *,
                            arm: str = "detector", seed: str = "seed", group: str | None = None,
                            level: float = 0.95) -> pd.DataFrame:
    """``a - b`` of ``metric`` paired by seed, for each pair of arms (and each ``group``), with a t interval
    over the seeds (:func:`course_lib.t_interval`).

    Per seed, ``metric`` is first averaged over that seed's rows of an arm (its folds); the difference of the
    two arms' averages is one observation per seed; seeds are independent replications. Fewer than two seeds:
    NaN ends (a verdict then says "no conclusion").

    Returns:
        A DataFrame indexed by ``"<a> minus <b>"`` (with ``group`` first when given) and columns ``diff``,
        ``ci_low``, ``ci_high``, ``n``: the input of :func:`course_lib.verdict_table`.
    """
    need = [c for c in (metric, arm, seed, group) if c is not None and c not in table.columns]
    if need:
        raise KeyError(f"paired_seed_differences: columns {need} not found; the table has {list(table.columns)}.")
    pairs = list(pairs)
    groups = [(None, table)] if group is None else list(table.groupby(group, sort=False))
    rows, index = [], []
    for key, sub in groups:
        per_seed = sub.groupby([seed, arm])[metric].mean().unstack()
        for a, b in pairs:
            absent = [x for x in (a, b) if x not in per_seed.columns]
            if absent:
                raise KeyError(f"paired_seed_differences: arms {absent} not found in column {arm!r}; arms are "
                               f"{list(per_seed.columns)}.")
            ci = t_interval((per_seed[a] - per_seed[b]).to_numpy(), level)
            rows.append({"diff": ci["diff"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": int(ci["n"])})
            index.append(f"{a} minus {b}" if group is None else (key, f"{a} minus {b}"))
    idx = (pd.Index(index, name="comparison") if group is None
           else pd.MultiIndex.from_tuples(index, names=[group, "comparison"]))
    return pd.DataFrame(rows, index=idx)
