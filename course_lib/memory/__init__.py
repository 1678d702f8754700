"""External kNN memory: a causal, persistent memory bank (``ExternalMemoryBank``) with exact and
approximate search backends, FIFO/LRU/importance eviction, and a hot/warm/cold tiered store."""

from .backends import CausalFilter, faiss_available, recall_at_k
from .bank import ExternalMemoryBank, SearchResult
from .config import BACKENDS, EVICTIONS, MemoryConfig
from .embedding import WindowEmbedder
from .eviction import sample_by_priority
from .milvus import MilvusMemoryBank
from .persistence import MemoryFileError
from .tiers import TierConfig, TieredMemory, dequantize_int8, int8_recall, quantize_int8
from .time_filter import NO_TIME_FILTER, MissingTimeError, query_times, to_ns
from .timing import jittered_keys, latency_table

__all__ = [
    "BACKENDS",
    "EVICTIONS",
    "CausalFilter",
    "ExternalMemoryBank",
    "MemoryConfig",
    "MemoryFileError",
    "MilvusMemoryBank",
    "MissingTimeError",
    "NO_TIME_FILTER",
    "SearchResult",
    "TierConfig",
    "TieredMemory",
    "WindowEmbedder",
    "dequantize_int8",
    "int8_recall",
    "jittered_keys",
    "latency_table",
    "quantize_int8",
    "faiss_available",
    "query_times",
    "recall_at_k",
    "sample_by_priority",
    "to_ns",
]
