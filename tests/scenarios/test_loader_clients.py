"""The issuer's OAuth keys in a scenario file: refresh_token_grace, device code timing and
``[[issuers.clients]]`` (E4, K2, K5, A13), with errors naming the key path."""

from __future__ import annotations

import pytest

from scitokens_batch.errors import ScenarioError
from scitokens_batch.scenario import ClientSpec, GrantName, Scenario, parse_scenario

BASE = """
[scenario]
name = "clients"
duration = "1h"

[[issuers]]
name = "vo"
url = "https://issuer.example/vo"
{issuer_keys}

[[issuers.users]]
name = "alice"
scopes = ["read:/data"]
{clients}
"""

FTS = """
[[issuers.clients]]
name = "fts"
secret = "cs-fts"
grants = ["token_exchange", "refresh_token"]
scopes = ["read:/data"]
audiences = ["https://fts.example", "https://storage.example"]
access_token_lifetime = "1h"
"""


def _parse(issuer_keys: str = "", clients: str = "", overrides: tuple[str, ...] = ()) -> Scenario:
    text = BASE.format(issuer_keys=issuer_keys, clients=clients)
    return parse_scenario(text, file="clients.toml", overrides=overrides)


def _error(
    issuer_keys: str = "", clients: str = "", overrides: tuple[str, ...] = ()
) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        _parse(issuer_keys, clients, overrides)
    return info.value


def test_defaults() -> None:
    """E4 and K2 defaults: five minutes of refresh token grace, 1800 s device codes polled every 5 s,
    and no clients but the token manager the world adds."""
    scenario = parse_scenario(BASE.format(issuer_keys="", clients=""), file="clients.toml")
    (issuer,) = scenario.issuers
    assert issuer.refresh_token_grace == 300.0
    assert (issuer.device_code_lifetime, issuer.device_poll_interval) == (1800.0, 5.0)
    assert issuer.clients == ()


def test_issuer_keys() -> None:
    """The three issuer keys are durations, read in seconds ("0s" grace: single-use tokens)."""
    scenario = parse_scenario(
        BASE.format(
            issuer_keys='refresh_token_grace = "0s"\ndevice_code_lifetime = "10m"\n'
            'device_poll_interval = "2s"',
            clients="",
        ),
        file="clients.toml",
    )
    (issuer,) = scenario.issuers
    assert (
        issuer.refresh_token_grace,
        issuer.device_code_lifetime,
        issuer.device_poll_interval,
    ) == (0.0, 600.0, 2.0)


def test_clients() -> None:
    """[[issuers.clients]]: name, secret, grant short names, scopes, audiences, lifetime; the
    optional keys default to a public client with no scopes, any audience, the issuer's lifetime."""
    public = '\n[[issuers.clients]]\nname = "host:svc.example"\ngrants = ["client_credentials"]\n'
    scenario = parse_scenario(
        BASE.format(issuer_keys="", clients=FTS + public), file="clients.toml"
    )
    fts, svc = scenario.issuers[0].clients
    assert fts == ClientSpec(
        name="fts",
        secret="cs-fts",
        grants=(GrantName.TOKEN_EXCHANGE, GrantName.REFRESH_TOKEN),
        scopes=("read:/data",),
        audiences=("https://fts.example", "https://storage.example"),
        access_token_lifetime=3600.0,
    )
    assert "cs-fts" not in repr(fts)
    assert svc == ClientSpec(name="host:svc.example", grants=(GrantName.CLIENT_CREDENTIALS,))
    assert (svc.secret, svc.scopes, svc.audiences, svc.access_token_lifetime) == (
        None,
        (),
        (),
        None,
    )
    assert scenario.issuers[0].client("fts") == fts
    assert scenario.issuers[0].client("rucio") is None
    assert [g.value for g in GrantName] == [
        "refresh_token",
        "client_credentials",
        "token_exchange",
        "device_code",
        "authorization_code",
    ]


@pytest.mark.parametrize(
    ("issuer_keys", "clients", "key_path", "fragment"),
    [
        (
            'refresh_token_grace = "1y"',
            "",
            "issuers[0].refresh_token_grace",
            "received '1y'",
        ),
        (
            'refresh_token_grace = "-1s"',
            "",
            "issuers[0].refresh_token_grace",
            "expected a duration >= 0s",
        ),
        ('device_code_lifetime = "0s"', "", "issuers[0].device_code_lifetime", "> 0s"),
        ("device_poll_interval = 5", "", "issuers[0].device_poll_interval", "received 5"),
        (
            "",
            FTS.replace('"refresh_token"]', '"refresh"]'),
            "issuers[0].clients[0].grants[1]",
            "expected one of 'refresh_token', 'client_credentials', 'token_exchange', "
            "'device_code', 'authorization_code', received 'refresh'",
        ),
        (
            "",
            FTS.replace('grants = ["token_exchange", "refresh_token"]', "grants = []"),
            "issuers[0].clients[0].grants",
            "expected at least one grant",
        ),
        (
            "",
            FTS.replace('grants = ["token_exchange", "refresh_token"]\n', ""),
            "issuers[0].clients[0].grants",
            "required key is missing",
        ),
        (
            "",
            FTS.replace("scopes =", "scope ="),
            "issuers[0].clients[0].scope",
            "did you mean 'scopes'?",
        ),
        (
            "",
            FTS.replace('"read:/data"]', '"read:data"]'),
            "issuers[0].clients[0].scopes[0]",
            "expected a valid scope, received 'read:data'",
        ),
        (
            "",
            FTS.replace('access_token_lifetime = "1h"', "access_token_lifetime = 3600"),
            "issuers[0].clients[0].access_token_lifetime",
            "received 3600",
        ),
        (
            "",
            FTS.replace('secret = "cs-fts"', 'secret = ""'),
            "issuers[0].clients[0].secret",
            "a non-empty string",
        ),
        (
            "",
            FTS.replace('name = "fts"', 'name = "f ts"'),
            "issuers[0].clients[0].name",
            "a client id",
        ),
        (
            "",
            FTS.replace('"https://fts.example"', '" "'),
            "issuers[0].clients[0].audiences[0]",
            "a non-empty string",
        ),
        ("", FTS + FTS, "issuers[0].clients[1].name", "already used by issuers[0].clients[0]"),
    ],
)
def test_bad_values_name_the_key_path(
    issuer_keys: str, clients: str, key_path: str, fragment: str
) -> None:
    """A bad value of a new key is a ScenarioError naming its exact key path and the problem."""
    error = _error(issuer_keys, clients)
    assert (error.file, error.key_path) == ("clients.toml", key_path)
    assert fragment in error.message


def test_overrides() -> None:
    """--set reaches the new keys, clients addressed by name: issuers.vo.clients.fts...."""
    scenario = _parse(
        clients=FTS,
        overrides=(
            "issuers.vo.refresh_token_grace=2h",
            "issuers.vo.clients.fts.access_token_lifetime=15m",
            'issuers[0].clients[0].grants=["client_credentials"]',
        ),
    )
    (issuer,) = scenario.issuers
    assert issuer.refresh_token_grace == 7200.0
    (fts,) = issuer.clients
    assert (fts.access_token_lifetime, fts.grants) == (900.0, (GrantName.CLIENT_CREDENTIALS,))
    bad = _error(clients=FTS, overrides=('issuers.vo.clients.fts.grants=["password"]',))
    assert (bad.file, bad.key_path) == ("--set", "issuers[0].clients[0].grants[0]")
