"""The virtual-time primitives of the hot paths (scitokens_batch/_vtime.py)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from scitokens_batch._vtime import Timer, sleep, sleep_until, virtual_clock


def _wake_times(clock: trio.abc.Clock, sleeper: object) -> list[tuple[int, float]]:
    """Twenty tasks each sleeping fifty random durations; (task, time) of every wake-up."""
    rng = random.Random(7)
    plans = [[rng.expovariate(1.0) for _ in range(50)] for _ in range(20)]
    seen: list[tuple[int, float]] = []

    async def one(i: int, durations: list[float]) -> None:
        for d in durations:
            await sleeper(d)  # type: ignore[operator]
            seen.append((i, trio.current_time()))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i, plan in enumerate(plans):
                nursery.start_soon(one, i, plan)

    trio.run(main, clock=clock)
    return seen


def test_same_times_and_order_as_mockclock_and_trio_sleep() -> None:
    """The fast clock and sleep wake the same tasks at the same floats, in the same order,
    as MockClock(autojump_threshold=0) with trio.sleep."""
    reference = _wake_times(trio.testing.MockClock(autojump_threshold=0), trio.sleep)
    assert _wake_times(virtual_clock(), sleep) == reference
    assert _wake_times(virtual_clock(), trio.sleep) == reference


def test_fast_path_is_taken_with_this_trio() -> None:
    """With the pinned trio, the clock reads its field and the autojump skips
    current_statistics (else the shortcut silently fell back to the slow clock)."""
    clock = virtual_clock()
    assert type(clock) is trio.testing.MockClock
    assert "current_time" in vars(clock) and "deadline_to_sleep_time" in vars(clock)
    jumps: list[object] = []

    async def main() -> None:
        jumps.append(vars(clock).get("_autojump"))
        await trio.sleep(5)

    trio.run(main, clock=clock)
    assert callable(jumps[0])
    assert clock.current_time() == 5.0

    async def timer_kind() -> bool:
        return Timer().fast

    assert trio.run(timer_kind, clock=virtual_clock()) is True
    assert trio.run(timer_kind) is True  # live mode (the real clock) takes it too


async def test_woken_at_the_deadline_without_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sleep returns at exactly its deadline, and its scope caught nothing."""
    start = trio.current_time()
    with trio.CancelScope() as outer:
        await sleep(2.5)
    assert trio.current_time() == start + 2.5
    assert not outer.cancelled_caught
    await sleep_until(start)  # in the past: a checkpoint that returns at once
    assert trio.current_time() == start + 2.5


async def test_outer_cancellation_raises_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    """A sleep cancelled from outside before its deadline ends with Cancelled, as trio.sleep."""
    start = trio.current_time()
    with trio.move_on_after(1) as scope:
        await sleep(10)
        pytest.fail("the sleep outlived its cancelled scope")
    assert scope.cancelled_caught
    assert trio.current_time() == start + 1


async def test_cancelled_at_the_same_instant_is_delivered_at_the_next_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An enclosing scope cancelled after the sleeper was woken is still delivered (level
    triggered): the next checkpoint raises."""
    reached: list[str] = []
    async with trio.open_nursery() as nursery:

        async def sleeper() -> None:
            await sleep(1)
            reached.append("woke")
            await trio.lowlevel.checkpoint()
            reached.append("after checkpoint")

        nursery.start_soon(sleeper)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert "after checkpoint" not in reached


async def test_zero_and_negative(autojump_clock: trio.testing.MockClock) -> None:
    """sleep(0) is a checkpoint; a negative duration is refused like trio.sleep's."""
    start = trio.current_time()
    await sleep(0)
    assert trio.current_time() == start
    with pytest.raises(ValueError, match="non-negative"):
        await sleep(-1)


def test_one_run_loop_pass_per_instant() -> None:
    """With the virtual clock, the tasks due at the instant the clock jumps to run in that same
    run-loop pass: one pass (one zero-length epoll call) per instant, not two as MockClock."""

    class Passes(trio.abc.Instrument):
        def __init__(self) -> None:
            self.count = 0

        def before_io_wait(self, timeout: float) -> None:
            self.count += 1

    async def sleeper() -> None:
        for _ in range(200):
            await sleep(1.5)

    stock, fast = Passes(), Passes()
    trio.run(sleeper, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[stock])
    trio.run(sleeper, clock=virtual_clock(), instruments=[fast])
    assert stock.count >= 400
    assert fast.count <= 210


@pytest.mark.parametrize("fast", [True, False])
async def test_timer_moves_fires_and_cancels(
    fast: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A timer wakes its task at its latest deadline, at once when fired, and a cancellation
    from outside raises Cancelled and leaves nothing registered; the same with the cancel-scope
    fallback."""
    start = trio.current_time()
    woke: list[float] = []

    def timer() -> Timer:
        t = Timer()
        if not fast:
            t._deadlines = None  # what another trio would give: the fallback
        return t

    async def mover() -> None:
        t = timer()
        t.set(start + 10)
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await trio.sleep(1)
                assert t.waiting
                t.set(start + 3)  # moved while waiting, as the shared link does

            nursery.start_soon(later)
            await t.wait()
            woke.append(trio.current_time())

    await mover()
    assert woke == [start + 3]

    t = timer()
    async with trio.open_nursery() as nursery:

        async def firer() -> None:
            await trio.sleep(2)
            t.fire()

        nursery.start_soon(firer)
        t.set(start + 100)
        await t.wait()
    assert trio.current_time() == start + 5
    assert not t.waiting

    with trio.move_on_after(1) as scope:
        t = timer()
        t.set(trio.current_time() + 50)
        await t.wait()
    assert scope.cancelled_caught
    assert not t.waiting
    assert t._registered_deadline == float("inf")
    await sleep(60)  # the cancelled timer's old deadline passes without waking anything


async def test_many_cancelled_timers_keep_trio_heap_consistent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Thousands of timers cancelled before their deadline leave trio's deadline heap
    consistent: its pruning (which asserts its count of live entries) runs and the next
    sleeps wake on time."""
    for i in range(3000):
        with trio.move_on_after(0.5):
            await sleep_until(trio.current_time() + 1000 + i)
    start = trio.current_time()
    await sleep(2)
    assert trio.current_time() == start + 2
