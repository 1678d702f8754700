"""Per-entry metadata columns of the memory bank: times, outcome, symbol, regime, priority, free fields.

Each field is one preallocated array of ``capacity`` rows, created the first time a batch brings it; a slot
whose batch did not give a field holds that dtype's blank (:func:`fill_value`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .inputs import as_numpy_rows

__all__ = ["entry_columns", "fill_value", "metadata_rows", "write_column"]


def fill_value(dtype: np.dtype) -> Any:
    """The blank of a metadata column: NaN, -1, "" or False."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return -1
    if dtype.kind == "U":
        return ""
    if dtype.kind == "b":
        return False
    raise TypeError(f"metadata of dtype {dtype} is not supported (use numbers, bools or strings)")


def entry_columns(n: int, timestamp: np.ndarray, available_at: np.ndarray, future_return: Any, symbol: Any,
                  regime: Any, importance: Any, extra: dict[str, Any]) -> dict[str, np.ndarray | None]:
    """The metadata of ``n`` new entries, one array (or None: not given) per field. ``importance`` defaults
    to ``|future_return|`` (first column), else 1."""
    cols: dict[str, np.ndarray | None] = {
        "timestamp": timestamp,
        "available_at": available_at,
        "future_return": None if future_return is None else as_numpy_rows(future_return, "future_return"),
        "symbol": None if symbol is None else np.asarray(symbol, dtype=str),
        "regime": None if regime is None else as_numpy_rows(regime, "regime"),
    }
    if importance is not None:
        imp = np.asarray(as_numpy_rows(importance, "importance"), dtype=np.float32)
    elif cols["future_return"] is not None:
        fr = np.asarray(cols["future_return"], dtype=np.float32).reshape(n, -1)[:, 0]
        imp = np.nan_to_num(np.abs(fr), nan=0.0)
    else:
        imp = np.ones(n, np.float32)
    cols["importance"] = np.broadcast_to(imp.reshape(()), (n,)) if imp.size == 1 else imp
    for name, arr in extra.items():
        cols[name] = None if arr is None else as_numpy_rows(arr, name)
    return cols


def metadata_rows(name: str, arr: Any, n: int) -> np.ndarray:
    """One metadata field for ``n`` new entries: a scalar (or one value) is broadcast to every entry; a wrong
    row count or an object array is refused with a message that names the field."""
    arr = np.asarray(arr)
    if arr.ndim == 0 or (arr.ndim == 1 and arr.shape[0] == 1 and n != 1):
        arr = np.broadcast_to(arr.reshape(()), (n,))
    if arr.shape[0] != n:
        raise ValueError(f"metadata {name!r} has {arr.shape[0]} rows for {n} keys")
    if arr.dtype.kind == "O":
        raise TypeError(f"metadata {name!r}: object arrays are not supported; use numbers or strings")
    return arr


def write_column(meta: dict[str, np.ndarray], name: str, slots: np.ndarray, arr: np.ndarray | None, n: int,
                 capacity: int) -> None:
    """Write one field of ``n`` new entries into ``meta[name]`` at ``slots`` (creating the column, with a
    dtype fit for it, the first time; None blanks the slots)."""
    store = meta.get(name)
    if arr is None:
        if store is not None:
            store[slots] = fill_value(store.dtype)
        return
    arr = metadata_rows(name, arr, n)
    if store is None:
        dtype = arr.dtype
        if dtype.kind == "U":
            dtype = np.dtype(f"<U{max(16, dtype.itemsize // 4)}")
        elif dtype.kind in "iu":
            dtype = np.dtype(np.int64)
        elif dtype.kind == "f":
            dtype = np.dtype(np.float32 if name != "timestamp" else np.float64)
        store = np.full((capacity, *arr.shape[1:]), fill_value(dtype), dtype=dtype)
        meta[name] = store
    if store.shape[1:] != arr.shape[1:]:
        raise ValueError(f"metadata {name!r} has per-row shape {arr.shape[1:]}, the memory stores {store.shape[1:]}")
    if store.dtype.kind == "U" and arr.dtype.kind == "U" and arr.dtype.itemsize > store.dtype.itemsize:
        store = meta[name] = store.astype(arr.dtype)  # widen once; rare
    store[slots] = arr
