"""Lesson 03 and 04 checks: right answers pass, blanks are 'not attempted', the typical mistakes fail with a
message that names the mistake without revealing the expected numbers."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from course_lib import ____
from course_lib.checks import lesson03 as l3
from course_lib.checks import lesson04 as l4


def _raise(*args):
    raise NotImplementedError


def assert_incorrect(task, answer, words: str) -> None:
    """Incorrect, the message names the mistake (``words``, a regex) and prints no decimal number."""
    res = task.evaluate(answer)
    assert res.status == "incorrect", res
    assert re.search(words, res.message), res.message
    assert not re.search(r"\d\.\d", res.message), f"message reveals a value: {res.message}"


# --- lesson 03 q1: content gate ----------------------------------------------------------------------------
def gate_right(local, memory, gate_logits):
    g = torch.sigmoid(gate_logits)
    return (1 - g) * local + g * memory


def test_l3_q1_gate_right_answers():
    assert l3.q1.evaluate(gate_right).status == "correct"
    assert l3.q1.evaluate(lambda loc, m, g: torch.lerp(loc, m, torch.sigmoid(g))).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda loc, m, g: torch.sigmoid(g) * loc + (1 - torch.sigmoid(g)) * m, "share of MEMORY"),
    (lambda loc, m, g: (1 - g) * loc + g * m, "local path unchanged"),  # forgot the sigmoid
    (lambda loc, m, g: gate_right(loc, m, g.mean(-1, keepdim=True)), "per dimension"),  # one gate per token
    (lambda loc, m, g: gate_right(loc, m, g).mean(-1), "shape"),
    (lambda loc, m, g: gate_right(loc, m, g).numpy(), "torch.Tensor"),
])
def test_l3_q1_gate_typical_mistakes(answer, words):
    assert_incorrect(l3.q1, answer, words)


# --- lesson 03 q2: scaled cosine attention over neighbours ------------------------------------------------------
def cosine_right(query, keys, values, mask, scale):
    q, k = F.normalize(query, dim=-1), F.normalize(keys, dim=-1)
    logits = (k @ q.unsqueeze(-1)).squeeze(-1) * scale
    w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return (w.unsqueeze(-1) * values).sum(-2), w


def _cosine_with(logits_fn, finish=lambda w, values: (w.unsqueeze(-1) * values).sum(-2)):
    def answer(query, keys, values, mask, scale):
        w = torch.softmax(logits_fn(query, keys, mask, scale), dim=-1).nan_to_num(0.0)
        return finish(w, values), w
    return answer


def _cos(query, keys):
    return (F.normalize(keys, dim=-1) @ F.normalize(query, dim=-1).unsqueeze(-1)).squeeze(-1)


def test_l3_q2_cosine_right_answer():
    assert l3.q2.evaluate(cosine_right).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (_cosine_with(lambda q, k, m, s: ((k @ q.unsqueeze(-1)).squeeze(-1) * s).masked_fill(~m, float("-inf"))),
     "raw dot products"),
    (_cosine_with(lambda q, k, m, s: _cos(q, k) * s), "masked neighbours"),
    (_cosine_with(lambda q, k, m, s: _cos(q, k).masked_fill(~m, float("-inf"))), "weights differ"),  # no scale
    (_cosine_with(lambda q, k, m, s: (_cos(q, k) * s).masked_fill(~m, float("-inf")),
                  finish=lambda w, values: (w.unsqueeze(-1) * values).mean(-2)), "weighted sum"),
    (lambda q, k, v, m, s: cosine_right(q, k, v, m, s)[0], "tuple"),
    (lambda q, k, v, m, s: (cosine_right(q, k, v, m, s)[0],
                            torch.softmax((_cos(q, k) * s).masked_fill(~m, float("-inf")), -1)), "NaN"),
])
def test_l3_q2_cosine_typical_mistakes(answer, words):
    assert_incorrect(l3.q2, answer, words)


# --- lesson 03 q3: joint softmax over [context; memory] ---------------------------------------------------------
def share_right(local_logits, memory_logits, memory_mask):
    m = memory_logits.masked_fill(~memory_mask, float("-inf"))
    a = torch.softmax(torch.cat([local_logits, m], dim=-1), dim=-1)
    return a[..., local_logits.shape[-1]:].sum(-1)


def test_l3_q3_joint_right_answer():
    assert l3.q3.evaluate(share_right).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda loc, m, mask: torch.softmax(m.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0).sum(-1),
     "ONE softmax"),
    (lambda loc, m, mask: torch.softmax(torch.cat([loc, m], -1), -1)[..., loc.shape[-1]:].sum(-1), "masked"),
    (lambda loc, m, mask: 1 - share_right(loc, m, mask), "masked"),  # the local share
    (lambda loc, m, mask: share_right(loc, m * 2, mask), "differs"),
    (lambda loc, m, mask: torch.softmax(torch.cat([loc, m.masked_fill(~mask, float("-inf"))], -1), -1), "shape"),
])
def test_l3_q3_joint_typical_mistakes(answer, words):
    assert_incorrect(l3.q3, answer, words)


# --- lesson 04 q1: the causal memory mask ------------------------------------------------------------------------
def test_l4_q1_mask_right_answers():
    assert l4.q1.evaluate(lambda as_of, avail: avail[None, :] <= as_of[:, None]).status == "correct"
    assert l4.q1.evaluate(lambda as_of, avail: np.greater_equal.outer(as_of, avail)).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda as_of, avail: avail[None, :] >= as_of[:, None], "OWN window|look-ahead"),
    (lambda as_of, avail: np.ones((len(as_of), len(avail)), bool), "OWN window"),
    (lambda as_of, avail: avail[:, None] <= as_of[None, :], "shape"),
    (lambda as_of, avail: (avail[None, :] <= as_of[:, None]).astype(int), "booleans"),
    (lambda as_of, avail: avail[None, :] < as_of[:, None], "available_at == as_of is usable"),
])
def test_l4_q1_mask_typical_mistakes(answer, words):
    assert_incorrect(l4.q1, answer, words)


# --- lesson 04 q2: warm-up + cosine schedule ------------------------------------------------------------------
def lr_right(step, total, base, warmup, floor):
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def test_l4_q2_lr_right_answer():
    assert l4.q2.evaluate(lr_right).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda s, t, b, w, f: lr_right(s + w, t + w, b, w, f), "warm-up starts near zero"),  # no warm-up
    (lambda s, t, b, w, f: lr_right(s, t, b, w, 0.0), "near base \\* floor"),  # decays to zero
    (lambda s, t, b, w, f: b * s / w if s < w else lr_right(s, t, b, w, f), "rise linearly"),
    (lambda s, t, b, w, f: lr_right(s, t, b, w, f) if s < w else b * (1 - (1 - f) * (s - w) / (t - 1 - w)),
     "decay differs"),  # linear decay to the floor
    (lambda s, t, b, w, f: lr_right(s, t, b, w, f) if s < w
     else b * (f + (1 - f) * 0.5 * (1 + math.cos(2 * math.pi * (s - w) / (t - w)))), "never increase"),  # 2 cycles
])
def test_l4_q2_lr_typical_mistakes(answer, words):
    assert_incorrect(l4.q2, answer, words)


# --- lesson 04 q3: refreshing stale keys --------------------------------------------------------------------
def refresh_right(model, bank, slots, X, batch_size):
    was = model.training
    model.eval()
    with torch.no_grad():
        keys = torch.cat([model.memory_keys(torch.from_numpy(X[i:i + batch_size])) for i in range(0, len(X), batch_size)])
    bank.update_keys(slots, keys.numpy())
    model.train(was)


def refresh_variant(eval_mode=True, no_grad=True, restore=True, use_slots=True, write=True):
    def answer(model, bank, slots, X, batch_size):
        was = model.training
        if eval_mode:
            model.eval()
        with torch.set_grad_enabled(not no_grad):
            keys = torch.cat([model.memory_keys(torch.from_numpy(X[i:i + batch_size]))
                              for i in range(0, len(X), batch_size)])
        if write:
            bank.update_keys(slots if use_slots else np.arange(len(X)), keys.detach().numpy())
        if restore:
            model.train(was)
    return answer


def test_l4_q3_refresh_right_answers():
    assert l4.q3.evaluate(refresh_right).status == "correct"
    assert l4.q3.evaluate(refresh_variant()).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (refresh_variant(write=False), "update_keys"),
    (refresh_variant(eval_mode=False), "dropout"),
    (refresh_variant(no_grad=False), "no_grad"),
    (refresh_variant(restore=False), "restore the model's training mode"),
    (refresh_variant(use_slots=False), "outside the given slots"),
])
def test_l4_q3_refresh_typical_mistakes(answer, words):
    assert_incorrect(l4.q3, answer, words)


# --- lesson 04 q4: information coefficient -----------------------------------------------------------------
def test_l4_q4_ic_right_answers():
    assert l4.q4.evaluate(lambda p, y: pd.Series(p).rank().corr(pd.Series(y).rank())).status == "correct"
    assert l4.q4.evaluate(lambda p, y: np.corrcoef(pd.Series(p).rank(), pd.Series(y).rank())[0, 1]).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda p, y: np.corrcoef(p, y)[0, 1], "Pearson"),
    (lambda p, y: np.corrcoef(np.argsort(p), np.argsort(y))[0, 1], "differs"),  # argsort is not a rank
    (lambda p, y: -pd.Series(p).rank().corr(pd.Series(y).rank()), "differs"),
])
def test_l4_q4_ic_typical_mistakes(answer, words):
    assert_incorrect(l4.q4, answer, words)


# --- blanks ---------------------------------------------------------------------------------------------------
ALL_TASKS = [l3.q1, l3.q2, l3.q3, l4.q1, l4.q2, l4.q3, l4.q4]


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_blank_or_not_implemented_is_not_attempted(task):
    assert task.evaluate().status == "not attempted"
    assert task.evaluate(____).status == "not attempted"
    assert task.evaluate(lambda *a: ____).status == "not attempted"
    assert task.evaluate(_raise).status == "not attempted"


@pytest.mark.parametrize("task, answer", [
    (l3.q1, lambda loc, m, g: (1 - ____) * loc + ____ * m),  # arithmetic on the blank
    (l3.q2, lambda q, k, v, m, s: (____, ____)),
    (l3.q3, lambda loc, m, mask: torch.softmax(____, -1)),  # a torch call on the blank
    (l4.q2, lambda s, t, b, w, f: b * ____),
    (l4.q4, lambda p, y: ____.corr(pd.Series(y))),
])
def test_partly_filled_blanks_are_not_attempted(task, answer):
    res = task.evaluate(answer)
    assert res.status == "not attempted", res


def test_check_prints_marker(capsys):
    l3.q1.check(gate_right)
    l4.q1.check()
    out = capsys.readouterr().out
    assert "[check] lesson03.q1: correct" in out and "[check] lesson04.q1: not attempted" in out
