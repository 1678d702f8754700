"""Executors: walk-forward folds on a process pool or a Dask cluster give the serial result bit for bit."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from course_lib import BacktestConfig, WalkForwardConfig, load_sample, walk_forward_evaluate
from course_lib.parallel import dask_executor, process_pool, run_tasks

TINY = WalkForwardConfig(  # tiny model, 2 folds, 1 epoch
    n_folds=2, seq_len=8, knn_lookback=4, knn_k=8,
    model=dict(d_model=8, n_heads=2, n_layers=1, d_ff=16, key_dim=8, n_neighbors=4),
    trainer=dict(epochs=1, batch_size=64),
    strategies=("momentum", "knn_analog", "transformer", "memory_transformer"),
    backtest=BacktestConfig(n_boot=50),
)  # fmt: skip


def _slow_square(x: int) -> int:
    import time

    time.sleep(0.05 * (3 - x))  # later tasks finish first
    return x * x


def _boom(x: int) -> int:
    if x == 1:
        raise RuntimeError("task 1 failed")
    return x


def test_run_tasks_keeps_task_order_whatever_finishes_first():
    assert run_tasks(_slow_square, [0, 1, 2], progress=False, star=False) == [0, 1, 4]
    with ThreadPoolExecutor(3) as ex:
        assert run_tasks(_slow_square, [0, 1, 2], executor=ex, progress=False, star=False) == [0, 1, 4]
        with pytest.raises(RuntimeError, match="task 1"):
            run_tasks(_boom, [0, 1, 2], executor=ex, progress=False, star=False)
    assert run_tasks(pow, [(2, 3), (3, 2)], progress=False) == [8, 9]


def _assert_same(a, b) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.per_fold, b.per_fold, check_exact=True)
    assert a.positions.keys() == b.positions.keys()
    for name in a.positions:
        pd.testing.assert_series_equal(a.positions[name], b.positions[name], check_exact=True)
    for name in a.predictions:
        pd.testing.assert_frame_equal(a.predictions[name], b.predictions[name], check_exact=True)
    assert a.histories.keys() == b.histories.keys()


@pytest.fixture(scope="module")
def data():
    return load_sample("sp500").iloc[-420:]


@pytest.fixture(scope="module")
def serial(data):
    return walk_forward_evaluate(data, TINY, progress=False)


def test_process_pool_equals_serial_bit_for_bit(data, serial):
    lines: list[str] = []
    with process_pool(max_workers=2) as ex:  # spawned workers: a forked one can hang in OpenMP
        assert isinstance(ex, ProcessPoolExecutor)
        par = walk_forward_evaluate(data, TINY, progress=False, executor=ex, log=lines.append)
    _assert_same(serial, par)
    assert len(lines) == 2 and all("on the executor" in line for line in lines)
    assert np.isfinite(par.table.loc["memory_transformer", "sharpe"])


def test_dask_local_cluster_equals_serial_bit_for_bit(data, serial):
    pytest.importorskip("distributed", reason='optional extra "scale" not installed')
    executor, close = dask_executor(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    try:
        par = walk_forward_evaluate(data, TINY, progress=False, executor=executor)
    finally:
        close()
    _assert_same(serial, par)


def test_dask_missing_names_the_extra(hide_module):
    hide_module("distributed")
    with pytest.raises(ImportError, match=r'course-lib\[scale\]'):
        dask_executor()
