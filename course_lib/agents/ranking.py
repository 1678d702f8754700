"""The agent store's search ranking: which items enter the pool, and how each one is scored (lesson 08).

A search at ``now`` (see :meth:`~course_lib.agents.store.AgentMemory.search`) runs these steps in order:

1. :func:`query_vector` - the query's state vector, checked and made unit-length;
2. :func:`narrow` keeps the chosen agents and kinds; :func:`bm25_scores` - BM25 of the text, with word
   statistics of the items visible at ``now`` only;
3. :func:`candidates` - the pool: the best text matches and the nearest state vectors;
4. :func:`components_as_of` - importance, recency (one half-life per tier) and the accesses and tier changes
   behind them, as of ``now``;
5. :func:`add_relevance` - cosine similarity and relevance (mean of the min-max normalised BM25 and cosine);
   :func:`~course_lib.agents.scoring.hybrid_arrays` then gives the hybrid score and :func:`top_k` the order;
6. :func:`result_frame` - one row per item with its text, metadata and the P&L known at ``now``.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd

from .schema import TIERS, InvalidItemError
from .scoring import NS_PER_DAY, minmax
from .search_mirror import _Cache, tokenize

_BM25_K1, _BM25_B = 1.2, 0.75  # FTS5's bm25() constants


def query_vector(vector, dim: int | None) -> np.ndarray:
    """The query's state vector as unit-length float32; refuses a wrong length, NaN or inf."""
    q = np.asarray(vector, dtype=np.float64).ravel()
    if dim is not None and len(q) != dim:
        raise InvalidItemError(f"query vector has length {len(q)}; this store's vectors have {dim}.")
    if not np.isfinite(q).all():
        raise InvalidItemError("the query vector contains NaN or inf.")
    return (q / max(np.linalg.norm(q), 1e-12)).astype(np.float32)


def bm25_scores(cache: _Cache, text: str | None, visible: np.ndarray,
                mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, BM25) of the rows in ``mask`` that share a word with ``text``; word statistics over ``visible``."""
    words = list(dict.fromkeys(tokenize(text)))
    n_docs = int(visible.sum())
    if not words or n_docs == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    avgdl = max(float(cache.n_tokens[visible].mean()), 1e-9)
    scores = np.zeros(len(cache.ids))
    for w in words:
        pos, tf = cache.term(w)
        seen = visible[pos]
        pos, tf = pos[seen], tf[seen]
        if len(pos) == 0:
            continue
        df = len(pos)
        idf = np.log((n_docs - df + 0.5) / (df + 0.5))
        idf = idf if idf > 0 else 1e-6
        dl = cache.n_tokens[pos]
        scores[pos] += idf * tf * (_BM25_K1 + 1) / (tf + _BM25_K1 * (1 - _BM25_B + _BM25_B * dl / avgdl))
    hit = np.flatnonzero((scores > 0) & mask)
    return hit, scores[hit]



def narrow(mask: np.ndarray, cache: _Cache, agents, kinds, known_kinds: tuple[str, ...]) -> np.ndarray:
    """``mask`` narrowed to the items of ``agents`` and of ``kinds`` (a name or a list; None: all)."""
    for what, names, col in (("agent", agents, cache.agent), ("kind", kinds, cache.kind)):
        if names is not None:
            names = [names] if isinstance(names, str) else list(names)
            if what == "kind":
                bad = [k for k in names if k not in known_kinds]
                if bad:
                    raise InvalidItemError(f"unknown kind(s) {bad}; choose from {list(known_kinds)}.")
            codes = [cache.codes[what][n] for n in names if n in cache.codes[what]]
            mask &= np.isin(col, codes)
    return mask

def candidates(cache: _Cache, mask: np.ndarray, text_pos: np.ndarray, text_score: np.ndarray, query: str | None,
               q: np.ndarray | None, n_cand: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """The pool a search scores: (rows, BM25 of every row or None, whether vectors were searched).

    The best ``n_cand`` text matches (ties: newer first) and the ``n_cand`` nearest state vectors among the
    rows in ``mask``; without text or vector, every row in ``mask``.
    """
    bm25 = np.zeros(len(cache.ids)) if query is not None else None
    if bm25 is not None:
        bm25[text_pos] = text_score
    if len(text_pos) > n_cand:  # the best matches (ties: newer first)
        text_pos = text_pos[np.lexsort((-cache.created[text_pos], -text_score))[:n_cand]]
    chosen: list[np.ndarray] = []
    if query is not None:
        chosen.append(text_pos)
    has_vectors = q is not None and cache.vectors is not None and len(cache.vectors) > 0
    if has_vectors:
        ok = mask & cache.has_vec
        n_ok = int(ok.sum())
        if n_ok > n_cand:  # score all rows (no copy of the matrix), hide the invisible, keep the best
            sims = np.where(ok, _matvec(cache.vectors, q), -np.inf)
            pool = np.argpartition(-sims, n_cand - 1)[:n_cand]
        else:
            pool = np.flatnonzero(ok)
        chosen.append(pool)
    if query is None and q is None:
        chosen.append(np.flatnonzero(mask))
    pos = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return pos, bm25, has_vectors


def state_as_of(c: sqlite3.Connection, ids: np.ndarray, now_ns: int) -> tuple[dict, dict]:
    """(last access, access count) and tier as of ``now`` for ``ids`` (events strictly before ``now``)."""
    if len(ids) == 0:
        return {}, {}
    if len(ids) > 20_000:
        acc = c.execute("SELECT item_id, MAX(at), COUNT(*) FROM accesses WHERE at < ? GROUP BY item_id",
                        (now_ns,)).fetchall()
        tiers = c.execute("SELECT item_id, tier FROM tier_changes WHERE at < ? AND tier != 'deleted' "
                          "ORDER BY at, rowid", (now_ns,)).fetchall()
    else:
        marks = ",".join("?" * len(ids))
        args = [int(i) for i in ids]
        acc = c.execute(f"SELECT item_id, MAX(at), COUNT(*) FROM accesses WHERE at < ? AND item_id IN ({marks}) "
                        "GROUP BY item_id", [now_ns, *args]).fetchall()
        tiers = c.execute(f"SELECT item_id, tier FROM tier_changes WHERE at < ? AND tier != 'deleted' "
                          f"AND item_id IN ({marks}) ORDER BY at, rowid", [now_ns, *args]).fetchall()
    return {i: (last, n) for i, last, n in acc}, {i: t for i, t in tiers}


def components_as_of(c: sqlite3.Connection, config, cache: _Cache, pos: np.ndarray,
                     now_ns: int) -> dict[str, np.ndarray]:
    """Importance, recency and the state behind it for the cached rows ``pos``, as of ``now``.

    ``config`` is the store's :class:`~course_lib.agents.store.AgentMemoryConfig` (half-lives, ``age_from``).
    """
    ids = cache.ids[pos]
    access, tier_change = state_as_of(c, ids, now_ns)
    last = np.zeros(len(ids), np.int64)
    count = np.zeros(len(ids), np.int64)
    tiers = cache.tier[pos].copy()
    if access or tier_change:
        for j, i in enumerate(ids.tolist()):
            if i in access:
                last[j], count[j] = access[i]
            if i in tier_change:
                tiers[j] = TIERS.index(tier_change[i])
    created = cache.created[pos]
    ref = np.maximum(created, last) if config.age_from == "accessed" else created
    age = now_ns - ref
    half = np.array([config.half_life_ns(t) for t in TIERS], float)[tiers]
    return {"id": ids, "created": created, "age_days": age / NS_PER_DAY, "tier": np.asarray(TIERS)[tiers],
            "access_count": count, "importance": cache.importance[pos],
            "recency": np.power(0.5, age / half)}  # decay(age, half_life), one half-life per tier


def add_relevance(cols: dict[str, np.ndarray], cache: _Cache, pos: np.ndarray, bm25: np.ndarray | None,
                  q: np.ndarray | None, has_vectors: bool) -> np.ndarray | None:
    """Add the ``bm25``, ``cosine`` and ``relevance`` columns of the pool to ``cols``; returns the relevance.

    Relevance is the mean of the min-max normalised BM25 and cosine (None without text and vector).
    """
    parts = []
    if bm25 is not None:
        cols["bm25"] = bm25[pos]
        parts.append(minmax(cols["bm25"]))
    if q is not None:
        if has_vectors:
            sims = np.where(cache.has_vec[pos], _matvec(cache.vectors[pos], q), np.nan)
            floor = np.nanmin(sims) if np.isfinite(sims).any() else 0.0
            cols["cosine"] = np.where(np.isfinite(sims), sims, floor)
        else:
            cols["cosine"] = np.zeros(len(pos))
        parts.append(minmax(cols["cosine"]))
    relevance = np.mean(parts, axis=0) if parts else None
    if relevance is not None:
        cols["relevance"] = relevance
    return relevance


def top_k(cols: dict[str, np.ndarray], scored: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """The ``k`` best rows by score (ties: the newer item), every column of ``cols`` and ``scored``."""
    order = np.lexsort((-cols["id"], -cols["created"], -scored["score"]))[:k]
    return {**{c: v[order] for c, v in cols.items()}, **{c: v[order] for c, v in scored.items()}}


def result_frame(c: sqlite3.Connection, cols: dict[str, np.ndarray], now_ns: int) -> pd.DataFrame:
    """One row per ranked item: its stored fields, every score column, and the P&L known at ``now``."""
    ids = cols["id"].tolist()
    marks = ",".join("?" * len(ids))
    rows = c.execute(
        "SELECT i.id, i.agent, i.kind, i.text, i.symbol, i.metadata, "
        "CASE WHEN d.resolved_at <= ? THEN d.pnl END "
        f"FROM items i LEFT JOIN decisions d ON d.id = i.id WHERE i.id IN ({marks})", [now_ns, *ids]
    ).fetchall()
    info = {r[0]: r[1:] for r in rows}
    meta = [json.loads(info[i][4]) for i in ids]
    # a decision's P&L once resolved by now; an outcome item (visible only from then on) carries its own
    pnl = [info[i][5] if info[i][1] != "outcome" else m.get("pnl") for i, m in zip(ids, meta)]
    data = {
        "id": cols["id"],
        "agent": [info[i][0] for i in ids],
        "kind": [info[i][1] for i in ids],
        "text": [info[i][2] for i in ids],
        "symbol": [info[i][3] for i in ids],
        "created_at": pd.to_datetime(cols["created"], unit="ns"),
        "tier": cols["tier"],
        "age_days": cols["age_days"],
        "access_count": cols["access_count"],
    }
    for col in ("bm25", "cosine", "relevance", "importance", "recency", "importance_n", "relevance_n",
                "recency_n", "score"):
        if col in cols:
            data[col] = cols[col]
    data["pnl"] = np.array([np.nan if v is None else v for v in pnl], float)
    data["metadata"] = meta
    return pd.DataFrame(data)


def _empty_result() -> pd.DataFrame:
    return pd.DataFrame(columns=["id", "agent", "kind", "text", "symbol", "created_at", "tier", "age_days",
                                 "access_count", "importance", "recency", "importance_n", "relevance_n",
                                 "recency_n", "score", "pnl", "metadata"])


def _matvec(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``matrix @ q`` without BLAS: for a tall matrix with a few columns, einsum is several times faster than
    a threaded gemv (and does not compete for cores with the rest of the machine)."""
    return np.einsum("ij,j->i", matrix, q)
