"""The model's settings (one dataclass, saved with every checkpoint) and the names it accepts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

FUSIONS = ("gated", "concat", "cross_attention", "joint")
GATES = ("content", "head")
GATE_INPUTS = ("hidden", "memory")
#: Retrieval statistics a gate may read (``gate_inputs="memory"``), see :func:`course_lib.model.memory_stats`.
N_MEMORY_STATS = 4
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
    ``gate_inputs``: what the gate and the kNN-blend weight read. ``"hidden"``: the local and memory read-outs
    (the gate) and the hidden state (the blend). ``"memory"`` (the default): also what the memory knows about
    its own answer (:func:`~course_lib.model.memory_stats`: the best and the mean similarity of the neighbours,
    how much their outcomes agree, the share of slots filled), so they can learn *when* to trust the memory
    (measured with the ablation ladder in ``benchmarks/README.md``; a saved config without this field predates
    it and loads as ``"hidden"``).
    ``knn_blend`` adds the head that mixes the neighbours' outcomes into the forecast.
    ``memory_attention=False`` keeps the search and the kNN blend but drops the kNN attention from the
    layers: retrieval then feeds only the blend head, weighted by the search similarity over ``temperature``
    (the ``blend_only`` arm of :func:`course_lib.compare_arms`; it needs ``knn_blend=True``).
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
    gate_inputs: str = "memory"
    temperature: float = 0.1
    learn_temperature: bool = True
    retrieval: str = "window"
    knn_blend: bool = True
    memory_attention: bool = True
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
        if self.gate_inputs not in GATE_INPUTS:
            problems.append(f"gate_inputs={self.gate_inputs!r} is not one of {GATE_INPUTS}")
        if self.retrieval not in ("window", "position"):
            problems.append(f"retrieval={self.retrieval!r} must be 'window' or 'position'")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            problems.append(
                f"conv_kernel={self.conv_kernel} must be odd and >= 1 (the convolution is centred: an even kernel "
                f"would make seq_len + 1 tokens); use {max(1, self.conv_kernel - 1)} or {max(3, self.conv_kernel + 1)}"
            )
        if self.n_layers < 1 or self.seq_len < 1 or self.input_dim < 1:
            problems.append("n_layers, seq_len and input_dim must be >= 1")
        if self.use_memory and not self.memory_attention and not self.knn_blend:
            problems.append("memory_attention=False and knn_blend=False leave the memory unused; use use_memory=False")
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
        return cls(**{**LEGACY_DEFAULTS, **data})


#: Fields whose default changed after checkpoints were written without them: a saved config that lacks one
#: was built under this value, not under today's default.
LEGACY_DEFAULTS: dict[str, Any] = {"gate_inputs": "hidden"}
