"""The data server and its shared link in virtual time (M1-M6, B7, bandwidth)."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from scitokens_batch import _vtime
from scitokens_batch.actors import SharedLink
from scitokens_batch.scenario._determinism import seeded_trio_scheduler

from .helpers import of, scenario, simulate, workload


async def test_equal_share(autojump_clock: trio.testing.MockClock) -> None:
    """Two 100-byte transfers on a 100 B/s link both end at exactly 2 s."""
    link = SharedLink(100.0)
    ends: list[float] = []

    async def one(size: float) -> None:
        await link.transfer(size)
        ends.append(trio.current_time())

    async with trio.open_nursery() as n:
        await n.start(link.run)
        n.start_soon(one, 100.0)
        n.start_soon(one, 100.0)
        await trio.sleep(5)
        n.cancel_scope.cancel()
    assert ends == [2.0, 2.0]


async def test_late_arrival_shares(autojump_clock: trio.testing.MockClock) -> None:
    """Processor sharing: 100 B at 0 and 30 B at 0.5 on 100 B/s end at 1.3 and 1.1."""
    link = SharedLink(100.0)
    ends: dict[str, float] = {}

    async def one(name: str, at: float, size: float) -> None:
        await trio.sleep(at)
        await link.transfer(size)
        ends[name] = trio.current_time()

    async with trio.open_nursery() as n:
        await n.start(link.run)
        n.start_soon(one, "a", 0.0, 100.0)
        n.start_soon(one, "b", 0.5, 30.0)
        await trio.sleep(5)
        n.cancel_scope.cancel()
    assert abs(ends["a"] - 1.3) < 1e-9 and abs(ends["b"] - 1.1) < 1e-9


async def test_read_takes_size_over_bandwidth(autojump_clock: trio.testing.MockClock) -> None:
    """A 100 MB read at 100 MB/s takes 1 s; the job ends at exactly 1 s."""
    _, events = await simulate(
        scenario(workload('{ read = "store:/data/1", size = "100MB" }')), until=10
    )
    assert [e.t for e in of(events, "terminated")] == [1.0]
    (use,) = of(events, "use")
    assert (use.t, use.fields["status"], use.fields["path"]) == (0.0, 200, "/vo/data/1")


async def test_missing_file_is_404_after_authorization(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """M3: an authorized read of a missing file is 404 (and the job fails), not 403."""
    _, events = await simulate(
        scenario(workload('{ read = "store:/data/nope", size = "1MB" }')), until=10
    )
    assert [e.fields["status"] for e in of(events, "use")] == [404]
    assert of(events, "terminated")[0].fields["reason"] == "read /vo/data/nope: 404 no such file"


async def test_create_then_overwrite(autojump_clock: trio.testing.MockClock) -> None:
    """M4: write: creates (201) and, holding write:, overwrites (200) the same file."""
    steps = '{ write = "store:/out/alice/f", size = "1MB", repeat = 2 }'
    _, events = await simulate(scenario(workload(steps)), until=10)
    assert [(e.fields["op"], e.fields["status"]) for e in of(events, "use")] == [
        ("create", 201),
        ("modify", 200),
    ]


async def test_keys_fetched_once_then_cached(autojump_clock: trio.testing.MockClock) -> None:
    """D2/H2: the first access fetches the JWKS; later ones within key_refresh use the cache."""
    steps = '{ read = "store:/data/1", size = "1MB", repeat = 5 }'
    _, events = await simulate(scenario(workload(steps)), until=10)
    assert [(e.t, e.fields["ok"]) for e in of(events, "jwks_fetch")] == [(0.0, True)]
    assert len(of(events, "use")) == 5


async def test_restart_during_transfer_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    """A restart cuts the transfer; the job retries 30 s later, after the downtime, and succeeds."""
    faults = """
[[faults]]
kind = "data_server_restart"
server = "store"
at = "500ms"
downtime = "10s"
"""
    steps = '{ read = "store:/data/1", size = "100MB" }'
    _, events = await simulate(scenario(workload(steps) + faults), until=100)
    assert [e.t for e in of(events, "use")] == [0.0, 30.5]
    assert [e.t for e in of(events, "terminated")] == [31.5]
    assert [e.t for e in of(events, "jwks_fetch")] == [0.0, 30.5]  # the restart dropped the cache


def _run_bounded(main: Callable[[], Awaitable[None]], clock: trio.testing.MockClock) -> None:
    """trio.run in a daemon thread, failing after 60 s of wall time: a driver that spins at
    one virtual instant never lets a virtual-time timeout fire, so only the wall clock bounds it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            trio.run(main, clock=clock)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the simulation did not finish: virtual time stopped moving"
    if errors:
        raise errors[0]


@given(
    flows=st.lists(st.tuples(st.floats(0, 50), st.floats(1e-6, 1e9)), min_size=1, max_size=30),
    clock_start=st.sampled_from([0.0, 1.7e9]),
)
@settings(max_examples=60, deadline=None)
def test_link_always_finishes_and_conserves_work(
    flows: list[tuple[float, float]], clock_start: float
) -> None:
    """Property: every transfer ends, none faster than size/bandwidth, and the link never idles
    while busy (work conservation), even at clock values where tiny remainders round away."""
    bandwidth = 1e6
    ends: list[float] = []

    async def main() -> None:
        link = SharedLink(bandwidth)

        async def one(at: float, size: float) -> None:
            await trio.sleep(at)
            start = trio.current_time()
            await link.transfer(size)
            assert trio.current_time() - start >= size / bandwidth * (1 - 1e-9) - 1e-6
            ends.append(trio.current_time())

        async with trio.open_nursery() as n:
            await n.start(link.run)
            async with trio.open_nursery() as inner:
                for at, size in flows:
                    inner.start_soon(one, at, size)
            n.cancel_scope.cancel()

    clock = trio.testing.MockClock(autojump_threshold=0)
    clock.jump(clock_start)
    _run_bounded(main, clock)
    assert len(ends) == len(flows)
    # Work conservation: all is through no later than if everything arrived at the last arrival.
    last_arrival = clock_start + max(at for at, _ in flows)
    total = sum(size for _, size in flows)
    assert max(ends) <= last_arrival + total / bandwidth * (1 + 1e-9) + 1e-6


async def test_clock_step_on_a_data_server(autojump_clock: trio.testing.MockClock) -> None:
    """A data server whose clock steps 30 min ahead refuses fresh 20-minute tokens as expired."""
    faults = """
[[faults]]
kind = "clock_step"
host = "store"
at = "100s"
offset = "30m"
"""
    steps = '{ read = "store:/data/1", size = "1MB" }, { compute = { kind = "fixed", duration = "200s" } }, { read = "store:/data/2", size = "1MB" }'
    _, events = await simulate(scenario(workload(steps) + faults), until=400)
    assert [e.t for e in of(events, "use")] == [0.0]
    (reject,) = of(events, "reject")
    assert (reject.t, reject.fields["reason"], reject.fields["headroom_s"]) == (
        200.01,
        "expired",
        999.99,
    )


async def test_retry_presents_the_token_found_at_retry_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """P16/I13: a retry after an unreachable server re-reads the sandbox token, so a token that
    expired while the server was down is not sent again (here: tried at 80 s with the first
    token, exp 120 s; retried at 110 s and 140 s; the renewed token, staged at 90 s, is used)."""
    faults = """
[[faults]]
kind = "data_server_restart"
server = "store"
at = "79500ms"
downtime = "60s"
"""
    steps = '{ compute = { kind = "fixed", duration = "80s" } }, { read = "store:/data/1", size = "1MB" }'
    spec = scenario(
        workload(steps) + faults,
        lifetime="2m",
        token_manager__scan_interval="10s",
        execute_hosts__node__sandbox_refresh="30s",
    )
    _, events = await simulate(spec, until=200)
    staged = of(events, "stage")
    assert [e.t for e in staged] == [0.0, 90.0]
    (use,) = of(events, "use")
    assert use.t == 140.0 and use.fields["jti"] == staged[1].fields["jti"]
    (end,) = of(events, "terminated")
    assert end.fields["status"] == "completed"


@given(
    flows=st.lists(
        st.tuples(st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([1e5, 2e5, 5e5])),
        min_size=1,
        max_size=25,
    ),
)
@settings(max_examples=40, deadline=None)
def test_shared_timers_finish_exactly_as_a_timer_each(flows: list[tuple[float, float]]) -> None:
    """Property: transfers that start together with the same size (lock-step bursts) share one
    timer on the fast path; every transfer ends at exactly the same float as with the
    fallback, where each has its own (cancel-scope) timer."""

    def ends(fast: bool) -> list[tuple[int, float]]:
        seen: list[tuple[int, float]] = []

        async def main() -> None:
            if not fast:
                runner = _vtime._run_context.GLOBAL_RUN_CONTEXT.runner
                _vtime._usable[:] = [runner, None]  # this run's Timer()s take the fallback
            link = SharedLink(1e6)

            async def one(i: int, at: float, size: float) -> None:
                await trio.sleep(at)
                assert _vtime.Timer().fast is fast  # the path under test is the one taken
                await link.transfer(size)
                seen.append((i, trio.current_time()))

            async with trio.open_nursery() as nursery:
                for i, (at, size) in enumerate(flows):
                    nursery.start_soon(one, i, at, size)

        try:
            with seeded_trio_scheduler(7):  # the same order of tasks woken together
                _run_bounded(main, trio.testing.MockClock(autojump_threshold=0))
        finally:
            _vtime._usable[:] = [None, None]
        return sorted(seen)

    assert ends(fast=True) == ends(fast=False)
