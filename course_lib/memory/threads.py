"""How many CPU threads a memory search may use (``MemoryConfig.num_threads``), for torch and faiss alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

__all__ = ["search_threads"]


def search_threads(n: int | None) -> AbstractContextManager[None]:
    """Run the block with ``n`` torch and faiss threads, restored afterwards (``None`` or 0: as they are)."""
    return _set_threads(n) if n else nullcontext()


@contextmanager
def _set_threads(n: int) -> Iterator[None]:
    import faiss

    old_t, old_f = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old_t)
        faiss.omp_set_num_threads(old_f)
