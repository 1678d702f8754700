"""Checks for exercises/03_model: the content gate, scaled cosine attention over neighbours, joint softmax.

Every checker feeds the learner's function its own seeded random tensors, compares with a reference
computed here, and tests the edge that usually breaks (a fully-closed gate, masked neighbours, a window
with no memory at all) without printing the expected numbers.
"""

from __future__ import annotations

from typing import Any

import torch

from ..exercise import CheckFailed, Task, _PlaceholderReturned, call_answer, is_placeholder

__all__ = ["q1", "q2", "q3"]


def _call(func: Any, *args: Any) -> Any:
    try:
        out = call_answer(func, *args)
    except (CheckFailed, _PlaceholderReturned, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - arithmetic on ____ fails with a TypeError naming it
        if "_Placeholder" in str(exc) or "____" in str(exc):
            raise _PlaceholderReturned from exc
        raise
    if isinstance(out, tuple) and any(is_placeholder(o) for o in out):
        raise _PlaceholderReturned
    return out


def _tensor(out: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what} should return a torch.Tensor, got {type(out).__name__}.")
    if tuple(out.shape) != shape:
        raise CheckFailed(f"{what} returned shape {tuple(out.shape)}; expected {shape} (check which axis you reduce).")
    if not torch.isfinite(out).all():
        raise CheckFailed(f"{what} returned NaN or inf values. A softmax over an all-masked row is the usual cause.")
    return out


# --- q1: content gate -------------------------------------------------------------------------------
def _ref_gate(local, memory, gate_logits):
    g = torch.sigmoid(gate_logits)
    return (1 - g) * local + g * memory


def _check_gate(func: Any) -> None:
    gen = torch.Generator().manual_seed(3)
    local, memory = torch.randn(4, 6, 8, generator=gen), torch.randn(4, 6, 8, generator=gen)
    logits = torch.randn(4, 6, 8, generator=gen) * 2
    out = _tensor(_call(func, local, memory, logits), (4, 6, 8), "gated_fusion")
    closed = _tensor(_call(func, local, memory, torch.full_like(logits, -50.0)), (4, 6, 8), "gated_fusion")
    if not torch.allclose(closed, local, atol=1e-5):
        if torch.allclose(closed, memory, atol=1e-5):
            raise CheckFailed("with very negative gate logits the output equals the memory path; the gate is the "
                              "share of MEMORY, so a closed gate (sigmoid -> 0) must give the local path.")
        raise CheckFailed("with very negative gate logits (gate ~ 0) the output should be the local path unchanged.")
    if torch.allclose(out, _ref_gate(local, memory, -logits), atol=1e-5):
        raise CheckFailed("local and memory are swapped: the memory path should be weighted by sigmoid(logits).")
    if not torch.allclose(out, _ref_gate(local, memory, logits), atol=1e-5):
        raise CheckFailed("values differ from (1 - g) * local + g * memory with g = sigmoid(gate_logits), per dimension.")


q1 = Task(
    "lesson03.q1",
    "Write gated_fusion(local, memory, gate_logits): mix the two paths per dimension with g = sigmoid(gate_logits).",
    _check_gate,
    hint="g = torch.sigmoid(gate_logits) is the share of memory; the local path gets the rest (1 - g).",
    solution="def gated_fusion(local, memory, gate_logits):\n    g = torch.sigmoid(gate_logits)\n"
    "    return (1 - g) * local + g * memory",
)


# --- q2: scaled cosine attention over neighbours ---------------------------------------------------------
def _ref_cosine(query, keys, values, mask, scale):
    q = torch.nn.functional.normalize(query, dim=-1)
    k = torch.nn.functional.normalize(keys, dim=-1)
    logits = (k @ q.unsqueeze(-1)).squeeze(-1) * scale
    logits = logits.masked_fill(~mask, float("-inf"))
    w = torch.softmax(logits, dim=-1)
    w = torch.nan_to_num(w, nan=0.0)
    return (w.unsqueeze(-1) * values).sum(-2), w


def _check_cosine(func: Any) -> None:
    gen = torch.Generator().manual_seed(7)
    b, k, d, v = 5, 6, 8, 3
    query = torch.randn(b, d, generator=gen)
    keys = torch.randn(b, k, d, generator=gen) * torch.rand(b, k, 1, generator=gen) * 5  # varied norms
    values = torch.randn(b, k, v, generator=gen)
    mask = torch.rand(b, k, generator=gen) > 0.3
    mask[0] = False  # a window with no resolved memory yet
    mask[1] = True
    res = _call(func, query, keys, values, mask, 10.0)
    if not (isinstance(res, tuple) and len(res) == 2):
        raise CheckFailed("return a tuple (output, weights).")
    out = _tensor(res[0], (b, v), "output")
    w = _tensor(res[1], (b, k), "weights")
    ref_out, ref_w = _ref_cosine(query, keys, values, mask, 10.0)
    if (w[~mask].abs() > 1e-6).any():
        raise CheckFailed("masked neighbours received attention weight; set their logits to -inf before the softmax.")
    if w[0].abs().sum() > 1e-6 or out[0].abs().sum() > 1e-6:
        raise CheckFailed("a window whose neighbours are all masked should get zero weights and a zero output.")
    raw = (keys @ query.unsqueeze(-1)).squeeze(-1) * 10.0
    if torch.allclose(w[1], torch.softmax(raw[1], -1), atol=1e-4):
        raise CheckFailed("the weights use raw dot products; L2-normalise query and keys first (cosine similarity).")
    if not torch.allclose(w, ref_w, atol=1e-4):
        raise CheckFailed("weights differ from softmax(scale * cosine(query, key)) over the valid neighbours.")
    if not torch.allclose(out, ref_out, atol=1e-4):
        raise CheckFailed("weights look right but the output is not the weighted sum of the values.")


q2 = Task(
    "lesson03.q2",
    "Write cosine_attention(query, keys, values, mask, scale) -> (output, weights) over k neighbours per window.",
    _check_cosine,
    hint="F.normalize both, logits = scale * (keys @ query[..., None]).squeeze(-1); masked_fill(~mask, -inf); "
    "softmax; replace the NaN of all-masked rows with 0.",
    solution=(
        "def cosine_attention(query, keys, values, mask, scale):\n"
        "    q = F.normalize(query, dim=-1)\n    k = F.normalize(keys, dim=-1)\n"
        "    logits = (k @ q.unsqueeze(-1)).squeeze(-1) * scale\n"
        "    w = torch.softmax(logits.masked_fill(~mask, float('-inf')), dim=-1).nan_to_num(0.0)\n"
        "    return (w.unsqueeze(-1) * values).sum(-2), w"
    ),
)


# --- q3: joint softmax over [context; memory] -----------------------------------------------------------
def _ref_joint_share(local_logits, memory_logits, memory_mask):
    m = memory_logits.masked_fill(~memory_mask, float("-inf"))
    a = torch.softmax(torch.cat([local_logits, m], dim=-1), dim=-1)
    return a[..., local_logits.shape[-1]:].sum(-1)


def _check_joint(func: Any) -> None:
    gen = torch.Generator().manual_seed(11)
    local = torch.randn(4, 10, generator=gen)
    mem = torch.randn(4, 5, generator=gen) + 1.0
    mask = torch.rand(4, 5, generator=gen) > 0.4
    mask[0] = False
    mask[1] = True
    share = _tensor(_call(func, local, mem, mask), (4,), "memory_share")
    if share[0].abs() > 1e-6:
        raise CheckFailed("with every memory slot masked, no attention may go to memory (share must be 0).")
    if ((share < -1e-6) | (share > 1 + 1e-6)).any():
        raise CheckFailed("a share of attention must lie in [0, 1].")
    separate = torch.softmax(mem[1], -1).sum()
    if torch.isclose(share[1], separate):
        raise CheckFailed("you normalised memory on its own; the point is ONE softmax over [context; memory].")
    if not torch.allclose(share, _ref_joint_share(local, mem, mask), atol=1e-5):
        raise CheckFailed("the share differs from the attention mass on memory slots of one joint softmax.")


q3 = Task(
    "lesson03.q3",
    "Write memory_share(local_logits, memory_logits, memory_mask): the attention mass on memory in one joint softmax.",
    _check_joint,
    hint="torch.cat([local_logits, memory_logits.masked_fill(~memory_mask, -inf)], -1), one softmax, then sum the "
    "last k columns.",
    solution=(
        "def memory_share(local_logits, memory_logits, memory_mask):\n"
        "    m = memory_logits.masked_fill(~memory_mask, float('-inf'))\n"
        "    a = torch.softmax(torch.cat([local_logits, m], dim=-1), dim=-1)\n"
        "    return a[..., local_logits.shape[-1]:].sum(-1)"
    ),
)
