"""Walk-forward evaluation: retrain per fold without touching the future, compare against baselines.

For each fold of :func:`course_lib.walk_forward_folds` (test blocks tile the end of the data in order):

1. the feature scaler is fitted on the bars of that fold's *training* windows only;
2. the transformer is trained on the training windows (early stopping on the fold's validation windows,
   which lie after training and before the test block, separated by purge gaps of ``horizon + seq_len - 1``
   samples), once with memory and once without (same seed, same sizes);
3. every strategy decides a position at the close of each test bar, and each fold's decisions are
   concatenated into one out-of-sample path per strategy;
4. all strategies are backtested on the same bars with the same costs; the table reports every metric
   with a block-bootstrap confidence interval for Sharpe, and a per-fold table shows how stable that is.

Strategies compared: buy-and-hold, momentum, the kNN analog forecaster (memory alone, no network), the
transformer without memory, the memory-augmented transformer (sign x strength of its forecast, exactly
like the no-memory one) and the chapter's :class:`course_lib.MemoryTradingStrategy` (model + memory
agreement sizing).

What each memory holds (read this before comparing ``knn_analog`` with ``memory_transformer``): by default
the kNN baselines' memory holds the fold's training **and validation** windows, everything before the
test block, because a kNN has nothing to early-stop and a live system would search all resolved history.
The transformer's memory holds the **training windows only** (:class:`course_lib.MemoryTransformerTrainer`
keeps validation out of it so early stopping is not scored on windows it can retrieve). So the kNN's
neighbours include the most recent ``val_frac`` of history, the transformer's do not: a difference in the
kNN's favour. ``WalkForwardConfig(knn_memory="train")`` gives the kNN the transformer's memory for a
like-for-like comparison; :attr:`WalkForwardResult.memory_contents` records what each strategy's memory
held in a run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from ..data.features import FeatureConfig, compute_features, forward_log_return
from ..data.loaders import DataError
from ..data.windows import FeatureScaler, Fold, make_windows, walk_forward_folds
from ..metrics import format_metrics
from ..parallel import run_tasks
from .engine import BacktestConfig, Backtester, BacktestResult
from .strategies import (
    BuyAndHoldStrategy,
    ForecastStrategy,
    HistoricalSimilarityStrategy,
    KNNAnalogForecaster,
    MemoryTradingStrategy,
    MomentumStrategy,
)

__all__ = [
    "ALL_STRATEGIES",
    "WalkForwardConfig",
    "WalkForwardResult",
    "cost_decomposition",
    "cost_sensitivity",
    "paired_strategy_difference",
    "walk_forward_evaluate",
]

#: Strategy names in table order.
ALL_STRATEGIES: tuple[str, ...] = (
    "buy_and_hold",
    "momentum",
    "knn_analog",
    "knn_similarity",
    "transformer",
    "memory_transformer",
    "memory_agreement",
)

_NEEDS_MODEL = {"transformer": False, "memory_transformer": True, "memory_agreement": True}


@dataclass
class WalkForwardConfig:
    """Settings of :func:`walk_forward_evaluate`.

    ``model`` / ``trainer`` are keyword overrides for :class:`course_lib.MemoryTransformerConfig` and
    :class:`course_lib.TrainerConfig` (``input_dim``, ``seq_len`` and ``use_memory`` are set here).
    ``val_frac`` is the share of each fold's pre-test samples held out for early stopping.
    ``knn_memory``: what the kNN baselines may retrieve, ``"train+val"`` (default: all windows before the
    test block) or ``"train"`` (the transformer's memory: training windows only; see the module docstring).
    ``seeds``: train each transformer once per seed in every fold (empty: once, with the trainer's seed). A
    model strategy then holds the mean of its seeds' positions, and :attr:`WalkForwardResult.seed_positions`
    keeps each seed's own, for a paired interval over seeds.
    """

    n_folds: int = 4
    seq_len: int = 64
    horizon: int = 1
    min_train: int | None = None
    val_frac: float = 0.15
    expanding: bool = True
    scaler_clip: float | None = 5.0
    strategies: tuple[str, ...] = ALL_STRATEGIES
    model: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    momentum_lookback: int = 20
    knn_k: int = 32
    knn_lookback: int = 16
    similarity_thresholds: tuple[float, float] = (0.55, 0.45)
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    knn_memory: str = "train+val"
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.seeds = tuple(int(x) for x in self.seeds)
        unknown = [s for s in self.strategies if s not in ALL_STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {ALL_STRATEGIES}.")
        if self.knn_memory not in ("train+val", "train"):
            raise ValueError(f"knn_memory must be 'train+val' or 'train', got {self.knn_memory!r}.")
        if not 0 <= self.val_frac < 0.5:
            raise ValueError(f"val_frac must be in [0, 0.5), got {self.val_frac}.")


@dataclass
class WalkForwardResult:
    """What :func:`walk_forward_evaluate` measured.

    Attributes:
        table: one row per strategy, numeric metrics (Sharpe with ``sharpe_ci_low/high``) over the
            concatenated out-of-sample path.
        per_fold: one row per (fold, strategy): Sharpe, total return, max drawdown, and the fold's dates.
        positions: decided positions per strategy (index = decision times).
        results: the :class:`course_lib.BacktestResult` per strategy.
        predictions: the out-of-sample prediction frames per model ("transformer", "memory_transformer",
            "knn_analog"), concatenated over folds, with a ``fold`` column.
        histories: training histories per (fold, model).
        folds: the sample-index folds used.
        memory_contents: per strategy that retrieves from a memory, which windows that memory held (the
            kNN baselines and the transformer differ by default; see the module docstring).
        seed_positions: with ``config.seeds``, (model strategy, seed) -> that seed's positions.
    """

    table: pd.DataFrame
    per_fold: pd.DataFrame
    positions: dict[str, pd.Series]
    results: dict[str, BacktestResult]
    predictions: dict[str, pd.DataFrame]
    histories: dict[tuple[int, str], pd.DataFrame]
    folds: list[Fold]
    config: WalkForwardConfig
    memory_contents: dict[str, str] = field(default_factory=dict)
    seed_positions: dict[tuple[str, int], pd.Series] = field(default_factory=dict)

    def summary(self, digits: int = 2) -> pd.DataFrame:
        """The results table formatted for reading (rows = metrics, columns = strategies)."""
        return format_metrics({name: self.table.loc[name].to_dict() for name in self.table.index}, digits)

    def returns(self) -> dict[str, pd.Series]:
        return {name: res.returns for name, res in self.results.items()}


def _fold_windows(
    features: pd.DataFrame, target: pd.Series, raw_end_pos: np.ndarray, fold: Fold, cfg: WalkForwardConfig
):
    """Scale with statistics of this fold's training bars only, then cut the same windows."""
    last_train_bar = int(raw_end_pos[fold.train[-1]])
    scaler = FeatureScaler(clip=cfg.scaler_clip).fit(features.iloc[: last_train_bar + 1])
    windows = make_windows(scaler.transform(features), target, cfg.seq_len, cfg.horizon)
    return windows, scaler


def _train(windows, fold: Fold, cfg: WalkForwardConfig, use_memory: bool, scaler: FeatureScaler,
           seed: int | None = None):
    from ..model import MemoryTransformerConfig
    from ..training import MemoryTransformerTrainer, TrainerConfig

    mkw = {"input_dim": windows.n_features, "seq_len": cfg.seq_len, **cfg.model, "use_memory": use_memory}
    tkw = {"progress": False, **cfg.trainer, **({} if seed is None else {"seed": seed})}
    trainer = MemoryTransformerTrainer(MemoryTransformerConfig(**mkw), TrainerConfig(**tkw), scaler=scaler)
    val = windows.subset(fold.val) if len(fold.val) else None
    history = trainer.fit(windows.subset(fold.train), val)
    return trainer, history


def _fold_line(end_time, k: int, fold: Fold, n_folds: int) -> str:
    first, last = end_time[fold.train[0]], end_time[fold.train[-1]]
    return (f"fold {k + 1}/{n_folds}: train {first}..{last}, "
            f"test {end_time[fold.test[0]]}..{end_time[fold.test[-1]]}")


def _evaluate_fold(ohlcv: pd.DataFrame, features: pd.DataFrame, target: pd.Series, raw_end_pos: np.ndarray,
                   k: int, fold: Fold, n_folds: int, cfg: WalkForwardConfig,
                   log: Callable[[str], None] | None = None, threads: int | None = None):
    """One fold, start to finish (scaler, kNN, both models, positions): a self-contained task, so folds can
    run side by side on an executor and give the same numbers as in a loop. Returns (positions per
    strategy, prediction frames per model, training histories).

    ``threads``: torch's intra-op thread count while the fold runs (restored after). A matrix product
    split over another number of threads adds in another order, so a worker with a different default would
    round differently; fixing it makes every executor reproduce the serial run bit for bit.
    """
    old = torch.get_num_threads()
    if threads and threads != old:
        torch.set_num_threads(threads)
    try:
        return _fold_body(ohlcv, features, target, raw_end_pos, k, fold, n_folds, cfg, log)
    finally:
        if threads and threads != old:
            torch.set_num_threads(old)


def _fold_body(ohlcv, features, target, raw_end_pos, k, fold, n_folds, cfg, log):
    want = set(cfg.strategies)
    pieces: dict[str, pd.Series] = {}
    preds: dict[str, pd.DataFrame] = {}
    histories: dict[tuple[int, str], pd.DataFrame] = {}
    windows, scaler = _fold_windows(features, target, raw_end_pos, fold, cfg)
    test = windows.subset(fold.test)
    times = pd.DatetimeIndex(test.end_time, name="time")
    knn_rows = fold.train if cfg.knn_memory == "train" else np.concatenate([fold.train, fold.val])
    past = windows.subset(knn_rows)  # the kNN's memory: see WalkForwardConfig.knn_memory
    if log:
        log(_fold_line(windows.end_time, k, fold, n_folds))
    if "buy_and_hold" in want:
        pieces["buy_and_hold"] = BuyAndHoldStrategy().positions(times)
    if "momentum" in want:
        pieces["momentum"] = MomentumStrategy(cfg.momentum_lookback).positions(ohlcv["close"], times)
    if want & {"knn_analog", "knn_similarity"}:
        knn = KNNAnalogForecaster(k=cfg.knn_k, lookback=cfg.knn_lookback).fit(past)
        p_train = knn.predict(windows.subset(fold.train))
        p_test = knn.predict(test)
        preds["knn_analog"] = p_test.assign(fold=k)
        if "knn_analog" in want:
            pieces["knn_analog"] = ForecastStrategy().calibrate(p_train).positions(p_test)
        if "knn_similarity" in want:
            similarity = HistoricalSimilarityStrategy(*cfg.similarity_thresholds, min_neighbors=1)
            pieces["knn_similarity"] = similarity.positions(p_test)
    for use_memory in (False, True):
        names = [s for s, needs in _NEEDS_MODEL.items() if needs == use_memory and s in want]
        if not names:
            continue
        model_name = "memory_transformer" if use_memory else "transformer"
        per_seed: dict[str, list[pd.Series]] = {}
        for seed in cfg.seeds or (None,):
            trainer, history = _train(windows, fold, cfg, use_memory, scaler, seed)
            histories[(k, model_name) if seed is None else (k, model_name, seed)] = history
            p_train = trainer.predict(windows.subset(fold.train))
            p_test = trainer.predict(test)
            if model_name not in preds:  # the first seed's forecasts (diagnostics)
                preds[model_name] = p_test.assign(fold=k)
            if model_name in want:
                per_seed.setdefault(model_name, []).append(ForecastStrategy().calibrate(p_train).positions(p_test))
            if "memory_agreement" in names:
                per_seed.setdefault("memory_agreement", []).append(
                    MemoryTradingStrategy().calibrate(p_train).positions(p_test))
        for name, runs in per_seed.items():
            pieces[name] = sum(runs) / len(runs)  # the seeds' mean decision
            for seed, run in zip(cfg.seeds, runs):
                pieces[(name, seed)] = run
    return pieces, preds, histories


def walk_forward_evaluate(
    ohlcv: pd.DataFrame,
    config: WalkForwardConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> WalkForwardResult:
    """Walk-forward comparison of every strategy in ``config.strategies`` on one price series.

    Every step is causal: features are trailing, the scaler and the models see only the fold's training
    period, the memories only hold windows whose outcomes were known at each query's time, and positions
    decided at a test bar's close earn the next bar. Returns a :class:`WalkForwardResult`.

    ``executor``: where the folds run. ``None`` (default) runs them one after another here; any
    ``concurrent.futures.Executor`` runs them side by side: a ``ProcessPoolExecutor`` on this machine's
    cores, or a Dask cluster's ``client.get_executor()`` (:func:`course_lib.parallel.dask_executor`).
    Each fold is a self-contained, seeded task that runs with this process's torch thread count, so the
    result is bit-identical to the serial run (for the best speed-up on a pool, call
    ``torch.set_num_threads(1)`` first: each worker then uses one core). The
    progress bar advances as folds finish; ``log`` lines are printed as folds start (serial) or all at
    submission (executor).
    """
    cfg = config or WalkForwardConfig()
    features = compute_features(ohlcv, cfg.feature_config)
    target = forward_log_return(ohlcv["close"], cfg.horizon).reindex(features.index)
    raw = make_windows(features, target, cfg.seq_len, cfg.horizon)
    n = len(raw)
    gap = cfg.horizon + cfg.seq_len - 1
    first_block = cfg.min_train if cfg.min_train is not None else n // (cfg.n_folds + 1)
    val_size = int(first_block * cfg.val_frac)
    train_size = first_block - val_size - gap * (2 if val_size else 1)
    if train_size < 2 * cfg.seq_len:
        raise DataError(
            f"{n} windows leave only {train_size} training samples in the first of {cfg.n_folds} folds "
            f"(seq_len={cfg.seq_len}, purge gap={gap}). Use more data, fewer folds or a shorter seq_len."
        )
    folds = walk_forward_folds(
        n, cfg.n_folds, min_train=train_size, val_size=val_size, gap=gap, expanding=cfg.expanding
    )
    threads = torch.get_num_threads()  # every fold runs with the caller's torch threads: same rounding anywhere
    tasks = [(ohlcv, features, target, raw.end_pos, k, fold, len(folds), cfg, log if executor is None else None,
              threads) for k, fold in enumerate(folds)]
    if executor is not None and log:
        for k, fold in enumerate(folds):
            log(_fold_line(raw.end_time, k, fold, len(folds)) + " (on the executor)")
    outs = run_tasks(_evaluate_fold, tasks, executor=executor, progress=progress, desc="walk-forward folds")
    pieces: dict = {s: [] for s in cfg.strategies}
    preds: dict[str, list[pd.DataFrame]] = {}
    histories: dict[tuple, pd.DataFrame] = {}
    for fold_pieces, fold_preds, fold_histories in outs:  # task order = fold order, whatever finished first
        for name, piece in fold_pieces.items():
            pieces.setdefault(name, []).append(piece)
        for name, frame in fold_preds.items():
            preds.setdefault(name, []).append(frame)
        histories.update(fold_histories)

    seed_positions = {key: pd.concat(v).sort_index() for key, v in pieces.items() if isinstance(key, tuple)}
    positions = {s: pd.concat(v).sort_index() for s, v in pieces.items() if v and not isinstance(s, tuple)}
    bt = Backtester(cfg.backtest)
    results = {s: bt.run(pos, ohlcv) for s, pos in positions.items()}
    table = pd.DataFrame({s: r.metrics for s, r in results.items()}).T
    table.index.name = "strategy"
    return WalkForwardResult(
        table=table,
        per_fold=_per_fold_table(folds, raw.end_time, positions, ohlcv, cfg),
        positions=positions,
        results=results,
        predictions={name: pd.concat(v) for name, v in preds.items()},
        histories=histories,
        folds=folds,
        config=copy.deepcopy(cfg),
        memory_contents=_memory_contents(cfg),
        seed_positions=seed_positions,
    )


def _per_fold_table(folds, end_time: pd.DatetimeIndex, positions: dict, ohlcv: pd.DataFrame,
                    cfg: WalkForwardConfig) -> pd.DataFrame:
    """One row per fold and strategy: the fold's test period backtested alone (no bootstrap), to show how
    stable the walk-forward result is."""
    fold_rows = []
    quick = Backtester(replace(cfg.backtest, n_boot=0))
    for k, fold in enumerate(folds):
        t_idx = end_time[fold.test]
        for s, pos in positions.items():
            res = quick.run(pos.loc[t_idx[0] : t_idx[-1]], ohlcv)
            m = res.metrics
            fold_rows.append(
                {
                    "fold": k,
                    "strategy": s,
                    "test_start": t_idx[0],
                    "test_end": t_idx[-1],
                    "sharpe": m["sharpe"],
                    "total_return": m["total_return"],
                    "max_drawdown": m["max_drawdown"],
                    "exposure": m["exposure"],
                }
            )
    return pd.DataFrame(fold_rows)


def _memory_contents(cfg: WalkForwardConfig) -> dict[str, str]:
    """What each memory-using strategy could retrieve in a fold, in words (for the reader of the results)."""
    knn = ("training windows only (like the transformer)" if cfg.knn_memory == "train"
           else "training + validation windows (all windows before the test block)")  # fmt: skip
    online = cfg.trainer.get("predict_memory", "train") == "online"
    model = "training windows only" + (" + test windows once their outcome is known" if online else "")
    out = {"knn_analog": knn, "knn_similarity": knn, "memory_transformer": model, "memory_agreement": model}
    return {s: text for s, text in out.items() if s in cfg.strategies}


def cost_sensitivity(
    positions: dict[str, pd.Series],
    prices: pd.DataFrame | pd.Series,
    costs_bps: Sequence[float] = (0, 1, 2, 5, 10, 20),
    config: BacktestConfig | None = None,
) -> pd.DataFrame:
    """Re-run the same positions at several cost levels: the edge a strategy keeps after paying to trade.

    Returns a long table ``cost_bps, strategy, sharpe, annual_return, turnover``.
    """
    base = config or BacktestConfig()
    if not positions:
        raise DataError("cost_sensitivity needs at least one position series.")
    rows = []
    for c in costs_bps:
        bt = Backtester(replace(base, cost_bps=float(c), n_boot=0))
        for name, pos in positions.items():
            m = bt.run(pos, prices).metrics
            rows.append(
                {
                    "cost_bps": float(c),
                    "strategy": name,
                    "sharpe": m["sharpe"],
                    "annual_return": m["annual_return"],
                    "turnover": m["turnover"],
                }
            )
    return pd.DataFrame(rows)


def paired_strategy_difference(returns_a: pd.Series, returns_b: pd.Series, block: int = 20, n_boot: int = 2000,
                               seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Strategy ``a`` against strategy ``b`` on the same bars: the paired difference of their returns.

    Returns the annualised mean return difference and the Sharpe difference, each with a circular block
    bootstrap interval (:func:`course_lib.stats.block_bootstrap_ci`) that resamples the **same** blocks of
    bars for both strategies, so what both earned on a bar (the market's move) cancels instead of widening the
    interval. Two marginal Sharpe intervals that overlap say nothing about the difference; this interval does.
    """
    from ..metrics import periods_per_year, sharpe_ratio
    from ..stats import block_bootstrap_ci

    both = pd.concat([returns_a.rename("a"), returns_b.rename("b")], axis=1, join="inner").dropna()
    if len(both) < 3:
        raise DataError("the two strategies share fewer than 3 bars: pass returns over the same test period.")
    p = periods_per_year(pd.DatetimeIndex(both.index))
    a, b = both["a"].to_numpy(float), both["b"].to_numpy(float)

    def sharpe_diff(x, y):
        return sharpe_ratio(x, p) - sharpe_ratio(y, p)

    lo_m, hi_m = block_bootstrap_ci(a - b, block, level, n_boot, seed)
    lo_s, hi_s = block_bootstrap_ci(a, block, level, n_boot, seed, sharpe_diff, b)
    return {"mean_diff": float(np.mean(a - b) * p), "mean_ci_low": lo_m * p, "mean_ci_high": hi_m * p,
            "sharpe_diff": float(sharpe_diff(a, b)), "sharpe_ci_low": lo_s, "sharpe_ci_high": hi_s,
            "n_bars": len(both)}


def cost_decomposition(positions: dict[str, pd.Series], prices: pd.DataFrame | pd.Series, cost_bps: float,
                       long_flat: bool = True, config: BacktestConfig | None = None) -> pd.DataFrame:
    """Where a strategy's losses come from: the edge before costs, and what trading it costs.

    One row per strategy (and, with ``long_flat``, per strategy's long/flat variant: the same decisions with
    every short replaced by flat, ``<name> long/flat``): ``sharpe_zero_cost`` and ``annual_return_zero_cost``
    (the gross edge), ``turnover`` (capital traded per year), ``cost_drag`` (turnover x cost: the annual return
    the costs take), ``annual_return`` and ``sharpe`` after costs, ``exposure`` and ``long_share`` (share of
    held bars that were long). A strategy with a negative Sharpe at zero cost has no edge to lose; one with a
    positive gross Sharpe and a large ``cost_drag`` trades its edge away.
    """
    base = config or BacktestConfig()
    runs = dict(positions)
    if long_flat:
        runs.update({f"{name} long/flat": pos.clip(lower=0.0) for name, pos in positions.items()
                     if (pos < 0).any()})
    free = Backtester(replace(base, cost_bps=0.0, n_boot=0))
    paid = Backtester(replace(base, cost_bps=float(cost_bps), n_boot=0))
    rows = []
    for name, pos in runs.items():
        g, n = free.run(pos, prices), paid.run(pos, prices)
        held = n.held[n.held != 0]
        rows.append({"strategy": name, "sharpe_zero_cost": g.metrics["sharpe"],
                     "annual_return_zero_cost": g.metrics["annual_return"], "turnover": n.metrics["turnover"],
                     "cost_drag": n.metrics["turnover"] * cost_bps / 1e4, "annual_return": n.metrics["annual_return"],
                     "sharpe": n.metrics["sharpe"], "exposure": n.metrics["exposure"],
                     "long_share": float((held > 0).mean()) if len(held) else float("nan")})
    return pd.DataFrame(rows).set_index("strategy")
