"""Command line: ``python -m course_lib`` or ``course-lib`` (the chapter's quick start, offline by default).

::

    course-lib fetch --source yfinance --symbols SPY,QQQ --start 2015-01-01 --end 2024-01-01
    course-lib train --epochs 20 --memory-size 100000 --out checkpoints/sp500      # bundled S&P 500
    course-lib train --data my_prices.csv --epochs 5 --out checkpoints/mine        # any OHLCV CSV
    course-lib backtest --model checkpoints/sp500 --start 2016-01-01 --plot backtest.png
    course-lib similar --date 2008-10-10 --top 5

Every subcommand has ``--help``. Without ``--data``/``--symbols`` the bundled S&P 500 sample is used, so
nothing needs the network except ``fetch`` (and ``--symbols``, which reads ``fetch``'s cache first).
Errors in the input (a bad CSV, an unknown date, a missing checkpoint) print one line saying what is
wrong and how to fix it, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .data.loaders import DataError, DataWarning, load_csv, load_sample
from .memory.persistence import MemoryFileError
from .training import CheckpointError

__all__ = ["build_parser", "main"]

RUN_FILE = "course_run.json"
RUN_VERSION = 1
#: Copy of downloaded (``--symbols``) training data inside a checkpoint, so backtests reuse the same bars.
PRICES_FILE = "prices.csv"


# ------------------------------------------------------------------------------------------- helpers
class CliError(Exception):
    """A user-facing problem: printed as ``error: ...`` with exit status 2."""


def _date(text: str | None, what: str) -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise CliError(
            f"{what}: cannot read {text!r} as a date; use YYYY-MM-DD (or 'YYYY-MM-DD HH:MM')."
        ) from exc
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts


def _load_data(args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    """Prices from --data (CSV), --symbols (live loader, cached) or the bundled sample; plus a description."""
    data = getattr(args, "data", None)
    symbols = getattr(args, "symbols", None)
    if data and symbols:
        raise CliError("use either --data CSV or --symbols, not both.")
    if data:
        df = load_csv(data)
        source = {"kind": "csv", "path": str(Path(data).resolve())}
    elif symbols:
        names = [s.strip() for s in symbols.split(",") if s.strip()]
        if len(names) != 1:
            raise CliError(f"train/backtest/similar work on one series; got {names}. Pass a single symbol.")
        df = _fetch_one(args.source, names[0], args.interval, args.start_data, args.end_data)
        source = {"kind": args.source, "symbol": names[0], "interval": args.interval,
                  "start_data": args.start_data, "end_data": args.end_data}  # fmt: skip
    else:
        df = load_sample("sp500")
        source = {"kind": "sample", "name": "sp500"}
    return df, source


def _fetch_one(source: str, symbol: str, interval: str | None, start, end) -> pd.DataFrame:
    from .data.live import load_bybit, load_yfinance

    if source == "yfinance":
        return load_yfinance(symbol, start=start or "2015-01-01", end=end, interval=interval or "1d")[symbol]
    return load_bybit(symbol, interval=interval or "60", start=start, end=end)[symbol]


def _load_source(source: dict, model_dir: Path) -> pd.DataFrame:
    """The prices a checkpoint was trained on, as ``train`` recorded them in its run file.

    Downloaded data (``--symbols``) is reloaded from the copy ``train`` saved in the checkpoint folder
    (:data:`PRICES_FILE`), not fetched again: an open-ended download asks the network and returns more (or
    other) bars each time, so a backtest would silently run on data the model was not trained with.
    """
    if source.get("kind") == "csv":
        return load_csv(source["path"])
    if source.get("kind") == "sample":
        return load_sample(source.get("name", "sp500"))
    if source.get("file"):
        path = model_dir / source["file"]
        if not path.exists():
            raise CliError(f"{path} is missing: it holds the bars {model_dir} was trained on. Re-train, or "
                           "pass the data explicitly with --data/--symbols.")  # fmt: skip
        return load_csv(path)
    # a run file from before the prices were saved: fetch the recorded range again (may differ)
    print(f"warning: {model_dir} does not hold a copy of its training data; fetching "
          f"{source.get('symbol')} again, which may return other bars than training saw.", file=sys.stderr)  # fmt: skip
    return _fetch_one(source["kind"], source["symbol"], source.get("interval"), source.get("start_data"),
                      source.get("end_data"))  # fmt: skip


def _slice(df: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    if len(df) == 0:
        raise CliError("the data has no bars; check the file or the --start-data/--end-data range.")
    out = df.loc[start:end] if (start is not None or end is not None) else df
    if len(out) == 0:
        raise CliError(f"no bars between {start} and {end}; the data covers {df.index[0]} .. {df.index[-1]}.")
    return out


def _print_table(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(frame.to_string())


# --------------------------------------------------------------------------------------------- fetch
def cmd_fetch(args: argparse.Namespace) -> int:
    from .data.live import cache_path, load_bybit, load_yfinance

    names = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not names:
        raise CliError("--symbols is empty; pass e.g. --symbols SPY or --symbols BTCUSDT,ETHUSDT.")
    if args.source == "yfinance":
        interval = args.interval or "1d"
        frames = load_yfinance(names, start=args.start or "2015-01-01", end=args.end, interval=interval,
                               refresh=args.refresh)  # fmt: skip
    else:
        interval = args.interval or "60"
        frames = load_bybit(names, interval=interval, start=args.start, end=args.end, refresh=args.refresh)
    out_dir = Path(args.out_dir) if args.out_dir else None
    for sym, df in frames.items():
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{sym}_{interval}.csv"
            df.to_csv(target)
        else:
            target = cache_path(args.source, sym, interval, args.start or "2015-01-01", args.end) \
                if args.source == "yfinance" else df.attrs.get("source", "cache")  # fmt: skip
        print(f"{sym}: {len(df)} bars {df.index[0]} .. {df.index[-1]} -> {target}")
    return 0


# --------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from .data.windows import prepare_dataset
    from .model import MemoryTransformerConfig
    from .training import MemoryTransformerTrainer, TrainerConfig

    raw, source = _load_data(args)
    df = _slice(raw, _date(args.start, "--start"), _date(args.end, "--end"))
    ds = prepare_dataset(df, seq_len=args.seq_len, horizon=args.horizon, train_frac=args.train_frac,
                         val_frac=args.val_frac)  # fmt: skip
    mcfg = MemoryTransformerConfig(
        input_dim=ds.train.n_features, seq_len=args.seq_len, d_model=args.d_model, n_heads=args.heads,
        n_layers=args.layers, d_ff=2 * args.d_model, n_neighbors=args.neighbors, key_dim=args.key_dim,
        use_memory=not args.no_memory,
    )  # fmt: skip
    tcfg = TrainerConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        memory_capacity=args.memory_size, progress=not args.quiet, patience=args.patience,
    )  # fmt: skip
    print(f"data: {len(df)} bars {df.index[0]} .. {df.index[-1]}; windows train/val/test = "
          f"{len(ds.train)}/{len(ds.val)}/{len(ds.test)}; memory={'on' if mcfg.use_memory else 'off'}")  # fmt: skip
    trainer = MemoryTransformerTrainer(mcfg, tcfg, scaler=ds.scaler)
    history = trainer.fit(ds.train, ds.val)
    out = Path(args.out)
    trainer.save(out)
    from .utils import atomic_path

    if source["kind"] not in ("csv", "sample"):  # downloaded: keep the exact bars (see _load_source)
        with atomic_path(out / PRICES_FILE, ".csv") as tmp:
            raw.to_csv(tmp)
        source = {**source, "file": PRICES_FILE}
    run = {
        "format": "course_lib.cli.run",
        "version": RUN_VERSION,
        "data": source,
        "data_start": str(df.index[0]),
        "data_end": str(df.index[-1]),
        "seq_len": args.seq_len,
        "horizon": args.horizon,
        "feature_config": asdict(ds.feature_config),
        "feature_columns": list(ds.features.columns),
        "train_end": str(ds.train.end_time[-1]),
        "val_end": str(ds.val.end_time[-1]) if len(ds.val) else None,
        "test_start": str(ds.test.end_time[0]),
    }
    with atomic_path(out / RUN_FILE, ".json") as tmp:
        tmp.write_text(json.dumps(run, indent=2), encoding="utf-8")
    cols = [c for c in ("train_loss", "val_loss", "val_direction_accuracy", "val_ic") if c in history]
    _print_table(history[cols].round(4))
    test_eval = trainer.evaluate(ds.test)
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in test_eval.items() if np.isfinite(v)))
    print(f"saved checkpoint to {out} (backtest it with: course-lib backtest --model {out})")
    return 0


# ------------------------------------------------------------------------------------------ backtest
def _model_dir(text: str) -> Path:
    """The checkpoint folder named by ``--model``; a file inside one (``ck/model.pt``) means its folder."""
    path = Path(text)
    if path.is_file() and (path.parent / RUN_FILE).exists():
        return path.parent
    if path.is_file():
        raise CliError(f"--model {path} is a file; pass the checkpoint folder written by `course-lib train` "
                       f"(the one holding {RUN_FILE}).")  # fmt: skip
    return path


def _read_run(model_dir: Path) -> dict:
    path = model_dir / RUN_FILE
    if not model_dir.exists():
        raise CliError(
            f"--model {model_dir}: no such folder. Train one first: course-lib train --out {model_dir}"
        )
    if not path.exists():
        raise CliError(
            f"{model_dir} has no {RUN_FILE}: it was not written by `course-lib train`. Re-train with the CLI."
        )
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON ({exc}); re-train with `course-lib train`.") from exc
    if not isinstance(run, dict) or run.get("format") != "course_lib.cli.run" or run.get("version") != RUN_VERSION:
        raise CliError(f"{path}: unknown format/version; re-train with this version of course-lib.")
    missing = [key for key in _RUN_KEYS if key not in run]
    if missing:
        raise CliError(f"{path} lacks {missing}: it is damaged or was edited. Re-train with `course-lib train`.")
    return run


#: What backtest/similar read from a run file (checked up front: a KeyError deep inside names no file).
_RUN_KEYS = ("data", "seq_len", "horizon", "feature_config", "feature_columns", "train_end", "val_end",
             "test_start")  # fmt: skip


def _model_windows(trainer, run: dict, df: pd.DataFrame, *, include_unlabelled: bool = False):
    """The checkpoint's windows over ``df``: its features, its scaler, its window length and horizon.

    ``include_unlabelled`` keeps the last windows whose outcome is not known yet (a query at the data's end).
    """
    from .data.features import forward_log_return
    from .data.windows import make_windows

    if trainer.scaler is None:
        raise CliError("the checkpoint has no feature scaler; re-train with `course-lib train`.")
    feats = _run_features(run, df)
    target = forward_log_return(df["close"], run["horizon"]).reindex(feats.index)
    return make_windows(trainer.scaler.transform(feats), target, run["seq_len"], run["horizon"],
                        drop_unlabeled=not include_unlabelled)


def cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest.engine import BacktestConfig, Backtester
    from .backtest.strategies import ForecastStrategy, HistoricalSimilarityStrategy, MemoryTradingStrategy
    from .training import MemoryTransformerTrainer

    model_dir = _model_dir(args.model)
    run = _read_run(model_dir)
    trainer = MemoryTransformerTrainer.load(model_dir, device=args.device)
    same_data = not (args.data or args.symbols)
    df = _load_source(run["data"], model_dir) if same_data else _load_data(args)[0]
    windows = _model_windows(trainer, run, df)
    start = _date(args.start, "--start")
    if start is None:
        start = pd.Timestamp(run["test_start"]) if same_data else windows.end_time[0]
    end = _date(args.end, "--end")
    times = windows.end_time
    in_range = (times >= start) & ((times <= end) if end is not None else True)
    if not in_range.any():
        raise CliError(
            f"no model windows between {start} and {end}; windows cover {times[0]} .. {times[-1]}."
        )
    if same_data and start <= pd.Timestamp(run["val_end"] or run["train_end"]):
        print(f"warning: --start {start.date()} is inside the training/validation period (ends "
              f"{run['val_end'] or run['train_end']}): in-sample results flatter the model.", file=sys.stderr)  # fmt: skip
    test = windows.subset(np.flatnonzero(in_range))
    before = np.flatnonzero(times < start)[-2000:]
    pred = trainer.predict(test)
    calib = trainer.predict(windows.subset(before)) if len(before) >= 20 else None
    if args.strategy == "memory":
        strat = MemoryTradingStrategy()
        if calib is not None:
            strat.calibrate(calib)
        positions = strat.positions(pred)
    elif args.strategy == "forecast":
        fs = ForecastStrategy()
        positions = (fs.calibrate(calib) if calib is not None else fs).positions(pred)
    elif args.strategy == "similarity":
        positions = HistoricalSimilarityStrategy().positions(pred)
    else:
        positions = pred["position"].astype(float)
    cfg = BacktestConfig(cost_bps=args.cost_bps, slippage_bps=args.slippage_bps, stop_loss=args.stop_loss,
                         take_profit=args.take_profit, periods_per_year=args.periods_per_year)  # fmt: skip
    result = Backtester(cfg).run(positions, df)
    freq = result.frequency.description if result.frequency else f"P={result.periods_per_year:g}"
    print(f"backtest {positions.index[0]} .. {positions.index[-1]} ({len(positions)} decisions, {freq}), "
          f"strategy={args.strategy}, costs {args.cost_bps:g}+{args.slippage_bps:g} bps")  # fmt: skip
    _print_table(result.summary())
    plot_path = None if args.no_plot else Path(args.plot) if args.plot else model_dir / "backtest.png"
    if plot_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = result.plot(title=f"{model_dir.name}: {args.strategy} strategy", path=plot_path)
        plt.close(fig)
        print(f"plot written to {plot_path}")
    return 0


# ------------------------------------------------------------------------------------------- similar
def cmd_similar(args: argparse.Namespace) -> int:
    model_dir = _model_dir(args.model) if args.model else None
    run = _read_run(model_dir) if model_dir is not None else None
    same_data = not (args.data or args.symbols)
    if run is not None and same_data:
        # like `backtest`: a checkpoint searches the data it was trained on unless told otherwise (the
        # bundled S&P sample would silently answer a question about another market)
        df = _load_source(run["data"], model_dir)
    else:
        df, _ = _load_data(args)
    when = _date(args.date, "--date")
    idx = df.index
    pos = int(idx.searchsorted(when, side="right")) - 1
    if pos < 0:
        raise CliError(f"--date {when.date()} is before the data starts ({idx[0]}).")
    t = idx[pos]
    horizons = tuple(sorted({1, 5, 20, int(args.horizon)}))
    if run is not None:
        analogs, method, exclusion = _analogs_in_memory(args, run, model_dir, df, t, horizons, same_data)
    else:
        analogs, method, exclusion = _analogs_of_features(args, df, t, horizons)
    if analogs.empty:
        raise CliError(f"no past window with a known outcome before {t}; pick a later --date.")
    _print_analogs(analogs, horizons, df["close"], pos, method, exclusion)
    return 0


def _analogs_in_memory(args: argparse.Namespace, run: dict, model_dir: Path, df: pd.DataFrame, t: pd.Timestamp,
                       horizons: tuple[int, ...], same_data: bool) -> tuple[pd.DataFrame, str, int]:
    """``similar --model``: the checkpoint's memory searched with its own keys (analogs, method, exclusion)."""
    from .similarity import find_analogs, memory_windows
    from .training import MemoryTransformerTrainer

    fitted_until = run["val_end"] or run["train_end"]
    if t <= pd.Timestamp(fitted_until):
        print(f"warning: --date {t} is inside the checkpoint's training/validation period (ends {fitted_until}): "
              "its scaler and weights were fitted on bars after that date, so the ranking of the neighbours "
              "uses information from after --date (their outcomes do not).", file=sys.stderr)  # fmt: skip
    trainer = MemoryTransformerTrainer.load(model_dir, device="cpu")
    memory = memory_windows(trainer)
    query = _model_windows(trainer, run, df.loc[:t], include_unlabelled=True)
    query = query.subset(np.array([len(query) - 1]))
    method = f"the model's memory keys ({model_dir})"
    ref = df  # the bars the memory's windows were cut from: what followed them is read from these closes
    if not same_data:
        # the memory holds windows of the checkpoint's own data, not of --data: their outcomes must
        # come from those bars (the query's closes at the same dates belong to another series)
        ref = _load_source(run["data"], model_dir)
        method += f", neighbours from its training data ({_describe(run['data'])})"
    exclusion = int(run["seq_len"]) if args.min_gap is None else args.min_gap
    analogs = find_analogs(memory, k=args.top, method="memory_keys", trainer=trainer, exclusion=exclusion,
                           close=ref["close"], horizons=horizons, query_window=query)  # fmt: skip
    rows = pd.DatetimeIndex(memory.end_time).get_indexer(analogs["end_time"])
    stored = pd.DataFrame({"neighbour_time": analogs["end_time"], "neighbour_return": memory.y[rows]})
    _check_memory_outcomes(stored, ref["close"], int(run["horizon"]), model_dir)
    return analogs, method, exclusion


def _analogs_of_features(args: argparse.Namespace, df: pd.DataFrame, t: pd.Timestamp,
                         horizons: tuple[int, ...]) -> tuple[pd.DataFrame, str, int]:
    """``similar`` without a model: windows of scaled features up to ``t`` (analogs, method, exclusion)."""
    from .data.features import compute_features, forward_log_return
    from .data.windows import FeatureScaler, make_windows
    from .similarity import find_analogs

    feats = compute_features(df.loc[:t])  # bars up to --date only: nothing later can enter
    if len(feats) < args.seq_len + 10:
        raise CliError(
            f"too little history before {t} for windows of {args.seq_len} bars; pick a later --date."
        )
    scaled = FeatureScaler().fit(feats).transform(feats)
    close = df["close"].loc[:t]
    target = forward_log_return(close, 1).reindex(feats.index)
    windows = make_windows(scaled, target, args.seq_len, 1, drop_unlabeled=False)
    lookback = min(args.lookback, args.seq_len)
    exclusion = args.seq_len if args.min_gap is None else args.min_gap
    analogs = find_analogs(windows, t, k=args.top, method=args.method, lookback=lookback, exclusion=exclusion,
                           close=close, horizons=horizons)  # fmt: skip
    method = f"{args.method} description of the last {lookback} bars of scaled features"
    return analogs, method, exclusion


def _print_analogs(analogs: pd.DataFrame, horizons: tuple[int, ...], query_close: pd.Series, pos: int,
                   method: str, exclusion: int) -> None:
    """The neighbours table, the analog forecast, and (in hindsight) what followed the query bar."""
    from .similarity import analog_forecast

    t = query_close.index[pos]
    out = pd.DataFrame({"rank": analogs["rank"], "date": analogs["end_time"],
                        "similarity": analogs["similarity"].round(3)})  # fmt: skip
    for h in horizons:
        out[f"next_{h}_bars_%"] = (100 * np.expm1(analogs[f"fwd_{h}"])).round(2)
    out["weight"] = analogs["weight"].round(3)
    out = out.set_index("rank")
    print(f"Most similar past moments to {t} ({method}); distinct episodes at least {exclusion} bars apart; "
          f"what followed each (known by {t}):")  # fmt: skip
    _print_table(out)
    h = max(horizons)
    f = analog_forecast(analogs, f"fwd_{h}")
    print(f"analog forecast over {h} bars (simplex weights): {100 * np.expm1(f.mean):+.2f}%, "
          f"{100 * f.up_share:.0f}% of the neighbours rose")  # fmt: skip
    n = len(query_close)
    future = {h: query_close.iloc[pos + h] / query_close.iloc[pos] - 1 for h in horizons if pos + h < n}
    if future:
        print("what actually followed " + str(t) + " (hindsight, not used above): "
              + ", ".join(f"{h} bars {100 * v:+.2f}%" for h, v in future.items()))  # fmt: skip


def _describe(source: dict) -> str:
    return str(source.get("path") or source.get("name") or source.get("symbol") or source.get("kind"))


def _positions_of(index: pd.DatetimeIndex, times) -> np.ndarray:
    """Row numbers of ``times`` in ``index``; a CliError (not a KeyError) if one is missing."""
    found = index.get_indexer(pd.DatetimeIndex(times))
    if (found < 0).any():
        missing = pd.DatetimeIndex(times)[found < 0][0]
        raise CliError(f"neighbour window ending {missing} is not in the data it came from; was the data "
                       "file changed after training? Re-train the checkpoint.")  # fmt: skip
    return found


def _check_memory_outcomes(table: pd.DataFrame, close: pd.Series, horizon: int, model_dir: Path) -> None:
    """Refuse to print outcomes read from bars other than those the memory was built from.

    Each memory entry stores its own label, log(close[t+h] / close[t]); if the data reloaded for the
    checkpoint gives other values (the CSV was edited or replaced since training), the table would be
    silently wrong.
    """
    npos = _positions_of(close.index, table["neighbour_time"])
    later = npos + horizon
    ok = later < len(close)
    logc = np.log(close.to_numpy(dtype=float))
    recomputed = logc[later[ok]] - logc[npos[ok]]
    if not np.allclose(recomputed, table["neighbour_return"].to_numpy(dtype=float)[ok], rtol=1e-4, atol=1e-6):
        raise CliError(f"the outcomes stored in {model_dir}'s memory do not match the closes of its data "
                       "source: the data changed after training. Re-train the checkpoint on the current data.")  # fmt: skip


def _run_features(run: dict, df: pd.DataFrame) -> pd.DataFrame:
    """The features the checkpoint was trained on, in its column order, computed on ``df``."""
    from .data.features import FeatureConfig, compute_features

    try:
        fcfg = FeatureConfig(**run["feature_config"])
    except TypeError as exc:  # a key this version's FeatureConfig does not know
        raise CliError(f"the run file's feature_config does not fit this version of course-lib ({exc}); "
                       "re-train with `course-lib train`.") from exc  # fmt: skip
    feats = compute_features(df, fcfg)
    missing = [c for c in run["feature_columns"] if c not in feats.columns]
    if missing:
        raise CliError(f"the checkpoint was trained on features {missing} that this version of course-lib "
                       "does not compute; re-train with `course-lib train`.")  # fmt: skip
    return feats[run["feature_columns"]]


# ------------------------------------------------------------------------------------------- parsing
def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the bundled S&P 500 sample, offline)")
    g.add_argument("--data", help="an OHLCV CSV file (Yahoo export, Bybit dump, DataFrame.to_csv, ...)")
    g.add_argument(
        "--symbols", help="one symbol to load with the live loader (cached; needs `fetch` or network)"
    )
    g.add_argument(
        "--source", choices=("yfinance", "bybit"), default="yfinance", help="live source for --symbols"
    )
    g.add_argument("--interval", help="bar interval for --symbols (yfinance: 1d, 1h...; bybit: 60, D...)")
    g.add_argument("--start-data", help="first date to download for --symbols")
    g.add_argument("--end-data", help="last date to download for --symbols")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course-lib",
        description="Memory-Augmented Transformers for Trading: fetch data, train, backtest, find similar moments.",
        epilog="Run `course-lib <command> --help` for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{fetch,train,backtest,similar}")
    sub.required = True
    _add_fetch_command(sub)
    _add_train_command(sub)
    _add_backtest_command(sub)
    _add_similar_command(sub)
    return parser


def _add_fetch_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download bars from Yahoo Finance or Bybit into the cache",
                       description="Download bars (paginated, retried) and cache them as CSV for offline use.")  # fmt: skip
    p.add_argument("--source", choices=("yfinance", "bybit"), default="yfinance")
    p.add_argument("--symbols", required=True, help="comma-separated, e.g. SPY,QQQ or BTCUSDT,ETHUSDT")
    p.add_argument("--interval", help="yfinance: 1d (default), 1h, ...; bybit: 60 (default), D, ...")
    p.add_argument(
        "--start", help="first date (yfinance default 2015-01-01; bybit default: latest 1000 bars)"
    )
    p.add_argument("--end", help="last date (default: now)")
    p.add_argument("--out-dir", help="also write <symbol>_<interval>.csv files here")
    p.add_argument("--refresh", action="store_true", help="download even if cached")
    p.set_defaults(func=cmd_fetch)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the memory-augmented transformer and save a checkpoint",
                       description="Train on a chronological split (purged, scaler fitted on training bars only) "
                       "and save weights, memory and scaler to --out.")  # fmt: skip
    _add_data_args(p)
    p.add_argument("--start", help="use bars from this date")
    p.add_argument("--end", help="use bars up to this date")
    p.add_argument(
        "--out", default="checkpoints/model", help="checkpoint folder (default: checkpoints/model)"
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--memory-size", type=int, default=100_000, help="capacity of the memory bank (entries)")
    p.add_argument("--no-memory", action="store_true", help="train the same transformer without memory")
    p.add_argument("--seq-len", type=int, default=64, help="window length in bars")
    p.add_argument("--horizon", type=int, default=1, help="forecast horizon in bars")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--neighbors", type=int, default=32, help="neighbours retrieved per query")
    p.add_argument("--key-dim", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0: off)")
    p.add_argument("--train-frac", type=float, default=0.7)
    p.add_argument("--val-frac", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_backtest_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backtest", help="backtest a trained checkpoint, print the metrics, write the plot",
                       description="Positions decided at each close earn the next bar; costs on turnover; "
                       "annualisation from the bar frequency. Default period: the checkpoint's test period.")  # fmt: skip
    p.add_argument("--model", required=True,
                   help="checkpoint folder written by `course-lib train` (or a file in it, e.g. ck/model.pt)")  # fmt: skip
    _add_data_args(p)
    p.add_argument("--start", help="first decision date (default: start of the checkpoint's test period)")
    p.add_argument("--end", help="last decision date")
    p.add_argument("--strategy", choices=("memory", "forecast", "similarity", "position"), default="memory",
                   help="memory: model + memory agreement (default); forecast: sign x strength of the forecast; "
                   "similarity: share of rising neighbours; position: the model's portfolio head")  # fmt: skip
    p.add_argument("--cost-bps", type=float, default=5.0, help="cost per unit turnover in basis points")
    p.add_argument("--slippage-bps", type=float, default=0.0)
    p.add_argument("--stop-loss", type=float, help="e.g. 0.05 closes a trade after a 5%% loss")
    p.add_argument("--take-profit", type=float, help="e.g. 0.1 closes a trade after a 10%% gain")
    p.add_argument("--periods-per-year", type=float, help="override the inferred annualisation factor")
    p.add_argument("--plot", help="image file for the four-panel report (default: <model>/backtest.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the plot")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_backtest)


def _add_similar_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("similar", help="the most similar past moments to a date and what followed them",
                       description="The most similar distinct past episodes to --date. Only windows whose outcomes "
                       "over every horizon shown were known by --date are searched (no look-ahead in the outcomes). "
                       "With --model and a --date inside the checkpoint's training/validation period, the "
                       "checkpoint's scaler and weights were fitted on bars after --date, so the ranking uses later "
                       "information: a warning says so (as `backtest` does for such a --start). Without --model the "
                       "scaler is fitted on the bars up to --date only.")  # fmt: skip
    p.add_argument(
        "--date", required=True, help="the moment to look up (the last bar at or before it is used)"
    )
    _add_data_args(p)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--model", help="compare with this checkpoint's memory keys over the windows in its memory "
                   "instead of a kNN on the features (without --data/--symbols: the data the checkpoint was trained "
                   "on). Warns when --date is inside its training/validation period (look-ahead in the ranking)")  # fmt: skip
    p.add_argument("--method", choices=("raw", "shape", "stats"), default="raw",
                   help="kNN window description: raw scaled features (keeps volatility), z-normalised shape "
                   "(discards level and amplitude) or summary statistics (ignored with --model)")  # fmt: skip
    p.add_argument("--seq-len", type=int, default=64, help="kNN window length (ignored with --model)")
    p.add_argument("--lookback", type=int, default=16, help="bars of the window compared by kNN")
    p.add_argument("--horizon", type=int, default=1,
                   help="an extra outcome horizon to show, in bars (1, 5 and 20 are always shown)")  # fmt: skip
    p.add_argument("--min-gap", type=int, default=None,
                   help="exclusion zone in bars: no two neighbours, and no neighbour and --date, end closer than "
                   "this (default: the window length), so each row is a distinct episode")  # fmt: skip
    p.set_defaults(func=cmd_similar)

# Flags checked before any work starts: deep inside, a bad value surfaces as a message about an internal
# field ("MemoryConfig.key_dim must be >= 1" for --lookback 0), which does not say which flag to change.
_AT_LEAST_1 = ("epochs", "top", "seq_len", "lookback", "horizon", "neighbors", "batch_size", "memory_size",
               "d_model", "heads", "layers", "key_dim")  # fmt: skip
_AT_LEAST_0 = ("min_gap", "patience", "cost_bps", "slippage_bps")
_POSITIVE = ("lr", "take_profit", "periods_per_year")


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject out-of-range numeric flags with an argparse error naming the flag (exit status 2)."""

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in _AT_LEAST_1:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"{flag(name)} must be >= 1, got {value}")
    for name in _AT_LEAST_0:
        value = getattr(args, name, None)
        if value is not None and value < 0:
            parser.error(f"{flag(name)} must be >= 0, got {value}")
    for name in _POSITIVE:
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            parser.error(f"{flag(name)} must be > 0, got {value}")
    stop = getattr(args, "stop_loss", None)
    if stop is not None and not 0 < stop < 1:
        parser.error(f"--stop-loss must be a fraction in (0, 1), e.g. 0.05 for 5%, got {stop}")
    train_frac, val_frac = getattr(args, "train_frac", None), getattr(args, "val_frac", None)
    if train_frac is not None and not 0 < train_frac < 1:
        parser.error(f"--train-frac must be in (0, 1), got {train_frac}")
    if val_frac is not None and not 0 <= val_frac < 1:
        parser.error(f"--val-frac must be in [0, 1), got {val_frac}")
    if train_frac is not None and val_frac is not None and train_frac + val_frac >= 1:
        parser.error(
            f"--train-frac + --val-frac must be < 1 to leave a test period, got {train_frac} + {val_frac}"
        )
    heads = getattr(args, "heads", None)
    for name in ("d_model", "key_dim"):
        value = getattr(args, name, None)
        if heads and value and value % heads:
            parser.error(f"{flag(name)} ({value}) must be a multiple of --heads ({heads})")


# Problems with the user's input or environment, each raised with a message that names the fix: printed
# as one line. Anything else is a bug in course_lib and keeps its traceback. (DataError, CheckpointError and
# MemoryFileError subclass ValueError; they are listed to say what is expected.)
_USER_ERRORS: tuple[type[BaseException], ...] = (
    CliError,
    DataError,  # a CSV or a download that is not usable OHLCV data
    CheckpointError,  # a checkpoint folder that is incomplete, from another version or another config
    MemoryFileError,  # a memory file that is truncated, of another format or the wrong dimension
    OSError,  # a file that is missing, unreadable, unwritable, a folder where a file was expected, ...
    ValueError,  # config validation (e.g. MemoryTransformerConfig) names the fix itself
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``course-lib`` / ``python -m course_lib``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            return int(args.func(args) or 0)
    except _USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
