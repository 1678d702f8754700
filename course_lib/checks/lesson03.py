"""Checks for exercises/03_model: the content gate, scaled cosine attention over neighbours, joint softmax, and
an experiment with the ``joint`` fusion of the course model.

Every checker feeds the learner's function its own seeded random tensors, compares with a reference
computed here, and tests the edge that usually breaks (a fully-closed gate, masked neighbours, a window
with no memory at all) without printing the expected numbers. The experiment tasks (q4, q5) build the same
seeded, untrained models here and compare.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from ..exercise import CheckFailed, Task
from ._common import call as _call
from ._common import choice_checker, format_options

__all__ = ["BUGGY_COSINE_ATTENTION", "EXPERIMENT", "q1", "q2", "q3", "q4", "q5"]


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
            raise CheckFailed("with very negative gate logits the output equals the memory path; the logits say how "
                              "much to trust MEMORY, so very negative ones must leave the local path alone.")
        raise CheckFailed("with very negative gate logits (gate ~ 0) the output should be the local path unchanged.")
    if torch.allclose(out, _ref_gate(local, memory, -logits), atol=1e-5):
        raise CheckFailed("local and memory are swapped: large logits must favour the memory path.")
    if not torch.allclose(out, _ref_gate(local, memory, logits), atol=1e-5):
        per_token = _ref_gate(local, memory, logits.mean(-1, keepdim=True))
        if torch.allclose(out, per_token, atol=1e-5):
            raise CheckFailed("one blend per token: the task asks for one per dimension, each with its own logit.")
        raise CheckFailed("not a smooth blend whose two weights add up to one in every dimension: check how a logit "
                          "becomes a share between 0 and 1, element by element.")


q1 = Task(
    "lesson03.q1",
    "Write gated_fusion(local, memory, gate_logits): blend, per dimension, the local attention output with the "
    "memory read-out; the logits say how much to trust memory (very negative: local only, very positive: memory "
    "only, smoothly in between) and the two weights always add up to one.",
    _check_gate,
    hint=(
        "Which function maps any real number smoothly onto a share between 0 and 1?",
        "Squash the logits into a share with the logistic function. That share weighs the memory path, one "
        "minus it weighs the local path, element by element.",
    ),
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


#: The version the exercise hands out: it runs, and it is wrong in two places (the learner finds and fixes them).
BUGGY_COSINE_ATTENTION = """def cosine_attention(query, keys, values, mask, scale):
    q = F.normalize(query, dim=0)
    k = F.normalize(keys, dim=-1)
    logits = (k @ q.unsqueeze(-1)).squeeze(-1) * scale
    weights = torch.softmax(logits, dim=-1) * mask      # invalid neighbours get no weight
    output = (weights.unsqueeze(-1) * values).sum(-2)
    return output, weights
"""


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
    alone = _call(func, query[2:3], keys[2:3], values[2:3], mask[2:3], 10.0)
    if isinstance(alone, tuple) and len(alone) == 2 and not torch.allclose(alone[1], w[2:3], atol=1e-5):
        raise CheckFailed("a window's weights change when other windows share its batch: each window's attention "
                          "must depend on its own query and keys only (look at what each normalisation runs over).")
    if (w[~mask].abs() > 1e-6).any():
        raise CheckFailed("masked neighbours received attention weight: they must be kept out of the softmax.")
    if w[0].abs().sum() > 1e-6 or out[0].abs().sum() > 1e-6:
        raise CheckFailed("a window whose neighbours are all masked should get zero weights and a zero output.")
    valid = mask.any(-1)
    if not torch.allclose(w[valid].sum(-1), torch.ones(int(valid.sum())), atol=1e-5):
        raise CheckFailed("the weights of a window with valid neighbours do not add up to one: the masked "
                          "neighbours' share was taken away after the softmax instead of being kept out of it.")
    raw = (keys @ query.unsqueeze(-1)).squeeze(-1) * 10.0
    if torch.allclose(w[1], torch.softmax(raw[1], -1), atol=1e-4):
        raise CheckFailed("the weights depend on the keys' lengths: only their direction may count.")
    if not torch.allclose(w, ref_w, atol=1e-4):
        raise CheckFailed("the weights are not a softmax, over the valid neighbours, of the direction similarity "
                          "sharpened by scale.")
    if not torch.allclose(out, ref_out, atol=1e-4):
        raise CheckFailed("weights look right but the output is not the weighted sum of the values.")


q2 = Task(
    "lesson03.q2",
    "Fix cosine_attention(query, keys, values, mask, scale) -> (output, weights): the version in the exercise runs "
    "but has two bugs. It should attend over each window's k neighbours by how alike in direction each key is to "
    "the query, sharpened by scale, ignoring masked neighbours; a window with no valid neighbour gets zero "
    "weights and a zero output. Find both bugs and fix them.",
    _check_cosine,
    hint=(
        "Give it one window alone, then the same window inside the batch: does its answer change? And do a "
        "window's weights add up to one?",
        "One normalisation runs across the windows of the batch instead of within each vector. The mask is "
        "applied after the softmax, so the weights left over no longer add up to one: masked neighbours have to "
        "be kept out of the softmax itself (minus infinity before it), and a row with nothing valid then needs "
        "its undefined weights turned into zeros.",
    ),
    solution=(
        "def cosine_attention(query, keys, values, mask, scale):\n"
        "    q = F.normalize(query, dim=-1)          # bug 1: dim=0 normalised across the batch\n"
        "    k = F.normalize(keys, dim=-1)\n"
        "    logits = (k @ q.unsqueeze(-1)).squeeze(-1) * scale\n"
        "    logits = logits.masked_fill(~mask, float('-inf'))  # bug 2: mask BEFORE the softmax\n"
        "    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)\n"
        "    output = (weights.unsqueeze(-1) * values).sum(-2)\n"
        "    return output, weights"
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
    "Write memory_share(local_logits, memory_logits, memory_mask): when memory slots compete with the window's own "
    "bars inside ONE softmax, how much of the attention goes to memory? Masked memory slots get none.",
    _check_joint,
    hint=(
        "A softmax over the memory logits alone always gives memory everything: what must the softmax run over?",
        "Mask the memory logits with minus infinity, join them after the local logits along the last axis, "
        "take one softmax over the joined row and add up the part that falls on the memory columns.",
    ),
    solution=(
        "def memory_share(local_logits, memory_logits, memory_mask):\n"
        "    m = memory_logits.masked_fill(~memory_mask, float('-inf'))\n"
        "    a = torch.softmax(torch.cat([local_logits, m], dim=-1), dim=-1)\n"
        "    return a[..., local_logits.shape[-1]:].sum(-1)"
    ),
)


# --- q4, q5: experiment - where the joint fusion starts ----------------------------------------------------
EXPERIMENT = {"start": "2013-01-01", "seq_len": 32, "d_model": 32, "n_windows": 64, "seed": 0}


@lru_cache(maxsize=8)
def _initial_share(fusion: str, n_neighbors: int) -> float:
    """Mean memory share of the untrained model on the first test windows (the study of q4/q5)."""
    from dataclasses import replace

    from ..model import MemoryTransformerConfig
    from ..training import MemoryTransformerTrainer, TrainerConfig

    e = EXPERIMENT
    splits = _splits(e["start"], e["seq_len"])
    cfg = MemoryTransformerConfig(input_dim=splits.train.n_features, seq_len=e["seq_len"], d_model=e["d_model"])
    cfg = replace(cfg, fusion=fusion, n_neighbors=n_neighbors)
    trainer = MemoryTransformerTrainer(
        cfg, TrainerConfig(seed=e["seed"], progress=False, memory_capacity=len(splits.train))
    )
    trainer.set_target_stats(splits.train.y)
    trainer.build_memory(splits.train)
    test = splits.test
    x = torch.from_numpy(test.X[: e["n_windows"]])
    with torch.no_grad():
        out = trainer.model.eval()(x, memory=trainer.memory, as_of=test.end_time_ns()[: e["n_windows"]])
    return float(out["gate"].mean())


@lru_cache(maxsize=1)
def _splits(start: str, seq_len: int):
    from ..data.loaders import load_sample
    from ..data.windows import prepare_dataset

    return prepare_dataset(load_sample("sp500").loc[start:], seq_len=seq_len)


_START_OPTIONS = {
    "a": "about n_neighbors / (seq_len + n_neighbors), within 0.05: every slot, bar or neighbour, gets about the "
    "same weight",
    "b": "clearly above that, but below one half: a memory slot gets more weight than a bar, yet the window's "
    "many bars still hold most of the attention",
    "c": "one half or more",
}


def _start_truth() -> str:
    share = _initial_share("joint", 8)
    naive = 8 / (EXPERIMENT["seq_len"] + 8)
    if abs(share - naive) <= 0.05:
        return "a"
    return "b" if share < 0.5 else "c"


def _check_start(answer: Any) -> None:
    letter = answer.strip().lower().rstrip(")") if isinstance(answer, str) else answer
    if letter == "a" and _start_truth() != "a":
        raise CheckFailed("equal weights would hold if every logit were alike. They are not: the memory slots' "
                          "logits are cosines times a large scale (the inverse of the temperature), the bars' are "
                          "scaled dot products of an untrained layer. Run it and compare.")
    choice_checker(_START_OPTIONS, _start_truth, "where the joint fusion starts")(answer)


q4 = Task(
    "lesson03.q4",
    "Predict then run: the gated model starts with a memory share of one half. The untrained joint model (settings "
    "of EXPERIMENT, n_neighbors=8) lets its 8 memory slots compete with the window's bars in ONE softmax. Before "
    "running it, choose where its mean memory share starts, then measure it and check: " + format_options(
        _START_OPTIONS),
    _check_start,
    hint=(
        "In one softmax a slot's weight grows exponentially with its logit. Are a memory slot's logits on the "
        "same scale as a bar's?",
        "Equal logits would give every slot the same weight, so memory would get its count over the total count. "
        "The memory logits are cosine similarities multiplied by the inverse temperature, which is large, while "
        "the bars' logits come from an untrained layer. Measure the share with the helper of the cell above and "
        "compare it with the count ratio and with one half.",
    ),
    solution=(
        "joint_share = initial_share('joint', 8)\n"
        "naive = 8 / (ex.EXPERIMENT['seq_len'] + 8)      # every slot the same weight\n"
        "print(joint_share, naive)\n"
        "answer = 'a' if abs(joint_share - naive) <= 0.05 else ('b' if joint_share < 0.5 else 'c')"
    ),
)

_SHARE_OPTIONS = {
    "a": "the joint model's memory share rises by more than 0.05",
    "b": "it stays within 0.05 of where it was",
    "c": "it falls by more than 0.05",
}


def _share_truth() -> str:
    change = _initial_share("joint", 32) - _initial_share("joint", 8)
    return "a" if change > 0.05 else ("c" if change < -0.05 else "b")


q5 = Task(
    "lesson03.q5",
    "Interpret: give the joint model four times as many neighbours (n_neighbors=32), nothing else changed. What "
    "happens to its memory share before training? " + format_options(_SHARE_OPTIONS),
    choice_checker(_SHARE_OPTIONS, _share_truth, "the effect of more neighbours"),
    hint=(
        "In one softmax every slot takes a share of the attention: what happens when more memory slots join the "
        "same number of local ones?",
        "Measure the share with 8 and with 32 neighbours exactly as in the previous task and compare the "
        "difference with the thresholds of the options. Then do the same for the gated model: its share does "
        "not depend on how many neighbours there are.",
    ),
    solution=(
        "change = initial_share('joint', 32) - initial_share('joint', 8)\n"
        "answer = 'a' if change > 0.05 else ('c' if change < -0.05 else 'b')"
    ),
)
