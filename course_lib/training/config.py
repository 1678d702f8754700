"""The trainer's settings (one dataclass, saved with every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["TrainerConfig"]


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
    ``"train"`` uses the training memory only.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
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
        return cls(**{k: v for k, v in data.items() if k in known})
