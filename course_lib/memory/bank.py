"""The external memory bank: a preallocated ring buffer of unit keys, values and metadata, searched by
cosine similarity with a causal ``as_of`` filter.

Why it looks like this (the usual bugs of a homemade kNN memory, fixed):

* ``add`` writes a batch into preallocated arrays with one vectorised assignment: amortised O(batch), no
  index rebuild and no Python loop per row.
* ``search`` always returns exactly ``k`` columns plus a validity ``mask``; a small memory gives masked
  slots, never a silently narrower array.
* ``as_of`` (one time per query) hides every entry whose label was not yet known (``available_at >
  as_of``) *before* the top-k, so a query never sees itself, a later window or an unresolved label.
* ``save``/``load`` keep every metadata field, in a versioned, atomic, pickle-free file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import backends as B
from .config import MemoryConfig
from .eviction import (
    VictimQueue,
    causal_importance_order,
    fifo_victims,
    lru_order,
    sample_by_priority,
    victim_block,
)
from .persistence import FORMAT, FORMAT_VERSION, device_available, read_bank, write_npz
from .results import SearchResult
from .time_filter import query_times, to_ns

__all__ = ["ExternalMemoryBank", "SearchResult", "to_ns"]

_ANN_MIN_ENTRIES = 2048  # below this an approximate index is pointless: search exactly


_NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds
_NEVER = np.iinfo(np.int64).max  # "never available" (WindowSet.available_at_ns() writes this for NaT)


def _ann_overfetch(k: int) -> int:
    """How many forbidden entries an approximate search may step over per call. Small on purpose: HNSW's
    beam (efSearch) must grow with the over-fetch, so a wide one makes every query slow; queries further
    back are grouped by time and searched with an ID selector instead (``backends._FaissANN.search``)."""
    return 4 * k


def _fill_value(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return -1
    if dtype.kind == "U":
        return ""
    if dtype.kind == "b":
        return False
    raise TypeError(f"metadata of dtype {dtype} is not supported (use numbers, bools or strings)")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero); how stored keys and numpy queries are
    normalised."""
    norm = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))  # np.linalg.norm(x, axis=1), without its wrapper
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def _numpy(q: np.ndarray | torch.Tensor) -> np.ndarray:
    return q.cpu().numpy() if isinstance(q, torch.Tensor) else q


def _as_numpy_rows(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ExternalMemoryBank:
    """Cosine kNN memory with FIFO/LRU/importance eviction, causal search and safe persistence.

    >>> bank = ExternalMemoryBank(MemoryConfig(key_dim=4, capacity=100))
    >>> slots = bank.add(np.eye(4), timestamp=[1, 2, 3, 4], available_at=[2, 3, 4, 5])
    >>> res = bank.search(np.eye(4)[:1], k=3, as_of=3)       # entries available at <= 3 only
    >>> res.mask.sum().item()
    2
    """

    _CORE = ("timestamp", "available_at", "importance")
    #: fields :meth:`add` accepts without ``available_at`` (known when the window ends; see ``add``)
    KNOWN_AT_TIMESTAMP = ("keys", "timestamp", "symbol")

    def __new__(cls, config: MemoryConfig | None = None, **overrides: Any):
        """``backend="milvus"`` returns a :class:`~course_lib.memory.milvus.MilvusMemoryBank` (same interface)."""
        if overrides.get("backend", getattr(config, "backend", None)) == "milvus":
            from .milvus import MilvusMemoryBank

            return MilvusMemoryBank(config, **overrides)
        return super().__new__(cls)

    def __init__(self, config: MemoryConfig | None = None, **overrides: Any):
        cfg = config or MemoryConfig(**overrides)
        if config is not None and overrides:
            cfg = MemoryConfig(**{**cfg.to_dict(), **overrides})
        self.config = cfg
        if cfg.backend == "faiss-gpu" and not B.faiss_available(gpu=True):
            raise RuntimeError(
                "backend='faiss-gpu' needs a faiss build with GPU support and a visible GPU. "
                "Use backend='torch' with device='cuda' (same exact results) or install faiss-gpu."
            )
        if not device_available(cfg.device):
            raise RuntimeError(f"device={cfg.device!r} is not available on this machine (torch sees "
                               f"{torch.cuda.device_count()} CUDA device(s)); use device='cpu'.")
        cap, d = cfg.capacity, cfg.key_dim
        self._keys = np.zeros((cap, d), dtype=np.float32)
        self._values = np.zeros((cap, cfg.value_dim), dtype=np.float32)
        self._meta: dict[str, np.ndarray] = {}
        self._insert_seq = np.zeros(cap, dtype=np.int64)
        self._last_access = np.zeros(cap, dtype=np.int64)
        self._access_count = np.zeros(cap, dtype=np.int64)
        self._size = 0
        self._write_pos = 0
        self._seq = 0
        self._clock = 0
        self._rng = np.random.default_rng(cfg.seed)
        self._victims = VictimQueue()  # lru/importance: next eviction victims, chosen in blocks
        self._max_avail: int | None = None  # an upper bound of available_at (None: recompute at next search)
        self._time_ordered = True  # available_at is non-decreasing in slot order (see _note_time_order)
        self._device = torch.device(cfg.device)
        self._dev_keys: torch.Tensor | None = None
        self._ann: B._FaissANN | None = None
        if cfg.backend == "ivf":
            self._ann = B.IVFIndex(d, cap, cfg.ivf_nlist, cfg.ivf_nprobe, cfg.seed)
        elif cfg.backend == "hnsw":
            self._ann = B.HNSWIndex(d, cap, cfg.hnsw_m, cfg.hnsw_ef_construction, cfg.hnsw_ef_search)
        self._gpu_res = None
        if cfg.backend == "faiss-gpu":  # pragma: no cover - needs faiss-gpu
            import faiss

            self._gpu_res = faiss.StandardGpuResources()
        for name, dtype in (("timestamp", np.int64), ("available_at", np.int64), ("importance", np.float32)):
            self._meta[name] = np.full(cap, _fill_value(np.dtype(dtype)), dtype=dtype)

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        c = self.config
        return (f"ExternalMemoryBank(size={self._size}/{c.capacity}, key_dim={c.key_dim}, value_dim={c.value_dim}, "
                f"backend={c.backend!r}, eviction={c.eviction!r})")

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def keys(self) -> np.ndarray:
        """Read-only view of the stored unit keys of the filled slots (slot order)."""
        v = self._keys[: self._size]
        v.flags.writeable = False
        return v

    @property
    def values(self) -> np.ndarray:
        v = self._values[: self._size]
        v.flags.writeable = False
        return v

    @property
    def metadata_names(self) -> list[str]:
        return sorted(self._meta)

    def metadata(self, name: str, slots: np.ndarray | None = None) -> np.ndarray:
        """A copy of one metadata field for ``slots`` (default: every filled slot)."""
        if name not in self._meta:
            raise KeyError(f"no metadata field {name!r}; available: {self.metadata_names}")
        arr = self._meta[name][: self._size]
        return arr.copy() if slots is None else arr[self._check_slots(slots)]

    @property
    def access_count(self) -> np.ndarray:
        """How often each filled slot was returned by a search (drives LRU and tiering)."""
        return self._access_count[: self._size].copy()

    def to_frame(self, slots: np.ndarray | None = None) -> pd.DataFrame:
        """Metadata of ``slots`` (default all) as a table, times as dates; handy in notebooks."""
        slots = np.arange(self._size) if slots is None else self._check_slots(slots)
        out: dict[str, Any] = {"slot": slots}
        for name in self.metadata_names:
            col = self._meta[name][slots]
            if name in ("timestamp", "available_at"):
                col = pd.to_datetime(col)
            out[name] = list(col) if col.ndim > 1 else col
        return pd.DataFrame(out)

    # ------------------------------------------------------------------ writing
    def add(self, keys: Any, values: Any = None, timestamp: Any = None, available_at: Any = None,
            future_return: Any = None, symbol: Any = None, regime: Any = None, importance: Any = None,
            now: Any = None, **extra: Any) -> np.ndarray:
        """Store a batch of entries; returns the slot id of each row.

        Keys are L2-normalised on the way in. ``timestamp`` is the window's end time t and
        ``available_at`` the time its label is known (t+h); both int64 ns or datetimes. An entry is only
        found by queries with ``as_of >= available_at``. A ``NaT`` ``available_at`` (a label beyond the
        data's end, as in ``WindowSet.available_at``) means "never available", exactly like
        ``WindowSet.available_at_ns()``; a ``NaT`` timestamp, or ``available_at`` before ``timestamp``, is
        refused. Without ``available_at`` only fields known at the window's end are accepted
        (:attr:`KNOWN_AT_TIMESTAMP`: the key, ``timestamp`` and ``symbol``; ``available_at`` then defaults
        to ``timestamp``): ``values``, ``future_return``, ``regime``, ``importance`` and free-form fields
        may carry what happened next, so they are refused (that is exactly how look-ahead sneaks in). For
        fields that truly are known at t, say so with ``available_at=timestamp``. ``importance``
        defaults to ``|future_return|`` (first column), else 1. Any other keyword is stored as a
        free-form per-entry field.

        When the bank is full, the eviction policy chooses which old entries are overwritten, deciding with
        what is known at ``now`` (default: the batch's latest ``timestamp``): importance eviction never ranks
        an entry by a priority whose label is still pending at ``now`` (see :mod:`.eviction`). A batch
        longer than the capacity keeps only its last ``capacity`` rows.
        """
        k = self._prep_keys(keys)
        n = len(k)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if available_at is None:
            self._refuse_outcomes_without_time(values=values, future_return=future_return, regime=regime,
                                               importance=importance, **extra)
        ts, av = self._entry_times(timestamp, available_at, n)
        cols: dict[str, np.ndarray | None] = {
            "timestamp": ts,
            "available_at": av,
            "future_return": None if future_return is None else _as_numpy_rows(future_return, "future_return"),
            "symbol": None if symbol is None else np.asarray(symbol, dtype=str),
            "regime": None if regime is None else _as_numpy_rows(regime, "regime"),
        }
        if importance is not None:
            imp = np.asarray(_as_numpy_rows(importance, "importance"), dtype=np.float32)
        elif cols["future_return"] is not None:
            fr = np.asarray(cols["future_return"], dtype=np.float32).reshape(n, -1)[:, 0]
            imp = np.nan_to_num(np.abs(fr), nan=0.0)
        else:
            imp = np.ones(n, np.float32)
        cols["importance"] = np.broadcast_to(imp.reshape(()), (n,)) if imp.size == 1 else imp
        for name, arr in extra.items():
            cols[name] = None if arr is None else _as_numpy_rows(arr, name)
        vals = self._prep_values(values, n)

        start = max(0, n - self.capacity)  # a batch longer than the memory keeps its newest rows
        if start:
            k, vals = k[start:], None if vals is None else vals[start:]
            cols = {c: a[start:] if a is not None and np.ndim(a) > 0 and len(a) == n else a
                    for c, a in cols.items()}
            n = len(k)
        now_ns = int(to_ns(now, 1)[0]) if now is not None else int(ts.max())
        size_before = self._size
        slots = self._allocate(n, now_ns)
        self._note_time_order(size_before, len(slots), cols["available_at"])
        self._note_available(self._meta["available_at"][slots], cols["available_at"])
        self._keys[slots] = k
        if vals is not None:
            self._values[slots] = vals
        elif self.config.value_dim:
            self._values[slots] = 0.0
        for name, arr in cols.items():
            self._write_field(name, slots, arr, n)
        for name in self._meta.keys() - cols.keys():
            self._meta[name][slots] = _fill_value(self._meta[name].dtype)
        self._insert_seq[slots] = self._seq + np.arange(n)
        self._seq += n
        self._clock += 1
        self._last_access[slots] = self._clock
        self._access_count[slots] = 0
        self._touch(slots)
        return slots

    def _refuse_outcomes_without_time(self, **fields_given: Any) -> None:
        """Refuse fields that may hold outcomes when no ``available_at`` says when they are known."""
        given = [name for name, val in fields_given.items() if val is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} given without available_at: pass when each label becomes known "
                "(WindowSet.available_at_ns()), otherwise searches could see unresolved labels "
                "(values, returns, regimes, priorities and free-form fields usually carry what happened next). "
                "If these fields are known at the window's end, pass available_at=timestamp; without "
                f"available_at only {self.KNOWN_AT_TIMESTAMP} are accepted."
            )

    @staticmethod
    def _entry_times(timestamp: Any, available_at: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(timestamp, available_at) as int64 ns; NaT available_at = never available, NaT timestamp refused."""
        ts = to_ns(timestamp, n)
        if ts is not None and (ts == _NAT).any():
            raise ValueError(
                f"timestamp is NaT in {int((ts == _NAT).sum())} of {n} rows: every entry needs the end time of "
                "its window. Drop those rows before adding them."
            )
        av = to_ns(available_at, n)
        if av is None:
            return (ts, ts.copy()) if ts is not None else (np.zeros(n, np.int64), np.zeros(n, np.int64))
        av = np.where(av == _NAT, _NEVER, av)  # unresolved label: never retrievable (WindowSet.available_at_ns)
        if ts is None:
            return np.zeros(n, np.int64), av
        early = av < ts
        if early.any():
            i = int(np.flatnonzero(early)[0])
            raise ValueError(
                f"available_at is before timestamp in {int(early.sum())} of {n} rows (row {i}: available_at "
                f"{pd.Timestamp(av[i])} < timestamp {pd.Timestamp(ts[i])}): a label cannot be known before its "
                "window ends. Pass the time the label becomes known (WindowSet.available_at_ns())."
            )
        return ts, av

    def update_keys(self, slots: Any, new_keys: Any) -> None:
        """Overwrite the keys of ``slots`` in place (e.g. re-encoding the memory after an epoch)."""
        slots = self._check_slots(slots)
        k = self._prep_keys(new_keys)
        if len(k) != len(slots):
            raise ValueError(f"{len(slots)} slots but {len(k)} keys")
        self._keys[slots] = k
        self._touch(slots)

    def update_values(self, slots: Any, new_values: Any) -> None:
        slots = self._check_slots(slots)
        v = self._prep_values(new_values, len(slots))
        if v is None:
            raise ValueError("new_values is None")
        self._values[slots] = v

    def update_importance(self, slots: Any, priority: Any, accumulate: bool = False) -> None:
        """Set (or, with ``accumulate=True``, add to) the priority p_i, e.g. summed attention weights."""
        slots = self._check_slots(slots)
        p = np.broadcast_to(np.asarray(_as_numpy_rows(priority, "priority"), np.float32), slots.shape)
        if accumulate:
            np.add.at(self._meta["importance"], slots, p)
        else:
            self._meta["importance"][slots] = p

    def sample(self, n: int, alpha: float | None = None, replace: bool = True) -> np.ndarray:
        """Slots drawn with probability p_i^alpha / sum p^alpha (prioritised replay over the memory)."""
        if self._size == 0:
            raise ValueError("the memory is empty: add entries before sampling")
        a = self.config.importance_alpha if alpha is None else alpha
        return sample_by_priority(self._meta["importance"][: self._size], n, a, self._rng, replace)

    def reset(self) -> None:
        """Forget every entry (the buffers are kept, so refilling allocates nothing)."""
        self._size = self._write_pos = self._seq = self._clock = 0
        self._victims.clear()
        self._max_avail = None
        self._time_ordered = True
        self._access_count[:] = 0
        self._last_access[:] = 0
        for name in list(self._meta):
            if name in self._CORE:
                self._meta[name][:] = _fill_value(self._meta[name].dtype)
            else:
                del self._meta[name]
        if self._ann is not None:
            self._ann.reset()

    # ------------------------------------------------------------------ searching
    def search(self, queries: Any, k: int = 32, as_of: Any = None) -> SearchResult:
        """The ``k`` most similar stored entries for each query row, causally filtered by ``as_of``.

        Args:
            queries: (q, key_dim) numpy array or torch tensor (normalised here; gradients are not kept).
            k: number of result columns, always returned; ``mask`` marks which are real.
            as_of: required. One time for all queries, or (q,) times: an entry is eligible for query i
                only if ``available_at <= as_of[i]``. ``NO_TIME_FILTER`` searches every entry (an explicit
                look-ahead opt-out); leaving it out raises :class:`MissingTimeError`.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        is_torch = isinstance(queries, torch.Tensor)
        q = self._unit_queries(queries)
        times = query_times(as_of, q.shape[0], "ExternalMemoryBank.search")
        n = self._size
        filt = None
        if times is not None and n:
            filt = B.CausalFilter(self._meta["available_at"][:n], times, self._latest_available(),
                                  self._time_ordered)
        with self._threads():
            scores, slots, used = self._run_kernel(q, k, filt)
        mask = slots >= 0
        every = bool(mask.all())  # the usual case: k eligible entries for every query, nothing to blank
        self._note_access(slots if every else slots[mask], one_query=q.shape[0] == 1)
        res = self._gather(np.asarray(scores, np.float32) if every else np.where(mask, scores, 0.0).astype(np.float32),
                           slots, mask, every, used)
        if is_torch:
            res.scores, res.indices, res.mask, res.keys, res.values = (
                torch.from_numpy(np.ascontiguousarray(a)).to(queries.device)
                for a in (res.scores, res.indices, res.mask, res.keys, res.values)
            )
        return res

    def _unit_queries(self, queries: Any) -> np.ndarray | torch.Tensor:
        """The queries as unit float32 rows: a numpy array, or a tensor when they live on a GPU.

        numpy queries are normalised exactly like stored keys (:func:`_unit_rows`), in a handful of numpy
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
        if q.ndim != 2 or q.shape[1] != self.config.key_dim:
            raise ValueError(f"queries must have shape (q, {self.config.key_dim}), got {tuple(q.shape)}")
        if isinstance(q, np.ndarray):
            return _unit_rows(q)
        if q.device.type != "cpu":
            return torch.nn.functional.normalize(q, dim=1, eps=1e-12)
        # F.normalize on the CPU = torch's norm, clamped, then an IEEE division: the same bits, fewer calls
        norm = torch.linalg.vector_norm(q, dim=1, keepdim=True).numpy()
        return q.numpy() / np.maximum(norm, np.float32(1e-12))

    def _note_access(self, hit: np.ndarray, one_query: bool) -> None:
        """Count a search's results (``hit``: their slots) for LRU eviction and tiering: O(q*k), not O(M)."""
        self._clock += 1
        if not hit.size:
            return
        self._last_access[hit] = self._clock
        if one_query:  # one query's slots are distinct
            self._access_count[hit] += 1
        else:
            np.add.at(self._access_count, hit.reshape(-1), 1)

    def _gather(self, scores: np.ndarray, slots: np.ndarray, mask: np.ndarray, every: bool,
                used: str) -> SearchResult:
        """The stored keys, values and metadata of the result slots (blank where ``mask`` is False)."""
        safe = slots if every else np.where(mask, slots, 0)
        keys = self._keys[safe]
        values = self._values[safe]
        meta = {name: arr[safe] for name, arr in self._meta.items()}
        if not every:
            np.multiply(keys, mask[..., None], out=keys)
            np.multiply(values, mask[..., None], out=values)
            for g in meta.values():
                g[~mask] = _fill_value(g.dtype)
        return SearchResult(scores, slots, mask, keys, values, used, meta)

    def choose_kernel(self, batch: int, filt: B.CausalFilter | None = None) -> str:
        """The exact kernel ``backend="auto"`` uses for a batch of ``batch`` queries (see
        :func:`~course_lib.memory.backends.choose_exact_kernel`)."""
        cfg = self.config
        return B.choose_exact_kernel(self._device.type, batch, self._size, filt, cfg.auto_numpy_max_batch,
                                     cfg.auto_faiss_min_batch)

    def _run_kernel(self, q: np.ndarray | torch.Tensor, k: int, filt: B.CausalFilter | None):
        n = self._size
        nq = q.shape[0]
        if n == 0:
            return np.zeros((nq, k), np.float32), np.full((nq, k), -1, np.int64), "empty"
        name = self.config.backend
        if name in ("ivf", "hnsw"):
            if n < _ANN_MIN_ENTRIES:
                name = self.choose_kernel(nq, filt)
            else:
                return (*self._ann_search(_numpy(q), k, filt), name)
        if name == "auto":
            name = self.choose_kernel(nq, filt)
        keys = self._keys[:n]
        cm = self.config.chunk_mb
        if name == "numpy":
            s, i = B.exact_numpy(keys, _numpy(q), k, filt, cm)
        elif name == "torch":
            dk = self._device_keys()[:n]
            qt = q if isinstance(q, torch.Tensor) else torch.from_numpy(q)
            s, i = B.exact_torch(dk, qt.to(dk.device), k, filt, cm)
        else:  # faiss / faiss-gpu
            s, i = B.exact_faiss_causal(keys, _numpy(q), k, filt, self._gpu_res, cm)
        return s, i, name

    def _ann_search(self, qn: np.ndarray, k: int, filt: B.CausalFilter | None):
        """IVF/HNSW search; queries that may see fewer than ``_ANN_MIN_ENTRIES`` entries (early in time)
        are answered exactly instead: an approximate index restricted to a handful of entries would miss
        most of them, and an exact pass over so few is cheap."""
        n = self._size
        keys = self._keys[:n]
        if filt is None or filt.trivial:
            return self._ann.search(keys, qn, k, filt, _ann_overfetch(k))
        few_visible = (n - filt.n_ineligible()) < _ANN_MIN_ENTRIES
        if not few_visible.any():
            return self._ann.search(keys, qn, k, filt, _ann_overfetch(k))
        s = np.empty((len(qn), k), np.float32)
        i = np.empty((len(qn), k), np.int64)
        for rows, exact in ((~few_visible, False), (few_visible, True)):
            if not rows.any():
                continue
            sub = filt.subset(rows)
            if exact:
                s[rows], i[rows] = B.exact_numpy(keys, np.ascontiguousarray(qn[rows]), k, sub, self.config.chunk_mb)
            else:
                s[rows], i[rows] = self._ann.search(keys, np.ascontiguousarray(qn[rows]), k, sub, _ann_overfetch(k))
        return s, i

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole bank (keys, values, every metadata field, counters) to one ``.npz`` file.

        Versioned and atomic: the file appears complete or not at all; a failed save leaves an older file
        at ``path`` untouched. No pickle is involved, so loading it cannot run code.
        """
        n = self._size
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "size": n,
            "write_pos": self._write_pos,
            "seq": self._seq,
            "clock": self._clock,
            "fields": sorted(self._meta),
        }
        arrays = {
            "keys": self._keys[:n],
            "values": self._values[:n],
            "insert_seq": self._insert_seq[:n],
            "last_access": self._last_access[:n],
            "access_count": self._access_count[:n],
        }
        arrays.update({f"meta__{name}": arr[:n] for name, arr in self._meta.items()})
        return write_npz(path, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, expect_key_dim: int | None = None,
             expect_value_dim: int | None = None, **overrides: Any) -> ExternalMemoryBank:
        """Read a bank written by :meth:`save`.

        Refuses (``MemoryFileError``) a truncated or corrupted file, another format or a newer version,
        arrays whose shape disagrees with the header, and — if given — a key/value dimension different
        from ``expect_key_dim``/``expect_value_dim`` (e.g. a memory built for another encoder).
        ``overrides`` change run-time settings such as ``backend`` or ``device``. The device is a property
        of the machine, not of the memory: a file saved with ``device="cuda"`` loads on a machine without a
        GPU with the device set to ``"cpu"`` and a ``RuntimeWarning`` (likewise ``backend="faiss-gpu"``
        becomes ``"faiss"``); pass ``device=...`` to choose explicitly.
        """
        state = read_bank(path, FORMAT, FORMAT_VERSION, cls._CORE, expect_key_dim, expect_value_dim, overrides)
        cfg, arrays, n = state.config, state.arrays, state.size
        bank = cls(cfg)
        bank._keys[:n] = arrays["keys"]
        bank._values[:n] = arrays["values"]
        for name in ("insert_seq", "last_access", "access_count"):
            getattr(bank, f"_{name}")[:n] = arrays[name]
        for name in state.fields:
            arr = arrays[f"meta__{name}"]
            bank._meta[name] = np.full((cfg.capacity, *arr.shape[1:]), _fill_value(arr.dtype), dtype=arr.dtype)
            bank._meta[name][:n] = arr
        bank._size, bank._write_pos = n, state.write_pos
        bank._seq, bank._clock = state.seq, state.clock
        avail = bank._meta["available_at"][:n]
        bank._time_ordered = bool((avail[1:] >= avail[:-1]).all())
        bank._touch(np.arange(n))
        return bank

    # ------------------------------------------------------------------ internals
    def _prep_keys(self, keys: Any) -> np.ndarray:
        k = keys.detach().float().cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys, np.float32)
        if k.ndim == 1:
            k = k[None, :]
        if k.ndim != 2 or k.shape[1] != self.config.key_dim:
            raise ValueError(f"keys must have shape (n, {self.config.key_dim}), got {k.shape}")
        if not np.isfinite(k).all():
            raise ValueError("keys contain NaN or inf; check the encoder or the features feeding it")
        return _unit_rows(k)

    def _prep_values(self, values: Any, n: int) -> np.ndarray | None:
        if values is None:
            return None
        v = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float32)
        v = v.reshape(n, -1) if v.size == n * self.config.value_dim else v
        if v.shape != (n, self.config.value_dim):
            raise ValueError(f"values must have shape ({n}, {self.config.value_dim}), got {v.shape}")
        return v

    def _check_slots(self, slots: Any) -> np.ndarray:
        s = np.asarray(slots.cpu() if isinstance(slots, torch.Tensor) else slots, dtype=np.int64).reshape(-1)
        if s.size and (s.min() < 0 or s.max() >= self._size):
            raise IndexError(f"slot ids must be in [0, {self._size}); got min {s.min()}, max {s.max()}")
        return s

    def _allocate(self, n: int, now: int) -> np.ndarray:
        """Slots for ``n`` new rows: free slots first, then victims of the eviction policy (chosen with
        what is known at ``now``, int64 ns)."""
        cap, size = self.capacity, self._size
        fresh = min(n, cap - size)
        new = np.arange(size, size + fresh, dtype=np.int64)
        r = n - fresh
        if r == 0:
            self._size += fresh
            return new
        policy = self.config.eviction
        if policy == "fifo":
            victims = fifo_victims(self._write_pos, cap, r)
            self._write_pos = int((self._write_pos + r) % cap)
        elif policy == "lru":  # blocks of victims: the O(M) choice is shared by many adds (see eviction)
            la, seq = self._last_access[:size], self._insert_seq[:size]
            victims = self._victims.take(r, victim_block(cap, r), lambda c, ex: lru_order(la, seq, c, ex),
                                         lambda s: la[s])
        else:
            cfg, imp = self.config, self._meta["importance"][:size]
            avail, seq = self._meta["available_at"][:size], self._insert_seq[:size]
            victims = self._victims.take(
                r, victim_block(cap, r),
                lambda c, ex: causal_importance_order(imp, avail, seq, now, c, cfg.importance_alpha,
                                                      cfg.importance_sampling, self._rng, ex),
                lambda s: imp[s])
        self._size += fresh
        return np.concatenate([new, victims.astype(np.int64)])

    def _write_field(self, name: str, slots: np.ndarray, arr: np.ndarray | None, n: int) -> None:
        store = self._meta.get(name)
        if arr is None:
            if store is not None:
                store[slots] = _fill_value(store.dtype)
            return
        arr = np.asarray(arr)
        if arr.ndim == 0 or (arr.ndim == 1 and arr.shape[0] == 1 and n != 1):
            arr = np.broadcast_to(arr.reshape(()), (n,))
        if arr.shape[0] != n:
            raise ValueError(f"metadata {name!r} has {arr.shape[0]} rows for {n} keys")
        if arr.dtype.kind == "O":
            raise TypeError(f"metadata {name!r}: object arrays are not supported; use numbers or strings")
        if store is None:
            dtype = arr.dtype
            if dtype.kind == "U":
                dtype = np.dtype(f"<U{max(16, dtype.itemsize // 4)}")
            elif dtype.kind in "iu":
                dtype = np.dtype(np.int64)
            elif dtype.kind == "f":
                dtype = np.dtype(np.float32 if name != "timestamp" else np.float64)
            store = np.full((self.capacity, *arr.shape[1:]), _fill_value(dtype), dtype=dtype)
            self._meta[name] = store
        if store.shape[1:] != arr.shape[1:]:
            raise ValueError(f"metadata {name!r} has per-row shape {arr.shape[1:]}, the memory stores {store.shape[1:]}")
        if store.dtype.kind == "U" and arr.dtype.kind == "U" and arr.dtype.itemsize > store.dtype.itemsize:
            store = self._meta[name] = store.astype(arr.dtype)  # widen once; rare
        store[slots] = arr

    def _latest_available(self) -> int:
        """An upper bound of ``available_at`` over the filled slots (exact after a recompute): a query batch
        whose earliest ``as_of`` is at or after it sees everything, and skips the filter's O(M) scan."""
        if self._max_avail is None:
            self._max_avail = int(self._meta["available_at"][: self._size].max()) if self._size else _NAT
        return self._max_avail

    def _note_time_order(self, size_before: int, n_new: int, written: np.ndarray) -> None:
        """Keep track of whether the slots hold non-decreasing ``available_at``, which is the case while
        entries arrive in time order and nothing is evicted (a walk-forward memory, the training memory).
        Then the entries a query may not see are a tail of the slots, found by binary search
        (:meth:`CausalFilter.visible_prefix`). One overwritten slot or one entry out of order ends it
        until :meth:`reset`."""
        if not self._time_ordered:
            return
        appended = self._size - size_before == n_new  # every row took a fresh slot, in slot order
        after_last = size_before == 0 or written[0] >= self._meta["available_at"][size_before - 1]
        self._time_ordered = bool(appended and after_last and (written[1:] >= written[:-1]).all())

    def _note_available(self, overwritten: np.ndarray, written: np.ndarray) -> None:
        """Keep :meth:`_latest_available` an upper bound across an add: raise it to the new rows' latest;
        forget it when an evicted entry held it (recomputed lazily, O(M) once)."""
        if self._max_avail is None:
            return
        if overwritten.size and int(overwritten.max()) >= self._max_avail:
            self._max_avail = None
        else:
            self._max_avail = max(self._max_avail, int(written.max()))

    def _device_keys(self) -> torch.Tensor:
        if self._dev_keys is None:
            if self._device.type == "cpu":
                self._dev_keys = torch.from_numpy(self._keys)  # shares memory: always in sync
            else:
                self._dev_keys = torch.from_numpy(self._keys).to(self._device)
        return self._dev_keys

    def _touch(self, slots: np.ndarray) -> None:
        """Propagate changed keys to the device copy and the approximate index (O(len(slots)))."""
        if self._dev_keys is not None and self._device.type != "cpu":
            idx = torch.from_numpy(slots).to(self._device)
            self._dev_keys[idx] = torch.from_numpy(self._keys[slots]).to(self._device)
        if self._ann is not None:
            self._ann.mark(slots)

    def _threads(self) -> AbstractContextManager[None]:
        """Run the search with ``config.num_threads`` torch and faiss threads (unset: as they are)."""
        return self._set_threads(self.config.num_threads) if self.config.num_threads else nullcontext()

    @staticmethod
    @contextmanager
    def _set_threads(n: int) -> Iterator[None]:
        import faiss

        old_t, old_f = torch.get_num_threads(), faiss.omp_get_max_threads()
        torch.set_num_threads(n)
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old_t)
            faiss.omp_set_num_threads(old_f)
