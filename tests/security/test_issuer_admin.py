"""Attacks on the issuer's admin interface (key rotation, revocation), against a real issuer
process on 127.0.0.1: only the run's admin secret opens it; a user's access or refresh token,
a service token or a wrong secret gets 401 and changes nothing; from elsewhere than loopback
the interface does not exist.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from scitokens_batch.transport.http import ADMIN_HEADER, ADMIN_PATH, issuer_app

from .deploy import Deployment

pytestmark = pytest.mark.live


def _admin(
    live: Deployment, op: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST ``body`` to the issuer's admin operation ``op`` with ``headers``."""
    base = live.url("vo").rsplit("/", 1)[0]  # the issuer's host root, not its /vo path
    with httpx.Client(verify=live.ssl(), timeout=30.0) as client:
        return client.post(base + ADMIN_PATH + op, json=body, headers=headers or {})


def _jwks_kids(live: Deployment) -> list[str]:
    with httpx.Client(verify=live.ssl(), timeout=30.0) as client:
        return [k["kid"] for k in client.get(live.url("vo") + "/jwks").json()["keys"]]


def test_admin_refuses_tokens_and_wrong_secrets(live: Deployment) -> None:
    """A user's access token, refresh token, a service token, a wrong secret or none: 401, and
    the issuer's JWKS is unchanged."""
    before = _jwks_kids(live)
    login = live.login("alice")
    service = live.token("queue_manager", "queue-manager", "vo")
    tries: list[dict[str, str]] = [
        {},
        {"authorization": f"Bearer {login.access_token}"},
        {"authorization": f"Bearer {login.refresh_token}"},
        {"authorization": f"Bearer {service}"},
        {ADMIN_HEADER: login.access_token},
        {ADMIN_HEADER: "x" * 43},
        {ADMIN_HEADER: live.run.admin_secrets["vo"][:-1]},
    ]
    for headers in tries:
        answer = _admin(live, "rotate", {"publish_ahead": 0}, headers)
        assert answer.status_code == 401, (headers.keys(), answer.text)
        assert live.run.admin_secrets["vo"] not in answer.text
    assert _admin(live, "revoke_user", {"user": "alice"}).status_code == 401
    assert _jwks_kids(live) == before


def test_admin_with_the_secret_rotates_and_revokes(live: Deployment) -> None:
    """With the run's secret the admin publishes a new key (JWKS grows), and revoking bob's
    refresh tokens makes his next refresh invalid_grant."""
    secret = {ADMIN_HEADER: live.run.admin_secrets["vo"]}
    before = _jwks_kids(live)
    answer = _admin(live, "rotate", {"publish_ahead": 3600}, secret)
    assert answer.status_code == 200, answer.text
    kid = answer.json()["kid"]
    assert _jwks_kids(live) == [*before, kid]
    # A restarted issuer (SIGTERM, start) publishes the same keys: the rotation is durable.
    issuer = live.run.services["vo"]
    issuer.stop()
    issuer.start(None)
    trio.run(live.run.wait_healthy, ["vo"])
    assert _jwks_kids(live) == [*before, kid]
    kept = live.workdir / "services" / "vo" / "admin-keys.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert _admin(live, "rotate", {"publish_ahead": -1}, secret).status_code == 400
    assert _admin(live, "retire", {"kid": "no-such"}, secret).status_code == 404
    assert _admin(live, "nonsense", {}, secret).status_code == 404
    assert _admin(live, "keys", {}, secret).json()["signing"] == before[-1]

    bob = live.login("bob")
    revoked = _admin(live, "revoke_user", {"user": "bob"}, secret)
    assert revoked.status_code == 200 and revoked.json()["revoked"] >= 1
    with httpx.Client(verify=live.ssl(), timeout=30.0) as client:
        refresh = client.post(
            live.url("vo") + "/token",
            data={"grant_type": "refresh_token", "refresh_token": bob.refresh_token},
            auth=("token_manager", live.run.client_secrets["vo"]["token_manager"]),
        )
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    log = (live.workdir / "logs" / "vo.log").read_text()
    assert live.run.admin_secrets["vo"] not in log and (bob.refresh_token or "?") not in log


def test_admin_does_not_exist_off_loopback() -> None:
    """The admin route answers 404 to a client that is not on loopback, even with the secret,
    and the handler is never called (ASGI app driven directly, no network)."""
    calls: list[str] = []

    async def admin(op: str, args: object) -> tuple[int, dict[str, object]]:
        calls.append(op)
        return 200, {}

    async def handler(message: object) -> object:
        raise AssertionError("not reached")

    app = issuer_app(
        "vo", "https://127.0.0.1:1/vo", handler, dict, admin=admin, admin_secret="s" * 32
    )
    sent: list[dict[str, object]] = []

    async def go(client: str) -> int:
        sent.clear()
        scope = {
            "type": "http",
            "method": "POST",
            "path": ADMIN_PATH + "rotate",
            "headers": [(ADMIN_HEADER.encode(), b"s" * 32)],
            "client": (client, 40000),
        }

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": json.dumps({}).encode()}

        async def send(event: dict[str, object]) -> None:
            sent.append(event)

        await app(scope, receive, send)
        status = sent[0]["status"]
        assert isinstance(status, int)
        return status

    assert trio.run(go, "10.1.2.3") == 404
    assert calls == []
    assert trio.run(go, "127.0.0.1") == 200
    assert calls == ["rotate"]
