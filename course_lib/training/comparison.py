"""Memory against no memory, everything else equal: the comparison lessons 04 and 06 report.

Two arms per seed that differ only in ``use_memory``; accuracy and rank IC on the same test windows; a
t-interval over seeds and a paired moving-block bootstrap over test windows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..data.windows import WindowSet
from ..metrics import block_bootstrap_mean_ci, direction_accuracy, information_coefficient
from ..model import MemoryTransformerConfig
from ..stats import t_interval
from .config import TrainerConfig
from .trainer import MemoryTransformerTrainer

__all__ = ["MemoryComparison", "compare_memory_vs_local", "motif_subsets"]


@dataclass
class MemoryComparison:
    """Memory vs no-memory on the same test windows over several seeds.

    ``per_seed``: one row per seed with direction accuracy and IC of both models (and of any ``subsets``).
    ``summary``: mean accuracy difference (memory - local) with a t-interval over seeds and a paired
    moving-block bootstrap interval over test samples (accuracy difference averaged across seeds), both over
    the ``n_scored`` windows with a non-zero label that :func:`direction_accuracy` scores; for all
    test windows also the IC of both arms and a t-interval over seeds of their difference.
    ``predictions``: seed -> (memory, local) prediction frames, for plots.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    predictions: dict[int, tuple[pd.DataFrame, pd.DataFrame]]


def compare_memory_vs_local(
    train: WindowSet,
    val: WindowSet,
    test: WindowSet,
    model_config: MemoryTransformerConfig,
    trainer_config: TrainerConfig | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    subsets: dict[str, np.ndarray] | None = None,
    n_boot: int = 2000,
    block: int = 20,
    progress: bool = True,
    executor: Any = None,
) -> MemoryComparison:
    """Train the model with and without memory (everything else equal) for each seed; compare out of sample.

    The only difference between the two arms is ``use_memory``; both see the same windows, seeds, epochs and
    early-stopping rule, and the test set is touched only once per trained model. ``subsets`` maps a name to
    a boolean mask over ``test`` (e.g. the windows right after a planted motif) to report accuracy there too.
    ``progress`` shows one bar over the ``2 * len(seeds)`` trainings (each training's own epoch bar follows
    ``trainer_config.progress``). ``executor``: ``None`` trains them one after the other; any
    ``concurrent.futures.Executor`` (``course_lib.parallel.process_pool``, a Dask client's executor) trains
    them side by side, with the same numbers (each runs seeded, with the caller's torch thread count).
    """
    import torch

    from ..parallel import run_tasks

    tcfg = trainer_config or TrainerConfig()
    subsets = subsets or {}
    y = np.asarray(test.y, dtype=np.float64)
    # the windows direction_accuracy scores: the bootstrap must resample these, not all windows, or its
    # interval describes another sample than the point estimate it brackets
    scored = (y != 0) & np.isfinite(y)
    threads = torch.get_num_threads()  # every arm trains with the caller's threads: same rounding anywhere
    tasks = [(train, val, test, replace(model_config, use_memory=use), replace(tcfg, seed=seed), threads)
             for seed in seeds for use in (True, False)]
    preds_flat = run_tasks(_train_and_predict, tasks, executor=executor, progress=progress, desc="seeds x arms")
    rows, preds = [], {}
    correct: dict[str, list[np.ndarray]] = {"memory": [], "local": []}
    for i, seed in enumerate(seeds):
        row: dict[str, Any] = {"seed": seed}
        pair = preds_flat[2 * i : 2 * i + 2]
        for arm, p in zip(("memory", "local"), pair):
            sig = p["direction_signal"].to_numpy()
            row[f"acc_{arm}"] = direction_accuracy(sig, y)
            row[f"ic_{arm}"] = information_coefficient(p["pred_return"].to_numpy(), y)
            for name, mask in subsets.items():
                row[f"acc_{arm}_{name}"] = direction_accuracy(sig[mask], y[mask])
            correct[arm].append((np.sign(sig) == np.sign(y)).astype(float))
        preds[seed] = (pair[0], pair[1])
        rows.append(row)
    per_seed = pd.DataFrame(rows).set_index("seed")
    rng = np.random.default_rng(12345)
    d_all = np.mean(correct["memory"], axis=0) - np.mean(correct["local"], axis=0)
    summary_rows = []
    for name, mask in [("all", np.ones(len(y), dtype=bool)), *subsets.items()]:
        suffix = "" if name == "all" else f"_{name}"
        diffs = per_seed[f"acc_memory{suffix}"] - per_seed[f"acc_local{suffix}"]
        half = _t_half(diffs)
        use = mask & scored
        lo, hi = block_bootstrap_mean_ci(d_all[use], n_boot, block, rng) if use.any() else (float("nan"),) * 2
        summary_rows.append({
            "subset": name, "n_test": int(mask.sum()), "n_scored": int(use.sum()),
            "acc_memory": per_seed[f"acc_memory{suffix}"].mean(), "acc_local": per_seed[f"acc_local{suffix}"].mean(),
            "diff": diffs.mean(), "seed_ci_low": diffs.mean() - half, "seed_ci_high": diffs.mean() + half,
            "boot_ci_low": lo, "boot_ci_high": hi,
        })
        if name == "all":  # the rank IC of the return forecast: uses confidence, not just the sign
            ic_d = per_seed["ic_memory"] - per_seed["ic_local"]
            ic_half = _t_half(ic_d)
            summary_rows[-1].update({
                "ic_memory": per_seed["ic_memory"].mean(), "ic_local": per_seed["ic_local"].mean(),
                "ic_diff": ic_d.mean(), "ic_seed_ci_low": ic_d.mean() - ic_half, "ic_seed_ci_high": ic_d.mean() + ic_half,
            })
    return MemoryComparison(per_seed, pd.DataFrame(summary_rows).set_index("subset"), preds)


def _t_half(values) -> float:
    """Half-width of the 95% Student-t interval over seeds (:func:`course_lib.stats.t_interval`, scipy's
    quantiles); NaN with fewer than two seeds."""
    ci = t_interval(values)
    return (ci["ci_high"] - ci["ci_low"]) / 2


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


def motif_subsets(market: Any, windows: WindowSet, onset_bars: int = 3) -> dict[str, np.ndarray]:
    """Boolean masks over ``windows`` of a :class:`course_lib.SyntheticMarket` where the planted signal lives.

    ``aftermath``: the label bar lies in a planted aftermath (recent momentum also helps here, since the
    aftermath is a trend). ``onset``: the window ends on a motif's last bar or within ``onset_bars - 1`` bars
    after it: the aftermath has barely started, so only recognising the motif's *shape* predicts it; this is
    where a memory of past motifs should help most.
    """
    index = market.ohlcv.index
    pos = index.get_indexer(windows.end_time)
    label_pos = np.minimum(pos + windows.horizon, len(index) - 1)
    aftermath = market.aftermath_bars.to_numpy()[label_pos] >= 0
    ends = market.motifs["end_pos"].to_numpy()
    d = pos[:, None] - ends[None, :]
    onset = ((d >= 0) & (d < onset_bars)).any(axis=1) if len(ends) else np.zeros(len(pos), dtype=bool)
    return {"aftermath": aftermath, "onset": onset}
