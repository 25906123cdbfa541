"""The schedd's claim keep-alive and job lease (live mode's way to learn of a dead execute
host; HTCondor's ALIVE_INTERVAL and JobLeaseDuration), driven in virtual time with the world's
shortcut (``host_down``) taken away, as nothing tells a live schedd that a host died."""

from __future__ import annotations

from typing import Any

import pytest
import trio.testing

from scitokens_batch.actors import QueueManager
from scitokens_batch.scenario import World

from .helpers import of, scenario, simulate, workload

CRASH = """
[[faults]]
kind = "execute_host_crash"
host = "node-0"
at = "610s"
restart_after = "5m"
"""


@pytest.fixture
def live_schedd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue manager keeps its claims alive (60 s) with a 180 s lease, and is never told
    of a crash (no host_down/host_up): only the keep-alives can show it."""
    build = World.build

    def built(*args: Any, **kwargs: Any) -> World:
        world = build(*args, **kwargs)
        world.queue_manager.alive_interval = 60.0
        world.queue_manager.job_lease = 180.0
        return world

    monkeypatch.setattr(World, "build", built)
    monkeypatch.setattr(QueueManager, "host_down", lambda self, name, *, reason: [])
    monkeypatch.setattr(QueueManager, "host_up", lambda self, name: None)


@pytest.mark.usefixtures("live_schedd")
async def test_lost_claim_is_evicted_when_its_lease_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The job on the crashed host was last confirmed at 600 s; the keep-alives at 660, 720
    and 780 s get no answer, so at 780 s (180 s unconfirmed) it is evicted with the lease as
    its reason, its CPU since the start lost, and it runs again once a host takes it."""
    steps = '{ compute = { kind = "fixed", duration = "1h" } }'
    _, events = await simulate(scenario(workload(steps) + CRASH, hosts=2, duration="3h"))
    evicted = of(events, "evicted")
    assert [(e.t, e.fields["host"], e.fields["lost_cpu_s"]) for e in evicted] == [
        (780.0, "node-0", 780.0)
    ]
    assert "job lease expired" in evicted[0].fields["reason"]
    executes = [(e.t, e.fields["host"]) for e in of(events, "execute")]
    assert executes[0] == (0.0, "node-0") and len(executes) == 2 and executes[1][0] > 780.0
    done = [e for e in of(events, "terminated") if e.fields["status"] == "completed"]
    assert len(done) == 1 and done[0].t == executes[1][0] + 3600.0


@pytest.mark.usefixtures("live_schedd")
async def test_confirmed_claims_are_never_evicted(autojump_clock: trio.testing.MockClock) -> None:
    """Without a crash, two hours of keep-alives confirm the running job every 60 s: no
    eviction, the job ends once."""
    steps = '{ compute = { kind = "fixed", duration = "2h" } }'
    _, events = await simulate(scenario(workload(steps), hosts=1, duration="3h"))
    assert of(events, "evicted") == []
    assert [e.t for e in of(events, "terminated")] == [7200.0]


@pytest.mark.usefixtures("live_schedd")
async def test_restarted_host_does_not_confirm_claims_it_never_had(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The host is back after 30 s but knows nothing of the job (its starter died with it):
    its answers confirm nothing, so the lease still expires at 780 s."""
    steps = '{ compute = { kind = "fixed", duration = "1h" } }'
    crash = CRASH.replace('"5m"', '"30s"')
    _, events = await simulate(scenario(workload(steps) + crash, hosts=1, duration="3h"))
    assert [e.t for e in of(events, "evicted")] == [780.0]
    assert [e.t for e in of(events, "terminated")][-1] > 780.0 + 3600.0 - 1
