"""Best practices, measured (lesson 09): the usual advice about a memory-augmented model, turned into numbers.

Two kinds of study live here.

* **Hyperparameters of the trained transformer** (:func:`sensitivity_study`): one setting changed at a time
  around the defaults, the same seeds for every value, and the paired difference against the default of the
  same seed, with a t-interval over seeds and a moving-block bootstrap over test windows. "Memory size" is
  the number of most recent training windows the trained model's memory holds when it predicts.
* **Pitfalls of the memory mechanism** (:func:`staleness_study`, :func:`cold_start_study`,
  :func:`pruning_study`, :func:`shift_study`): studied with a plain kNN analog memory (no network, see
  :func:`knn_direction`), because the question is about what is stored and retrieved, not about the network,
  and a kNN memory is cheap enough to replicate over several independent synthetic markets. Their intervals
  are t-intervals over market seeds (independent replications). :func:`no_structure_study` uses the
  transformer again: does memory help, and what does it cost, on a market with nothing to remember?

Every search passes ``as_of`` (each query's own end time), so an entry is a candidate only once its label is
known; decay weights use the age of entries *at the query's time*; pruning counts retrievals made by
training and validation queries only. Tests change the future and check that none of these moves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from .data.features import compute_features, forward_log_return
from .data.synthetic import SyntheticConfig, append_market, make_synthetic_market
from .data.windows import FeatureScaler, make_windows, prepare_dataset
from .knn_memory import _concat, count_retrievals, knn_direction
from .metrics import block_bootstrap_mean_ci, direction_accuracy, information_coefficient
from .model import MemoryTransformerConfig
from .similarity import novel_motif_market
from .stats import paired_seed_interval
from .training import MemoryTransformerTrainer, TrainerConfig, motif_subsets

__all__ = [
    "SensitivityStudy",
    "cold_start_study",
    "flipping_market",
    "joined_market",
    "market_windows",
    "no_structure_study",
    "pruning_study",
    "sensitivity_study",
    "shift_study",
    "staleness_study",
    "study_config",
]


# ----------------------------------------------------------------------------------------------- helpers
def study_config(**changes: Any) -> Any:
    """The synthetic market of this lesson: strong, frequent planted motifs (lesson 04's market)."""
    base = dict(aftermath_strength=0.8, motif_coverage=0.5)
    base.update(changes)
    return SyntheticConfig(**base)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Small models train faster on one thread: two threads on a busy 2-core machine wait on each other."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _bar(iterable: Any, total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not progress, leave=False)


def market_windows(ohlcv: pd.DataFrame, seq_len: int, fit_until: Any, horizon: int = 1) -> Any:
    """All labelled windows of ``ohlcv``, scaled by a scaler fitted on the bars up to ``fit_until`` only."""
    features = compute_features(ohlcv)
    target = forward_log_return(ohlcv["close"], horizon).reindex(features.index)
    scaler = FeatureScaler().fit(features.loc[: pd.Timestamp(fit_until)])
    return make_windows(scaler.transform(features), target, seq_len, horizon)


def _bar_pos(windows: Any, ohlcv: pd.DataFrame) -> np.ndarray:
    """Each window's end bar as a position in ``ohlcv`` (``end_pos`` counts rows of the feature frame, which
    starts after the features' warm-up, so it is not a bar position of the prices)."""
    return ohlcv.index.get_indexer(windows.end_time)


def _rebuild(market: Any, ret: np.ndarray, motifs: pd.DataFrame) -> Any:
    """``market`` with its log returns replaced by ``ret`` (OHLC scaled bar by bar, so bars stay valid)."""
    old = market.ohlcv
    logc = np.log(old["close"].to_numpy())
    new_logc = logc[0] + np.cumsum(np.r_[0.0, ret[1:]])
    ratio = np.exp(new_logc - logc)
    ohlcv = old.copy()
    for col in ("open", "high", "low", "close"):
        ohlcv[col] = old[col].to_numpy() * ratio
    ohlcv.attrs = dict(old.attrs)
    return replace(market, ohlcv=ohlcv, motifs=motifs)


def flipping_market(n_bars: int = 3000, seed: int = 0, flip_at: float = 0.5, config: Any = None) -> Any:
    """A synthetic market whose planted aftermaths change sign at bar ``flip_at * n_bars``.

    Before the flip every motif is followed by its library direction; from the flip on (motifs ending at or
    after that bar) by the opposite one. The shapes stay the same: only what follows them changes, which
    is what makes old memories stale. ``motifs["direction"]`` and ``aftermath_return`` describe the new truth.
    """
    cfg = config or study_config()
    market = make_synthetic_market(n_bars, seed, cfg)
    flip = int(flip_at * n_bars)
    ret = np.diff(np.log(market.ohlcv["close"].to_numpy()), prepend=np.nan)
    vol = np.asarray(cfg.vol, dtype=float)[market.regime_codes]
    motifs = market.motifs.copy()
    for i, row in motifs.iterrows():
        if row["end_pos"] < flip:
            continue
        a0, a1 = int(row["end_pos"]) + 1, min(int(row["end_pos"]) + 1 + cfg.aftermath_bars, n_bars)
        ret[a0:a1] -= 2 * row["direction"] * cfg.aftermath_strength * vol[int(row["start_pos"])]
        motifs.loc[i, "direction"] = -row["direction"]
    flipped = _rebuild(market, ret, motifs)
    logp = np.log(flipped.ohlcv["close"].to_numpy())
    end = motifs["end_pos"].to_numpy()
    aft = np.minimum(end + cfg.aftermath_bars, n_bars - 1)
    flipped.motifs["aftermath_return"] = logp[aft] - logp[end]
    flipped.ohlcv.attrs["source"] = f"synthetic:flip={flip}:seed={seed}"
    return flipped


def joined_market(before: Any, after: Any, n_before: int, n_after: int, seed: int = 0) -> Any:
    """Two synthetic markets back to back: ``n_before`` bars made with config ``before``, then ``n_after``
    with ``after`` (both must plant the same motif types); prices continue from the last close."""
    if tuple(before.motifs) != tuple(after.motifs):
        raise ValueError("joined_market: both configs must plant the same motifs (novel_motif_market "
                         "covers new motifs).")
    a = make_synthetic_market(n_before, seed, before)
    b = make_synthetic_market(n_after + 1, seed + 10_000, replace(after, start=str(a.ohlcv.index[-1].date())))
    return append_market(a, b, source=f"synthetic:joined:seed={seed}", drop_motifs_at_join=True)


def _acc_rows(signal: np.ndarray, windows: Any, subsets: Mapping[str, np.ndarray], **keys: Any) -> list[dict]:
    y = np.asarray(windows.y, float)
    out = [{**keys, "subset": "all", "acc": direction_accuracy(signal, y), "n_scored": int((y != 0).sum())}]
    for name, mask in subsets.items():
        out.append({**keys, "subset": name, "acc": direction_accuracy(signal[mask], y[mask]),
                    "n_scored": int((y[mask] != 0).sum())})
    return out


def _summarise(per_seed: pd.DataFrame, by: Sequence[str], reference: Mapping[str, Any],
               value: str = "acc", extra: Sequence[str] = ()) -> pd.DataFrame:
    """Per group of ``by``: mean ``value`` and its paired difference to the ``reference`` group (same seed)."""
    rows = []
    ref_mask = np.logical_and.reduce([per_seed[c] == v for c, v in reference.items()])
    for key, g in per_seed.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ref = per_seed[ref_mask & (per_seed["subset"] == g["subset"].iloc[0])] if "subset" in by else per_seed[ref_mask]
        merged = g.merge(ref[["seed", value]], on="seed", suffixes=("", "_ref"))
        ci = paired_seed_interval(merged[value], merged[f"{value}_ref"])
        row = dict(zip(by, key))
        row.update({value: g[value].mean(), "n_scored": g["n_scored"].mean() if "n_scored" in g else np.nan,
                    **{c: g[c].mean() for c in extra}, **ci})
        rows.append(row)
    return pd.DataFrame(rows)


def _seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)


# ------------------------------------------------------------------------------------ pitfall: staleness
def staleness_study(n_bars: int = 3000, seeds: int | Sequence[int] = 5, half_lives: Sequence[float] = (100, 300),
                    flip_at: float = 0.5, seq_len: int = 24, k: int = 16, temperature: float = 0.05,
                    lookback: int = 12, control: bool = True, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Stale memories: after the world changes, do old entries drown the new ones, and does decay help?

    Measures direction accuracy on the windows after a flip of the motifs' aftermath (:func:`flipping_market`)
    of an online kNN memory that started with the windows before the flip, with no decay and with each
    ``half_life`` (bars; recency-weighted retrieval, :func:`recency_weights`). With ``control`` the same on a
    market without a flip: decay throws information away, so it should cost something where nothing changed.
    Returns ``per_seed`` and ``summary`` (difference of each half-life to no decay, t-interval over seeds).
    """
    rows = []
    arms: list[float | None] = [None, *half_lives]
    markets = ["flip", "no flip"] if control else ["flip"]
    seeds_ = _seeds(seeds)
    for seed in _bar(seeds_, len(seeds_), "markets", progress):
        for kind in markets:
            m = flipping_market(n_bars, seed, flip_at) if kind == "flip" else make_synthetic_market(
                n_bars, seed, study_config())
            flip = int(flip_at * n_bars)
            ws = market_windows(m.ohlcv, seq_len, m.ohlcv.index[flip - 1])
            pos = _bar_pos(ws, m.ohlcv)
            before = ws.subset(np.flatnonzero(pos < flip - 1))
            after = ws.subset(np.flatnonzero(pos >= flip + seq_len))
            subsets = {"onset": motif_subsets(m, after)["onset"]}
            for hl in arms:
                sig = knn_direction(before, after, k, temperature, hl, lookback, online=True).signal
                arm = "no decay" if hl is None else f"half-life {hl:g}"
                rows += _acc_rows(sig, after, subsets, market=kind, arm=arm, half_life=hl, seed=seed)
    per_seed = pd.DataFrame(rows)
    summary = pd.concat([_summarise(per_seed[per_seed.market == kind], ["market", "arm", "subset"],
                                    {"arm": "no decay"}) for kind in markets], ignore_index=True)
    return {"per_seed": per_seed, "summary": summary}


# ----------------------------------------------------------------------------------- pitfall: cold start
def _three_way(m: Any, seq_len: int, train_frac: float = 0.6, val_frac: float = 0.1) -> tuple[Any, Any, Any]:
    """Chronological train / validation / test windows with a purge gap of ``seq_len`` bars between them."""
    n = len(m.ohlcv)
    t_end, v_end = int(train_frac * n), int((train_frac + val_frac) * n)
    ws = market_windows(m.ohlcv, seq_len, m.ohlcv.index[t_end - 1])
    p = _bar_pos(ws, m.ohlcv)
    return (ws.subset(np.flatnonzero(p < t_end - 1)),
            ws.subset(np.flatnonzero((p >= t_end + seq_len) & (p < v_end - 1))),
            ws.subset(np.flatnonzero(p >= v_end + seq_len)))


def cold_start_study(n_bars: int = 3000, seeds: int | Sequence[int] = 5,
                     start_sizes: Sequence[int | None] = (0, 50, 200, 800, None), seq_len: int = 24, k: int = 16,
                     temperature: float = 0.05, lookback: int = 12, early: int = 150,
                     progress: bool = True) -> dict[str, pd.DataFrame]:
    """Cold start and warming: how good is a memory that holds only N windows when predictions start?

    The memory starts with the N most recent training windows (``None``: all of them; 0: empty) and is either
    **frozen** (never grows) or **online** (each test window joins once its label is known). Measures test
    direction accuracy overall, on motif onsets and on the ``early`` first test windows (where a cold memory
    has had no time to warm); a query with no eligible neighbour falls back to "up".
    The summary compares each size with the full memory of the same mode (t-interval over market seeds).
    """
    rows = []
    seeds_ = _seeds(seeds)
    for seed in _bar(seeds_, len(seeds_), "markets", progress):
        m = make_synthetic_market(n_bars, seed, study_config())
        train, _, test = _three_way(m, seq_len)
        subsets = {"onset": motif_subsets(m, test)["onset"], "early": np.arange(len(test)) < early}
        for size in start_sizes:
            n0 = len(train) if size is None else min(int(size), len(train))
            start = train.subset(np.arange(len(train) - n0, len(train)))
            for mode in ("frozen", "online"):
                sig = knn_direction(start, test, k, temperature, None, lookback, online=mode == "online").signal
                rows += _acc_rows(sig, test, subsets, mode=mode, start_size=n0 if size is not None else -1,
                                  start_label="all" if size is None else str(n0), seed=seed)
    per_seed = pd.DataFrame(rows)
    summary = pd.concat([_summarise(per_seed[per_seed["mode"] == mode], ["mode", "start_label", "subset"],
                                    {"start_label": "all"}) for mode in ("frozen", "online")], ignore_index=True)
    return {"per_seed": per_seed, "summary": summary}


# -------------------------------------------------------------------------------------- pitfall: pruning
def pruning_study(n_bars: int = 3000, seeds: int | Sequence[int] = 5, min_counts: Sequence[int] = (1, 10, 30),
                  seq_len: int = 24,
                  k: int = 16, temperature: float = 0.05, lookback: int = 12,
                  progress: bool = True) -> dict[str, pd.DataFrame]:
    """Pruning entries that are never retrieved: a smaller memory for free, or lost information?

    Retrievals are counted with the training and validation windows as queries (:func:`count_retrievals`,
    causal); for each threshold in ``min_counts`` the entries retrieved fewer times are dropped (1: only the
    never-retrieved ones), and the frozen memory is scored on the test windows: accuracy and memory size,
    against the full memory and against dropping the same number of entries at random (does the choice
    matter, or only the size?). Note: the most recent
    training windows had the fewest chances to be retrieved, so "never retrieved" is partly "too young".
    """
    rows = []
    seeds_ = _seeds(seeds)
    for seed in _bar(seeds_, len(seeds_), "markets", progress):
        m = make_synthetic_market(n_bars, seed, study_config())
        train, val, test = _three_way(m, seq_len)
        subsets = {"onset": motif_subsets(m, test)["onset"]}
        counts = count_retrievals(train, _concat(train, val), k, lookback)
        rng = np.random.default_rng(seed)
        arms: list[tuple[str, int, np.ndarray]] = [("full", 0, np.ones(len(train), bool))]
        for c in min_counts:
            keep = counts >= c
            random_keep = np.zeros(len(train), bool)
            random_keep[rng.choice(len(train), int(keep.sum()), replace=False)] = True
            arms += [(f"pruned <{c}", c, keep), (f"random, same size as <{c}", c, random_keep)]
        for arm, c, mask in arms:
            res = knn_direction(train.subset(np.flatnonzero(mask)), test, k, temperature, None, lookback)
            rows += _acc_rows(res.signal, test, subsets, arm=arm, min_count=c,
                              rule="full" if c == 0 else arm.split(" ")[0].rstrip(","),
                              memory_share=res.memory_size / len(train), memory_size=res.memory_size, seed=seed)
    per_seed = pd.DataFrame(rows)
    summary = _summarise(per_seed, ["arm", "min_count", "rule", "subset"], {"arm": "full"},
                         extra=["memory_size", "memory_share"])
    return {"per_seed": per_seed, "summary": summary}


# ----------------------------------------------------------------------------- pitfall: distribution shift
def shift_study(n_before: int = 2000, n_after: int = 1200, seeds: int | Sequence[int] = 5, seq_len: int = 24,
                k: int = 16, temperature: float = 0.05, lookback: int = 12,
                progress: bool = True) -> dict[str, pd.DataFrame]:
    """Distribution shift: a memory built in one market, queried in another.

    The memory holds the windows before bar ``n_before`` (scaler fitted there too); the test is every window
    after it. Scenarios: ``same`` (the market continues unchanged), ``volatile`` (afterwards every regime is
    three times as volatile and falls), ``new motifs`` (afterwards only shapes the memory never saw,
    :func:`course_lib.novel_motif_market`). Modes: frozen memory, and online (test windows join when their
    labels are known). The summary compares each scenario with ``same`` (same seed, same mode).
    """
    rows = []
    seeds_ = _seeds(seeds)
    base = study_config()
    volatile = replace(base, vol=tuple(3 * v for v in base.vol), drift=tuple(d - 0.001 for d in base.drift))
    for seed in _bar(seeds_, len(seeds_), "markets", progress):
        markets = {
            "same": make_synthetic_market(n_before + n_after, seed, base),
            "volatile": joined_market(base, volatile, n_before, n_after, seed),
            "new motifs": novel_motif_market(n_before, n_after, seed, config=base),
        }
        for name, m in markets.items():
            ws = market_windows(m.ohlcv, seq_len, m.ohlcv.index[n_before - 1])
            pos = _bar_pos(ws, m.ohlcv)
            mem = ws.subset(np.flatnonzero(pos < n_before - 1))
            test = ws.subset(np.flatnonzero(pos >= n_before + seq_len))
            subsets = {"onset": motif_subsets(m, test)["onset"]}
            for mode in ("frozen", "online"):
                sig = knn_direction(mem, test, k, temperature, None, lookback, online=mode == "online").signal
                rows += _acc_rows(sig, test, subsets, scenario=name, mode=mode, seed=seed)
    per_seed = pd.DataFrame(rows)
    summary = pd.concat([_summarise(per_seed[per_seed["mode"] == mode], ["mode", "scenario", "subset"],
                                    {"scenario": "same"}) for mode in ("frozen", "online")], ignore_index=True)
    return {"per_seed": per_seed, "summary": summary}


# ------------------------------------------------------------------------------- hyperparameter sensitivity
@dataclass
class SensitivityStudy:
    """Result of :func:`sensitivity_study`.

    ``per_seed``: one row per (param, value, seed, subset) with ``acc`` (and ``ic`` for subset ``all``).
    ``summary``: per (param, value, subset): mean accuracy, the paired difference to the default of the same
    seeds (``diff``) with a t-interval over seeds (``ci_low``/``ci_high``) and a moving-block bootstrap over
    test windows (``boot_low``/``boot_high``), ``is_default``. ``defaults``: param -> default value.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    defaults: dict[str, Any]


MEMORY_SIZE = "memory_size"


def _default_of(param: str, model_config: Any) -> Any:
    return 1.0 if param == MEMORY_SIZE else getattr(model_config, param)


def sensitivity_study(train: Any, val: Any, test: Any, model_config: Any, trainer_config: Any = None,
                      grid: Mapping[str, Sequence[Any]] | None = None, seeds: int | Sequence[int] = 3,
                      subsets: Mapping[str, np.ndarray] | None = None, n_boot: int = 1000, block: int = 20,
                      threads: int | None = 1, progress: bool = True) -> SensitivityStudy:
    """One-at-a-time sensitivity of the memory transformer around ``model_config``, with intervals.

    ``grid`` maps a setting to the values to try: any :class:`course_lib.MemoryTransformerConfig` field
    (``n_neighbors``, ``temperature``, ``gate_bias``, ``d_model``, ...), each value a fresh training with the
    same seeds as the default; and ``"memory_size"``: the share of training windows (the most recent ones)
    the default model's memory holds when it predicts the test windows (no retraining: same weights, a
    smaller memory). The default itself is trained once per seed and is the reference of every difference.
    ``threads``: torch threads while training (1 is fastest for small models on a shared CPU).
    """
    tcfg = replace(trainer_config or TrainerConfig(), progress=False, num_threads=threads)
    grid = dict(grid or {})
    seeds_ = _seeds(seeds)
    subsets = dict(subsets or {})
    y = np.asarray(test.y, float)
    masks = {"all": np.ones(len(y), bool), **subsets}
    jobs = [(p, v) for p, values in grid.items() for v in values if v != _default_of(p, model_config)]
    signals: dict[tuple[str, Any, int], np.ndarray] = {}
    ics: dict[tuple[str, Any, int], float] = {}
    bar = _bar(range(len(seeds_) * (1 + len(jobs))), len(seeds_) * (1 + len(jobs)), "trainings", progress)
    it = iter(bar)
    with _torch_threads(threads):
        for seed in seeds_:
            cfg = replace(tcfg, seed=seed)
            base = MemoryTransformerTrainer(model_config, cfg)
            base.fit(train, val)
            next(it, None)
            pred = base.predict(test)
            signals[("default", None, seed)] = pred["direction_signal"].to_numpy()
            ics[("default", None, seed)] = information_coefficient(pred["pred_return"].to_numpy(), y)
            for p, v in jobs:
                if p == MEMORY_SIZE:
                    n_keep = max(1, int(round(float(v) * len(train))))
                    base.build_memory(train.subset(np.arange(len(train) - n_keep, len(train))))
                    pred = base.predict(test)
                    base.build_memory(train)
                else:
                    tr = MemoryTransformerTrainer(replace(model_config, **{p: v}), cfg)
                    tr.fit(train, val)
                    pred = tr.predict(test)
                next(it, None)
                signals[(p, v, seed)] = pred["direction_signal"].to_numpy()
                ics[(p, v, seed)] = information_coefficient(pred["pred_return"].to_numpy(), y)
    bar.close()
    defaults = {p: _default_of(p, model_config) for p in grid}
    per_seed = _sensitivity_per_seed(grid, defaults, seeds_, signals, ics, masks, y)
    summary = _sensitivity_summary(grid, defaults, seeds_, signals, per_seed, masks, y, n_boot, block)
    return SensitivityStudy(per_seed, summary, defaults)


def _sensitivity_per_seed(grid: Mapping[str, Sequence[Any]], defaults: dict[str, Any], seeds_: Sequence[int],
                          signals: dict, ics: dict, masks: dict[str, np.ndarray], y: np.ndarray) -> pd.DataFrame:
    """One row per (param, value, seed, subset): the direction accuracy (and the IC on subset ``all``).
    A parameter's default value reads the default model's predictions (key ``("default", None, seed)``)."""
    rows = []
    for p, values in grid.items():
        for v in values:
            key = "default" if v == defaults[p] else p
            vv = None if key == "default" else v
            for seed in seeds_:
                sig = signals[(key, vv, seed)]
                for name, mask in masks.items():
                    rows.append({"param": p, "value": v, "seed": seed, "subset": name,
                                 "acc": direction_accuracy(sig[mask], y[mask]),
                                 "ic": ics[(key, vv, seed)] if name == "all" else np.nan,
                                 "is_default": key == "default"})
    return pd.DataFrame(rows)


def _sensitivity_summary(grid: Mapping[str, Sequence[Any]], defaults: dict[str, Any], seeds_: Sequence[int],
                         signals: dict, per_seed: pd.DataFrame, masks: dict[str, np.ndarray], y: np.ndarray,
                         n_boot: int, block: int) -> pd.DataFrame:
    """Per (param, value, subset): mean accuracy and its paired difference to the default, with a t-interval
    over seeds and a moving-block bootstrap over test windows of the seed-averaged hit differences."""
    rng = np.random.default_rng(12345)
    scored = (y != 0) & np.isfinite(y)
    summary = []
    for p, values in grid.items():
        base_correct = np.mean([np.sign(signals[("default", None, s)]) == np.sign(y) for s in seeds_], axis=0)
        for v in values:
            key, vv = ("default", None) if v == defaults[p] else (p, v)
            correct = np.mean([np.sign(signals[(key, vv, s)]) == np.sign(y) for s in seeds_], axis=0)
            d_win = correct - base_correct
            for name, mask in masks.items():
                g = per_seed[(per_seed.param == p) & (per_seed.value == v) & (per_seed.subset == name)]
                ref = per_seed[(per_seed.param == p) & (per_seed.is_default) & (per_seed.subset == name)]
                ci = paired_seed_interval(g.sort_values("seed")["acc"].to_numpy(),
                                          ref.sort_values("seed")["acc"].to_numpy())
                use = mask & scored
                lo, hi = (block_bootstrap_mean_ci(d_win[use], n_boot, block, rng)
                          if use.any() and key != "default" else (0.0, 0.0))
                summary.append({"param": p, "value": v, "subset": name, "n_scored": int(use.sum()),
                                "acc": g["acc"].mean(), **ci, "boot_low": lo, "boot_high": hi,
                                "is_default": key == "default"})
    return pd.DataFrame(summary)


# ----------------------------------------------------------------------------- when not to use memory at all
def no_structure_study(n_bars: int = 2000, seeds: int | Sequence[int] = 3, model_config: Any = None,
                       trainer_config: Any = None, seq_len: int = 24, threads: int | None = 1,
                       progress: bool = True) -> dict[str, pd.DataFrame]:
    """Memory on a market with nothing to remember, and what it costs.

    Two markets per seed: ``motifs`` (this lesson's synthetic market) and ``no structure`` (the same
    generator with no motifs planted: regime drifts and fat-tailed noise, nothing that repeats with a known
    aftermath). On each, the transformer is trained with and without memory (everything else equal) and
    timed (fit + predict, seconds). The summary gives, per market, memory minus no memory (accuracy and
    seconds), paired by seed, with a t-interval over seeds.
    """
    tcfg = replace(trainer_config or TrainerConfig(epochs=3), progress=False, num_threads=threads)
    rows = []
    seeds_ = _seeds(seeds)
    total = 4 * len(seeds_)
    bar = _bar(range(total), total, "trainings", progress)
    it = iter(bar)
    with _torch_threads(threads):
        for seed in seeds_:
            for market in ("motifs", "no structure"):
                cfg = study_config() if market == "motifs" else study_config(motifs=())
                m = make_synthetic_market(n_bars, seed, cfg)
                splits = prepare_dataset(m.ohlcv, seq_len=seq_len)
                mc = replace(model_config or MemoryTransformerConfig(), input_dim=splits.train.n_features,
                             seq_len=seq_len)
                for use in (True, False):
                    t0 = time.perf_counter()
                    tr = MemoryTransformerTrainer(replace(mc, use_memory=use), replace(tcfg, seed=seed))
                    tr.fit(splits.train, splits.val)
                    pred = tr.predict(splits.test)
                    seconds = time.perf_counter() - t0
                    next(it, None)
                    y = np.asarray(splits.test.y, float)
                    rows.append({"market": market, "arm": "memory" if use else "no memory", "seed": seed,
                                 "subset": "all", "acc": direction_accuracy(pred["direction_signal"], y),
                                 "n_scored": int((y != 0).sum()), "seconds": seconds})
    bar.close()
    per_seed = pd.DataFrame(rows)
    out = []
    for _market, g in per_seed.groupby("market", sort=False):
        acc = _summarise(g, ["market", "arm"], {"arm": "no memory"}, extra=["seconds"])
        mem, loc = (g[g.arm == a].sort_values("seed") for a in ("memory", "no memory"))
        t = paired_seed_interval(mem["seconds"].to_numpy(), loc["seconds"].to_numpy())
        acc["seconds_diff"] = np.where(acc["arm"] == "memory", t["diff"], 0.0)
        acc["seconds_ci_low"] = np.where(acc["arm"] == "memory", t["ci_low"], 0.0)
        acc["seconds_ci_high"] = np.where(acc["arm"] == "memory", t["ci_high"], 0.0)
        out.append(acc)
    return {"per_seed": per_seed, "summary": pd.concat(out, ignore_index=True)}
