"""Lesson 03, the model: local self-attention over the window plus kNN attention over the past.

Shape of the model (``B`` windows of ``S`` bars with ``F`` features, width ``D``)::

    x (B, S, F) -> Conv1d token embedding + sinusoidal positions -> (B, S, D)
      -> encoder layers: [pre-norm local self-attention (+ kNN memory attention, fused) ] + feed-forward
      -> last token (B, D) -> heads: regression (return), direction (down/flat/up), portfolio (tanh position)

Design decisions a naive implementation gets wrong and this module gets right:

* **One key definition.** The vector that *searches* the memory and the vector that is *stored* in it are
  the same function of a window: the last token's hidden state at the input of the first memory layer,
  layer-normalised and projected (:meth:`MemoryAugmentedTransformer.memory_keys`). The trainer builds the
  memory with that method and the forward pass queries with it, so keys and queries live in one space.
* **Values carry outcomes.** A memory entry stores what happened after its window (scaled forward return and
  its down/flat/up class). A learned outcome embedding turns it into attention values, so retrieval can say
  "windows like this one were followed by ...". A kNN-blend head mixes those outcomes into the forecast.
* **Re-scored, not trusted.** The search engine's cosine scores only pick the ``k`` candidates; each memory
  layer re-scores them with learned per-head projections of query and keys, both L2-normalised, times a
  learned temperature (Memorizing Transformers, sec. 3). With several memory layers the search runs once,
  but every layer after the first re-scores the neighbours with a query from its *own* hidden state (the
  chapter feeds one retrieved tensor, scored once, to every layer, so deeper layers ignore what they computed).
* **One retrieval per window** by default (the chapter searches once per position: ``S`` times the work);
  ``retrieval="position"`` is available for comparison.
* Gates (``fusion="gated"`` only): ``"content"`` (per-dimension sigmoid of both paths, the chapter's) or
  ``"head"`` (one learned scalar per head, the paper's). Fusions: ``"gated"``, ``"concat"``, ``"cross_attention"`` and ``"joint"`` (one softmax
  over ``[context; memory]``).

The memory itself is *not* a parameter: retrieved keys and values arrive as constants (no gradient), which
is what lets a bank of a million entries sit next to a model of a hundred thousand weights.

One module per part, in the order the lesson builds them: :mod:`.config` (settings), :mod:`.retrieval`
(a memory search as constant tensors), :mod:`.attention` (token embedding, kNN memory attention),
:mod:`.fusion` (one small class per fusion strategy) and :mod:`.transformer` (encoder layer, kNN blend,
the model).
"""

# ruff: noqa: F401  (the parts below are reachable as cl.model.Name; cl.Name is only the small __all__)
from __future__ import annotations

from .attention import KNNMemoryAttention, TokenEmbedding, _masked_softmax, sinusoidal_positions
from .config import FUSIONS, GATE_INPUTS, GATES, N_MEMORY_STATS, OUTCOME_DIM, MemoryTransformerConfig
from .fusion import (
    ConcatFusion,
    CrossAttentionFusion,
    Fusion,
    GatedFusion,
    HeadGateFusion,
    JointSoftmaxFusion,
    make_fusion,
)
from .retrieval import (
    MemorySearch,
    RetrievedMemory,
    direction_classes,
    encode_outcomes,
    memory_stats,
    retrieve,
)
from .transformer import KNNBlend, MemoryAugmentedTransformer, MemoryEncoderLayer

__all__ = [
    "FUSIONS",
    "GATES",
    "OUTCOME_DIM",
    "MemoryAugmentedTransformer",
    "MemoryTransformerConfig",
    "RetrievedMemory",
    "encode_outcomes",
    "retrieve",
]
