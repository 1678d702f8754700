"""Training the memory-augmented transformer without letting the future leak in through the memory.

The memory is the easy place to cheat by accident (a naive loop adds each batch's own labels to the memory it
then retrieves from, so its model learns to copy labels). The rules this trainer enforces:

* the memory holds **training windows only**, each with its outcome as the value and two times: ``end_time``
  (t) and ``available_at`` (t+h, when its label is known) (:mod:`.memory`);
* every query, in training too, searches with ``as_of`` = its own window's end time, so it can only see
  entries whose labels were known by then: never itself, never a later window;
* the stored keys are recomputed with the current weights at the end of every epoch (the paper's fix for
  stale keys, sec. 3.2), so validation and the next epoch see keys of the weights they run with, and once
  more after the best weights are restored;
* validation and test windows search the same memory with their own end times.

The rest is a careful but ordinary loop (:mod:`.trainer`): AdamW, linear warm-up + cosine decay, gradient
clipping, early stopping on validation loss, the best weights kept and optionally written as a checkpoint
folder whose files are checked against each other on load (:mod:`.checkpoint`), mixed precision on CUDA
(bfloat16 where the GPU has it natively, else float16 with loss scaling), seeded and repeatable on CPU.
:mod:`.ablation` is the ladder every comparison of the course uses (:func:`compare_arms`: the network with and
without each part of its memory path, plain kNN retrieval, a RAFT-style linear model and ridge, paired by seed and
by test window); :mod:`.comparison` keeps its two-arm special case, memory against no memory.
"""

from ..metrics import direction_accuracy, information_coefficient  # noqa: F401 - their old home, still importable
from .ablation import (
    ARMS,
    ArmComparison,
    RaftForecast,
    compare_arms,
    gate_by_subset,
    ladder_table,
    raft_forecast,
)
from .checkpoint import CHECKPOINT_VERSION, CheckpointError
from .comparison import MemoryComparison, compare_memory_vs_local, motif_subsets, planted_direction
from .config import TrainerConfig
from .memory import TrainingMemory, memory_keys, set_target_stats
from .trainer import MemoryTransformerTrainer

__all__ = [
    "ARMS",
    "ArmComparison",
    "RaftForecast",
    "compare_arms",
    "gate_by_subset",
    "ladder_table",
    "raft_forecast",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "MemoryComparison",
    "MemoryTransformerTrainer",
    "TrainerConfig",
    "TrainingMemory",
    "compare_memory_vs_local",
    "memory_keys",
    "motif_subsets",
    "planted_direction",
    "set_target_stats",
]
