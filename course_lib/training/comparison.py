"""Memory against no memory, everything else equal: the two-arm special case of the ablation ladder.

Two arms per seed that differ only in ``use_memory`` (:func:`course_lib.compare_arms` with the arms ``full``
and ``no_memory``); accuracy and rank IC on the same test windows; a t-interval over seeds and a paired
circular block bootstrap over test windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.windows import WindowSet
from ..model import MemoryTransformerConfig
from ..stats import t_interval
from .config import TrainerConfig

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
    from .ablation import compare_arms

    subsets = dict(subsets or {})
    ladder = compare_arms(train, val, test, model_config, trainer_config, arms=("full", "no_memory"), seeds=seeds,
                          subsets=subsets, reference="no_memory", n_boot=n_boot, block=block, progress=progress,
                          executor=executor)
    y = np.asarray(test.y, dtype=np.float64)
    scored = (y != 0) & np.isfinite(y)
    ps = ladder.per_seed.set_index(["arm", "subset", "seed"])
    rows = []
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed}
        for arm, name in (("full", "memory"), ("no_memory", "local")):
            row[f"acc_{name}"] = ps.loc[(arm, "all", seed), "accuracy"]
            row[f"ic_{name}"] = ps.loc[(arm, "all", seed), "ic"]
            for sub in subsets:
                row[f"acc_{name}_{sub}"] = ps.loc[(arm, sub, seed), "accuracy"]
        rows.append(row)
    per_seed = pd.DataFrame(rows).set_index("seed")
    summary_rows = []
    for name, mask in [("all", np.ones(len(y), dtype=bool)), *subsets.items()]:
        r = ladder.summary.loc[("full", name)]
        summary_rows.append({
            "subset": name, "n_test": int(mask.sum()), "n_scored": int((mask & scored).sum()),
            "acc_memory": r["accuracy"], "acc_local": ladder.summary.loc[("no_memory", name), "accuracy"],
            **{k: r[k] for k in ("diff", "seed_ci_low", "seed_ci_high", "boot_ci_low", "boot_ci_high")},
        })
        if name == "all":  # the rank IC of the return forecast: uses confidence, not just the sign
            ic = t_interval(per_seed["ic_memory"] - per_seed["ic_local"])
            summary_rows[-1].update({
                "ic_memory": per_seed["ic_memory"].mean(), "ic_local": per_seed["ic_local"].mean(),
                "ic_diff": ic["diff"], "ic_seed_ci_low": ic["ci_low"], "ic_seed_ci_high": ic["ci_high"],
            })
    preds = {seed: (ladder.predictions["full"][seed], ladder.predictions["no_memory"][seed]) for seed in seeds}
    return MemoryComparison(per_seed, pd.DataFrame(summary_rows).set_index("subset"), preds)


def motif_subsets(market: Any, windows: WindowSet, onset_bars: int = 3) -> dict[str, np.ndarray]:
    """Boolean masks over ``windows`` of a :class:`course_lib.SyntheticMarket` where the planted signal lives.

    ``aftermath``: the label bar lies in a planted aftermath (recent momentum also helps here, since the
    aftermath is a trend). ``onset``: the window ends on a motif's last bar or within ``onset_bars - 1`` bars
    after it: the aftermath has barely started, so only recognising the motif's *shape* predicts it; this is
    where a memory of past motifs should help most. ``no_motif``: the window ends outside any motif and its
    aftermath, and its label bar is outside every aftermath: nothing planted to remember.
    """
    index = market.ohlcv.index
    pos = index.get_indexer(windows.end_time)
    label_pos = np.minimum(pos + windows.horizon, len(index) - 1)
    aftermath = market.aftermath_bars.to_numpy()[label_pos] >= 0
    ends = market.motifs["end_pos"].to_numpy()
    d = pos[:, None] - ends[None, :]
    onset = ((d >= 0) & (d < onset_bars)).any(axis=1) if len(ends) else np.zeros(len(pos), dtype=bool)
    in_motif = market.motif_bars.to_numpy()[pos] >= 0
    in_after = market.aftermath_bars.to_numpy()[pos] >= 0
    no_motif = ~(aftermath | onset | in_motif | in_after)
    return {"aftermath": aftermath, "onset": onset, "no_motif": no_motif}


def planted_direction(market: Any, windows: WindowSet, onset_bars: int = 3) -> np.ndarray:
    """Per window of a :class:`course_lib.SyntheticMarket`: the planted aftermath direction (+1 or -1) of the
    motif that ended on the window's last bar or within ``onset_bars - 1`` bars before it, 0 elsewhere.

    What an oracle that recognises every motif would forecast on the onset windows (:func:`motif_subsets`): the
    ceiling any memory can reach there, since the aftermath's noise still hides its drift on some bars.
    """
    pos = market.ohlcv.index.get_indexer(windows.end_time)
    ends = market.motifs["end_pos"].to_numpy()
    dirs = market.motifs["direction"].to_numpy()
    if not len(ends):
        return np.zeros(len(pos), dtype=np.int64)
    d = pos[:, None] - ends[None, :]
    near = (d >= 0) & (d < onset_bars)
    return np.where(near.any(axis=1), dirs[np.argmax(near, axis=1)], 0).astype(np.int64)
