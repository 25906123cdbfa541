"""The issuer's client registry as the world builds it: the token manager is a confidential
client of every issuer, and a scenario's ``[[issuers.clients]]`` take effect (E4, K5, P13)."""

from __future__ import annotations

import json

import trio.testing

from scitokens_batch.actors._common import new_secret
from scitokens_batch.protocol import GRANT_DEVICE_CODE, GRANT_REFRESH, GRANT_TOKEN_EXCHANGE
from scitokens_batch.scenario import derive_rng

from .helpers import of, scenario, simulate, times, workload

COMPUTE_2H = '{ compute = { kind = "fixed", duration = "2h" } }'


async def test_token_manager_is_a_confidential_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """E4 ("client authenticates"): the world registers the token manager at the issuer with
    the refresh and device code grants and a secret from its seeded RNG; the token manager
    sends it, its refreshes succeed, and the secret is in no event."""
    world, events = await simulate(scenario(workload(COMPUTE_2H)), until=700)
    client = world.issuers["vo"].clients["token_manager"]
    expected = new_secret(derive_rng(1, "client", "vo", "token_manager"), "cs-")
    assert client.secret == expected
    assert client.grants == frozenset({GRANT_REFRESH, GRANT_DEVICE_CODE})
    assert (client.scopes, client.audiences, client.access_token_lifetime) == ((), (), None)
    assert world.token_manager.client_secrets == {"vo": expected}
    assert times(events, "refresh") == [0.0, 660.0]
    assert of(events, "refresh_failed") == []
    assert expected not in json.dumps([e.fields for e in events])


async def test_declared_token_manager_client_wins(autojump_clock: trio.testing.MockClock) -> None:
    """K5/P13: a scenario's own "token_manager" client replaces the default one: here a public
    client whose tokens live 10 minutes (not the issuer's 20), renewed at half that."""
    clients = """
[[issuers.clients]]
name = "token_manager"
grants = ["refresh_token"]
access_token_lifetime = "10m"
"""
    spec = scenario(clients + workload(COMPUTE_2H))
    world, events = await simulate(spec, until=700)
    assert world.issuers["vo"].clients["token_manager"].secret is None
    assert world.token_manager.client_secrets == {}
    mints = of(events, "mint")
    assert {m.fields["exp"] - m.fields["iat"] for m in mints} == {600}
    assert times(events, "refresh") == [0.0, 360.0]


async def test_token_manager_without_the_refresh_grant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 6749 §5.2: a token manager client not registered for the refresh grant gets
    unauthorized_client, which no retry can fix: the credential is given up at once."""
    clients = """
[[issuers.clients]]
name = "token_manager"
secret = "cs-declared"
grants = ["device_code"]
"""
    world, events = await simulate(scenario(clients + workload(COMPUTE_2H)), until=700)
    assert world.token_manager.client_secrets == {"vo": "cs-declared"}
    failed = of(events, "refresh_failed")
    assert [(e.t, e.fields["error"], e.fields["retry_in_s"]) for e in failed] == [
        (0.0, "400 unauthorized_client", None)
    ]
    cred = world.token_manager.credential("alice", "vo")
    assert cred is not None and cred.dead


async def test_scenario_clients_are_registered(autojump_clock: trio.testing.MockClock) -> None:
    """K4/K5: a declared client gets its grants (short names mapped to the protocol URNs),
    parsed scopes, audiences, lifetime and secret, beside the default token manager."""
    clients = """
[[issuers.clients]]
name = "fts"
secret = "cs-fts"
grants = ["token_exchange", "refresh_token"]
scopes = ["read:/data"]
audiences = ["https://store.example"]
access_token_lifetime = "1h"
"""
    world, _ = await simulate(scenario(clients), until=1)
    registry = world.issuers["vo"].clients
    assert set(registry) == {"fts", "token_manager"}
    fts = registry["fts"]
    assert fts.secret == "cs-fts"
    assert fts.grants == frozenset({GRANT_TOKEN_EXCHANGE, GRANT_REFRESH})
    assert [str(s) for s in fts.scopes] == ["read:/data"]
    assert (fts.audiences, fts.access_token_lifetime) == (("https://store.example",), 3600.0)
    assert registry["token_manager"].secret is not None
