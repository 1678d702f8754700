"""Versioned, atomic, pickle-free files: one ``.npz`` holding named arrays plus a JSON header.

The header (format name, version, config, counters) is stored *inside* the npz as a unicode scalar array,
so a bank is one file that is written in one step (temp file + rename, :func:`course_lib.utils.atomic_path`)
and read with ``allow_pickle=False``: loading a file can never run code.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_path
from . import backends as B
from .config import MemoryConfig
from .metadata import fill_value

__all__ = ["MemoryFileError"]

_HEADER = "__header__"

#: the memory bank's file (written by ``ExternalMemoryBank.save`` and ``MilvusMemoryBank.save`` alike)
FORMAT = "course_lib.ExternalMemoryBank"
FORMAT_VERSION = 1


class MemoryFileError(ValueError):
    """A memory file is truncated, corrupted, of another format/version, or has the wrong dimensions."""


def write_npz(path: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``header`` to ``path`` atomically; an exception leaves any old file intact."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"memory files end in .npz (numpy would silently append it); got {path.name!r}")
    payload = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    for name, a in payload.items():
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object, which cannot be saved without pickle")
    payload[_HEADER] = np.array(json.dumps(header))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **payload)
    return path


def read_npz(path: str | os.PathLike, fmt: str, max_version: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz`, refusing anything truncated or of another format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no memory file at {path}")
    try:
        # numpy reads each array's bytes without reaching the point where zipfile checks its CRC, so a
        # flipped byte inside an array would load silently: check every member's checksum first
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise MemoryFileError(f"{path}: {bad!r} fails its checksum: the file is corrupted. "
                                  "Re-create it with bank.save(path).")
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, MemoryFileError):
            raise
        raise MemoryFileError(
            f"{path} is truncated or not a memory file ({type(exc).__name__}: {exc}). "
            "Re-create it with bank.save(path)."
        ) from exc
    if _HEADER not in arrays:
        raise MemoryFileError(f"{path} has no header: it was not written by {fmt}.save().")
    try:
        header = json.loads(str(arrays.pop(_HEADER)))
    except json.JSONDecodeError as exc:
        raise MemoryFileError(f"{path}: corrupted header ({exc}).") from exc
    if header.get("format") != fmt:
        raise MemoryFileError(f"{path} holds {header.get('format')!r}, not {fmt!r}.")
    version = header.get("version")
    if not isinstance(version, int) or version > max_version or version < 1:
        raise MemoryFileError(
            f"{path} is format version {version!r}; this course_lib reads versions 1..{max_version}. "
            "Upgrade course_lib (pip install -U -e .) or re-create the file."
        )
    return header, arrays


def device_available(device: str) -> bool:
    """Whether torch can put tensors on ``device`` on this machine (a CUDA index must exist)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return False
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    if dev.type == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return False


def _usable_device(saved: str, path: Any) -> str:
    """The saved device if this machine has it, else ``"cpu"`` with a warning (the device is a run-time
    setting: a memory built on a GPU machine must still load on a laptop)."""
    if device_available(saved):
        return saved
    warnings.warn(f"{path} was saved with device={saved!r}, which this machine does not have: loading on 'cpu'. "
                  "Pass load(..., device=...) to choose.", RuntimeWarning, stacklevel=4)
    return "cpu"


def _config_from_header(header: dict, path: Any) -> MemoryConfig:
    """The saved :class:`MemoryConfig`, or ``MemoryFileError`` naming what is missing or invalid."""
    raw = header.get("config")
    if not isinstance(raw, dict):
        raise MemoryFileError(f"{path}: the header has no config ({type(raw).__name__} instead of a dict): file "
                              "corrupted or not written by ExternalMemoryBank.save(). Re-create it.")
    known = {f.name for f in fields(MemoryConfig)}
    try:
        return MemoryConfig(**{key: val for key, val in raw.items() if key in known})
    except (TypeError, ValueError) as exc:
        raise MemoryFileError(f"{path}: the saved config is invalid ({exc}): file corrupted or written by an "
                              "incompatible version. Re-create it.") from exc

@dataclass
class BankState:
    """A bank file after every check: the config to build the bank with, and its arrays and counters."""

    config: MemoryConfig
    arrays: dict[str, np.ndarray]
    size: int
    write_pos: int
    seq: int
    clock: int
    fields: list[str]


def read_bank(path: str | os.PathLike, fmt: str, max_version: int, core: tuple[str, ...],
              expect_key_dim: int | None = None, expect_value_dim: int | None = None,
              overrides: dict[str, Any] | None = None) -> BankState:
    """Read and check a bank file written by ``ExternalMemoryBank.save``; every refusal names the fix.

    Refuses (:class:`MemoryFileError`) a truncated or corrupted file, another format or a newer version,
    arrays whose shape disagrees with the header, a missing core field (``core``), and, if given, a key or
    value dimension other than ``expect_key_dim``/``expect_value_dim``. ``overrides`` are run-time settings
    (``backend``, ``device``, ...); the file's size settings cannot be overridden. A device or GPU backend
    this machine lacks falls back to the CPU with a ``RuntimeWarning``.
    """
    overrides = dict(overrides or {})
    header, arrays = read_npz(path, fmt, max_version)
    bad_override = set(overrides) & {"key_dim", "value_dim", "capacity"}
    if bad_override:
        raise ValueError(f"cannot override {sorted(bad_override)} when loading; they are part of the file")
    saved = _config_from_header(header, path)
    runtime = {name: overrides.pop(name) for name in ("device", "backend") if name in overrides}
    if "device" not in runtime:
        runtime["device"] = _usable_device(saved.device, path)
    if saved.backend == "faiss-gpu" and "backend" not in runtime and not B.faiss_available(gpu=True):
        warnings.warn(f"{path} was saved with backend='faiss-gpu', which this machine lacks: using 'faiss' "
                      "(same exact results). Pass load(..., backend=...) to choose.", RuntimeWarning, stacklevel=3)
        runtime["backend"] = "faiss"
    cfg = MemoryConfig(**{**saved.to_dict(), **overrides, **runtime})
    for want, have, what in ((expect_key_dim, cfg.key_dim, "key_dim"), (expect_value_dim, cfg.value_dim, "value_dim")):
        if want is not None and want != have:
            raise MemoryFileError(f"{path}: {what} is {have} but {want} was expected (memory built for "
                                  "another encoder?). Rebuild the memory with the current model.")
    try:
        n, write_pos = int(header["size"]), int(header["write_pos"])
        seq, clock, meta_fields = int(header["seq"]), int(header["clock"]), list(header["fields"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MemoryFileError(f"{path}: header lacks or garbles {exc}: file corrupted or not written by "
                              "ExternalMemoryBank.save(). Re-create it.") from exc
    if not (0 <= n <= cfg.capacity and 0 <= write_pos < max(cfg.capacity, 1)):
        raise MemoryFileError(f"{path}: size {n} / write position {write_pos} do not fit the capacity "
                              f"{cfg.capacity}: file corrupted. Re-create it.")
    need = {"keys": (n, cfg.key_dim), "values": (n, cfg.value_dim), "insert_seq": (n,),
            "last_access": (n,), "access_count": (n,)}
    for name, shape in need.items():
        if name not in arrays or arrays[name].shape != shape:
            got = arrays[name].shape if name in arrays else "missing"
            raise MemoryFileError(f"{path}: array {name!r} has shape {got}, header says {shape}: file corrupted.")
    missing = [name for name in core if name not in meta_fields]
    if missing:
        raise MemoryFileError(f"{path}: the header lists no {missing} field(s) (every bank stores "
                              f"{list(core)}): file corrupted or not written by ExternalMemoryBank.save(). "
                              "Re-create it.")
    for name in ("timestamp", "available_at"):
        arr = arrays.get(f"meta__{name}")
        if arr is not None and (arr.dtype != np.int64 or arr.ndim != 1):
            raise MemoryFileError(f"{path}: {name!r} is stored as {arr.dtype} {arr.shape}, not int64 "
                                  "nanoseconds per entry: file corrupted. Re-create it.")
    for name in meta_fields:
        arr = arrays.get(f"meta__{name}")
        if arr is None or len(arr) != n:
            raise MemoryFileError(f"{path}: metadata field {name!r} is missing or has the wrong length.")
    return BankState(cfg, arrays, n, write_pos, seq, clock, meta_fields)


# ------------------------------------------------------------------ ExternalMemoryBank.save / .load
def save_bank(bank: Any, path: str | os.PathLike) -> Path:
    """Write an :class:`~course_lib.memory.bank.ExternalMemoryBank` (keys, values, every metadata field,
    counters; filled slots only) to one ``.npz`` with :func:`write_npz`."""
    n = bank._size
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": bank.config.to_dict(),
        "size": n,
        "write_pos": bank._write_pos,
        "seq": bank._seq,
        "clock": bank._access.clock,
        "fields": sorted(bank._meta),
    }
    arrays = {
        "keys": bank._keys[:n],
        "values": bank._values[:n],
        "insert_seq": bank._insert_seq[:n],
        "last_access": bank._access.last[:n],
        "access_count": bank._access.count[:n],
    }
    arrays.update({f"meta__{name}": arr[:n] for name, arr in bank._meta.items()})
    return write_npz(path, header, arrays)


def load_bank(cls: Any, path: str | os.PathLike, expect_key_dim: int | None, expect_value_dim: int | None,
              overrides: dict[str, Any]) -> Any:
    """A new ``cls`` (the bank class) filled from a file :func:`save_bank` wrote, after :func:`read_bank`'s
    checks."""
    state = read_bank(path, FORMAT, FORMAT_VERSION, cls._CORE, expect_key_dim, expect_value_dim, overrides)
    cfg, arrays, n = state.config, state.arrays, state.size
    bank = cls(cfg)
    bank._keys[:n] = arrays["keys"]
    bank._values[:n] = arrays["values"]
    bank._insert_seq[:n] = arrays["insert_seq"]
    bank._access.last[:n] = arrays["last_access"]
    bank._access.count[:n] = arrays["access_count"]
    for name in state.fields:
        arr = arrays[f"meta__{name}"]
        bank._meta[name] = np.full((cfg.capacity, *arr.shape[1:]), fill_value(arr.dtype), dtype=arr.dtype)
        bank._meta[name][:n] = arr
    bank._size, bank._write_pos = n, state.write_pos
    bank._seq, bank._access.clock = state.seq, state.clock
    avail = bank._meta["available_at"][:n]
    bank._time_ordered = bool((avail[1:] >= avail[:-1]).all())
    bank._touch(np.arange(n))
    return bank
