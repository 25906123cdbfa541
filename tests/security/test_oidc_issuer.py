"""Attacks on the issuer's OIDC surface, against a real ``serve issuer`` on 127.0.0.1: the
authorization endpoint as an open redirector, PKCE downgrade, a stolen or replayed code,
password guessing at the consent page, userinfo without the right token, a device login
re-targeted to a foreign audience, hostile dynamic registrations; and nothing secret in the
issuer's log or events afterwards."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from scitokens_batch.actors.issuer import MAX_APPROVAL_FAILURES
from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run
from scitokens_batch.protocol import GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE, GRANT_REFRESH
from scitokens_batch.tokens import peek

pytestmark = pytest.mark.live

AUDIENCE = "https://store.oidc-sec.example"
CLIENT, SECRET = "app", "cs-app-security-test-secret"  # test values of this scenario
REDIRECT = "http://localhost:45678/cb"
PASSWORDS = {"alice": "alice-oidc-sec-password", "carol": "carol-oidc-sec-password"}
VERIFIER = "k" * 50

SCENARIO = f"""
[scenario]
name = "live-oidc-security"
duration = "1h"
seed = 11

[[issuers]]
name = "vo"
url = "https://issuer.oidc-sec.example/vo"

[[issuers.users]]
name = "alice"
password = "{PASSWORDS["alice"]}"
scopes = ["read:/data"]

[[issuers.users]]
name = "carol"
password = "{PASSWORDS["carol"]}"
scopes = ["read:/data"]

[[issuers.clients]]
name = "{CLIENT}"
secret = "{SECRET}"
grants = ["authorization_code", "refresh_token", "device_code"]
redirect_uris = ["{REDIRECT}"]
audiences = ["{AUDIENCE}"]

[issuers.registration]
scopes = ["read:/data"]
max_clients = 50

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"

[data_servers.issuers]
vo = "/vo"

[[workloads]]
name = "a"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""

#: Secrets the tests saw (codes, tokens): none may appear in the issuer's log or events.
SEEN: list[str] = []


@pytest.fixture(scope="module")
def run() -> Iterator[_Run]:
    """The issuer as a real process, stopped by PID on the way out."""
    with deployment(SCENARIO, ("vo",), prefix="stb-oidc-sec-test-") as started:
        yield started


def _client(run: _Run) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(run.tls.ca))
    return httpx.Client(verify=ctx, timeout=30.0, follow_redirects=False)


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _params(**change: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "client_id": CLIENT,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid offline_access read:/data",
        "state": "s-1",
        "code_challenge": _challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(change)
    return {k: v for k, v in params.items() if v is not None}


def _consent(run: _Run, user: str = "alice", password: str | None = None) -> httpx.Response:
    form = {**_params(), "user": user, "password": password or PASSWORDS[user], "approve": "yes"}
    with _client(run) as client:
        return client.post(run.issuer_urls["vo"] + "/authorize", data=form)


def _code(run: _Run) -> str:
    reply = _consent(run)
    assert reply.status_code == 302, reply.text
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(reply.headers["location"]).query))
    SEEN.append(query["code"])
    return query["code"]


def _redeem(run: _Run, code: str, verifier: str | None = VERIFIER) -> dict[str, Any]:
    form = {"grant_type": GRANT_AUTHORIZATION_CODE, "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        form["code_verifier"] = verifier
    with _client(run) as client:
        doc: dict[str, Any] = client.post(
            run.issuer_urls["vo"] + "/token", data=form, auth=(CLIENT, SECRET)
        ).json()
    SEEN.extend(str(doc[k]) for k in ("access_token", "refresh_token", "id_token") if k in doc)
    return doc


@pytest.mark.parametrize(
    "redirect", ["https://evil.example/cb", REDIRECT + "/more", REDIRECT + "?x=1", None]
)
def test_no_open_redirect(run: _Run, redirect: str | None) -> None:
    """An unregistered (or missing) redirect URI is a 400 on the page: no Location at all,
    for the check and for the consent post alike."""
    with _client(run) as client:
        page = client.get(
            run.issuer_urls["vo"] + "/authorize", params=_params(redirect_uri=redirect)
        )
        form = {**_params(redirect_uri=redirect), "user": "alice", "password": PASSWORDS["alice"]}
        post = client.post(run.issuer_urls["vo"] + "/authorize", data=form)
    for reply in (page, post):
        assert reply.status_code == 400 and "location" not in reply.headers
        assert reply.json()["error"] == "invalid_request"


def test_consent_page_escapes_what_it_echoes(run: _Run) -> None:
    """Markup in the request's parameters comes back HTML-escaped in the consent page, which
    may not be framed or cached."""
    hostile = '"><script>alert(1)</script>'
    with _client(run) as client:
        page = client.get(
            run.issuer_urls["vo"] + "/authorize", params=_params(state=hostile, nonce=hostile)
        )
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "change",
    [
        {"code_challenge_method": "plain", "code_challenge": VERIFIER},
        {"code_challenge_method": None},
        {"code_challenge": None, "code_challenge_method": None},
    ],
)
def test_pkce_downgrade_is_refused(run: _Run, change: dict[str, str | None]) -> None:
    """No PKCE, or plain PKCE, gets no code: the redirect carries error=invalid_request."""
    form = {**_params(**change), "user": "alice", "password": PASSWORDS["alice"]}
    with _client(run) as client:
        reply = client.post(run.issuer_urls["vo"] + "/authorize", data=form)
    assert reply.status_code == 302
    location = reply.headers["location"]
    assert location.startswith(REDIRECT + "?") and "error=invalid_request" in location
    assert "code=" not in location


@pytest.mark.parametrize("verifier", [None, "x" * 50, VERIFIER[:42]])
def test_stolen_code_without_the_verifier_is_useless(run: _Run, verifier: str | None) -> None:
    """An intercepted code redeemed without the right verifier gives nothing, and spends the
    code: the legitimate client's redemption fails too (the login is redone)."""
    code = _code(run)
    stolen = _redeem(run, code, verifier)
    assert stolen.get("error") == "invalid_grant" and "access_token" not in stolen
    assert _redeem(run, code).get("error") == "invalid_grant"


def test_code_replay_revokes_the_login(run: _Run) -> None:
    """A code used twice: the replay is invalid_grant and the refresh token the first
    redemption gave is revoked (RFC 6749 §4.1.2)."""
    code = _code(run)
    first = _redeem(run, code)
    assert "access_token" in first and "id_token" in first
    assert peek(first["id_token"])[1]["aud"] == CLIENT
    assert _redeem(run, code).get("error") == "invalid_grant"
    with _client(run) as client:
        refreshed = client.post(
            run.issuer_urls["vo"] + "/token",
            data={"grant_type": GRANT_REFRESH, "refresh_token": first["refresh_token"]},
            auth=(CLIENT, SECRET),
        )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_consent_password_guessing_is_bounded(run: _Run) -> None:
    """Wrong passwords at the consent page are 403 with no code; after MAX_APPROVAL_FAILURES
    of them even carol's right password is refused (for the lockout window)."""
    for guess in range(MAX_APPROVAL_FAILURES):
        reply = _consent(run, "carol", f"guess-{guess}")
        assert reply.status_code == 403 and "location" not in reply.headers
    locked = _consent(run, "carol")
    assert locked.status_code == 403 and "location" not in locked.headers


def test_userinfo_needs_our_token_with_openid(run: _Run) -> None:
    """Userinfo: no token 401 with a Bearer challenge; a forged token 401 invalid_token; a
    token without openid 403 insufficient_scope; a token with openid gets alice."""
    first = _redeem(run, _code(run))
    with _client(run) as client:
        without_openid = client.post(
            run.issuer_urls["vo"] + "/token",
            data={
                "grant_type": GRANT_REFRESH,
                "refresh_token": first["refresh_token"],
                "scope": "read:/data",
            },
            auth=(CLIENT, SECRET),
        ).json()
        SEEN.extend([without_openid["access_token"], without_openid["refresh_token"]])
        userinfo = run.issuer_urls["vo"] + "/userinfo"
        bare = client.get(userinfo)
        forged = client.get(
            userinfo, headers={"authorization": "Bearer " + first["access_token"][:-6] + "AAAAAA"}
        )
        narrow = client.get(
            userinfo, headers={"authorization": "Bearer " + without_openid["access_token"]}
        )
        good = client.get(userinfo, headers={"authorization": "Bearer " + first["access_token"]})
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Bearer")
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_token"
    assert narrow.status_code == 403 and narrow.json()["error"] == "insufficient_scope"
    assert good.status_code == 200 and good.json()["sub"] == "alice"


def test_device_login_cannot_be_retargeted(run: _Run) -> None:
    """A device-code token request naming an audience the client may not ask for is
    invalid_target; no token is issued (and the code still works for the allowed audience)."""
    with _client(run) as client:
        start = client.post(
            run.issuer_urls["vo"] + "/device_authorization",
            data={"scope": "read:/data"},
            auth=(CLIENT, SECRET),
        ).json()
        SEEN.append(start["device_code"])
        approved = client.post(
            run.issuer_urls["vo"] + "/device",
            data={"user_code": start["user_code"], "user": "alice", "password": PASSWORDS["alice"]},
        )
        assert approved.status_code == 200
        poll = {"grant_type": GRANT_DEVICE_CODE, "device_code": start["device_code"]}
        evil = client.post(
            run.issuer_urls["vo"] + "/token",
            data={**poll, "audience": "https://evil.example"},
            auth=(CLIENT, SECRET),
        )
        good = client.post(
            run.issuer_urls["vo"] + "/token",
            data={**poll, "audience": AUDIENCE},
            auth=(CLIENT, SECRET),
        ).json()
    assert evil.status_code == 400 and evil.json()["error"] == "invalid_target"
    assert "access_token" not in evil.json()
    SEEN.extend([good["access_token"], good["refresh_token"]])
    assert peek(good["access_token"])[1]["aud"] == AUDIENCE


@pytest.mark.parametrize(
    "metadata",
    [
        {"redirect_uris": ["https://evil.example/cb#x"]},
        {"redirect_uris": ["http://evil.example/cb"]},
        {"redirect_uris": ["javascript:alert(1)"]},
        {"grant_types": ["client_credentials"], "redirect_uris": []},
        {"grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"]},
    ],
)
def test_hostile_registrations_are_refused(run: _Run, metadata: dict[str, Any]) -> None:
    """Dynamic registration refuses redirect URIs an attacker could use and grants outside
    the issuer's policy (400, no client_id)."""
    with _client(run) as client:
        reply = client.post(run.issuer_urls["vo"] + "/register", json=metadata)
    assert reply.status_code == 400 and "client_id" not in reply.json()


def test_registered_client_gets_at_most_the_policy(run: _Run) -> None:
    """A client registering for write scopes and client credentials gets read:/data and the
    user grants only (201), and its secret authenticates it."""
    with _client(run) as client:
        reply = client.post(
            run.issuer_urls["vo"] + "/register",
            json={
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "client_credentials", "refresh_token"],
                "scope": "openid read:/data write:/data",
            },
        )
    assert reply.status_code == 201
    doc = reply.json()
    SEEN.append(doc["client_secret"])
    assert doc["grant_types"] == ["refresh_token", "authorization_code"]
    assert doc["scope"] == "read:/data openid"


def test_registered_client_survives_kill9(run: _Run) -> None:
    """A client registered just before a kill -9 of the issuer still authenticates after the
    restart (its row was committed before the 201), and a wrong secret is still refused; the
    database holds no secret."""
    with _client(run) as client:
        reg = client.post(
            run.issuer_urls["vo"] + "/register",
            json={"grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]},
        ).json()
    SEEN.append(reg["client_secret"])
    pid = run.services["vo"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    run.services["vo"].stop(kill=True)
    run.services["vo"].start(None)
    trio.run(run.wait_healthy, ["vo"])
    with _client(run) as client:
        good = client.post(
            run.issuer_urls["vo"] + "/device_authorization",
            data={"scope": "read:/data"},
            auth=(reg["client_id"], reg["client_secret"]),
        )
        SEEN.append(good.json().get("device_code", ""))
        wrong = client.post(
            run.issuer_urls["vo"] + "/device_authorization",
            data={"scope": "read:/data"},
            auth=(reg["client_id"], "cs-guess"),
        )
    assert good.status_code == 200 and "user_code" in good.json()
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    files = list((run.workdir / "services" / "vo").glob("grants.db*"))
    assert files
    for db in files:
        data = db.read_bytes()
        assert reg["client_secret"].encode() not in data
    assert any(reg["client_id"].encode() in db.read_bytes() for db in files)


def test_nothing_secret_in_log_or_events(run: _Run) -> None:
    """After the attacks above, no code, token or secret the tests saw (nor the passwords or
    the client secret) is in the issuer's log or events."""
    assert SEEN, "run the module's other tests first"
    texts = [
        p.read_text(errors="replace")
        for p in (run.workdir / "logs" / "vo.log", run.workdir / "events" / "vo.jsonl")
        if p.exists()
    ]
    assert texts
    for secret in [*SEEN, SECRET, *PASSWORDS.values()]:
        for text in texts:
            assert secret not in text
