"""Checkpoint folders: ``model.pt`` (a plain state dict), ``memory.npz`` and, written last, ``config.json``.

Each file is replaced atomically (temp file + rename), but three renames are not one: a crash between them
would leave new weights next to an old memory, whose keys were made by other weights. So the data files go
first and ``config.json``, written last, records their SHA-256 and size; loading refuses a folder whose files
do not match the config that describes them. Nothing is unpickled: the weights load with
``weights_only=True`` and the memory is the bank's versioned npz format.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from ..data.windows import WindowSet
from ..memory.persistence import MemoryFileError, read_npz, write_npz
from ..utils import atomic_path

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "load_checkpoint_weights", "read_checkpoint_meta",
           "save_checkpoint"]

#: 2: config.json records the SHA-256 and size of model.pt and memory.npz (version 1 did not).
#: 3: memory.npz is the versioned, header-carrying npz the memory bank uses (version 2: a bare np.savez).
CHECKPOINT_VERSION = 3
FORMAT = "course_lib.MemoryTransformerTrainer"
MEMORY_FORMAT = "course_lib.TrainingMemory"


class Checkpointable(Protocol):
    """What a checkpoint reads from a trainer and loads into it. :class:`~.trainer.MemoryTransformerTrainer`
    is one; the trainer imports this module, never the other way round."""

    model: torch.nn.Module
    model_config: Any
    config: Any
    scaler: Any
    training_memory: Any
    best_epoch: Any
    device: torch.device

    def load_memory(self, windows: WindowSet, keys: np.ndarray, values: np.ndarray) -> None: ...


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely: wrong version, missing file, files from different saves
    (an interrupted save) or a config that does not match."""


def save_checkpoint(trainer: Checkpointable, directory: str | Path, keys: np.ndarray | None = None) -> Path:
    """Write ``trainer`` to ``directory``; ``keys`` (default: the memory's current raw keys) are stored."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    with atomic_path(d / "model.pt", ".pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, tmp)
        files["model.pt"] = _file_digest(tmp)
    mem = trainer.training_memory
    if mem is not None:
        mw = mem.windows
        arrays = dict(
            keys=mem.keys if keys is None else keys, values=mem.values, end_ns=mw.end_time_ns(),
            available_ns=mw.available_at_ns(), y=np.asarray(mw.y), end_pos=mw.end_pos, X=mw.X,
            feature_names=np.asarray(mw.feature_names, dtype=str),
        )
        header = {"format": MEMORY_FORMAT, "version": 1, "horizon": int(mw.horizon), "seq_len": int(mw.seq_len)}
        write_npz(d / "memory.npz", header, arrays)
        files["memory.npz"] = _file_digest(d / "memory.npz")
    meta = {**trainer_meta(trainer), "files": files}
    with atomic_path(d / "config.json", ".json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return d


def trainer_meta(trainer: Checkpointable) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": trainer.model_config.to_dict(),
        "trainer_config": trainer.config.to_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "has_memory": trainer.training_memory is not None,
        "best_epoch": trainer.best_epoch,
    }


def load_checkpoint_weights(trainer: Checkpointable, directory: str | Path) -> None:
    """Load weights (and memory) of a checkpoint folder into ``trainer``; the model configs must match."""
    d = Path(directory)
    meta = read_checkpoint_meta(d)
    mine, theirs = trainer.model_config.to_dict(), meta["model_config"]
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
        raise CheckpointError(f"checkpoint in {d} was trained with a different model config ({detail}). "
                              "Build the trainer from the checkpoint with MemoryTransformerTrainer.load().")
    _verify_files(d, meta)
    state = torch.load(d / "model.pt", map_location=trainer.device, weights_only=True)
    try:
        trainer.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {d / 'model.pt'} do not fit the model: {exc}") from exc
    if meta.get("has_memory"):
        path = d / "memory.npz"
        if not path.exists():
            raise CheckpointError(f"{path} is missing: the checkpoint was saved with a memory.")
        try:
            header, z = read_npz(path, MEMORY_FORMAT, 1)
        except MemoryFileError as exc:
            raise CheckpointError(str(exc)) from exc
        windows = WindowSet(
            X=z["X"], y=z["y"], end_time=pd.DatetimeIndex(z["end_ns"].astype("datetime64[ns]"), name="time"),
            available_at=pd.DatetimeIndex(z["available_ns"].astype("datetime64[ns]")), end_pos=z["end_pos"],
            feature_names=tuple(str(s) for s in z["feature_names"]), horizon=int(header["horizon"]),
            seq_len=int(header["seq_len"]),
        )
        trainer.load_memory(windows, z["keys"], z["values"])


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


def read_checkpoint_meta(d: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, refusing anything of another format or version."""
    d = Path(d)
    path = d / "config.json"
    if not path.exists() or not (d / "model.pt").exists():
        raise CheckpointError(f"{d} is not a checkpoint folder (needs config.json and model.pt).")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has format {meta.get('format')!r} version {meta.get('version')!r}; this course_lib reads "
            f"version {CHECKPOINT_VERSION}. Re-train and save with this version."
        )
    return meta
