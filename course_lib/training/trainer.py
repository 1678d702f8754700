"""The trainer: fit, evaluate, predict, save and load a memory-augmented transformer with a causal memory."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data.windows import FeatureScaler, WindowSet
from ..model import MemoryAugmentedTransformer, MemoryTransformerConfig, direction_classes
from ..utils import seed_everything, select_device
from . import checkpoint, precision
from .config import TrainerConfig, param_groups
from .memory import TrainingMemory, memory_keys, set_target_stats
from .scores import forecast_scores, train_scores

__all__ = ["MemoryTransformerTrainer"]


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
        self.training_memory: TrainingMemory | None = None
        self.history: pd.DataFrame | None = None
        self.best_epoch: int | None = None

    # ---- memory ------------------------------------------------------------------------------
    @property
    def uses_memory(self) -> bool:
        return self.model_config.use_memory

    @property
    def memory(self) -> Any:
        """The bank the model searches (the training memory's), or None before one is built."""
        return None if self.training_memory is None else self.training_memory.bank

    @property
    def _mem_windows(self) -> WindowSet | None:  # the windows behind the memory (lesson 06 reads them)
        return None if self.training_memory is None else self.training_memory.windows

    def _compute_keys(self, X: np.ndarray) -> np.ndarray:
        return memory_keys(self.model, X, self.config.eval_batch_size)

    def build_memory(self, windows: WindowSet) -> None:
        """Fill a fresh memory with ``windows`` (the training period): keys from the current weights,
        outcomes as values, end time and label-availability time per entry."""
        if self.uses_memory:
            self.training_memory = TrainingMemory.build(
                self.model, windows, self.config.memory_capacity, self.config.memory_backend,
                self.config.eval_batch_size)

    def load_memory(self, windows: WindowSet, keys: np.ndarray, values: np.ndarray) -> None:
        """Use ``windows`` with ready ``keys`` and ``values`` as the memory (a checkpoint's)."""
        self.training_memory = TrainingMemory.from_arrays(
            self.model, windows, keys, values, self.config.memory_capacity, self.config.memory_backend)

    def refresh_memory_keys(self) -> None:
        """Recompute every stored key with the current weights (fights key staleness, paper sec. 3.2)."""
        if self.training_memory is not None:
            self.training_memory.refresh(self.model, self.config.eval_batch_size)

    def set_target_stats(self, y: np.ndarray) -> None:
        """Record the training labels' scale and the down/flat/up threshold in the model (fit does this)."""
        set_target_stats(self.model, y, self.config.flat_quantile)

    # ---- one step ----------------------------------------------------------------------------
    def _loss(self, out: dict, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ys = (y / self.model.target_scale).clamp(-5, 5)
        w_reg, w_dir, w_pos = self.config.loss_weights
        mse = F.mse_loss(out["reg"].float(), ys)
        cls = direction_classes(y, float(self.model.flat_threshold))
        nll = F.nll_loss(torch.log(out["probs"].float().clamp(min=1e-8)), cls)
        pnl = out["position"].float() * ys
        util = -(pnl.mean() - 0.5 * self.config.risk_aversion * (pnl**2).mean())
        return w_reg * mse + w_dir * nll + w_pos * util, {"mse": mse, "nll": nll}

    def _forward(self, xb: torch.Tensor, as_of: np.ndarray, memory: Any = None) -> dict:
        """The model on ``xb``, with the memory when the config uses one, searched as of ``as_of``.

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
        """Linear warm-up, then cosine decay to ``min_lr_frac`` of the peak."""
        warm = max(1, int(self.config.warmup_frac * total))
        if step < warm:
            return self.config.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        floor = self.config.min_lr_frac
        return self.config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of mixed precision on CUDA (None: full float32, e.g. on CPU or ``amp=False``)."""
        return precision.amp_dtype(self.device, self.config.amp)

    def _autocast(self):
        return precision.autocast(self.amp_dtype)

    # ---- fit ---------------------------------------------------------------------------------
    def fit(self, train: WindowSet, val: WindowSet | None = None) -> pd.DataFrame:
        """Train on ``train`` (which also becomes the memory), early-stop on ``val``; returns the history.

        One row per epoch: ``epoch, lr, train_loss, train_mse, train_mae, train_direction_accuracy, train_ic,
        val_loss, val_mse, val_mae, val_direction_accuracy, val_ic, val_gate, val_blend, seconds,
        samples_per_s``. The ``train_`` metrics score the predictions each batch made while it was trained
        on (dropout on, weights moving through the epoch), with the same definitions as validation's.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        for w in (train, val):
            if w is not None and len(w):
                self._check_windows(w)
        val = val if val is not None and len(val) else None
        threads = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            seed_everything(cfg.seed)
            run = _EpochRunner(self, train)
            self.set_target_stats(run.y)                   # label scale and flat threshold: training labels only
            self.build_memory(train)                       # the memory holds the training windows, nothing else
            rows, best, best_state, bad = [], float("inf"), None, 0
            bar = tqdm(range(1, cfg.epochs + 1), desc="epochs", disable=not cfg.progress, leave=False)
            for epoch in bar:
                row, refreshed = run.epoch(epoch)          # one pass; re-keys the memory when due
                if val is not None:
                    row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
                row["seconds"], row["samples_per_s"] = row.pop("seconds"), row.pop("samples_per_s")  # last
                rows.append(row)
                monitor = row.get("val_loss", row["train_loss"])
                if monitor < best - 1e-6:                  # a new best: keep its weights (and checkpoint them)
                    best, bad, self.best_epoch = monitor, 0, epoch
                    best_state = copy.deepcopy(self.model.state_dict())
                    _checkpoint_best(self, refreshed)
                else:
                    bad += 1
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{monitor:.3f}")
                if cfg.patience and bad >= cfg.patience:   # early stopping
                    break
            bar.close()
            if best_state is not None:
                self.model.load_state_dict(best_state)
            self.refresh_memory_keys()                     # keys must match the restored weights
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
        """Training memory plus the predicted windows' own resolved entries (causal via as_of)."""
        return self.training_memory.with_resolved(self.model, windows, self.config.memory_backend,
                                                  self.config.eval_batch_size)

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
            **forecast_scores(raw["pred_return"], signal, y),
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
        lut = self.training_memory.slot_rows()
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

    # ---- persistence (course_lib/training/checkpoint.py) -----------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt``, ``memory.npz`` and, last, ``config.json`` (see :mod:`.checkpoint`)."""
        return checkpoint.save_checkpoint(self, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> MemoryTransformerTrainer:
        """Rebuild a trainer from :meth:`save`'s folder; refuses unknown versions and mismatched weights."""
        meta = checkpoint.read_checkpoint_meta(directory)
        tcfg = TrainerConfig.from_dict(meta["trainer_config"])
        if device is not None:
            tcfg.device = device
        scaler = FeatureScaler.from_state_dict(meta["scaler"]) if meta.get("scaler") else None
        trainer = cls(MemoryTransformerConfig.from_dict(meta["model_config"]), tcfg, scaler)
        trainer.load_weights(directory)
        trainer.best_epoch = meta.get("best_epoch")
        return trainer

    def load_weights(self, directory: str | Path) -> None:
        """Load weights (and memory) saved by :meth:`save` into this trainer; the configs must match."""
        checkpoint.load_checkpoint_weights(self, directory)


def _checkpoint_best(trainer: MemoryTransformerTrainer, refreshed: bool) -> None:
    """Save the new best epoch of :meth:`MemoryTransformerTrainer.fit` to ``checkpoint_dir``, if set.

    The file must hold what fit() ends with: these weights and keys made by them. Between refreshes the
    live keys lag the weights; fresh ones go to the file only, so training keeps the staleness it was
    configured with.
    """
    if not trainer.config.checkpoint_dir:
        return
    stale = trainer.uses_memory and not refreshed
    keys = trainer._compute_keys(trainer._mem_windows.X) if stale else None
    checkpoint.save_checkpoint(trainer, trainer.config.checkpoint_dir, keys)


class _EpochRunner:
    """One training pass over the shuffled training windows: the inner loop of :meth:`fit`, on its own.

    Holds what persists across epochs (optimizer, learning-rate step, shuffling generator, loss scaler), so
    ``fit`` reads as the lesson describes training and this class as one epoch does.
    """

    def __init__(self, trainer: MemoryTransformerTrainer, train: WindowSet):
        cfg = trainer.config
        self.t, self.cfg = trainer, cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.y = np.asarray(train.y, dtype=np.float64)
        self.X = torch.from_numpy(np.ascontiguousarray(train.X)).to(trainer.device)
        self.Y = torch.from_numpy(np.asarray(train.y, dtype=np.float32)).to(trainer.device)
        self.end_ns = train.end_time_ns()
        self.opt = torch.optim.AdamW(param_groups(trainer.model, cfg.weight_decay, cfg.decay_all, cfg.gate_lr_scale), lr=cfg.lr)
        # float16 underflows small gradients to zero unless the loss is scaled; bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp_dtype == torch.float16)
        self.n = len(train)
        self.total = math.ceil(self.n / cfg.batch_size) * cfg.epochs
        self.step = 0

    def epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """Train one epoch; re-key the memory when due. Returns the history row and whether it re-keyed."""
        t, cfg = self.t, self.cfg
        t0 = time.perf_counter()
        t.model.train()
        perm = torch.randperm(self.n, generator=self.gen).numpy()
        tot_loss, preds, signals = 0.0, [], []
        for i in range(0, self.n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            out, loss = self._step(idx)
            tot_loss += float(loss.detach()) * len(idx)
            # kept on the device, fetched once per epoch: logging must not add a sync per step
            preds.append(out["pred_return"].detach().float())
            signals.append((out["probs"][:, 2] - out["probs"][:, 0]).detach().float())
        refreshed = t.uses_memory and cfg.refresh_keys and epoch % max(1, cfg.refresh_every) == 0
        if refreshed:  # re-key the memory with this epoch's weights: validation and the next epoch use them
            t.refresh_memory_keys()
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "lr": self.opt.param_groups[0]["lr"], "train_loss": tot_loss / self.n,
               **train_scores(preds, signals, self.y[perm]), "seconds": seconds, "samples_per_s": self.n / seconds}
        return row, refreshed

    def _step(self, idx: np.ndarray) -> tuple[dict, torch.Tensor]:
        """One optimizer step on the windows ``idx``, each searching the memory as of its own end time."""
        t, cfg, opt = self.t, self.cfg, self.opt
        lr = t._lr_at(self.step, self.total)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        with t._autocast():
            out = t._forward(self.X[idx], self.end_ns[idx])
            loss, _ = t._loss(out, self.Y[idx])
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        self.step += 1
        return out, loss
