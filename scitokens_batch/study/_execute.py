"""Where a study's runs execute: Dask distributed.

By default a ``LocalCluster`` on 127.0.0.1 with one single-threaded worker process per core
(a run is one CPU-bound trio loop: threads would only share the GIL). With an address, the runs
go to an existing scheduler however it was deployed (dask-jobqueue's HTCondorCluster or
SLURMCluster, Kubernetes, ``dask scheduler`` + ``dask worker``). Tasks are self-contained
(:class:`~scitokens_batch.study._task.RunTask`), so workers need only the package installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import attrs

from ._task import RunTask, execute

__all__ = ["DaskExecutor", "default_workers"]


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@attrs.define
class DaskExecutor:
    """Runs tasks on Dask distributed; use as a context manager.

    Attributes:
        workers: worker processes of the local cluster (ignored with ``scheduler``).
        scheduler: the address of an existing scheduler (``tcp://host:8786``), or None.
    """

    workers: int = attrs.field(factory=default_workers)
    scheduler: str | None = None
    _client: Any = None
    _cluster: Any = None

    @property
    def description(self) -> dict[str, Any]:
        """What study.json records of the executor."""
        if self.scheduler is not None:
            n = None
            if self._client is not None:
                with contextlib.suppress(Exception):
                    n = len(self._client.scheduler_info().get("workers", {}))
            return {"kind": "scheduler", "address": self.scheduler, "workers": n}
        return {"kind": "local", "workers": self.workers, "threads_per_worker": 1}

    def __enter__(self) -> DaskExecutor:
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            self._client = Client(self.scheduler, timeout="30s")
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # The scheduler serves HTTP (health, metrics; the dashboard with bokeh) even
                # without a dashboard, on 8787 unless told otherwise: a port of its own on
                # 127.0.0.1, so two studies on one machine never contend for 8787.
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            )
            self._client = Client(self._cluster)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Close what we opened, quietly: an interrupted study must still stop its workers.
        with contextlib.suppress(Exception):
            if self._client is not None:
                self._client.close(timeout=10)
        with contextlib.suppress(Exception):
            if self._cluster is not None:
                self._cluster.close(timeout=10)
        self._client = self._cluster = None

    def run(
        self,
        tasks: Sequence[RunTask],
        on_result: Callable[[dict[str, Any]], None],
        *,
        function: Callable[[RunTask], dict[str, Any]] = execute,
    ) -> None:
        """Execute ``tasks``, calling ``on_result`` with each result as it arrives.

        A task whose worker died (or that the scheduler gave up on) comes back as a result
        with status ``"error"``; nothing here raises for one run.

        Args:
            function: what a worker calls with each task (tests pass one that kills its
                worker); an importable module-level function.
        """
        from distributed import KilledWorker, as_completed

        assert self._client is not None, "use DaskExecutor as a context manager"
        futures = {}
        for task in tasks:
            future = self._client.submit(
                function, task, key=f"scitokens-batch-run-{task.key}", pure=False
            )
            futures[future.key] = (future, task)
        # When a run kills its worker (an OOM kill, a crash in a C library), Dask also counts
        # the death against the runs queued on that worker, and gives up on them too after
        # `allowed-failures` deaths. Those runs get a second chance afterwards, one at a time,
        # so only the run that really kills its worker ends as a failed row.
        killed: list[RunTask] = []
        for future in as_completed([f for f, _ in futures.values()]):
            _, task = futures[future.key]
            try:
                result: dict[str, Any] = future.result()
            except KilledWorker:
                killed.append(task)
                continue
            except Exception as exc:
                result = _failed(task, exc)
            finally:
                future.release()
            on_result(result)
        for task in killed:
            future = self._client.submit(
                function, task, key=f"scitokens-batch-rerun-{task.key}", pure=False
            )
            try:
                result = future.result()
            except Exception as exc:
                result = _failed(task, exc)
            finally:
                future.release()
            on_result(result)


def _failed(task: RunTask, exc: BaseException) -> dict[str, Any]:
    return {
        "key": task.key,
        "point": task.point,
        "seed": task.seed,
        "label": task.label,
        "status": "error",
        "error": f"the run's worker failed: {type(exc).__name__}: {exc}",
        "summary": None,
        "wall_seconds": None,
    }
