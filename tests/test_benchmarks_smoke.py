"""The benchmark scripts' measuring functions still run (on tiny inputs). Never about time: a benchmark that
no longer runs is rot, a slow one is a number to read in its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from course_lib import make_synthetic_market, prepare_dataset
from course_lib.model import MemoryTransformerConfig
from course_lib.training import TrainerConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_single_query_table_prints_every_variant(capsys):
    pytest.importorskip("faiss")
    bench = _script("bench_memory")
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(600, bench.D)).astype(np.float32)
    bench.bench_single_query(keys, rng.normal(size=(20, bench.D)).astype(np.float32), m=600, reps=3)
    out = capsys.readouterr().out
    for row in ("raw numpy, batch-style calls", "raw numpy, 1-d calls", "bank.search, as_of (time-ordered)",
                "bank.search, as_of (out of order)", "bank.search, NO_TIME_FILTER", "bank.search, torch query"):
        assert row in out


def test_paired_training_steps_report_the_search_share():
    bench = _script("bench_training")
    splits = prepare_dataset(make_synthetic_market(n_bars=300, seed=1).ohlcv, seq_len=16)
    cfg = MemoryTransformerConfig(input_dim=splits.train.n_features, seq_len=16, d_model=16, n_heads=2,
                                  n_layers=2, d_ff=24, key_dim=8, n_neighbors=4)
    row = bench.paired_steps(splits.train, cfg, TrainerConfig(batch_size=32, progress=False), steps=2)
    assert set(row) == {"step ms memory", "step ms no memory", "step overhead %", "overhead without search %",
                        "search ms (alone)"}
    assert all(np.isfinite(v) for v in row.values()) and row["search ms (alone)"] > 0


def test_ablation_ladder_table_prints(capsys, monkeypatch):
    import argparse

    bench = _script("bench_ablation")
    args = argparse.Namespace(bars=700, seq_len=16, sp_seq_len=16, epochs=1, seeds=2, workers=1, save=None,
                              arms="no_memory,full,knn_analog,raft_linear",
                              set=["d_model=16", "n_heads=2", "n_layers=1", "d_ff=16", "key_dim=8", "n_neighbors=8",
                                   "trainer.batch_size=64"])
    bench.run_market("unseen", args)
    out = capsys.readouterr().out
    assert "=== unseen" in out and "full - raft_linear on onsets" in out and "onset - no_motif" in out
