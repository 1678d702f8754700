"""What a memory search returns: :class:`SearchResult`, the same for every bank (in memory or on Milvus)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .metadata import fill_value

__all__ = ["SearchResult", "gather"]


@dataclass
class SearchResult:
    """What :meth:`ExternalMemoryBank.search` returns; every array has ``k`` columns.

    Attributes:
        scores: (q, k) cosine similarities, best first (0 where invalid).
        indices: (q, k) slot ids (-1 where invalid).
        mask: (q, k) True where a real, eligible entry was found.
        keys: (q, k, key_dim) the stored unit keys (zeros where invalid).
        values: (q, k, value_dim) the stored values (zeros where invalid).
        backend: the kernel that answered (useful when ``backend="auto"``).
    Use :meth:`metadata` for per-neighbour fields such as ``"timestamp"`` or ``"future_return"``.
    If the queries were a torch tensor, the arrays above are tensors on the queries' device.
    """

    scores: Any
    indices: Any
    mask: Any
    keys: Any
    values: Any
    backend: str = ""
    _metadata: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def metadata(self, name: str) -> np.ndarray:
        """(q, k) numpy array of one metadata field; NaN / -1 / "" where the slot is invalid."""
        if name not in self._metadata:
            raise KeyError(f"no metadata field {name!r}; available: {sorted(self._metadata)}")
        return self._metadata[name]

    @property
    def metadata_names(self) -> list[str]:
        return sorted(self._metadata)

    def neighbours(self, row: int = 0) -> pd.DataFrame:
        """The valid neighbours of query ``row`` as a table (time columns shown as dates)."""
        mask = np.asarray(self.mask[row].cpu() if isinstance(self.mask, torch.Tensor) else self.mask[row])
        scores = self.scores[row].cpu().numpy() if isinstance(self.scores, torch.Tensor) else self.scores[row]
        idx = self.indices[row].cpu().numpy() if isinstance(self.indices, torch.Tensor) else self.indices[row]
        cols: dict[str, Any] = {"slot": idx[mask], "score": scores[mask]}
        for name in self.metadata_names:
            col = self._metadata[name][row][mask]
            if name in ("timestamp", "available_at"):
                col = pd.to_datetime(col)
            cols[name] = list(col) if col.ndim > 1 else col
        return pd.DataFrame(cols)


def gather(keys: np.ndarray, values: np.ndarray, meta: dict[str, np.ndarray], scores: np.ndarray,
           slots: np.ndarray, mask: np.ndarray, every: bool, used: str) -> SearchResult:
    """The stored keys, values and metadata of the result slots (blank where ``mask`` is False; ``every``:
    the mask is all True, nothing to blank)."""
    safe = slots if every else np.where(mask, slots, 0)
    k = keys[safe]
    v = values[safe]
    fields = {name: arr[safe] for name, arr in meta.items()}
    if not every:
        np.multiply(k, mask[..., None], out=k)
        np.multiply(v, mask[..., None], out=v)
        for g in fields.values():
            g[~mask] = fill_value(g.dtype)
    return SearchResult(scores, slots, mask, k, v, used, fields)
