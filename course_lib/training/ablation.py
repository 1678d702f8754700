"""The ablation ladder: what the memory path adds, against the baselines a researcher would ask for.

:func:`compare_arms` trains or fits every *arm* on the same chronological split, with the same scaled windows,
the same causal memory rule (an entry is retrievable only once its label is known) and the same seeds, and
scores them on the same test windows. Each arm is compared with a reference arm by the **paired** difference
of direction accuracy: a t-interval over seeds (:func:`course_lib.stats.paired_seed_interval`) and a circular
block bootstrap over the test windows (:func:`course_lib.stats.block_bootstrap_ci`, blocks at least the
label horizon).

The arms (:data:`ARMS`):

* ``no_memory``: the same network, ``use_memory=False``;
* ``full``: the model as configured (kNN attention and kNN blend);
* ``attention_only``: kNN attention, no blend head (``knn_blend=False``);
* ``blend_only``: retrieval feeds only the blend head (``memory_attention=False``);
* ``knn_analog``: plain retrieval, no network: the similarity-weighted mean outcome of the nearest past
  windows (:func:`course_lib.knn_direction`);
* ``raft_linear``: retrieval-augmented linear forecasting in the manner of RAFT (Han et al., ICML 2025):
  retrieve the most correlated *resolved* past windows, take what followed them, weight them by a softmax of
  the correlation, and fit a linear (ridge) head on the window's own recent path plus the retrieved outcomes
  (:func:`raft_forecast`);
* ``ridge``: a ridge regression on the window's flattened features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..data.windows import WindowSet
from ..metrics import direction_accuracy, information_coefficient
from ..model import MemoryTransformerConfig
from ..stats import block_bootstrap_subset_ci, paired_seed_interval, t_interval
from .config import TrainerConfig
from .trainer import MemoryTransformerTrainer

__all__ = ["ARMS", "ArmComparison", "RaftForecast", "compare_arms", "gate_by_subset", "ladder_table", "raft_forecast"]

#: Every arm :func:`compare_arms` knows, in the order of the ladder.
ARMS = ("no_memory", "full", "attention_only", "blend_only", "knn_analog", "raft_linear", "ridge")
#: Arms that train the transformer (they have a ``gate`` column and depend on the seed).
TRANSFORMER_ARMS = ("no_memory", "full", "attention_only", "blend_only")
_RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass
class ArmComparison:
    """What :func:`compare_arms` measured.

    ``per_seed``: one row per (arm, seed, subset) with ``accuracy``, ``ic`` (rank IC of the return forecast)
    and ``n`` (scored windows). ``summary``: indexed by (arm, subset): ``accuracy`` (mean over seeds),
    ``ic``, ``n``, ``diff`` (paired difference to the reference arm, mean over seeds), ``seed_ci_low`` /
    ``seed_ci_high`` (t-interval over seeds) and ``boot_ci_low`` / ``boot_ci_high`` (block bootstrap over
    the test windows of the per-window difference of hit rates averaged over seeds). The reference arm's own
    rows have ``diff = 0`` and no interval. ``predictions[arm][seed]``: the prediction frames (transformer arms
    carry the ``gate`` column). ``reference``, ``seeds``, ``block``, ``subsets``, the test labels ``y`` and
    ``n_boot`` as used.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    predictions: dict[str, dict[int, pd.DataFrame]]
    reference: str
    seeds: tuple[int, ...]
    block: int
    subsets: dict[str, np.ndarray]
    y: np.ndarray | None = None
    n_boot: int = 2000

    def paired(self, arm: str, other: str, subset: str = "all") -> dict[str, float]:
        """``arm`` minus ``other`` on ``subset``: both intervals (any two arms, not only the reference)."""
        return _paired(self, arm, other, subset)


# ------------------------------------------------------------------------------------------- cheap arms
@dataclass
class RaftForecast:
    """:func:`raft_forecast`'s result: ``pred`` (test return forecast), ``rows`` (n, k) memory rows each test
    window retrieved (-1: empty), ``memory_available_at`` (int64 ns, per memory row), ``alpha`` (ridge
    penalty picked on the validation windows)."""

    pred: np.ndarray
    rows: np.ndarray
    memory_available_at: np.ndarray
    alpha: float


def _pearson_keys(windows: WindowSet, lookback: int, columns: Sequence[int]) -> np.ndarray:
    """The last ``lookback`` bars of ``columns``, centred per window: cosine of these is Pearson correlation."""
    cols = list(columns) or list(range(windows.n_features))
    x = np.asarray(windows.X[:, -lookback:, cols], dtype=np.float64).reshape(len(windows), -1)
    x = x - x.mean(axis=1, keepdims=True)
    # a flat path has no correlation with anything: a tiny constant keeps its key finite (similarity ~0)
    return np.where(np.abs(x).sum(axis=1, keepdims=True) > 0, x, 1e-6).astype(np.float32)


def _raft_features(memory: WindowSet, queries: WindowSet, k: int, lookback: int, columns: Sequence[int],
                   temperature: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per query: [softmax-weighted mean outcome, the k outcomes by rank, has-any, own recent path]."""
    from ..analog_index import AnalogIndex

    keys = _pearson_keys(memory, lookback, columns)
    index = AnalogIndex(keys.shape[1], "cosine")
    index.add(keys, memory.end_time_ns(), memory.available_at_ns(), memory.end_pos, np.asarray(memory.y, float))
    hits = index.search(_pearson_keys(queries, lookback, columns), k=k, as_of=queries.end_time_ns())
    rows = np.where(hits.mask, hits.indices, -1)
    y = np.asarray(memory.y, float) / scale
    out = np.where(rows >= 0, y[np.maximum(rows, 0)], 0.0)
    logit = np.where(hits.mask, hits.similarity / temperature, -np.inf)
    peak = np.max(logit, axis=1, keepdims=True)
    w = np.exp(logit - np.where(np.isfinite(peak), peak, 0.0))
    w = np.where(hits.mask, w, 0.0)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    cols = list(columns) or list(range(queries.n_features))
    own = np.asarray(queries.X[:, -lookback:, cols], dtype=np.float64).reshape(len(queries), -1)
    feats = np.column_stack([(w * out).sum(axis=1), out, hits.mask.any(axis=1).astype(float), own])
    return feats, rows


def _ridge_fit_predict(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray,
                       Xte: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge on standardised features (scaler fitted on the training rows), penalty picked on validation MSE."""
    from sklearn.linear_model import Ridge

    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z = [(a - mu) / sd for a in (Xtr, Xva, Xte)]
    best, best_alpha = np.inf, _RIDGE_ALPHAS[0]
    if len(Xva):
        for alpha in _RIDGE_ALPHAS:
            err = float(np.mean((Ridge(alpha=alpha).fit(z[0], ytr).predict(z[1]) - yva) ** 2))
            if err < best:
                best, best_alpha = err, alpha
    model = Ridge(alpha=best_alpha).fit(z[0], ytr)
    return model.predict(z[2]), float(best_alpha)


def raft_forecast(train: WindowSet, val: WindowSet, test: WindowSet, k: int = 32, lookback: int = 16,
                  columns: Sequence[int] = (0,), temperature: float = 0.1, online: bool = False) -> RaftForecast:
    """RAFT-style retrieval-augmented linear forecast, causal in training, validation and test alike.

    Every window (training ones too) retrieves the ``k`` past windows of ``train`` whose recent path (last
    ``lookback`` bars of ``columns``) correlates most with its own and whose label was known at its end
    time; their outcomes, ranked and softmax-weighted by correlation / ``temperature``, plus the window's own
    recent path feed a ridge head fitted on the training windows (penalty picked on ``val``). ``online``: test
    windows may also retrieve earlier test windows once their labels resolved (like
    ``TrainerConfig(predict_memory="online")``).
    """
    from ..knn_memory import _concat

    lb = min(lookback, train.seq_len)
    scale = float(np.std(train.y)) or 1.0
    ytr = np.asarray(train.y, float) / scale
    f_tr, _ = _raft_features(train, train, k, lb, columns, temperature, scale)
    f_va, _ = (_raft_features(train, val, k, lb, columns, temperature, scale) if len(val)
               else (np.zeros((0, f_tr.shape[1])), None))
    memory = _concat(train, test) if online else train
    f_te, rows = _raft_features(memory, test, k, lb, columns, temperature, scale)
    pred, alpha = _ridge_fit_predict(f_tr, ytr, f_va, np.asarray(val.y, float) / scale, f_te)
    return RaftForecast(pred * scale, rows, memory.available_at_ns(), alpha)


def _frame(test: WindowSet, pred: np.ndarray, signal: np.ndarray | None = None) -> pd.DataFrame:
    return pd.DataFrame({"pred_return": pred, "direction_signal": pred if signal is None else signal,
                         "y": np.asarray(test.y, float)}, index=pd.DatetimeIndex(test.end_time, name="time"))


def _cheap_arm(arm: str, train: WindowSet, val: WindowSet, test: WindowSet, mcfg: MemoryTransformerConfig,
               online: bool) -> pd.DataFrame:
    """One of the arms without a network (deterministic: every seed gets the same forecast)."""
    lookback = max(1, min(mcfg.recent_bars or 16, train.seq_len))
    if arm == "knn_analog":
        from ..knn_memory import knn_direction

        hit = knn_direction(train, test, k=mcfg.n_neighbors, lookback=lookback, online=online)
        return _frame(test, hit.signal)
    if arm == "raft_linear":
        r = raft_forecast(train, val, test, k=mcfg.n_neighbors, lookback=lookback,
                          columns=mcfg.key_features, temperature=mcfg.temperature, online=online)
        return _frame(test, r.pred)
    if arm == "ridge":
        flat = [np.asarray(w.X, np.float64).reshape(len(w), -1) for w in (train, val, test)]
        pred, _ = _ridge_fit_predict(flat[0], np.asarray(train.y, float), flat[1], np.asarray(val.y, float), flat[2])
        return _frame(test, pred)
    raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}.")


def arm_config(arm: str, model_config: MemoryTransformerConfig) -> MemoryTransformerConfig:
    """The model configuration of a transformer arm (the ladder's only difference between them)."""
    changes = {"no_memory": {"use_memory": False}, "full": {},
               "attention_only": {"knn_blend": False, "memory_attention": True},
               "blend_only": {"knn_blend": True, "memory_attention": False}}
    if arm not in changes:
        raise ValueError(f"{arm!r} is not a transformer arm; those are {TRANSFORMER_ARMS}.")
    base = replace(model_config, use_memory=True) if arm != "no_memory" else model_config
    return replace(base, **changes[arm])


# ------------------------------------------------------------------------------------------- the ladder
def _train_and_predict(train: WindowSet, val: WindowSet, test: WindowSet, model_config: MemoryTransformerConfig,
                       trainer_config: TrainerConfig, threads: int) -> pd.DataFrame:
    """One arm of one seed: train, then predict the test windows (a task an executor can run anywhere)."""
    import torch

    old = torch.get_num_threads()
    if threads and threads != old:
        torch.set_num_threads(threads)
    try:
        trainer = MemoryTransformerTrainer(model_config, trainer_config)
        trainer.fit(train, val)
        return trainer.predict(test)
    finally:
        if threads and threads != old:
            torch.set_num_threads(old)


def compare_arms(
    train: WindowSet,
    val: WindowSet,
    test: WindowSet,
    model_config: MemoryTransformerConfig,
    trainer_config: TrainerConfig | None = None,
    arms: Sequence[str] = ARMS,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    subsets: Mapping[str, np.ndarray] | None = None,
    reference: str = "no_memory",
    n_boot: int = 2000,
    block: int = 20,
    progress: bool = True,
    executor: Any = None,
) -> ArmComparison:
    """Train/fit every arm in ``arms`` for each seed on the same split; score all on the same test windows.

    ``subsets`` maps a name to a boolean mask over ``test`` (e.g. :func:`course_lib.motif_subsets`); every
    arm is also scored there. ``reference``: the arm every difference is taken against (it must be in
    ``arms``). ``block``: bootstrap block length in windows (raised to the label horizon if shorter).
    ``executor``: ``None`` trains the transformer arms one after the other; any
    ``concurrent.futures.Executor`` (``course_lib.parallel.process_pool``) trains them side by side with the
    same numbers. The arms without a network are deterministic, so every seed gets the same forecast (their
    seed interval measures the reference's seed spread only).
    """
    import torch

    from ..parallel import run_tasks

    arms = tuple(dict.fromkeys(arms))
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {ARMS}.")
    if reference not in arms:
        raise ValueError(f"reference={reference!r} must be one of the arms {arms}.")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed (5 or more for a t-interval that means something).")
    subsets = {name: np.asarray(mask, bool) for name, mask in (subsets or {}).items()}
    for name, mask in subsets.items():
        if mask.shape != (len(test),):
            raise ValueError(f"subset {name!r} has {mask.shape} entries; it must be one boolean per test window "
                             f"({len(test)}).")
    tcfg = trainer_config or TrainerConfig()
    threads = torch.get_num_threads()
    nets = [a for a in arms if a in TRANSFORMER_ARMS]
    tasks = [(train, val, test, arm_config(a, model_config), replace(tcfg, seed=s), threads)
             for s in seeds for a in nets]
    flat = run_tasks(_train_and_predict, tasks, executor=executor, progress=progress, desc="seeds x arms")
    preds: dict[str, dict[int, pd.DataFrame]] = {a: {} for a in arms}
    for (s, a), p in zip([(s, a) for s in seeds for a in nets], flat):
        preds[a][s] = p
    online = tcfg.predict_memory == "online"
    for a in arms:
        if a not in TRANSFORMER_ARMS:
            frame = _cheap_arm(a, train, val, test, model_config, online)
            preds[a] = {s: frame for s in seeds}
    return _score(preds, test, arms, seeds, subsets, reference, n_boot, max(int(block), int(test.horizon)))


def _score(preds: dict[str, dict[int, pd.DataFrame]], test: WindowSet, arms: tuple[str, ...],
           seeds: tuple[int, ...], subsets: dict[str, np.ndarray], reference: str, n_boot: int,
           block: int) -> ArmComparison:
    y = np.asarray(test.y, float)
    masks = {"all": np.ones(len(y), bool), **subsets}
    rows = []
    for a in arms:
        for s in seeds:
            p = preds[a][s]
            sig, ret = p["direction_signal"].to_numpy(float), p["pred_return"].to_numpy(float)
            for name, m in masks.items():
                rows.append({"arm": a, "seed": s, "subset": name, "accuracy": direction_accuracy(sig[m], y[m]),
                             "ic": information_coefficient(ret[m], y[m]),
                             "n": int(((y[m] != 0) & np.isfinite(y[m])).sum())})
    per_seed = pd.DataFrame(rows)
    cmp = ArmComparison(per_seed, pd.DataFrame(), preds, reference, seeds, block, subsets, y, n_boot)
    out = []
    for a in arms:
        for name in masks:
            g = per_seed[(per_seed.arm == a) & (per_seed.subset == name)]
            row = {"arm": a, "subset": name, "accuracy": g["accuracy"].mean(), "ic": g["ic"].mean(),
                   "n": int(g["n"].iloc[0])}
            if a == reference:
                row.update(diff=0.0, seed_ci_low=np.nan, seed_ci_high=np.nan, boot_ci_low=np.nan,
                           boot_ci_high=np.nan)
            else:
                d = _paired(cmp, a, reference, name)
                row.update({k: d[k] for k in ("diff", "seed_ci_low", "seed_ci_high", "boot_ci_low", "boot_ci_high")})
            out.append(row)
    cmp.summary = pd.DataFrame(out).set_index(["arm", "subset"])
    return cmp


def _hits(cmp: ArmComparison, arm: str) -> np.ndarray:
    """(seeds, windows) 1.0 where the arm's direction matched the label's sign (NaN: unscored window)."""
    y = np.asarray(cmp.y, float)
    out = []
    for s in cmp.seeds:
        p = cmp.predictions[arm][s]
        hit = (np.sign(p["direction_signal"].to_numpy(float)) == np.sign(y)).astype(float)
        out.append(np.where((y != 0) & np.isfinite(y), hit, np.nan))
    return np.asarray(out)


def _seed_mean(h: np.ndarray) -> np.ndarray:
    """Mean over seeds per window; NaN for a window no seed scored (a zero label), without a warning."""
    n = np.isfinite(h).sum(axis=0)
    return np.where(n > 0, np.nansum(h, axis=0) / np.maximum(n, 1), np.nan)


def _paired(cmp: ArmComparison, arm: str, other: str, subset: str = "all") -> dict[str, float]:
    """Paired ``arm - other`` on ``subset``: seed t-interval of the accuracy difference and a block bootstrap
    over the test windows (kept in time order, so blocks are runs of neighbouring windows) of the per-window
    hit-rate difference averaged over seeds."""
    ps = cmp.per_seed
    a = ps[(ps.arm == arm) & (ps.subset == subset)].sort_values("seed")["accuracy"].to_numpy()
    b = ps[(ps.arm == other) & (ps.subset == subset)].sort_values("seed")["accuracy"].to_numpy()
    seed_ci = paired_seed_interval(a, b)
    d = _seed_mean(_hits(cmp, arm)) - _seed_mean(_hits(cmp, other))
    mask = np.ones(len(d), bool) if subset == "all" else cmp.subsets[subset]
    # blocks of consecutive *test windows* (not of consecutive subset members): a subset's windows cluster in
    # time (three onsets per motif), and resampling the whole period keeps each cluster together
    lo, hi = block_bootstrap_subset_ci(d, mask, cmp.block, n_boot=cmp.n_boot)
    return {"diff": seed_ci["diff"], "seed_ci_low": seed_ci["ci_low"], "seed_ci_high": seed_ci["ci_high"],
            "boot_ci_low": lo, "boot_ci_high": hi, "window_diff": float(np.nanmean(d[mask]))}


def gate_by_subset(cmp: ArmComparison, arm: str = "full", groups: Mapping[str, np.ndarray] | None = None,
                   contrast: tuple[str, str] | None = None, n_boot: int = 2000, column: str = "gate") -> pd.DataFrame:
    """The gate of a transformer arm per window group, and how it differs between two groups.

    ``column``: which of the arm's mixing weights to read: ``"gate"`` (the share of memory in the memory
    layer's fused output) or ``"blend"`` (the kNN-blend weight: the share of the neighbours' outcomes in the
    forecast).

    ``groups`` maps a name to a boolean mask over the test windows (default: the comparison's subsets). One row
    per group: ``mean`` (over windows and seeds), ``std`` (spread across windows, mean over seeds). With
    ``contrast=(a, b)`` a last row ``a - b`` holds the difference of the group means with a t-interval over
    seeds and a block bootstrap over windows (both groups resampled together, blocks as the comparison's).
    """
    groups = dict(groups if groups is not None else cmp.subsets)
    if column not in ("gate", "blend"):
        raise ValueError(f"column={column!r}: choose 'gate' (memory layer) or 'blend' (kNN-blend weight).")
    frames = [cmp.predictions[arm][s] for s in cmp.seeds]
    g = np.asarray([f[column].to_numpy(float) if column in f else np.full(len(f), np.nan) for f in frames])
    if not np.isfinite(g).any():  # seeds x windows
        has = "'full' or 'attention_only'" if column == "gate" else "'full' or 'blend_only'"
        raise ValueError(f"arm {arm!r} has no {column!r} column (that part of the memory path is off): pick {has}.")
    rows = [{"group": "all", "mean": float(np.nanmean(g)), "std": float(np.nanmean(np.nanstd(g, axis=1))),
             "n": g.shape[1]}]
    for name, m in groups.items():
        rows.append({"group": name, "mean": float(np.nanmean(g[:, m])),
                     "std": float(np.nanmean(np.nanstd(g[:, m], axis=1))), "n": int(m.sum())})
    if contrast is not None:
        a, b = (groups[c] for c in contrast)
        per_seed = [np.nanmean(gs[a]) - np.nanmean(gs[b]) for gs in g]
        ci = t_interval(per_seed)
        gm = np.nanmean(g, axis=0)
        lo, hi = block_bootstrap_subset_ci(gm, a, cmp.block, n_boot=n_boot, other=b)
        rows.append({"group": f"{contrast[0]} - {contrast[1]}", "mean": ci["diff"], "std": np.nan, "n": int(a.sum()),
                     "seed_ci_low": ci["ci_low"], "seed_ci_high": ci["ci_high"], "boot_ci_low": lo, "boot_ci_high": hi})
    return pd.DataFrame(rows).set_index("group")


def ladder_table(cmp: ArmComparison, subsets: Sequence[str] | None = None) -> pd.DataFrame:
    """One compact table of the ladder: per arm and subset the accuracy (%) and the paired difference to the
    reference in points with its interval over seeds and its block bootstrap over test windows."""
    subsets = list(subsets or ["all", *cmp.subsets])
    arms = list(dict.fromkeys(cmp.summary.index.get_level_values(0)))
    out = {}
    for sub in subsets:
        col_acc, col_d = [], []
        for a in arms:
            r = cmp.summary.loc[(a, sub)]
            col_acc.append(f"{100 * r['accuracy']:.1f}")
            col_d.append("reference" if a == cmp.reference else
                         f"{100 * r['diff']:+.1f} [{100 * r['seed_ci_low']:+.1f}, {100 * r['seed_ci_high']:+.1f}] "
                         f"[{100 * r['boot_ci_low']:+.1f}, {100 * r['boot_ci_high']:+.1f}]")
        n = int(cmp.summary.loc[(arms[0], sub), "n"])
        out[(f"{sub} ({n})", "accuracy %")] = col_acc
        out[(f"{sub} ({n})", f"vs {cmp.reference}: diff [seeds] [windows]")] = col_d
    return pd.DataFrame(out, index=pd.Index(arms, name="arm"))
