"""The causal memory on Milvus: the same interface as :class:`~course_lib.ExternalMemoryBank`, kept in a
Milvus collection (optional extra ``scale``: ``pip install "course-lib[scale]"``).

Why a vector database? A universe of instruments or intraday bars gives hundreds of millions of windows:
more than one machine's RAM, and a flat in-memory index. Milvus stores them on disk, builds the index in the
background and serves many readers. The code is the same whichever Milvus answers:

* ``MemoryConfig(backend="milvus", uri="memory.db")``: Milvus Lite, the embedded engine, in this process
  (a file; nothing to install or run beyond the extra);
* ``uri="http://localhost:19530"``: a Milvus server (``docker run ... milvusdb/milvus``);
* ``uri="https://<cluster endpoint>"`` with ``MILVUS_TOKEN`` set: a Milvus cluster or Zilliz Cloud.

The causal rule is the engine's filter expression, ``available_at <= as_of``, evaluated *inside* the
approximate search: Milvus restricts the candidates before ranking them, so a query still gets ``k``
eligible neighbours when most stored entries are not yet available (a post-filter over the top k would
return fewer, or none). Queries with mixed times are grouped into a few time windows: one engine call per window.

On a server the bank reads with *session* consistency by default: every read waits for this process's own
writes and no longer, which is all a bank that is the only writer of its collection needs (``"Strong"``
makes every read wait for the server's next time tick, about 200 ms per call on Milvus 2.3). Pass
``consistency_level="Strong"`` when several processes write one collection and each must see the others'
latest entries. A search asks the engine only for what ranking needs (slot, score, ``available_at``) and then
fetches the chosen entries in one ``get``. Any query left with fewer than ``min(k, entries visible at its
time)`` neighbours (an approximate index can come back short under a restrictive filter) is answered again
by an exact pass over its eligible entries, whatever the engine: a search never returns fewer neighbours than
the exact bank would. ``nprobe`` (IVF_FLAT) and ``ef`` (HNSW) trade recall for speed: set them in the config
(``ivf_nprobe``, ``hnsw_ef_search``) or per call (``search(..., nprobe=64)``).

What differs from the in-memory bank: eviction is FIFO only (a full memory overwrites its oldest slot by
an upsert; LRU or importance would need a read-modify-write of every entry per search, which a shared
database should not do), there is no per-entry access count, and each call is a round trip to the engine
(milliseconds on Milvus Lite), so batch your adds and searches. ``save`` writes the standard bank file,
which :meth:`ExternalMemoryBank.load` reads back as an in-memory bank, and :meth:`MilvusMemoryBank.load`
restores into a collection.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import MemoryConfig
from .metadata import metadata_rows
from .persistence import FORMAT, FORMAT_VERSION, MemoryFileError, read_npz, write_npz
from .results import SearchResult
from .time_filter import query_times, to_ns

__all__ = ["MilvusMemoryBank", "require_pymilvus"]

_EXTRA = 'pip install "course-lib[scale]"'
_NAT = np.iinfo(np.int64).min
_NEVER = np.iinfo(np.int64).max
_DESC = "course_lib.MilvusMemoryBank"
_PAGE = 4096  # rows per page when reading a whole collection back
_MAX_CALLS = 8  # engine calls per search with mixed times (see MilvusMemoryBank._groups)
_OVERFETCH = 4  # hits per query asked of a group, in units of k
_MAX_LIMIT = 16384  # the most hits Milvus returns per query
_EXACT_ROWS = 20_000  # eligible entries an exact pass reads without first counting per query time
CONSISTENCY_LEVELS = ("Session", "Strong", "Bounded", "Eventually")


def require_pymilvus():
    """The ``pymilvus`` module, or an ``ImportError`` that names the extra to install."""
    try:
        import pymilvus
    except ImportError as exc:
        raise ImportError(
            f'backend="milvus" needs the optional extra "scale": {_EXTRA} (it brings pymilvus and the '
            'embedded engine milvus-lite). Without it use an in-memory backend ("auto", "ivf", "hnsw").'
        ) from exc
    return pymilvus


def _fill(dtype: np.dtype) -> Any:
    return {"f": np.nan, "i": -1, "u": -1, "U": "", "b": False}[dtype.kind]


def _rows(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)


def _unit(x: Any, dim: int, what: str) -> np.ndarray:
    k = np.asarray(_rows(x), np.float32)
    if k.ndim == 1:
        k = k[None, :]
    if k.ndim != 2 or k.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError(f"{what} contain NaN or inf; check the encoder or the features feeding it")
    return (k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _py(v: Any) -> Any:
    """A numpy scalar/array as a JSON-able Python value (Milvus stores free-form fields as JSON)."""
    if isinstance(v, np.ndarray):
        return [None if isinstance(x, float) and x != x else x for x in v.tolist()]
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and v != v else v  # NaN is not JSON: stored as null, read back as NaN


def _dtype_of(v: Any) -> np.dtype:
    if isinstance(v, bool):
        return np.dtype(bool)
    if isinstance(v, int):
        return np.dtype(np.int64)
    if isinstance(v, float):
        return np.dtype(np.float32)
    if isinstance(v, str):
        return np.dtype("U16")
    return np.dtype(np.float32)  # lists: per-entry vectors of floats


class MilvusMemoryBank:
    """A causal kNN memory in a Milvus collection; ``ExternalMemoryBank(MemoryConfig(backend="milvus",
    uri=...))`` returns one. Opening a ``uri`` (and ``milvus_collection``) that already holds a memory
    reopens it with its entries; a memory of another key or value size is refused.

    >>> bank = MilvusMemoryBank(MemoryConfig(key_dim=4, backend="milvus", uri="memory.db"))  # doctest: +SKIP
    >>> bank.add(np.eye(4), timestamp=[1, 2, 3, 4], available_at=[2, 3, 4, 5])             # doctest: +SKIP
    >>> bank.search(np.eye(4)[:1], k=3, as_of=3).mask.sum()                                 # doctest: +SKIP
    2

    ``consistency_level``: ``"Session"`` (the default: reads see this process's writes; one writer per
    collection) or ``"Strong"`` (reads see every process's writes; several writers, slower on a server).
    ``stats`` counts engine calls, own-time retries and exact passes (``engine_short``: queries the engine
    answered with fewer neighbours than were eligible, completed by the exact pass).
    """

    _CORE = ("timestamp", "available_at", "importance")
    KNOWN_AT_TIMESTAMP = ("keys", "timestamp", "symbol")

    def __init__(self, config: MemoryConfig | None = None, *, consistency_level: str = "Session",
                 **overrides: Any):
        if consistency_level not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency_level={consistency_level!r}: choose one of {CONSISTENCY_LEVELS} "
                             '("Session": this process sees its own writes, enough for a single writer; '
                             '"Strong": every read sees every process\'s writes, for several writers).')
        self.consistency_level = consistency_level
        self.stats = {"searches": 0, "engine_calls": 0, "retries": 0, "exact_passes": 0, "engine_short": 0}
        cfg = config or MemoryConfig(**overrides)
        if config is not None and overrides:
            cfg = MemoryConfig(**{**cfg.to_dict(), **overrides})
        if cfg.backend != "milvus":
            cfg = replace(cfg, backend="milvus")
        if cfg.eviction != "fifo":
            raise ValueError(f"eviction={cfg.eviction!r} is not available on Milvus: ranking entries by use or "
                             "priority would rewrite the collection at every search. Use eviction='fifo', or an "
                             "in-memory backend for lru/importance.")
        self.config = cfg
        self._pm = require_pymilvus()
        self._name = cfg.milvus_collection
        self._state_name = f"{self._name}__state"
        self._client = self._connect(cfg.uri)
        self._seq = 0
        self._clock = 0
        if self._client.has_collection(self._name):
            self._reopen()
        else:
            self._create()

    # ------------------------------------------------------------------ connection and collections
    @staticmethod
    def _connect(uri: str):
        from pymilvus import MilvusClient

        text = str(uri)
        if "://" in text:  # a server or cluster
            return MilvusClient(uri=text, token=os.environ.get("MILVUS_TOKEN", ""))
        if not text.endswith(".db"):
            raise ValueError(f"uri={text!r}: a local Milvus Lite memory is a file whose name ends in '.db' "
                             "(e.g. 'memory.db'); a server is 'http://host:19530'.")
        Path(text).parent.mkdir(parents=True, exist_ok=True)
        return MilvusClient(text)

    def _description(self) -> str:
        c = self.config
        return json.dumps({"format": _DESC, "version": FORMAT_VERSION, "key_dim": c.key_dim,
                           "value_dim": c.value_dim, "capacity": c.capacity})

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self.config
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("slot", DataType.INT64, is_primary=True)
        schema.add_field("key", DataType.FLOAT_VECTOR, dim=c.key_dim)
        schema.add_field("available_at", DataType.INT64)
        schema.add_field("timestamp", DataType.INT64)
        schema.add_field("importance", DataType.FLOAT)
        schema.add_field("insert_seq", DataType.INT64)
        index = self._client.prepare_index_params()
        index.add_index(field_name="key", index_type=c.milvus_index, metric_type="IP", params=self._index_params())
        self._client.create_collection(self._name, schema=schema, consistency_level=self.consistency_level)
        self._client.create_index(self._name, index)
        # one row of bookkeeping (how many entries were ever added): Milvus has no max() to recover it
        state = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        state.add_field("id", DataType.INT64, is_primary=True)
        state.add_field("seq", DataType.INT64)
        state.add_field("info", DataType.VARCHAR, max_length=2048)  # format and sizes, checked on reopen
        state.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires one vector field
        sidx = self._client.prepare_index_params()
        sidx.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        if self._client.has_collection(self._state_name):
            self._client.drop_collection(self._state_name)
        self._client.create_collection(self._state_name, schema=state, consistency_level="Strong")
        self._client.create_index(self._state_name, sidx)
        # a server takes seconds to load a collection: load both at once, then wait for both
        names = (self._name, self._state_name)
        try:
            for name in names:
                self._client.load_collection(name, _async=True)
        except Exception:  # an engine without asynchronous loads: the waits below load them
            pass
        for name in names:
            self._client.load_collection(name)
        self._write_state()

    def _reopen(self) -> None:
        rows = []
        if self._client.has_collection(self._state_name):
            self._client.load_collection(self._state_name)
            # the bookkeeping row is read once, at open: strongly, so another process's last add is counted
            rows = self._client.query(self._state_name, filter="id == 0", output_fields=["seq", "info"],
                                      consistency_level="Strong")
        try:
            saved = json.loads(rows[0]["info"])
            assert saved.get("format") == _DESC
        except (IndexError, KeyError, ValueError, AssertionError, AttributeError) as exc:
            raise MemoryFileError(f"collection {self._name!r} at {self.config.uri} was not written by "
                                  "MilvusMemoryBank; choose another milvus_collection.") from exc
        for what in ("key_dim", "value_dim", "capacity"):
            if saved[what] != getattr(self.config, what):
                raise MemoryFileError(
                    f"collection {self._name!r} at {self.config.uri} holds a memory with {what}={saved[what]}, "
                    f"not {getattr(self.config, what)} (built for another encoder?). Open it with the same sizes, "
                    "or use another milvus_collection.")
        self._client.load_collection(self._name)
        self._seq = int(rows[0]["seq"])

    def _write_state(self) -> None:
        self._client.upsert(self._state_name, [{"id": 0, "seq": int(self._seq), "info": self._description(),
                                                 "unused": [0.0, 0.0]}])

    def _index_params(self) -> dict:
        c = self.config
        if c.milvus_index == "IVF_FLAT":
            return {"nlist": int(c.ivf_nlist or max(1, min(4 * int(np.sqrt(c.capacity)), 65536)))}
        if c.milvus_index == "HNSW":
            return {"M": c.hnsw_m, "efConstruction": c.hnsw_ef_construction}
        return {}

    def _search_params(self, limit: int, nprobe: int | None = None, ef: int | None = None) -> dict:
        """The engine's search parameters: ``nprobe`` cells (IVF_FLAT), beam ``ef`` (HNSW, at least ``limit``)."""
        c = self.config
        params: dict[str, Any] = {}
        if c.milvus_index == "IVF_FLAT":
            params = {"nprobe": int(nprobe or c.ivf_nprobe)}
        elif c.milvus_index == "HNSW":
            params = {"ef": max(int(ef or c.hnsw_ef_search), limit)}
        return {"metric_type": "IP", "params": params}

    def close(self) -> None:
        """Release the connection (the entries stay in the collection; open the same uri to get them)."""
        self._client.close()

    def drop(self) -> None:
        """Delete the collection and everything in it (cannot be undone)."""
        for name in (self._name, self._state_name):
            if self._client.has_collection(name):
                self._client.drop_collection(name)

    def reset(self) -> None:
        """Forget every entry (the collection is dropped and created again, empty)."""
        self.drop()
        self._seq = 0
        self._create()

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return int(min(self._seq, self.config.capacity))

    def __repr__(self) -> str:
        c = self.config
        return (f"MilvusMemoryBank(size={len(self)}/{c.capacity}, key_dim={c.key_dim}, value_dim={c.value_dim}, "
                f"uri={c.uri!r}, collection={self._name!r}, index={c.milvus_index!r})")

    @property
    def capacity(self) -> int:
        return self.config.capacity

    # ------------------------------------------------------------------ writing
    def add(self, keys: Any, values: Any = None, timestamp: Any = None, available_at: Any = None,
            future_return: Any = None, symbol: Any = None, regime: Any = None, importance: Any = None,
            now: Any = None, **extra: Any) -> np.ndarray:
        """Store a batch of entries (same rules as :meth:`ExternalMemoryBank.add`); returns their slots.

        Without ``available_at`` only fields known at the window's end are accepted (the key, ``timestamp``,
        ``symbol``). A full memory overwrites its oldest slots (FIFO). ``now`` is accepted for the same
        signature; FIFO needs no time to choose.
        """
        k = _unit(keys, self.config.key_dim, "keys")
        n = len(k)
        if n == 0:
            return np.zeros(0, np.int64)
        if available_at is None:
            given = [name for name, v in dict(values=values, future_return=future_return, regime=regime,
                                              importance=importance, **extra).items() if v is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} given without available_at: pass when each label becomes known "
                    "(WindowSet.available_at_ns()), otherwise searches could see unresolved labels. If these "
                    f"fields are known at the window's end, pass available_at=timestamp; without available_at "
                    f"only {self.KNOWN_AT_TIMESTAMP} are accepted.")
        ts, av = self._times(timestamp, available_at, n)
        vals = None
        if values is not None:
            vals = np.asarray(_rows(values), np.float32).reshape(n, -1)
            if vals.shape[1] != self.config.value_dim:
                raise ValueError(f"values must have shape ({n}, {self.config.value_dim}), got {vals.shape}")
        cols: dict[str, np.ndarray] = {}
        for name, arr in (("future_return", future_return), ("symbol", symbol), ("regime", regime), *extra.items()):
            if arr is None:
                continue
            cols[name] = metadata_rows(name, _rows(arr), n)
        if importance is not None:
            imp = np.broadcast_to(np.asarray(_rows(importance), np.float32).reshape(-1), (n,))
        elif "future_return" in cols:
            fr = np.asarray(cols["future_return"], np.float32).reshape(n, -1)[:, 0]
            imp = np.nan_to_num(np.abs(fr), nan=0.0)
        else:
            imp = np.ones(n, np.float32)
        start = max(0, n - self.capacity)  # a batch longer than the memory keeps its newest rows
        seq = self._seq + np.arange(start, n, dtype=np.int64)
        slots = seq % self.capacity
        rows = []
        for j, i in enumerate(range(start, n)):
            row = {"slot": int(slots[j]), "key": k[i], "available_at": int(av[i]), "timestamp": int(ts[i]),
                   "importance": float(imp[i]), "insert_seq": int(seq[j])}
            if self.config.value_dim:
                row["value"] = (vals[i] if vals is not None else np.zeros(self.config.value_dim, np.float32)).tolist()
            for name, a in cols.items():
                row[name] = _py(a[i])
            rows.append(row)
        overwrite = self._seq + n > self.capacity  # some slots hold older entries: replace them
        for s in range(0, len(rows), _PAGE):
            (self._client.upsert if overwrite else self._client.insert)(self._name, rows[s:s + _PAGE])
        self._seq += n
        self._clock += 1
        self._write_state()
        return slots

    @staticmethod
    def _times(timestamp: Any, available_at: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        ts = to_ns(timestamp, n)
        if ts is not None and (ts == _NAT).any():
            raise ValueError(f"timestamp is NaT in {int((ts == _NAT).sum())} of {n} rows: every entry needs the end "
                             "time of its window. Drop those rows before adding them.")
        av = to_ns(available_at, n)
        if av is None:
            return (ts, ts.copy()) if ts is not None else (np.zeros(n, np.int64), np.zeros(n, np.int64))
        av = np.where(av == _NAT, _NEVER, av)  # unresolved label: never retrievable
        if ts is None:
            return np.zeros(n, np.int64), av
        if (av < ts).any():
            raise ValueError(f"available_at is before timestamp in {int((av < ts).sum())} of {n} rows: a label "
                             "cannot be known before its window ends. Pass WindowSet.available_at_ns().")
        return ts, av

    # ------------------------------------------------------------------ searching
    def search(self, queries: Any, k: int = 32, as_of: Any = None, *, nprobe: int | None = None,
               ef: int | None = None) -> SearchResult:
        """The ``k`` most similar stored entries per query, causally filtered *inside* the engine's search.

        Same contract as :meth:`ExternalMemoryBank.search`: exactly ``k`` columns and a ``mask``; ``as_of``
        is required (one time, or one per query; ``NO_TIME_FILTER`` opts out, a missing one raises
        :class:`~course_lib.MissingTimeError`). Queries sharing an ``as_of`` go to the engine in one call.
        A query the engine leaves short gets its exact eligible top k from an exact pass. ``nprobe``
        (IVF_FLAT) and ``ef`` (HNSW) override the config's ``ivf_nprobe`` / ``hnsw_ef_search`` for this call.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        is_torch = isinstance(queries, torch.Tensor)
        out_device = queries.device if is_torch else None
        q = _unit(queries, self.config.key_dim, "queries")
        nq = len(q)
        times = query_times(as_of, nq, "MilvusMemoryBank.search")
        scores = np.zeros((nq, k), np.float32)
        slots = np.full((nq, k), -1, np.int64)
        taken = np.zeros(nq, np.int64)
        self.stats["searches"] += 1

        def take(r: int, row_hits, t: int | None) -> None:
            """Keep query r's first k hits with available_at <= t (all hits when t is None)."""
            ids, dist = np.asarray(row_hits.ids, np.int64), np.asarray(row_hits.distances, np.float32)
            if t is not None:  # drop hits inside the group's window but after this query's own time
                keep = np.fromiter((h["entity"]["available_at"] <= t for h in row_hits), bool, len(ids))
                ids, dist = ids[keep], dist[keep]
            j = min(k, len(ids))
            slots[r], scores[r] = -1, 0.0
            slots[r, :j], scores[r, :j] = ids[:j], dist[:j]
            taken[r] = j

        if len(self):
            groups = [(None, np.arange(nq))] if times is None else self._groups(times)
            retry = []
            for t_max, rows in groups:
                mixed = t_max is not None and bool((times[rows] != t_max).any())
                limit = min(_OVERFETCH * k if mixed else k, _MAX_LIMIT)
                hits = self._engine_search(q[rows], limit, t_max, nprobe, ef)
                for r, row_hits in zip(rows, hits):
                    take(r, row_hits, None if t_max is None else int(times[r]))
                    if taken[r] < k and len(row_hits) == limit and mixed:
                        retry.append(r)  # the over-fetch held fewer than k of its eligible entries
            for r in retry:  # ask again at the query's own time
                self.stats["retries"] += 1
                take(r, self._engine_search(q[r:r + 1], min(k, _MAX_LIMIT), int(times[r]), nprobe, ef)[0],
                     int(times[r]))
            short = np.flatnonzero(taken < k)
            if len(short):
                self._exact_pass(q, short, times, k, slots, scores, taken)
        mask = slots >= 0
        keys, values, meta = self._fetch(slots, mask)
        self._clock += 1
        res = SearchResult(scores, slots, mask, keys, values, f"milvus:{self.config.milvus_index}", meta)
        if is_torch:
            res.scores, res.indices, res.mask, res.keys, res.values = (
                torch.from_numpy(np.ascontiguousarray(a)).to(out_device) for a in (scores, slots, mask, keys, values))
        return res

    def _engine_search(self, q: np.ndarray, limit: int, t_max: int | None, nprobe: int | None,
                       ef: int | None) -> list:
        """One engine call: the top ``limit`` per query among entries with ``available_at <= t_max``, lean
        (slot, score and ``available_at`` only: the chosen entries are fetched once, afterwards)."""
        self.stats["engine_calls"] += 1
        return self._client.search(self._name, data=list(q), limit=limit,
                                   filter="" if t_max is None else f"available_at <= {int(t_max)}",
                                   output_fields=["available_at"], search_params=self._search_params(limit, nprobe, ef),
                                   consistency_level=self.consistency_level)

    def _count(self, t: int | None) -> int:
        """How many stored entries a query at time ``t`` may see (all of them when ``t`` is None)."""
        if t is None:
            return len(self)
        rows = self._client.query(self._name, filter=f"available_at <= {int(t)}", output_fields=["count(*)"],
                                  consistency_level=self.consistency_level)
        return int(rows[0]["count(*)"])

    def _exact_pass(self, q: np.ndarray, short: np.ndarray, times: np.ndarray | None, k: int,
                    slots: np.ndarray, scores: np.ndarray, taken: np.ndarray) -> None:
        """Exact top k on the eligible entries for the ``short`` queries that may see more than they got.

        Queries can be short for a good reason (fewer than k entries are visible yet) or because the engine's
        approximate index came back short. One count at the latest short time decides: when few entries are
        eligible, one read of them answers every short query exactly; otherwise each short query's time is
        counted and only those the engine left short are read and answered exactly.
        """
        t_of = (lambda r: None) if times is None else (lambda r: int(times[r]))
        latest = None if times is None else int(times[short].max())
        if self._count(latest) > _EXACT_ROWS:
            counts = {t: self._count(t) for t in {t_of(r) for r in short}}
            short = np.array([r for r in short if taken[r] < min(k, counts[t_of(r)])], np.int64)
            if not len(short):
                return
            latest = None if times is None else int(times[short].max())
        self.stats["exact_passes"] += 1
        ids, av, mat = self._key_table("slot >= 0" if latest is None else f"available_at <= {latest}")
        if not len(ids):
            return
        sims = q[short] @ mat.T
        if times is not None:
            sims[av[None, :] > times[short][:, None]] = -np.inf
        for i, r in enumerate(short):
            ok = np.flatnonzero(np.isfinite(sims[i]))
            order = ok[np.lexsort((ids[ok], -sims[i, ok]))][:k]  # best first, ties by slot
            self.stats["engine_short"] += int(len(order) > taken[r])
            slots[r], scores[r] = -1, 0.0
            slots[r, :len(order)], scores[r, :len(order)] = ids[order], sims[i, order]
            taken[r] = len(order)

    def _fetch(self, slots: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """Keys, values and metadata of the chosen entries: one ``get`` (paged) for the distinct slots."""
        nq, k = slots.shape
        wanted = np.unique(slots[mask])
        by_slot: dict[int, dict] = {}
        for s in range(0, len(wanted), _PAGE):
            for row in self._client.get(self._name, ids=wanted[s:s + _PAGE].tolist(), output_fields=["*"],
                                        consistency_level=self.consistency_level, strict_float32=True):
                by_slot[int(row["slot"])] = row
        rows = [by_slot[int(s)] for s in wanted]
        pos = np.searchsorted(wanted, np.where(mask, slots, wanted[0] if len(wanted) else 0))
        n, kd, vd = len(rows), self.config.key_dim, self.config.value_dim
        ukeys = np.array([r["key"] for r in rows], np.float32).reshape(n, kd)
        uvals = (np.array([r["value"] for r in rows], np.float32).reshape(n, vd) if vd and n
                 else np.zeros((n, vd), np.float32))
        keys = np.where(mask[..., None], ukeys[pos], 0.0).astype(np.float32) if n else np.zeros((nq, k, kd), np.float32)
        values = np.where(mask[..., None], uvals[pos], 0.0).astype(np.float32) if n else np.zeros((nq, k, vd), np.float32)
        meta = {}
        for name, col in self._columns(rows).items():
            out = np.full((nq, k) + col.shape[1:], _fill(col.dtype), dtype=col.dtype)
            if n:
                out[mask] = col[pos[mask]]
            meta[name] = out
        return keys, values, meta

    @staticmethod
    def _groups(times: np.ndarray, max_calls: int | None = None) -> list[tuple[int, np.ndarray]]:
        """Query rows in at most ``max_calls`` groups of neighbouring times (one engine call each).

        Each engine call costs a round trip (about 2 s per call on Milvus Lite at 1e5 entries, measured in
        benchmarks/bench_milvus.py), so a training-like batch with 256 distinct times must not make 256 calls.
        A group is filtered inside the engine at its latest time and over-fetched; each query then keeps only
        its own eligible hits (``available_at <= as_of``); a query whose over-fetch held fewer than ``k`` of
        them asks again alone, and one still short gets the exact pass, so every query gets ``min(k, visible)``.
        """
        max_calls = max_calls or _MAX_CALLS
        uniq, inv = np.unique(times, return_inverse=True)
        order = np.argsort(inv, kind="stable")  # rows by time
        cuts = np.linspace(0, len(uniq), min(max_calls, len(uniq)) + 1).round().astype(int)
        bounds = np.searchsorted(inv[order], cuts)  # first row of each group of distinct times
        return [(int(times[order[bounds[g + 1] - 1]]), order[bounds[g]:bounds[g + 1]])
                for g in range(len(bounds) - 1) if bounds[g + 1] > bounds[g]]

    # ------------------------------------------------------------------ reading back
    def _iterate(self, flt: str, fields: list[str]) -> list[dict]:
        """Every stored row matching ``flt``, in pages of slots (one query of at most 16,384 rows each: a large
        collection never comes back in one message, and plain queries are faster than a query iterator)."""
        rows: list[dict] = []
        for a in range(0, len(self), _MAX_LIMIT):
            rows.extend(self._client.query(self._name, filter=f"({flt}) and slot >= {a} and slot < {a + _MAX_LIMIT}",
                                           output_fields=fields, limit=_MAX_LIMIT, strict_float32=True,
                                           consistency_level=self.consistency_level))
        return rows

    def _key_table(self, flt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slots, ``available_at`` and keys of the rows matching ``flt``, as arrays, in pages of slots.

        The keys of a page are read as one array from the reply when pymilvus exposes it (its rows would
        otherwise be decoded one by one, about 50 us each: seconds for 1e5 entries); checked, and read row
        by row when the reply has another layout.
        """
        dim, parts = self.config.key_dim, []
        for a in range(0, len(self), _MAX_LIMIT):
            res = self._client.query(self._name, filter=f"({flt}) and slot >= {a} and slot < {a + _MAX_LIMIT}",
                                     output_fields=["slot", "available_at", "key"], limit=_MAX_LIMIT,
                                     strict_float32=True, consistency_level=self.consistency_level)
            n, mat = len(res), None
            vec = [f for f in getattr(res, "_lazy_field_data", ()) if getattr(f, "field_name", "") == "key"]
            if len(vec) == 1 and not len(vec[0].valid_data):
                raw = [list.__getitem__(res, i) for i in range(n)]  # scalars only: nothing decoded yet
                data = np.asarray(vec[0].vectors.float_vector.data, np.float32)
                if data.size == n * dim and not any("_original_idx" in r for r in raw):
                    mat = data.reshape(n, dim)
            if mat is None:
                raw = list(res)
                mat = np.array([r["key"] for r in raw], np.float32).reshape(n, dim)
            parts.append((np.array([r["slot"] for r in raw], np.int64).reshape(n),
                          np.array([r["available_at"] for r in raw], np.int64).reshape(n), mat))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return tuple(np.concatenate(x) for x in zip(*parts))

    def _all_rows(self, fields: list[str]) -> list[dict]:
        """Every stored row, slot order."""
        return sorted(self._iterate("slot >= 0", fields), key=lambda r: r["slot"])

    def _columns(self, rows: list[dict]) -> dict[str, np.ndarray]:
        n = len(rows)
        cols: dict[str, np.ndarray] = {
            "timestamp": np.array([r["timestamp"] for r in rows], np.int64).reshape(n),
            "available_at": np.array([r["available_at"] for r in rows], np.int64).reshape(n),
            "importance": np.array([r["importance"] for r in rows], np.float32).reshape(n),
        }
        names = sorted({name for r in rows for name in r} - {"slot", "key", "value", "insert_seq", *cols})
        for name in names:
            first = next((r[name] for r in rows if r.get(name) is not None), None)
            dt = _dtype_of(first)
            if dt.kind == "U":
                dt = np.dtype(f"U{max(16, *(len(r.get(name) or '') for r in rows))}")
            width = len(first) if isinstance(first, list) else 0
            arr = np.full((n, width) if width else (n,), _fill(dt), dtype=dt)
            for i, r in enumerate(rows):
                if r.get(name) is not None:
                    arr[i] = np.array(r[name], dtype=float) if width else r[name]
            cols[name] = arr
        return cols

    @property
    def keys(self) -> np.ndarray:
        """The stored unit keys in slot order (read back from the engine)."""
        rows = self._all_rows(["slot", "key"])
        return np.array([r["key"] for r in rows], np.float32).reshape(len(rows), self.config.key_dim)

    @property
    def values(self) -> np.ndarray:
        if not self.config.value_dim:
            return np.zeros((len(self), 0), np.float32)
        rows = self._all_rows(["slot", "value"])
        return np.array([r["value"] for r in rows], np.float32).reshape(len(rows), self.config.value_dim)

    @property
    def metadata_names(self) -> list[str]:
        return sorted(self._columns(self._all_rows(["*"])))

    def metadata(self, name: str, slots: np.ndarray | None = None) -> np.ndarray:
        """One metadata field for ``slots`` (default: every filled slot)."""
        cols = self._columns(self._all_rows(["*"]))
        if name not in cols:
            raise KeyError(f"no metadata field {name!r}; available: {sorted(cols)}")
        arr = cols[name]
        return arr if slots is None else arr[np.asarray(slots, np.int64)]

    def to_frame(self) -> pd.DataFrame:
        cols = self._columns(self._all_rows(["*"]))
        out: dict[str, Any] = {"slot": np.arange(len(self))}
        for name in sorted(cols):
            col = cols[name]
            out[name] = pd.to_datetime(col) if name in ("timestamp", "available_at") else (
                list(col) if col.ndim > 1 else col)
        return pd.DataFrame(out)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write every entry to the standard bank file (versioned, atomic, pickle-free).

        :meth:`ExternalMemoryBank.load` reads it as an in-memory bank (the config's backend is saved as
        ``"auto"``); :meth:`MilvusMemoryBank.load` restores it into a collection.
        """
        rows = self._all_rows(["*"])
        n = len(rows)
        cols = self._columns(rows)
        keys = np.array([r["key"] for r in rows], np.float32).reshape(n, self.config.key_dim)
        values = (np.array([r["value"] for r in rows], np.float32).reshape(n, self.config.value_dim)
                  if self.config.value_dim else np.zeros((n, 0), np.float32))
        seq = np.array([r["insert_seq"] for r in rows], np.int64).reshape(n)
        cfg = replace(self.config, backend="auto").to_dict()
        header = {"format": FORMAT, "version": FORMAT_VERSION, "config": cfg, "size": n,
                  "write_pos": int(self._seq % self.capacity), "seq": int(self._seq), "clock": int(self._clock),
                  "fields": sorted(cols)}
        arrays = {"keys": keys, "values": values, "insert_seq": seq, "last_access": np.zeros(n, np.int64),
                  "access_count": np.zeros(n, np.int64)}
        arrays.update({f"meta__{name}": arr for name, arr in cols.items()})
        return write_npz(path, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, uri: str, milvus_collection: str | None = None,
             overwrite: bool = False, consistency_level: str = "Session", **overrides: Any) -> MilvusMemoryBank:
        """Restore a bank file (from either bank's ``save``) into the collection at ``uri``.

        Refuses a collection that already holds entries unless ``overwrite=True`` (which replaces them); a
        new or empty collection is filled as it is (no drop and re-create: seconds per collection on a server).
        """
        header, arrays = read_npz(path, FORMAT, FORMAT_VERSION)
        raw = header.get("config")
        if not isinstance(raw, dict):
            raise MemoryFileError(f"{path}: the header has no config: not written by a memory bank's save().")
        known = set(MemoryConfig.__dataclass_fields__)
        saved = {key: val for key, val in raw.items() if key in known}
        saved.update(backend="milvus", uri=uri, eviction="fifo", **overrides)
        if milvus_collection:
            saved["milvus_collection"] = milvus_collection
        bank = cls(MemoryConfig(**saved), consistency_level=consistency_level)
        if bank._seq:
            if not overwrite:
                raise MemoryFileError(f"collection {bank._name!r} at {uri} already holds {len(bank)} entries; pass "
                                      "overwrite=True to replace them, or another milvus_collection.")
            bank.reset()
        n = int(header.get("size", 0))
        order = np.argsort(arrays["insert_seq"], kind="stable") if n else np.zeros(0, np.int64)
        meta = {name[len("meta__"):]: arr for name, arr in arrays.items() if name.startswith("meta__")}
        base = {"timestamp", "available_at", "importance"}
        extra = {name: arr[order] for name, arr in meta.items() if name not in base}
        if n:
            bank.add(arrays["keys"][order], values=arrays["values"][order] if bank.config.value_dim else None,
                     timestamp=meta["timestamp"][order], available_at=meta["available_at"][order],
                     importance=meta["importance"][order], **extra)
        return bank
