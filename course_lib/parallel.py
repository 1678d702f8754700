"""Run independent tasks on any ``concurrent.futures.Executor``, results in task order, with a progress bar.

Walk-forward folds, instruments of a universe and seeds of a comparison do not depend on each other, so
they can run side by side. Rather than a home-made pool, every loop of the course that fans out takes an
``executor=``: ``None`` runs serially in this process (the default, easiest to debug), a process pool
(:func:`process_pool`: spawned workers, safe with torch) uses this machine's cores, and a Dask cluster's
``distributed.Client(...).get_executor()`` spreads the same tasks over many machines. The code that
produces a result never changes, so the results are bit-identical whichever executor runs it: every task
carries its own seed and nothing depends on which worker ran it or in which order tasks finished.

>>> run_tasks(pow, [(2, 3), (3, 2)], progress=False)
[8, 9]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, as_completed
from typing import Any

__all__ = ["dask_executor", "process_pool", "run_tasks"]


def _call(fn: Callable[..., Any], task: Any, star: bool) -> Any:
    return fn(*task) if star else fn(task)


def run_tasks(
    fn: Callable[..., Any],
    tasks: Iterable[Any],
    executor: Executor | None = None,
    progress: bool = True,
    desc: str = "tasks",
    star: bool = True,
) -> list[Any]:
    """``[fn(*task) for task in tasks]``, serially or on ``executor``; results always in task order.

    Args:
        fn: a module-level function (a process pool or a cluster pickles it and its arguments).
        tasks: one argument tuple per call (with ``star=False``: one single argument per call).
        executor: ``None`` (serial, in this process), or any ``concurrent.futures.Executor``: a
            ``ProcessPoolExecutor``, a ``ThreadPoolExecutor``, or a Dask cluster's
            ``client.get_executor()`` (see :func:`dask_executor`).
        progress: a tqdm bar that advances as tasks *finish* (in whatever order they finish).
        desc: the bar's label.

    The first task that raises cancels the tasks not yet started and re-raises its exception here.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, leave=False)
    try:
        if executor is None:
            out = []
            for task in tasks:
                out.append(_call(fn, task, star))
                bar.update()
            return out
        futures: list[Future] = [executor.submit(_call, fn, task, star) for task in tasks]
        where = {id(f): i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        try:
            for fut in as_completed(futures):
                results[where[id(fut)]] = fut.result()
                bar.update()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        return results
    finally:
        bar.close()


def _one_torch_thread(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def process_pool(max_workers: int | None = None, threads_per_worker: int = 1) -> Executor:
    """A ``ProcessPoolExecutor`` that is safe with torch: workers are *spawned* (fresh interpreters), and
    each uses ``threads_per_worker`` torch threads so the workers do not fight over the cores.

    Why not the default? On Linux a plain pool *forks* this process; after torch has run a parallel
    region, a forked child can hang for ever in the OpenMP runtime it inherited. Spawned workers import
    the course afresh (a few seconds each, once per pool), so reuse one pool for many tasks.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_torch_thread, initargs=(threads_per_worker,))


def dask_executor(address: str | None = None, **local_cluster: Any) -> tuple[Executor, Callable[[], None]]:
    """A ``concurrent.futures.Executor`` on a Dask cluster, and a function that shuts it down.

    ``address`` (e.g. ``"tcp://scheduler:8786"``) connects to a running cluster; without it a
    ``distributed.LocalCluster(**local_cluster)`` is started on this machine. Needs the optional extra:
    ``pip install "course-lib[scale]"``.
    """
    distributed = _require_distributed()
    if address is None:
        cluster = distributed.LocalCluster(**local_cluster)
        client = distributed.Client(cluster)
    else:
        cluster, client = None, distributed.Client(address)

    def close() -> None:
        client.close()
        if cluster is not None:
            cluster.close()

    return client.get_executor(), close


def _require_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            'a Dask cluster needs the optional extra "scale": pip install "course-lib[scale]" '
            "(or pip install 'dask[distributed]'). Without it, pass executor=None (serial) or a "
            "concurrent.futures.ProcessPoolExecutor."
        ) from exc
    return distributed

