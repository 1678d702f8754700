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
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .backtest import BacktestConfig, Backtester, BacktestResult
from .data import DataError
from .features import FeatureConfig, compute_features, forward_log_return
from .metrics import format_metrics
from .strategies import (
    BuyAndHoldStrategy,
    ForecastStrategy,
    HistoricalSimilarityStrategy,
    KNNAnalogForecaster,
    MemoryTradingStrategy,
    MomentumStrategy,
)
from .windows import FeatureScaler, Fold, make_windows, walk_forward_folds

__all__ = [
    "ALL_STRATEGIES",
    "WalkForwardConfig",
    "WalkForwardResult",
    "cost_sensitivity",
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

    def __post_init__(self) -> None:
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


def _train(windows, fold: Fold, cfg: WalkForwardConfig, use_memory: bool, scaler: FeatureScaler):
    from .model import MemoryTransformerConfig
    from .training import MemoryTransformerTrainer, TrainerConfig

    mkw = {"input_dim": windows.n_features, "seq_len": cfg.seq_len, **cfg.model, "use_memory": use_memory}
    tkw = {"progress": False, **cfg.trainer}
    trainer = MemoryTransformerTrainer(MemoryTransformerConfig(**mkw), TrainerConfig(**tkw), scaler=scaler)
    val = windows.subset(fold.val) if len(fold.val) else None
    history = trainer.fit(windows.subset(fold.train), val)
    return trainer, history


def walk_forward_evaluate(
    ohlcv: pd.DataFrame,
    config: WalkForwardConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> WalkForwardResult:
    """Walk-forward comparison of every strategy in ``config.strategies`` on one price series.

    Every step is causal: features are trailing, the scaler and the models see only the fold's training
    period, the memories only hold windows whose outcomes were known at each query's time, and positions
    decided at a test bar's close earn the next bar. Returns a :class:`WalkForwardResult`.
    """
    from tqdm.auto import tqdm

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
    want = set(cfg.strategies)
    pieces: dict[str, list[pd.Series]] = {s: [] for s in cfg.strategies}
    preds: dict[str, list[pd.DataFrame]] = {}
    histories: dict[tuple[int, str], pd.DataFrame] = {}
    momentum = MomentumStrategy(cfg.momentum_lookback)
    similarity = HistoricalSimilarityStrategy(*cfg.similarity_thresholds, min_neighbors=1)
    bar = tqdm(list(enumerate(folds)), desc="walk-forward folds", disable=not progress, leave=False)
    for k, fold in bar:
        windows, scaler = _fold_windows(features, target, raw.end_pos, fold, cfg)
        test = windows.subset(fold.test)
        times = pd.DatetimeIndex(test.end_time, name="time")
        knn_rows = fold.train if cfg.knn_memory == "train" else np.concatenate([fold.train, fold.val])
        past = windows.subset(knn_rows)  # the kNN's memory: see WalkForwardConfig.knn_memory
        if log:
            first, last = windows.end_time[fold.train[0]], windows.end_time[fold.train[-1]]
            log(f"fold {k + 1}/{len(folds)}: train {first}..{last}, test {times[0]}..{times[-1]}")
        if "buy_and_hold" in want:
            pieces["buy_and_hold"].append(BuyAndHoldStrategy().positions(times))
        if "momentum" in want:
            pieces["momentum"].append(momentum.positions(ohlcv["close"], times))
        if want & {"knn_analog", "knn_similarity"}:
            knn = KNNAnalogForecaster(k=cfg.knn_k, lookback=cfg.knn_lookback).fit(past)
            p_train = knn.predict(windows.subset(fold.train))
            p_test = knn.predict(test)
            preds.setdefault("knn_analog", []).append(p_test.assign(fold=k))
            if "knn_analog" in want:
                pieces["knn_analog"].append(ForecastStrategy().calibrate(p_train).positions(p_test))
            if "knn_similarity" in want:
                pieces["knn_similarity"].append(similarity.positions(p_test))
        for use_memory in (False, True):
            names = [s for s, needs in _NEEDS_MODEL.items() if needs == use_memory and s in want]
            if not names:
                continue
            model_name = "memory_transformer" if use_memory else "transformer"
            trainer, history = _train(windows, fold, cfg, use_memory, scaler)
            histories[(k, model_name)] = history
            p_train = trainer.predict(windows.subset(fold.train))
            p_test = trainer.predict(test)
            preds.setdefault(model_name, []).append(p_test.assign(fold=k))
            if model_name in want:
                pieces[model_name].append(ForecastStrategy().calibrate(p_train).positions(p_test))
            if "memory_agreement" in names:
                strat = MemoryTradingStrategy().calibrate(p_train)
                pieces["memory_agreement"].append(strat.positions(p_test))
    bar.close()

    positions = {s: pd.concat(v).sort_index() for s, v in pieces.items() if v}
    bt = Backtester(cfg.backtest)
    results = {s: bt.run(pos, ohlcv) for s, pos in positions.items()}
    table = pd.DataFrame({s: r.metrics for s, r in results.items()}).T
    table.index.name = "strategy"
    fold_rows = []
    quick = Backtester(replace(cfg.backtest, n_boot=0))
    for k, fold in enumerate(folds):
        t_idx = raw.end_time[fold.test]
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
    return WalkForwardResult(
        table=table,
        per_fold=pd.DataFrame(fold_rows),
        positions=positions,
        results=results,
        predictions={name: pd.concat(v) for name, v in preds.items()},
        histories=histories,
        folds=folds,
        config=copy.deepcopy(cfg),
        memory_contents=_memory_contents(cfg),
    )


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
