"""Versioned, atomic, pickle-free files: one ``.npz`` holding named arrays plus a JSON header.

The header (format name, version, config, counters) is stored *inside* the npz as a unicode scalar array,
so a bank is one file that is written in one step (temp file + rename, :func:`course_lib.utils.atomic_path`)
and read with ``allow_pickle=False``: loading a file can never run code.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..utils import atomic_path

__all__ = ["MemoryFileError"]

_HEADER = "__header__"


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
