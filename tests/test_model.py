"""MemoryAugmentedTransformer: shapes for every fusion/gate/retrieval mode, gradient flow, one key definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from course_lib.memory import NO_TIME_FILTER, ExternalMemoryBank, MemoryConfig, MissingTimeError
from course_lib.model import (
    FUSIONS,
    GATES,
    MemoryAugmentedTransformer,
    MemoryTransformerConfig,
    RetrievedMemory,
    _masked_softmax,
    encode_outcomes,
)

B, S, F_IN = 4, 12, 5


def tiny(**kw) -> MemoryTransformerConfig:
    base = dict(input_dim=F_IN, seq_len=S, d_model=16, n_heads=2, n_layers=2, d_ff=24, key_dim=8, n_neighbors=6)
    base.update(kw)
    return MemoryTransformerConfig(**base)


def make_bank(n: int = 40, key_dim: int = 8, seed: int = 0) -> tuple[ExternalMemoryBank, np.ndarray]:
    rng = np.random.default_rng(seed)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=key_dim, value_dim=4, capacity=max(n, 1), backend="numpy"))
    avail = np.arange(n, dtype=np.int64) * 10
    bank.add(rng.normal(size=(n, key_dim)), values=encode_outcomes(rng.normal(size=n), 1.0, 0.3),
             timestamp=avail - 5, available_at=avail)
    return bank, avail


@pytest.mark.parametrize(
    "fusion,gate,retrieval,layers",
    [c for c in itertools.product(FUSIONS, GATES, ("window", "position"), [(-1,), (0, 1)])
     if c[1] == "content" or c[0] == "gated"],  # gate="head" exists only for fusion="gated"
)
def test_shapes_and_gradients_every_variant(fusion, gate, retrieval, layers):
    torch.manual_seed(0)
    model = MemoryAugmentedTransformer(tiny(fusion=fusion, gate=gate, retrieval=retrieval, memory_layers=layers))
    bank, _ = make_bank()
    keys_before = bank.keys.copy()
    x = torch.randn(B, S, F_IN)
    out = model(x, memory=bank, as_of=np.array([0, 50, 200, 10_000]))
    assert out["reg"].shape == (B,) and out["pred_return"].shape == (B,)
    assert out["probs"].shape == (B, 3) and torch.allclose(out["probs"].sum(-1), torch.ones(B), atol=1e-5)
    assert out["position"].shape == (B,) and out["position"].abs().max() <= 1
    assert out["hidden"].shape == (B, 16)
    assert out["memory_weights"].shape == (B, 6) and out["memory_mask"].shape == (B, 6)
    q = S if retrieval == "position" else 1
    assert out["query_key"].shape == (B, q, 8)
    if fusion != "concat":
        assert out["gate"].shape == (B,)
    loss = out["reg"].sum() + out["probs"].log().sum() + out["position"].sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches {missing}"
    assert np.array_equal(bank.keys, keys_before), "the memory must stay a constant"


def test_no_memory_model_is_local_only_and_has_no_memory_weights():
    model = MemoryAugmentedTransformer(tiny(use_memory=False))
    assert not any("memory" in n or "key_proj" in n for n, _ in model.named_parameters())
    out = model(torch.randn(B, S, F_IN))
    assert out["probs"].shape == (B, 3) and "gate" not in out
    with pytest.raises(ValueError, match="use_memory=False"):
        model.memory_keys(torch.randn(B, S, F_IN))


def test_stored_keys_and_queries_are_the_same_function():
    torch.manual_seed(1)
    model = MemoryAugmentedTransformer(tiny()).eval()
    bank, _ = make_bank()
    x = torch.randn(B, S, F_IN)
    with torch.no_grad():
        out = model(x, memory=bank, as_of=np.full(B, 10**6))
        assert torch.allclose(out["query_key"][:, 0], model.memory_keys(x), atol=1e-6)


def test_empty_memory_gives_finite_outputs_and_zero_gate():
    model = MemoryAugmentedTransformer(tiny()).eval()
    bank, _ = make_bank()
    out = model(torch.randn(B, S, F_IN), memory=bank, as_of=np.full(B, -1))  # nothing resolved yet
    assert not out["memory_mask"].any()
    assert torch.isfinite(out["probs"]).all() and torch.isfinite(out["reg"]).all()
    assert torch.all(out["gate"] == 0) and torch.all(out["blend"] == 0)


def test_retrieval_respects_as_of_per_window():
    model = MemoryAugmentedTransformer(tiny()).eval()
    bank, avail = make_bank()
    as_of = np.array([25, 95, 205, 10_000])
    out = model(torch.randn(B, S, F_IN), memory=bank, as_of=as_of)
    idx, mask = out["memory_indices"].numpy(), out["memory_mask"].numpy()
    for i in range(B):
        assert np.all(avail[idx[i][mask[i]]] <= as_of[i])
        assert mask[i].sum() == min(6, int((avail <= as_of[i]).sum()))


def test_a_memory_search_without_a_time_is_refused_and_the_opt_out_is_named():
    """model(x, memory=bank) used to search with no causal filter: every window saw itself and the future."""
    model = MemoryAugmentedTransformer(tiny()).eval()
    bank, avail = make_bank()
    x = torch.randn(B, S, F_IN)
    with pytest.raises(MissingTimeError, match="NO_TIME_FILTER"):
        model(x, memory=bank)
    out = model(x, memory=bank, as_of=NO_TIME_FILTER)  # explicit: every entry, whatever its time
    assert out["memory_mask"].all()
    assert model(x)["pred_return"].shape == (B,)  # no memory, no time needed


def test_retrieved_memory_can_be_passed_directly():
    model = MemoryAugmentedTransformer(tiny(fusion="joint")).eval()
    k = 6
    mem = RetrievedMemory(
        keys=torch.nn.functional.normalize(torch.randn(B, 1, k, 8), dim=-1), values=torch.zeros(B, 1, k, 4),
        mask=torch.ones(B, 1, k, dtype=torch.bool), indices=torch.arange(k).repeat(B, 1, 1),
    )
    out = model(torch.randn(B, S, F_IN), retrieved=mem)
    assert out["memory_weights"].shape == (B, k)
    assert torch.allclose(out["memory_weights"].sum(-1), torch.ones(B), atol=1e-5)


def test_bad_configs_and_inputs_are_explained():
    with pytest.raises(ValueError, match="divisible"):
        tiny(d_model=15)
    with pytest.raises(ValueError, match="fusion"):
        tiny(fusion="sum")
    with pytest.raises(ValueError, match="memory_layers"):
        tiny(memory_layers=(5,))
    for fusion in FUSIONS:
        if fusion != "gated":
            with pytest.raises(ValueError, match=f"gate='head' only applies to fusion='gated'.*{fusion}"):
                tiny(fusion=fusion, gate="head")
    with pytest.raises(ValueError, match="unknown field"):
        MemoryTransformerConfig.from_dict({**tiny().to_dict(), "bogus": 1})
    model = MemoryAugmentedTransformer(tiny())
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.randn(B, S + 1, F_IN))


def test_config_round_trips_through_dict():
    cfg = tiny(memory_layers=(0, -1), fusion="cross_attention")
    assert MemoryTransformerConfig.from_dict(cfg.to_dict()) == cfg


def test_a_saved_config_without_a_field_whose_default_changed_loads_with_the_value_it_was_written_under():
    from course_lib.training import TrainerConfig

    old = tiny().to_dict()
    del old["gate_inputs"]  # written before the field existed, when the gate read the hidden states only
    assert MemoryTransformerConfig.from_dict(old).gate_inputs == "hidden"
    assert MemoryTransformerConfig().gate_inputs == "memory"
    old_t = TrainerConfig().to_dict()
    del old_t["decay_all"], old_t["gate_lr_scale"]
    t = TrainerConfig.from_dict(old_t)
    assert (t.decay_all, t.gate_lr_scale) == (True, 1.0)
    assert TrainerConfig.from_dict(TrainerConfig().to_dict()) == TrainerConfig()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_softmax_is_finite_and_matches_float32_in_half_precision(dtype):
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 4, 6) * 30  # scale * cosine: up to +-100 in the model
    mask = torch.rand(3, 2, 4, 6) > 0.3
    mask[0, 0, 0] = False  # a query with no valid neighbour: zeros, not NaN
    mask[1, 1, 2] = True
    ref = _masked_softmax(logits, mask)
    out = _masked_softmax(logits.to(dtype), mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=0)
    assert torch.all(out[0, 0, 0] == 0) and torch.all(out[~mask] == 0)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_under_cpu_autocast_is_finite(fusion, dtype):
    torch.manual_seed(0)
    model = MemoryAugmentedTransformer(tiny(fusion=fusion, memory_layers=(0, 1))).eval()
    bank, _ = make_bank()
    x = torch.randn(B, S, F_IN)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = model(x, memory=bank, as_of=np.array([-1, 50, 200, 10_000]))  # the first window: empty memory
    for name, val in out.items():
        if name != "memory_up_share" and val.is_floating_point():
            assert torch.isfinite(val).all(), f"{name} is not finite under {dtype} autocast"
    assert not out["memory_mask"][0].any() and out["memory_mask"][1:].any(dim=-1).all()


def _layer_memory_weights(model, x, bank, as_of) -> dict[int, torch.Tensor]:
    """Each memory layer's own memory attention weights (B, Q, k), captured with forward hooks."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out[1]["memory_weights"]))
             for i, layer in enumerate(model.layers) if layer.with_memory]
    try:
        with torch.no_grad():
            model(x, memory=bank, as_of=as_of)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_memory_layer_scores_the_neighbours_with_its_own_hidden_state(fusion):
    torch.manual_seed(0)
    model = MemoryAugmentedTransformer(tiny(fusion=fusion, memory_layers=(0, 1), dropout=0.0)).eval()
    bank, _ = make_bank()
    x, as_of = torch.randn(B, S, F_IN), np.full(B, 10_000)
    before = _layer_memory_weights(model, x, bank, as_of)
    assert set(before) == {0, 1}
    assert not torch.allclose(before[0][:, -1], before[1][:, -1], atol=1e-4), "both layers weigh alike"
    # change only what layer 0 computes: the retrieval query (made at layer 0's input) and so the neighbours
    # stay the same, but layer 1 sees a new hidden state and must weigh the same neighbours differently
    with torch.no_grad():
        model.layers[0].ff[-1].weight.add_(0.5 * torch.randn_like(model.layers[0].ff[-1].weight))
    after = _layer_memory_weights(model, x, bank, as_of)
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1], atol=1e-4), "layer 1 ignored its own hidden state"


def test_single_memory_layer_has_no_extra_query_projection():
    """The default (last layer only) keeps the key-space query: same parameters as before the per-layer fix."""
    model = MemoryAugmentedTransformer(tiny())
    assert model.layers[-1].memory.q_proj.in_features == 8 and not model.layers[-1].own_query
    deep = MemoryAugmentedTransformer(tiny(memory_layers=(0, 1)))
    assert deep.layers[0].memory.q_proj.in_features == 8 and deep.layers[1].memory.q_proj.in_features == 16


@pytest.mark.parametrize("kernel", [0, 2, 4, -1])
def test_even_or_non_positive_conv_kernel_is_refused_by_the_config(kernel):
    """An even kernel with centred padding made seq_len + 1 tokens and a broadcast error deep in forward."""
    with pytest.raises(ValueError, match=rf"conv_kernel={kernel} must be odd and >= 1"):
        tiny(conv_kernel=kernel)


@pytest.mark.parametrize("kernel", [1, 5])
def test_odd_conv_kernels_keep_one_token_per_bar(kernel):
    model = MemoryAugmentedTransformer(tiny(conv_kernel=kernel))
    assert model.embed(torch.randn(B, S, F_IN)).shape == (B, S, 16)
    out = model(torch.randn(B, S, F_IN), memory=make_bank()[0], as_of=np.full(B, 10_000))
    assert out["probs"].shape == (B, 3)


@pytest.mark.parametrize("variant", [
    dict(knn_blend=False), dict(key_bars=0), dict(learn_temperature=False), dict(key_bars=S + 5, key_features=()),
    dict(knn_blend=False, key_bars=0, learn_temperature=False, retrieval="position"),
], ids=lambda v: ",".join(f"{k}={v[k]}" for k in v))
def test_optional_parts_switch_off_cleanly_and_train(variant):
    """Shapes, a training step, and exactly the parameters each switch removes or freezes."""
    torch.manual_seed(0)
    cfg = tiny(**variant)
    model = MemoryAugmentedTransformer(cfg)
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("blend.") for n in names) == cfg.knn_blend
    assert any(n.startswith("key_recent.") for n in names) == (cfg.recent_bars > 0)
    if cfg.recent_bars:
        n_feat = len(cfg.key_features) or F_IN
        assert model.key_recent.in_features == min(cfg.key_bars, S) * n_feat
    bank, _ = make_bank()
    x, as_of = torch.randn(B, S, F_IN), np.array([0, 50, 200, 10_000])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(x, memory=bank, as_of=as_of)
    assert out["probs"].shape == (B, 3) and out["reg"].shape == (B,) and out["memory_weights"].shape == (B, 6)
    assert ("blend" in out) == cfg.knn_blend
    loss = out["reg"].pow(2).mean() - out["probs"][:, 2].log().mean() + out["position"].mean()
    loss.backward()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == ({"layers.1.memory.log_scale"} if not cfg.learn_temperature else set())
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"no gradient reaches {missing}"
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n in frozen), n
    assert torch.isfinite(model(x, memory=bank, as_of=as_of)["reg"]).all()


def test_gate_can_read_what_the_memory_knows():
    """gate_inputs="memory": the gate and the blend weight read the neighbours' similarity and agreement, so two
    windows with the same hidden state but a more or less unanimous memory get different gates."""
    import torch  # noqa: F811

    from course_lib.model import (
        MemoryAugmentedTransformer,
        MemoryTransformerConfig,
        RetrievedMemory,
        memory_stats,
    )

    cfg = MemoryTransformerConfig(input_dim=3, seq_len=8, d_model=16, n_heads=2, n_layers=1, d_ff=16, key_dim=8,
                                  n_neighbors=4, key_bars=4, gate_inputs="memory")
    torch.manual_seed(0)
    model = MemoryAugmentedTransformer(cfg).eval()
    with torch.no_grad():
        model.layers[0].fusion.gate_stats.weight.fill_(1.0)
    x = torch.randn(1, 8, 3).repeat(2, 1, 1)
    keys = torch.nn.functional.normalize(torch.randn(2, 1, 4, 8), dim=-1)
    values = torch.zeros(2, 1, 4, 4)
    values[0, 0, :, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0])    # unanimous: every neighbour rose
    values[1, 0, :, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # split
    mask = torch.ones(2, 1, 4, dtype=torch.bool)
    scores = torch.full((2, 1, 4), 0.9)
    mem = RetrievedMemory(keys, values, mask, torch.arange(4).repeat(2, 1, 1), scores)
    stats = memory_stats(mem)
    assert stats[0, 0, 2] == 1.0 and stats[1, 0, 2] == 0.0 and stats[0, 0, 0] == pytest.approx(0.9)
    out = model(x, retrieved=mem)
    assert not torch.isclose(out["gate"][0], out["gate"][1])
    from dataclasses import replace

    plain = MemoryAugmentedTransformer(replace(cfg, gate_inputs="hidden")).eval()
    assert not hasattr(plain.layers[0].fusion, "gate_stats")


def test_param_groups_exempt_gates_norms_and_biases_from_decay():
    from course_lib.model import MemoryAugmentedTransformer, MemoryTransformerConfig
    from course_lib.training.config import param_groups

    model = MemoryAugmentedTransformer(MemoryTransformerConfig(input_dim=3, seq_len=8, d_model=16, n_heads=2,
                                                               key_dim=8, n_neighbors=4, key_bars=4))
    assert len(param_groups(model, 0.01)) == 1
    groups = param_groups(model, 0.01, decay_all=False, gate_lr_scale=10.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and all(g["weight_decay"] == 0.0 for g in groups[1:])
    assert not any(s in n for n in decayed for s in ("bias", "norm", "gate", "lam", "log_scale"))
    gate = {names[id(p)] for p in groups[2]["params"]}
    assert groups[2]["lr_scale"] == 10.0 and any("fusion.gate" in n for n in gate) and any("log_scale" in n for n in gate)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
