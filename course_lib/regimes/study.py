"""Lesson 07's experiments: the market x detector grid, walk-forward, and what knowing the regime is worth.

:func:`run_regime_study` takes one synthetic market (which knows its true regime per bar) and, for each
walk-forward fold,

1. fits every unsupervised detector on the fold's training bars only, applies it causally up to the end of
   the test block, and maps its states to true regimes with :func:`course_lib.align_labels` fitted on the
   training bars; the smoothed HMM is scored the same way, as the look-ahead oracle;
2. runs the supervised memory vote (:class:`course_lib.KNNRegimeDetector`) over two kinds of keys: plain
   window features and a memory transformer's keys (``encoder``, trained once on a *different* market, so
   its weights have seen nothing of this one); true labels become usable ``label_delay`` bars after the fact;
3. forecasts the next return with a kNN over the same window keys, once over every past entry and once
   restricted to entries of the regime the causal HMM detects now (regime-aware retrieval).

Everything a table or a picture needs comes back in a :class:`RegimeStudy`. Helpers turn detected labels
into exposure (:func:`regime_positions`), backtest them against buy-and-hold and the true-regime ceiling
(:func:`regime_backtest`) and summarise seeds with t intervals (:func:`seed_interval`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..backtest.engine import BacktestConfig, Backtester
from ..data.features import compute_features, forward_log_return
from ..data.synthetic import SyntheticConfig, SyntheticMarket
from ..data.windows import FeatureScaler, walk_forward_folds
from ..stats import t_interval
from .detection import (
    CALM_STRESSED,
    HMMRegimeDetector,
    KNNRegimeDetector,
    MarkovSwitchingDetector,
    RegimeAwareMemory,
    VolatilityThresholdDetector,
    align_labels,
    group_regimes,
    label_available_at,
    regime_scores,
)

__all__ = [
    "DETECTORS",
    "RegimeStudy",
    "RegimeStudyConfig",
    "heavy_tail_config",
    "pretrain_key_encoder",
    "regime_backtest",
    "regime_positions",
    "relabel_probabilities",
    "run_regime_study",
    "SCORE_BOUNDS",
    "seed_interval",
    "summarise_seeds",
    "transformer_keys",
    "window_keys",
]

#: Detector names in table order; the last is the look-ahead oracle.
DETECTORS: tuple[str, ...] = ("knn_transformer", "knn_features", "hmm_filter", "markov_filter", "vol_threshold",
                              "hmm_smoothed")


def heavy_tail_config(tail_df: float = 2.5, base: SyntheticConfig | None = None) -> SyntheticConfig:
    """The misspecified market: the same regimes with much heavier tails (Student t with ``tail_df``
    degrees of freedom, finite variance for ``tail_df > 2``), which a Gaussian HMM reads as regime switches."""
    return replace(base or SyntheticConfig(), tail_df=tail_df)


@dataclass
class RegimeStudyConfig:
    """Settings of :func:`run_regime_study` (sizes in bars).

    ``groups`` maps the market's regimes to the labels that are scored (default calm vs stressed);
    ``n_regimes`` is the number of states of the unsupervised detectors (normally ``len(groups)``).
    ``min_train_frac`` of the bars form the first fold's training period; later folds expand it.
    ``label_delay``: bars after which a true label is known (the supervised vote's memory and the purge gap).
    """

    n_folds: int = 2
    min_train_frac: float = 0.5
    groups: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(CALM_STRESSED))
    n_regimes: int = 2
    label_delay: int = 20
    lookback: int = 16
    knn_k: int = 32
    vol_window: int = 20
    vol_quantile: float = 0.75
    hmm_restarts: int = 3
    ms_em_iter: int = 100
    horizon: int = 1
    detectors: tuple[str, ...] = DETECTORS

    def __post_init__(self) -> None:
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detectors {unknown}; choose from {DETECTORS}.")
        if not 0.1 <= self.min_train_frac < 0.95:
            raise ValueError(f"min_train_frac must be in [0.1, 0.95), got {self.min_train_frac}.")


@dataclass
class RegimeStudy:
    """What :func:`run_regime_study` measured on one market.

    Attributes:
        scores: one row per (fold, detector): balanced_accuracy, ari, accuracy, switches_per_year,
            detection_delay, detected_share, n_bars.
        labels: per detector, its labels on the out-of-sample bars (all test blocks, in true-regime names).
        probabilities: per detector, its regime probabilities on the out-of-sample bars.
        true: the true (grouped) regime of every bar of the study.
        returns: log return of every bar of the study.
        confusion: per detector, the confusion matrix summed over folds.
        retrieval: one row per fold: direction hit rate and IC of the kNN forecast, unrestricted vs
            restricted to the detected regime.
    """

    scores: pd.DataFrame
    labels: dict[str, pd.Series]
    probabilities: dict[str, pd.DataFrame]
    true: pd.Series
    returns: pd.Series
    confusion: dict[str, pd.DataFrame]
    retrieval: pd.DataFrame


def window_keys(scaled: pd.DataFrame, lookback: int) -> pd.DataFrame:
    """Per bar t, the last ``lookback`` rows of scaled features up to t, flattened (bars before the first
    full window are left out). Cosine similarity on these is "the recent path looked like this"."""
    values = scaled.to_numpy(dtype=np.float32)
    if len(values) < lookback:
        raise ValueError(f"window_keys: {len(values)} rows are fewer than lookback={lookback}.")
    win = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # (n - L + 1, F, L)
    flat = win.transpose(0, 2, 1).reshape(len(win), -1)
    return pd.DataFrame(flat, index=scaled.index[lookback - 1:])


def pretrain_key_encoder(n_bars: int = 3000, seed: int = 100, seq_len: int = 32, d_model: int = 32,
                         epochs: int = 2, config: SyntheticConfig | None = None, progress: bool = False):
    """Train a small memory transformer on its own synthetic market (``seed``) and return the trainer.

    Only its key function is used afterwards (:func:`transformer_keys`): trained on another market, it is
    a fixed, causal feature map for every market it is applied to.
    """
    from ..data.synthetic import make_synthetic_market
    from ..data.windows import prepare_dataset
    from ..model import MemoryTransformerConfig
    from ..training import MemoryTransformerTrainer, TrainerConfig

    market = make_synthetic_market(n_bars, seed=seed, config=config)
    ds = prepare_dataset(market.ohlcv, seq_len=seq_len, horizon=1, train_frac=0.8, val_frac=0.1)
    mc = MemoryTransformerConfig(input_dim=ds.train.n_features, seq_len=seq_len, d_model=d_model,
                                 n_heads=2, n_layers=1, d_ff=2 * d_model, n_neighbors=16, key_dim=16,
                                 key_bars=min(16, seq_len))
    tc = TrainerConfig(epochs=epochs, batch_size=256, patience=0, progress=progress, seed=seed, device="cpu")
    trainer = MemoryTransformerTrainer(mc, tc, scaler=ds.scaler)
    trainer.fit(ds.train, ds.val)
    return trainer


def transformer_keys(trainer: Any, scaled: pd.DataFrame, batch: int = 1024) -> pd.DataFrame:
    """The trained transformer's memory keys of the window ending at each bar (``model.memory_keys``)."""
    import torch

    seq_len = trainer.model_config.seq_len
    values = scaled.to_numpy(dtype=np.float32)
    win = np.lib.stride_tricks.sliding_window_view(values, seq_len, axis=0).transpose(0, 2, 1)
    model = trainer.model
    was = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(win), batch):
            xb = torch.from_numpy(np.ascontiguousarray(win[i:i + batch])).to(trainer.device)
            out.append(model.memory_keys(xb).float().cpu().numpy())
    model.train(was)
    return pd.DataFrame(np.concatenate(out), index=scaled.index[seq_len - 1:])


def relabel_probabilities(probs: pd.DataFrame, mapping: Mapping[Any, Any], classes: Sequence[Any]) -> pd.DataFrame:
    """State probabilities -> true-regime probabilities (states mapped to the same regime are added)."""
    out = pd.DataFrame(0.0, index=probs.index, columns=list(classes))
    for state, regime in mapping.items():
        if state in probs.columns:
            out[regime] += probs[state]
    out.columns.name = "regime"
    return out


def _argmax(probs: pd.DataFrame) -> pd.Series:
    cols = np.asarray(probs.columns)
    return pd.Series(cols[np.argmax(probs.to_numpy(), axis=1)], index=probs.index, name="regime")


def _score_row(true: pd.Series, pred: pd.Series) -> dict[str, Any]:
    s = regime_scores(true, pred)
    return {k: v for k, v in s.items() if k != "confusion"}, s["confusion"]


def _forecast_scores(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(pred) & np.isfinite(y) & (y != 0)
    if not ok.any():
        return float("nan"), float("nan")
    hit = float(np.mean(np.sign(pred[ok]) == np.sign(y[ok])))
    ic = float(np.corrcoef(pred[ok], y[ok])[0, 1]) if ok.sum() > 2 and np.std(pred[ok]) > 0 else float("nan")
    return hit, ic


def _unsupervised_probs(name: str, cfg: RegimeStudyConfig, hmm: HMMRegimeDetector, train: pd.Series,
                        hist: pd.Series) -> pd.DataFrame:
    """State probabilities over ``hist`` of one unsupervised detector fitted on ``train``."""
    if name == "hmm_filter":
        return hmm.filter(hist)
    if name == "hmm_smoothed":
        return hmm.smooth(hist)
    if name == "markov_filter":
        return MarkovSwitchingDetector(cfg.n_regimes, em_iter=cfg.ms_em_iter).fit(train).filter(hist)
    quantiles = [cfg.vol_quantile] if cfg.n_regimes == 2 else None
    return VolatilityThresholdDetector(cfg.n_regimes, cfg.vol_window, quantiles=quantiles).fit(train).filter(hist)


def run_regime_study(market: SyntheticMarket, config: RegimeStudyConfig | None = None, encoder: Any = None,
                     seed: int = 0) -> RegimeStudy:
    """The walk-forward grid on one market (see the module docstring). ``encoder``: a trainer from
    :func:`pretrain_key_encoder` (needed for ``knn_transformer``; without one that row is skipped)."""
    cfg = config or RegimeStudyConfig()
    features = compute_features(market.ohlcv)
    returns = features["log_return"].rename("log_return")
    true = group_regimes(market.regimes, cfg.groups).reindex(features.index)
    classes = list(cfg.groups)
    target = forward_log_return(market.ohlcv["close"], cfg.horizon).reindex(features.index)
    n = len(features)
    folds = walk_forward_folds(n, cfg.n_folds, min_train=int(n * cfg.min_train_frac), gap=cfg.label_delay)
    detectors = [d for d in cfg.detectors if d != "knn_transformer" or encoder is not None]
    rows, retrieval = [], []
    labels: dict[str, list[pd.Series]] = {d: [] for d in detectors}
    probs_out: dict[str, list[pd.DataFrame]] = {d: [] for d in detectors}
    confusion: dict[str, pd.DataFrame] = {}
    for k, fold in enumerate(folds):
        tr, te = fold.train, fold.test
        end = int(te[-1]) + 1
        hist_ret = returns.iloc[:end]
        train_idx, test_idx = features.index[tr], features.index[te]
        scaler = FeatureScaler().fit(features.iloc[tr])
        scaled = scaler.transform(features.iloc[:end])
        fold_probs: dict[str, pd.DataFrame] = {}
        # the causal HMM is always fitted: its labels also drive the regime-restricted retrieval below
        hmm = HMMRegimeDetector(cfg.n_regimes, max_restarts=cfg.hmm_restarts, seed=seed).fit(returns.iloc[tr])
        hmm_all_labels = None
        for name in ("hmm_filter", "hmm_smoothed", "markov_filter", "vol_threshold"):
            if name not in detectors and name != "hmm_filter":
                continue
            p = _unsupervised_probs(name, cfg, hmm, returns.iloc[tr], hist_ret)
            mapping = align_labels(true.loc[train_idx], _argmax(p.loc[train_idx]))  # fitted on training bars
            mapped = relabel_probabilities(p, mapping, classes)
            if name == "hmm_filter":
                hmm_all_labels = _argmax(mapped)
            if name in detectors:
                fold_probs[name] = mapped.loc[test_idx]
        keysets: dict[str, pd.DataFrame] = {"knn_features": window_keys(scaled, cfg.lookback)}
        if "knn_transformer" in detectors:
            keysets["knn_transformer"] = transformer_keys(encoder, scaled)
        for name, keys in keysets.items():
            if name not in detectors:
                continue
            det = KNNRegimeDetector(cfg.knn_k, label_delay=cfg.label_delay).fit(keys, true.iloc[:end], classes=classes)
            fold_probs[name] = det.filter(keys.loc[keys.index.intersection(test_idx)])
        for name in detectors:
            p = fold_probs[name]
            pred = _argmax(p)
            row, conf = _score_row(true.loc[p.index], pred)
            rows.append({"fold": k, "detector": name, **row})
            confusion[name] = conf if name not in confusion else confusion[name].add(conf, fill_value=0)
            labels[name].append(pred)
            probs_out[name].append(p)
        # regime-aware retrieval: kNN forecast of the next return, all entries vs the detected regime's
        keys = keysets["knn_features"]
        avail = label_available_at(keys.index, cfg.horizon)
        entry_regime = hmm_all_labels.reindex(keys.index).to_numpy()
        mem = RegimeAwareMemory(keys.shape[1], classes)
        mem.add(keys.to_numpy(), entry_regime, keys.index, avail, target.reindex(keys.index).to_numpy())
        q = keys.loc[keys.index.intersection(test_idx)]
        y = target.reindex(q.index).to_numpy()
        free = mem.forecast(q.to_numpy(), cfg.knn_k, as_of=q.index)
        restricted = mem.forecast(q.to_numpy(), cfg.knn_k, as_of=q.index, regime=hmm_all_labels.loc[q.index].to_numpy())
        h_free, ic_free = _forecast_scores(free, y)
        h_res, ic_res = _forecast_scores(restricted, y)
        retrieval.append({"fold": k, "hit_unrestricted": h_free, "hit_restricted": h_res,
                          "ic_unrestricted": ic_free, "ic_restricted": ic_res, "n_bars": len(q)})
    return RegimeStudy(
        scores=pd.DataFrame(rows),
        labels={d: pd.concat(v) for d, v in labels.items()},
        probabilities={d: pd.concat(v) for d, v in probs_out.items()},
        true=true,
        returns=returns,
        confusion=confusion,
        retrieval=pd.DataFrame(retrieval),
    )


def regime_positions(labels: pd.Series, exposure: Mapping[Any, float]) -> pd.Series:
    """Exposure decided at each bar's close from the regime label known then (e.g. calm 1.0, stressed 0.0)."""
    missing = sorted(set(labels.dropna().unique()) - set(exposure), key=str)
    if missing:
        raise ValueError(f"regime_positions: no exposure given for regimes {missing}.")
    return labels.map(dict(exposure)).astype(float).rename("position")


def regime_backtest(close: pd.Series, labels: Mapping[str, pd.Series], true: pd.Series,
                    exposure: Mapping[Any, float], cost_bps: float = 5.0) -> pd.DataFrame:
    """Backtest regime-scaled exposure after costs on the bars of ``labels``: one row per detector plus
    ``buy_and_hold`` and ``true_regime`` (the same rule driven by the true regime: a ceiling, since the true
    regime at t is not known at t). Positions decided at the close of t earn bar t+1."""
    bt = Backtester(BacktestConfig(cost_bps=cost_bps, n_boot=0))
    first = next(iter(labels.values()))
    bars = first.index
    runs = {"buy_and_hold": pd.Series(1.0, index=bars), "true_regime": regime_positions(true.loc[bars], exposure)}
    runs.update({name: regime_positions(lab.loc[bars], exposure) for name, lab in labels.items()})
    rows = {}
    for name, pos in runs.items():
        m = bt.run(pos, close).metrics
        rows[name] = {key: m[key] for key in ("sharpe", "annual_return", "max_drawdown", "turnover", "exposure")}
    return pd.DataFrame(rows).T.rename_axis("strategy")


#: The range each bounded score lives in: its interval is kept inside (the adjusted Rand index is at least
#: -1/2 for any two partitions, Chacon & Rastrojo 2023, and at most 1).
SCORE_BOUNDS: dict[str, tuple[float, float]] = {
    "balanced_accuracy": (0.0, 1.0), "accuracy": (0.0, 1.0), "detected_share": (0.0, 1.0), "ari": (-0.5, 1.0),
    "hit_unrestricted": (0.0, 1.0), "hit_restricted": (0.0, 1.0),
}


def seed_interval(values: Sequence[float], level: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and t interval over independent seeds (NaN interval with fewer than two values), clipped to
    ``bounds`` when given (:func:`course_lib.stats.t_interval`)."""
    ci = t_interval(values, level, bounds)
    return ci["diff"], ci["ci_low"], ci["ci_high"]


def summarise_seeds(table: pd.DataFrame, metric: str, by: Sequence[str] = ("market", "detector"),
                    seed_col: str = "seed", bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Average ``metric`` over folds within each seed, then mean and t interval over seeds per group.

    A bounded score keeps its interval inside its range: ``bounds``, by default :data:`SCORE_BOUNDS` of the
    metric (none for unbounded ones such as a Sharpe ratio); ``clipped`` says where an end was cut."""
    by = list(by)
    bounds = bounds if bounds is not None else SCORE_BOUNDS.get(metric)
    per_seed = table.groupby([*by, seed_col], sort=False)[metric].mean()
    rows = []
    for key, grp in per_seed.groupby(level=list(range(len(by))), sort=False):
        ci = t_interval(grp.to_numpy(), bounds=bounds)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": ci["diff"], "low": ci["ci_low"], "high": ci["ci_high"],
                     "n_seeds": len(grp), "clipped": bool(ci["clipped"])})
    return pd.DataFrame(rows)
