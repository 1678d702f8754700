"""Checks for exercises/04_training: a paired comparison over seeds, warm-up + cosine learning rate, a key
refresh, the information coefficient, and an experiment with stale memory keys (``refresh_keys=False``).

The comparison checker recognises the classic slips (arms treated as independent, a normal quantile for five
seeds, the spread of single seeds instead of the standard error of their mean) and names them; none of the
checkers prints the expected values. The experiment tasks (q5, q6) train the same tiny seeded model here.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..exercise import CheckFailed, Task
from ._common import call as _call
from ._common import choice_checker, format_options, numeric_checker

__all__ = ["BUGGY_REFRESH", "EXPERIMENT", "q1", "q2", "q3", "q4", "q5", "q6"]


# --- q1: a paired comparison over seeds ---------------------------------------------------------------
def _t_interval(d: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    from scipy import stats

    n = len(d)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def _triple(out: Any) -> tuple[float, float, float]:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise CheckFailed("return three numbers: (mean difference, lower bound, upper bound).")
    try:
        vals = tuple(float(np.asarray(v).item()) for v in out)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"the three values must be numbers ({exc}).") from exc
    if not all(math.isfinite(v) for v in vals):
        raise CheckFailed("a bound is NaN or infinite: with n seeds the t quantile has n - 1 degrees of freedom.")
    return vals  # type: ignore[return-value]


def _check_paired(func: Any) -> None:
    from scipy import stats

    rng = np.random.default_rng(4)
    seed_effect = rng.normal(0.52, 0.03, 5)  # what a seed does to BOTH arms (same init, same batches)
    a = seed_effect + 0.01 + rng.normal(0, 0.004, 5)
    b = seed_effect + rng.normal(0, 0.004, 5)
    got = _triple(_call(func, a.copy(), b.copy()))
    mean, lo, hi = _t_interval(a - b)
    if np.allclose(got, (mean, lo, hi), rtol=1e-6, atol=1e-9):
        if not _check_paired_sign(func):
            raise CheckFailed("with the arms swapped the difference must change sign: compute a minus b.")
        return
    if math.isclose(got[0], -mean, rel_tol=1e-6):
        raise CheckFailed("the difference has the wrong sign: report the advantage of the first arm over the second.")
    if not math.isclose(got[0], mean, rel_tol=1e-6):
        raise CheckFailed("the centre of the interval is not the mean of the per-seed differences.")
    if not lo <= got[0] <= hi or got[1] > got[2]:
        raise CheckFailed("return (mean, lower, upper) with lower <= mean <= upper.")
    n = len(a)
    se = (a - b).std(ddof=1) / math.sqrt(n)
    welch = math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
    half = (got[2] - got[1]) / 2
    for factor in (1.959963984540054, stats.t.ppf(0.975, n - 1), stats.t.ppf(0.975, 2 * n - 2)):
        if math.isclose(half, factor * welch, rel_tol=1e-3):
            raise CheckFailed(
                "the interval treats the two arms as independent samples. Each seed trains both arms with the "
                "same initialisation and batches: compare the seeds pair by pair."
            )
    if math.isclose(half, 1.959963984540054 * se, rel_tol=1e-3):
        raise CheckFailed("with a handful of seeds the normal quantile is too narrow: use Student's t.")
    if math.isclose(half, stats.t.ppf(0.975, n) * se, rel_tol=1e-3):
        raise CheckFailed("the t quantile has n - 1 degrees of freedom, not n.")
    if math.isclose(half, stats.t.ppf(0.975, n - 1) * (a - b).std(ddof=0) / math.sqrt(n), rel_tol=1e-3):
        raise CheckFailed("use the sample standard deviation (ddof=1) of the differences.")
    if math.isclose(half, stats.t.ppf(0.975, n - 1) * (a - b).std(ddof=1), rel_tol=1e-3):
        raise CheckFailed("that is the spread of single seeds; the interval of a MEAN shrinks with sqrt(n).")
    raise CheckFailed("the bounds differ from a 95% t-interval of the mean per-seed difference.")


def _check_paired_sign(func: Any) -> bool:
    a, b = np.array([0.50, 0.53, 0.51]), np.array([0.49, 0.50, 0.52])
    got = _triple(_call(func, b, a))
    return math.isclose(got[0], float((b - a).mean()), rel_tol=1e-6, abs_tol=1e-12)


q1 = Task(
    "lesson04.q1",
    "Write paired_difference(a, b) -> (mean, low, high): how much better arm a scored than arm b on average over "
    "the seeds, with a 95% confidence interval for that average that is honest about how few seeds there are. "
    "Seed i trained both arms (same initialisation, same batches).",
    _check_paired,
    hint=(
        "A seed that is lucky for one arm is lucky for the other too: what quantity removes that shared luck?",
        "Take the per-seed differences, their mean and their standard error (sample standard deviation over "
        "the square root of the number of seeds), and widen it by the Student t quantile for a two-sided 95% "
        "interval with one degree of freedom fewer than there are seeds.",
    ),
    solution=(
        "def paired_difference(a, b):\n    d = np.asarray(a) - np.asarray(b)\n    n = len(d)\n"
        "    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)\n"
        "    return d.mean(), d.mean() - half, d.mean() + half"
    ),
)


# --- q2: warm-up + cosine schedule ---------------------------------------------------------------------------
def _ref_lr(step: int, total: int, base: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def _ref_lr_last(step: int, total: int, base: float, warmup: int, floor: float) -> float:
    """The same schedule with progress counted so that the LAST step (total - 1) sits exactly on the floor."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def _check_lr(func: Any) -> None:
    total, base, warmup, floor = 200, 1e-3, 20, 0.1
    got = np.array([float(_call(func, s, total, base, warmup, floor)) for s in range(total)])
    # both ways of counting progress are right: ending one step above the floor, or exactly on it
    refs = [np.array([f(s, total, base, warmup, floor) for s in range(total)]) for f in (_ref_lr, _ref_lr_last)]
    if any(np.allclose(got, ref, rtol=1e-6) for ref in refs):
        return
    ref = refs[0]
    if got[0] >= base * 0.5:
        raise CheckFailed("the first step should use a small learning rate: warm-up starts near zero.")
    if not np.allclose(got[:warmup], ref[:warmup], rtol=1e-6):
        if np.isclose(got[warmup - 1], base, rtol=1e-6) or np.isclose(got[0], 0.0):
            raise CheckFailed("the warm-up does not rise in equal steps that reach base_lr on the last warm-up "
                              "step: count the current step as done (the first step must not be zero).")
        raise CheckFailed("the warm-up should rise in a straight line, in equal steps, up to base_lr on the last "
                          "warm-up step.")
    if not np.isclose(got[warmup], base, rtol=1e-6):
        raise CheckFailed("the first step after warm-up should still use base_lr: the decay starts from the top.")
    if np.any(np.diff(got[warmup:]) > 1e-15):
        raise CheckFailed("after warm-up the rate must never increase: half a cosine wave, not a full one.")
    if not np.isclose(got[-1], base * floor, rtol=0.02):
        raise CheckFailed("the last step should end at base_lr * floor, neither at zero nor above the floor.")
    raise CheckFailed("the decay has the right start and end but not the shape of half a cosine wave (a straight "
                      "line, or a cosine stretched over the wrong number of steps, lands here).")


q2 = Task(
    "lesson04.q2",
    "Write lr_at(step, total, base_lr, warmup, floor): a learning rate that climbs in a straight line from near "
    "zero to base_lr over the first `warmup` steps, then glides down along half a cosine wave to base_lr * floor "
    "at the last step, never rising again.",
    _check_lr,
    hint=(
        "Split the run in two phases and express, for each, how far through that phase the step is (a number "
        "from 0 to 1).",
        "During warm-up the rate is base_lr times the fraction of warm-up steps done, counting the current one. "
        "After it, measure progress through the remaining steps; half a cosine turns progress 0..1 into a factor "
        "falling from 1 to 0, and the floor keeps a share of base_lr at the end.",
    ),
    solution=(
        "def lr_at(step, total, base_lr, warmup, floor):\n    if step < warmup:\n"
        "        return base_lr * (step + 1) / warmup\n    p = min(1.0, (step - warmup) / max(1, total - warmup))\n"
        "    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))"
    ),
)


# --- q3: refreshing stale keys ------------------------------------------------------------------------------
class _FakeBank:
    def __init__(self, n: int, d: int):
        self.keys = np.zeros((n, d), np.float32)
        self.calls = 0

    def update_keys(self, slots, new_keys) -> None:
        self.calls += 1
        self.keys[np.asarray(slots)] = np.asarray(new_keys.detach() if torch.is_tensor(new_keys) else new_keys)


class _KeyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 4)
        self.drop = torch.nn.Dropout(0.5)
        self.seen_grad = False

    def memory_keys(self, x):
        self.seen_grad |= torch.is_grad_enabled()
        return self.drop(self.lin(x[:, -1]))

    def forward(self, x):
        raise CheckFailed("calling the model runs its forward pass, which makes forecasts, not memory keys: "
                          "the keys come from the model's own method for them.")


def _check_refresh(func: Any) -> None:
    _check_refresh_once(func)
    # a model found in evaluation mode must stay there: restoring "training" unconditionally is the usual slip
    torch.manual_seed(0)
    net = _KeyNet().eval()
    X = np.random.default_rng(3).normal(size=(20, 5, 6)).astype(np.float32)
    _call(func, net, _FakeBank(20, 4), np.arange(20), X, 8)
    if net.training:
        raise CheckFailed("the model was in evaluation mode when your function got it and left in training mode: "
                          "leave it in the mode you found it, whichever that was.")


def _check_refresh_once(func: Any) -> None:
    torch.manual_seed(0)
    net = _KeyNet()
    net.train()
    X = np.random.default_rng(2).normal(size=(50, 5, 6)).astype(np.float32)
    slots = np.arange(100, 150)
    bank = _FakeBank(150, 4)
    _call(func, net, bank, slots, X, 16)
    left_training = net.training  # read before the reference below switches the net to eval mode
    if bank.calls == 0:
        raise CheckFailed("the bank's keys were not updated: call bank.update_keys(slots, new_keys).")
    with torch.no_grad():
        net.eval()
        ref = net.lin(torch.from_numpy(X[:, -1])).numpy()
    if np.abs(bank.keys[:100]).sum() > 0:
        raise CheckFailed("keys outside the given slots were overwritten.")
    if not np.allclose(bank.keys[100:], ref, atol=1e-5):
        raise CheckFailed("new keys differ from the model's keys at inference: dropout was still on while they were "
                          "computed.")
    if net.seen_grad:
        raise CheckFailed("keys were computed with gradient tracking on: wasted memory and time for values that are "
                          "only stored (no_grad).")
    if not left_training:
        raise CheckFailed("restore the model's training mode after the refresh (it was in training mode).")


#: The version the exercise hands out: it runs and writes keys, and it is wrong in three places.
BUGGY_REFRESH = """def refresh(model, bank, slots, X, batch_size):
    keys = torch.cat([model.memory_keys(torch.from_numpy(X[i:i + batch_size]))
                      for i in range(0, len(X), batch_size)])
    bank.update_keys(slots, keys.detach().numpy())
    model.train()
"""

q3 = Task(
    "lesson04.q3",
    "Fix refresh(model, bank, slots, X, batch_size): it should make the stored keys match what the model computes "
    "NOW for the same windows, as the model would at inference, a batch at a time, leaving the model in the mode "
    "you found it. The version in the exercise runs and writes keys, but it has three bugs: find and fix them.",
    _check_refresh,
    hint=(
        "Call it twice on the same model: are the keys the same both times? And in which mode is a model left "
        "that came in evaluation mode?",
        "Three things differ between training and inference here: dropout is active in training mode (keys change "
        "from call to call), gradients are tracked unless switched off (memory and time for values that are only "
        "stored), and the function forces training mode at the end instead of restoring the mode it found.",
    ),
    solution=(
        "def refresh(model, bank, slots, X, batch_size):\n    was = model.training\n    model.eval()\n"
        "    with torch.no_grad():\n"
        "        keys = torch.cat([model.memory_keys(torch.from_numpy(X[i:i + batch_size]))\n"
        "                          for i in range(0, len(X), batch_size)])\n"
        "    bank.update_keys(slots, keys.numpy())\n    model.train(was)"
    ),
)


# --- q4: information coefficient -------------------------------------------------------------------------
def _check_ic(func: Any) -> None:
    rng = np.random.default_rng(9)
    y = rng.standard_t(3, 300)
    pred = 0.3 * y + rng.normal(size=300)
    pred[:5] = 50.0  # outliers: a rank correlation must not care
    out = _call(func, pred, y)
    if hasattr(out, "statistic") or (isinstance(out, tuple) and len(out) == 2):
        raise CheckFailed("your function returns a (statistic, p-value) pair: return the correlation alone.")
    got = float(np.asarray(out).item()) if np.size(out) == 1 else math.nan
    if not math.isfinite(got):
        raise CheckFailed("return one finite number: the correlation of forecasts and outcomes.")
    ref = float(pd.Series(pred).rank().corr(pd.Series(y).rank()))
    if np.isclose(got, np.corrcoef(pred, y)[0, 1], atol=1e-6):
        raise CheckFailed("that is the correlation of the raw values, which the five huge forecasts dominate; the "
                          "IC compares orders, not sizes.")
    if np.isclose(got, -ref, atol=1e-6):
        raise CheckFailed("the size is right but the sign is flipped: forecasts that order outcomes well must score "
                          "above zero.")
    if np.isclose(got, np.corrcoef(np.argsort(pred), np.argsort(y))[0, 1], atol=1e-6):
        raise CheckFailed("argsort gives the positions that would sort the array, not each value's place in the "
                          "order: those are different things.")
    if not np.isclose(got, ref, atol=1e-6):
        raise CheckFailed("not the correlation of the two orders: replace each series by each value's place in its "
                          "own sorted order before correlating.")


q4 = Task(
    "lesson04.q4",
    "Write ic(pred, y): the information coefficient, a correlation of forecasts with outcomes that rewards "
    "getting the ORDER right and that a few huge forecasts cannot dominate.",
    _check_ic,
    hint=(
        "Replace every value by its position in the sorted order: what is left of an outlier?",
        "Rank the forecasts and the outcomes separately (ties get their average rank) and take the ordinary "
        "correlation of the two rank series: that is Spearman's correlation.",
    ),
    solution="def ic(pred, y):\n    return pd.Series(pred).rank().corr(pd.Series(y).rank())",
)


# --- q5, q6: experiment - how stale do keys get without a refresh? ---------------------------------------------
EXPERIMENT = {"n_bars": 700, "market_seed": 0, "seq_len": 16, "d_model": 16, "epochs": 1, "seed": 0}


def experiment_data():
    """The tiny synthetic market of the experiment: its splits and model config (same in notebook and check)."""
    from ..data.synthetic import SyntheticConfig, make_synthetic_market
    from ..data.windows import prepare_dataset
    from ..model import MemoryTransformerConfig

    e = EXPERIMENT
    market = make_synthetic_market(n_bars=e["n_bars"], seed=e["market_seed"],
                                   config=SyntheticConfig(aftermath_strength=0.8, motif_coverage=0.5))
    splits = prepare_dataset(market.ohlcv, seq_len=e["seq_len"])
    cfg = MemoryTransformerConfig(input_dim=splits.train.n_features, seq_len=e["seq_len"], d_model=e["d_model"],
                                  n_heads=2, n_layers=1, n_neighbors=8, key_bars=8)
    return splits, cfg


def _nearest(keys: np.ndarray, queries: np.ndarray, available_at: np.ndarray, as_of: np.ndarray) -> np.ndarray:
    from ..memory import ExternalMemoryBank, MemoryConfig

    bank = ExternalMemoryBank(MemoryConfig(key_dim=keys.shape[1], capacity=len(keys)))
    bank.add(keys, available_at=available_at)
    return np.asarray(bank.search(queries, k=1, as_of=as_of).indices)[:, 0]


def _n_val_windows() -> int:
    """Validation windows of the experiment: a tolerance of half of one window's share accepts only the count."""
    return len(experiment_data()[0].val)


@lru_cache(maxsize=1)
def _staleness_study() -> dict[str, float]:
    from ..training import MemoryTransformerTrainer, TrainerConfig

    e = EXPERIMENT
    splits, cfg = experiment_data()
    trainer = MemoryTransformerTrainer(cfg, TrainerConfig(epochs=e["epochs"], seed=e["seed"], progress=False,
                                                          refresh_keys=False, memory_capacity=len(splits.train)))
    trainer.build_memory(splits.train)
    stale = trainer.memory.keys.copy()
    trainer.fit(splits.train, splits.val)
    fresh = trainer.memory.keys.copy()
    model = trainer.model.eval()
    with torch.no_grad():
        queries = model.memory_keys(torch.from_numpy(splits.val.X)).numpy()
    avail, as_of = splits.train.available_at_ns(), splits.val.end_time_ns()
    changed = _nearest(stale, queries, avail, as_of) != _nearest(fresh, queries, avail, as_of)
    cos = (stale * fresh).sum(1) / (np.linalg.norm(stale, axis=1) * np.linalg.norm(fresh, axis=1))
    return {"changed": float(changed.mean()), "cosine": float(cos.mean())}


def _stale_mistakes(got: float) -> str | None:
    study = _staleness_study()
    if not 0.0 <= got <= 1.0:
        return "a share of windows lies between 0 and 1."
    if abs(got - (1 - study["changed"])) < 0.005 and abs(study["changed"] - 0.5) > 0.01:
        return "that is the share of windows whose nearest neighbour stayed the same; the task asks for the ones that changed."
    if abs(got - study["cosine"]) < 0.005:
        return "that is the keys' mean cosine similarity (the next task); here count windows whose neighbour changed."
    return None


q5 = Task(
    "lesson04.q5",
    "Experiment: train the tiny model of EXPERIMENT for one epoch with refresh_keys=False. For the validation "
    "windows, search the training memory with the trained model's query keys twice (keys from before training, "
    "keys after) and report the share of windows whose nearest neighbour changed.",
    numeric_checker(lambda: _staleness_study()["changed"], "the share of windows with a new nearest neighbour",
                    abs_tol=0.0, mistakes=_stale_mistakes, tol=lambda: 0.5 / _n_val_windows()),
    hint=(
        "The memory keys before training are what the memory holds when nothing refreshes them; the keys after "
        "are what your refresh of task 3 would write.",
        "Build the memory before fitting and copy its keys, fit, copy the keys again (fit re-keys the memory "
        "with its final weights), compute the trained model's keys for the validation windows in evaluation "
        "mode, search a bank of each key set with k equal to one at the validation windows' times, and count "
        "the windows whose answers differ.",
    ),
    solution=(
        "trainer = cl.MemoryTransformerTrainer(cfg, cl.TrainerConfig(epochs=1, seed=0, progress=False,\n"
        "                                      refresh_keys=False, memory_capacity=len(syn.train)))\n"
        "trainer.build_memory(syn.train)\nstale = trainer.memory.keys.copy()\n"
        "trainer.fit(syn.train, syn.val)\nfresh = trainer.memory.keys.copy()\n"
        "with torch.no_grad():\n    queries = trainer.model.eval().memory_keys(torch.from_numpy(syn.val.X)).numpy()\n"
        "changed_share = (nearest(stale, queries) != nearest(fresh, queries)).mean()"
    ),
)

_STALE_OPTIONS = {
    "a": "the keys moved a lot (mean cosine below 0.95 between a stale key and its refreshed version)",
    "b": "the keys barely moved (mean cosine 0.95 or above), yet some windows found a different nearest neighbour",
    "c": "no window found a different nearest neighbour",
}


def _stale_truth() -> str:
    study = _staleness_study()
    if study["changed"] == 0:
        return "c"
    return "a" if study["cosine"] < 0.95 else "b"


q6 = Task(
    "lesson04.q6",
    "Interpret: also measure the mean cosine similarity between each stale key and its refreshed version. "
    "Which reading is right? " + format_options(_STALE_OPTIONS),
    choice_checker(_STALE_OPTIONS, _stale_truth, "what staleness looks like here"),
    hint=(
        "How far apart are a window's best and second-best neighbours, compared with how far a key moved?",
        "Compute the row-wise cosine of the two key sets and average it, then read it together with the share "
        "of changed neighbours from the previous task.",
    ),
    solution=(
        "cosine = ((stale * fresh).sum(1) / (np.linalg.norm(stale, axis=1) * np.linalg.norm(fresh, axis=1))).mean()\n"
        "answer = 'c' if changed_share == 0 else ('a' if cosine < 0.95 else 'b')"
    ),
)
