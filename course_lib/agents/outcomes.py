"""Decisions and their outcomes, as known at a time (lesson 08): the agent store's ledger.

* :func:`pending_decision` - the decision an outcome resolves, refused if unknown, resolved or later;
* :func:`decisions_as_of` - the decisions made by ``now``, with a P&L only where it was known by ``now``;
* :func:`outcome_table` - wins, losses, win rate and mean P&L of the resolved ones, grouped by agent, kind,
  regime or symbol (what :meth:`~course_lib.agents.store.AgentMemory.outcome_stats` returns).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .schema import AgentMemoryError, InvalidItemError, _ts


def pending_decision(c: sqlite3.Connection, decision_id: int, at_ns: int) -> tuple:
    """(agent, symbol, regime, text) of the unresolved decision ``decision_id``; its outcome known at ``at``
    must not predate it."""
    row = c.execute("SELECT d.agent, d.decided_at, d.resolved_at, d.symbol, d.regime, i.text "
                    "FROM decisions d JOIN items i ON i.id = d.id WHERE d.id = ?",
                    (int(decision_id),)).fetchone()
    if row is None:
        raise AgentMemoryError(f"no pending decision with id {decision_id} (record_decision returns ids).")
    agent, decided, resolved, symbol, regime, dtext = row
    if resolved is not None:
        raise AgentMemoryError(f"decision {decision_id} is already resolved (at {_ts(resolved)}).")
    if at_ns < decided:
        raise InvalidItemError(
            f"decision {decision_id} was made at {_ts(decided)}; its outcome cannot be known earlier "
            f"({_ts(at_ns)})."
        )
    return agent, symbol, regime, dtext

def decisions_as_of(c: sqlite3.Connection, now_ns: int, agents=None) -> pd.DataFrame:
    """Decisions made by ``now`` (of ``agents`` if given); ``pnl``/``resolved_at`` empty unless known by ``now``."""
    sql = ("SELECT id, agent, kind, symbol, regime, direction, confidence, decided_at, "
           "CASE WHEN resolved_at <= ? THEN pnl END, CASE WHEN resolved_at <= ? THEN resolved_at END "
           "FROM decisions WHERE decided_at <= ? AND id NOT IN "
           "(SELECT item_id FROM tier_changes WHERE tier = 'deleted' AND at < ?)")
    args: list[Any] = [now_ns, now_ns, now_ns, now_ns]
    if agents is not None:
        names = [agents] if isinstance(agents, str) else list(agents)
        sql += f" AND agent IN ({','.join('?' * len(names))})"
        args += names
    rows = c.execute(sql + " ORDER BY decided_at, id", args).fetchall()
    out = pd.DataFrame(rows, columns=["id", "agent", "kind", "symbol", "regime", "direction", "confidence",
                                      "decided_at", "pnl", "resolved_at"])
    out["pnl"] = out["pnl"].astype(float)
    out["decided_at"] = pd.to_datetime(out["decided_at"], unit="ns")
    out["resolved_at"] = pd.to_datetime(out["resolved_at"].astype("Int64"), unit="ns")
    return out


def outcome_table(decisions: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Wins, losses, win rate and mean P&L of the resolved ``decisions``, grouped by the columns ``by``."""
    d = decisions.dropna(subset=["pnl"])
    d["regime"] = d["regime"].fillna("-")
    d["symbol"] = d["symbol"].fillna("-")
    cols = list(by)
    if d.empty:
        return pd.DataFrame(columns=[*cols, "n", "wins", "losses", "win_rate", "mean_pnl"])
    g = d.assign(win=d["pnl"] > 0, loss=d["pnl"] < 0).groupby(cols, sort=True)
    out = pd.DataFrame({"n": g.size(), "wins": g["win"].sum(), "losses": g["loss"].sum(),
                        "mean_pnl": g["pnl"].mean()})
    out["win_rate"] = out["wins"] / (out["wins"] + out["losses"]).where(lambda s: s > 0)
    return out.reset_index()[[*cols, "n", "wins", "losses", "win_rate", "mean_pnl"]]
