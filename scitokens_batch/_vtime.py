"""Virtual-time primitives for the hot paths: a clock read that costs a field read, and sleeps
woken by their own deadline without an exception.

**The clock.** :func:`virtual_clock` gives trio's ``MockClock`` with ``rate = 0`` and autojump at 0:
virtual time moves only when trio jumps it to the next deadline. ``MockClock.current_time``
still reads the real clock and scales it by the rate (``virtual_base + 0 * elapsed``), and trio
and the actors read the time about a dozen times per data access; with ``rate = 0`` that sum is
exactly ``virtual_base``, so returning the field gives the same floats for a fraction of the
cost.

**The sleeps.**
``trio.sleep`` parks the task in a cancel scope with a deadline; when the deadline passes, trio
cancels the scope and the task is woken with a ``Cancelled`` exception, which is raised through
the sleep and caught by the scope. A million data accesses are a million such exceptions, about
a quarter of the cost of a sleep under ``MockClock`` (docs/performance.md). Here the task waits
with :func:`trio.lowlevel.wait_task_rescheduled` in the same kind of scope, and its abort
function, which trio calls when the scope is cancelled, tells the two causes apart:

- the scope's own deadline has passed: the task is rescheduled with a plain value (no
  exception) and the scope is left without anything to catch;
- anything else (an enclosing scope cancelled, or this scope cancelled by hand before its
  deadline): ``Abort.SUCCEEDED``, and the task gets ``Cancelled`` exactly as with
  ``trio.sleep``.

Both paths put the task on the run queue at the same point of the same run-loop pass as
``trio.sleep`` would, so the order in which tasks run, and therefore every event of a seeded
run, is unchanged (tests/scenarios/test_pinned_outputs.py). Cancellation stays level-triggered:
an enclosing scope cancelled after the task was woken is delivered at its next checkpoint, as
with ``trio.sleep``.
"""

from __future__ import annotations

import math

import trio
import trio.testing
from trio._core import _run_context
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

__all__ = ["sleep", "sleep_until", "virtual_clock", "wait_for_deadline"]


def virtual_clock() -> trio.testing.MockClock:
    """``MockClock(autojump_threshold=0)`` at rate 0 whose time is read without the real clock.

    ``MockClock`` is final (trio refuses subclasses) and trio's run loop autojumps only a
    ``MockClock``, so this is one, with two methods replaced on the instance. At rate 0,
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


async def wait_for_deadline(scope: trio.CancelScope) -> None:
    """Wait, inside the entered ``scope``, until its deadline passes (the deadline may be moved
    meanwhile); returns normally then. Any other cancellation raises ``Cancelled``."""
    task = current_task()

    def abort(_raise_cancel: object) -> Abort:
        if trio.current_time() >= scope.deadline:
            reschedule(task)  # our own deadline: wake without raising
            return Abort.FAILED
        return Abort.SUCCEEDED

    await wait_task_rescheduled(abort)


async def sleep_until(deadline: float) -> None:
    """:func:`trio.sleep_until` without the exception (a deadline in the past is a checkpoint)."""
    with trio.CancelScope(deadline=deadline) as scope:
        await wait_for_deadline(scope)


async def sleep(seconds: float) -> None:
    """:func:`trio.sleep` without the exception; 0 is a checkpoint, as there."""
    if seconds < 0:
        raise ValueError("`seconds` must be non-negative")
    if seconds == 0:
        await trio.lowlevel.checkpoint()
        return
    await sleep_until(trio.current_time() + seconds)
