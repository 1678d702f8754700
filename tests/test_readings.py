"""course_lib.readings: the verdict wording lessons 06-08 repeat (hit rates against a coin, Sharpe ratios against
zero and a benchmark, differences paired by seed) checks both sides, says "no conclusion" without an interval,
and formats what it is told."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import course_lib as cl

NAN = math.nan


def test_hit_rates_are_read_against_one_half_on_both_sides():
    t = cl.hit_rate_verdicts({"skill": (0.58, 0.53, 0.63), "coin": (0.5, 0.45, 0.55),
                              "wrong way": (0.40, 0.35, 0.45), "no interval": (0.6, NAN, NAN)})
    assert t.loc["skill", "reading"] == "above 50%: evidence of direction skill"
    assert t.loc["wrong way", "reading"] == "below 50%: evidence of a forecast that points the wrong way"
    assert t.loc["coin", "reading"] == "covers 50%: no evidence either way"
    assert t.loc["no interval", "reading"] == "no interval: no conclusion"
    assert t.loc["no interval", "95% interval"] == "n/a"


def test_hit_rates_are_percent_without_the_sign_of_a_difference():
    frame = pd.DataFrame({"hit_rate": [0.8], "hit_low": [0.667], "hit_high": [0.901]}, index=["after a motif"])
    t = cl.hit_rate_verdicts(frame)
    assert list(t.columns) == ["hit rate", "95% interval", "reading"]
    assert t.loc["after a motif", "hit rate"] == "80.0%"
    assert t.loc["after a motif", "95% interval"] == "[66.7%, 90.1%]"
    assert cl.hit_rate_verdicts(frame, digits=0, name="hit").loc["after a motif", "hit"] == "80%"
    assert cl.summarize_verdicts(t) == "The estimate shows evidence of direction skill."
    two = cl.hit_rate_verdicts({"a": (0.5, 0.4, 0.6), "b": (0.5, 0.45, 0.55)})
    assert cl.summarize_verdicts(two) == "Both intervals cover 50%: no evidence either way."


def _sharpes():
    return pd.DataFrame({"sharpe": [0.5, 0.9, -0.6, NAN, 0.1],
                         "sharpe_ci_low": [0.2, -0.2, -1.0, NAN, -0.3],
                         "sharpe_ci_high": [0.9, 1.5, -0.2, NAN, 0.5]},
                        index=["earner", "unclear", "loser", "one run", "buy_and_hold"])


def test_sharpe_readings_check_both_sides_of_zero():
    v = cl.sharpe_verdicts(_sharpes())
    assert list(v.index) == ["earner", "unclear", "loser", "one run", "buy_and_hold"]
    assert list(v.columns) == ["Sharpe", "95% interval", "reading"]
    assert v.loc["earner", "reading"] == "above 0: a reliable earner"
    assert v.loc["loser", "reading"] == "below 0: a reliable loser"
    assert v.loc["unclear", "reading"] == "covers 0: no evidence either way"
    assert v.loc["one run", "reading"] == "no interval: no conclusion"
    assert v.loc["loser", "Sharpe"] == "-0.60" and v.loc["loser", "95% interval"] == "[-1.00, -0.20]"


def test_sharpe_against_a_benchmark_places_its_sharpe_on_each_interval():
    table = _sharpes()
    table.loc["buy_and_hold", "sharpe"] = 0.1
    v = cl.sharpe_verdicts(table, ["earner", "unclear", "loser"], benchmark="buy_and_hold")
    col = "vs buy-and-hold (Sharpe 0.10)"
    assert v.loc["earner", col] == "interval above it: the strategy did better"
    assert v.loc["unclear", col] == "inside the interval: no evidence either way"
    assert v.loc["loser", col] == "interval below it: buy-and-hold did better"
    assert "buy_and_hold" not in cl.sharpe_verdicts(table, benchmark="buy_and_hold").index
    with pytest.raises(KeyError, match="benchmark"):
        cl.sharpe_verdicts(table, benchmark="index")
    with pytest.raises(KeyError, match="not found"):
        cl.sharpe_verdicts(table, ["earner", "nope"])


def test_sharpe_summary_names_earners_and_losers_or_says_none():
    v = cl.sharpe_verdicts(_sharpes())
    assert cl.sharpe_summary(v) == ("Reliable earners (Sharpe interval above zero): earner; "
                                    "reliable losers (wholly below zero): loser.")
    assert cl.sharpe_summary(v, ["unclear", "buy_and_hold"], "composers") == (
        "Reliable earners among the composers (Sharpe interval above zero): none; "
        "reliable losers (wholly below zero): none.")
    with pytest.raises(KeyError, match="not in the verdict table"):
        cl.sharpe_summary(v, ["absent"])


def _scores():
    # two folds per seed; per seed the fold means are a: (2+4)/2, (3+3)/2, (4+4)/2; b: 0, 1, 1 on both folds
    rows = []
    for seed, a_folds, b in ((0, (2, 4), 0), (1, (3, 3), 1), (2, (4, 4), 1)):
        for fold, a in enumerate(a_folds):
            rows += [{"seed": seed, "fold": fold, "detector": "a", "m": a},
                     {"seed": seed, "fold": fold, "detector": "b", "m": b}]
    return pd.DataFrame(rows)


def test_paired_seed_differences_average_folds_then_pair_by_seed():
    d = cl.paired_seed_differences(_scores(), "m", [("a", "b")])
    per_seed = np.array([3 - 0, 3 - 1, 4 - 1], dtype=float)
    ci = cl.t_interval(per_seed)
    assert list(d.index) == ["a minus b"]
    assert d.loc["a minus b", "diff"] == pytest.approx(per_seed.mean())
    assert (d.loc["a minus b", "ci_low"], d.loc["a minus b", "ci_high"]) == pytest.approx((ci["ci_low"], ci["ci_high"]))
    assert d.loc["a minus b", "n"] == 3
    v = cl.verdict_table(d)
    assert v.loc["a minus b", "reading"] == "above 0: evidence of a gain"
    flipped = cl.verdict_table(cl.paired_seed_differences(_scores(), "m", [("b", "a")]))
    assert flipped.loc["b minus a", "reading"] == "below 0: evidence of a loss"


def test_paired_seed_differences_by_group_and_with_one_seed():
    two = pd.concat([_scores().assign(market="x"), _scores().query("seed == 0").assign(market="y")])
    d = cl.paired_seed_differences(two, "m", [("a", "b")], group="market")
    assert list(d.index) == [("x", "a minus b"), ("y", "a minus b")]
    assert d.index.names == ["market", "comparison"]
    assert math.isnan(d.loc[("y", "a minus b"), "ci_low"])  # one seed: no interval
    v = cl.verdict_table(d)
    assert v.loc[("y", "a minus b"), "reading"] == "no interval: no conclusion"
    text = cl.summarize_verdicts(v)
    assert "(x / a minus b)" in text and "1 without an interval" in text
    with pytest.raises(KeyError, match="arms"):
        cl.paired_seed_differences(two, "m", [("a", "c")])
    with pytest.raises(KeyError, match="columns"):
        cl.paired_seed_differences(two, "missing", [("a", "b")])


def test_an_estimate_that_rounds_to_zero_has_no_minus_sign():
    t = cl.verdict_table({"tiny": (-2e-6, -0.2198, 0.2197)}, digits=4)
    assert t.loc["tiny", "diff"] == "+0.0000"
    assert t.loc["tiny", "95% interval"] == "[-0.2198, +0.2197]"
    assert cl.verdict_table({"small": (-0.004, -0.01, 0.0)}, digits=2).loc["small", "diff"] == "+0.00"
    assert cl.verdict_table({"neg": (-0.006, -0.01, 0.0)}, digits=2).loc["neg", "diff"] == "-0.01"
