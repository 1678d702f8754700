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
    assert not re.search(r"sigmoid\(|\(1 - g\)|g \* memory", res.message), f"message gives the code: {res.message}"


# --- lesson 03 q1: content gate ----------------------------------------------------------------------------
def gate_right(local, memory, gate_logits):
    g = torch.sigmoid(gate_logits)
    return (1 - g) * local + g * memory


def test_l3_q1_gate_right_answers():
    assert l3.q1.evaluate(gate_right).status == "correct"
    assert l3.q1.evaluate(lambda loc, m, g: torch.lerp(loc, m, torch.sigmoid(g))).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda loc, m, g: torch.sigmoid(g) * loc + (1 - torch.sigmoid(g)) * m, "trust MEMORY"),
    (lambda loc, m, g: (1 - g) * loc + g * m, "local path unchanged"),  # forgot the sigmoid
    (lambda loc, m, g: gate_right(loc, m, g.mean(-1, keepdim=True)), "one per dimension"),  # one gate per token
    (lambda loc, m, g: gate_right(loc, m, torch.softmax(g, -1)), "local path unchanged"),  # softmax, no sigmoid
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


def _exercise_version(source: str):
    scope = {"F": F, "torch": torch}
    exec(source, scope)  # noqa: S102 - the exercise's own code, defined in the check module
    return scope["cosine_attention"]


def test_l3_q2_each_planted_bug_is_named():
    buggy = l3.BUGGY_COSINE_ATTENTION
    assert_incorrect(l3.q2, _exercise_version(buggy), "other windows share its batch")
    one_fixed = buggy.replace("dim=0", "dim=-1")
    assert_incorrect(l3.q2, _exercise_version(one_fixed), "add up to one")
    other_fixed = buggy.replace("torch.softmax(logits, dim=-1) * mask",
                                "torch.softmax(logits.masked_fill(~mask, float('-inf')), dim=-1).nan_to_num(0.0)")
    assert_incorrect(l3.q2, _exercise_version(other_fixed), "other windows share its batch")
    both = one_fixed.replace("torch.softmax(logits, dim=-1) * mask",
                             "torch.softmax(logits.masked_fill(~mask, float('-inf')), dim=-1).nan_to_num(0.0)")
    assert l3.q2.evaluate(_exercise_version(both)).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (_cosine_with(lambda q, k, m, s: ((k @ q.unsqueeze(-1)).squeeze(-1) * s).masked_fill(~m, float("-inf"))),
     "keys. lengths"),
    (_cosine_with(lambda q, k, m, s: _cos(q, k) * s), "masked neighbours"),
    (_cosine_with(lambda q, k, m, s: _cos(q, k).masked_fill(~m, float("-inf"))), "sharpened by scale"),  # no scale
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


# --- lesson 04 q1: a paired comparison over seeds -----------------------------------------------------------
def paired_right(a, b):
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def _paired(quantile, spread, paired=True):
    def answer(a, b):
        n = len(a)
        se = spread(a - b) / np.sqrt(n) if paired else np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
        half = quantile(n) * se
        m = (a - b).mean()
        return m, m - half, m + half
    return answer


def _t(n, dof=-1):
    from scipy import stats

    return stats.t.ppf(0.975, n + dof)


def test_l4_q1_paired_right_answers():
    assert l4.q1.evaluate(paired_right).status == "correct"
    assert l4.q1.evaluate(lambda a, b: list(paired_right(a, b))).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (_paired(lambda n: 1.96, lambda d: d.std(ddof=1)), "normal quantile"),
    (_paired(lambda n: _t(n, 0), lambda d: d.std(ddof=1)), "n - 1 degrees"),
    (_paired(_t, lambda d: d.std(ddof=0)), "ddof=1"),
    (_paired(_t, lambda d: d.std(ddof=1), paired=False), "independent"),
    (lambda a, b: paired_right(b, a), "sign"),
    (lambda a, b: (np.mean(a - b), np.nan, np.nan), "NaN"),
    (lambda a, b: np.mean(a - b), "three numbers"),
    (lambda a, b: (np.median(a - b), 0.0, 1.0), "mean of the per-seed differences"),
])
def test_l4_q1_paired_typical_mistakes(answer, words):
    assert_incorrect(l4.q1, answer, words)


def test_l4_q1_spread_of_single_seeds_is_named():
    answer = _paired(_t, lambda d: d.std(ddof=1) * np.sqrt(len(d)))
    assert_incorrect(l4.q1, answer, "sqrt")


# --- lesson 04 q2: warm-up + cosine schedule ------------------------------------------------------------------
def lr_right(step, total, base, warmup, floor):
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def lr_ends_on_floor(step, total, base, warmup, floor):
    """The prompt's reading: the LAST step (total - 1) sits exactly on base * floor."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / (total - 1 - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def test_l4_q2_lr_right_answer():
    assert l4.q2.evaluate(lr_right).status == "correct"
    assert l4.q2.evaluate(lr_ends_on_floor).status == "correct"


def test_l4_q2_messages_do_not_print_the_formula():
    linear = l4.q2.evaluate(lambda s, t, b, w, f: lr_right(s, t, b, w, f) if s < w
                            else b * (1 - (1 - f) * (s - w) / (t - 1 - w)))
    assert linear.status == "incorrect"
    assert not re.search(r"cos\(|\(step|\*|/ warmup", linear.message), linear.message
    ramp = l4.q2.evaluate(lambda s, t, b, w, f: b * s / w if s < w else lr_right(s, t, b, w, f))
    assert not re.search(r"\(step|\*|/ warmup", ramp.message), ramp.message


@pytest.mark.parametrize("answer, words", [
    (lambda s, t, b, w, f: lr_right(s + w, t + w, b, w, f), "warm-up starts near zero"),  # no warm-up
    (lambda s, t, b, w, f: lr_right(s, t, b, w, 0.0), "neither at zero"),  # decays to zero
    (lambda s, t, b, w, f: b * s / w if s < w else lr_right(s, t, b, w, f), "current step as done"),
    (lambda s, t, b, w, f: lr_right(s, t, b, w, f) if s < w else b * (1 - (1 - f) * (s - w) / (t - 1 - w)),
     "half a cosine"),  # linear decay to the floor
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


def refresh_train_at_end(model, bank, slots, X, batch_size):
    refresh_right(model, bank, slots, X, batch_size)
    model.train()  # "restores" training mode even for a model that came in evaluation mode


def refresh_calls_forward(model, bank, slots, X, batch_size):
    model.eval()
    with torch.no_grad():
        keys = model(torch.from_numpy(X))
    bank.update_keys(slots, keys.numpy())
    model.train()


def test_l4_q3_refresh_right_answers():
    assert l4.q3.evaluate(refresh_right).status == "correct"
    assert l4.q3.evaluate(refresh_variant()).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (refresh_variant(write=False), "update_keys"),
    (refresh_variant(eval_mode=False), "dropout"),
    (refresh_variant(no_grad=False), "no_grad"),
    (refresh_variant(restore=False), "restore the model's training mode"),
    (refresh_variant(use_slots=False), "outside the given slots"),
    (refresh_train_at_end, "evaluation mode when your function got it"),
    (refresh_calls_forward, "forward pass"),
])
def test_l4_q3_refresh_typical_mistakes(answer, words):
    assert_incorrect(l4.q3, answer, words)


# --- lesson 04 q4: information coefficient -----------------------------------------------------------------
def test_l4_q4_ic_right_answers():
    assert l4.q4.evaluate(lambda p, y: pd.Series(p).rank().corr(pd.Series(y).rank())).status == "correct"
    assert l4.q4.evaluate(lambda p, y: np.corrcoef(pd.Series(p).rank(), pd.Series(y).rank())[0, 1]).status == "correct"


@pytest.mark.parametrize("answer, words", [
    (lambda p, y: np.corrcoef(p, y)[0, 1], "raw values"),
    (lambda p, y: np.corrcoef(np.argsort(p), np.argsort(y))[0, 1], "argsort"),  # argsort is not a rank
    (lambda p, y: -pd.Series(p).rank().corr(pd.Series(y).rank()), "sign is flipped"),
    (lambda p, y: __import__("scipy.stats").stats.spearmanr(p, y), "p-value"),
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


# --- experiments: the truth is recomputed, answers are tolerant, messages reveal nothing ------------------------
def _joint_share(fusion, n_neighbors):
    from dataclasses import replace

    import course_lib as cl

    e = l3.EXPERIMENT
    splits = cl.prepare_dataset(cl.load_sample("sp500").loc[e["start"]:], seq_len=e["seq_len"])
    base = cl.MemoryTransformerConfig(input_dim=splits.train.n_features, seq_len=e["seq_len"], d_model=e["d_model"])
    cfg = replace(base, fusion=fusion, n_neighbors=n_neighbors)
    t = cl.MemoryTransformerTrainer(cfg, cl.TrainerConfig(seed=e["seed"], progress=False,
                                                          memory_capacity=len(splits.train)))
    t.set_target_stats(splits.train.y)
    t.build_memory(splits.train)
    x = torch.from_numpy(splits.test.X[: e["n_windows"]])
    with torch.no_grad():
        out = t.model.eval()(x, memory=t.memory, as_of=splits.test.end_time_ns()[: e["n_windows"]])
    return out["gate"].mean().item()


def test_l3_q4_q5_joint_share_experiment():
    joint8 = _joint_share("joint", 8)
    naive = 8 / (l3.EXPERIMENT["seq_len"] + 8)
    start = "a" if abs(joint8 - naive) <= 0.05 else ("b" if joint8 < 0.5 else "c")
    assert start != "a"  # the tempting count-ratio prediction is wrong here, which is the point of the task
    assert l3.q4.evaluate(start).passed and l3.q4.evaluate(f" {start.upper()}) ").passed
    assert "cosines times a large scale" in l3.q4.evaluate("a").message  # the usual prediction is explained
    for wrong in "bc":
        if wrong != start:
            res = l3.q4.evaluate(wrong)
            assert res.status == "incorrect" and not re.search(r"\d\.\d", res.message)
    assert l3.q4.evaluate(0.43).status == "incorrect"  # a number is not a letter
    change = _joint_share("joint", 32) - joint8
    right = "a" if change > 0.05 else ("c" if change < -0.05 else "b")
    assert l3.q5.evaluate(right).passed
    assert all(l3.q5.evaluate(x).status == "incorrect" for x in "abc" if x != right)


def test_l4_q5_q6_staleness_experiment():
    import course_lib as cl

    syn, cfg = l4.experiment_data()
    trainer = cl.MemoryTransformerTrainer(cfg, cl.TrainerConfig(epochs=1, seed=0, progress=False,
                                          refresh_keys=False, memory_capacity=len(syn.train)))
    trainer.build_memory(syn.train)
    stale = trainer.memory.keys.copy()
    trainer.fit(syn.train, syn.val)
    fresh = trainer.memory.keys.copy()
    with torch.no_grad():
        queries = trainer.model.eval().memory_keys(torch.from_numpy(syn.val.X)).numpy()

    def nearest(keys):
        bank = cl.ExternalMemoryBank(cl.MemoryConfig(key_dim=keys.shape[1], capacity=len(keys)))
        bank.add(keys, available_at=syn.train.available_at_ns())
        return bank.search(queries, k=1, as_of=syn.val.end_time_ns()).indices[:, 0]

    changed = float((nearest(stale) != nearest(fresh)).mean())
    cosine = float(((stale * fresh).sum(1) / (np.linalg.norm(stale, axis=1) * np.linalg.norm(fresh, axis=1))).mean())
    assert l4.q5.evaluate(changed).passed
    one_window = 1 / len(syn.val)
    assert l4.q5.evaluate(changed + one_window).status == "incorrect"  # off by one window is a different count
    assert l4.q5.evaluate(changed - one_window).status == "incorrect"
    assert "stayed the same" in l4.q5.evaluate(1 - changed).message
    assert "cosine" in l4.q5.evaluate(cosine).message
    right = "c" if changed == 0 else ("a" if cosine < 0.95 else "b")
    assert l4.q6.evaluate(right).passed
    assert all(l4.q6.evaluate(x).status == "incorrect" for x in "abc" if x != right)


@pytest.mark.parametrize("task", [l3.q4, l3.q5, l4.q5, l4.q6], ids=lambda t: t.name)
def test_experiment_blanks_are_not_attempted(task):
    assert task.evaluate().status == "not attempted"
    assert task.evaluate(____).status == "not attempted"


def test_l4_q3_each_planted_bug_is_named_and_the_fix_passes():
    import numpy as np

    def version(source):
        scope = {"torch": torch, "np": np}
        exec(source, scope)  # noqa: S102 - the exercise's own code, defined in the check module
        return scope["refresh"]

    buggy = l4.BUGGY_REFRESH
    assert_incorrect(l4.q3, version(buggy), "dropout")
    evaluated = buggy.replace("    keys = torch.cat", "    was = model.training\n    model.eval()\n    keys = torch.cat")
    assert_incorrect(l4.q3, version(evaluated), "gradient")
    no_grad = evaluated.replace("    keys = torch.cat([model.memory_keys(torch.from_numpy(X[i:i + batch_size]))\n"
                                "                      for i in range(0, len(X), batch_size)])",
                                "    with torch.no_grad():\n"
                                "        keys = torch.cat([model.memory_keys(torch.from_numpy(X[i:i + batch_size]))\n"
                                "                          for i in range(0, len(X), batch_size)])")
    assert no_grad != evaluated
    assert_incorrect(l4.q3, version(no_grad), "evaluation mode when your function got it")
    fixed = no_grad.replace("    model.train()\n", "    model.train(was)\n")
    assert l4.q3.evaluate(version(fixed)).status == "correct"
