"""Queue manager and execute hosts in virtual time: holds, releases, staging, evictions (I, J)."""

from __future__ import annotations

import trio.testing

from .helpers import of, scenario, simulate, times, workload

COMPUTE_30M = '{ compute = { kind = "fixed", duration = "30m" } }'


async def test_hold_code_4_without_credential(autojump_clock: trio.testing.MockClock) -> None:
    """I14: no usable token within credential_wait (20 s) holds the job with code 4 at t=20."""
    faults = """
[[faults]]
kind = "issuer_outage"
issuer = "vo"
at = "0s"
duration = "1h"
"""
    _, events = await simulate(scenario(workload(COMPUTE_30M) + faults), until=700)
    held = of(events, "held")
    assert [e.t for e in held][:2] == [20.0, 640.0]
    assert {e.fields["code"] for e in held} == {4}
    # Periodic release after release_held_after (10 min), at the negotiation cycle of 620 s.
    assert times(events, "released") == [620.0]


async def test_token_arriving_within_wait_starts_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A token minted during credential_wait starts the job at that instant, with no hold."""
    faults = """
[[faults]]
kind = "issuer_outage"
issuer = "vo"
at = "0s"
duration = "10s"
"""
    body = workload(COMPUTE_30M) + faults
    # The mint at 0 fails; its retry comes 30 s later: inside a 60 s wait, outside a 20 s one.
    _, events = await simulate(scenario(body, queue_manager__credential_wait="60s"), until=100)
    assert times(events, "refresh") == [30.0]
    assert times(events, "execute") == [30.0]
    assert times(events, "held") == []
    _, events = await simulate(scenario(body), until=700)
    assert times(events, "held") == [20.0]
    assert times(events, "released") == [620.0]
    assert times(events, "execute") == [620.0]


async def test_sandbox_restaged_every_sandbox_refresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """I13: renewed tokens reach the sandbox at the starter's next 5-minute refresh."""
    steps = '{ compute = { kind = "fixed", duration = "40m" } }'
    _, events = await simulate(scenario(workload(steps)), until=2400)
    # Renewals at 660 and 1320; the starter (job started at 0) copies them at 900 and 1500.
    assert times(events, "stage") == [0.0, 900.0, 1500.0, 2100.0]
    assert times(events, "execute") == [0.0]


async def test_copy_at_start_expires(autojump_clock: trio.testing.MockClock) -> None:
    """P16: a job that keeps its start token reads with an expired one; reread does not."""
    steps = COMPUTE_30M + ', { read = "store:/data/1", size = "1MB" }'
    _, bad = await simulate(scenario(workload(steps, token_use="copy-at-start")), until=2000)
    rejects = of(bad, "reject")
    assert [(e.t, e.fields["reason"], e.fields["headroom_s"]) for e in rejects] == [
        (1800.0, "expired", -600.0)
    ]
    assert of(bad, "terminated")[0].fields["status"] == "failed"
    _, good = await simulate(scenario(workload(steps)), until=2000)
    uses = of(good, "use")
    # Token staged at 1500 was minted at 1320 and expires at 2520: 720 s left at 1800.
    assert [(e.t, e.fields["headroom_s"]) for e in uses] == [(1800.0, 720.0)]


async def test_host_crash_evicts_and_requeues(autojump_clock: trio.testing.MockClock) -> None:
    """A crashed host's job is evicted (its CPU lost) and restarts elsewhere at the next cycle."""
    faults = """
[[faults]]
kind = "execute_host_crash"
host = "node-0"
at = "610s"
restart_after = "1h"
"""
    steps = '{ compute = { kind = "fixed", duration = "1h" } }'
    _, events = await simulate(scenario(workload(steps) + faults, hosts=2, duration="3h"))
    evicted = of(events, "evicted")
    assert [(e.t, e.fields["host"], e.fields["lost_cpu_s"]) for e in evicted] == [
        (610.0, "node-0", 610.0)
    ]
    assert [(e.t, e.fields["host"]) for e in of(events, "execute")] == [
        (0.0, "node-0"),
        (620.0, "node-1"),
    ]
    assert times(events, "terminated", status="completed") == [620.0 + 3600.0]


async def test_denied_write_fails_job_with_reason(autojump_clock: trio.testing.MockClock) -> None:
    """M5: a write outside the token's scope is a 403 and fails the job, with the reason."""
    steps = '{ write = "store:/out/bob/x", size = "1MB" }'
    _, events = await simulate(scenario(workload(steps)), until=100)
    (term,) = of(events, "terminated")
    assert term.fields["status"] == "failed"
    assert term.fields["reason"] == "write /vo/out/bob/x: 403 insufficient_scope"
