"""Mixed precision on CUDA: which autocast dtype a GPU gets, and the autocast context the trainer runs under.

Engineering a learner can skip at first: on a CPU (or with ``TrainerConfig(amp=False)``) training runs in
plain float32 and nothing here changes a number.
"""

from __future__ import annotations

import torch

__all__ = ["amp_dtype", "autocast", "native_bf16"]


def native_bf16() -> bool:
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


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype of mixed precision on CUDA (None: full float32, e.g. on CPU or ``enabled=False``)."""
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if native_bf16() else torch.float16


def autocast(dtype: torch.dtype | None):
    """Autocast to ``dtype`` on CUDA, or a context that changes nothing when ``dtype`` is None."""
    if dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)
