"""The command line end to end, in a temporary folder: bundled data and a small intraday CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_lib.cli import build_parser, main

TINY = ["--epochs", "1", "--seq-len", "16", "--d-model", "16", "--heads", "2", "--layers", "1",
        "--neighbors", "8", "--key-dim", "16", "--batch-size", "64", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def intraday_csv(tmp_path_factory):
    """600 hourly bars of a 24/7 market, epoch-millisecond timestamps, Bybit-like column names."""
    rng = np.random.default_rng(0)
    n = 600
    t = pd.date_range("2024-03-01", periods=n, freq="h")
    close = 50_000 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    spread = np.abs(rng.normal(0, 0.002, n)) * close
    frame = pd.DataFrame(
        {
            "startTime": t.as_unit("ms").asi8,
            "openPrice": open_,
            "highPrice": np.maximum(open_, close) + spread,
            "lowPrice": np.minimum(open_, close) - spread,
            "closePrice": close,
            "volume": rng.uniform(10, 100, n),
        }
    ).rename(columns=lambda c: c.replace("Price", ""))
    path = tmp_path_factory.mktemp("data") / "btc_1h.csv"
    frame.to_csv(path, index=False)
    return path


def test_help_everywhere(capsys):
    for cmd in ([], ["fetch"], ["train"], ["backtest"], ["similar"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--memory-size" in out and "--plot" in out and "--date" in out


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nonsense"])
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0"])
    bad = tmp_path / "bad.csv"
    bad.write_text("time,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n")
    assert main(["train", "--data", str(bad), *TINY, "--out", str(tmp_path / "m")]) == 2
    assert "volume" in capsys.readouterr().err
    assert main(["backtest", "--model", str(tmp_path / "missing")]) == 2
    assert "course-lib train" in capsys.readouterr().err
    assert main(["similar", "--date", "not-a-date"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert main(["similar", "--date", "1990-01-01"]) == 2


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["similar", "--date", "2008-10-10", "--lookback", "0"], "--lookback"),
        (["similar", "--date", "2008-10-10", "--min-gap", "-5"], "--min-gap"),
        (["similar", "--date", "2008-10-10", "--horizon", "0"], "--horizon"),
        (["similar", "--date", "2008-10-10", "--top", "0"], "--top"),
        (["train", "--heads", "0"], "--heads"),
        (["train", "--key-dim", "0"], "--key-dim"),
        (["train", "--d-model", "30", "--heads", "4"], "--d-model"),
        (["train", "--train-frac", "0.9", "--val-frac", "0.2"], "--val-frac"),
        (["backtest", "--model", "m", "--stop-loss", "1.5"], "--stop-loss"),
        (["backtest", "--model", "m", "--cost-bps", "-1"], "--cost-bps"),
    ],
)
def test_out_of_range_flags_are_named(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "must be" in err


def test_end_to_end_on_bundled_data(tmp_path, capsys):
    ck = tmp_path / "sp500"
    assert main(["train", "--start", "2016-01-01", *TINY, "--out", str(ck)]) == 0
    assert (ck / "model.pt").exists() and (ck / "course_run.json").exists()
    png = tmp_path / "bt.png"
    assert main(["backtest", "--model", str(ck), "--plot", str(png), "--cost-bps", "2"]) == 0
    out = capsys.readouterr().out
    assert "252 bars/year" in out and "sharpe" in out and "buy_and_hold" in out
    assert png.stat().st_size > 10_000
    assert main(["similar", "--date", "2008-10-10", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "2008-10-10" in out and "next_5_bars_%" in out


def test_end_to_end_on_intraday_csv(intraday_csv, tmp_path, capsys):
    ck = tmp_path / "btc"
    assert main(["train", "--data", str(intraday_csv), *TINY, "--out", str(ck)]) == 0
    assert (
        main(["backtest", "--model", str(ck), "--strategy", "forecast", "--plot", str(tmp_path / "b.png")])
        == 0
    )
    out = capsys.readouterr().out
    assert "8760 bars/year" in out  # hourly, weekends present: not 252
    # a file inside the checkpoint (as in the chapter's quick start) means its folder
    assert main(["backtest", "--model", str(ck / "model.pt"), "--no-plot"]) == 0
    assert main(["similar", "--model", str(ck / "model.pt"), "--date", "2024-03-20 12:00", "--top", "2"]) == 0
    assert main(["backtest", "--model", str(intraday_csv), "--no-plot"]) == 2
    assert "is a file; pass the checkpoint folder" in capsys.readouterr().err
    assert (
        main(["backtest", "--model", str(ck), "--data", str(intraday_csv), "--strategy", "similarity"]) == 0
    )
    # --data without --start: no windows before the start to calibrate on, so the causal scale is used
    assert main(["backtest", "--model", str(ck), "--data", str(intraday_csv), "--strategy", "forecast",
                 "--no-plot"]) == 0  # fmt: skip
    date = "2024-03-20 12:00"
    assert (
        main(["similar", "--data", str(intraday_csv), "--date", date, "--seq-len", "16", "--top", "3"]) == 0
    )
    assert (
        main(["similar", "--data", str(intraday_csv), "--date", date, "--model", str(ck), "--top", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("Most similar past moments") == 2
    # --model without --data searches the data the checkpoint was trained on, not the bundled S&P sample
    assert main(["similar", "--date", date, "--model", str(ck), "--top", "3"]) == 0
    assert "Most similar past moments to 2024-03-20 12:00:00" in capsys.readouterr().out
    # the neighbours shown were all known before the queried time
    body = out.split("Most similar past moments")[1]
    dates = pd.to_datetime([line.split()[1] + " " + line.split()[2] for line in body.splitlines()[3:6]])
    assert (dates < pd.Timestamp(date)).all()


def test_fetch_writes_csvs_that_load_csv_reads(tmp_path, monkeypatch, capsys):
    import course_lib.data.live as live
    from course_lib import load_csv, load_sample

    sample = load_sample("sp500").iloc[-50:]
    calls = {}

    def fake_yfinance(symbols, start, end, interval="1d", refresh=False, **_):
        calls["args"] = (symbols, start, end, interval)
        return {s: sample for s in symbols}

    monkeypatch.setattr(live, "load_yfinance", fake_yfinance)
    out = tmp_path / "csv"
    assert main(["fetch", "--symbols", "SPY,QQQ", "--start", "2018-01-01", "--out-dir", str(out)]) == 0
    assert calls["args"] == (["SPY", "QQQ"], "2018-01-01", None, "1d")
    back = load_csv(out / "SPY_1d.csv")
    assert len(back) == 50 and "SPY: 50 bars" in capsys.readouterr().out
    assert main(["fetch", "--symbols", " , "]) == 2


def test_symbols_run_is_reproduced_from_the_checkpoint(tmp_path, monkeypatch, capsys):
    """backtest/similar of a --symbols run reuse the bars training saw, without fetching again."""
    import course_lib.data.live as live
    from course_lib import load_sample

    sample = load_sample("sp500")
    calls = []

    def fake_yfinance(symbols, start, end, interval="1d", refresh=False, **_):
        calls.append((symbols, start, end, interval))
        # a later download of an open-ended range returns more bars than the first one did
        return {s: sample.loc["2016-01-01":] if len(calls) == 1 else sample for s in [symbols]}

    monkeypatch.setattr(live, "load_yfinance", fake_yfinance)
    ck = tmp_path / "spy"
    assert main(["train", "--symbols", "SPY", "--start-data", "2016-01-01", *TINY, "--out", str(ck)]) == 0
    assert len(calls) == 1
    assert (ck / "prices.csv").exists()
    assert main(["backtest", "--model", str(ck), "--no-plot"]) == 0
    assert main(["similar", "--model", str(ck), "--date", "2018-06-01", "--top", "2"]) == 0
    assert len(calls) == 1  # no second download
    run = __import__("json").loads((ck / "course_run.json").read_text())
    assert run["data"]["start_data"] == "2016-01-01" and run["data"]["file"] == "prices.csv"
    out = capsys.readouterr().out
    assert f"backtest {run['test_start']} .. 2018-12-28 00:00:00 (72 decisions" in out


def test_similar_with_model_and_other_data_reads_outcomes_from_the_models_data(intraday_csv, tmp_path, capsys):
    """Neighbours come from the checkpoint's memory, so "what followed" uses the checkpoint's closes."""
    from course_lib import load_csv

    ck = tmp_path / "btc"
    assert main(["train", "--data", str(intraday_csv), *TINY, "--out", str(ck)]) == 0
    trained = load_csv(intraday_csv)
    other = trained.copy()  # same timestamps, another market: prices follow a different path
    rng = np.random.default_rng(7)
    other[["open", "high", "low", "close"]] *= np.exp(np.cumsum(rng.normal(0, 0.01, len(other))))[:, None]
    other_csv = tmp_path / "other.csv"
    other.to_csv(other_csv)
    capsys.readouterr()
    assert main(["similar", "--model", str(ck), "--data", str(other_csv), "--date", "2024-03-20 12:00",
                 "--top", "3"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "neighbours from its training data" in out
    rows = [line.split() for line in out.splitlines() if line[:1] in "123" and line[1:2] == " "]
    assert len(rows) == 3
    close = trained["close"]
    for row in rows:
        when = pd.Timestamp(row[1] + " " + row[2])
        i = close.index.get_loc(when)
        assert float(row[4]) == pytest.approx(100 * (close.iloc[i + 1] / close.iloc[i] - 1), abs=0.006)


def test_similar_refuses_a_memory_whose_data_changed(intraday_csv, tmp_path, capsys):
    import json
    import shutil

    from course_lib import load_csv

    csv = tmp_path / "btc.csv"
    shutil.copy(intraday_csv, csv)
    ck = tmp_path / "btc"
    assert main(["train", "--data", str(csv), *TINY, "--out", str(ck)]) == 0
    edited = load_csv(csv)
    edited[["open", "high", "low", "close"]] *= np.linspace(1, 1.5, len(edited))[:, None]
    edited.to_csv(csv)
    assert main(["similar", "--model", str(ck), "--date", "2024-03-20 12:00", "--top", "3"]) == 2
    assert "changed after training" in capsys.readouterr().err
    assert json.loads((ck / "course_run.json").read_text())["data"]["kind"] == "csv"


def test_expected_errors_are_one_line_not_tracebacks(tmp_path, monkeypatch, capsys):
    import json

    import course_lib.data.live as live
    from course_lib import load_sample

    monkeypatch.setattr(live, "load_yfinance", lambda symbols, **_: {s: load_sample("sp500") for s in symbols})
    taken = tmp_path / "a_file"
    taken.write_text("not a folder")
    assert main(["fetch", "--symbols", "SPY", "--out-dir", str(taken)]) == 2  # FileExistsError (an OSError)
    assert "error:" in capsys.readouterr().err
    ck = tmp_path / "ck"  # a run file with keys missing (damaged or edited by hand): no KeyError traceback
    ck.mkdir()
    (ck / "course_run.json").write_text(json.dumps({"format": "course_lib.cli.run", "version": 1}))
    assert main(["similar", "--model", str(ck), "--date", "2010-01-01"]) == 2
    assert "lacks" in capsys.readouterr().err
    (ck / "course_run.json").write_text("{not json")
    assert main(["backtest", "--model", str(ck)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    import course_lib.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "cmd_fetch", broken)
    with pytest.raises(ZeroDivisionError):
        main(["fetch", "--symbols", "SPY"])


def _run_help(cmd: list[str]):
    import os
    import subprocess

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120, env=env)


def test_python_dash_m_entry_point():
    import sys

    done = _run_help([sys.executable, "-m", "course_lib"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: course-lib") and "backtest" in done.stdout


def test_console_script_entry_point():
    import shutil
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "course-lib"  # this interpreter's, else any on PATH
    script = str(script) if script.exists() else shutil.which("course-lib") or str(script)
    if not Path(script).exists():
        pytest.skip("the course-lib console script is not installed (pip install -e .)")
    done = _run_help([script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: course-lib") and "similar" in done.stdout


def _similar_table(out: str) -> list[str]:
    """The neighbour rows of `similar`'s output (what was known at --date), without the hindsight line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Most similar past moments"))
    return [line for line in lines[start:] if not line.startswith("what actually followed")]


def test_similar_lists_distinct_episodes_and_ignores_prices_after_the_date(intraday_csv, tmp_path, capsys):
    """Tripling every price after T leaves the table for a date before T unchanged; rows are distinct."""
    from course_lib import load_csv

    date = "2024-03-20 12:00"
    args = ["similar", "--data", str(intraday_csv), "--date", date, "--seq-len", "16", "--top", "4"]
    assert main(args) == 0
    before = capsys.readouterr().out
    prices = load_csv(intraday_csv)
    later = prices.index > pd.Timestamp(date) + pd.Timedelta(hours=3)
    prices.loc[later, ["open", "high", "low", "close"]] *= 3.0
    changed = tmp_path / "tripled.csv"
    prices.to_csv(changed)
    assert main([*args[:2], str(changed), *args[3:]]) == 0
    after = capsys.readouterr().out
    assert _similar_table(before) == _similar_table(after)
    assert before != after  # only the hindsight line saw the change
    rows = [line.split() for line in _similar_table(before) if line[:1].isdigit()]
    times = pd.to_datetime([r[1] + " " + r[2] for r in rows])
    gaps = np.abs((times.values[:, None] - times.values[None, :]) / pd.Timedelta(hours=1))
    assert len(rows) == 4 and (gaps[~np.eye(4, dtype=bool)] >= 16).all()
    assert ((pd.Timestamp(date) - times) / pd.Timedelta(hours=1) >= 20).all()  # 20-bar outcome known


def test_bundled_2008_neighbours_are_distinct_episodes(capsys):
    assert main(["similar", "--date", "2008-10-10", "--top", "5"]) == 0
    rows = [line.split() for line in _similar_table(capsys.readouterr().out) if line[:1].isdigit()]
    from course_lib import load_sample

    index = load_sample("sp500").index
    pos = np.sort(index.get_indexer(pd.to_datetime([r[1] for r in rows])))
    assert len(pos) == 5 and (np.diff(pos) >= 64).all()


def test_similar_with_model_warns_inside_its_training_period(intraday_csv, tmp_path, capsys):
    """The checkpoint's scaler and weights were fitted on bars up to its validation end: a --date before that
    ranks neighbours with later information, and says so (leak 3 of the audit)."""
    import json

    ck = tmp_path / "btc"
    assert main(["train", "--data", str(intraday_csv), *TINY, "--out", str(ck)]) == 0
    run = json.loads((ck / "course_run.json").read_text())
    capsys.readouterr()
    inside = str(pd.Timestamp(run["train_end"]) - pd.Timedelta(hours=40))
    assert main(["similar", "--model", str(ck), "--date", inside, "--top", "2"]) == 0
    err = capsys.readouterr().err
    assert "inside the checkpoint's training/validation period" in err and "after --date" in err
    assert main(["similar", "--model", str(ck), "--date", "2024-03-24 12:00", "--top", "2"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "look-ahead in the ranking" in build_parser()._subparsers._group_actions[0].choices["similar"].format_help()
