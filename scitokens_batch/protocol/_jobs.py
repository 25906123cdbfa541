"""The HTCondor job lifecycle, as data.

Rule 1: everything that decides which state a job is in lives in this file, and the decision
itself is the table :data:`TRANSITIONS`.  Actors (the queue manager, the execute hosts) never
assign a state: they feed events to :meth:`JobLifecycle.process` and read the result.

Rule 2: this module is pure.  No trio, no clock: the time of each event is the ``now`` the
caller passes in, and it only goes into the history.

Theory of operation
===================

A job is born by a :class:`Submit` (HTCondor job event 000, "Job submitted") and starts
**IDLE**: it waits in the queue manager (the schedd) for the negotiator.  The birth is kept out
of :data:`TRANSITIONS`, in :data:`INITIAL_STATES`, because there is no state *before* a job
exists; a second ``Submit`` to the same job is therefore an error, as in HTCondor, where every
submission gets a new job id.

From **IDLE**:

* :class:`Match` leaves the job IDLE.  HTCondor does the same: the negotiator hands the schedd a
  claim on a slot, but ``JobStatus`` stays 1 until the claim is activated.  The event records
  the host and slot.  A second ``Match`` replaces the first (a claim that could not be activated
  is dropped and the job is matched again).  The table cannot tell whether an IDLE job is
  matched, and neither can ``JobStatus``; :attr:`JobLifecycle.host` can.
* :class:`Execute` (event 001, "Job executing on host") makes it **RUNNING**.
* :class:`Hold` makes it **HELD** without running it, e.g. no usable credential appeared
  within ``credential_wait`` (:attr:`HoldCode.CORRUPTED_CREDENTIAL`) or input transfer failed.
* :class:`Remove` (``condor_rm``) makes it **REMOVED**.

From **RUNNING**:

* :class:`Terminate` (event 005, "Job terminated") ends it: exit code 0 gives **COMPLETED**,
  any other exit code gives **FAILED** (e.g. the job's data access was denied).  HTCondor has a
  single "Completed" status for both; we keep FAILED apart because the summary counts
  ``jobs.failed`` separately.  The table keeps the two outcomes as two rows, keyed by the
  pseudo-events :class:`TerminateSuccess` and :class:`TerminateFailure`; :func:`table_key`
  picks the row from the exit code and decides nothing else.
* :class:`Evict` (event 004, "Job was evicted": the host crashed, the slot was vacated or
  preempted) puts it back to **IDLE**: the job is requeued and the work done is lost.
* :class:`Hold` makes it **HELD**; the starter is killed, so this is an eviction too.  A running
  job is held when its credentials go bad (the token manager cannot renew them) or a transfer
  fails.
* :class:`Remove` makes it **REMOVED**.

From **HELD** (event 012), only two ways out, both explicit decisions of a person or a policy:

* :class:`Release` (event 013, ``condor_release`` or ``periodic_release``) puts it back to
  **IDLE**, to be matched again.
* :class:`Remove` makes it **REMOVED**.

A held job is not held again, matched, executed or evicted: it is not running anywhere.

**COMPLETED**, **FAILED** and **REMOVED** are terminal: they accept no event at all.  A job
that must run again is a new submission.

Anything the tables do not list raises :class:`JobStateError`, naming the job, the event and
the state, like h11's ``"can't handle event type ... when role=... and state=..."``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, final

import attrs

from scitokens_batch.errors import SciTokensBatchError

__all__ = [
    "EVENT_TYPES",
    "INITIAL_STATES",
    "TRANSITIONS",
    "Evict",
    "Execute",
    "Hold",
    "HoldCode",
    "JobEvent",
    "JobLifecycle",
    "JobState",
    "JobStateError",
    "Match",
    "Release",
    "Remove",
    "Submit",
    "Terminate",
    "TerminateFailure",
    "TerminateSuccess",
    "Transition",
    "table_key",
]


class JobState(enum.Enum):
    """Where a job is in its lifecycle; the values are the ``jobs.<value>`` summary paths."""

    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    COMPLETED = "completed"
    REMOVED = "removed"
    FAILED = "failed"

    @property
    def job_status(self) -> int:
        """HTCondor's numeric ``JobStatus`` for this state.

        From the HTCondor manual, "Job Status Codes": 1 Idle, 2 Running, 3 Removed (shown as
        "Removing" while the job is still in the queue), 4 Completed, 5 Held.  HTCondor has no
        FAILED status: a job that exits with a non-zero code is "Completed" (4) with a non-zero
        ``ExitCode``, so FAILED reports 4 as well.
        """
        return _JOB_STATUS[self]

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and REMOVED, which accept no event."""
        return self in _TERMINAL


_JOB_STATUS: Final[Mapping[JobState, int]] = MappingProxyType(
    {
        JobState.IDLE: 1,
        JobState.RUNNING: 2,
        JobState.REMOVED: 3,
        JobState.COMPLETED: 4,
        JobState.HELD: 5,
        JobState.FAILED: 4,  # "Completed" with ExitCode != 0
    }
)
_TERMINAL: Final = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.REMOVED})


class HoldCode(enum.IntEnum):
    """The HTCondor ``HoldReasonCode`` values the simulator uses.

    Numbers and labels (the ``NumHoldsByReason`` label, see :attr:`label`) are those of the
    HTCondor manual, "Hold Reason Codes" (htcondor/htcondor
    ``docs/codes-other-values/hold-table.rst``).  Only codes with a documented meaning are
    listed; :class:`Hold` accepts any positive code, these are the ones actors send.
    """

    USER_REQUEST = 1
    """UserRequest: "The user put the job on hold with condor_hold"."""

    JOB_POLICY = 3
    """JobPolicy: "The PERIODIC_HOLD expression evaluated to True. Or, ON_EXIT_HOLD was true"."""

    CORRUPTED_CREDENTIAL = 4
    """CorruptedCredential: "The credentials for the job are invalid".

    Our meaning: the job has no usable credential.  No valid access token for one of its
    services appeared within ``credential_wait`` (the token manager's refresh kept failing, the
    issuer was down, or the refresh token was revoked), or the one it holds can no longer be
    renewed.
    """

    TRANSFER_OUTPUT_ERROR = 12
    """TransferOutputError: "An error occurred while transferring job output files"."""

    TRANSFER_INPUT_ERROR = 13
    """TransferInputError: "An error occurred while transferring job input files"."""

    @property
    def label(self) -> str:
        """HTCondor's name for the code, as in ``NumHoldsByReason`` (e.g. ``"UserRequest"``)."""
        return _HOLD_LABELS[self]


_HOLD_LABELS: Final[Mapping[HoldCode, str]] = MappingProxyType(
    {
        HoldCode.USER_REQUEST: "UserRequest",
        HoldCode.JOB_POLICY: "JobPolicy",
        HoldCode.CORRUPTED_CREDENTIAL: "CorruptedCredential",
        HoldCode.TRANSFER_OUTPUT_ERROR: "TransferOutputError",
        HoldCode.TRANSFER_INPUT_ERROR: "TransferInputError",
    }
)


class JobStateError(SciTokensBatchError, RuntimeError):
    """An actor sent a job an event its current state does not accept.

    This is a programming error of the actor, not bad input, hence :class:`RuntimeError`.

    Args:
        job_id: the job.
        event: the event that was refused.
        state: the job's state when it was refused.
    """

    def __init__(self, job_id: int, event: JobEvent, state: JobState) -> None:
        self.job_id = job_id
        self.event = event
        self.state = state
        super().__init__(
            f"job {job_id}: can't handle {type(event).__name__} when state={state.name}"
        )


# --- events -------------------------------------------------------------------------------
# Frozen and keyword-only, validated on construction (like h11's _events.py): an invalid event
# never reaches the lifecycle.


def _strict_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Reject non-integers, including ``bool`` (which ``instance_of(int)`` lets through)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"'{attribute.name}' must be an int (got {value!r} that is a {type(value)!r})."
        )


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    """Reject strings that are empty or only whitespace."""
    if not value.strip():
        raise ValueError(f"'{attribute.name}' must be a non-empty string (got {value!r}).")


_STR = attrs.validators.instance_of(str)
_REASON = [_STR, _non_empty]


@attrs.frozen(kw_only=True, slots=True)
class JobEvent:
    """Base class of everything :meth:`JobLifecycle.process` accepts."""


@final
@attrs.frozen(kw_only=True, slots=True)
class Submit(JobEvent):
    """The job entered the queue (HTCondor event 000); it creates the job, IDLE."""


@final
@attrs.frozen(kw_only=True, slots=True)
class Match(JobEvent):
    """The negotiator matched the IDLE job to a slot; the job stays IDLE until :class:`Execute`.

    Attributes:
        host: the execute host's name.
        slot: the slot number on that host; HTCondor numbers slots from 1 (``slot1``).
    """

    host: str = attrs.field(validator=[_STR, _non_empty])
    slot: int = attrs.field(validator=[_strict_int, attrs.validators.ge(1)])


@final
@attrs.frozen(kw_only=True, slots=True)
class Execute(JobEvent):
    """The starter started the job on its matched slot (HTCondor event 001); it is RUNNING."""


@final
@attrs.frozen(kw_only=True, slots=True)
class Hold(JobEvent):
    """The job was put on hold (HTCondor event 012), whether IDLE or RUNNING.

    A running job is stopped and its work is lost, as with :class:`Evict`.

    Attributes:
        code: the ``HoldReasonCode``, positive; usually a :class:`HoldCode`.
        subcode: the ``HoldReasonSubCode`` (a Unix errno, or a code-specific value); 0 if none.
        reason: the ``HoldReason``, one human-readable sentence.
    """

    code: int = attrs.field(validator=[_strict_int, attrs.validators.ge(1)])
    subcode: int = attrs.field(default=0, validator=[_strict_int, attrs.validators.ge(0)])
    reason: str = attrs.field(validator=_REASON)


@final
@attrs.frozen(kw_only=True, slots=True)
class Release(JobEvent):
    """The held job was released (HTCondor event 013) and goes back to IDLE.

    Attributes:
        reason: who or what released it, e.g. ``"via condor_release"`` or
            ``"periodic_release"``.
    """

    reason: str = attrs.field(validator=_REASON)


@final
@attrs.frozen(kw_only=True, slots=True)
class Evict(JobEvent):
    """The running job lost its slot (HTCondor event 004); it is requeued IDLE, its work lost.

    Attributes:
        reason: why, e.g. ``"host crashed"`` or ``"vacated by startd policy"``.
    """

    reason: str = attrs.field(validator=_REASON)


@final
@attrs.frozen(kw_only=True, slots=True)
class Terminate(JobEvent):
    """The running job exited (HTCondor event 005).

    Exit code 0 makes it COMPLETED, any other FAILED (see :func:`table_key`).

    Attributes:
        exit_code: the job's exit status, 0 to 255 as a Unix exit status (``ExitCode``).
        reason: optional explanation, e.g. ``"data access denied: expired"``.
    """

    exit_code: int = attrs.field(
        validator=[_strict_int, attrs.validators.ge(0), attrs.validators.le(255)]
    )
    reason: str = attrs.field(default="", validator=_STR)

    @property
    def succeeded(self) -> bool:
        """True when the exit code is 0."""
        return self.exit_code == 0


@final
@attrs.frozen(kw_only=True, slots=True)
class Remove(JobEvent):
    """The job was removed from the queue (``condor_rm``, HTCondor event 009); it is REMOVED.

    Attributes:
        reason: who or what removed it, e.g. ``"via condor_rm"`` or ``"periodic_remove"``.
    """

    reason: str = attrs.field(validator=_REASON)


class _TableKey(JobEvent):
    """A row key of :data:`TRANSITIONS` that is not an event: it cannot be instantiated."""

    __slots__ = ()

    def __init__(self) -> None:
        raise TypeError(
            f"{type(self).__name__} is a key of TRANSITIONS, not an event; "
            "process Terminate(exit_code=...) instead"
        )


@final
class TerminateSuccess(_TableKey):
    """Table key for a :class:`Terminate` with exit code 0."""

    __slots__ = ()


@final
class TerminateFailure(_TableKey):
    """Table key for a :class:`Terminate` with a non-zero exit code."""

    __slots__ = ()


EVENT_TYPES: Final[tuple[type[JobEvent], ...]] = (
    Submit,
    Match,
    Execute,
    Hold,
    Release,
    Evict,
    Terminate,
    Remove,
)
"""Every event an actor can send, in lifecycle order."""


# --- the tables ---------------------------------------------------------------------------

_I, _R, _H = JobState.IDLE, JobState.RUNNING, JobState.HELD

INITIAL_STATES: Final[Mapping[type[JobEvent], JobState]] = MappingProxyType(
    {
        Submit: _I,
    }
)
"""The events that create a job, and the state they create it in."""

TRANSITIONS: Final[Mapping[tuple[JobState, type[JobEvent]], JobState]] = MappingProxyType(
    {
        # IDLE: waiting in the queue for a slot.
        (_I, Match): _I,  # JobStatus stays Idle until the claim is activated
        (_I, Execute): _R,
        (_I, Hold): _H,  # e.g. no credential within credential_wait, before it ever ran
        (_I, Remove): JobState.REMOVED,
        # RUNNING: on a slot.
        (_R, TerminateSuccess): JobState.COMPLETED,
        (_R, TerminateFailure): JobState.FAILED,
        (_R, Evict): _I,  # host crash / vacate: requeued, work lost
        (_R, Hold): _H,  # e.g. credentials can no longer be renewed
        (_R, Remove): JobState.REMOVED,
        # HELD: stays put until a person or a policy decides.
        (_H, Release): _I,
        (_H, Remove): JobState.REMOVED,
        # COMPLETED, FAILED, REMOVED: terminal, no rows.
    }
)
"""Every allowed ``(state, event type) -> new state``; a pair that is not here is an error."""


def table_key(event: JobEvent) -> type[JobEvent]:
    """Return the event-type half of the :data:`TRANSITIONS` key for ``event``.

    This is the event's class, except for :class:`Terminate`, whose row depends on the exit
    code: :class:`TerminateSuccess` for 0, :class:`TerminateFailure` otherwise.

    Args:
        event: any job event.

    Returns:
        The class to look up in :data:`TRANSITIONS` (or :data:`INITIAL_STATES`).
    """
    if isinstance(event, Terminate):  # Terminate is final: this is an exact type check
        return TerminateSuccess if event.exit_code == 0 else TerminateFailure
    return type(event)


# --- one job ------------------------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class Transition:
    """One entry of a job's history.

    Attributes:
        t: the time the event was processed, as passed to :meth:`JobLifecycle.process`.
        event: the event.
        old: the state before; ``None`` for the :class:`Submit` that created the job.
        new: the state after.
    """

    t: float
    event: JobEvent
    old: JobState | None
    new: JobState


def _check_time(job_id: int, now: float, since: float) -> None:
    """Raise ValueError unless ``now`` is finite and not before ``since``."""
    if not math.isfinite(now):
        raise ValueError(f"job {job_id}: now must be finite (got {now!r})")
    if now < since:
        raise ValueError(f"job {job_id}: time can't go backwards (now={now!r} < {since!r})")


@final
class JobLifecycle:
    """One job's state, driven by events through :data:`TRANSITIONS`.

    The job is created by its :class:`Submit` (IDLE); afterwards :meth:`process` moves it on.
    Cheap enough for a pool of tens of thousands of jobs: slots, one dict lookup an event.

    Args:
        job_id: the job's id, used in error messages.
        now: the submission time.
        submit: the submission event; a plain ``Submit()`` by default.

    Raises:
        ValueError: ``now`` is not finite.
    """

    __slots__ = (
        "_entered_at",
        "_exit_code",
        "_history",
        "_hold",
        "_host",
        "_job_id",
        "_num_holds",
        "_num_job_starts",
        "_slot",
        "_state",
    )

    def __init__(self, job_id: int, *, now: float, submit: Submit | None = None) -> None:
        if submit is None:
            submit = Submit()
        _check_time(job_id, now, -math.inf)
        state = INITIAL_STATES[table_key(submit)]
        self._job_id = job_id
        self._state = state
        self._entered_at = now
        self._history: list[Transition] = [Transition(now, submit, None, state)]
        self._host: str | None = None
        self._slot: int | None = None
        self._hold: Hold | None = None
        self._exit_code: int | None = None
        self._num_job_starts = 0
        self._num_holds = 0

    def process(self, event: JobEvent, *, now: float) -> JobState:
        """Apply ``event`` at time ``now`` and return the new state.

        Args:
            event: the event; its ``(state, table_key(event))`` pair must be in
                :data:`TRANSITIONS`.
            now: the current time, not before the previous event's.

        Returns:
            The job's state after the event.

        Raises:
            JobStateError: the current state does not accept this event; nothing changed.
            ValueError: ``now`` is not finite or is earlier than the previous event; nothing
                changed.
        """
        old = self._state
        new = TRANSITIONS.get((old, table_key(event)))
        if new is None:
            raise JobStateError(self._job_id, event, old)
        _check_time(self._job_id, now, self._history[-1].t)
        # Bookkeeping only below: the table has already decided.
        if isinstance(event, Match):
            self._host, self._slot = event.host, event.slot
        elif isinstance(event, Execute):
            self._num_job_starts += 1
        elif isinstance(event, Hold):
            self._num_holds += 1
            self._hold = event
        elif isinstance(event, Terminate):
            self._exit_code = event.exit_code
        if new is not JobState.HELD:
            self._hold = None
        if new is not old:
            self._entered_at = now
            if new is JobState.IDLE or new is JobState.HELD:
                self._host = self._slot = None  # back in the queue: no slot any more
        self._state = new
        self._history.append(Transition(now, event, old, new))
        return new

    @property
    def job_id(self) -> int:
        """The job's id."""
        return self._job_id

    @property
    def state(self) -> JobState:
        """The current state."""
        return self._state

    @property
    def entered_at(self) -> float:
        """When the job entered its current state (HTCondor's ``EnteredCurrentStatus``).

        A :class:`Match` does not change it: the job stays IDLE.
        """
        return self._entered_at

    @property
    def history(self) -> Sequence[Transition]:
        """Every event processed, oldest first, starting with the :class:`Submit`.

        A live, read-only view: do not mutate.
        """
        return self._history

    @property
    def host(self) -> str | None:
        """The host of the current or last match; None while IDLE unmatched or HELD."""
        return self._host

    @property
    def slot(self) -> int | None:
        """The slot of the current or last match; None when :attr:`host` is None."""
        return self._slot

    @property
    def hold(self) -> Hold | None:
        """The :class:`Hold` in effect while HELD, else None."""
        return self._hold

    @property
    def exit_code(self) -> int | None:
        """The exit code once the job has terminated (COMPLETED or FAILED), else None."""
        return self._exit_code

    @property
    def num_job_starts(self) -> int:
        """How many times the job started executing (HTCondor's ``NumJobStarts``)."""
        return self._num_job_starts

    @property
    def num_holds(self) -> int:
        """How many times the job was held (HTCondor's ``NumHolds``)."""
        return self._num_holds

    def __repr__(self) -> str:
        where = f" on {self._host} slot{self._slot}" if self._host is not None else ""
        return f"<JobLifecycle job {self._job_id} {self._state.name}{where}>"
