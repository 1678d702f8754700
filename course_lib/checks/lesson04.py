"""Checks for exercises/04_training: the causal memory mask, warm-up + cosine learning rate, a key refresh,
and the information coefficient.

The causality checker plants the classic mistakes (a window retrieving itself, an entry whose label is not
yet known) and names them; none of the checkers prints the expected values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..exercise import CheckFailed, Task, _PlaceholderReturned, call_answer, is_placeholder

__all__ = ["q1", "q2", "q3", "q4"]


def _call(func: Any, *args: Any) -> Any:
    try:
        out = call_answer(func, *args)
    except (CheckFailed, _PlaceholderReturned, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - arithmetic on ____ fails with a TypeError naming it
        if "_Placeholder" in str(exc) or "____" in str(exc):
            raise _PlaceholderReturned from exc
        raise
    if isinstance(out, tuple) and any(is_placeholder(o) for o in out):
        raise _PlaceholderReturned
    return out


# --- q1: which memory entries may a query at time t use? -----------------------------------------------
def _check_mask(func: Any) -> None:
    rng = np.random.default_rng(5)
    end = np.sort(rng.choice(10_000, 40, replace=False)).astype(np.int64)
    avail = end + rng.integers(1, 300, 40)  # label known h bars after the window's end
    as_of = end[::3].copy()  # queries at the end times of some of the same windows
    avail[1] = as_of[1]  # an entry resolved exactly at a query time (usable): catches a strict "<"
    out = np.asarray(_call(func, as_of, avail))
    if out.shape != (len(as_of), len(avail)):
        raise CheckFailed(f"return a (n_queries, n_entries) boolean array; got shape {out.shape}.")
    if out.dtype != bool:
        raise CheckFailed(f"return booleans (True = usable), got dtype {out.dtype}.")
    ref = avail[None, :] <= as_of[:, None]
    own = np.arange(0, 40, 3)
    if out[np.arange(len(own)), own].any():
        raise CheckFailed("a query may use its OWN window: its label is known only at available_at > its end time.")
    if (out & ~ref).any():
        raise CheckFailed("some usable entries have available_at later than the query time: that is look-ahead.")
    if (ref & ~out).any():
        raise CheckFailed("entries resolved at or before the query time are excluded; available_at == as_of is usable.")


q1 = Task(
    "lesson04.q1",
    "Write usable(as_of, available_at) -> bool matrix: may query i (at time as_of[i]) use memory entry j?",
    _check_mask,
    hint="Broadcast: available_at[None, :] <= as_of[:, None]. The window's END time is not the time its label is known.",
    solution="def usable(as_of, available_at):\n    return available_at[None, :] <= as_of[:, None]",
)


# --- q2: warm-up + cosine schedule ---------------------------------------------------------------------------
def _ref_lr(step: int, total: int, base: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def _check_lr(func: Any) -> None:
    total, base, warmup, floor = 200, 1e-3, 20, 0.1
    got = np.array([float(_call(func, s, total, base, warmup, floor)) for s in range(total)])
    ref = np.array([_ref_lr(s, total, base, warmup, floor) for s in range(total)])
    if got[0] >= base * 0.5:
        raise CheckFailed("the first step should use a small learning rate: warm-up starts near zero.")
    if not np.allclose(got[:warmup], ref[:warmup], rtol=1e-6):
        raise CheckFailed("the warm-up should rise linearly: base * (step + 1) / warmup for step < warmup.")
    if np.any(np.diff(got[warmup:]) > 1e-15):
        raise CheckFailed("after warm-up the rate must never increase (cosine decay).")
    if not np.isclose(got[-1], base * floor, rtol=0.02):
        raise CheckFailed("the last step should end near base * floor, not at zero.")
    if not np.allclose(got, ref, rtol=1e-6):
        raise CheckFailed("decay differs from floor + (1 - floor) * (1 + cos(pi * progress)) / 2, times base.")


q2 = Task(
    "lesson04.q2",
    "Write lr_at(step, total, base_lr, warmup, floor): linear warm-up, then cosine decay to base_lr * floor.",
    _check_lr,
    hint="progress = (step - warmup) / (total - warmup) after the warm-up.",
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


def _check_refresh(func: Any) -> None:
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
        raise CheckFailed("new keys differ from the model's keys in eval mode: switch off dropout (model.eval()).")
    if net.seen_grad:
        raise CheckFailed("keys were computed with gradients on; wrap the loop in torch.no_grad().")
    if not left_training:
        raise CheckFailed("restore the model's training mode after the refresh (it was in training mode).")


q3 = Task(
    "lesson04.q3",
    "Write refresh(model, bank, slots, X, batch_size): recompute stored keys with the current weights.",
    _check_refresh,
    hint="was = model.training; model.eval(); with torch.no_grad(): keys in batches via model.memory_keys; "
    "bank.update_keys(slots, keys); model.train(was).",
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
    got = float(_call(func, pred, y))
    ref = float(pd.Series(pred).rank().corr(pd.Series(y).rank()))
    if np.isclose(got, np.corrcoef(pred, y)[0, 1], atol=1e-6):
        raise CheckFailed("that is the Pearson correlation of raw values; the IC uses ranks (Spearman).")
    if not np.isclose(got, ref, atol=1e-6):
        raise CheckFailed("value differs from the correlation of the ranks of forecasts and outcomes.")


q4 = Task(
    "lesson04.q4",
    "Write ic(pred, y): the information coefficient (Spearman rank correlation) of forecasts and outcomes.",
    _check_ic,
    hint="Rank both with pandas .rank() (ties get their average rank), then take the correlation of the ranks.",
    solution="def ic(pred, y):\n    return pd.Series(pred).rank().corr(pd.Series(y).rank())",
)
