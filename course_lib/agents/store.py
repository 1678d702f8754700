"""AgentMemory: a persistent, decaying, outcome-aware memory that several agents share (lesson 08).

Where things are (this file follows the lesson; each part it uses is a module of its own):

* here: :class:`AgentMemoryConfig`, then :class:`AgentMemory` in the lesson's order - 1. items and the
  hybrid search (``add``, ``search``), 2. forgetting (``maintain``, ``cleanup``), 4. outcomes
  (``record_decision``, ``resolve``, ``outcome_stats``), 8. persistence (``close``, transactions); then
  :class:`AgentView`, one agent's handle;
* :mod:`.schema` - the tables, the schema version, item kinds and tiers, what a valid item is, the errors;
* :mod:`.scoring` - decay and the hybrid score (importance + relevance + recency);
* :mod:`.ranking` - the steps of a search: candidate pool, time-correct BM25, components as of ``now``;
* :mod:`.maintenance` - :class:`TierPolicy`, the tier moves of ``maintain`` and what ``cleanup`` removes;
* :mod:`.outcomes` - the decisions and their P&L as known at a time, the outcome table;
* :mod:`.search_mirror` - engineering: the NumPy copy of the columns every search reads.

One SQLite file (the standard library's ``sqlite3``) holds everything: the items, an FTS5 index of their text
(BM25 relevance), their market-state vectors (float32 blobs, one dimension per store), the decisions with
their outcomes, every access and every tier change. Writes run in transactions (WAL journal, a busy timeout
and retries), so a process killed mid-batch loses no committed item and two processes can write at once.

Time is explicit. Every call that depends on time takes ``now`` (simulation time); nothing reads the clock.
A search at ``now`` sees only what was known at ``now``:

* items created at or before ``now`` (an outcome item is created when the outcome became known);
* a decision's P&L only if it was resolved at or before ``now``;
* accesses and tier changes made strictly before ``now`` (a search's own side effects count from the next
  instant, so asking the same question twice at the same time gives the same answer);
* items that :meth:`AgentMemory.maintain` retired strictly before ``now`` are gone; a search at an earlier
  time still sees them (maintenance marks when an item left the memory, it does not erase its past).

So adding, resolving, searching or maintaining *later* never changes what a search at an earlier time returns.
Only :meth:`AgentMemory.cleanup` changes the past, on purpose (it frees the space, retired items included).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .maintenance import TierPolicy, cleanup_plan, delete_items, tier_changes
from .outcomes import decisions_as_of, outcome_table, pending_decision
from .ranking import (
    _empty_result,
    add_relevance,
    bm25_scores,
    candidates,
    components_as_of,
    narrow,
    query_vector,
    result_frame,
    top_k,
)
from .schema import (
    AGENT_MEMORY_SCHEMA_VERSION,
    ITEM_KINDS,
    TIERS,
    AgentMemoryError,
    InvalidItemError,
    SchemaVersionError,
    batch_vector_dim,
    begin_immediate,
    check_decision,
    fix_vector_dim,
    item_row,
    open_schema,
    pnl_value,
    stored_vector_dim,
)
from .scoring import DEFAULT_WEIGHTS, hybrid_arrays, scalar_time_ns
from .search_mirror import _Cache, _gc_paused, tokenize

__all__ = [
    "AGENT_MEMORY_SCHEMA_VERSION",
    "ITEM_KINDS",
    "TIERS",
    "AgentMemory",
    "AgentMemoryConfig",
    "AgentMemoryError",
    "AgentView",
    "InvalidItemError",
    "SchemaVersionError",
    "TierPolicy",
]

@dataclass(frozen=True)
class AgentMemoryConfig:
    """How a store scores and searches (not saved in the file: pass the same config when you reopen).

    Attributes:
        half_lives: decay half-life of each tier (FinMem's public configuration: 3, 90 and 365 days).
        age_from: ``"created"`` (age since the item was written) or ``"accessed"`` (since its last access
            before ``now``: using a memory keeps it fresh).
        weights: default weights of importance, relevance and recency in the hybrid score.
        candidates: how many text matches and how many nearest vectors enter the scoring pool.
        kinds: the item kinds this store accepts.
        busy_timeout_s: how long a writer waits for another process's transaction before retrying.
    """

    half_lives: Mapping[str, Any] = field(
        default_factory=lambda: {"short": "3D", "medium": "90D", "long": "365D"}
    )
    age_from: str = "created"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    candidates: int = 200
    kinds: tuple[str, ...] = ITEM_KINDS
    busy_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.age_from not in ("created", "accessed"):
            raise ValueError(f"age_from must be 'created' or 'accessed', got {self.age_from!r}.")
        if set(self.half_lives) != set(TIERS):
            raise ValueError(f"half_lives needs exactly the tiers {TIERS}, got {sorted(self.half_lives)}.")
        for tier, h in self.half_lives.items():
            if pd.Timedelta(h) <= pd.Timedelta(0):
                raise ValueError(f"half-life of tier {tier!r} must be > 0, got {h!r}.")
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}.")

    def half_life_ns(self, tier: str) -> int:
        return int(pd.Timedelta(self.half_lives[tier]).value)


class AgentMemory:
    """A shared memory of observations, signals, decisions and outcomes, in one SQLite file.

    Example::

        with cl.AgentMemory("diary.sqlite") as mem:
            i = mem.add("momentum", "observation", "gap down after earnings", now="2024-03-01",
                        importance=0.8, vector=state)
            mem.search("earnings gap", vector=state, now="2024-03-05", k=5)   # one row per item, every component

    Args:
        path: the store's file (created if missing) or ``":memory:"`` for a throwaway store.
        config: scoring and search settings (:class:`AgentMemoryConfig`).
        vector_dim: fix the state-vector dimension up front (otherwise the first vector fixes it).
    """

    def __init__(self, path: str | Path = ":memory:", config: AgentMemoryConfig | None = None,
                 vector_dim: int | None = None):
        self.path = str(path)
        self.config = config or AgentMemoryConfig()
        self._depth = 0
        self._cache = _Cache()
        self._stale = True
        self._data_version = -1
        if self.path != ":memory:":
            p = Path(self.path)
            if p.is_dir():
                raise AgentMemoryError(f"{self.path} is a folder; give a file name such as memory.sqlite.")
            p.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=self.config.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            open_schema(self._conn, self.path, self.config.busy_timeout_s, self._tx)
            if vector_dim is not None:
                self._fix_dim(int(vector_dim))
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # --- 1. items and the hybrid search (add, search) ------------------------------------------------------------
    def add(self, agent: str, kind: str, text: str, *, now, importance: float = 1.0, vector=None,
            symbol: str | None = None, metadata: Mapping[str, Any] | None = None, tier: str = "short") -> int:
        """Store one item created at ``now``; returns its id. A bad field raises and stores nothing."""
        return self.add_many([dict(agent=agent, kind=kind, text=text, now=now, importance=importance,
                                   vector=vector, symbol=symbol, metadata=metadata, tier=tier)])[0]

    def add_many(self, items: Iterable[Mapping[str, Any]]) -> list[int]:
        """Store many items (dicts with :meth:`add`'s arguments) in one transaction: all or none."""
        rows = []
        for n, item in enumerate(items):
            extra = set(item) - {"agent", "kind", "text", "now", "importance", "vector", "symbol", "metadata", "tier"}
            if extra:
                raise InvalidItemError(f"item {n}: unknown field(s) {sorted(extra)}.")
            try:
                rows.append(item_row(self.config.kinds, item.get("agent"), item.get("kind"), item.get("text", ""),
                                     item.get("now"), item.get("importance", 1.0), item.get("vector"),
                                     item.get("symbol"), item.get("metadata"), item.get("tier", "short")))
            except ValueError as exc:
                raise InvalidItemError(f"item {n}: {exc}") from exc
        if not rows:
            return []
        with self._tx():
            self._check_dims(rows)
            # ids are handed out under the write lock (BEGIN IMMEDIATE), so one executemany can insert them all
            row = self._c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            first = (row[0] if row else 0) + 1
            ids = list(range(first, first + len(rows)))
            self._c.executemany("INSERT INTO items (id, agent, kind, text, importance, symbol, vector, created_at, "
                                "tier, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [(i, *r) for i, r in zip(ids, rows)])
            # the text index is filled here, not by a trigger: FTS5 buffers one statement's rows (5x faster)
            self._c.executemany("INSERT INTO items_fts (rowid, text) VALUES (?, ?)",
                                [(i, r[2]) for i, r in zip(ids, rows)])
        return ids

    def search(self, text: str | None = None, *, vector=None, now, k: int = 10, agents=None, kinds=None,
               weights: Mapping[str, float] | None = None, touch: bool = True) -> pd.DataFrame:
        """The ``k`` best items for a query at ``now``: one row per item with every score component.

        Candidates, among the items visible at ``now`` (and of the chosen ``agents`` / ``kinds``): the best
        ``config.candidates`` BM25 matches of ``text`` (:meth:`bm25`, word statistics as of ``now``) and the
        ``config.candidates`` nearest state vectors to ``vector`` (cosine); without text or vector, every
        visible item. Relevance is the mean of the min-max normalised BM25 and cosine; each
        component is min-max normalised over the candidates and
        ``score = w_imp * importance_n + w_rel * relevance_n + w_rec * recency_n``. Ties go to the newer item.
        ``touch=True`` records an access of each returned item at ``now`` (it reinforces them for later
        searches, never for this one).
        """
        now_ns = scalar_time_ns(now, "now")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        q = query_vector(vector, self.vector_dim) if vector is not None else None
        cache = self._refresh()
        mask = self._visible(cache, now_ns, agents, kinds)
        text_pos, text_score = bm25_scores(cache, text, self._live(cache, now_ns), mask)
        query = text if tokenize(text) else None
        pos, bm25, has_vectors = candidates(cache, mask, text_pos, text_score, query, q, self.config.candidates)
        if len(pos) == 0:
            return _empty_result()
        cols = components_as_of(self._c, self.config, cache, pos, now_ns)
        relevance = add_relevance(cols, cache, pos, bm25, q, has_vectors)
        scored = hybrid_arrays(cols["importance"], relevance, cols["recency"],
                               {**self.config.weights, **(weights or {})})
        out = result_frame(self._c, top_k(cols, scored, k), now_ns)
        if touch and len(out):
            with self._tx():
                self._c.executemany("INSERT INTO accesses VALUES (?, ?)", [(int(i), now_ns) for i in out["id"]])
        return out

    def bm25(self, text: str | None, *, now, agents=None, kinds=None) -> pd.Series:
        """BM25 of every item visible at ``now`` that shares a word with ``text`` (index: item id).

        FTS5's own ``bm25()`` would use the word statistics of the whole file, including items written after
        ``now``: a later item would change an earlier search (look-ahead). Here the same formula (FTS5's
        constants k1 = 1.2, b = 0.75) uses the items visible at ``now`` only; with every item visible it
        equals FTS5's value.
        """
        cache = self._refresh()
        mask = self._visible(cache, scalar_time_ns(now, "now"), agents, kinds)
        pos, score = bm25_scores(cache, text, self._live(cache, scalar_time_ns(now, "now")), mask)
        return pd.Series(score, index=pd.Index(cache.ids[pos], name="id"), name="bm25")

    def items(self, *, now=None) -> pd.DataFrame:
        """Every stored item (created by ``now`` if given), with its tier, accesses and strength as of ``now``."""
        cache = self._refresh()
        now_ns = scalar_time_ns(now, "now") if now is not None else int(np.iinfo(np.int64).max)
        pos = np.flatnonzero(self._live(cache, now_ns))
        if len(pos) == 0:
            return pd.DataFrame(columns=["id", "agent", "kind", "text", "created_at", "tier", "importance"])
        frame = self._components(cache, pos, now_ns) if now is not None else None
        rows = self._c.execute("SELECT id, agent, kind, text, symbol, created_at, tier, importance FROM items "
                               "WHERE created_at <= ? AND id NOT IN (SELECT item_id FROM tier_changes "
                               "WHERE tier = 'deleted' AND at < ?) ORDER BY id", (now_ns, now_ns)).fetchall()
        out = pd.DataFrame(rows, columns=["id", "agent", "kind", "text", "symbol", "created_at", "tier", "importance"])
        out["created_at"] = pd.to_datetime(out["created_at"], unit="ns")
        if frame is not None:
            f = frame.set_index("id").loc[out["id"]]
            out["tier"] = f["tier"].to_numpy()
            out["access_count"] = f["access_count"].to_numpy()
            out["recency"] = f["recency"].to_numpy()
            out["strength"] = out["importance"] * out["recency"]
        return out

    # --- 2. forgetting on purpose: tiers (maintain) and cleanup --------------------------------------------------
    def maintain(self, *, now, policy: TierPolicy | None = None) -> pd.DataFrame:
        """Move items between tiers at ``now`` (see :class:`TierPolicy`); returns one row per change.

        Every change is stored as a tier change at ``now``: promotions and demotions affect searches after
        ``now``, and a deleted item leaves the memory after ``now`` (searches, :meth:`items`, :meth:`decisions`
        and ``len`` stop seeing it) while a search at or before ``now`` still finds it: maintenance never
        rewrites history. :meth:`cleanup` frees the space of retired items.
        """
        pol = policy or TierPolicy()
        now_ns = scalar_time_ns(now, "now")
        frame, pending = self._strength(now_ns)
        out = tier_changes(frame, pending, pol)
        if len(out):
            with self._tx():
                self._c.executemany("INSERT INTO tier_changes VALUES (?, ?, ?)",
                                    [(int(i), now_ns, t) for i, t in zip(out["id"], out["to_tier"])])
        return out

    def cleanup(self, *, now, min_strength: float | None = 0.01, keep_last: int | None = None) -> pd.DataFrame:
        """Forget: remove items whose strength (importance x recency at ``now``) is below ``min_strength``,
        and, with ``keep_last``, all but the newest ``keep_last`` items of each kind. Pending decisions stay.

        Items that :meth:`maintain` retired before ``now`` are removed too (reason ``"retired by maintain"``,
        tier ``"retired"``): they had already left the memory, and only their history goes.

        Returns the removed items (id, agent, kind, text, tier, strength, reason). Unlike every other call,
        this one changes the past on purpose: a removed item is gone for searches at any time.
        """
        if keep_last is not None and keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}.")
        now_ns = scalar_time_ns(now, "now")
        frame, pending = self._strength(now_ns)
        removed = cleanup_plan(self._c, frame, pending, now_ns, min_strength, keep_last)
        removed = removed.sort_values("id")  # ascending ids: the order _delete returns texts
        texts = self._delete(removed["id"].tolist()) if len(removed) else []
        removed.insert(3, "text", texts)
        return removed.reset_index(drop=True)

    def _strength(self, now_ns: int) -> tuple[pd.DataFrame, set[int]]:
        cache = self._refresh()
        pos = np.flatnonzero(self._live(cache, now_ns))
        frame = self._components(cache, pos, now_ns)
        frame["kind"] = np.array(list(cache.codes["kind"]), dtype=object)[cache.kind[pos]] if len(pos) else []
        frame["agent"] = np.array(list(cache.codes["agent"]), dtype=object)[cache.agent[pos]] if len(pos) else []
        frame["strength"] = frame["importance"] * frame["recency"]
        pending = {r[0] for r in self._c.execute(
            "SELECT id FROM decisions WHERE resolved_at IS NULL OR resolved_at > ?", (now_ns,))}
        return frame, pending

    def _delete(self, ids: Sequence[int]) -> list[str]:
        """Remove items (:func:`~.maintenance.delete_items`); returns their texts, in ascending id order."""
        texts, epoch = delete_items(self._c, self._tx, ids)
        if self._cache.epoch == epoch:  # nobody else deleted since the mirror was built: update it, not reload
            self._cache.drop(np.asarray(ids, np.int64))
            self._cache.epoch = epoch + 1
        return texts

    # --- 4. outcomes, causally: decisions, their P&L when known, per-agent views ---------------------------------
    def record_decision(self, agent: str, text: str, *, now, **fields) -> int:
        """Record a pending decision at ``now``; returns its id (resolve it later with :meth:`resolve`).

        Fields: ``direction`` (+1 long, -1 short...), ``confidence`` (stated probability of a win, in [0, 1]),
        ``regime``, ``symbol``, ``importance``, ``vector``, ``kind`` (``"decision"`` or ``"signal"``);
        anything else goes into the metadata.
        """
        kind = fields.pop("kind", "decision")
        direction = fields.pop("direction", None)
        confidence = fields.pop("confidence", None)
        regime = fields.pop("regime", None)
        symbol = fields.pop("symbol", None)
        importance = fields.pop("importance", 1.0)
        vector = fields.pop("vector", None)
        metadata = {**dict(fields.pop("metadata", None) or {}), **fields}
        check_decision(kind, direction, confidence)
        with self._tx():
            did = self.add(agent, kind, text, now=now, importance=importance, vector=vector, symbol=symbol,
                           metadata={**metadata, **({"regime": regime} if regime is not None else {})})
            self._c.execute(
                "INSERT INTO decisions (id, agent, kind, symbol, regime, direction, confidence, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (did, agent, kind, symbol, regime, None if direction is None else float(direction),
                 None if confidence is None else float(confidence), scalar_time_ns(now)),
            )
        return did

    def resolve(self, decision_id: int, pnl: float, *, at, text: str | None = None,
                importance: float | None = None) -> int:
        """Attach the P&L of a decision, known at time ``at``; stores an ``outcome`` item and returns its id.

        A search at a time before ``at`` sees neither the P&L nor the outcome item.
        """
        value = pnl_value(pnl)
        at_ns = scalar_time_ns(at, "at")
        with self._tx():
            agent, symbol, regime, dtext = pending_decision(self._c, decision_id, at_ns)
            verdict = "win" if value > 0 else "loss" if value < 0 else "flat"
            oid = self.add(agent, "outcome", text or f"outcome {verdict} pnl {value:+.4f} of: {dtext}", now=at,
                           importance=1.0 if importance is None else importance, symbol=symbol,
                           metadata={"decision_id": int(decision_id), "pnl": value,
                                     **({"regime": regime} if regime is not None else {})})
            self._c.execute("UPDATE decisions SET pnl = ?, resolved_at = ?, outcome_id = ? WHERE id = ?",
                            (value, at_ns, oid, int(decision_id)))
        return oid

    def decisions(self, *, now, agents=None) -> pd.DataFrame:
        """Decisions made by ``now``; ``pnl``/``resolved_at`` are empty unless the outcome was known by ``now``."""
        now_ns = scalar_time_ns(now, "now")
        return decisions_as_of(self._c, now_ns, agents)

    def outcome_stats(self, *, now, by: Sequence[str] = ("agent", "kind", "regime")) -> pd.DataFrame:
        """Wins, losses, win rate and mean P&L of the decisions resolved by ``now``, grouped by ``by``."""
        bad = set(by) - {"agent", "kind", "regime", "symbol"}
        if bad:
            raise ValueError(f"group by agent, kind, regime or symbol, not {sorted(bad)}.")
        return outcome_table(self.decisions(now=now), by)

    def namespace(self, agent: str) -> AgentView:
        """A view that writes as ``agent`` (its namespace) and reads everyone's items."""
        return AgentView(self, agent)

    # --- 8. persistence: the file, transactions, the vector dimension --------------------------------------------
    def close(self) -> None:
        """Close the file (committed items are safe on disk); further calls raise."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AgentMemory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Items in the memory now: stored and not retired by :meth:`maintain`."""
        return int(self._c.execute("SELECT COUNT(*) FROM items WHERE id NOT IN "
                                   "(SELECT item_id FROM tier_changes WHERE tier = 'deleted')").fetchone()[0])

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{len(self)} items"
        return f"AgentMemory({self.path!r}, {state})"

    @contextmanager
    def batch(self) -> Iterator[AgentMemory]:
        """Group several writes into one transaction: all of them are stored, or (on an error) none."""
        with self._tx():
            yield self

    @contextmanager
    def _tx(self) -> Iterator[None]:
        c = self._c
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        begin_immediate(c)
        self._depth = 1
        try:
            yield
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")
        finally:
            self._depth = 0
            self._stale = True

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AgentMemoryError("the store is closed; open it again with AgentMemory(path).")
        return self._conn

    @property
    def vector_dim(self) -> int | None:
        """The store's state-vector dimension (None until the first vector or ``vector_dim=``)."""
        return stored_vector_dim(self._c)

    def _fix_dim(self, dim: int) -> None:
        fix_vector_dim(self._c, dim, self._tx)

    def _check_dims(self, rows: list[tuple]) -> None:
        dim = self.vector_dim
        found = batch_vector_dim(rows, dim)
        if found is not None and dim is None:
            self._fix_dim(found)

    # --- what a search at ``now`` sees: the mirror, live and visible items ---------------------------------------
    def _refresh(self) -> _Cache:
        c = self._c
        version = c.execute("PRAGMA data_version").fetchone()[0]
        if not self._stale and version == self._data_version:
            return self._cache
        epoch = int(c.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        cache = self._cache
        if epoch != cache.epoch:
            cache = self._cache = _Cache()
            cache.epoch = epoch
        with _gc_paused():  # 100,000 rows of tuples would wake the cyclic collector dozens of times, for nothing
            rows = c.execute("SELECT id, agent, kind, importance, created_at, tier, vector, text FROM items "
                             "WHERE id > ? ORDER BY id", (cache.max_id,)).fetchall()
            if rows:
                cache.append(rows, self.vector_dim)
        self._stale = False
        self._data_version = version
        return cache

    def _live(self, cache: _Cache, now_ns: int) -> np.ndarray:
        """Cached rows in the memory at ``now``: created by then and not retired before it."""
        mask = cache.created <= now_ns
        retired = self._retired(now_ns)
        if len(retired):
            mask &= ~np.isin(cache.ids, retired)
        return mask

    def _retired(self, now_ns: int) -> np.ndarray:
        """Ids that :meth:`maintain` retired strictly before ``now``."""
        rows = self._c.execute("SELECT item_id FROM tier_changes WHERE tier = 'deleted' AND at < ?", (now_ns,))
        return np.fromiter((r[0] for r in rows), np.int64)

    def _visible(self, cache: _Cache, now_ns: int, agents, kinds) -> np.ndarray:
        return narrow(self._live(cache, now_ns), cache, agents, kinds, self.config.kinds)

    def _components(self, cache: _Cache, pos: np.ndarray, now_ns: int) -> pd.DataFrame:
        return pd.DataFrame(components_as_of(self._c, self.config, cache, pos, now_ns))


class AgentView:
    """One agent's handle on a shared :class:`AgentMemory`: writes carry its name, searches see all agents
    unless ``agents=`` narrows them (``mine=True`` for its own items only)."""

    def __init__(self, store: AgentMemory, agent: str):
        if not isinstance(agent, str) or not agent.strip():
            raise InvalidItemError(f"agent must be a non-empty string, got {agent!r}.")
        self.store, self.agent = store, agent

    def __repr__(self) -> str:
        return f"AgentView({self.agent!r} on {self.store!r})"

    def add(self, kind: str, text: str, **kw) -> int:
        return self.store.add(self.agent, kind, text, **kw)

    def record_decision(self, text: str, **kw) -> int:
        return self.store.record_decision(self.agent, text, **kw)

    def search(self, text: str | None = None, *, mine: bool = False, **kw) -> pd.DataFrame:
        if mine:
            kw["agents"] = [self.agent]
        return self.store.search(text, **kw)
