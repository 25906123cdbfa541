"""The token manager (credmon) in virtual time: renewal instants, back-off, crashes (I4, I5, I7)."""

from __future__ import annotations

import trio.testing

from scitokens_batch.actors.issuer import _digest

from .helpers import of, scenario, simulate, times, workload

COMPUTE_2H = '{ compute = { kind = "fixed", duration = "2h" } }'


async def test_renewed_at_first_scan_after_half_life(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """I4+I5: a 20-minute token, fraction 0.5, 60 s scans: minted at 0, renewed at 660, 1320, 1980."""
    _, events = await simulate(scenario(workload(COMPUTE_2H)), until=2000)
    assert times(events, "refresh") == [0.0, 660.0, 1320.0, 1980.0]
    assert [e.fields["initial"] for e in of(events, "refresh")] == [True, False, False, False]


async def test_refresh_token_rotates(autojump_clock: trio.testing.MockClock) -> None:
    """I7 / E4: each renewal rotates the refresh token; the token manager keeps the new one."""
    world, _ = await simulate(scenario(workload(COMPUTE_2H)), until=700)
    cred = world.token_manager.credential("alice", "vo")
    assert cred is not None and cred.refresh_token is not None
    grants = world.issuers["vo"]._grants  # the issuer's table: one rotated, one current
    assert len(grants) == 3  # the login + two rotations (t=0 initial mint, t=660 renewal)
    current = _digest(cred.refresh_token)  # the table keys tokens by their SHA-256
    assert current in grants and grants[current].rotated_at is None


async def test_backoff_during_outage(autojump_clock: trio.testing.MockClock) -> None:
    """Retries after a failed renewal wait 30, 60, 120 s ... and succeed after the outage."""
    faults = """
[[faults]]
kind = "issuer_outage"
issuer = "vo"
at = "650s"
duration = "350s"
"""
    _, events = await simulate(scenario(workload(COMPUTE_2H) + faults), until=1200)
    assert times(events, "refresh_failed") == [660.0, 690.0, 750.0, 870.0]
    assert [e.fields["retry_in_s"] for e in of(events, "refresh_failed")] == [
        30.0,
        60.0,
        120.0,
        240.0,
    ]
    assert times(events, "refresh") == [0.0, 1110.0]


async def test_revoked_refresh_token_is_final(autojump_clock: trio.testing.MockClock) -> None:
    """RFC 6749 invalid_grant: a revoked refresh token is not retried; renewals stop."""
    faults = """
[[faults]]
kind = "refresh_token_revoked"
user = "alice"
at = "100s"
"""
    _, events = await simulate(scenario(workload(COMPUTE_2H) + faults), until=3600)
    failed = of(events, "refresh_failed")
    assert [e.t for e in failed] == [660.0]
    assert (
        failed[0].fields["error"] == "400 invalid_grant" and failed[0].fields["retry_in_s"] is None
    )
    assert times(events, "refresh") == [0.0]


async def test_crash_keeps_store(autojump_clock: trio.testing.MockClock) -> None:
    """A crash without state loss: renewals resume after the restart, from the stored token."""
    faults = """
[[faults]]
kind = "token_manager_crash"
at = "600s"
restart_after = "300s"
"""
    _, events = await simulate(scenario(workload(COMPUTE_2H) + faults), until=1500)
    # Down from 600 to 900: the 660 renewal is missed; the restart scans at once (900), due.
    assert times(events, "refresh") == [0.0, 900.0]


async def test_crash_with_state_loss(autojump_clock: trio.testing.MockClock) -> None:
    """lose_state: the refresh tokens are gone; nothing is renewed after the crash."""
    faults = """
[[faults]]
kind = "token_manager_crash"
at = "600s"
restart_after = "300s"
lose_state = true
"""
    world, events = await simulate(scenario(workload(COMPUTE_2H) + faults), until=3000)
    assert times(events, "refresh") == [0.0]
    cred = world.token_manager.credential("alice", "vo")
    assert cred is not None and cred.refresh_token is None and cred.dead
