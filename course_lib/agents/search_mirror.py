"""The agent store's search mirror: the columns a search filters and scores on, held in NumPy.

An engineering path, not an idea of lesson 08: SQLite stores the items, and this mirror keeps a copy of the
columns every search reads (ids, times, importance, agent and kind codes, tiers, unit-length vectors and a
word index for BM25), so a search over 100,000 items costs a few array operations instead of SQL per row.
Items never change after they are written, so the mirror only appends new rows, and drops rows that this
process deleted.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .schema import TIERS

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # the words FTS5's unicode61 tokenizer sees (ASCII text)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many small, acyclic objects (a bulk load)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def tokenize(text: str | None) -> list[str]:
    """Lower-cased words, as the store's FTS5 index (``unicode61 remove_diacritics 0``) splits them."""
    text = text or ""
    if text.isascii():  # lower-casing first is the same for ASCII, and 4x faster
        return _TOKEN.findall(text.lower())
    return [t.lower() for t in _TOKEN.findall(text)]


class _Cache:
    """The columns a search filters and scores on, mirrored in NumPy (items never change after insert)."""

    def __init__(self) -> None:
        self.epoch = -1
        self.max_id = 0
        self.ids = np.zeros(0, np.int64)
        self.created = np.zeros(0, np.int64)
        self.importance = np.zeros(0, float)
        self.agent = np.zeros(0, np.int32)
        self.kind = np.zeros(0, np.int32)
        self.tier = np.zeros(0, np.int8)
        self.vectors: np.ndarray | None = None
        self.has_vec = np.zeros(0, bool)
        self.codes: dict[str, dict[str, int]] = {"agent": {}, "kind": {}}
        self.n_tokens = np.zeros(0, np.int32)
        self.postings: dict[str, list] = {}  # word -> chunks of (positions, term counts), joined when read

    def index_text(self, start: int, texts: Sequence[str]) -> np.ndarray:
        """Add the words of ``texts`` (rows ``start``, ``start + 1``, ...) to the postings; returns their lengths.

        The words are grouped with NumPy and each word gets one new chunk per call, so loading a store of
        100,000 items costs one sort, not a Python append per posting.
        """
        tokens = [tokenize(text) for text in texts]
        lengths = np.fromiter(map(len, tokens), np.int32, len(tokens))
        vocab: dict[str, int] = {}
        word_ids = np.fromiter((vocab.setdefault(w, len(vocab)) for words in tokens for w in words), np.int64,
                               int(lengths.sum()))
        if len(word_ids):
            rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
            # one key per (word, row): unique sorts by word, then row, and counts each word's occurrences in a row
            keys, tf = np.unique(word_ids * len(texts) + rows, return_counts=True)
            wid, pos = np.divmod(keys, len(texts))
            cuts = np.flatnonzero(np.diff(wid)) + 1
            names = list(vocab)
            for p_chunk, t_chunk, w in zip(np.split(pos + start, cuts), np.split(tf.astype(float), cuts),
                                           wid[np.r_[0, cuts]].tolist()):
                self.postings.setdefault(names[w], []).append((p_chunk, t_chunk))
        return lengths

    def term(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """(positions, term counts) of ``word``, positions ascending."""
        chunks = self.postings.get(word)
        if not chunks:
            return np.zeros(0, np.int64), np.zeros(0, float)
        if len(chunks) > 1:
            chunks[:] = [(np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))]
        return chunks[0]

    def drop(self, ids: np.ndarray) -> None:
        """Forget the rows of ``ids`` in place (what this process just deleted), instead of reloading the store."""
        keep = ~np.isin(self.ids, ids)
        if keep.all():
            return
        new_pos = np.cumsum(keep) - 1
        for name in ("ids", "created", "importance", "agent", "kind", "tier", "has_vec", "n_tokens"):
            setattr(self, name, getattr(self, name)[keep])
        if self.vectors is not None and len(self.vectors) == len(keep):
            self.vectors = self.vectors[keep]
        for word in list(self.postings):
            pos, tf = self.term(word)
            kept = keep[pos]
            if kept.any():
                self.postings[word] = [(new_pos[pos[kept]], tf[kept])]
            else:
                del self.postings[word]

    def codes_of(self, what: str, names: Sequence[str]) -> np.ndarray:
        """The integer code of each name (new names get new codes), one hash pass instead of a lookup per row."""
        codes, uniques = pd.factorize(np.asarray(names, dtype=object))
        return np.array([self.code(what, u) for u in uniques], np.int32)[codes]

    def code(self, what: str, name: str) -> int:
        table = self.codes[what]
        if name not in table:
            table[name] = len(table)
        return table[name]

    def append(self, rows: Sequence[tuple], dim: int | None) -> None:
        """Mirror new ``items`` rows (id, agent, kind, importance, created_at, tier, vector, text), ids ascending.

        ``dim`` is the store's vector dimension (None while no vector fixed it); vectors are kept unit-length.
        """
        ids, agents, kinds, imp, created, tiers, blobs, texts = zip(*rows)
        self.n_tokens = np.concatenate([self.n_tokens, self.index_text(len(self.ids), texts)])
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])
        self.agent = np.concatenate([self.agent, self.codes_of("agent", agents)]).astype(np.int32)
        self.kind = np.concatenate([self.kind, self.codes_of("kind", kinds)]).astype(np.int32)
        self.importance = np.concatenate([self.importance, np.asarray(imp, float)])
        self.created = np.concatenate([self.created, np.asarray(created, np.int64)])
        codes, names = pd.factorize(np.asarray(tiers, dtype=object))
        level = np.array([TIERS.index(t) for t in names], np.int8)
        self.tier = np.concatenate([self.tier, level[codes]]).astype(np.int8)
        has = np.array([b is not None for b in blobs])
        if dim is not None:
            new = np.zeros((len(rows), dim), np.float32)
            if has.any():
                new[has] = np.frombuffer(b"".join(b for b in blobs if b is not None), "<f4").reshape(-1, dim)
            new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
            old = self.vectors if self.vectors is not None else np.zeros((0, dim), np.float32)
            if len(old) < len(self.has_vec):
                old = np.zeros((len(self.has_vec), dim), np.float32)
            self.vectors = np.concatenate([old, new])
        self.has_vec = np.concatenate([self.has_vec, has])
        self.max_id = int(self.ids[-1])
