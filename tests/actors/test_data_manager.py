"""The data manager (Rucio) in virtual time: tokens by client credentials, cached (L1-L3), the
returned scopes checked (B14, B15), jobs in bulk (L5)."""

from __future__ import annotations

import trio
import trio.testing

from scitokens_batch.metrics import Event

from .helpers import simulate
from .transfer_helpers import BNL, CERN, FTS_AUD, dataset, of, rule, transfer_scenario


def rucio_mints(events: list[Event]) -> list[tuple[float, str, str]]:
    """(t, scope, aud) of every token minted for the data manager's client."""
    return [
        (e.t, e.fields["scope"], e.fields["aud"])
        for e in of(events, "mint")
        if e.fields["client"] == "rucio"
    ]


async def test_tokens_per_l1_l2(autojump_clock: trio.testing.MockClock) -> None:
    """L1: the FTS token has scope fts and the service's audience; L2: the source token reads the
    dataset's directory (as the token sees it: no base path), the destination token modifies and
    reads the rule's, each for that server's audience."""
    _, events = await simulate(transfer_scenario(dataset(2, "1GB") + rule()), until=100)
    assert rucio_mints(events) == [
        (0.0, "fts", FTS_AUD),
        (0.0, "storage.read:/data/raw", CERN),
        (0.0, "storage.modify:/data/copy storage.read:/data/copy", BNL),
    ]
    assert {e.fields["path"] for e in of(events, "use")} == {
        "/vo/data/raw/0",
        "/vo/data/raw/1",
        "/vo/data/copy/0",
        "/vo/data/copy/1",
    }


async def test_jobs_of_at_most_bulk_files(autojump_clock: trio.testing.MockClock) -> None:
    """L5: 25 files with bulk = 10 are three jobs of 10, 10 and 5 files, each with its tokens."""
    _, events = await simulate(transfer_scenario(dataset(25, "1GB") + rule(), bulk=10), until=10)
    assert [(e.fields["job"], e.fields["files"]) for e in of(events, "rule_submitted")] == [
        ("rule-0-1", 10),
        ("rule-0-2", 10),
        ("rule-0-3", 5),
    ]


async def test_narrowed_token_is_not_submitted(autojump_clock: trio.testing.MockClock) -> None:
    """B15/B14: Rucio asks for storage.modify at the destination but its client may only read;
    the issuer narrows the token to storage.read, Rucio sees the dropped scope and fails the
    rule instead of submitting files that the destination would refuse; nothing is exchanged."""
    spec = transfer_scenario(
        dataset(4, "1GB") + rule(), rucio_scopes='["fts", "storage.read:/data"]'
    )
    _, events = await simulate(spec, until=100)
    assert rucio_mints(events)[-1] == (0.0, "storage.read:/data/copy", BNL)
    (failed,) = of(events, "rule_failed")
    assert (failed.fields["rule"], failed.fields["job"], failed.fields["files"]) == (
        "rule-0",
        None,
        4,
    )
    assert "'storage.modify:/data/copy' dropped (B15" in failed.fields["reason"]
    assert not of(events, "transfer_submitted") and not of(events, "exchange")


async def test_refused_token_request_fails_the_rule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B15: a client not entitled to the fts scope at all gets invalid_scope: the rule fails,
    saying so, and the refusal is not retried."""
    spec = transfer_scenario(
        dataset(4, "1GB") + rule(), rucio_scopes='["storage.read:/data", "storage.modify:/data"]'
    )
    _, events = await simulate(spec, until=1000)
    (failed,) = of(events, "rule_failed")
    assert failed.fields["reason"].startswith("token request for 'fts' refused: 400 invalid_scope")
    (request,) = of(events, "token_request_failed")
    assert request.fields["retry_in_s"] is None
    assert not of(events, "transfer_submitted")


L3_RULES = """
[[rules]]
name = "first"
dataset = "raw"
destination = "bnl"
path = "/data/copy"

[[rules]]
name = "again"
dataset = "raw"
destination = "bnl"
path = "/data/copy"
at = "{at}"
"""


async def test_cached_while_token_min_lifetime_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L3: a rule at 3300 s reuses the 1-hour tokens minted at 0 s (exactly 300 s left); one at
    3301 s gets new ones."""
    reused = transfer_scenario(dataset(2, "1GB") + L3_RULES.format(at="3300s"))
    _, events = await simulate(reused, until=4000)
    assert [t for t, _, _ in rucio_mints(events)] == [0.0] * 3
    assert len(of(events, "exchange")) == 2
    fresh = transfer_scenario(dataset(2, "1GB") + L3_RULES.format(at="3301s"))
    _, events = await simulate(fresh, until=4000)
    assert [t for t, _, _ in rucio_mints(events)] == [0.0] * 3 + [3301.0] * 3
    assert len(of(events, "exchange")) == 4
    assert len(of(events, "transfer_done")) == 4


async def test_issuer_outage_delays_the_rule(autojump_clock: trio.testing.MockClock) -> None:
    """K3/L3: an issuer down at the rule's start (0-100 s) is retried after 30, 60 and 120 s: the tokens
    come at 210 s and the job is submitted then."""
    body = (
        dataset(2, "1GB")
        + rule()
        + """
[[faults]]
kind = "issuer_outage"
issuer = "wlcg"
at = "0s"
duration = "100s"
"""
    )
    _, events = await simulate(transfer_scenario(body), until=1000)
    assert [e.t for e in of(events, "token_request_failed")] == [0.0, 30.0, 90.0]
    assert [e.t for e in of(events, "rule_submitted")] == [210.0]
    assert len(of(events, "transfer_done")) == 2


async def test_unreachable_transfer_service_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L5: a transfer service cut off from the data manager (0-60 s) gets the job on the retry at 90 s."""
    body = (
        dataset(2, "1GB")
        + rule()
        + """
[[faults]]
kind = "partition"
between = ["rucio", "fts"]
at = "0s"
duration = "60s"
"""
    )
    _, events = await simulate(transfer_scenario(body), until=1000)
    assert [e.t for e in of(events, "rule_submitted")] == [90.0]
    assert len(of(events, "transfer_done")) == 2
