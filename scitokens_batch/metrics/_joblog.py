"""jobs.log: the run's job events in HTCondor's user job event log format.

HTCondor users read job histories with their own tools (``condor_userlog``,
``htcondor2.JobEventLog``, DAGMan, pandas recipes built on them); this writer folds the job
events of a run (submit, execute, evicted, terminated, aborted, held, released) into that format
so those tools work on our runs unchanged. Each event is a header line
``NNN (cluster.proc.000) YYYY-MM-DD HH:MM:SS[.mmm] text``, indented detail lines, and ``...``.

Job ids: a workload is a cluster (its position in the scenario, from 1) and its jobs are procs
numbered from 0 in submit order, as ``queue N`` numbers them. The submit event's notes line
(``LogNotes``) names our job id and workload, so a log line leads back to jobs.csv.

Event times are the scenario epoch plus the event's ``t``, written in UTC (HTCondor writes local
time; read the log with ``TZ=UTC`` to get the scenario's clock). Sub-second times keep
milliseconds, as HTCondor does with ``EVENT_LOG_FORMAT_OPTIONS = ISO_DATE, SUB_SECOND``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from scitokens_batch._files import write_public

from ._events import Event

__all__ = ["JOB_LOG_CODES", "JobEventLogWriter"]

#: Our event kind -> HTCondor's ULogEventNumber.
JOB_LOG_CODES: Final[Mapping[str, int]] = {
    "submit": 0,
    "execute": 1,
    "evicted": 4,
    "terminated": 5,
    "aborted": 9,
    "held": 12,
    "released": 13,
}

#: The pseudo sinful string of every host (no daemon listens: HTCondor tools only print it).
_SINFUL = "<127.0.0.1:0?alias={}>"


def _usage(seconds: float) -> str:
    """``Usr D HH:MM:SS, Sys 0 00:00:00``: HTCondor's rusage line (whole seconds)."""
    s = max(0, round(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"Usr {days} {hours:02d}:{minutes:02d}:{secs:02d}, Sys 0 00:00:00"


def _one_line(value: object) -> str:
    """A free-text field on one line (a newline would end the event's detail block)."""
    return " ".join(str(value).split())


class JobEventLogWriter:
    """Folds job events into jobs.log (a :class:`~scitokens_batch.metrics.Recorder` observer).

    Args:
        epoch: the scenario's epoch (Unix seconds at ``t = 0``).
        clusters: workload name -> cluster number; a workload not listed gets the next number
            after the largest, in order of first submit.
    """

    __slots__ = ("_clusters", "_dispatch", "_epoch", "_ids", "_lines", "_next_proc", "_run_s")

    def __init__(self, *, epoch: float, clusters: Mapping[str, int] | None = None) -> None:
        self._epoch = epoch
        self._clusters: dict[str, int] = dict(clusters or {})
        self._next_proc: dict[int, int] = {}
        self._ids: dict[Any, str] = {}
        self._run_s: dict[Any, float] = {}
        self._lines: list[str] = []
        self._dispatch: dict[str, Callable[[str, float, dict[str, Any]], str]] = {
            "submit": self._submit,
            "execute": self._execute,
            "evicted": self._evicted,
            "terminated": self._terminated,
            "aborted": self._aborted,
            "held": self._held,
            "released": self._released,
        }

    def __call__(self, ev: Event) -> None:
        """Take one event."""
        handle = self._dispatch.get(ev.kind)
        if handle is None or "job" not in ev.fields:
            return
        job = ev.fields["job"]
        if ev.kind == "submit":
            self._assign(job, ev.fields.get("workload"))
        job_id = self._ids.get(job)
        if job_id is None:  # a truncated events file: no submit seen, make up a cluster 0 id
            job_id = self._ids[job] = f"000.{len(self._ids):03d}.000"
        header = f"{JOB_LOG_CODES[ev.kind]:03d} ({job_id}) {self._time(ev.t)} "
        self._lines.append(header + handle(str(job), ev.t, ev.fields) + "...\n")

    def feed(self, events: Iterable[Event]) -> JobEventLogWriter:
        """Take many events (replaying an events.jsonl); returns this writer."""
        for ev in events:
            self(ev)
        return self

    def __len__(self) -> int:
        return len(self._lines)

    def text(self) -> str:
        """The log so far."""
        return "".join(self._lines)

    def write_log(self, path: str | os.PathLike[str]) -> None:
        """Write jobs.log atomically (temporary file, then rename)."""
        write_public(path, self.text())

    # -- helpers -----------------------------------------------------------------------------

    def _assign(self, job: Any, workload: object) -> None:
        name = str(workload)
        cluster = self._clusters.get(name)
        if cluster is None:
            cluster = self._clusters[name] = max(self._clusters.values(), default=0) + 1
        proc = self._next_proc.get(cluster, 0)
        self._next_proc[cluster] = proc + 1
        self._ids[job] = f"{cluster:03d}.{proc:03d}.000"

    def _time(self, t: float) -> str:
        moment = datetime.datetime.fromtimestamp(self._epoch + t, tz=datetime.UTC)
        text = moment.strftime("%Y-%m-%d %H:%M:%S")
        millis = round(moment.microsecond / 1000)
        if millis == 1000:  # rounding carried into the next second: print that second
            moment = moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text}.{millis:03d}" if millis else text

    # -- one method per event: the text after the header, detail lines included --------------

    def _submit(self, job: str, t: float, f: dict[str, Any]) -> str:
        return (
            f"Job submitted from host: {_SINFUL.format('queue_manager')}\n"
            f"    job {job} of workload {_one_line(f.get('workload'))}\n"
        )

    def _execute(self, job: str, t: float, f: dict[str, Any]) -> str:
        self._run_s[job] = t
        return f"Job executing on host: {_SINFUL.format(_one_line(f.get('host')))}\n"

    def _evicted(self, job: str, t: float, f: dict[str, Any]) -> str:
        lost = f.get("lost_cpu_s") or 0.0
        self._run_s.pop(job, None)
        return (
            "Job was evicted.\n"
            "\t(0) Job was not checkpointed.\n"
            f"\t\t{_usage(lost)}  -  Run Remote Usage\n"
            f"\t\t{_usage(0)}  -  Run Local Usage\n"
            "\t0  -  Run Bytes Sent By Job\n"
            "\t0  -  Run Bytes Received By Job\n"
        )

    def _terminated(self, job: str, t: float, f: dict[str, Any]) -> str:
        cpu = f.get("cpu_s")
        started = self._run_s.pop(job, None)
        run = cpu if cpu is not None else (t - started if started is not None else 0.0)
        code = f.get("exit_code")
        how = (
            f"(1) Normal termination (return value {int(code)})"
            if isinstance(code, int) and code >= 0
            else f"(0) Abnormal termination (signal {abs(int(code or 9))})"
        )
        return (
            "Job terminated.\n"
            f"\t{how}\n"
            f"\t\t{_usage(run)}  -  Run Remote Usage\n"
            f"\t\t{_usage(0)}  -  Run Local Usage\n"
            f"\t\t{_usage(run)}  -  Total Remote Usage\n"
            f"\t\t{_usage(0)}  -  Total Local Usage\n"
            "\t0  -  Run Bytes Sent By Job\n"
            "\t0  -  Run Bytes Received By Job\n"
            "\t0  -  Total Bytes Sent By Job\n"
            "\t0  -  Total Bytes Received By Job\n"
        )

    def _aborted(self, job: str, t: float, f: dict[str, Any]) -> str:
        return f"Job was aborted.\n\t{_one_line(f.get('reason') or 'via condor_rm')}\n"

    def _held(self, job: str, t: float, f: dict[str, Any]) -> str:
        self._run_s.pop(job, None)
        code = int(f.get("code") or 0)
        subcode = int(f.get("subcode") or 0)
        return (
            "Job was held.\n"
            f"\t{_one_line(f.get('reason') or 'held')}\n"
            f"\tCode {code} Subcode {subcode}\n"
        )

    def _released(self, job: str, t: float, f: dict[str, Any]) -> str:
        return f"Job was released.\n\t{_one_line(f.get('reason') or 'via condor_release')}\n"
