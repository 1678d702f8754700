"""Configuration of the external memory bank (one dataclass, validated on creation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["BACKENDS", "EVICTIONS", "MILVUS_INDEXES", "MemoryConfig"]

BACKENDS = ("auto", "numpy", "torch", "faiss", "ivf", "hnsw", "faiss-gpu", "milvus")
MILVUS_INDEXES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")
EVICTIONS = ("fifo", "lru", "importance")


@dataclass
class MemoryConfig:
    """Everything that shapes an :class:`~course_lib.ExternalMemoryBank`.

    Args:
        key_dim: length of a key (the embedding the memory is searched by).
        value_dim: length of the value stored next to each key (0 = keys and metadata only).
        capacity: number of slots; the buffer is allocated once, so ``add`` never reallocates.
        backend: search kernel. ``"auto"`` picks the fastest *exact* kernel for each job on a CPU (numpy
            for a handful of queries or small memories, faiss's BLAS path from 16 queries on, torch when
            faiss is missing or the causal filter hides too many entries; torch on a GPU);
            ``"numpy"``, ``"torch"`` and ``"faiss"`` force one exact kernel; ``"ivf"`` and ``"hnsw"`` are
            approximate faiss indexes (faster on big memories, recall < 1); ``"faiss-gpu"`` needs faiss-gpu;
            ``"milvus"`` keeps the memory in a Milvus collection at ``uri`` (optional extra ``scale``; see
            :mod:`course_lib.memory.milvus`).
            IVF updates changed slots in place (O(batch) per add); an HNSW graph cannot forget a node, so
            overwriting slots (a full FIFO buffer, a key refresh) rebuilds it at the next search: use
            ``"hnsw"`` for big, read-mostly memories and ``"ivf"`` for one that streams.
        eviction: which entry makes room when the buffer is full: ``"fifo"`` (oldest insert), ``"lru"``
            (least recently retrieved, where being added counts as a use) or ``"importance"`` (low priority p_i evicted first, see
            ``importance_alpha``).
        device: where the torch kernel keeps its copy of the keys (``"cuda"`` on a GPU; the numpy buffer is
            the source of truth and stays on the CPU). A run-time setting: ``ExternalMemoryBank.load`` falls
            back to ``"cpu"`` (with a warning) when the saved device is missing.
        importance_alpha: exponent alpha of the priority p_i^alpha (0 = uniform, 1 = proportional).
        importance_sampling: ``True`` evicts by sampling with probability proportional to p_i^-alpha
            (prioritised-replay style, never starves a low-priority entry for ever); ``False`` evicts the
            lowest p_i deterministically.
        ivf_nlist: IVF cells (``None``: about 4*sqrt(M)); ``ivf_nprobe``: cells visited per query.
        hnsw_m, hnsw_ef_construction, hnsw_ef_search: HNSW graph degree and beam widths.
        num_threads: threads for torch/faiss during a search (``None`` = library default).
        seed: seed of the eviction sampler and of the IVF training sample.
        auto_numpy_max_batch, auto_faiss_min_batch: the batch-size switch points of ``backend="auto"``
            (measured by ``benchmarks/bench_memory.py`` on a 2-core CPU).
        chunk_mb: the largest block of scores held at once (queries are processed in chunks).
        uri: where ``backend="milvus"`` keeps the memory: a local file path (``"memory.db"``: Milvus Lite,
            embedded, in process) or a server/cluster address (``"http://host:19530"``). Ignored by the
            other backends.
        milvus_collection: the collection name inside ``uri`` (one uri can hold several memories).
        milvus_index: the Milvus vector index: ``"FLAT"`` (exact: the same neighbours as the in-memory
            bank), ``"IVF_FLAT"`` (uses ``ivf_nlist``/``ivf_nprobe``), ``"HNSW"`` (uses the ``hnsw_*``
            settings) or ``"AUTOINDEX"`` (the server chooses). Credentials for a server are read from the
            ``MILVUS_TOKEN`` environment variable, never stored in the config (it is saved with the memory).
    """

    key_dim: int = 64
    value_dim: int = 0
    capacity: int = 100_000
    backend: str = "auto"
    eviction: str = "fifo"
    device: str = "cpu"
    importance_alpha: float = 1.0
    importance_sampling: bool = True
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 96
    num_threads: int | None = None
    seed: int = 0
    auto_numpy_max_batch: int = 8
    auto_faiss_min_batch: int = 16
    chunk_mb: int = 256
    uri: str | None = None
    milvus_collection: str = "course_memory"
    milvus_index: str = "FLAT"

    def __post_init__(self) -> None:
        if self.key_dim < 1:
            raise ValueError(f"MemoryConfig.key_dim must be >= 1, got {self.key_dim}.")
        if self.value_dim < 0:
            raise ValueError(f"MemoryConfig.value_dim must be >= 0 (0 = no values), got {self.value_dim}.")
        if self.capacity < 1:
            raise ValueError(f"MemoryConfig.capacity must be >= 1, got {self.capacity}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}.")
        if self.eviction not in EVICTIONS:
            raise ValueError(f"unknown eviction policy {self.eviction!r}; choose one of {EVICTIONS}.")
        if self.milvus_index not in MILVUS_INDEXES:
            raise ValueError(f"unknown milvus_index {self.milvus_index!r}; choose one of {MILVUS_INDEXES}.")
        if self.backend == "milvus" and not self.uri:
            raise ValueError('backend="milvus" needs uri=: a local file such as "memory.db" (Milvus Lite) '
                             'or a server address such as "http://localhost:19530".')
        if self.importance_alpha < 0:
            raise ValueError(f"importance_alpha must be >= 0, got {self.importance_alpha}.")

    def to_dict(self) -> dict:
        return asdict(self)
