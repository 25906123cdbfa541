"""Tests for the job lifecycle: the transition table, the events and JobLifecycle."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import attrs
import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.errors import LocalInputError, SciTokensBatchError
from scitokens_batch.protocol._jobs import (
    EVENT_TYPES,
    INITIAL_STATES,
    TRANSITIONS,
    Evict,
    Execute,
    Hold,
    HoldCode,
    JobEvent,
    JobLifecycle,
    JobState,
    JobStateError,
    Match,
    Release,
    Remove,
    Submit,
    Terminate,
    TerminateFailure,
    TerminateSuccess,
    Transition,
    table_key,
)

IDLE, RUNNING, HELD = JobState.IDLE, JobState.RUNNING, JobState.HELD
COMPLETED, REMOVED, FAILED = JobState.COMPLETED, JobState.REMOVED, JobState.FAILED

MATCH = Match(host="ep1.example.org", slot=1)
HOLD = Hold(code=HoldCode.CORRUPTED_CREDENTIAL, reason="no usable credential")
RELEASE = Release(reason="via condor_release")
EVICT = Evict(reason="host crashed")
REMOVE = Remove(reason="via condor_rm")
OK = Terminate(exit_code=0)
FAIL = Terminate(exit_code=1, reason="data access denied: expired")

# Every row of the table, written out by hand: (from, event, to).
ROWS: list[tuple[JobState, JobEvent, JobState]] = [
    (IDLE, MATCH, IDLE),
    (IDLE, Execute(), RUNNING),
    (IDLE, HOLD, HELD),
    (IDLE, REMOVE, REMOVED),
    (RUNNING, OK, COMPLETED),
    (RUNNING, FAIL, FAILED),
    (RUNNING, EVICT, IDLE),
    (RUNNING, HOLD, HELD),
    (RUNNING, REMOVE, REMOVED),
    (HELD, RELEASE, IDLE),
    (HELD, REMOVE, REMOVED),
]

# How to bring a fresh job to each state.
PATHS: dict[JobState, list[JobEvent]] = {
    IDLE: [],
    RUNNING: [MATCH, Execute()],
    HELD: [HOLD],
    COMPLETED: [MATCH, Execute(), OK],
    FAILED: [MATCH, Execute(), FAIL],
    REMOVED: [REMOVE],
}

# One instance of every event type; Terminate twice, once for each table row it can read.
SAMPLES: list[JobEvent] = [Submit(), MATCH, Execute(), HOLD, RELEASE, EVICT, OK, FAIL, REMOVE]


def job_in(state: JobState, job_id: int = 17) -> JobLifecycle:
    """Return job ``job_id`` driven from submission to ``state``, one second an event."""
    job = JobLifecycle(job_id, now=0.0)
    for t, event in enumerate(PATHS[state], start=1):
        job.process(event, now=float(t))
    assert job.state is state
    return job


# --- strategies ----------------------------------------------------------------------------

reasons = st.text(min_size=1, max_size=20).filter(lambda s: bool(s.strip()))
EVENT_STRATEGIES: dict[type[JobEvent], st.SearchStrategy[JobEvent]] = {
    Submit: st.builds(Submit),
    Match: st.builds(Match, host=reasons, slot=st.integers(1, 64)),
    Execute: st.builds(Execute),
    Hold: st.builds(
        Hold,
        code=st.sampled_from(HoldCode) | st.integers(1, 60),
        subcode=st.integers(0, 200),
        reason=reasons,
    ),
    Release: st.builds(Release, reason=reasons),
    Evict: st.builds(Evict, reason=reasons),
    Terminate: st.builds(
        Terminate, exit_code=st.just(0) | st.integers(0, 255), reason=st.text(max_size=5)
    ),
    Remove: st.builds(Remove, reason=reasons),
}
events = st.one_of(list(EVENT_STRATEGIES.values()))


def accepted_events(state: JobState) -> st.SearchStrategy[JobEvent]:
    """Events the table accepts in ``state`` (not terminal); Remove is drawn less often.

    Remove is accepted everywhere, so at equal weight most runs would end REMOVED at once.
    """
    keys = {key for old, key in TRANSITIONS if old is state}
    if keys & {TerminateSuccess, TerminateFailure}:
        keys.add(Terminate)
    weighted = [t for t in EVENT_TYPES if t in keys for _ in range(1 if t is Remove else 4)]
    return (
        st.sampled_from(weighted)
        .flatmap(EVENT_STRATEGIES.__getitem__)
        .filter(lambda e: (state, table_key(e)) in TRANSITIONS)
    )


class TestTable:
    """TRANSITIONS is the lifecycle: exactly the rows theory of operation describes."""

    def test_table_is_exactly_the_rows(self) -> None:
        """The table holds the eleven hand-written rows and nothing else."""
        expected = {(old, table_key(event)): new for old, event, new in ROWS}
        assert len(expected) == len(ROWS)
        assert dict(TRANSITIONS) == expected

    def test_initial_states(self) -> None:
        """Only a Submit creates a job, and it creates it IDLE."""
        assert dict(INITIAL_STATES) == {Submit: IDLE}

    def test_terminal_states_have_no_rows(self) -> None:
        """COMPLETED, FAILED and REMOVED appear in no key of the table."""
        assert {old for old, _ in TRANSITIONS} == {IDLE, RUNNING, HELD}

    def test_held_is_left_only_by_release_or_remove(self) -> None:
        """The only rows out of HELD are Release and Remove."""
        assert {key for old, key in TRANSITIONS if old is HELD} == {Release, Remove}

    def test_table_is_read_only(self) -> None:
        """Nobody can add a row at run time."""
        with pytest.raises(TypeError):
            TRANSITIONS[(COMPLETED, Release)] = IDLE  # type: ignore[index]

    @pytest.mark.parametrize(
        ("event", "key"),
        [
            (OK, TerminateSuccess),
            (FAIL, TerminateFailure),
            (Terminate(exit_code=255), TerminateFailure),
        ]
        + [(e, type(e)) for e in SAMPLES if not isinstance(e, Terminate)],
    )
    def test_table_key(self, event: JobEvent, key: type[JobEvent]) -> None:
        """table_key is the event's class, except Terminate, split by exit code."""
        assert table_key(event) is key

    @pytest.mark.parametrize("cls", [TerminateSuccess, TerminateFailure])
    def test_pseudo_events_cannot_be_built(self, cls: type[JobEvent]) -> None:
        """The two Terminate table keys are not events and refuse construction."""
        with pytest.raises(TypeError, match="is a key of TRANSITIONS, not an event"):
            cls()

    def test_event_strategies_cover_every_event(self) -> None:
        """The test strategies generate every event type (guards the property tests below)."""
        assert set(EVENT_STRATEGIES) == set(EVENT_TYPES)

    def test_event_types_lists_every_event(self) -> None:
        """EVENT_TYPES holds the eight events an actor can send."""
        assert list(EVENT_TYPES) == [
            Submit,
            Match,
            Execute,
            Hold,
            Release,
            Evict,
            Terminate,
            Remove,
        ]


class TestEveryRow:
    """Each row of the table, by an explicit example through JobLifecycle."""

    @pytest.mark.parametrize(
        ("old", "event", "new"),
        ROWS,
        ids=[f"{o.name}-{type(e).__name__}-{n.name}" for o, e, n in ROWS],
    )
    def test_row(self, old: JobState, event: JobEvent, new: JobState) -> None:
        """A job in ``old`` given ``event`` returns and records ``new``."""
        job = job_in(old)
        assert job.process(event, now=100.0) is new
        assert job.state is new
        assert job.history[-1] == Transition(100.0, event, old, new)

    def test_submit_creates_an_idle_job(self) -> None:
        """A new job is IDLE, and its history starts with its Submit."""
        job = JobLifecycle(3, now=5.0)
        assert job.state is IDLE
        assert list(job.history) == [Transition(5.0, Submit(), None, IDLE)]
        assert job.entered_at == 5.0


class TestRejections:
    """Every pair the table does not list raises JobStateError and changes nothing."""

    @pytest.mark.parametrize(
        ("state", "event"),
        [
            (s, e)
            for s, e in itertools.product(JobState, SAMPLES)
            if (s, table_key(e)) not in TRANSITIONS
        ],
        ids=lambda v: v.name if isinstance(v, JobState) else type(v).__name__,
    )
    def test_every_unlisted_pair_is_rejected(self, state: JobState, event: JobEvent) -> None:
        """All states x all event types: a pair missing from the table is refused."""
        job = job_in(state)
        before = list(job.history)
        with pytest.raises(JobStateError) as info:
            job.process(event, now=100.0)
        assert job.state is state
        assert list(job.history) == before
        assert (info.value.job_id, info.value.event, info.value.state) == (job.job_id, event, state)

    def test_message(self) -> None:
        """The message names the job, the event type and the state."""
        job = job_in(COMPLETED, job_id=17)
        with pytest.raises(JobStateError) as info:
            job.process(HOLD, now=10.0)
        assert str(info.value) == "job 17: can't handle Hold when state=COMPLETED"

    def test_error_is_a_runtime_error_not_local_input(self) -> None:
        """JobStateError is an actor's programming error: SciTokensBatchError and RuntimeError."""
        assert issubclass(JobStateError, SciTokensBatchError)
        assert issubclass(JobStateError, RuntimeError)
        assert not issubclass(JobStateError, LocalInputError)

    def test_second_submit_is_rejected(self) -> None:
        """A job is submitted once; Submit to an existing job is an error."""
        with pytest.raises(JobStateError, match="can't handle Submit when state=IDLE"):
            job_in(IDLE).process(Submit(), now=1.0)

    @given(state=st.sampled_from(JobState), event=events)
    def test_table_decides_acceptance(self, state: JobState, event: JobEvent) -> None:
        """For any state and any valid event, process accepts exactly what the table lists."""
        job = job_in(state)
        expected = TRANSITIONS.get((state, table_key(event)))
        if expected is None:
            with pytest.raises(JobStateError):
                job.process(event, now=100.0)
            assert job.state is state
        else:
            assert job.process(event, now=100.0) is expected


def check_history(job: JobLifecycle) -> None:
    """Assert that ``job``'s history and counters agree with the table and with each other."""
    hist = list(job.history)
    assert (hist[0].event, hist[0].old, hist[0].new) == (Submit(), None, IDLE)
    for prev, cur in itertools.pairwise(hist):
        assert cur.old is prev.new
        assert prev.t <= cur.t
        assert TRANSITIONS[(cur.old, table_key(cur.event))] is cur.new
        assert not prev.new.is_terminal  # terminal states absorb nothing
        if cur.new in (COMPLETED, FAILED):  # only a running job terminates
            assert cur.old is RUNNING
            assert isinstance(cur.event, Terminate)
            assert (cur.event.exit_code == 0) == (cur.new is COMPLETED)
        if cur.new is RUNNING:  # only an Execute of an IDLE job runs it
            assert (cur.old, type(cur.event)) == (IDLE, Execute)
        if cur.old is HELD:  # HELD is left by Release or Remove
            assert isinstance(cur.event, Release | Remove)
    assert job.state is hist[-1].new

    assert job.num_job_starts == sum(isinstance(h.event, Execute) for h in hist)
    assert job.num_holds == sum(isinstance(h.event, Hold) for h in hist)
    assert (job.hold is not None) == (job.state is HELD)
    if job.state is HELD:
        assert job.hold == hist[-1].event
    if job.state is HELD or (job.state is IDLE and not isinstance(hist[-1].event, Match)):
        assert (job.host, job.slot) == (None, None)
    assert (job.exit_code is not None) == (job.state in (COMPLETED, FAILED))
    assert job.entered_at == [h for h in hist if h.old is not h.new][-1].t


class TestSequences:
    """Whatever events arrive, the history a job keeps is consistent with the table."""

    @given(
        evs=st.lists(st.tuples(events, st.floats(0, 1e4)), max_size=60),
        start=st.floats(-1e6, 1e6),
    )
    def test_any_events(self, evs: list[tuple[JobEvent, float]], start: float) -> None:
        """Random events, the refused ones skipped, leave a history that obeys the table."""
        job = JobLifecycle(1, now=start)
        now = start
        for event, dt in evs:
            now += dt
            state = job.state
            try:
                job.process(event, now=now)
            except JobStateError:
                assert (state, table_key(event)) not in TRANSITIONS
                assert job.state is state
        check_history(job)

    @given(data=st.data(), steps=st.integers(0, 80))
    def test_accepted_events(self, data: st.DataObject, steps: int) -> None:
        """Any run of events the table accepts, to a terminal state or not, stays consistent."""
        job = JobLifecycle(1, now=0.0)
        for t in range(1, steps + 1):
            if job.state.is_terminal:
                break
            event = data.draw(accepted_events(job.state))
            job.process(event, now=float(t))
        hypothesis.event(f"final state {job.state.name}")
        check_history(job)


class TestLifecycle:
    """JobLifecycle's bookkeeping around the table."""

    def test_match_records_host_and_keeps_entered_at(self) -> None:
        """Match records host and slot; the job stays IDLE since it entered IDLE."""
        job = JobLifecycle(1, now=0.0)
        job.process(Match(host="ep2", slot=3), now=4.0)
        assert (job.host, job.slot, job.state, job.entered_at) == ("ep2", 3, IDLE, 0.0)

    def test_rematch_replaces_the_match(self) -> None:
        """A second Match of an IDLE job replaces the first."""
        job = JobLifecycle(1, now=0.0)
        job.process(Match(host="ep2", slot=3), now=1.0)
        job.process(Match(host="ep5", slot=1), now=2.0)
        assert (job.host, job.slot) == ("ep5", 1)

    def test_run_to_completion(self) -> None:
        """A completed job keeps where it ran, its exit code and one start."""
        job = job_in(COMPLETED)
        assert (
            job.host,
            job.slot,
            job.exit_code,
            job.num_job_starts,
            job.entered_at,
        ) == ("ep1.example.org", 1, 0, 1, 3.0)
        assert job.state.job_status == 4

    def test_failed_job(self) -> None:
        """A non-zero exit code gives FAILED, reported as HTCondor status 4."""
        job = job_in(FAILED)
        assert (job.exit_code, job.state.job_status) == (1, 4)

    def test_evict_requeues_and_forgets_the_slot(self) -> None:
        """An evicted job is IDLE, unmatched, and starts again on a new Execute."""
        job = job_in(RUNNING)
        job.process(EVICT, now=10.0)
        assert (job.state, job.host, job.slot, job.entered_at) == (IDLE, None, None, 10.0)
        job.process(MATCH, now=11.0)
        job.process(Execute(), now=12.0)
        assert job.num_job_starts == 2

    def test_hold_and_release(self) -> None:
        """A running job held loses its slot, keeps its Hold until released, counts holds."""
        job = job_in(RUNNING)
        job.process(HOLD, now=10.0)
        assert (job.state, job.hold, job.host, job.num_holds) == (HELD, HOLD, None, 1)
        job.process(RELEASE, now=20.0)
        assert (job.state, job.hold, job.num_holds) == (IDLE, None, 1)

    def test_time_cannot_go_backwards(self) -> None:
        """An event earlier than the previous one is refused and changes nothing."""
        job = job_in(RUNNING)  # last event at t=2
        with pytest.raises(ValueError, match="time can't go backwards"):
            job.process(EVICT, now=1.0)
        assert (job.state, len(job.history)) == (RUNNING, 3)

    @pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
    def test_time_must_be_finite(self, now: float) -> None:
        """NaN and infinities are not times, at submission or later."""
        with pytest.raises(ValueError, match="must be finite"):
            JobLifecycle(1, now=now)
        with pytest.raises(ValueError, match="must be finite"):
            job_in(IDLE).process(MATCH, now=now)

    def test_custom_submit_is_recorded(self) -> None:
        """The Submit passed to the constructor is the first history entry."""
        submit = Submit()
        assert submit is JobLifecycle(1, now=0.0, submit=submit).history[0].event

    def test_slots(self) -> None:
        """A job has no __dict__: ten thousand of them stay small."""
        assert not hasattr(job_in(IDLE), "__dict__")

    def test_repr(self) -> None:
        """The repr names the job, its state and its slot."""
        assert repr(job_in(RUNNING)) == "<JobLifecycle job 17 RUNNING on ep1.example.org slot1>"
        assert repr(job_in(IDLE)) == "<JobLifecycle job 17 IDLE>"


class TestJobState:
    """JobState values and their HTCondor JobStatus codes."""

    def test_job_status_codes(self) -> None:
        """Idle 1, Running 2, Removed 3, Completed 4, Held 5, and FAILED reports 4."""
        assert {s: s.job_status for s in JobState} == {
            IDLE: 1,
            RUNNING: 2,
            REMOVED: 3,
            COMPLETED: 4,
            HELD: 5,
            FAILED: 4,
        }

    def test_values_are_summary_names(self) -> None:
        """Each value is the jobs.<value> summary path."""
        assert [s.value for s in JobState] == [
            "idle",
            "running",
            "held",
            "completed",
            "removed",
            "failed",
        ]

    def test_terminal(self) -> None:
        """Exactly COMPLETED, REMOVED and FAILED are terminal."""
        assert {s for s in JobState if s.is_terminal} == {COMPLETED, REMOVED, FAILED}


class TestHoldCode:
    """HoldCode carries HTCondor's HoldReasonCode numbers and labels."""

    def test_codes_and_labels(self) -> None:
        """The codes are those of the HTCondor manual's hold reason table."""
        assert {int(c): c.label for c in HoldCode} == {
            1: "UserRequest",
            3: "JobPolicy",
            4: "CorruptedCredential",
            12: "TransferOutputError",
            13: "TransferInputError",
        }


class TestEvents:
    """Events are frozen, keyword-only, and validate on construction."""

    @pytest.mark.parametrize(
        ("build", "exc"),
        [
            (lambda: Match(host="", slot=1), ValueError),
            (lambda: Match(host="ep", slot=0), ValueError),
            (lambda: Match(host="ep", slot=True), TypeError),
            (lambda: Match(host=b"ep", slot=1), TypeError),  # type: ignore[arg-type]
            (lambda: Hold(code=0, reason="r"), ValueError),
            (lambda: Hold(code=4, subcode=-1, reason="r"), ValueError),
            (lambda: Hold(code=4.0, reason="r"), TypeError),  # type: ignore[arg-type]
            (lambda: Hold(code=4, reason="  "), ValueError),
            (lambda: Release(reason=""), ValueError),
            (lambda: Evict(reason=""), ValueError),
            (lambda: Remove(reason=""), ValueError),
            (lambda: Terminate(exit_code=-1), ValueError),
            (lambda: Terminate(exit_code=256), ValueError),
            (lambda: Terminate(exit_code=False), TypeError),
            (lambda: Terminate(exit_code=0, reason=None), TypeError),  # type: ignore[arg-type]
        ],
    )
    def test_invalid_events_are_refused(
        self, build: Callable[[], object], exc: type[Exception]
    ) -> None:
        """An invalid field raises on construction, naming the field."""
        with pytest.raises(exc, match=r"'(host|slot|code|subcode|reason|exit_code)'"):
            build()

    def test_keyword_only(self) -> None:
        """Fields cannot be passed positionally."""
        with pytest.raises(TypeError):
            Match("ep", 1)  # type: ignore[call-arg]

    def test_frozen(self) -> None:
        """Events cannot be changed after construction."""
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            MATCH.slot = 2  # type: ignore[misc]

    def test_hold_defaults(self) -> None:
        """A Hold's subcode defaults to 0 and its code compares equal to the plain int."""
        assert (HOLD.code, HOLD.subcode) == (4, 0)

    def test_terminate_succeeded(self) -> None:
        """Terminate.succeeded is true only for exit code 0, and reason defaults to empty."""
        assert (OK.succeeded, FAIL.succeeded, OK.reason) == (True, False, "")
