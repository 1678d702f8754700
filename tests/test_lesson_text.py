"""The words of committed lessons: results are computed, never typed, and one repository URL everywhere.

A sentence in Markdown that reports a measured number ("memory 63.8% vs 62.2%", "won in 4 of 5 seeds") goes
stale the moment a reader runs the notebook with other parameters, another machine or another library version.
Lessons report results from a code cell instead (``cl.show_markdown(f"...")`` over the values just computed).
:func:`literal_results` is the heuristic that finds such sentences in Markdown cells. It flags

* a decimal number (``0.53``, ``+1.6``, ``.45``, ``63.8``);
* a percentage (``63 %``, ``5.4%``), except a confidence level (``95% interval``, ``95% CI``, ``95% confidence``);
* a count result "N of M" (``4 of 5 seeds``, ``3 out of 4``);
* a numeric comparison "N vs M" (``612 vs 598``, ``0.35 versus 0.31``);
* a numeric interval with a signed bound, ``[-1, +3]`` (decimals such as ``[0.2, 0.9]`` are flagged as decimals;
  an unsigned integer range such as ``[0, 100]`` is a definition and spared);

and spares what is not a result: anything inside a code span or fenced code block (parameter values are written
as code: ``temperature=0.1``), inside ``$...$`` / ``$$...$$`` math, inside a link target or an HTML comment,
dates (``2008-09-12``, ``12.09.2008``), version numbers (``Python 3.11``, ``torch 2.3.1``, any ``a.b.c``),
section numbers (``section 3.2``, ``sec. 3.1``, ``eq. 2.4``, ``table 1.2``, ``figure 2.1``), a tolerance that a
question states (``within 0.02 of each other``, ``within 20% of it``, ``tolerance of 0.5 points``), a threshold
of a rule's definition (a number next to *at least, at most, more than, less than, fewer than, above, below,
under, over, exceed(s), up to*, or followed by *or more, or less, above, below*: ``bear if 20% or more below its
high``, ``volatility of at least 25% a year``, ``the first 30% of the bars``), a quantile band (``a 10-90% band``),
a short quoted example (``"the analogs say +2%"``), integers
(lesson numbers, window counts, years), and every line that carries the escape hatch ``<!-- fact -->``
(a documented fact from a paper or book, cited on that line).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib.notebook_runner import REPO_URL, ROOT, colab_url, discover

NOTEBOOKS = discover()
FACT = "<!-- fact -->"

# --- what is removed before looking for numbers --------------------------------------------------------------
_FENCED = re.compile(r"^(```|~~~).*?^\1\s*$", flags=re.M | re.S)
_STRIP = [
    re.compile(r"<!--.*?-->", flags=re.S),            # HTML comments
    re.compile(r"(`+)(?:(?!\1).)+?\1"),                # code spans (`x`, ``x``)
    re.compile(r"\$\$.+?\$\$", flags=re.S),            # display math
    re.compile(r"(?<![\\\w])\$[^$\n]+?\$"),            # inline math
    re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"),    # link targets: ](https://arxiv.org/abs/2203.08913)
    re.compile(r"<https?://[^>]+>|https?://\S+"),      # bare URLs
]
_SPARE = [
    re.compile(r"\b\d{4}-\d{2}(?:-\d{2})?\b"),                                       # ISO dates
    re.compile(r"\b\d{1,2}\.\d{1,2}\.\d{2,4}\b"),                                    # 12.09.2008
    re.compile(r"\b\d+\.\d+\.\d+(?:\.\d+)*\b"),                                       # versions a.b.c
    re.compile(r"(?i)\b(?:python|torch|pytorch|numpy|pandas|cuda|faiss|scikit-learn|matplotlib|jupyter(?:lab)?"
               r"|version|v)\s?\d+(?:\.\d+)+\b"),                                     # Python 3.11, v2.1
    re.compile(r"(?i)(?:\bsections?|\bsec\.|§|\beq\.|\bequations?|\btables?|\bfig\.|\bfigures?|\bchapters?"
               r"|\bappendix)\s*\d+(?:\.\d+)+"),                                      # section 3.2
    re.compile(r"(?i)\b(?:within|tolerance(?: of)?)\s+[±+]?\d*\.?\d+\s*(?:%|points?|pp)?"),   # a tolerance
    # a threshold in a rule's definition: "at least 25%", "20% or more", "10% below its high", "above 0.5"
    re.compile(r"(?i)\b(?:at least|at most|more than|less than|fewer than|above|below|under|over|exceeds?|up to"
               r"|first|last|top|bottom)"
               r"\s+[+\-−]?\d*\.?\d+\s*%?"),
    re.compile(r"(?i)(?<![\w.])[+\-−]?\d*\.?\d+\s*%?\s+(?=(?:or (?:more|less|above|below|higher|lower)|above|below)\b)"),
    # a quantile band: "a 10-90% band", "the 5–95 % range"
    re.compile(r"(?i)\b\d+\s*[-–]\s*\d+\s*%\s*(?=band|range|quantiles?|percentiles?|interval)"),
    re.compile(r"\"[^\"\n]{1,80}\"|“[^”\n]{1,80}”"),   # a quoted example: "the analogs say +2%"
]
_NUM = r"[+\-−±]?\d+(?:[.,]\d+)*"
_FLAGS = {
    "decimal": re.compile(r"(?<![\w.])[+\-−±]?\d*\.\d+(?!\w)"),
    "percentage": re.compile(
        rf"(?<![\w.]){_NUM}\s?%(?!\s*(?:confidence|CI\b|credible|prediction|interval|bootstrap interval))",
        flags=re.I,
    ),
    "N of M": re.compile(rf"(?<![\w.]){_NUM}\s+(?:out\s+)?of\s+(?:the\s+|all\s+)?{_NUM}(?![\w.])"),
    "N vs M": re.compile(rf"(?<![\w.]){_NUM}\s*%?\s*(?:vs\.?|versus)\s*{_NUM}"),
    # a signed bound marks a measured difference; "[0, 100]" or "[-1, 1]" is a definition's range
    "interval": re.compile(rf"\[\s*(?=[^\]]*[+±])\s*{_NUM}\s*%?\s*,\s*{_NUM}\s*%?\s*\]"),
}


def _visible_lines(markdown: str) -> list[str]:
    """The Markdown's lines as a reader sees prose: code, math, links and comments removed; fact lines dropped."""
    kept = [line for line in markdown.splitlines() if FACT not in line]
    text = _FENCED.sub("", "\n".join(kept))
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    for pattern in _SPARE:
        text = pattern.sub(" ", text)
    return text.splitlines()


def literal_results(markdown: str) -> list[tuple[str, str]]:
    """``(kind, matched text)`` for every number in ``markdown`` that reads like a measured result."""
    found = []
    for line in _visible_lines(markdown):
        for kind, pattern in _FLAGS.items():
            found += [(kind, m.group(0).strip()) for m in pattern.finditer(line)]
    return found


# --- the heuristic itself --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["memory **63.8%** vs no memory **62.2%** direction accuracy",
     "difference +1.6 points", "IC 0.353 vs 0.313", "the leak gives a correlation of 1.0",
     "95% interval over seeds [+0.7, +2.5]", "memory won in 4 of 5 seeds", "3 out of 4 folds",
     "a Sharpe of .45", "on 612 vs 598 windows", "interval [-1, +3]", "we measured 402.5 s",
     "direction accuracy 53 %", "accuracy −0.2 points", "costs 5.4% a year",
     "| memory | 0.538 |", "* IC: 0.06"],
)  # fmt: skip
def test_literal_results_flags(text):
    assert literal_results(text), f"should be flagged: {text!r}"


@pytest.mark.parametrize(
    "text",
    ["# 04 · Training", "## 1. The timing rule", "lesson 03 and exercises 05", "the 2008 crash, 1999-2018",
     "query day 2018-02-08 and 12.09.2008", "windows of `SEQ_LEN = 64` bars and `temperature=0.1`",
     "run `python -m course_lib train --lr 0.001`", "a 95% confidence interval", "the 95% CI", "95 % interval",
     "$\\tau = 0.1$ and $$g = \\sigma(0.5 x)$$", "[paper](https://arxiv.org/abs/2203.08913)",
     "<https://arxiv.org/abs/1911.00172>", "Python 3.11 and torch 2.3.1 (numpy 1.26.4)",
     "see section 3.2 of the paper", "the 7 features and 5,031 bars", "4× less RAM",
     "k = 32 neighbours, 20 years", "RSI rescaled from [0, 100] to [-1, 1]", "A fact: RETRO retrieves from 2 trillion tokens <!-- fact -->",
     "```\nacc = 0.538  # in a fenced block\n```",
     "(d) all three about the same (within 0.02 of each other)",
     "bear if the index is 20% or more below its high, correction if it is 10% below",
     "its volatility is at least 25% a year", "an IC above 0.02 is rare", "a 10-90% band around the mean",
     'so "the analogs say +2%" can be read as', "the memory starts with the first 30% of the bars", "recall is about that share (within 20% of it)", "<!-- measured 0.5 -->", "fold 1 of the walk-forward"],
)  # fmt: skip
def test_literal_results_spares(text):
    assert not literal_results(text), f"should be spared: {text!r} -> {literal_results(text)}"


# --- the committed lessons -------------------------------------------------------------------------------------
def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


IDS = [f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_markdown_states_no_measured_result(path):
    nb = _load(path)
    found = [
        f"cell {i}: {kind} {text!r}"
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "markdown"
        for kind, text in literal_results(_source(cell))
    ]
    assert not found, (
        f"{path.parent.name}/{path.name}: Markdown states result(s) as literal numbers: {found}. Report a result "
        "from a code cell, cl.show_markdown(f'...') over the values just computed (with its interval and what "
        "the reader may conclude); write a parameter as code (`K=10`) or math ($\\tau$); mark a cited fact "
        f"from a paper with {FACT} on its line."
    )


_GITHUB = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+")
_COLAB = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"'>\]]+")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_badge_and_setup_use_the_repository_url(path):
    nb = _load(path)
    rel = path.relative_to(ROOT).as_posix()
    title = _source(nb["cells"][0])
    assert colab_url(rel) in title, f"{rel}: the Colab badge must link to {colab_url(rel)}"
    colab_links = [m.group(0) for cell in nb["cells"] for m in _COLAB.finditer(_source(cell))]
    wrong = [u for u in colab_links if not u.startswith(colab_url(""))]
    assert not wrong, f"{rel}: Colab links must open the course repository ({REPO_URL}): {wrong}"
    setup = next((c for c in nb["cells"] if c["cell_type"] == "code" and "IS_COLAB" in _source(c)), None)
    assert setup is not None, f"{rel}: no Colab setup cell (IS_COLAB ...)"
    clones = _GITHUB.findall(_source(setup))
    assert clones and set(clones) == {REPO_URL}, f"{rel}: the setup cell must clone {REPO_URL}, found {clones}"


def test_repository_url_is_the_courses():
    assert REPO_URL == "https://github.com/memory-transformers-course/course"
    assert colab_url("notebooks/x.ipynb").endswith("/memory-transformers-course/course/blob/main/notebooks/x.ipynb")


# --- learner-facing words -------------------------------------------------------------------------------------
# Words about how the course was made, not about trading or models: a learner cannot follow them.
BACKSTAGE = re.compile(
    r"(?i)\bthe issue\b|\bseed \d{3}\b|\breference (?:chapter|notes?|texts?)\b|\bseeds?/\d{3}_|\bthe brief\b"
    r"|\bthe chapter(?:'s)?\b(?![^\n]*\]\(https?://)"
)


@pytest.mark.parametrize(
    "text",
    ["The three libraries the issue names", "as in seed 004", "the reference chapter mixes two",
     "the chapter's strategy", "The chapter annualised with 252", "see the reference notes"],
)  # fmt: skip
def test_backstage_words_are_flagged(text):
    assert BACKSTAGE.search(text)


@pytest.mark.parametrize(
    "text",
    ["SEED = 0", "seeds 0..4", "open an issue on GitHub", "chapter 7 of López de Prado",
     "the chapter [Memory](https://example.org/book/ch7) shows", "the 2008 crash"],
)  # fmt: skip
def test_learner_words_are_spared(text):
    assert not BACKSTAGE.search(text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_learner_facing_words_only(path):
    nb = _load(path)
    found = [f"cell {i}: {m.group(0)!r}" for i, cell in enumerate(nb["cells"]) for m in BACKSTAGE.finditer(_source(cell))]
    assert not found, (
        f"{path.parent.name}/{path.name}: words about how the course was made, not for learners: {found}. "
        "Say what is meant (and link a source) instead."
    )


# --- tables a learner must read to the end ---------------------------------------------------------------
# a Series/DataFrame of a definitions mapping, shown as is (a Styler, ``.style``, does not cut text: spared)
_DEFINITION_FRAME = re.compile(r"pd\.(?:Series|DataFrame)\((?![^\n]*\.style\b)[^\n]*\b[A-Z_]*(?:DEFINITIONS|DESCRIPTIONS)\b")


@pytest.mark.parametrize("name", ["FEATURE_DESCRIPTIONS", "METRIC_DEFINITIONS"])
def test_show_table_shows_every_definition_in_full(name, capsys):
    import course_lib as cl

    definitions = getattr(cl, name)
    assert max(map(len, definitions.values())) > 50  # longer than pandas' default cut
    cl.show_table(definitions, index_name="term")
    out = capsys.readouterr().out
    for text in definitions.values():
        assert text in out
    assert "..." not in out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_definitions_are_not_shown_as_a_plain_frame(path):
    """A plain DataFrame cuts every text cell at 50 characters: definitions go through ``cl.show_table``."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and _DEFINITION_FRAME.search(source):
            pytest.fail(f"{path.name}: definitions shown as a DataFrame (cut with '...'); use cl.show_table:\n{source}")


def test_show_code_prints_the_quoted_line_and_fails_loudly_on_drift(capsys):
    import course_lib as cl

    cl.show_code(cl.show_table, "pd.option_context(*options)")
    assert "show_table:  with pd.option_context(*options):" in capsys.readouterr().out
    with pytest.raises(LookupError, match="no longer has"):
        cl.show_code(cl.show_table, "a line that is not there")


def test_show_table_significant_digits_keep_small_losses_apart(capsys):
    import pandas as pd

    import course_lib as cl

    cl.show_table(pd.DataFrame({"val_mse": [0.000123456, 0.000121, 0.00011987]}), significant=3)
    out = capsys.readouterr().out
    assert "0.000123" in out and "0.000121" in out and "0.00012" in out
