"""The training memory: a model's training windows as a causal kNN memory, usable without a trainer.

Each entry is one training window: its key made by the model's current weights, its outcome encoded as the
value, its end time t and the time its label is known (t+h). Queries search it with their own end time as
``as_of``, so none sees itself, a later window or an unresolved label. Lesson 03 builds one directly:

>>> set_target_stats(model, train.y)                        # doctest: +SKIP
>>> memory = TrainingMemory.build(model, train)             # doctest: +SKIP
>>> out = model(x, memory=memory.bank, as_of=batch.end_time_ns())   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.windows import WindowSet
from ..memory import ExternalMemoryBank, MemoryConfig
from ..model import MemoryAugmentedTransformer, encode_outcomes

__all__ = ["TrainingMemory", "memory_keys", "set_target_stats"]


def set_target_stats(model: MemoryAugmentedTransformer, y: np.ndarray, flat_quantile: float = 1.0 / 3.0) -> None:
    """Record the training labels' scale and the down/flat/up threshold in the model.

    Both are fitted on the training labels only; the memory's values and the loss are expressed with them.
    """
    y = np.asarray(y, dtype=np.float64)
    scale = float(np.std(y)) or 1.0
    thr = float(np.quantile(np.abs(y), flat_quantile)) if flat_quantile > 0 else 0.0
    model.target_scale.fill_(scale)
    model.flat_threshold.fill_(thr)


def memory_keys(model: MemoryAugmentedTransformer, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's memory keys of windows ``X`` (n, seq_len, features), in eval mode, as float32 numpy."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size])).to(device)
            out.append(model.memory_keys(xb).float().cpu().numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, model.config.key_dim), np.float32)


def _bank(model: MemoryAugmentedTransformer, capacity: int, backend: str) -> ExternalMemoryBank:
    device = next(model.parameters()).device
    cfg = MemoryConfig(key_dim=model.config.key_dim, value_dim=model.config.outcome_dim, capacity=capacity,
                       backend=backend, device="cuda" if device.type == "cuda" else "cpu")
    return ExternalMemoryBank(cfg)


@dataclass
class TrainingMemory:
    """A bank holding ``windows`` with the raw ``keys`` and ``values`` last written to it.

    ``slots[i]`` is the bank slot of ``windows[i]``. The raw keys are kept so a checkpoint stores exactly
    what the bank searched (and the keys of the weights saved with it, see ``refresh``).
    """

    bank: ExternalMemoryBank
    windows: WindowSet
    keys: np.ndarray
    values: np.ndarray
    slots: np.ndarray

    @classmethod
    def build(cls, model: MemoryAugmentedTransformer, windows: WindowSet, capacity: int | None = None,
              backend: str = "torch", batch_size: int = 512) -> TrainingMemory:
        """Keys from the model's current weights, outcomes (in the model's target scale) as values."""
        y = np.asarray(windows.y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("memory windows must all have known labels (drop_unlabeled=True).")
        keys = memory_keys(model, windows.X, batch_size)
        values = encode_outcomes(y, float(model.target_scale), float(model.flat_threshold))
        return cls.from_arrays(model, windows, keys, values, capacity, backend)

    @classmethod
    def from_arrays(cls, model: MemoryAugmentedTransformer, windows: WindowSet, keys: np.ndarray,
                    values: np.ndarray, capacity: int | None = None, backend: str = "torch") -> TrainingMemory:
        """A memory of ``windows`` with given keys and values (a checkpoint's, for instance)."""
        bank = _bank(model, max(capacity or 0, len(windows)), backend)
        slots = bank.add(keys, values=values, timestamp=windows.end_time_ns(),
                         available_at=windows.available_at_ns(), future_return=np.asarray(windows.y, np.float64))
        return cls(bank, windows, keys, values, np.asarray(slots, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.bank)

    def refresh(self, model: MemoryAugmentedTransformer, batch_size: int = 512) -> None:
        """Recompute every stored key with the model's current weights (fights key staleness)."""
        self.keys = memory_keys(model, self.windows.X, batch_size)
        self.bank.update_keys(self.slots, self.keys)

    def slot_rows(self) -> np.ndarray:
        """Map bank slot id -> row of :attr:`windows` (-1 for unknown slots)."""
        size = int(self.slots.max()) + 1 if len(self.slots) else 0
        lut = np.full(size + 1, -1, dtype=np.int64)
        lut[self.slots] = np.arange(len(self.slots))
        return lut

    def with_resolved(self, model: MemoryAugmentedTransformer, windows: WindowSet, backend: str = "torch",
                      batch_size: int = 512) -> ExternalMemoryBank:
        """A new bank: this memory plus the labelled ``windows`` it does not hold yet (online prediction).

        Each new entry becomes retrievable when its label resolves (``available_at``), so searching it with
        each query's end time stays causal. A window already in memory (same end time: one series, one
        window per bar, e.g. a calibration pass over the training set) is not stored again, and a window
        repeated within ``windows`` is stored once: otherwise most queries got the same neighbour twice.
        """
        ends = windows.end_time_ns()
        new = np.isfinite(windows.y) & ~np.isin(ends, self.windows.end_time_ns())
        first = np.zeros(len(windows), dtype=bool)
        first[np.unique(ends, return_index=True)[1]] = True
        new &= first
        if not new.any():
            return self.bank
        extra = windows.subset(np.flatnonzero(new))
        keys = np.concatenate([self.keys, memory_keys(model, extra.X, batch_size)])
        values = np.concatenate([
            self.values, encode_outcomes(extra.y, float(model.target_scale), float(model.flat_threshold)),
        ])
        bank = _bank(model, len(keys) + 1, backend)
        bank.add(keys, values=values,
                 timestamp=np.concatenate([self.windows.end_time_ns(), extra.end_time_ns()]),
                 available_at=np.concatenate([self.windows.available_at_ns(), extra.available_at_ns()]))
        return bank
