"""Append-only event records ``(t, seq, actor, kind, fields)`` and where they go.

``t`` is virtual seconds since the scenario started (live mode: wall seconds since start); ``seq``
numbers events in the order they were recorded, so ``(t, seq)`` is a total order. A record never
holds a token, refresh token or key: only ``jti`` and ``token_sha`` (12 hex digits of SHA-256).

The event kinds, and their fields (the contract of events.jsonl, summary.json and the report):

=========================  ===============  =====================================================
kind                       actor            fields
=========================  ===============  =====================================================
``submit``                 queue_manager    job, workload, user
``execute``                queue_manager    job, host, slot
``held``                   queue_manager    job, code, reason
``released``               queue_manager    job, reason
``evicted``                queue_manager    job, host, reason, lost_cpu_s
``terminated``             queue_manager    job, host, exit_code, status ("completed"/"failed"),
                                            reason, cpu_s
``mint``                   issuer           jti, token_sha, sub, client, grant, scope, aud, iat,
                                            exp, kid
``request``                issuer           endpoint ("token"/"jwks"/"device_authorization"/
                                            "device"/"revoke"/"authorize"/"userinfo"/
                                            "register"), status, grant, error
``refresh_reuse``          issuer           client, revoked (RFC 9700: a rotated refresh token
                                            used again; its family of ``revoked`` tokens revoked)
``code_reuse``             issuer           client, revoked (RFC 6749 §4.1.2: an authorization
                                            code used again; the tokens issued with it revoked)
``refresh``                token_manager    user, service, jti, exp, initial
                           transfer         token (the jti of the token submitted to it), jti, exp,
                           service          initial (false)
``refresh_failed``         token_manager    user, service, error, attempt, retry_in_s
                           transfer         token, error, attempt, retry_in_s (null: final)
                           service
``stage``                  <execute host>   job, service, jti, exp, host_time (the host's own clock)
``use``                    <data server>    job, op, path, jti, exp, headroom_s, status, cached
                                            (+ observed_by: the execute host that recorded it for a
                                            server that records nothing itself, XRootD)
``reject``                 <data server>    job, op, path, status, reason, detail, jti, exp,
                                            headroom_s (jti/exp/headroom_s null when unparsable)
``jwks_fetch``             <data server>,   issuer, ok, unknown_kid
                           transfer
                           service
``exchange``               transfer         token, jti, exp (L6: a submitted token exchanged for a
                           service          refresh token and a new access token)
``exchange_failed``        transfer         token, error, attempt, retry_in_s (null: final)
                           service
``transfer_...``           transfer         ``transfer_submitted``: job, files;
                           service          ``transfer_resubmitted``: job, files (the same
                                            submission again, its first answer lost);
                                            ``transfer_refused``: job, status, reason;
                                            ``transfer_state``: job, file, state ("submitted"/
                                            "token_prep"/"active"/"done"/"failed"), attempt, reason
                                            (+ retry_in_s when a retry is scheduled);
                                            ``transfer_done``: job, file, source, destination,
                                            path, size, attempts, duration_s;
                                            ``transfer_failed``: job, file, reason, attempts
``rule_...``               data manager     ``rule_start``: rule, source, destination, files;
                                            ``rule_submitted``: rule, job, files;
                                            ``rule_failed``: rule, job (null: the rest of the
                                            rule), files, reason
``token_request_failed``   data manager     scope, audience, error, attempt, retry_in_s (null:
                                            final)
``fault``                  world            fault, phase ("start"/"end"), and the fault's keys
=========================  ===============  =====================================================

``use`` and ``reject`` also carry ``transfer`` (``<transfer job>/<file>``) for the accesses of a
third-party copy, at both ends.

``headroom_s`` is ``exp`` minus the *true* time of the access (not the server's skewed clock).

What events.jsonl holds is chosen per run (``--events``, :data:`EVENT_OUTPUTS`): ``all`` (the
default), ``none`` (no file: the summary, CSVs, jobs.log and report are built from the events
as they are recorded, whatever is written), or ``errors``: only the events that signal a
problem (:func:`is_error`), with the ``seq`` numbers they have in the full stream.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Any, Final, NamedTuple, Protocol

import attrs

from ..tokens import bound_fields

__all__ = [
    "ERROR_KINDS",
    "EVENT_OUTPUTS",
    "ErrorsOnlySink",
    "Event",
    "EventSink",
    "JsonlSink",
    "ListSink",
    "Recorder",
    "events_file_sink",
    "is_error",
]

#: The choices of ``--events``: every event, no events.jsonl, only the events of problems.
EVENT_OUTPUTS: Final = ("all", "none", "errors")

#: Kinds that always signal a problem: a refused access, a failed token request or refresh,
#: a held, evicted or unmatched job, a refused, failed or re-submitted transfer (its answer was
#: lost), a failed rule, a replayed refresh token or authorization code, and the faults
#: themselves (start and end).
ERROR_KINDS: Final = frozenset(
    {
        "reject",
        "refresh_failed",
        "exchange_failed",
        "token_request_failed",
        "held",
        "evicted",
        "unmatched",
        "transfer_refused",
        "transfer_resubmitted",
        "transfer_failed",
        "rule_failed",
        "refresh_reuse",
        "code_reuse",
        "fault",
    }
)


class Event(NamedTuple):
    """One record. ``fields`` holds JSON-ready values only.

    A named tuple rather than a frozen attrs class: a run makes over a million of them, and a
    tuple is built in 0.4 µs against 1.1 µs.
    """

    t: float
    seq: int
    actor: str
    kind: str
    fields: dict[str, Any]

    def to_json(self) -> str:
        """One line of events.jsonl (keys: t, seq, actor, kind, then the fields, sorted)."""
        head = (
            f'{{"t":{self.t!r},"seq":{self.seq},"actor":{json.dumps(self.actor)},'
            f'"kind":"{self.kind}"'
        )
        if not self.fields:
            return head + "}"
        body = json.dumps(self.fields, separators=(",", ":"), sort_keys=True)
        return head + "," + body[1:]

    @classmethod
    def from_json(cls, line: str) -> Event:
        """Parse one line of events.jsonl."""
        d = json.loads(line)
        return cls(d.pop("t"), d.pop("seq"), d.pop("actor"), d.pop("kind"), d)


def is_error(ev: Event) -> bool:
    """Whether ``ev`` signals a problem (what ``--events errors`` keeps): a kind of
    :data:`ERROR_KINDS`, or a ``terminated`` job that failed, a failed ``transfer_state``
    attempt, a failed ``jwks_fetch``, an issuer ``request`` answered with an error status
    (>= 400), or a ``use`` accepted at or after the token's exp (``headroom_s`` <= 0)."""
    kind = ev.kind
    if kind in ERROR_KINDS:
        return True
    f = ev.fields
    if kind == "use":
        headroom = f.get("headroom_s")
        return headroom is not None and headroom <= 0
    if kind == "terminated":
        return f.get("status") == "failed"
    if kind == "transfer_state":
        return f.get("state") == "failed"
    if kind == "jwks_fetch":
        return not f.get("ok")
    if kind == "request":
        status = f.get("status")
        return isinstance(status, int) and status >= 400
    return False


class EventSink(Protocol):
    """Where recorded events go."""

    def write(self, event: Event) -> None:
        """Take one event."""
        ...

    def close(self) -> None:
        """No more events."""
        ...


@attrs.define
class ListSink:
    """Keeps events in memory (tests, small runs)."""

    events: list[Event] = attrs.field(factory=list)

    def write(self, event: Event) -> None:
        """Append."""
        self.events.append(event)

    def close(self) -> None:
        """Nothing to release."""

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


@attrs.define
class JsonlSink:
    """Streams events to a file as JSON lines, through a temporary name.

    The file appears under its final name only on :meth:`commit`; :meth:`discard` removes it
    (no half-written output after a failed run).
    """

    path: str
    _tmp: str = attrs.field(init=False, alias="_tmp")
    _fh: IO[str] | None = attrs.field(init=False, default=None, alias="_fh")

    def __attrs_post_init__(self) -> None:
        directory, name = os.path.split(self.path)
        self._tmp = os.path.join(directory, f".{name}.partial")
        self._fh = open(self._tmp, "w", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115

    def write(self, event: Event) -> None:
        """Append one line."""
        assert self._fh is not None, "sink is closed"
        self._fh.write(event.to_json())
        self._fh.write("\n")

    def close(self) -> None:
        """Flush and close (the file stays under its temporary name)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def commit(self) -> None:
        """Close and move into place."""
        self.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Close and delete."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


@attrs.define
class ErrorsOnlySink:
    """Writes only the events :func:`is_error` keeps to ``inner`` (``--events errors``)."""

    inner: JsonlSink

    def write(self, event: Event) -> None:
        """Pass ``event`` on when it signals a problem."""
        if is_error(event):
            self.inner.write(event)

    def close(self) -> None:
        """Close the file (it stays under its temporary name)."""
        self.inner.close()

    def commit(self) -> None:
        """Close and move into place."""
        self.inner.commit()

    def discard(self) -> None:
        """Close and delete."""
        self.inner.discard()


def events_file_sink(path: str, events: str) -> JsonlSink | ErrorsOnlySink | None:
    """The sink writing events.jsonl at ``path`` for an ``--events`` choice; None for
    ``none``. Chosen once per run, so ``all`` costs nothing per event beyond the write.

    Raises:
        ValueError: ``events`` is not one of :data:`EVENT_OUTPUTS`.
    """
    if events == "all":
        return JsonlSink(path)
    if events == "errors":
        return ErrorsOnlySink(JsonlSink(path))
    if events == "none":
        return None
    raise ValueError(f"events: expected one of {', '.join(EVENT_OUTPUTS)}, received {events!r}")


@attrs.define
class Recorder:
    """Numbers and timestamps events, and hands them to a sink and to observers.

    Args:
        clock: seconds since the scenario started (virtual or wall).
        sink: where events go.
        observers: callables that see every event as it is recorded (the summary builder,
            the progress display).
    """

    clock: Callable[[], float]
    sink: EventSink = attrs.field(factory=ListSink)
    observers: list[Callable[[Event], None]] = attrs.field(factory=list)
    _seq: int = attrs.field(default=0, alias="_seq")

    def record(self, actor: str, kind: str, **fields: Any) -> Event:
        """Record an event now."""
        return self.record_fields(actor, kind, fields)

    def record_fields(self, actor: str, kind: str, fields: dict[str, Any]) -> Event:
        """:meth:`record` with the fields as a dict the recorder takes over (the caller builds
        it once; no keyword-argument copy on the per-access path)."""
        # Rounded to the microsecond: float noise below that is not information, and it would
        # make two identical runs differ in their last digits when printed.
        # Every string bounded and redacted: a value a client sent (a form field, a 900 kB
        # grant_type, a JWT where a client id belongs) never lands in the events whole.
        bound_fields(fields)
        ev = Event(round(self.clock(), 6), self._seq, actor, kind, fields)
        self._seq += 1
        self.sink.write(ev)
        for observe in self.observers:
            observe(ev)
        return ev

    @property
    def count(self) -> int:
        """Events recorded so far."""
        return self._seq
