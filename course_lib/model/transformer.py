"""The encoder layer with memory, the kNN-blend head and the memory-augmented transformer."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (
    KNNMemoryAttention,
    TokenEmbedding,
    _merge_heads,
    _split_heads,
    sinusoidal_positions,
)
from .config import N_MEMORY_STATS, MemoryTransformerConfig
from .fusion import (
    make_fusion,
)
from .retrieval import MemorySearch, RetrievedMemory, memory_stats, retrieve, standardise_stats


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
        self.reads_stats = cfg.gate_inputs == "memory"
        if self.reads_stats:
            self.stats_norm = nn.BatchNorm1d(N_MEMORY_STATS, affine=False)
            self.lam_stats = nn.Linear(N_MEMORY_STATS, 1, bias=False)
            nn.init.zeros_(self.lam_stats.weight)

    def forward(self, hidden: torch.Tensor, reg: torch.Tensor, probs: torch.Tensor, knn_ret: torch.Tensor,
                knn_cls: torch.Tensor, has: torch.Tensor,
                stats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blended (reg, probs) and the weight ``lambda`` per window (``stats``: (B, n) retrieval statistics)."""
        logit = self.lam(hidden).squeeze(-1)
        if self.reads_stats and stats is not None:
            logit = logit + self.lam_stats(standardise_stats(self.stats_norm, stats).to(logit.dtype)).squeeze(-1)
        lam = torch.sigmoid(logit) * has
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
        attend = cfg.memory_attention
        self.layers = nn.ModuleList(
            MemoryEncoderLayer(cfg, attend and i in mem_ids, own_query=bool(mem_ids) and i > mem_ids[0])
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
            if i == self.first_memory_layer and query is None and (memory is not None or retrieved is not None):
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
            if w is None:  # no memory attention (memory_attention=False): softmax of the search similarity
                s = m.scores[:, 0] if m.scores is not None else torch.zeros_like(valid, dtype=torch.float32)
                logits = torch.where(valid, s.float() / cfg.temperature, torch.full_like(s.float(), -1e9))
                w = torch.softmax(logits, dim=-1) * valid
                w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
            knn_ret = (w * m.values[:, 0, :, 0]).sum(-1)
            knn_cls = (w.unsqueeze(-1) * m.values[:, 0, :, 1:4]).sum(-2)
            n_valid = valid.sum(-1)
            up = ((m.values[:, 0, :, 0] > 0) & valid).sum(-1) / n_valid.clamp(min=1)
            out["memory_up_share"] = torch.where(n_valid > 0, up, torch.full_like(up, float("nan")))
            out.update(knn_return=knn_ret, memory_mask=valid, memory_indices=m.indices[:, 0])
            out["memory_weights"] = w
            if cfg.knn_blend:
                stats = memory_stats(m, w[:, None])[:, 0] if self.blend.reads_stats else None
                reg, probs, out["blend"] = self.blend(hidden, reg, probs, knn_ret, knn_cls, has, stats)
        out["reg"] = reg
        out["pred_return"] = reg * self.target_scale
        out["logits"] = logits
        out["probs"] = probs
        out["position"] = torch.tanh(self.pos_head(hidden).squeeze(-1))
        return out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
