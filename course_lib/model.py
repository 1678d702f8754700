"""The memory-augmented transformer: local self-attention over the window plus kNN attention over the past.

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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .memory.time_filter import NO_TIME_FILTER, query_times

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

FUSIONS = ("gated", "concat", "cross_attention", "joint")
GATES = ("content", "head")
#: Outcome vector stored as a memory value: [scaled forward return, one-hot down, flat, up].
OUTCOME_DIM = 4


@dataclass
class MemoryTransformerConfig:
    """Every size and switch of :class:`MemoryAugmentedTransformer` (saved next to checkpoints as JSON).

    Architecture: ``input_dim`` features per bar, windows of ``seq_len`` bars, width ``d_model``, ``n_heads``
    heads, ``n_layers`` encoder layers, feed-forward width ``d_ff``. ``dropout`` acts on residual branches;
    ``attn_dropout`` on attention weights (off by default: on CPU it forces PyTorch's slow attention kernel).
    ``conv_kernel``: width of the centred token convolution, odd and >= 1 (see :class:`TokenEmbedding`).

    Memory: ``use_memory=False`` gives the same network with the memory path removed (the honest baseline).
    ``memory_layers`` lists the layers with kNN attention (negative indices count from the end; default: the
    last). The kNN search runs once per window with the key made at the first memory layer's input; each later
    memory layer re-scores those same neighbours with a query projected from its own hidden state. ``n_neighbors`` entries are retrieved per query; ``key_dim`` is the width of stored keys.
    ``key_bars`` adds a learned projection of the last ``key_bars`` input bars (at most ``seq_len``) of the
    ``key_features`` columns (default column 0, ``log_return`` in the course's feature order; empty: all) to
    the key. It starts as an isometry of that recent return path and the hidden-state part starts near zero,
    so from the first epoch on "windows whose recent path looks like this one" are neighbours; training
    then reshapes both (``key_bars=0``: hidden state only).
    ``temperature`` is the initial temperature of the cosine re-scoring (learned when ``learn_temperature``).
    ``gate`` picks the gate of ``fusion="gated"`` (the other fusions have no gate to choose, so ``gate="head"``
    with them is refused rather than silently ignored).
    ``gate_bias`` initialises the gates' logit: negative starts the model leaning on local context.
    ``knn_blend`` adds the head that mixes the neighbours' outcomes into the forecast.
    """

    input_dim: int = 7
    seq_len: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1
    attn_dropout: float = 0.0
    conv_kernel: int = 3
    # memory
    use_memory: bool = True
    memory_layers: tuple[int, ...] = (-1,)
    n_neighbors: int = 32
    key_dim: int = 32
    key_bars: int = 16
    key_features: tuple[int, ...] = (0,)
    fusion: str = "gated"
    gate: str = "content"
    gate_bias: float = 0.0
    temperature: float = 0.1
    learn_temperature: bool = True
    retrieval: str = "window"
    knn_blend: bool = True
    outcome_dim: int = OUTCOME_DIM
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.memory_layers = tuple(int(i) for i in self.memory_layers)
        self.key_features = tuple(int(i) for i in self.key_features)
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.key_dim % self.n_heads:
            problems.append(f"key_dim={self.key_dim} must be divisible by n_heads={self.n_heads}")
        if self.fusion not in FUSIONS:
            problems.append(f"fusion={self.fusion!r} is not one of {FUSIONS}")
        if self.gate not in GATES:
            problems.append(f"gate={self.gate!r} is not one of {GATES}")
        elif self.gate == "head" and self.fusion != "gated":
            problems.append(
                f"gate='head' only applies to fusion='gated' (fusion={self.fusion!r} mixes the paths without a "
                "gate and would ignore it); use fusion='gated' with gate='head', or keep gate='content'"
            )
        if self.retrieval not in ("window", "position"):
            problems.append(f"retrieval={self.retrieval!r} must be 'window' or 'position'")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            problems.append(
                f"conv_kernel={self.conv_kernel} must be odd and >= 1 (the convolution is centred: an even kernel "
                f"would make seq_len + 1 tokens); use {max(1, self.conv_kernel - 1)} or {max(3, self.conv_kernel + 1)}"
            )
        if self.n_layers < 1 or self.seq_len < 1 or self.input_dim < 1:
            problems.append("n_layers, seq_len and input_dim must be >= 1")
        if self.use_memory and not self.memory_layers:
            problems.append("use_memory=True needs at least one entry in memory_layers")
        bad = [i for i in self.memory_layers if not -self.n_layers <= i < self.n_layers]
        if bad:
            problems.append(f"memory_layers {bad} out of range for n_layers={self.n_layers}")
        if self.key_bars < 0:
            problems.append(f"key_bars={self.key_bars} must be >= 0")
        if any(not 0 <= i < self.input_dim for i in self.key_features):
            problems.append(f"key_features {self.key_features} must index the input_dim={self.input_dim} columns")
        if self.n_neighbors < 1 or self.temperature <= 0:
            problems.append("n_neighbors must be >= 1 and temperature > 0")
        if problems:
            raise ValueError("MemoryTransformerConfig: " + "; ".join(problems) + ".")

    @property
    def recent_bars(self) -> int:
        """Bars of the input path in the key: ``key_bars``, at most the window length."""
        return min(self.key_bars, self.seq_len)

    @property
    def memory_layer_ids(self) -> tuple[int, ...]:
        """Sorted non-negative indices of the layers with memory attention (empty without memory)."""
        if not self.use_memory:
            return ()
        return tuple(sorted({i % self.n_layers for i in self.memory_layers}))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory_layers"] = list(self.memory_layers)
        out["key_features"] = list(self.key_features)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryTransformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MemoryTransformerConfig: unknown field(s) {unknown}; was the file written by a newer course_lib?")
        return cls(**data)


@dataclass
class RetrievedMemory:
    """What one search returned, as constant tensors shaped for the model.

    ``keys`` (B, Q, k, key_dim) stored (normalised) keys, ``values`` (B, Q, k, outcome_dim) outcomes,
    ``mask`` (B, Q, k) valid entries, ``indices`` (B, Q, k) slot ids (-1 invalid). ``Q`` is 1 for per-window
    retrieval and ``seq_len`` for per-position retrieval.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    indices: torch.Tensor
    scores: torch.Tensor | None = None

    def last(self) -> RetrievedMemory:
        """Only the last query position (used when a layer computes the last token only)."""
        if self.keys.shape[1] == 1:
            return self
        sl = slice(-1, None)
        return RetrievedMemory(
            self.keys[:, sl], self.values[:, sl], self.mask[:, sl], self.indices[:, sl],
            None if self.scores is None else self.scores[:, sl],
        )


class MemorySearch(Protocol):
    """Anything with the memory bank's ``search`` (see :class:`course_lib.ExternalMemoryBank`)."""

    def search(self, queries: Any, k: int = ..., as_of: Any = ...) -> Any: ...


def encode_outcomes(y: np.ndarray | torch.Tensor, scale: float, flat_threshold: float) -> np.ndarray:
    """Memory values for labels ``y`` (forward log returns): [clip(y/scale, +-5), down, flat, up].

    The scaled return keeps magnitudes comparable across assets; the one-hot class lets the model count
    "how many neighbours went up" without learning a threshold.
    """
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    out = np.zeros((len(y), OUTCOME_DIM), dtype=np.float32)
    out[:, 0] = np.clip(y / scale, -5.0, 5.0)
    cls = direction_classes(y, flat_threshold)
    out[np.arange(len(y)), 1 + cls] = 1.0
    return out


def direction_classes(y: np.ndarray | torch.Tensor, flat_threshold: float):
    """0 = down (y < -thr), 1 = flat, 2 = up (y > thr); works on numpy arrays and tensors."""
    if isinstance(y, torch.Tensor):
        return (y > flat_threshold).long() * 2 + ((y >= -flat_threshold) & (y <= flat_threshold)).long()
    y = np.asarray(y)
    return np.where(y > flat_threshold, 2, np.where(y < -flat_threshold, 0, 1)).astype(np.int64)


def _as_tensor(a: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)


def retrieve(memory: MemorySearch, queries: torch.Tensor, k: int, as_of: Any = None) -> RetrievedMemory:
    """Search ``memory`` with ``queries`` (B, Q, key_dim); ``as_of`` (B,) int64 ns: one time per window.

    Every query of a window shares its ``as_of`` (the window's end time), so no query sees an entry whose
    label was not known when the window closed. ``as_of`` is required; ``NO_TIME_FILTER`` is the explicit
    opt-out. Results come back as constant tensors (no gradient).
    """
    b, q, dk = queries.shape
    flat = F.normalize(queries.detach().reshape(b * q, dk).float(), dim=-1)
    if as_of is None:
        query_times(None, b, "model(x, memory=...)")  # raises: the window times are required
    times = NO_TIME_FILTER
    if as_of is not NO_TIME_FILTER:
        times = np.asarray(as_of.cpu() if isinstance(as_of, torch.Tensor) else as_of, dtype=np.int64).reshape(-1)
        if times.size == 1 and b > 1:
            times = np.full(b, times[0], dtype=np.int64)
        if q > 1:
            times = np.repeat(times, q)
    res = memory.search(flat, k=k, as_of=times)
    dev = queries.device
    keys = _as_tensor(res.keys, dev, torch.float32).reshape(b, q, k, -1)
    values = _as_tensor(res.values, dev, torch.float32).reshape(b, q, k, -1)
    mask = _as_tensor(res.mask, dev).bool().reshape(b, q, k)
    indices = _as_tensor(res.indices, dev, torch.long).reshape(b, q, k)
    scores = _as_tensor(res.scores, dev, torch.float32).reshape(b, q, k)
    keys = torch.where(mask[..., None], keys, torch.zeros((), device=dev))
    values = torch.where(mask[..., None], values, torch.zeros((), device=dev))
    return RetrievedMemory(keys, values, mask, indices, scores)


class TokenEmbedding(nn.Module):
    """Conv1d over time mixes each bar with its neighbours inside the window.

    The convolution is *centred* with zero padding: with ``conv_kernel = 2r + 1`` token ``s`` sees bars
    ``s - r .. s + r`` of the window (default ``r = 1``: ``s - 1, s, s + 1``), zeros beyond either edge, and never
    a bar after the window's last one. So a token can see a *later bar of the same window*, and that is not
    look-ahead: everything downstream is dated at the window's end ``t`` (the heads read the last token;
    memory searches use ``as_of = t`` for every query of the window, with ``retrieval="position"`` too), and
    every bar of the window is known at ``t``. What this design rules out is a per-position *causal* reading
    (token ``s`` as a forecast made at bar ``s``); a causal (left-padded) kernel would allow that, but would
    change every trained number, so the centred one stays.
    """

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__()
        self.conv = nn.Conv1d(cfg.input_dim, cfg.d_model, cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.transpose(1, 2)).transpose(1, 2))


def sinusoidal_positions(seq_len: int, d_model: int) -> torch.Tensor:
    """(seq_len, d_model) fixed sin/cos position codes (Vaswani et al.)."""
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return pe


class KNNMemoryAttention(nn.Module):
    """Attention of one query per window (or per position) over its ``k`` retrieved neighbours.

    Scores: ``exp(log_scale) * cos(W_q query, W_k key)`` per head, masked where the bank had nothing valid.
    Values: a learned embedding of [stored key; outcome]. Returns per-head outputs and the weights.
    ``query_dim`` is the width of what ``W_q`` reads: the retrieval key (``key_dim``) in the first memory
    layer, the layer's own hidden state (``d_model``) in deeper ones (see :class:`MemoryEncoderLayer`).
    """

    def __init__(self, cfg: MemoryTransformerConfig, query_dim: int | None = None):
        super().__init__()
        self.h = cfg.n_heads
        self.dh = cfg.d_model // cfg.n_heads
        self.q_proj = nn.Linear(cfg.key_dim if query_dim is None else query_dim, cfg.d_model)
        self.k_proj = nn.Linear(cfg.key_dim, cfg.d_model)
        self.outcome_embed = nn.Sequential(nn.Linear(cfg.outcome_dim, cfg.d_model), nn.GELU())
        self.v_proj = nn.Linear(cfg.key_dim + cfg.d_model, cfg.d_model)
        init = math.log(1.0 / cfg.temperature)
        self.log_scale = nn.Parameter(torch.tensor(init), requires_grad=cfg.learn_temperature)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def project(self, mem: RetrievedMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head normalised keys (B, H, Q, k, dh) and values (B, H, Q, k, dh) of the neighbours."""
        b, q, k, _ = mem.keys.shape
        keys = F.normalize(self.k_proj(mem.keys).view(b, q, k, self.h, self.dh), dim=-1)
        vals = self.v_proj(torch.cat([mem.keys, self.outcome_embed(mem.values)], dim=-1)).view(b, q, k, self.h, self.dh)
        return keys.permute(0, 3, 1, 2, 4), vals.permute(0, 3, 1, 2, 4)

    def forward(self, query: torch.Tensor, mem: RetrievedMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` (B, Q, query_dim) -> output (B, H, Q, dh), weights (B, H, Q, k)."""
        b, q, _ = query.shape
        qh = F.normalize(self.q_proj(query).view(b, q, self.h, self.dh), dim=-1).transpose(1, 2)  # B,H,Q,dh
        keys, vals = self.project(mem)
        logits = (keys @ qh.unsqueeze(-1)).squeeze(-1) * self.scale  # B,H,Q,k
        weights = _masked_softmax(logits, mem.mask[:, None])
        out = (weights.unsqueeze(-2) @ vals).squeeze(-2)  # B,H,Q,dh
        return out, weights


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``mask`` is True; all-masked rows give all-zero weights, not NaN.

    Computed in float32 and cast back to the logits' dtype: under mixed precision the logits arrive in
    float16 or bfloat16, where the guards below do not fit (float16 overflows at 65504 and underflows
    below 6e-8, so ``clamp(min=-1e30)`` raises and a ``1e-30`` floor becomes 0, i.e. 0/0 = NaN for a
    window with no valid neighbour). The ``k`` logits per query are few, so the upcast costs nothing.
    """
    dtype = logits.dtype
    logits = logits.float().masked_fill(~mask, float("-inf"))
    top = logits.amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).min)
    e = torch.exp(logits - top) * mask
    return (e / e.sum(dim=-1, keepdim=True).clamp(min=1e-30)).to(dtype)


def _split_heads(t: torch.Tensor, h: int) -> torch.Tensor:
    """(B, S, D) -> (B, H, S, D/H)."""
    b, s, d = t.shape
    return t.view(b, s, h, d // h).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, S, dh) -> (B, S, H*dh)."""
    b, h, s, dh = t.shape
    return t.transpose(1, 2).reshape(b, s, h * dh)


# --- fusion: how a memory layer combines local attention with what it read from memory -------------
class Fusion(nn.Module):
    """Base of the fusion strategies (one small class each, chosen by name with :func:`make_fusion`).

    ``forward`` computes the local attention, reads the memory (cosine attention over the neighbours,
    :class:`KNNMemoryAttention`) and hands both to :meth:`combine`, the one thing a strategy defines.
    Returns the fused per-head output (B, H, S, dh) and diagnostics (``gate``: the share of memory).
    """

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__()
        self.h, self.dh = cfg.n_heads, cfg.d_model // cfg.n_heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query: torch.Tensor,
                mem: RetrievedMemory, memory: KNNMemoryAttention, dropout_p: float) -> tuple[torch.Tensor, dict]:
        info: dict[str, torch.Tensor] = {}
        local = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # B,H,S,dh
        m, w = memory(query, mem)  # B,H,Q,dh ; B,H,Q,k
        info["memory_weights"] = w.mean(dim=1)  # B,Q,k
        has = mem.mask.any(dim=-1)  # B,Q: did this window find any neighbour?
        m = m.expand(-1, -1, local.shape[2], -1) if m.shape[2] == 1 else m
        has_s = has if has.shape[1] == local.shape[2] else has.expand(-1, local.shape[2])  # B,S
        return self.combine(local, m, has_s, info), info

    def combine(self, local: torch.Tensor, m: torch.Tensor, has: torch.Tensor, info: dict) -> torch.Tensor:
        raise NotImplementedError


class GatedFusion(Fusion):
    """``g = sigmoid(W [local; memory] + b)`` per dimension; output ``(1 - g) * local + g * memory``."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        d = cfg.d_model
        self.gate = nn.Linear(2 * d, d)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, cfg.gate_bias)

    def combine(self, local, m, has, info):
        lm, mm = _merge_heads(local), _merge_heads(m)
        g = torch.sigmoid(self.gate(torch.cat([lm, mm], dim=-1))) * has[..., None]  # B,S,D
        info["gate"] = g.mean(dim=-1)  # B,S: share of memory
        return _split_heads(lm * (1 - g) + mm * g, self.h)


class HeadGateFusion(Fusion):
    """One learned gate per head, independent of the content: ``g_h = sigmoid(b_h)``."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        self.head_gate = nn.Parameter(torch.full((self.h,), float(cfg.gate_bias)))

    def combine(self, local, m, has, info):
        g = torch.sigmoid(self.head_gate)[None, :, None, None] * has[:, None, :, None]  # B,H,S,1
        info["gate"] = g.mean(dim=1).squeeze(-1)
        info["head_gate"] = torch.sigmoid(self.head_gate).detach()
        return local * (1 - g) + m * g


class ConcatFusion(Fusion):
    """A linear map of ``[local; memory]`` (memory zeroed where nothing was found); no explicit gate."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        self.mix = nn.Linear(2 * cfg.d_model, cfg.d_model)

    def combine(self, local, m, has, info):
        lm, mm = _merge_heads(local), _merge_heads(m) * has[..., None]
        return _split_heads(self.mix(torch.cat([lm, mm], dim=-1)), self.h)


class CrossAttentionFusion(Fusion):
    """Each position's query attends over its two sources: the local context and the memory read-out."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        d = cfg.d_model
        self.src_q = nn.Linear(d, d)
        self.src_k = nn.Linear(d, d, bias=False)  # a key bias cancels in the softmax
        self.src_v = nn.Linear(d, d)

    def combine(self, local, m, has, info):
        lm, mm = _merge_heads(local), _merge_heads(m)
        src = torch.stack([lm, mm], dim=2)  # B,S,2,D
        b, s, _, d = src.shape
        qq = self.src_q(lm).view(b, s, self.h, 1, self.dh)
        kk = self.src_k(src).view(b, s, 2, self.h, self.dh).transpose(2, 3)  # B,S,H,2,dh
        vv = self.src_v(src).view(b, s, 2, self.h, self.dh).transpose(2, 3)
        logits = (qq * kk).sum(-1) / math.sqrt(self.dh)  # B,S,H,2
        valid = torch.stack([torch.ones_like(has), has], dim=-1)[:, :, None, :]  # B,S,1,2
        a = _masked_softmax(logits, valid)
        info["gate"] = a[..., 1].mean(dim=-1)
        out = (a.unsqueeze(-1) * vv).sum(dim=-2)  # B,S,H,dh
        return out.transpose(1, 2)


class JointSoftmaxFusion(Fusion):
    """One softmax over [S local keys; k memory keys] per position: memory and local context compete in one
    attention (as in Memorizing Transformers), so the share of memory is the attention mass it wins."""

    def forward(self, q, k, v, query, mem, memory, dropout_p):
        info: dict[str, torch.Tensor] = {}
        mk, mv = memory.project(mem)  # B,H,Q,k,dh
        local_logits = q @ k.transpose(-1, -2) / math.sqrt(self.dh)  # B,H,S,S'
        # a position's memory query = its attention query plus the window's retrieval query (same key space
        # as the search, so the key projection learns too); a later memory layer uses its own hidden state
        b, qn_ = query.shape[:2]
        qm = memory.q_proj(query).view(b, qn_, self.h, self.dh).transpose(1, 2)  # B,H,Q,dh
        qn = F.normalize(q + qm, dim=-1).unsqueeze(-2)  # B,H,S,1,dh
        mem_logits = (qn @ mk.transpose(-1, -2)).squeeze(-2) * memory.scale  # B,H,S,k
        logits = torch.cat([local_logits, mem_logits], dim=-1)
        s_len = q.shape[2]
        mmask = mem.mask[:, None]  # B,1,Q,k
        mmask = mmask.expand(-1, 1, s_len, -1) if mmask.shape[2] == 1 else mmask
        mask = torch.cat([torch.ones_like(local_logits[:, :1], dtype=torch.bool), mmask], dim=-1)
        a = _masked_softmax(logits, mask)
        if dropout_p > 0:
            a = F.dropout(a, dropout_p)
        n_loc = k.shape[2]
        out = a[..., :n_loc] @ v + (a[..., n_loc:].unsqueeze(-2) @ mv).squeeze(-2)
        am = a[..., n_loc:]
        info["gate"] = am.sum(-1).mean(dim=1)  # B,S: attention mass on memory
        am32 = am.float()  # float32: a 1e-30 floor is 0 in float16, and 0/0 would be NaN for an empty memory
        info["memory_weights"] = (am32 / am32.sum(-1, keepdim=True).clamp(min=1e-30)).mean(dim=1).to(am.dtype)  # B,S,k
        return out, info


def make_fusion(cfg: MemoryTransformerConfig) -> Fusion:
    """The fusion module ``cfg.fusion`` (and, for ``"gated"``, ``cfg.gate``) names."""
    if cfg.fusion == "gated":
        return GatedFusion(cfg) if cfg.gate == "content" else HeadGateFusion(cfg)
    return {"concat": ConcatFusion, "cross_attention": CrossAttentionFusion, "joint": JointSoftmaxFusion}[cfg.fusion](cfg)


class MemoryEncoderLayer(nn.Module):
    """Pre-norm encoder layer; with memory, the local attention and kNN attention are fused
    (:attr:`fusion`, one of the :class:`Fusion` strategies).

    ``forward`` returns the new hidden states and a dict of diagnostics (gate, memory weights).

    ``own_query``: this memory layer is not the first one, so the shared retrieval key (a function of the
    *first* memory layer's input) says nothing about what this layer has computed since. It therefore
    re-scores the shared neighbours with a learned projection of its own pre-norm hidden state at the query
    positions (the last token, or every position with ``retrieval="position"``). The kNN search stays
    shared: it must use the one key definition the stored keys were made with.
    """

    def __init__(self, cfg: MemoryTransformerConfig, with_memory: bool, own_query: bool = False):
        super().__init__()
        self.cfg = cfg
        d, self.h = cfg.d_model, cfg.n_heads
        self.dh = d // self.h
        self.with_memory = with_memory
        self.own_query = with_memory and own_query
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_ff, d))
        if with_memory:
            self.memory = KNNMemoryAttention(cfg, query_dim=d if self.own_query else None)
            self.fusion = make_fusion(cfg)

    def forward(
        self,
        x: torch.Tensor,
        mem: RetrievedMemory | None = None,
        query: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` (B, S, D); ``mem``/``query`` (B, Q, key_dim) when this layer uses memory.

        ``last_only`` computes the output for the last position only (keys/values still use every position):
        the prediction heads read only that token, so the last layer can skip the other S-1 outputs.
        With ``own_query`` the given ``query`` is replaced by this layer's own normalised hidden state.
        """
        info: dict[str, torch.Tensor] = {}
        hn = self.norm1(x)
        q, k, v = self.qkv(hn).chunk(3, dim=-1)
        if self.own_query and mem is not None:
            query = hn[:, -1:] if mem.keys.shape[1] == 1 else hn  # B,Q,D at the retrieval's query positions
        if last_only:
            q = q[:, -1:]
            x = x[:, -1:]
            if mem is not None:
                mem = mem.last()
                query = query[:, -1:]
        q, k, v = _split_heads(q, self.h), _split_heads(k, self.h), _split_heads(v, self.h)
        p = self.cfg.attn_dropout if self.training else 0.0
        if self.with_memory and mem is not None:
            fused, info = self.fusion(q, k, v, query, mem, self.memory, p)
        else:
            fused = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # B,H,S,dh
        x = x + self.drop(self.out(_merge_heads(fused)))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, info


class KNNBlend(nn.Module):
    """The kNN-blend head: mixes the neighbours' outcomes into the forecast with a learned weight
    ``lambda = sigmoid(w . h + b)`` (kNN-LM's interpolation), zero when a window found no neighbour."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__()
        self.lam = nn.Linear(cfg.d_model, 1)
        nn.init.zeros_(self.lam.weight)
        nn.init.constant_(self.lam.bias, -2.0)

    def forward(self, hidden: torch.Tensor, reg: torch.Tensor, probs: torch.Tensor, knn_ret: torch.Tensor,
                knn_cls: torch.Tensor, has: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blended (reg, probs) and the weight ``lambda`` per window."""
        lam = torch.sigmoid(self.lam(hidden).squeeze(-1)) * has
        reg = (1 - lam) * reg + lam * knn_ret
        smooth = 0.9 * knn_cls + 0.1 / 3
        probs = (1 - lam)[:, None] * probs + lam[:, None] * smooth
        return reg, probs, lam


class MemoryAugmentedTransformer(nn.Module):
    """Transformer encoder over a window of bars with kNN attention over an external memory of the past.

    Call ``model(x, memory=bank, as_of=end_time_ns)``: ``as_of`` is required with a memory (a
    :class:`MissingTimeError` otherwise), so a window never retrieves itself or a later window;
    ``as_of=NO_TIME_FILTER`` is the explicit opt-out. ``memory=None`` runs the local path only (the same
    computation as ``use_memory=False``). ``retrieved`` bypasses the search with a ready
    :class:`RetrievedMemory` (handy in lessons and tests). The output dict holds ``reg`` (standardised
    return forecast), ``pred_return`` (in return units), ``logits``/``probs`` (down, flat, up), ``position``
    (tanh), ``hidden`` (B, D), ``query_key`` (B, Q, key_dim) and diagnostics (``gate``, ``memory_weights``,
    ``memory_mask``, ``memory_indices``, ``blend``, ``knn_return``).

    Buffers ``target_scale`` and ``flat_threshold`` (set by the trainer from training labels) travel with
    the weights, so a saved model knows its own units.
    """

    def __init__(self, config: MemoryTransformerConfig):
        super().__init__()
        self.config = cfg = config
        self.embed = TokenEmbedding(cfg)
        self.register_buffer("positions", sinusoidal_positions(cfg.seq_len, cfg.d_model), persistent=False)
        mem_ids = cfg.memory_layer_ids
        # memory layers after the first re-score the shared neighbours with their own hidden state
        self.layers = nn.ModuleList(
            MemoryEncoderLayer(cfg, i in mem_ids, own_query=bool(mem_ids) and i > mem_ids[0])
            for i in range(cfg.n_layers)
        )
        self.final_norm = nn.LayerNorm(cfg.d_model)
        if cfg.use_memory:
            self.key_norm = nn.LayerNorm(cfg.d_model)
            self.key_proj = nn.Linear(cfg.d_model, cfg.key_dim)
            # the hidden-state part of the key starts tiny and grows as training finds it useful
            nn.init.normal_(self.key_proj.weight, std=0.01 / math.sqrt(cfg.d_model))
            if cfg.recent_bars:
                n_feat = len(cfg.key_features) or cfg.input_dim
                self.key_recent = nn.Linear(cfg.recent_bars * n_feat, cfg.key_dim)
                nn.init.orthogonal_(self.key_recent.weight)  # preserves cosine similarity of recent paths
                nn.init.zeros_(self.key_recent.bias)
            if cfg.knn_blend:
                self.blend = KNNBlend(cfg)
        self.reg_head = nn.Linear(cfg.d_model, 1)
        self.dir_head = nn.Linear(cfg.d_model, 3)
        self.pos_head = nn.Linear(cfg.d_model, 1)
        self.register_buffer("target_scale", torch.tensor(1.0))
        self.register_buffer("flat_threshold", torch.tensor(0.0))

    # --- the one key definition -------------------------------------------------------------
    @property
    def first_memory_layer(self) -> int | None:
        ids = self.config.memory_layer_ids
        return ids[0] if ids else None

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.config.seq_len or x.shape[2] != self.config.input_dim:
            raise ValueError(
                f"input shape {tuple(x.shape)} does not match the config (B, seq_len={self.config.seq_len}, "
                f"input_dim={self.config.input_dim}); rebuild the windows or the model."
            )
        return self.embed(x) + self.positions

    def _recent_path(self, x: torch.Tensor, per_position: bool) -> torch.Tensor:
        """The last ``key_bars`` input bars flattened: (B, 1, key_bars*F), or one such vector per position."""
        kb = self.config.recent_bars
        if self.config.key_features:
            x = x[..., list(self.config.key_features)]
        if not per_position:
            return x[:, -kb:].reshape(x.shape[0], 1, -1)
        padded = F.pad(x, (0, 0, kb - 1, 0))  # zeros before the window start
        return padded.unfold(1, kb, 1).transpose(-1, -2).reshape(x.shape[0], x.shape[1], -1)

    def _key(self, x: torch.Tensor, h: torch.Tensor, per_position: bool) -> torch.Tensor:
        """THE key function: hidden state at the first memory layer's input (+ the recent input path),
        layer-normalised and projected. Stored keys and queries both come from here."""
        if not per_position:
            h = h[:, -1:]
        key = self.key_proj(self.key_norm(h))
        if self.config.recent_bars:
            key = key + self.key_recent(self._recent_path(x, per_position))
        return key

    @torch.no_grad()
    def memory_keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys to *store* for windows ``x`` (B, key_dim): the same function that makes the queries.

        Always the last token's key (a window is remembered by where it ended), computed in whatever mode
        the model is in; the trainer calls it in eval mode so stored keys carry no dropout noise.
        """
        if not self.config.use_memory:
            raise ValueError("this model has use_memory=False: it has no memory keys.")
        h = self._embed(x)
        first = self.first_memory_layer
        for i, layer in enumerate(self.layers[:first]):
            h, _ = layer(h, last_only=i == first - 1)  # only the last token's state is needed from the last one
        return self._key(x, h, per_position=False)[:, 0]

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        memory: MemorySearch | None = None,
        as_of: Any = None,
        retrieved: RetrievedMemory | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        h = self._embed(x)
        out: dict[str, torch.Tensor] = {}
        mem = retrieved
        query = None
        last_layer = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if layer.with_memory and query is None and (memory is not None or retrieved is not None):
                query = self._key(x, h, per_position=cfg.retrieval == "position")
                out["query_key"] = query
                if mem is None:
                    mem = retrieve(memory, query, cfg.n_neighbors, as_of)
            # the heads read the last token only, so the last layer computes just that one
            h, info = layer(h, mem if layer.with_memory else None, query if layer.with_memory else None, i == last_layer)
            for name, val in info.items():
                out[name] = val[:, -1] if name != "head_gate" and val.dim() >= 2 else val
        hidden = self.final_norm(h[:, -1])
        out["hidden"] = hidden
        reg = self.reg_head(hidden).squeeze(-1)
        logits = self.dir_head(hidden)
        probs = torch.softmax(logits, dim=-1)
        if mem is not None:
            w = out.get("memory_weights")
            m = mem.last()
            valid = m.mask[:, 0]
            has = valid.any(dim=-1)
            if w is None:  # memory layer absent (should not happen) -> uniform over valid
                w = valid.float() / valid.float().sum(-1, keepdim=True).clamp(min=1)
            knn_ret = (w * m.values[:, 0, :, 0]).sum(-1)
            knn_cls = (w.unsqueeze(-1) * m.values[:, 0, :, 1:4]).sum(-2)
            n_valid = valid.sum(-1)
            up = ((m.values[:, 0, :, 0] > 0) & valid).sum(-1) / n_valid.clamp(min=1)
            out["memory_up_share"] = torch.where(n_valid > 0, up, torch.full_like(up, float("nan")))
            out.update(knn_return=knn_ret, memory_mask=valid, memory_indices=m.indices[:, 0])
            out["memory_weights"] = w
            if cfg.knn_blend:
                reg, probs, out["blend"] = self.blend(hidden, reg, probs, knn_ret, knn_cls, has)
        out["reg"] = reg
        out["pred_return"] = reg * self.target_scale
        out["logits"] = logits
        out["probs"] = probs
        out["position"] = torch.tanh(self.pos_head(hidden).squeeze(-1))
        return out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
