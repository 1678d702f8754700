"""A synthetic agent diary with a known answer, and the retrieval metrics to score a search on it.

Real diaries never say which memory would have helped. This one is built so that it does: for each question
an agent asks (a topic such as "NVDA earnings miss" at a time, with a market-state vector) it plants

* ``n_useful`` useful memories: on topic, recent and important;
* stale distractors: on topic and important, but months old;
* trivial distractors: on topic and recent, but routine (low importance);
* background: everything else the agents wrote, on other topics, at all times.

Relevance alone cannot tell the useful memories from the distractors (they match the question equally well),
recency removes the stale ones, importance the trivial ones. How much each component buys is then measured
with precision@k and nDCG@k, with paired bootstrap intervals across questions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .store import AgentMemory

__all__ = [
    "RETRIEVAL_SETTINGS",
    "AgentDiary",
    "evaluate_retrieval",
    "make_agent_diary",
    "ndcg_at_k",
    "paired_bootstrap",
    "precision_at_k",
    "retrieval_table",
    "simulate_memory_year",
]

_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META", "GOOG", "JPM", "XOM", "BTC", "ETH", "GLD",
            "TLT", "SPY", "QQQ", "EURUSD", "USDJPY", "OIL", "COPPER", "WHEAT")
_EVENTS = ("earnings miss", "earnings beat", "gap down", "gap up", "rate hike", "rate cut", "short squeeze",
           "volume spike", "guidance cut", "buyback news", "downgrade", "upgrade", "halted trading",
           "index rebalance", "dividend surprise")
_FILLER = ("noted", "checked", "while", "market", "session", "desk", "watch", "flow", "book", "risk", "screen",
           "open", "close", "quiet", "busy", "again", "later", "today", "moved", "seen")

#: Weight settings compared in the lesson: relevance alone, then each extra component, then all three.
RETRIEVAL_SETTINGS: dict[str, dict[str, float]] = {
    "relevance only": {"importance": 0.0, "relevance": 1.0, "recency": 0.0},
    "+ recency": {"importance": 0.0, "relevance": 1.0, "recency": 1.0},
    "+ importance": {"importance": 1.0, "relevance": 1.0, "recency": 0.0},
    "full hybrid": {"importance": 1.0, "relevance": 1.0, "recency": 1.0},
}


@dataclass
class AgentDiary:
    """The filled store, the questions (``text``, ``vector``, ``now``) and the ids of each question's useful
    memories (``useful``), plus the role of every planted item (``planted``: useful, stale, trivial)."""

    memory: AgentMemory
    queries: pd.DataFrame
    useful: dict[int, set[int]]
    planted: pd.DataFrame


def _text(rng, symbol: str, event: str) -> str:
    filler = " ".join(rng.choice(_FILLER, size=int(rng.integers(2, 6))))
    return f"{symbol} {event} {filler}"


def make_agent_diary(n_queries: int = 100, n_background: int = 3000, n_useful: int = 3, n_stale: int = 3,
                     n_trivial: int = 3, dim: int = 8, seed: int = 0, path: str = ":memory:",
                     spacing: str = "2D") -> AgentDiary:
    """Build the diary (see the module doc). Questions are ``spacing`` apart; items planted for a question
    are created at or before its time (a search at that time sees them; later questions' items stay hidden)."""
    combos = [(s, e) for s in _SYMBOLS for e in _EVENTS]
    if n_queries > len(combos) // 2:
        raise ValueError(f"at most {len(combos) // 2} questions (each needs its own topic), got {n_queries}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(combos))
    topics = [combos[i] for i in order[:n_queries]]
    others = [combos[i] for i in order[n_queries:]]
    t0 = pd.Timestamp("2024-01-01")
    step = pd.Timedelta(spacing)
    day = pd.Timedelta("1D")
    mem = AgentMemory(path, vector_dim=dim)
    agents = ("momentum", "mean_reversion", "volatility", "analog")
    items, roles, queries = [], [], []
    for q, (sym, ev) in enumerate(topics):
        now = t0 + q * step
        center = rng.normal(size=dim)
        queries.append({"query": q, "text": f"{sym} {ev}", "now": now, "vector": center + 0.3 * rng.normal(size=dim)})
        plan = [("useful", n_useful, (0.0, 2.0), (6.0, 10.0)), ("stale", n_stale, (30.0, 300.0), (6.0, 10.0)),
                ("trivial", n_trivial, (0.0, 2.0), (1.0, 2.0))]
        for role, n, (a_lo, a_hi), (i_lo, i_hi) in plan:
            for _ in range(n):
                items.append(dict(agent=str(rng.choice(agents)), kind="observation", text=_text(rng, sym, ev),
                                  now=now - rng.uniform(a_lo, a_hi) * day, importance=float(rng.uniform(i_lo, i_hi)),
                                  vector=center + 0.5 * rng.normal(size=dim), symbol=sym))
                roles.append((q, role))
    span = (n_queries * step + 300 * day) / day
    for _ in range(n_background):
        sym, ev = others[int(rng.integers(len(others)))]
        items.append(dict(agent=str(rng.choice(agents)), kind=str(rng.choice(["observation", "signal", "reflection"])),
                          text=_text(rng, sym, ev), now=t0 - 300 * day + rng.uniform(0, span) * day,
                          importance=float(rng.uniform(1.0, 10.0)), vector=rng.normal(size=dim), symbol=sym))
        roles.append((-1, "background"))
    ids = mem.add_many(items)
    planted = pd.DataFrame(roles, columns=["query", "role"]).assign(id=ids)
    planted = planted[planted["role"] != "background"].reset_index(drop=True)
    useful = {q: set(g["id"]) for q, g in planted[planted["role"] == "useful"].groupby("query")}
    return AgentDiary(mem, pd.DataFrame(queries), useful, planted)


def precision_at_k(retrieved, relevant: set, k: int) -> float:
    """Share of the first ``k`` results that are relevant."""
    top = list(retrieved)[:k]
    return sum(i in relevant for i in top) / k


def ndcg_at_k(retrieved, relevant: set, k: int) -> float:
    """Normalised discounted cumulative gain with binary relevance (1 = every relevant item on top)."""
    top = list(retrieved)[:k]
    dcg = sum(1.0 / np.log2(r + 2) for r, i in enumerate(top) if i in relevant)
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(relevant))))
    return dcg / ideal if ideal > 0 else 0.0


def evaluate_retrieval(diary: AgentDiary, settings: Mapping[str, Mapping[str, float]] | None = None,
                       k: int = 3, use_vector: bool = True) -> pd.DataFrame:
    """One row per (question, setting): precision@k and nDCG@k of ``diary.memory.search`` at the question's
    time. Searches do not touch the items, so the settings are compared on the same memory."""
    settings = settings or RETRIEVAL_SETTINGS
    rows = []
    for q in diary.queries.itertuples(index=False):
        for name, w in settings.items():
            res = diary.memory.search(q.text, vector=q.vector if use_vector else None, now=q.now, k=k,
                                      weights=w, touch=False)
            ids = res["id"].tolist()
            rows.append((q.query, name, precision_at_k(ids, diary.useful[q.query], k),
                         ndcg_at_k(ids, diary.useful[q.query], k)))
    return pd.DataFrame(rows, columns=["query", "setting", "precision", "ndcg"])


def paired_bootstrap(a, b, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired observations and its percentile bootstrap interval (resampling pairs).

    The questions are independent, so pairs are resampled one at a time (blocks of one):
    :func:`course_lib.stats.block_bootstrap_ci`, the course's one bootstrap.
    """
    from ..stats import block_bootstrap_ci

    diff = np.asarray(a, float) - np.asarray(b, float)
    lo, hi = block_bootstrap_ci(diff, 1, level=level, n_boot=n_boot, seed=seed)
    return float(np.nanmean(diff)) if len(diff) else float("nan"), lo, hi


def retrieval_table(per_query: pd.DataFrame, baseline: str = "relevance only", n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Mean precision and nDCG per setting, and the paired bootstrap interval of the gain over ``baseline``."""
    rows = []
    wide = {m: per_query.pivot(index="query", columns="setting", values=m) for m in ("precision", "ndcg")}
    for name in per_query["setting"].unique():
        row = {"setting": name}
        for m, tab in wide.items():
            row[m] = float(tab[name].mean())
            gain, lo, hi = paired_bootstrap(tab[name], tab[baseline], n_boot, seed)
            row[f"{m}_gain"], row[f"{m}_gain_low"], row[f"{m}_gain_high"] = gain, lo, hi
        rows.append(row)
    return pd.DataFrame(rows).set_index("setting")


def simulate_memory_year(days: int = 365, per_day: int = 6, seed: int = 0, policy=None,
                         maintain_every: int = 7, path: str = ":memory:") -> tuple[AgentMemory, pd.DataFrame]:
    """A year in the life of a memory: every day agents write ``per_day`` items (importance mostly ordinary,
    now and then high), one agent re-reads the day's hottest topic (an access), and every ``maintain_every``
    days the tiers are maintained. Returns the store and the number of items per tier after each maintenance.
    """
    rng = np.random.default_rng(seed)
    mem = AgentMemory(path)
    t0 = pd.Timestamp("2024-01-01")
    rows = []
    topics = [f"{s} {e}" for s in _SYMBOLS[:6] for e in _EVENTS[:5]]
    for day in range(days):
        now = t0 + pd.Timedelta(days=day)
        imp = np.where(rng.random(per_day) < 0.1, rng.uniform(3.0, 9.0, per_day), rng.uniform(0.5, 1.5, per_day))
        mem.add_many([dict(agent=str(rng.choice(["momentum", "analog", "volatility"])),
                           kind=str(rng.choice(["observation", "signal", "reflection"])),
                           text=f"{topics[int(rng.integers(len(topics)))]} {' '.join(rng.choice(_FILLER, 3))}",
                           now=now + pd.Timedelta(hours=int(h)), importance=float(i))
                      for i, h in zip(imp, rng.integers(0, 23, per_day))])
        mem.search(topics[int(rng.zipf(1.6)) % len(topics)], now=now + pd.Timedelta(hours=23), k=3)
        if day % maintain_every == maintain_every - 1:
            mem.maintain(now=now + pd.Timedelta(hours=23, minutes=30), policy=policy)
            counts = mem.items(now=now + pd.Timedelta(hours=23, minutes=31))["tier"].value_counts()
            rows.append({"time": now, **{t: int(counts.get(t, 0)) for t in ("short", "medium", "long")}})
    return mem, pd.DataFrame(rows).set_index("time")
