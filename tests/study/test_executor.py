"""The Dask executor: a dead worker is a failed row, and an existing scheduler is used as is."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

import dask
import distributed  # noqa: F401  (registers the distributed.* config keys set below)
import pytest

from scitokens_batch.study import DaskExecutor, RunTask, load_study, run_study

from .test_study_run import STUDY, _table
from .workers import die_on_seed_13


def _task(seed: int) -> RunTask:
    return RunTask(
        key=f"k{seed}", point=0, seed=seed, scenario_text="", scenario_file="x", overrides=()
    )


@pytest.mark.slow
def test_a_worker_killed_by_its_run_becomes_an_error_row_and_the_rest_complete() -> None:
    """A run that kills its worker process is reported with its error; the runs queued on the
    same worker (which Dask fails with it) get a second chance and finish."""
    results: list[dict[str, Any]] = []
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        DaskExecutor(workers=1) as ex,
    ):
        ex.run([_task(1), _task(13), _task(2)], results.append, function=die_on_seed_13)
    by_seed = {r["seed"]: r for r in results}
    assert set(by_seed) == {1, 2, 13}
    assert by_seed[1]["status"] == by_seed[2]["status"] == "ok"
    assert by_seed[13]["status"] == "error"
    assert "worker failed" in by_seed[13]["error"] and "KilledWorker" in by_seed[13]["error"]


@pytest.mark.slow
def test_an_existing_scheduler_gives_the_same_results(tmp_path: Path) -> None:
    """`--scheduler ADDRESS` runs on a cluster we did not start, with the same results table."""
    from distributed import LocalCluster

    study_file = tmp_path / "small.toml"
    study_file.write_text(STUDY.replace("seeds = [1, 2]", "seeds = [1]"))
    study = load_study(study_file)
    local = run_study(study, out=tmp_path / "local", workers=1, report=False)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:
        remote = run_study(
            study, out=tmp_path / "remote", scheduler=cluster.scheduler_address, report=False
        )
    assert local.ok and remote.ok
    assert remote.manifest["executor"]["kind"] == "scheduler"
    assert remote.manifest["executor"]["workers"] == 2
    assert _table(tmp_path / "local" / "results.csv") == _table(tmp_path / "remote" / "results.csv")


@pytest.mark.slow
def test_the_local_cluster_listens_on_loopback_ports_of_its_own() -> None:
    """The local cluster's scheduler and its HTTP server listen on 127.0.0.1 only, and with
    Dask's default HTTP port 8787 taken by someone else it does not contend for it."""
    with socket.socket() as other, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            other.bind(("127.0.0.1", 8787))
            other.listen()
        except OSError:
            pass  # taken already (another cluster on this machine): the same case
        with DaskExecutor(workers=1) as ex:
            cluster = ex._cluster
            assert cluster is not None
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
            http = cluster.scheduler.http_server
            assert (http.address, http.port != 8787) == ("127.0.0.1", True)
    assert not [w for w in seen if "already in use" in str(w.message)]
