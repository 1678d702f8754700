"""The trainer's settings (one dataclass, saved with every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["TrainerConfig", "param_groups"]


@dataclass
class TrainerConfig:
    """Optimisation and memory-handling settings of :class:`~course_lib.MemoryTransformerTrainer`.

    ``loss_weights`` weigh the (regression, direction, portfolio) losses. Direction classes are down/flat/up
    with ``flat`` the ``flat_quantile`` smallest absolute training returns. ``patience`` epochs without a
    better ``val_loss`` stop training (0: never stop early). ``num_threads`` sets torch's CPU threads during
    ``fit`` only (None: leave as is). ``memory_backend`` is passed to the memory bank: ``"torch"`` by default,
    because inside a torch training loop a numpy/BLAS search kernel brings a second thread pool that fights
    torch's for the same cores (measured: 2-5x slower steps on 2 cores); use ``"auto"`` for huge memories.
    ``refresh_keys``/``refresh_every``: recompute the stored keys every ``refresh_every`` epochs (and always
    after restoring the best weights). ``checkpoint_dir``: at each new best epoch, save the trainer there,
    its memory keyed by the weights saved with it even between refreshes, so the folder loads into the
    trainer that ``fit`` returns. ``predict_memory="online"`` lets predictions also use windows of the
    predicted set whose labels resolved before each query (causal; what a live system would do);
    ``"train"`` uses the training memory only. ``decay_all``: AdamW's ``weight_decay`` on every parameter;
    ``False`` exempts biases, norms, gates, the kNN-blend weight and the memory temperature (:func:`param_groups`),
    which decay would pull back to their starting values (sigmoid(0), temperature 1) whatever the data say.
    ``gate_lr_scale``: the gates, the kNN-blend weight and the temperature learn at this multiple of ``lr``
    (they are few weights that early stopping gives few steps to move). Both defaults (``decay_all=False``,
    ``gate_lr_scale=10``) were chosen with the ablation ladder on a planted market no other default was tuned
    on (``benchmarks/README.md``): with them the kNN-blend weight learns to open where the memory knows something.
    A saved config without these fields predates them and loads with the values it was trained under
    (``True``, ``1.0``).
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    decay_all: bool = False
    gate_lr_scale: float = 10.0
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    grad_clip: float = 1.0
    patience: int = 5
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.1)
    flat_quantile: float = 1.0 / 3.0
    risk_aversion: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    progress: bool = True
    num_threads: int | None = None
    eval_batch_size: int = 512
    memory_backend: str = "torch"
    memory_capacity: int = 1_000_000
    refresh_keys: bool = True
    refresh_every: int = 1
    predict_memory: str = "train"
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        self.loss_weights = tuple(float(w) for w in self.loss_weights)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("TrainerConfig: epochs and batch_size must be >= 1.")
        if self.predict_memory not in ("train", "online"):
            raise ValueError("TrainerConfig: predict_memory must be 'train' or 'online'.")
        if not 0 <= self.flat_quantile < 1:
            raise ValueError("TrainerConfig: flat_quantile must be in [0, 1).")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["loss_weights"] = list(self.loss_weights)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{**LEGACY_DEFAULTS, **{k: v for k, v in data.items() if k in known}})


#: Fields whose default changed after checkpoints were written without them: a saved config that lacks one
#: was trained under this value, not under today's default.
LEGACY_DEFAULTS: dict[str, Any] = {"decay_all": True, "gate_lr_scale": 1.0}


#: Parameter names (substrings) that AdamW does not decay when ``decay_all=False``.
NO_DECAY = ("bias", "norm", "gate", "lam", "log_scale")


#: Parameter names (substrings) of the gates, the kNN-blend weight and the memory temperature.
GATE_PARAMS = ("gate", "lam", "log_scale")


def param_groups(model: Any, weight_decay: float, decay_all: bool = True,
                 gate_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """AdamW parameter groups: everything decayed (``decay_all``), or biases, norms, gates, the kNN-blend
    weight and the memory temperature exempt (the usual practice: decay shrinks them toward 0, i.e. toward a
    gate of sigmoid(0) and a temperature of 1, which is a choice of value, not a regularisation).
    ``gate_lr_scale``: the gate parameters' group gets ``lr_scale`` (the trainer multiplies its learning rate)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay_all and gate_lr_scale == 1.0:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    gate = [p for n, p in params if any(s in n for s in GATE_PARAMS)]
    rest = [(n, p) for n, p in params if not any(s in n for s in GATE_PARAMS)]
    if decay_all:
        return [{"params": [p for _, p in rest], "weight_decay": weight_decay},
                {"params": gate, "weight_decay": weight_decay, "lr_scale": gate_lr_scale}]
    skip = [p for n, p in rest if any(s in n for s in NO_DECAY)]
    keep = [p for n, p in rest if not any(s in n for s in NO_DECAY)]
    return [{"params": keep, "weight_decay": weight_decay}, {"params": skip, "weight_decay": 0.0},
            {"params": gate, "weight_decay": 0.0, "lr_scale": gate_lr_scale}]
