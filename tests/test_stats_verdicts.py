"""verdict_table / summarize_verdicts: the reading checks both sides of every interval, formats what it is
told, and the summary names only the rows with evidence."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import course_lib as cl

NAN = math.nan


def test_each_side_gets_its_reading():
    t = cl.verdict_table({"up": (0.02, 0.01, 0.03), "down": (-0.02, -0.03, -0.01), "flat": (0.0, -0.01, 0.01),
                          "one seed": (0.05, NAN, NAN)}, gain="a gain", loss="a loss")
    assert list(t.columns) == ["diff", "95% interval", "reading"]
    assert t.loc["up", "reading"] == "above 0: evidence of a gain"
    assert t.loc["down", "reading"] == "below 0: evidence of a loss"  # the lower side is checked too
    assert t.loc["flat", "reading"] == "covers 0: no evidence either way"
    assert t.loc["one seed", "reading"] == "no interval: no conclusion"
    assert t.loc["one seed", "95% interval"] == "n/a"


def test_null_scale_and_a_dataframe_input():
    frame = pd.DataFrame({"hit": [0.58, 0.52], "lo": [0.53, 0.47], "hi": [0.63, 0.57]}, index=["analogs", "null"])
    t = cl.verdict_table(frame, "hit", "lo", "hi", null=0.5, scale=100, digits=1, unit="%", gain="skill")
    assert t.loc["analogs", "hit"] == "+58.0%" and t.loc["analogs", "95% interval"] == "[+53.0%, +63.0%]"
    assert t.loc["analogs", "reading"] == "above 50: evidence of skill"
    assert t.loc["null", "reading"].startswith("covers 50")
    with pytest.raises(KeyError, match="estimate="):
        cl.verdict_table(frame)


def test_summary_names_rows_with_evidence_only():
    t = cl.verdict_table({"a": (0.02, 0.01, 0.03), "b": (0.0, -0.01, 0.01), "c": (0.0, -0.02, 0.01)})
    text = cl.summarize_verdicts(t, "settings")
    assert text.startswith("1 of 3 settings shows evidence of a gain (a)")
    assert "2 intervals cover 0" in text and "(b" not in text
    assert cl.summarize_verdicts(cl.verdict_table({"x": (0.0, -1.0, 1.0)})) == \
        "The interval covers 0: no evidence either way."
