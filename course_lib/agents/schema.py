"""The agent store's schema: its tables, its version, what a valid item is, and the errors it raises.

One SQLite file holds an :class:`~course_lib.agents.store.AgentMemory`. This module says what is in it:

* ``meta`` (app name, schema version, vector dimension, an epoch that counts bulk deletions);
* ``items`` (one row per observation, signal, decision, outcome... with its text, importance, tier, vector);
* ``decisions`` (direction, confidence, and the P&L with the time it became known);
* ``accesses`` and ``tier_changes`` (every access and every tier move, each with its time);
* ``items_fts`` (the FTS5 text index of the items).

:func:`open_schema` creates the tables in a new file and refuses a file of another app or version;
:func:`begin_immediate` starts a write transaction (retrying while another process writes);
:func:`fix_vector_dim` stores the one vector dimension of a store;
:func:`item_row` checks one item's fields and turns them into the row ``items`` stores;
:func:`batch_vector_dim`, :func:`check_decision` and :func:`pnl_value` check vectors, decisions and outcomes.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import pandas as pd

from .scoring import scalar_time_ns

AGENT_MEMORY_SCHEMA_VERSION = 1
_APP = "course_lib.AgentMemory"
ITEM_KINDS: tuple[str, ...] = ("observation", "signal", "decision", "outcome", "reflection", "lesson")
TIERS: tuple[str, ...] = ("short", "medium", "long")


class AgentMemoryError(ValueError):
    """A store that cannot be used as asked (wrong file, closed store, unknown decision...)."""


class SchemaVersionError(AgentMemoryError):
    """The file is an agent memory of another schema version."""


class InvalidItemError(AgentMemoryError):
    """An item, decision or outcome with a bad field; nothing was written."""


_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        importance REAL NOT NULL,
        symbol TEXT,
        vector BLOB,
        created_at INTEGER NOT NULL,
        tier TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        symbol TEXT,
        regime TEXT,
        direction REAL,
        confidence REAL,
        decided_at INTEGER NOT NULL,
        pnl REAL,
        resolved_at INTEGER,
        outcome_id INTEGER)""",
    "CREATE INDEX decisions_resolved ON decisions(resolved_at)",
    "CREATE TABLE accesses (item_id INTEGER NOT NULL, at INTEGER NOT NULL)",
    "CREATE INDEX accesses_item ON accesses(item_id, at)",
    "CREATE TABLE tier_changes (item_id INTEGER NOT NULL, at INTEGER NOT NULL, tier TEXT NOT NULL)",
    "CREATE INDEX tier_changes_item ON tier_changes(item_id, at)",
    "CREATE VIRTUAL TABLE items_fts USING fts5(text, content='items', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 0')",
)


def open_schema(c: sqlite3.Connection, path: str, busy_timeout_s: float,
                transaction: Callable[[], AbstractContextManager]) -> None:
    """Set the connection up; create the tables in an empty file, refuse a file of another app or version."""
    try:
        c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    except sqlite3.DatabaseError as exc:
        raise AgentMemoryError(
            f"{path} is not an AgentMemory store (SQLite says: {exc}). Pass a new file name, or the "
            "file a previous AgentMemory wrote."
        ) from exc
    if tables and "meta" not in tables:
        raise AgentMemoryError(
            f"{path} is an SQLite database but not an AgentMemory store (tables: {sorted(tables)[:5]}). "
            "Use another file name; nothing was changed."
        )
    if path != ":memory:":
        c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = NORMAL")
    c.execute("PRAGMA foreign_keys = OFF")
    # some builds (Debian's) zero every deleted byte; FAST does so only where it costs no extra writes
    c.execute("PRAGMA secure_delete = FAST")
    if not tables:
        with transaction():
            if not {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE name = 'meta'")}:
                for statement in _SCHEMA:
                    c.execute(statement)
                c.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("app", _APP), ("schema_version", str(AGENT_MEMORY_SCHEMA_VERSION)), ("epoch", "0")],
                )
    meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != _APP:
        raise AgentMemoryError(f"{path} has a meta table but was not written by AgentMemory; refused.")
    version = int(meta.get("schema_version", -1))
    if version != AGENT_MEMORY_SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} is an agent memory of schema version {version}; this course_lib reads version "
            f"{AGENT_MEMORY_SCHEMA_VERSION}. Recreate the store (or use the course_lib that wrote it)."
        )



def begin_immediate(c: sqlite3.Connection) -> None:
    """Start a write transaction, retrying while another process holds the lock past the busy timeout."""
    for attempt in range(50):
        try:
            c.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:  # another writer held the lock past the busy timeout
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.01 * (attempt + 1))


def stored_vector_dim(c: sqlite3.Connection) -> int | None:
    """The store's state-vector dimension (None until the first vector fixes it)."""
    row = c.execute("SELECT value FROM meta WHERE key = 'vector_dim'").fetchone()
    return None if row is None else int(row[0])


def fix_vector_dim(c: sqlite3.Connection, dim: int, transaction: Callable[[], AbstractContextManager]) -> None:
    """Store ``dim`` as the vector dimension if none is stored yet; refuse a ``dim`` that differs from it."""
    current = stored_vector_dim(c)
    if current is None:
        if dim < 1:
            raise InvalidItemError(f"vector_dim must be >= 1, got {dim}.")
        with transaction():
            c.execute("INSERT OR IGNORE INTO meta VALUES ('vector_dim', ?)", (str(dim),))
        current = stored_vector_dim(c)
    if current != dim:
        raise InvalidItemError(
            f"this store holds {current}-dimensional state vectors; got one of length {dim}. Use the same "
            "features for every vector (or another store)."
        )

def item_row(kinds, agent, kind, text, now, importance, vector, symbol, metadata, tier) -> tuple:
    """One item's fields, checked, as the row ``items`` stores (without its id); a bad field raises."""
    if not isinstance(agent, str) or not agent.strip():
        raise InvalidItemError(f"agent must be a non-empty string, got {agent!r}.")
    if kind not in kinds:
        raise InvalidItemError(f"unknown kind {kind!r}; choose one of {list(kinds)}.")
    if not isinstance(text, str):
        raise InvalidItemError(f"text must be a string, got {type(text).__name__}.")
    try:
        imp = float(importance)
    except (TypeError, ValueError) as exc:
        raise InvalidItemError(f"importance must be a number, got {importance!r}.") from exc
    if not math.isfinite(imp) or imp < 0:
        raise InvalidItemError(f"importance must be finite and >= 0, got {importance!r}.")
    if tier not in TIERS:
        raise InvalidItemError(f"unknown tier {tier!r}; choose one of {list(TIERS)}.")
    blob = None
    if vector is not None:
        v = np.asarray(vector, dtype=np.float64).ravel()
        if not np.isfinite(v).all():
            raise InvalidItemError("the state vector contains NaN or inf; fill or drop those features first.")
        blob = v.astype("<f4").tobytes()
    try:
        meta = json.dumps(dict(metadata), default=_json_default, allow_nan=False) if metadata else "{}"
    except (TypeError, ValueError) as exc:
        raise InvalidItemError(f"metadata must be JSON-serialisable (finite numbers, strings): {exc}") from exc
    return (agent, kind, text, imp, symbol, blob, scalar_time_ns(now, "now"), tier, meta)


def batch_vector_dim(rows: list[tuple], dim: int | None) -> int | None:
    """The vector length of a batch of ``item_row`` rows (None without vectors); refuses lengths that differ
    from each other or from the store's ``dim``."""
    lengths = [len(r[5]) // 4 if r[5] is not None else None for r in rows]
    for n, length in enumerate(lengths):
        if length is not None and dim is not None and length != dim:
            raise InvalidItemError(
                f"item {n}: this store holds {dim}-dimensional state vectors; got one of length {length}. Use "
                "the same features for every vector (or another store)."
            )
    found = {x for x in lengths if x is not None}
    if len(found) > 1:
        raise InvalidItemError(f"state vectors of different lengths {sorted(found)} in one batch.")
    return found.pop() if found else None


def check_decision(kind, direction, confidence) -> None:
    """A decision's kind is ``decision`` or ``signal``; direction and confidence finite, confidence in [0, 1]."""
    if kind not in ("decision", "signal"):
        raise InvalidItemError(f"a decision's kind is 'decision' or 'signal', got {kind!r}.")
    for name, value in (("direction", direction), ("confidence", confidence)):
        if value is not None and not math.isfinite(float(value)):
            raise InvalidItemError(f"{name} must be finite, got {value!r}.")
    if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
        raise InvalidItemError(f"confidence is a probability in [0, 1], got {confidence!r}.")


def pnl_value(pnl) -> float:
    """A decision's P&L as a finite float."""
    try:
        value = float(pnl)
    except (TypeError, ValueError) as exc:
        raise InvalidItemError(f"pnl must be a number, got {pnl!r}.") from exc
    if not math.isfinite(value):
        raise InvalidItemError(f"pnl must be finite, got {pnl!r}.")
    return value

def _ts(ns) -> pd.Timestamp | None:
    return None if ns is None or (isinstance(ns, float) and math.isnan(ns)) else pd.Timestamp(int(ns), unit="ns")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (pd.Timestamp,)):
        return o.isoformat()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")
