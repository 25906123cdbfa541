"""Virtual-time primitives for the hot paths: a clock read that costs a field read, and sleeps
woken by their own deadline without an exception.

**The clock.** :func:`virtual_clock` gives trio's ``MockClock`` with ``rate = 0`` and autojump at 0:
virtual time moves only when trio jumps it to the next deadline. ``MockClock.current_time``
still reads the real clock and scales it by the rate (``virtual_base + 0 * elapsed``), and trio
and the actors read the time about a dozen times per data access; with ``rate = 0`` that sum is
exactly ``virtual_base``, so returning the field gives the same floats for a fraction of the
cost. Its autojump also reads the next deadline directly (not through ``current_statistics()``)
and wakes the tasks due at the new instant in the same run-loop pass (one zero-length I/O poll
per instant instead of two).

**The sleeps.** ``trio.sleep`` parks the task in a cancel scope with a deadline; when the
deadline passes, trio cancels the scope (recalculating its cancel-status tree) and wakes the task
with a ``Cancelled`` exception, raised through the sleep and caught by the scope. A million data
accesses are a million such scopes and exceptions, more than half of the cost of a sleep under
``MockClock`` (docs/performance.md). :class:`Timer` puts the task's wake-up time in trio's own
deadline heap instead, as an entry that reschedules the task with a plain value when it passes;
several tasks due at the same instant may share one (the shared bandwidth link's lock-step
transfers).

The task is put on the run queue in the same run-loop pass as with ``trio.sleep``, so the batch
of tasks that run together, and trio's seeded order within it, are unchanged: every event of a
seeded run is the same (tests/scenarios/test_pinned_outputs.py, tests/test_vtime.py).
Cancellation from outside is trio's, level-triggered: an enclosing scope cancelled while the
task waits raises ``Cancelled`` in it; one cancelled after the task was woken is delivered at
its next checkpoint, as with ``trio.sleep``.

This relies on two internals of trio's run loop (the runner's ``deadlines`` heap and the two
attributes it reads of an entry); the project pins trio below 0.40, a test checks that the fast
path is the one taken, and without those internals the same API falls back to a cancel scope.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import trio
import trio.testing
from trio._core import _run_context
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

__all__ = ["Timer", "sleep", "sleep_until", "virtual_clock"]


def virtual_clock() -> trio.testing.MockClock:
    """``MockClock(autojump_threshold=0)`` at rate 0 whose time is read without the real clock.

    ``MockClock`` is final (trio refuses subclasses) and trio's run loop autojumps only a
    ``MockClock``, so this is one, with methods replaced on the instance (the time, the sleep
    time of the I/O wait, and the autojump once the run starts). At rate 0,
    ``MockClock`` computes ``virtual_base + 0 * (perf_counter() - real_base)``, which is
    ``virtual_base`` exactly; reading the attribute gives the same floats. Should a trio release
    rename that attribute, the plain clock is returned (slower, same results); a test checks
    that the fast path is the one taken with the trio this project pins.
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    if not isinstance(getattr(clock, "_virtual_base", None), float):  # pragma: no cover
        return clock
    state = vars(clock)

    def current_time() -> float:
        return state["_virtual_base"]  # type: ignore[no-any-return]

    def deadline_to_sleep_time(deadline: float) -> float:
        # MockClock at rate 0: due now, or (for the I/O wait) practically never.
        return 0 if deadline <= state["_virtual_base"] else 999999999

    start_clock = clock.start_clock

    def start_clock_and_bind() -> None:
        # trio calls this inside trio.run: the run's deadline heap is known from here on.
        start_clock()
        runner = getattr(_run_context.GLOBAL_RUN_CONTEXT, "runner", None)
        deadlines = getattr(runner, "deadlines", None)
        next_deadline = getattr(deadlines, "next_deadline", None)
        expire = getattr(deadlines, "expire", None)
        if next_deadline is None or expire is None:  # pragma: no cover - another trio
            return

        def autojump() -> None:
            # MockClock._autojump reads the same figure through current_statistics(), which
            # also counts tasks and asks epoll for its statistics, on every jump.
            jump = next_deadline() - state["_virtual_base"]
            if 0 < jump < math.inf:
                clock.jump(jump)
                # trio would wake the tasks due now on its next pass, after an I/O poll of zero
                # length that finds nothing in virtual time; waking them here, in the same
                # order, lets them run in this pass: one pass and one epoll call per instant
                # instead of two. The batch is the same, and so is the seeded shuffle of it
                # (an empty batch draws nothing).
                expire(state["_virtual_base"])

        clock._autojump = autojump  # type: ignore[method-assign]

    # The rate must stay 0 for the shortcut to be exact: nothing in a run changes it.
    clock.current_time = current_time  # type: ignore[method-assign]
    clock.deadline_to_sleep_time = deadline_to_sleep_time  # type: ignore[method-assign]
    clock.start_clock = start_clock_and_bind  # type: ignore[method-assign]
    return clock


#: The last run checked for the internals a fast :class:`Timer` needs, and its deadline heap
#: (None: not usable). Checked once per run, not once per sleep.
_usable: list[Any] = [None, None]


class Timer:
    """A wake-up time, kept in trio's own deadline heap without a cancel scope.

    trio's run loop keeps the deadlines of cancel scopes in a heap and, when one passes, calls
    the scope's ``_cancel``; what it reads of an entry is its ``_registered_deadline`` and that
    method. A timer is such an entry: when its deadline passes it reschedules its task with a
    plain value. A cancel scope per sleep costs its entry and exit, a cancel-status tree
    recalculated at expiry and a ``Cancelled`` raised and caught; a timer costs a heap push and
    pop. The deadline can be moved while the task waits (:meth:`set`), which the shared
    bandwidth link does whenever its share changes. Cancellation from outside is trio's as
    usual: the abort function unregisters the timer and lets ``Cancelled`` through.

    Outside a trio run with the heap this needs (another trio release, guest mode), the
    same API falls back to a cancel scope whose own deadline wakes the task without an
    exception (:attr:`fast` says which); the order in which tasks wake is the same either way.
    """

    __slots__ = ("_deadlines", "_pending", "_registered_deadline", "_scope", "_task", "_waiters")

    def __init__(self) -> None:
        self._task = current_task()
        runner = getattr(_run_context.GLOBAL_RUN_CONTEXT, "runner", None)
        if runner is not _usable[0]:
            deadlines = getattr(runner, "deadlines", None)
            usable = (
                deadlines is not None
                and not getattr(runner, "is_guest", True)
                and callable(getattr(deadlines, "add", None))
                and callable(getattr(deadlines, "remove", None))
            )
            _usable[:] = [runner, deadlines if usable else None]
        self._deadlines = _usable[1]
        self._registered_deadline = math.inf
        #: the tasks waiting (several when transfers due at the same instant share the timer)
        self._waiters: list[trio.lowlevel.Task] = []
        self._scope: trio.CancelScope | None = None
        self._pending = math.inf  # the fallback's deadline until its scope exists

    @property
    def waiting(self) -> bool:
        """Whether a task waits in :meth:`wait` and has not been woken yet."""
        if self._deadlines is None:
            return self._scope is not None and not self._scope.cancel_called
        return bool(self._waiters)

    @property
    def fast(self) -> bool:
        """Whether this timer sits in trio's deadline heap itself (else: a cancel scope)."""
        return self._deadlines is not None

    def set(self, deadline: float) -> None:
        """Wake the task at ``deadline`` (moves an earlier setting)."""
        if math.isnan(deadline):
            raise ValueError("deadline must not be NaN")
        if self._deadlines is None:
            if self._scope is not None:
                self._scope.deadline = deadline
            else:
                self._pending = deadline
            return
        if deadline == self._registered_deadline:
            return  # unchanged (as a cancel scope's deadline set to its own value)
        self._unregister()
        if deadline != math.inf:
            self._registered_deadline = deadline
            self._deadlines.add(deadline, self)

    def clear(self) -> None:
        """No wake-up time (the task waits until :meth:`set` or :meth:`fire`)."""
        self.set(math.inf)

    def _unregister(self) -> None:
        if self._registered_deadline != math.inf:
            assert self._deadlines is not None
            self._deadlines.remove(self._registered_deadline, self)
            self._registered_deadline = math.inf

    def _cancel(self, _reason: object) -> None:
        # trio's deadline heap: our deadline passed (the heap dropped its entry). Every waiter
        # is queued now, in this pass: the same batch as with a timer each.
        self._unregister()
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            reschedule(task)

    def fire(self) -> None:
        """Wake the task now if it waits (a link reset); it finds out why by itself."""
        if self._deadlines is None:
            if self._scope is not None:
                self._scope.cancel()
            return
        self._cancel(None)

    async def wait(self) -> None:
        """Wait until the deadline set with :meth:`set` passes or :meth:`fire` is called;
        returns normally then. A cancellation from outside raises ``Cancelled``. Several tasks
        may wait on one fast timer (:attr:`fast`): all wake together."""
        if self._deadlines is None:
            await self._wait_in_scope()
            return
        task = current_task()

        def abort(_raise_cancel: object) -> Abort:
            with contextlib.suppress(ValueError):
                self._waiters.remove(task)
            if not self._waiters:
                self._unregister()  # nobody left to wake
            return Abort.SUCCEEDED

        self._waiters.append(task)
        await wait_task_rescheduled(abort)

    async def _wait_in_scope(self) -> None:
        with trio.CancelScope(deadline=self._pending) as scope:
            self._scope = scope
            task = self._task

            def abort(_raise_cancel: object) -> Abort:
                if trio.current_time() >= scope.deadline:
                    reschedule(task)  # our own deadline: wake without raising
                    return Abort.FAILED
                return Abort.SUCCEEDED

            try:
                await wait_task_rescheduled(abort)
            finally:
                self._pending = scope.deadline
                self._scope = None


async def sleep_until(deadline: float) -> None:
    """:func:`trio.sleep_until` without a cancel scope (a deadline in the past is a
    checkpoint: the task runs again in the next batch)."""
    timer = Timer()
    timer.set(deadline)
    await timer.wait()


async def sleep(seconds: float) -> None:
    """:func:`trio.sleep` without the exception; 0 is a checkpoint, as there."""
    if seconds < 0:
        raise ValueError("`seconds` must be non-negative")
    if seconds == 0:
        await trio.lowlevel.checkpoint()
        return
    await sleep_until(trio.current_time() + seconds)
