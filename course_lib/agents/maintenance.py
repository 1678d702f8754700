"""The agent store's tiers and cleanup: how an item moves between the short, medium and long tiers, and
how the memory forgets (lesson 08).

* :class:`TierPolicy` - when an item is promoted, demoted or retired;
* :func:`tier_changes` - the moves :meth:`~course_lib.agents.store.AgentMemory.maintain` stores at ``now``;
* :func:`cleanup_plan` - the items :meth:`~course_lib.agents.store.AgentMemory.cleanup` removes, and why;
* :func:`delete_items` - the SQL that removes them and everything about them, in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .schema import TIERS


@dataclass(frozen=True)
class TierPolicy:
    """When items move between the short, medium and long tiers (see :meth:`~course_lib.agents.store.AgentMemory.maintain`).

    ``strength`` = importance x recency (the query-independent part of the score). Importance is on the
    scale the agents use (1 = ordinary, as the default of :meth:`~course_lib.agents.store.AgentMemory.add`; Park et al. use 1 to 10).

    * promotion one tier up: ``access_count >= promote_accesses[tier]`` or
      ``importance >= promote_importance[tier]`` (an item that keeps being useful, or was marked important);
    * demotion one tier down: strength below ``demote_below`` in the medium or long tier;
    * deletion: strength below ``delete_below`` in the short tier (pending decisions are never deleted).
    """

    promote_accesses: Mapping[str, int] = field(default_factory=lambda: {"short": 2, "medium": 5})
    promote_importance: Mapping[str, float] = field(default_factory=lambda: {"short": 3.0, "medium": 8.0})
    demote_below: float = 0.05
    delete_below: float = 0.01


def tier_changes(frame: pd.DataFrame, pending: set[int], pol: TierPolicy) -> pd.DataFrame:
    """One row per item that changes tier under ``pol`` (id, agent, kind, from_tier, to_tier, reason, strength).

    ``frame`` holds every item in the memory at ``now`` with its strength; ``pending`` decisions are never
    deleted.
    """
    level = frame["tier"].map({t: i for i, t in enumerate(TIERS)}).to_numpy()
    acc = frame["access_count"].to_numpy()
    imp = frame["importance"].to_numpy()
    strength = frame["strength"].to_numpy()
    need_acc = np.array([pol.promote_accesses.get(t, np.inf) for t in TIERS])[level]
    need_imp = np.array([pol.promote_importance.get(t, np.inf) for t in TIERS])[level]
    by_access = acc >= need_acc
    promote = by_access | (imp >= need_imp)
    demote = ~promote & (level > 0) & (strength < pol.demote_below)
    delete = ~promote & (level == 0) & (strength < pol.delete_below) & ~frame["id"].isin(pending).to_numpy()
    to = np.where(promote, np.minimum(level + 1, len(TIERS) - 1), np.where(demote, level - 1, level))
    why = np.where(promote, np.where(by_access, "accessed often", "important"),
                   np.where(demote, f"strength < {pol.demote_below}", f"strength < {pol.delete_below}"))
    changed = (to != level) | delete
    target = np.where(delete, "deleted", np.asarray(TIERS, dtype=object)[to])
    changes = list(zip(frame["id"].to_numpy()[changed].tolist(), frame["agent"].to_numpy()[changed],
                       frame["kind"].to_numpy()[changed], frame["tier"].to_numpy()[changed],
                       target[changed], why[changed], strength[changed].tolist()))
    out = pd.DataFrame(changes, columns=["id", "agent", "kind", "from_tier", "to_tier", "reason", "strength"])
    return out


def cleanup_plan(c: sqlite3.Connection, frame: pd.DataFrame, pending: set[int], now_ns: int,
                 min_strength: float | None, keep_last: int | None) -> pd.DataFrame:
    """The items :meth:`~course_lib.agents.store.AgentMemory.cleanup` removes, with the reason for each.

    ``frame`` holds every item in the memory at ``now`` with its strength; ``pending`` the decisions not
    yet resolved (they stay). Items that ``maintain`` retired before ``now`` join the list.
    """
    reason = np.full(len(frame), "", dtype=object)
    if min_strength is not None:
        reason[frame["strength"].to_numpy() < float(min_strength)] = f"strength < {min_strength}"
    if keep_last is not None:
        rank = frame.sort_values(["created", "id"], ascending=False).groupby("kind").cumcount()
        over = rank.reindex(frame.index).to_numpy() >= keep_last
        reason[over & (reason == "")] = f"beyond the newest {keep_last} of its kind"
    drop = (reason != "") & ~frame["id"].isin(pending).to_numpy()
    removed = frame.loc[drop, ["id", "agent", "kind", "tier", "importance", "strength"]].assign(reason=reason[drop])
    retired = pd.DataFrame(c.execute(
        "SELECT i.id, i.agent, i.kind, 'retired', i.importance, NULL, 'retired by maintain' FROM items i WHERE "
        "i.id IN (SELECT item_id FROM tier_changes WHERE tier = 'deleted' AND at < ?)", (now_ns,)).fetchall(),
        columns=[*removed.columns])
    if len(retired):
        removed = pd.concat([removed, retired.astype({"strength": float})], ignore_index=True)
    return removed


def delete_items(c: sqlite3.Connection, transaction: Callable[[], AbstractContextManager],
                 ids: Sequence[int]) -> tuple[list[str], int]:
    """Remove items and everything about them, in one transaction: (their texts in ascending id order,
    the epoch before the deletion).

    Bulk statements only (FTS5 is fast in bulk, slow per row): the ids travel as one JSON array into a
    temporary table. When more items go than stay, rebuilding the text index from the survivors is cheaper
    than deleting every removed row from it (measured in benchmarks/bench_agent_memory.py).
    """
    with transaction():
        c.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)")
        c.execute("DELETE FROM doomed")
        c.execute("INSERT OR IGNORE INTO doomed SELECT value FROM json_each(?)", (json.dumps([int(i) for i in ids]),))
        epoch = int(c.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        texts = [t for (t,) in c.execute("SELECT i.text FROM doomed AS d JOIN items AS i ON i.id = d.id ORDER BY d.id")]
        rebuild = len(texts) > int(c.execute("SELECT COUNT(*) FROM items").fetchone()[0]) - len(texts)
        if not rebuild:
            c.execute("INSERT INTO items_fts (items_fts, rowid, text) "
                      "SELECT 'delete', id, text FROM items WHERE id IN (SELECT id FROM doomed)")
        c.execute("DELETE FROM decisions WHERE id IN (SELECT id FROM doomed)")
        c.execute("DELETE FROM accesses WHERE item_id IN (SELECT id FROM doomed)")
        c.execute("DELETE FROM tier_changes WHERE item_id IN (SELECT id FROM doomed)")
        c.execute("DELETE FROM items WHERE id IN (SELECT id FROM doomed)")
        if rebuild:
            c.execute("INSERT INTO items_fts (items_fts) VALUES ('rebuild')")
        c.execute("DELETE FROM doomed")
        c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'epoch'")
    return texts, epoch
