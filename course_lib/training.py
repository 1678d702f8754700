"""Training the memory-augmented transformer without letting the future leak in through the memory.

The memory is the easy place to cheat by accident (the reference chapter adds each batch's own labels to the
memory it then retrieves from, so its model learns to copy labels). The rules this trainer enforces:

* the memory holds **training windows only**, each with its outcome as the value and two times: ``end_time``
  (t) and ``available_at`` (t+h, when its label is known);
* every query, in training too, searches with ``as_of`` = its own window's end time, so it can only see
  entries whose labels were known by then: never itself, never a later window;
* the stored keys are recomputed with the current weights at the end of every epoch (the paper's fix for
  stale keys, sec. 3.2), so validation and the next epoch see keys of the weights they run with, and once
  more after the best weights are restored;
* validation and test windows search the same memory with their own end times.

The rest is a careful but ordinary loop: AdamW, linear warm-up + cosine decay, gradient clipping, early
stopping on validation loss, the best weights kept and optionally written as a checkpoint folder whose files
are checked against each other on load, mixed precision on CUDA (bfloat16 where the GPU has it natively, else
float16 with loss scaling), seeded and repeatable on CPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .memory import ExternalMemoryBank, MemoryConfig
from .model import MemoryAugmentedTransformer, MemoryTransformerConfig, direction_classes, encode_outcomes
from .utils import atomic_path, seed_everything, select_device
from .windows import FeatureScaler, WindowSet

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "MemoryComparison",
    "MemoryTransformerTrainer",
    "TrainerConfig",
    "compare_memory_vs_local",
    "direction_accuracy",
    "information_coefficient",
    "motif_subsets",
]

#: 2: config.json records the SHA-256 and size of model.pt and memory.npz (version 1 did not).
CHECKPOINT_VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely: wrong version, missing file, files from different saves
    (an interrupted save) or a config that does not match."""


@dataclass
class TrainerConfig:
    """Optimisation and memory-handling settings of :class:`MemoryTransformerTrainer`.

    ``loss_weights`` weigh the (regression, direction, portfolio) losses. Direction classes are down/flat/up
    with ``flat`` the ``flat_quantile`` smallest absolute training returns. ``patience`` epochs without a
    better ``val_loss`` stop training (0: never stop early). ``num_threads`` sets torch's CPU threads during
    ``fit`` only (None: leave as is). ``memory_backend`` is passed to the memory bank: ``"torch"`` by default,
    because inside a torch training loop a numpy/BLAS search kernel brings a second thread pool that fights
    torch's for the same cores (measured: 2-5x slower steps on 2 cores); use ``"auto"`` for huge memories.
    ``refresh_keys``/``refresh_every``: recompute the stored keys every ``refresh_every`` epochs (and always
    after restoring the best weights). ``checkpoint_dir``: at each new best epoch, :meth:`~MemoryTransformerTrainer.save`
    the trainer there, its memory keyed by the weights saved with it even between refreshes, so the folder
    loads into the trainer that ``fit`` returns. ``predict_memory="online"`` lets predictions also use windows of the predicted set whose labels resolved
    before each query (causal; what a live system would do); ``"train"`` uses the training memory only.
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


# --- metrics --------------------------------------------------------------------------------------
def direction_accuracy(signal: np.ndarray, y: np.ndarray) -> float:
    """Share of samples where ``sign(signal) == sign(y)``, ignoring zero (or missing) labels.

    A zero label has no direction to get right; a zero (flat) signal on a moving market counts as a miss.
    :func:`compare_memory_vs_local` scores its bootstrap samples with the same rule.
    """
    signal, y = np.asarray(signal, dtype=float), np.asarray(y, dtype=float)
    ok = (y != 0) & np.isfinite(y) & np.isfinite(signal)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.sign(signal[ok]) == np.sign(y[ok])))


def information_coefficient(pred: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation between forecasts and outcomes (the quant's IC)."""
    pred, y = pd.Series(np.asarray(pred, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    ok = pred.notna() & y.notna()
    if ok.sum() < 3 or pred[ok].nunique() < 2:
        return float("nan")
    return float(pred[ok].rank().corr(y[ok].rank()))


def _train_metrics(preds: list[torch.Tensor], signals: list[torch.Tensor], y: np.ndarray) -> dict[str, float]:
    """An epoch's training-batch predictions scored like validation (see :meth:`MemoryTransformerTrainer.evaluate`).

    ``preds``/``signals``: per-batch return forecasts and ``p_up - p_down`` in the order the batches ran; ``y``
    the labels in that same order.
    """
    pred = torch.cat(preds).cpu().numpy().astype(np.float64)
    signal = torch.cat(signals).cpu().numpy()
    return {f"train_{name}": value for name, value in _forecast_scores(pred, signal, y).items()}


def _forecast_scores(pred: np.ndarray, signal: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MSE and MAE of the return forecast (return units), direction accuracy of ``signal``, rank IC."""
    return {
        "mse": float(np.mean((pred - y) ** 2)),
        "mae": float(np.mean(np.abs(pred - y))),
        "direction_accuracy": direction_accuracy(signal, y),
        "ic": information_coefficient(pred, y),
    }


def _native_bf16() -> bool:
    """True when the current CUDA GPU computes bfloat16 in hardware (Ampere and newer).

    ``torch.cuda.is_bf16_supported()`` says True by default on older GPUs too (Colab's T4, V100), where
    bfloat16 is emulated and slower than float32; those get float16 with a GradScaler instead. Torch
    versions without the ``including_emulation`` argument fall back to the plain check.
    """
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:
        return bool(torch.cuda.is_bf16_supported())


def _make_bank(key_dim: int, value_dim: int, capacity: int, backend: str, device: torch.device) -> ExternalMemoryBank:
    """The course's :class:`ExternalMemoryBank` on the trainer's device (exact search for these sizes)."""
    cfg = MemoryConfig(
        key_dim=key_dim, value_dim=value_dim, capacity=capacity, backend=backend,
        device="cuda" if device.type == "cuda" else "cpu",
    )
    return ExternalMemoryBank(cfg)


# --- the trainer ----------------------------------------------------------------------------------
class MemoryTransformerTrainer:
    """Fit, evaluate, predict, save and load a :class:`MemoryAugmentedTransformer` with a causal memory.

    >>> trainer = MemoryTransformerTrainer(MemoryTransformerConfig(input_dim=7), TrainerConfig(epochs=10))
    >>> history = trainer.fit(splits.train, splits.val)      # doctest: +SKIP
    >>> pred = trainer.predict(splits.test)                    # doctest: +SKIP
    """

    def __init__(
        self,
        model_config: MemoryTransformerConfig,
        trainer_config: TrainerConfig | None = None,
        scaler: FeatureScaler | None = None,
    ):
        self.model_config = model_config
        self.config = trainer_config or TrainerConfig()
        self.scaler = scaler
        self.device = select_device(self.config.device)
        seed_everything(self.config.seed)
        self.model = MemoryAugmentedTransformer(model_config).to(self.device)
        self.memory: Any = None
        self._mem_windows: WindowSet | None = None
        self._mem_keys: np.ndarray | None = None  # raw keys last written to the bank (exact save/load)
        self._mem_values: np.ndarray | None = None
        self._mem_slots: np.ndarray | None = None
        self.history: pd.DataFrame | None = None
        self.best_epoch: int | None = None

    # ---- memory ------------------------------------------------------------------------------
    @property
    def uses_memory(self) -> bool:
        return self.model_config.use_memory

    def _compute_keys(self, X: np.ndarray) -> np.ndarray:
        was = self.model.training
        self.model.eval()
        bs = self.config.eval_batch_size
        out = []
        with torch.inference_mode():
            for i in range(0, len(X), bs):
                xb = torch.from_numpy(X[i : i + bs]).to(self.device)
                out.append(self.model.memory_keys(xb).float().cpu().numpy())
        self.model.train(was)
        return np.concatenate(out) if out else np.zeros((0, self.model_config.key_dim), np.float32)

    def build_memory(self, windows: WindowSet) -> None:
        """Fill a fresh memory with ``windows`` (the training period): keys from the current weights,
        outcomes as values, end time and label-availability time per entry."""
        if not self.uses_memory:
            return
        y = np.asarray(windows.y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("memory windows must all have known labels (drop_unlabeled=True).")
        keys = self._compute_keys(windows.X)
        values = encode_outcomes(y, float(self.model.target_scale), float(self.model.flat_threshold))
        self._load_memory(windows, keys, values)

    def _load_memory(self, windows: WindowSet, keys: np.ndarray, values: np.ndarray) -> None:
        cfg = self.model_config
        self.memory = _make_bank(cfg.key_dim, cfg.outcome_dim, max(self.config.memory_capacity, len(windows)),
                                 self.config.memory_backend, self.device)
        slots = self.memory.add(
            keys, values=values, timestamp=windows.end_time_ns(), available_at=windows.available_at_ns(),
            future_return=np.asarray(windows.y, dtype=np.float64),
        )
        self._mem_windows, self._mem_keys, self._mem_values = windows, keys, values
        self._mem_slots = np.asarray(slots, dtype=np.int64)

    def refresh_memory_keys(self) -> None:
        """Recompute every stored key with the current weights (fights key staleness, paper sec. 3.2)."""
        if self.memory is None or self._mem_windows is None:
            return
        keys = self._compute_keys(self._mem_windows.X)
        self.memory.update_keys(self._mem_slots, keys)
        self._mem_keys = keys

    def _slot_rows(self) -> np.ndarray:
        """Map bank slot id -> row of the memory windows (-1 for unknown slots)."""
        size = int(self._mem_slots.max()) + 1 if len(self._mem_slots) else 0
        lut = np.full(size + 1, -1, dtype=np.int64)
        lut[self._mem_slots] = np.arange(len(self._mem_slots))
        return lut

    # ---- losses ------------------------------------------------------------------------------
    def set_target_stats(self, y: np.ndarray) -> None:
        """Record the training labels' scale and the down/flat/up threshold in the model (fit does this;
        call it yourself only to build a memory before training, as lesson 03 does)."""
        scale = float(np.std(y)) or 1.0
        thr = float(np.quantile(np.abs(y), self.config.flat_quantile)) if self.config.flat_quantile > 0 else 0.0
        self.model.target_scale.fill_(scale)
        self.model.flat_threshold.fill_(thr)

    def _loss(self, out: dict, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ys = (y / self.model.target_scale).clamp(-5, 5)
        w_reg, w_dir, w_pos = self.config.loss_weights
        mse = F.mse_loss(out["reg"].float(), ys)
        cls = direction_classes(y, float(self.model.flat_threshold))
        nll = F.nll_loss(torch.log(out["probs"].float().clamp(min=1e-8)), cls)
        pnl = out["position"].float() * ys
        util = -(pnl.mean() - 0.5 * self.config.risk_aversion * (pnl**2).mean())
        return w_reg * mse + w_dir * nll + w_pos * util, {"mse": mse, "nll": nll}

    def _forward(self, xb: torch.Tensor, as_of: np.ndarray | None, memory: Any = None) -> dict:
        """The model on ``xb``, with the memory when the config uses one.

        A memory model without a memory is refused rather than silently run local-only: its predictions
        would come from a network trained to lean on neighbours it no longer gets.
        """
        if not self.uses_memory:
            return self.model(xb)
        mem = memory if memory is not None else self.memory
        if mem is None:
            raise RuntimeError(
                "this trainer's model has use_memory=True but no memory has been built: call fit() or "
                "build_memory(train_windows) first (a checkpoint saved before fit() has no memory: re-save it "
                "after fit()). For the local path alone, use MemoryTransformerConfig(use_memory=False)."
            )
        return self.model(xb, memory=mem, as_of=as_of)

    def _lr_at(self, step: int, total: int) -> float:
        warm = max(1, int(self.config.warmup_frac * total))
        if step < warm:
            return self.config.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        floor = self.config.min_lr_frac
        return self.config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of mixed precision on CUDA (None: full float32, e.g. on CPU or ``amp=False``)."""
        if self.device.type != "cuda" or not self.config.amp:
            return None
        return torch.bfloat16 if _native_bf16() else torch.float16

    def _autocast(self):
        dtype = self.amp_dtype
        if dtype is not None:
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)

    # ---- fit ---------------------------------------------------------------------------------
    def fit(self, train: WindowSet, val: WindowSet | None = None) -> pd.DataFrame:
        """Train on ``train`` (which also becomes the memory), early-stop on ``val``; returns the history.

        One row per epoch: ``epoch, lr, train_loss, train_mse, train_mae, train_direction_accuracy, train_ic,
        val_loss, val_mse, val_mae, val_direction_accuracy, val_ic, val_gate, val_blend, seconds,
        samples_per_s``. The ``train_`` metrics score the predictions each batch made while it was trained
        on (dropout on, weights moving through the epoch), with the same definitions as validation's: MSE/MAE
        in return units, direction accuracy on non-zero labels, rank IC.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        self._check_windows(train)
        if val is not None and len(val):
            self._check_windows(val)
        threads = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            seed_everything(cfg.seed)
            gen = torch.Generator().manual_seed(cfg.seed)
            y_train = np.asarray(train.y, dtype=np.float64)
            self.set_target_stats(y_train)
            X = torch.from_numpy(np.ascontiguousarray(train.X)).to(self.device)
            Y = torch.from_numpy(np.asarray(train.y, dtype=np.float32)).to(self.device)
            end_ns = train.end_time_ns()
            opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            # float16 underflows small gradients to zero unless the loss is scaled; bfloat16 has float32's range
            use_scaler = self.amp_dtype == torch.float16
            grad_scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
            n = len(train)
            steps_per_epoch = math.ceil(n / cfg.batch_size)
            total = steps_per_epoch * cfg.epochs
            step = 0
            rows = []
            best, best_state, bad = float("inf"), None, 0
            if self.uses_memory:
                self.build_memory(train)
            bar = tqdm(range(1, cfg.epochs + 1), desc="epochs", disable=not cfg.progress, leave=False)
            for epoch in bar:
                t0 = time.perf_counter()
                self.model.train()
                perm = torch.randperm(n, generator=gen).numpy()
                tot_loss, preds, signals = 0.0, [], []
                for i in range(0, n, cfg.batch_size):
                    idx = perm[i : i + cfg.batch_size]
                    for g in opt.param_groups:
                        g["lr"] = self._lr_at(step, total)
                    xb, yb = X[idx], Y[idx]
                    with self._autocast():
                        out = self._forward(xb, end_ns[idx])
                        loss, _ = self._loss(out, yb)
                    opt.zero_grad(set_to_none=True)
                    grad_scaler.scale(loss).backward()
                    if cfg.grad_clip:
                        grad_scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    grad_scaler.step(opt)
                    grad_scaler.update()
                    step += 1
                    tot_loss += float(loss.detach()) * len(idx)
                    # kept on the device, fetched once per epoch: logging must not add a sync per step
                    preds.append(out["pred_return"].detach().float())
                    signals.append((out["probs"][:, 2] - out["probs"][:, 0]).detach().float())
                refreshed = self.uses_memory and cfg.refresh_keys and epoch % max(1, cfg.refresh_every) == 0
                if refreshed:
                    # re-key the memory with this epoch's weights: validation and the next epoch both use them
                    self.refresh_memory_keys()
                seconds = time.perf_counter() - t0
                row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": tot_loss / n,
                       **_train_metrics(preds, signals, y_train[perm])}
                if val is not None and len(val):
                    row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
                row["seconds"], row["samples_per_s"] = seconds, n / seconds
                rows.append(row)
                monitor = row.get("val_loss", row["train_loss"])
                if monitor < best - 1e-6:
                    best, bad, self.best_epoch = monitor, 0, epoch
                    best_state = copy.deepcopy(self.model.state_dict())
                    if cfg.checkpoint_dir:
                        # the file must hold what fit() ends with: these weights and keys made by them. Between
                        # refreshes the live keys lag the weights; fresh ones go to the file only, so training
                        # keeps the staleness it was configured with
                        stale = self.uses_memory and not refreshed
                        self._save(cfg.checkpoint_dir, self._compute_keys(self._mem_windows.X) if stale else None)
                else:
                    bad += 1
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{monitor:.3f}")
                if cfg.patience and bad >= cfg.patience:
                    break
            bar.close()
            if best_state is not None:
                self.model.load_state_dict(best_state)
            if self.uses_memory:
                self.refresh_memory_keys()  # keys must match the restored weights
            self.history = pd.DataFrame(rows).set_index("epoch")
            return self.history
        finally:
            torch.set_num_threads(threads)

    def _check_windows(self, w: WindowSet) -> None:
        c = self.model_config
        if w.X.ndim != 3 or w.X.shape[1] != c.seq_len or w.X.shape[2] != c.input_dim:
            raise ValueError(
                f"windows have shape {w.X.shape} but the model expects (n, seq_len={c.seq_len}, "
                f"input_dim={c.input_dim}); set MemoryTransformerConfig(seq_len=..., input_dim=...) to match."
            )

    # ---- inference ---------------------------------------------------------------------------
    def _online_memory(self, windows: WindowSet) -> Any:
        """Training memory plus the predicted windows' own resolved entries (causal via as_of).

        A predicted window already in the training memory (same end time: one series, one window per bar,
        e.g. walk-forward's calibration pass over the training set) is not stored again; a window repeated
        within ``windows`` is stored once. Otherwise most queries got the same neighbour twice.
        """
        ends = windows.end_time_ns()
        labelled = np.isfinite(windows.y) & ~np.isin(ends, self._mem_windows.end_time_ns())
        _, first = np.unique(ends, return_index=True)
        once = np.zeros(len(windows), dtype=bool)
        once[first] = True
        labelled &= once
        if not labelled.any():
            return self.memory
        extra = windows.subset(np.flatnonzero(labelled))
        keys = np.concatenate([self._mem_keys, self._compute_keys(extra.X)])
        vals = np.concatenate([
            self._mem_values,
            encode_outcomes(extra.y, float(self.model.target_scale), float(self.model.flat_threshold)),
        ])
        both = SimpleNamespace(
            end=np.concatenate([self._mem_windows.end_time_ns(), extra.end_time_ns()]),
            avail=np.concatenate([self._mem_windows.available_at_ns(), extra.available_at_ns()]),
        )
        cfg = self.model_config
        bank = _make_bank(cfg.key_dim, cfg.outcome_dim, len(keys) + 1, self.config.memory_backend, self.device)
        bank.add(keys, values=vals, timestamp=both.end, available_at=both.avail)
        return bank

    def _run(self, windows: WindowSet, memory: Any = None) -> dict[str, np.ndarray]:
        """Forward all ``windows`` in eval mode; collect outputs as numpy arrays."""
        self._check_windows(windows)
        self.model.eval()
        bs = self.config.eval_batch_size
        end_ns = windows.end_time_ns()
        keep = ("pred_return", "reg", "probs", "position", "gate", "blend", "knn_return", "memory_weights",
                "memory_mask", "memory_indices", "memory_up_share")
        acc: dict[str, list] = {}
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(windows), bs):
                xb = torch.from_numpy(np.ascontiguousarray(windows.X[i : i + bs])).to(self.device)
                out = self._forward(xb, end_ns[i : i + bs], memory)
                for name in keep:
                    if name in out:
                        acc.setdefault(name, []).append(out[name].float().cpu().numpy() if out[name].is_floating_point()
                                                        else out[name].cpu().numpy())
        return {k: np.concatenate(v) for k, v in acc.items()}

    def evaluate(self, windows: WindowSet) -> dict[str, float]:
        """Loss, MSE, MAE (return units), direction accuracy (sign of p_up - p_down), IC, mean gate."""
        raw = self._run(windows)
        y = np.asarray(windows.y, dtype=np.float64)
        with torch.no_grad():
            # back on the model's device: _loss divides by the model's target_scale buffer, which lives there
            # (CPU tensors here crashed on CUDA/MPS with "Expected all tensors to be on the same device")
            out = {k: torch.from_numpy(raw[k]).to(self.device) for k in ("reg", "probs", "position")}
            loss, _ = self._loss(out, torch.from_numpy(y.astype(np.float32)).to(self.device))
        signal = raw["probs"][:, 2] - raw["probs"][:, 0]
        return {
            "loss": float(loss),
            **_forecast_scores(raw["pred_return"], signal, y),
            "gate": float(np.mean(raw["gate"])) if "gate" in raw else float("nan"),
            "blend": float(np.mean(raw["blend"])) if "blend" in raw else float("nan"),
        }

    def predict(self, windows: WindowSet) -> pd.DataFrame:
        """One row per window, indexed by ``end_time``: forecasts, direction probabilities, position and
        what the memory said (``memory_return``, ``memory_up_share``, ``n_neighbors``, ``gate``, ``blend``).

        ``direction_signal = p_up - p_down`` is the signal behind ``direction_accuracy``.
        """
        memory = None
        if self.uses_memory and self.config.predict_memory == "online":
            memory = self._online_memory(windows)
        raw = self._run(windows, memory)
        df = pd.DataFrame(
            {
                "pred_return": raw["pred_return"].astype(np.float64),
                "p_down": raw["probs"][:, 0], "p_flat": raw["probs"][:, 1], "p_up": raw["probs"][:, 2],
                "direction_signal": raw["probs"][:, 2] - raw["probs"][:, 0],
                "position": raw["position"],
            },
            index=pd.DatetimeIndex(windows.end_time, name="time"),
        )
        nan = np.full(len(windows), np.nan)
        if "memory_mask" in raw:
            mask = raw["memory_mask"]
            w = raw["memory_weights"]
            n_valid = mask.sum(axis=1)
            ret = raw["knn_return"] * float(self.model.target_scale)
            df["memory_return"] = np.where(n_valid > 0, ret, np.nan)
            df["memory_up_share"] = raw["memory_up_share"]
            df["n_neighbors"] = n_valid
            df["memory_top_weight"] = np.where(n_valid > 0, w.max(axis=1), np.nan)
        else:
            df["memory_return"] = nan
            df["memory_up_share"] = nan
        df["gate"] = raw.get("gate", nan)
        df["blend"] = raw.get("blend", nan)
        df["y"] = np.asarray(windows.y, dtype=np.float64)
        return df

    def neighbours(self, windows: WindowSet, top: int = 5) -> pd.DataFrame:
        """Which past windows the model attended to most for each of ``windows`` (training memory only).

        Long format: ``time`` (query window end), ``rank``, ``neighbour_time``, ``weight`` (attention, mean over
        heads), ``neighbour_return`` (what followed that neighbour), ``neighbour_available_at``.
        """
        if not self.uses_memory:
            raise ValueError("this model has use_memory=False: it retrieves nothing.")
        raw = self._run(windows)
        lut = self._slot_rows()
        w = np.where(raw["memory_mask"], raw["memory_weights"], -1.0)
        order = np.argsort(-w, axis=1)[:, :top]
        rows = []
        mw = self._mem_windows
        for i in range(len(windows)):
            for r, j in enumerate(order[i]):
                if not raw["memory_mask"][i, j]:
                    continue
                row = lut[raw["memory_indices"][i, j]]
                rows.append((windows.end_time[i], r + 1, mw.end_time[row], float(w[i, j]), float(mw.y[row]),
                             mw.available_at[row]))
        return pd.DataFrame(rows, columns=["time", "rank", "neighbour_time", "weight", "neighbour_return",
                                           "neighbour_available_at"])

    # ---- persistence ---------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "format": "course_lib.MemoryTransformerTrainer",
            "version": CHECKPOINT_VERSION,
            "model_config": self.model_config.to_dict(),
            "trainer_config": self.config.to_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "has_memory": self._mem_windows is not None,
            "best_epoch": self.best_epoch,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt`` (a plain state dict), ``memory.npz`` and, last, ``config.json``.

        Each file is replaced atomically (temp file + rename), but three renames are not one: a crash between
        them would leave new weights next to an old memory, whose keys were made by other weights. So the
        data files go first and ``config.json``, written last, records their SHA-256 and size; :meth:`load`
        refuses a folder whose files do not match the config that describes them.
        """
        return self._save(directory)

    def _save(self, directory: str | Path, keys: np.ndarray | None = None) -> Path:
        """:meth:`save`, with ``keys`` (default: the memory's current raw keys) as the stored keys."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, Any]] = {}
        with atomic_path(d / "model.pt", ".pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, tmp)
            files["model.pt"] = _file_digest(tmp)
        if self._mem_windows is not None:
            mw = self._mem_windows
            with atomic_path(d / "memory.npz", ".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(
                        fh, keys=self._mem_keys if keys is None else keys, values=self._mem_values, end_ns=mw.end_time_ns(),
                        available_ns=mw.available_at_ns(), y=np.asarray(mw.y), end_pos=mw.end_pos,
                        X=mw.X, feature_names=np.asarray(mw.feature_names, dtype=str),
                        horizon=np.int64(mw.horizon), seq_len=np.int64(mw.seq_len),
                    )
                files["memory.npz"] = _file_digest(tmp)
        meta = {**self._meta(), "files": files}
        with atomic_path(d / "config.json", ".json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> MemoryTransformerTrainer:
        """Rebuild a trainer from :meth:`save`'s folder; refuses unknown versions and mismatched weights."""
        d = Path(directory)
        meta = _read_meta(d)
        tcfg = TrainerConfig.from_dict(meta["trainer_config"])
        if device is not None:
            tcfg.device = device
        scaler = FeatureScaler.from_state_dict(meta["scaler"]) if meta.get("scaler") else None
        trainer = cls(MemoryTransformerConfig.from_dict(meta["model_config"]), tcfg, scaler)
        trainer.load_weights(d)
        trainer.best_epoch = meta.get("best_epoch")
        return trainer

    def load_weights(self, directory: str | Path) -> None:
        """Load weights (and memory) saved by :meth:`save` into this trainer; the configs must match."""
        d = Path(directory)
        meta = _read_meta(d)
        mine = self.model_config.to_dict()
        theirs = meta["model_config"]
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
            raise CheckpointError(f"checkpoint in {d} was trained with a different model config ({detail}). "
                                  "Build the trainer from the checkpoint with MemoryTransformerTrainer.load().")
        _verify_files(d, meta)
        state = torch.load(d / "model.pt", map_location=self.device, weights_only=True)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"weights in {d / 'model.pt'} do not fit the model: {exc}") from exc
        if meta.get("has_memory"):
            path = d / "memory.npz"
            if not path.exists():
                raise CheckpointError(f"{path} is missing: the checkpoint was saved with a memory.")
            with np.load(path, allow_pickle=False) as z:
                avail = pd.DatetimeIndex(z["available_ns"].astype("datetime64[ns]"))
                windows = WindowSet(
                    X=z["X"], y=z["y"], end_time=pd.DatetimeIndex(z["end_ns"].astype("datetime64[ns]"), name="time"),
                    available_at=avail, end_pos=z["end_pos"], feature_names=tuple(str(s) for s in z["feature_names"]),
                    horizon=int(z["horizon"]), seq_len=int(z["seq_len"]),
                )
                self._load_memory(windows, z["keys"], z["values"])


def _file_digest(path: Path) -> dict[str, Any]:
    """SHA-256 and size of a file, read in 1 MiB chunks (a memory with its windows can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "bytes": path.stat().st_size}


def _verify_files(d: Path, meta: dict[str, Any]) -> None:
    """Refuse a folder whose data files are not the ones ``config.json`` was written for."""
    files = meta.get("files")
    if not isinstance(files, dict) or "model.pt" not in files or (meta.get("has_memory") and "memory.npz" not in files):
        raise CheckpointError(f"{d / 'config.json'} does not record the hashes of its files; re-save the checkpoint "
                              "with this course_lib (trainer.save).")
    for name, want in files.items():
        path = d / name
        if not path.exists():
            raise CheckpointError(f"{path} is missing: the checkpoint was saved with it. Re-save the checkpoint.")
        got = _file_digest(path)
        if got != {"sha256": want.get("sha256"), "bytes": want.get("bytes")}:
            raise CheckpointError(
                f"{path} does not match the SHA-256/size recorded in {d / 'config.json'}: the files come from "
                "different saves (a save was interrupted, or the file was replaced). Re-save the checkpoint "
                "(trainer.save) or re-train; loading it could pair weights with a memory made by other weights."
            )


def _read_meta(d: Path) -> dict[str, Any]:
    path = d / "config.json"
    if not path.exists() or not (d / "model.pt").exists():
        raise CheckpointError(f"{d} is not a checkpoint folder (needs config.json and model.pt).")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != "course_lib.MemoryTransformerTrainer" or meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has format {meta.get('format')!r} version {meta.get('version')!r}; this course_lib reads "
            f"version {CHECKPOINT_VERSION}. Re-train and save with this version."
        )
    return meta


# --- honest comparison ------------------------------------------------------------------------------
@dataclass
class MemoryComparison:
    """Memory vs no-memory on the same test windows over several seeds.

    ``per_seed``: one row per seed with direction accuracy and IC of both models (and of any ``subsets``).
    ``summary``: mean accuracy difference (memory - local) with a t-interval over seeds and a paired
    moving-block bootstrap interval over test samples (accuracy difference averaged across seeds), both over
    the ``n_scored`` windows with a non-zero label that :func:`direction_accuracy` scores; for all
    test windows also the IC of both arms and a t-interval over seeds of their difference.
    ``predictions``: seed -> (memory, local) prediction frames, for plots.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    predictions: dict[int, tuple[pd.DataFrame, pd.DataFrame]]


def _block_bootstrap_ci(d: np.ndarray, n_boot: int, block: int, rng: np.random.Generator, level: float = 0.95):
    n = len(d)
    block = max(1, min(block, n))
    n_blocks = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    idx = (starts[..., None] + np.arange(block)).reshape(n_boot, -1)[:, :n]
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def compare_memory_vs_local(
    train: WindowSet,
    val: WindowSet,
    test: WindowSet,
    model_config: MemoryTransformerConfig,
    trainer_config: TrainerConfig | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    subsets: dict[str, np.ndarray] | None = None,
    n_boot: int = 2000,
    block: int = 20,
    progress: bool = True,
) -> MemoryComparison:
    """Train the model with and without memory (everything else equal) for each seed; compare out of sample.

    The only difference between the two arms is ``use_memory``; both see the same windows, seeds, epochs and
    early-stopping rule, and the test set is touched only once per trained model. ``subsets`` maps a name to
    a boolean mask over ``test`` (e.g. the windows right after a planted motif) to report accuracy there too.
    ``progress`` shows one bar over the ``2 * len(seeds)`` trainings (each training's own epoch bar follows
    ``trainer_config.progress``).
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    tcfg = trainer_config or TrainerConfig()
    subsets = subsets or {}
    rows, preds = [], {}
    y = np.asarray(test.y, dtype=np.float64)
    # the windows direction_accuracy scores: the bootstrap must resample these, not all windows, or its
    # interval describes another sample than the point estimate it brackets
    scored = (y != 0) & np.isfinite(y)
    correct = {"memory": [], "local": []}
    bar = tqdm(total=2 * len(seeds), desc="seeds x arms", disable=not progress)
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed}
        pair = []
        for arm, use in (("memory", True), ("local", False)):
            bar.set_postfix(seed=seed, arm=arm)
            trainer = MemoryTransformerTrainer(replace(model_config, use_memory=use), replace(tcfg, seed=seed))
            trainer.fit(train, val)
            p = trainer.predict(test)
            pair.append(p)
            sig = p["direction_signal"].to_numpy()
            row[f"acc_{arm}"] = direction_accuracy(sig, y)
            row[f"ic_{arm}"] = information_coefficient(p["pred_return"].to_numpy(), y)
            for name, mask in subsets.items():
                row[f"acc_{arm}_{name}"] = direction_accuracy(sig[mask], y[mask])
            correct[arm].append((np.sign(sig) == np.sign(y)).astype(float))
            bar.update()
        preds[seed] = (pair[0], pair[1])
        rows.append(row)
    bar.close()
    per_seed = pd.DataFrame(rows).set_index("seed")
    rng = np.random.default_rng(12345)
    d_all = np.mean(correct["memory"], axis=0) - np.mean(correct["local"], axis=0)
    summary_rows = []
    for name, mask in [("all", np.ones(len(y), dtype=bool)), *subsets.items()]:
        suffix = "" if name == "all" else f"_{name}"
        diffs = per_seed[f"acc_memory{suffix}"] - per_seed[f"acc_local{suffix}"]
        n = len(diffs)
        half = _t_quantile(n - 1) * diffs.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        use = mask & scored
        lo, hi = _block_bootstrap_ci(d_all[use], n_boot, block, rng) if use.any() else (float("nan"),) * 2
        summary_rows.append({
            "subset": name, "n_test": int(mask.sum()), "n_scored": int(use.sum()),
            "acc_memory": per_seed[f"acc_memory{suffix}"].mean(), "acc_local": per_seed[f"acc_local{suffix}"].mean(),
            "diff": diffs.mean(), "seed_ci_low": diffs.mean() - half, "seed_ci_high": diffs.mean() + half,
            "boot_ci_low": lo, "boot_ci_high": hi,
        })
        if name == "all":  # the rank IC of the return forecast: uses confidence, not just the sign
            ic_d = per_seed["ic_memory"] - per_seed["ic_local"]
            ic_half = _t_quantile(n - 1) * ic_d.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
            summary_rows[-1].update({
                "ic_memory": per_seed["ic_memory"].mean(), "ic_local": per_seed["ic_local"].mean(),
                "ic_diff": ic_d.mean(), "ic_seed_ci_low": ic_d.mean() - ic_half, "ic_seed_ci_high": ic_d.mean() + ic_half,
            })
    return MemoryComparison(per_seed, pd.DataFrame(summary_rows).set_index("subset"), preds)


def _t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student t quantile (small table + normal limit; avoids a scipy dependency)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
             15: 2.131, 20: 2.086, 30: 2.042}
    if level != 0.95:
        raise ValueError("only level=0.95 is tabulated")
    if df in table:
        return table[df]
    below = [k for k in table if k <= df]
    return table[max(below)] if below else 12.706


def motif_subsets(market: Any, windows: WindowSet, onset_bars: int = 3) -> dict[str, np.ndarray]:
    """Boolean masks over ``windows`` of a :class:`course_lib.SyntheticMarket` where the planted signal lives.

    ``aftermath``: the label bar lies in a planted aftermath (recent momentum also helps here, since the
    aftermath is a trend). ``onset``: the window ends on a motif's last bar or within ``onset_bars - 1`` bars
    after it: the aftermath has barely started, so only recognising the motif's *shape* predicts it; this is
    where a memory of past motifs should help most.
    """
    index = market.ohlcv.index
    pos = index.get_indexer(windows.end_time)
    label_pos = np.minimum(pos + windows.horizon, len(index) - 1)
    aftermath = market.aftermath_bars.to_numpy()[label_pos] >= 0
    ends = market.motifs["end_pos"].to_numpy()
    d = pos[:, None] - ends[None, :]
    onset = ((d >= 0) & (d < onset_bars)).any(axis=1) if len(ends) else np.zeros(len(pos), dtype=bool)
    return {"aftermath": aftermath, "onset": onset}
