"""The token embedding and the kNN memory attention (cosine scores over retrieved neighbours)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MemoryTransformerConfig
from .retrieval import RetrievedMemory


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
