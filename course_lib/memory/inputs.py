"""What the memory bank accepts: shapes checked, NaNs refused, rows scaled to unit length.

Keys and numpy queries are normalised by the same numpy code (:func:`unit_rows`), so a stored key and the
same vector used as a query score exactly 1. Torch queries keep torch's own normalisation (see
:func:`unit_queries`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_numpy_rows", "check_slots", "to_numpy", "unit_keys", "unit_queries", "unit_rows", "value_rows"]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero); how stored keys and numpy queries are
    normalised."""
    norm = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))  # np.linalg.norm(x, axis=1), without its wrapper
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def to_numpy(q: np.ndarray | torch.Tensor) -> np.ndarray:
    return q.cpu().numpy() if isinstance(q, torch.Tensor) else q


def as_numpy_rows(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def unit_keys(keys: Any, key_dim: int) -> np.ndarray:
    """Keys to store: (n, key_dim) float32 unit rows; NaN or inf refused."""
    k = keys.detach().float().cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys, np.float32)
    if k.ndim == 1:
        k = k[None, :]
    if k.ndim != 2 or k.shape[1] != key_dim:
        raise ValueError(f"keys must have shape (n, {key_dim}), got {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError("keys contain NaN or inf; check the encoder or the features feeding it")
    return unit_rows(k)


def value_rows(values: Any, n: int, value_dim: int) -> np.ndarray | None:
    """Values to store: (n, value_dim) float32 (a flat array of the right size is reshaped); None stays None."""
    if values is None:
        return None
    v = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float32)
    v = v.reshape(n, -1) if v.size == n * value_dim else v
    if v.shape != (n, value_dim):
        raise ValueError(f"values must have shape ({n}, {value_dim}), got {v.shape}")
    return v


def check_slots(slots: Any, size: int) -> np.ndarray:
    """Slot ids as int64, each a filled slot (``0 <= slot < size``)."""
    s = np.asarray(slots.cpu() if isinstance(slots, torch.Tensor) else slots, dtype=np.int64).reshape(-1)
    if s.size and (s.min() < 0 or s.max() >= size):
        raise IndexError(f"slot ids must be in [0, {size}); got min {s.min()}, max {s.max()}")
    return s


def unit_queries(queries: Any, key_dim: int) -> np.ndarray | torch.Tensor:
    """The queries as unit float32 rows: a numpy array, or a tensor when they live on a GPU.

    numpy queries are normalised exactly like stored keys (:func:`unit_rows`), in a handful of numpy
    calls: at M = 10,000 a single query's whole search is a few of them, and one torch call costs as
    much as the matrix product. Tensors keep torch's normalisation (``F.normalize``, bit for bit), so
    what the model retrieves during training does not depend on this speed path.
    """
    if isinstance(queries, torch.Tensor):
        q = queries.detach().float()
    else:
        q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != key_dim:
        raise ValueError(f"queries must have shape (q, {key_dim}), got {tuple(q.shape)}")
    if isinstance(q, np.ndarray):
        return unit_rows(q)
    if q.device.type != "cpu":
        return torch.nn.functional.normalize(q, dim=1, eps=1e-12)
    # F.normalize on the CPU = torch's norm, clamped, then an IEEE division: the same bits, fewer calls
    norm = torch.linalg.vector_norm(q, dim=1, keepdim=True).numpy()
    return q.numpy() / np.maximum(norm, np.float32(1e-12))
