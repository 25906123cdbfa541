"""jobs.log: HTCondor's own JobEventLog reads our job event log, and it agrees with jobs.csv."""

from __future__ import annotations

import csv
import datetime
from collections import Counter
from pathlib import Path
from typing import Any

import htcondor2
import pytest

from scitokens_batch.metrics import Event, JobEventLogWriter
from scitokens_batch.scenario import load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z

_ETYPE = htcondor2.JobEventType


def _events(path: Path) -> list[Any]:
    # A bounded read: events(stop_after=0) returns at the end of the file instead of waiting.
    return list(htcondor2.JobEventLog(str(path)).events(stop_after=0))


def _utc(epoch: float, t: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch + t, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


class TestWriter:
    def test_every_kind_parses(self, tmp_path: Path) -> None:
        """Each of the seven job event kinds is read back by htcondor2 with its fields."""
        log = JobEventLogWriter(epoch=EPOCH, clusters={"analysis": 3})
        fields = [
            ("submit", {"job": 7, "workload": "analysis", "user": "alice"}),
            ("execute", {"job": 7, "host": "node-0", "slot": 1}),
            ("held", {"job": 7, "code": 4, "reason": "no usable\nscitokens credential"}),
            ("released", {"job": 7, "reason": "periodic_release"}),
            ("execute", {"job": 7, "host": "node-1", "slot": 1}),
            ("evicted", {"job": 7, "host": "node-1", "reason": "crash", "lost_cpu_s": 3723.4}),
            ("execute", {"job": 7, "host": "node-1", "slot": 1}),
            ("terminated", {"job": 7, "exit_code": 3, "status": "failed", "cpu_s": 90061.0}),
            ("submit", {"job": 8, "workload": "analysis", "user": "alice"}),
            ("aborted", {"job": 8, "reason": "removed by the user"}),
        ]
        for seq, (kind, f) in enumerate(fields):
            log(Event(10.5 * seq, seq, "queue_manager", kind, f))
        path = tmp_path / "jobs.log"
        log.write_log(path)
        got = _events(path)
        assert [int(e.type) for e in got] == [0, 1, 12, 13, 1, 4, 1, 5, 0, 9]
        assert [(e.cluster, e.proc) for e in got] == [(3, 0)] * 8 + [(3, 1)] * 2
        assert got[0]["LogNotes"] == "job 7 of workload analysis"
        assert got[1]["ExecuteHost"] == "<127.0.0.1:0?alias=node-0>"
        assert got[2]["HoldReasonCode"] == 4 and got[2]["HoldReasonSubCode"] == 0
        assert got[2]["HoldReason"] == "no usable scitokens credential"
        assert got[3]["Reason"] == "periodic_release"
        assert got[5]["RunRemoteUsage"] == "Usr 0 01:02:03, Sys 0 00:00:00"
        assert got[7]["ReturnValue"] == 3 and got[7]["TerminatedNormally"] is True
        assert got[7]["RunRemoteUsage"] == "Usr 1 01:01:01, Sys 0 00:00:00"
        assert got[9]["Reason"] == "removed by the user"
        assert got[1]["EventTime"] == _utc(EPOCH, 10.5) + ".500"

    def test_unlisted_workload_gets_next_cluster(self) -> None:
        """A workload missing from the cluster map gets the next number after the largest."""
        log = JobEventLogWriter(epoch=EPOCH, clusters={"a": 1})
        log(Event(0.0, 0, "qm", "submit", {"job": 1, "workload": "b"}))
        assert log.text().startswith("000 (002.000.000) 2026-01-01 00:00:00 ")


@pytest.mark.parametrize("name", ["reference", "credmon-crash"])
def test_log_agrees_with_jobs_csv(name: str, tmp_path: Path) -> None:
    """Every event of a run's jobs.log, read by htcondor2.JobEventLog, matches jobs.csv."""
    spec = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    run_virtual(spec, out=tmp_path, plots=False)
    with (tmp_path / "jobs.csv").open() as fh:
        rows = {row["job"]: row for row in csv.DictReader(fh)}
    by_id: dict[tuple[int, int], str] = {}
    counts: Counter[tuple[str, int]] = Counter()
    last_exit: dict[str, int] = {}
    for ev in _events(tmp_path / "jobs.log"):
        if ev.type == _ETYPE.SUBMIT:
            job = ev["LogNotes"].split()[1]
            by_id[(ev.cluster, ev.proc)] = job
            # The submit time is the epoch plus submitted_t (to the millisecond).
            assert ev["EventTime"][:19] == _utc(spec.meta.epoch, float(rows[job]["submitted_t"]))
        job = by_id[(ev.cluster, ev.proc)]
        counts[(job, int(ev.type))] += 1
        if ev.type == _ETYPE.JOB_TERMINATED:
            last_exit[job] = ev["ReturnValue"]
        if ev.type == _ETYPE.JOB_HELD:
            assert ev["HoldReasonCode"] == int(rows[job]["last_hold_code"])
    assert set(by_id.values()) == set(rows)
    for job, row in rows.items():
        assert counts[(job, 1)] == int(row["starts"]), job
        assert counts[(job, 12)] == int(row["holds"]), job
        assert counts[(job, 4)] == int(row["evictions"]), job
        if row["status"] in ("completed", "failed"):
            assert last_exit[job] == int(row["exit_code"]), job
            assert (last_exit[job] == 0) == (row["status"] == "completed")
    if name == "credmon-crash":
        assert sum(n for (_, code), n in counts.items() if code == 12) == 3
        assert sum(n for (_, code), n in counts.items() if code == 13) >= 1
