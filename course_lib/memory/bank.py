"""The external memory bank of lesson 02: a ring buffer of unit keys, values and metadata, searched by
cosine similarity with a causal ``as_of`` filter.

Why it looks like this (the usual bugs of a homemade kNN memory, fixed):

* ``add`` writes a batch into preallocated arrays with one vectorised assignment: amortised O(batch), no
  index rebuild and no Python loop per row.
* ``search`` always returns exactly ``k`` columns plus a validity ``mask``; a small memory gives masked
  slots, never a silently narrower array.
* ``as_of`` (one time per query) hides every entry whose label was not yet known (``available_at >
  as_of``) *before* the top-k, so a query never sees itself, a later window or an unresolved label.
* ``save``/``load`` keep every metadata field, in a versioned, atomic, pickle-free file.

What is where (this file follows the lesson; the rest of ``course_lib/memory/`` is what it calls):

=====================  ========================================================================
this file              the ring buffer and ``add`` (lesson 02, section 2), ``search`` and its time filter
                       (3-4), the choice of kernel (5), eviction (6), ``save``/``load`` (8)
``time_filter.py``     ``as_of``, ``NO_TIME_FILTER``, the entry times ``add`` accepts
``backends.py``        the exact kernels (numpy, torch, faiss) and the :class:`CausalFilter`
``eviction.py``        which entries a full memory forgets (FIFO, LRU, causal importance)
``inputs.py``          shape checks and unit-length rows; ``metadata.py``: the per-entry fields
``results.py``         :class:`SearchResult`
``approximate.py``     IVF / HNSW indexes for big memories (``backend="ivf"`` / ``"hnsw"``)
``access.py``          access statistics (LRU, tiering); ``threads.py``: the search's thread count
``persistence.py``     the versioned npz file behind ``save``/``load``
``tiers.py``           hot/warm tiers (section 7); ``milvus.py``: the same interface on a Milvus server
=====================  ========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import backends as B
from .access import AccessLog
from .approximate import ANN_MIN_ENTRIES, ann_search, approximate_index
from .config import MemoryConfig
from .eviction import (
    VictimQueue,
    causal_importance_order,
    fifo_victims,
    lru_order,
    sample_by_priority,
    victim_block,
)
from .inputs import as_numpy_rows, check_slots, to_numpy, unit_keys, unit_queries, value_rows
from .metadata import entry_columns, fill_value, write_column
from .persistence import FORMAT, FORMAT_VERSION, device_available, load_bank, save_bank  # noqa: F401 - FORMAT*: old home
from .results import SearchResult, gather
from .threads import search_threads
from .time_filter import NAT, entry_times, query_times, refuse_outcomes_without_time, to_ns

__all__ = ["ExternalMemoryBank", "SearchResult", "to_ns"]


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

    # ------------------------------------------------------------------ the ring buffer
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
        self._insert_seq = np.zeros(cap, dtype=np.int64)  # write order: breaks ties between equal victims
        self._access = AccessLog(cap)  # when each slot was last returned by a search, and how often
        self._size = 0
        self._write_pos = 0
        self._seq = 0
        self._rng = np.random.default_rng(cfg.seed)
        self._victims = VictimQueue()  # lru/importance: next eviction victims, chosen in blocks
        self._max_avail: int | None = None  # an upper bound of available_at (None: recompute at next search)
        self._time_ordered = True  # available_at is non-decreasing in slot order (see _note_time_order)
        self._kernels = _Kernels(cfg, self._keys)  # section 5: who computes the top-k (see below the class)
        for name, dtype in (("timestamp", np.int64), ("available_at", np.int64), ("importance", np.float32)):
            self._meta[name] = np.full(cap, fill_value(np.dtype(dtype)), dtype=dtype)

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
        return arr.copy() if slots is None else arr[check_slots(slots, self._size)]

    @property
    def access_count(self) -> np.ndarray:
        """How often each filled slot was returned by a search (drives LRU and tiering)."""
        return self._access.count[: self._size].copy()

    def to_frame(self, slots: np.ndarray | None = None) -> pd.DataFrame:
        """Metadata of ``slots`` (default all) as a table, times as dates; handy in notebooks."""
        slots = np.arange(self._size) if slots is None else check_slots(slots, self._size)
        out: dict[str, Any] = {"slot": slots}
        for name in self.metadata_names:
            col = self._meta[name][slots]
            if name in ("timestamp", "available_at"):
                col = pd.to_datetime(col)
            out[name] = list(col) if col.ndim > 1 else col
        return pd.DataFrame(out)

    # ------------------------------------------------------------------ filling the memory (section 2)
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
        k = unit_keys(keys, self.config.key_dim)
        n = len(k)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if available_at is None:
            refuse_outcomes_without_time(self.KNOWN_AT_TIMESTAMP, values=values, future_return=future_return,
                                         regime=regime, importance=importance, **extra)
        ts, av = entry_times(timestamp, available_at, n)
        cols = entry_columns(n, ts, av, future_return, symbol, regime, importance, extra)
        vals = value_rows(values, n, self.config.value_dim)

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
            write_column(self._meta, name, slots, arr, n, self.capacity)
        for name in self._meta.keys() - cols.keys():
            self._meta[name][slots] = fill_value(self._meta[name].dtype)
        self._insert_seq[slots] = self._seq + np.arange(n)
        self._seq += n
        self._access.written(slots)
        self._touch(slots)
        return slots

    def update_keys(self, slots: Any, new_keys: Any) -> None:
        """Overwrite the keys of ``slots`` in place (e.g. re-encoding the memory after an epoch)."""
        slots = check_slots(slots, self._size)
        k = unit_keys(new_keys, self.config.key_dim)
        if len(k) != len(slots):
            raise ValueError(f"{len(slots)} slots but {len(k)} keys")
        self._keys[slots] = k
        self._touch(slots)

    def update_values(self, slots: Any, new_values: Any) -> None:
        slots = check_slots(slots, self._size)
        v = value_rows(new_values, len(slots), self.config.value_dim)
        if v is None:
            raise ValueError("new_values is None")
        self._values[slots] = v

    # ------------------------------------------------------------------ searching, causally (sections 3-4)
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
        q = unit_queries(queries, self.config.key_dim)
        times = query_times(as_of, q.shape[0], "ExternalMemoryBank.search")
        n = self._size
        filt = None
        if times is not None and n:
            filt = B.CausalFilter(self._meta["available_at"][:n], times, self._latest_available(),
                                  self._time_ordered)
        with search_threads(self.config.num_threads):
            scores, slots, used = self._kernels.run(q, k, self._size, filt)
        mask = slots >= 0
        every = bool(mask.all())  # the usual case: k eligible entries for every query, nothing to blank
        self._access.searched(slots if every else slots[mask], one_query=q.shape[0] == 1)
        res = gather(self._keys, self._values, self._meta,
                     np.asarray(scores, np.float32) if every else np.where(mask, scores, 0.0).astype(np.float32),
                     slots, mask, every, used)
        if is_torch:
            res.scores, res.indices, res.mask, res.keys, res.values = (
                torch.from_numpy(np.ascontiguousarray(a)).to(queries.device)
                for a in (res.scores, res.indices, res.mask, res.keys, res.values)
            )
        return res

    def _latest_available(self) -> int:
        """An upper bound of ``available_at`` over the filled slots (exact after a recompute): a query batch
        whose earliest ``as_of`` is at or after it sees everything, and skips the filter's O(M) scan."""
        if self._max_avail is None:
            self._max_avail = int(self._meta["available_at"][: self._size].max()) if self._size else NAT
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

    # ------------------------------------------------------------------ kernels and backends (section 5)
    def choose_kernel(self, batch: int, filt: B.CausalFilter | None = None) -> str:
        """The exact kernel ``backend="auto"`` uses for a batch of ``batch`` queries (see
        :func:`~course_lib.memory.backends.choose_exact_kernel`)."""
        return self._kernels.choose(batch, self._size, filt)

    def _touch(self, slots: np.ndarray) -> None:
        """Keys of ``slots`` changed: update the kernels' copies (a GPU tensor, an approximate index)."""
        self._kernels.keys_changed(slots)

    # ------------------------------------------------------------------ eviction (section 6)
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
            la, seq = self._access.last[:size], self._insert_seq[:size]
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

    def update_importance(self, slots: Any, priority: Any, accumulate: bool = False) -> None:
        """Set (or, with ``accumulate=True``, add to) the priority p_i, e.g. summed attention weights."""
        slots = check_slots(slots, self._size)
        p = np.broadcast_to(np.asarray(as_numpy_rows(priority, "priority"), np.float32), slots.shape)
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
        self._size = self._write_pos = self._seq = 0
        self._victims.clear()
        self._max_avail = None
        self._time_ordered = True
        self._access.reset()
        for name in list(self._meta):
            if name in self._CORE:
                self._meta[name][:] = fill_value(self._meta[name].dtype)
            else:
                del self._meta[name]
        if self._kernels.ann is not None:
            self._kernels.ann.reset()

    # ------------------------------------------------------------------ saving and loading (section 8)
    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole bank (keys, values, every metadata field, counters) to one ``.npz`` file.

        Versioned and atomic: the file appears complete or not at all; a failed save leaves an older file
        at ``path`` untouched. No pickle is involved, so loading it cannot run code.
        """
        return save_bank(self, path)

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
        return load_bank(cls, path, expect_key_dim, expect_value_dim, overrides)


class _Kernels:
    """Computes a bank's top-k with the kernel ``config.backend`` names (lesson 02, section 5): an exact
    numpy, torch or faiss kernel (:mod:`.backends`; ``"auto"`` picks the fastest for the batch), or, once the
    memory is big, an approximate IVF / HNSW index (:mod:`.approximate`). Keeps the copies of the keys those
    need (a tensor on the device, an index) in step with the bank's key array, which it shares."""

    def __init__(self, config: MemoryConfig, keys: np.ndarray):
        self.config = config
        self.keys = keys  # the bank's (capacity, key_dim) array itself, not a copy
        self.device = torch.device(config.device)
        self._dev_keys: torch.Tensor | None = None
        self.ann = approximate_index(config)  # backend="ivf" or "hnsw", else None
        self.gpu_res = None
        if config.backend == "faiss-gpu":  # pragma: no cover - needs faiss-gpu
            import faiss

            self.gpu_res = faiss.StandardGpuResources()

    def choose(self, batch: int, n: int, filt: B.CausalFilter | None) -> str:
        cfg = self.config
        return B.choose_exact_kernel(self.device.type, batch, n, filt, cfg.auto_numpy_max_batch,
                                     cfg.auto_faiss_min_batch)

    def run(self, q: np.ndarray | torch.Tensor, k: int, n: int, filt: B.CausalFilter | None):
        """(scores, slots, kernel name) over the first ``n`` slots."""
        nq = q.shape[0]
        if n == 0:
            return np.zeros((nq, k), np.float32), np.full((nq, k), -1, np.int64), "empty"
        name = self.config.backend
        keys = self.keys[:n]
        cm = self.config.chunk_mb
        if name in ("ivf", "hnsw"):
            if n >= ANN_MIN_ENTRIES:
                return (*ann_search(self.ann, keys, to_numpy(q), k, filt, cm), name)
            name = self.choose(nq, n, filt)
        if name == "auto":
            name = self.choose(nq, n, filt)
        if name == "numpy":
            s, i = B.exact_numpy(keys, to_numpy(q), k, filt, cm)
        elif name == "torch":
            dk = self.device_keys()[:n]
            qt = q if isinstance(q, torch.Tensor) else torch.from_numpy(q)
            s, i = B.exact_torch(dk, qt.to(dk.device), k, filt, cm)
        else:  # faiss / faiss-gpu
            s, i = B.exact_faiss_causal(keys, to_numpy(q), k, filt, self.gpu_res, cm)
        return s, i, name

    def device_keys(self) -> torch.Tensor:
        if self._dev_keys is None:
            if self.device.type == "cpu":
                self._dev_keys = torch.from_numpy(self.keys)  # shares memory: always in sync
            else:
                self._dev_keys = torch.from_numpy(self.keys).to(self.device)
        return self._dev_keys

    def keys_changed(self, slots: np.ndarray) -> None:
        """Propagate changed keys to the device copy and the approximate index (O(len(slots)))."""
        if self._dev_keys is not None and self.device.type != "cpu":
            idx = torch.from_numpy(slots).to(self.device)
            self._dev_keys[idx] = torch.from_numpy(self.keys[slots]).to(self.device)
        if self.ann is not None:
            self.ann.mark(slots)
