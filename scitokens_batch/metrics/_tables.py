"""jobs.csv and tokens.csv: one row a job / a token, folded from the event stream.

:class:`JobTable` and :class:`TokenTable` are :class:`~scitokens_batch.metrics.Recorder`
observers, like :class:`~scitokens_batch.metrics.SummaryBuilder`: they see every event as it is
recorded (or replay an events.jsonl with :meth:`~JobTable.feed`) and keep one small row per job
or token, never the events themselves, so a run of a million data accesses over a hundred
thousand tokens costs a hundred thousand rows.

The CSV files are written for pandas: a header of the column names below (a contract, like the
summary.json paths: add columns at the end, never rename), one row a line, an empty cell for a
missing value, numbers as Python prints them. They are written atomically, so a reader never
sees half a table.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from scitokens_batch._files import write_public

from ._events import Event

__all__ = ["JOB_COLUMNS", "TOKEN_COLUMNS", "JobTable", "TokenTable"]

#: The columns of jobs.csv, in order.
JOB_COLUMNS: Final[tuple[str, ...]] = (
    "job",
    "workload",
    "user",
    "submitted_t",
    "first_start_t",
    "last_start_t",
    "end_t",
    "status",
    "exit_code",
    "host",
    "starts",
    "holds",
    "last_hold_code",
    "evictions",
    "cpu_s",
    "lost_cpu_s",
    "reason",
)

#: The columns of tokens.csv, in order.
TOKEN_COLUMNS: Final[tuple[str, ...]] = (
    "jti",
    "token_sha",
    "sub",
    "client",
    "grant",
    "scope",
    "aud",
    "iat",
    "exp",
    "lifetime_s",
    "minted_t",
    "staged",
    "uses",
    "rejects",
    "first_use_t",
    "last_use_t",
    "min_headroom_s",
)


def _cell(value: object) -> object:
    """One CSV cell: empty for None, floats rounded to the microsecond (sums drift below it)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return value


def _words(value: object) -> str | None:
    """A list of strings (``aud``, ``scope``) as one space-separated string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return " ".join(str(v) for v in value)
    return str(value)


def _shared(value: Any) -> Any:
    """One copy of a string that many rows repeat (``sys.intern`` lets it go with the rows)."""
    return sys.intern(value) if type(value) is str else value


def _csv_text(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(columns)
    out.writerows([_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def _job_key(job: object) -> tuple[int, float, str]:
    # Job ids are integers; anything else (a hand-written events file) sorts after them, by text.
    if isinstance(job, int | float) and not isinstance(job, bool):
        return (0, job, "")
    return (1, 0, str(job))


class _JobRow:
    """The fold of one job's events (``__slots__``: a hundred thousand of these stay small)."""

    __slots__ = (
        "cpu_s",
        "end_t",
        "evictions",
        "exit_code",
        "first_start_t",
        "holds",
        "host",
        "job",
        "last_hold_code",
        "last_start_t",
        "lost_cpu_s",
        "reason",
        "starts",
        "status",
        "submitted_t",
        "user",
        "workload",
    )

    def __init__(self, job: Any) -> None:
        self.job = job
        self.workload: Any = None
        self.user: Any = None
        self.submitted_t: float | None = None
        self.first_start_t: float | None = None
        self.last_start_t: float | None = None
        self.end_t: float | None = None
        self.status = "idle"
        self.exit_code: Any = None
        self.host: Any = None
        self.starts = 0
        self.holds = 0
        self.last_hold_code: Any = None
        self.evictions = 0
        self.cpu_s: float | None = None
        self.lost_cpu_s = 0.0
        self.reason: Any = None

    def values(self) -> tuple[object, ...]:
        """The row, in :data:`JOB_COLUMNS` order."""
        return (
            self.job,
            self.workload,
            self.user,
            self.submitted_t,
            self.first_start_t,
            self.last_start_t,
            self.end_t,
            self.status,
            self.exit_code,
            self.host,
            self.starts,
            self.holds,
            self.last_hold_code,
            self.evictions,
            self.cpu_s,
            self.lost_cpu_s,
            self.reason,
        )


class JobTable:
    """Folds job events (submit, execute, held, released, evicted, terminated) into jobs.csv.

    One row a job, sorted by job id. ``status`` is the job's last state (idle, running, held,
    completed or failed), ``host`` the last host it ran on, ``reason`` the reason of its last
    hold or termination; ``starts``, ``holds`` and ``evictions`` count events and ``lost_cpu_s``
    adds up what evictions threw away. A job whose first event is not ``submit`` (a truncated
    events file) still gets a row, with empty submit columns.
    """

    __slots__ = ("_dispatch", "_rows")

    def __init__(self) -> None:
        self._rows: dict[Any, _JobRow] = {}
        self._dispatch: dict[str, Callable[[float, dict[str, Any]], None]] = {
            "submit": self._submit,
            "execute": self._execute,
            "held": self._held,
            "released": self._released,
            "evicted": self._evicted,
            "terminated": self._terminated,
        }

    def __call__(self, ev: Event) -> None:
        """Take one event (a :class:`~scitokens_batch.metrics.Recorder` observer)."""
        handle = self._dispatch.get(ev.kind)
        if handle is not None:
            handle(ev.t, ev.fields)

    def feed(self, events: Iterable[Event]) -> JobTable:
        """Take many events (replaying an events.jsonl).

        Returns:
            This table, for chaining.
        """
        for ev in events:
            self(ev)
        return self

    def _row(self, job: Any) -> _JobRow:
        row = self._rows.get(job)
        if row is None:
            row = self._rows[job] = _JobRow(job)
        return row

    def _submit(self, t: float, f: dict[str, Any]) -> None:
        row = self._row(f["job"])
        row.workload = f.get("workload")
        row.user = f.get("user")
        row.submitted_t = t
        row.status = "idle"

    def _execute(self, t: float, f: dict[str, Any]) -> None:
        row = self._row(f["job"])
        if row.first_start_t is None:
            row.first_start_t = t
        row.last_start_t = t
        row.starts += 1
        row.host = f.get("host")
        row.status = "running"

    def _held(self, t: float, f: dict[str, Any]) -> None:
        row = self._row(f["job"])
        row.holds += 1
        row.last_hold_code = f.get("code")
        row.reason = f.get("reason")
        row.status = "held"

    def _released(self, t: float, f: dict[str, Any]) -> None:
        self._row(f["job"]).status = "idle"

    def _evicted(self, t: float, f: dict[str, Any]) -> None:
        row = self._row(f["job"])
        row.evictions += 1
        row.lost_cpu_s += f.get("lost_cpu_s") or 0.0
        row.host = f.get("host", row.host)
        row.status = "idle"

    def _terminated(self, t: float, f: dict[str, Any]) -> None:
        row = self._row(f["job"])
        row.end_t = t
        row.exit_code = f.get("exit_code")
        row.host = f.get("host", row.host)
        row.status = f["status"]
        row.reason = f.get("reason")
        cpu = f.get("cpu_s")
        if cpu is not None:
            row.cpu_s = cpu if row.cpu_s is None else row.cpu_s + cpu

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[tuple[object, ...]]:
        """The rows, in :data:`JOB_COLUMNS` order, sorted by job id (None for a missing value)."""
        return [self._rows[job].values() for job in sorted(self._rows, key=_job_key)]

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write jobs.csv atomically (a temporary file in the same directory, then a rename).

        Args:
            path: the file to write; its directory must exist.

        Raises:
            OSError: the file could not be written; an existing file is left unchanged.
        """
        write_public(path, _csv_text(JOB_COLUMNS, self.rows()))


class _TokenRow:
    """The fold of one token's events (``__slots__``: a hundred thousand of these stay small)."""

    __slots__ = (
        "aud",
        "client",
        "exp",
        "first_use_t",
        "grant",
        "iat",
        "jti",
        "last_use_t",
        "min_headroom_s",
        "minted_t",
        "rejects",
        "scope",
        "staged",
        "sub",
        "token_sha",
        "uses",
    )

    def __init__(self, jti: Any, minted_t: float) -> None:
        self.jti = jti
        self.minted_t = minted_t
        self.token_sha: Any = None
        self.sub: Any = None
        self.client: Any = None
        self.grant: Any = None
        self.scope: str | None = None
        self.aud: str | None = None
        self.iat: Any = None
        self.exp: Any = None
        self.staged = 0
        self.uses = 0
        self.rejects = 0
        self.first_use_t: float | None = None
        self.last_use_t: float | None = None
        self.min_headroom_s: float | None = None

    def values(self) -> tuple[object, ...]:
        """The row, in :data:`TOKEN_COLUMNS` order."""
        iat, exp = self.iat, self.exp
        return (
            self.jti,
            self.token_sha,
            self.sub,
            self.client,
            self.grant,
            self.scope,
            self.aud,
            iat,
            exp,
            exp - iat if iat is not None and exp is not None else None,
            self.minted_t,
            self.staged,
            self.uses,
            self.rejects,
            self.first_use_t,
            self.last_use_t,
            self.min_headroom_s,
        )


class TokenTable:
    """Folds token events into tokens.csv: one row a ``jti`` minted by the issuer.

    The mint columns (``jti`` .. ``minted_t``) come from the ``mint`` event, with ``aud`` as a
    space-separated list and ``lifetime_s = exp - iat``. ``staged``, ``uses`` and ``rejects``
    count the ``stage``, ``use`` and ``reject`` events naming the ``jti``; ``first_use_t``,
    ``last_use_t`` and ``min_headroom_s`` come from the ``use`` events (accepted accesses) only.
    Events naming a ``jti`` that was never minted (a foreign token, an unparsable one) are not
    counted here; summary.json counts them. Rows are in the order the tokens were minted.
    """

    __slots__ = ("_dispatch", "_rows")

    def __init__(self) -> None:
        self._rows: dict[Any, _TokenRow] = {}
        self._dispatch: dict[str, Callable[[float, dict[str, Any]], None]] = {
            "mint": self._mint,
            "use": self._use,
            "reject": self._reject,
            "stage": self._stage,
        }

    def __call__(self, ev: Event) -> None:
        """Take one event (a :class:`~scitokens_batch.metrics.Recorder` observer)."""
        handle = self._dispatch.get(ev.kind)
        if handle is not None:
            handle(ev.t, ev.fields)

    def feed(self, events: Iterable[Event]) -> TokenTable:
        """Take many events (replaying an events.jsonl).

        Returns:
            This table, for chaining.
        """
        for ev in events:
            self(ev)
        return self

    def _mint(self, t: float, f: dict[str, Any]) -> None:
        # Many tokens share a subject, client, grant, scope and audience: keep one copy of each
        # (a replayed events.jsonl would otherwise hold a fresh string per token).
        row = _TokenRow(f["jti"], t)
        row.token_sha = f.get("token_sha")
        row.sub = _shared(f.get("sub"))
        row.client = _shared(f.get("client"))
        row.grant = _shared(f.get("grant"))
        row.scope = _shared(_words(f.get("scope")))
        row.aud = _shared(_words(f.get("aud")))
        row.iat = f.get("iat")
        row.exp = f.get("exp")
        self._rows[row.jti] = row

    def _use(self, t: float, f: dict[str, Any]) -> None:
        row = self._rows.get(f.get("jti"))
        if row is None:
            return
        row.uses += 1
        if row.first_use_t is None:
            row.first_use_t = t
        row.last_use_t = t
        headroom = f.get("headroom_s")
        if headroom is not None and (row.min_headroom_s is None or headroom < row.min_headroom_s):
            row.min_headroom_s = headroom

    def _reject(self, t: float, f: dict[str, Any]) -> None:
        row = self._rows.get(f.get("jti"))
        if row is not None:
            row.rejects += 1

    def _stage(self, t: float, f: dict[str, Any]) -> None:
        row = self._rows.get(f.get("jti"))
        if row is not None:
            row.staged += 1

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[tuple[object, ...]]:
        """The rows, in :data:`TOKEN_COLUMNS` order, in mint order (None for a missing value)."""
        return [row.values() for row in self._rows.values()]

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write tokens.csv atomically (a temporary file in the same directory, then a rename).

        Args:
            path: the file to write; its directory must exist.

        Raises:
            OSError: the file could not be written; an existing file is left unchanged.
        """
        write_public(path, _csv_text(TOKEN_COLUMNS, self.rows()))
