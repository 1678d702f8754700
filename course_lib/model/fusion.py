"""How a memory layer combines local attention with what it read from memory: one class per strategy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (
    KNNMemoryAttention,
    _masked_softmax,
    _merge_heads,
    _split_heads,
)
from .config import N_MEMORY_STATS, MemoryTransformerConfig
from .retrieval import RetrievedMemory, memory_stats, standardise_stats


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
        stats = None
        if getattr(self, "reads_stats", False):
            stats = memory_stats(mem, info["memory_weights"])  # B,Q,n
            stats = stats.expand(-1, local.shape[2], -1) if stats.shape[1] == 1 else stats
        return self.combine(local, m, has_s, info, stats), info

    def combine(self, local: torch.Tensor, m: torch.Tensor, has: torch.Tensor, info: dict,
                stats: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class GatedFusion(Fusion):
    """``g = sigmoid(W [local; memory] + b)`` per dimension; output ``(1 - g) * local + g * memory``.

    With ``gate_inputs="memory"`` the logit also reads the retrieval statistics (``+ U stats``, see
    :func:`~course_lib.model.memory_stats`): how similar the neighbours are and how much their outcomes agree.
    """

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        d = cfg.d_model
        self.gate = nn.Linear(2 * d, d)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, cfg.gate_bias)
        self.reads_stats = cfg.gate_inputs == "memory"
        if self.reads_stats:  # statistics standardised across windows (running, like any batch norm)
            self.stats_norm = nn.BatchNorm1d(N_MEMORY_STATS, affine=False)
            self.gate_stats = nn.Linear(N_MEMORY_STATS, d, bias=False)
            nn.init.zeros_(self.gate_stats.weight)

    def combine(self, local, m, has, info, stats=None):
        lm, mm = _merge_heads(local), _merge_heads(m)
        logit = self.gate(torch.cat([lm, mm], dim=-1))
        if stats is not None:
            logit = logit + self.gate_stats(standardise_stats(self.stats_norm, stats).to(logit.dtype))
        g = torch.sigmoid(logit) * has[..., None]  # B,S,D
        info["gate"] = g.mean(dim=-1)  # B,S: share of memory
        return _split_heads(lm * (1 - g) + mm * g, self.h)


class HeadGateFusion(Fusion):
    """One learned gate per head, independent of the content: ``g_h = sigmoid(b_h)``."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        self.head_gate = nn.Parameter(torch.full((self.h,), float(cfg.gate_bias)))

    def combine(self, local, m, has, info, stats=None):
        g = torch.sigmoid(self.head_gate)[None, :, None, None] * has[:, None, :, None]  # B,H,S,1
        info["gate"] = g.mean(dim=1).squeeze(-1)
        info["head_gate"] = torch.sigmoid(self.head_gate).detach()
        return local * (1 - g) + m * g


class ConcatFusion(Fusion):
    """A linear map of ``[local; memory]`` (memory zeroed where nothing was found); no explicit gate."""

    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__(cfg)
        self.mix = nn.Linear(2 * cfg.d_model, cfg.d_model)

    def combine(self, local, m, has, info, stats=None):
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

    def combine(self, local, m, has, info, stats=None):
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
