"""From a memory search to constant tensors the model reads: retrieved keys, outcome values, masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..memory.time_filter import NO_TIME_FILTER, query_times
from .config import OUTCOME_DIM


@dataclass
class RetrievedMemory:
    """What one search returned, as constant tensors shaped for the model.

    ``keys`` (B, Q, k, key_dim) stored (normalised) keys, ``values`` (B, Q, k, outcome_dim) outcomes,
    ``mask`` (B, Q, k) valid entries, ``indices`` (B, Q, k) slot ids (-1 invalid). ``Q`` is 1 for per-window
    retrieval and ``seq_len`` for per-position retrieval.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    indices: torch.Tensor
    scores: torch.Tensor | None = None

    def last(self) -> RetrievedMemory:
        """Only the last query position (used when a layer computes the last token only)."""
        if self.keys.shape[1] == 1:
            return self
        sl = slice(-1, None)
        return RetrievedMemory(
            self.keys[:, sl], self.values[:, sl], self.mask[:, sl], self.indices[:, sl],
            None if self.scores is None else self.scores[:, sl],
        )


class MemorySearch(Protocol):
    """Anything with the memory bank's ``search`` (see :class:`course_lib.ExternalMemoryBank`)."""

    def search(self, queries: Any, k: int = ..., as_of: Any = ...) -> Any: ...


def encode_outcomes(y: np.ndarray | torch.Tensor, scale: float, flat_threshold: float) -> np.ndarray:
    """Memory values for labels ``y`` (forward log returns): [clip(y/scale, +-5), down, flat, up].

    The scaled return keeps magnitudes comparable across assets; the one-hot class lets the model count
    "how many neighbours went up" without learning a threshold.
    """
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    out = np.zeros((len(y), OUTCOME_DIM), dtype=np.float32)
    out[:, 0] = np.clip(y / scale, -5.0, 5.0)
    cls = direction_classes(y, flat_threshold)
    out[np.arange(len(y)), 1 + cls] = 1.0
    return out


def direction_classes(y: np.ndarray | torch.Tensor, flat_threshold: float):
    """0 = down (y < -thr), 1 = flat, 2 = up (y > thr); works on numpy arrays and tensors."""
    if isinstance(y, torch.Tensor):
        return (y > flat_threshold).long() * 2 + ((y >= -flat_threshold) & (y <= flat_threshold)).long()
    y = np.asarray(y)
    return np.where(y > flat_threshold, 2, np.where(y < -flat_threshold, 0, 1)).astype(np.int64)


def _as_tensor(a: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)


def retrieve(memory: MemorySearch, queries: torch.Tensor, k: int, as_of: Any = None) -> RetrievedMemory:
    """Search ``memory`` with ``queries`` (B, Q, key_dim); ``as_of`` (B,) int64 ns: one time per window.

    Every query of a window shares its ``as_of`` (the window's end time), so no query sees an entry whose
    label was not known when the window closed. ``as_of`` is required; ``NO_TIME_FILTER`` is the explicit
    opt-out. Results come back as constant tensors (no gradient).
    """
    b, q, dk = queries.shape
    flat = F.normalize(queries.detach().reshape(b * q, dk).float(), dim=-1)
    if as_of is None:
        query_times(None, b, "model(x, memory=...)")  # raises: the window times are required
    times = NO_TIME_FILTER
    if as_of is not NO_TIME_FILTER:
        times = np.asarray(as_of.cpu() if isinstance(as_of, torch.Tensor) else as_of, dtype=np.int64).reshape(-1)
        if times.size == 1 and b > 1:
            times = np.full(b, times[0], dtype=np.int64)
        if q > 1:
            times = np.repeat(times, q)
    res = memory.search(flat, k=k, as_of=times)
    dev = queries.device
    keys = _as_tensor(res.keys, dev, torch.float32).reshape(b, q, k, -1)
    values = _as_tensor(res.values, dev, torch.float32).reshape(b, q, k, -1)
    mask = _as_tensor(res.mask, dev).bool().reshape(b, q, k)
    indices = _as_tensor(res.indices, dev, torch.long).reshape(b, q, k)
    scores = _as_tensor(res.scores, dev, torch.float32).reshape(b, q, k)
    keys = torch.where(mask[..., None], keys, torch.zeros((), device=dev))
    values = torch.where(mask[..., None], values, torch.zeros((), device=dev))
    return RetrievedMemory(keys, values, mask, indices, scores)


def memory_stats(mem: RetrievedMemory, weights: torch.Tensor | None = None) -> torch.Tensor:
    """What the memory knows about its own answer, per query: (B, Q, ``N_MEMORY_STATS``), no gradient.

    Columns: the best similarity among the valid neighbours, their mean similarity, how much their outcomes
    agree (``|sum_j w_j sign(r_j)|``: 1 when every weighted neighbour was followed by a move the same way, near
    0 when they split), and the share of the ``k`` slots holding a valid neighbour. ``weights`` (B, Q, k):
    the neighbours' attention weights (default: uniform over the valid ones). Zeros where none was found.
    """
    mask = mem.mask
    fm = mask.float()
    n = fm.sum(-1)
    s = mem.scores if mem.scores is not None else torch.zeros_like(fm)
    s = torch.where(mask, s.float(), torch.zeros((), device=s.device))
    has = n > 0
    top = torch.where(has, torch.where(mask, s, torch.full_like(s, -2.0)).max(-1).values, torch.zeros_like(n))
    mean = s.sum(-1) / n.clamp(min=1)
    w = fm / n.clamp(min=1)[..., None] if weights is None else weights.float() * fm
    agree = (w * torch.sign(mem.values[..., 0].float())).sum(-1).abs()
    return torch.stack([top, mean, agree, n / mask.shape[-1]], dim=-1).detach()


def standardise_stats(norm: torch.nn.BatchNorm1d, stats: torch.Tensor) -> torch.Tensor:
    """``stats`` (..., n) standardised across windows by ``norm`` (running statistics, updated in training);
    a single-row training batch, which a batch norm cannot standardise, uses the running statistics."""
    flat = stats.reshape(-1, stats.shape[-1]).float()
    if norm.training and flat.shape[0] < 2:
        flat = F.batch_norm(flat, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
    else:
        flat = norm(flat)
    return flat.reshape(stats.shape)
