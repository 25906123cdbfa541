"""Service authentication without processes: the pure token checks and role table
(``protocol/_rpcauth.py``), the guarded RPC app in-process, the issuer's approval logic, and
the credentials file loader."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scitokens_batch.live._config import ConfigError, load_service_secrets
from scitokens_batch.protocol import (
    Ack,
    CredentialRequest,
    JobFinished,
    Message,
    StartJob,
    StoreCredential,
    rpcauth,
)
from scitokens_batch.protocol import wire as w
from scitokens_batch.tokens import Algorithm, Reason, Rejection, SigningKey, encode
from scitokens_batch.transport.http import RpcGuard, rpc_app

NOW = 1_800_000_000.0
POOL = SigningKey.generate(Algorithm.ES256, kid=rpcauth.POOL_KID)


def mint(name: str = "queue_manager", role: str = "queue-manager", aud: str = "node-0") -> str:
    """A genuine service token."""
    return rpcauth.mint_service_token(
        POOL, name=name, role=role, audience=aud, now=NOW, lifetime=600, jti="j1"
    )


def check(token: str, aud: str = "node-0", now: float = NOW) -> Any:
    """Check ``token`` as the service ``aud`` at ``now``."""
    return rpcauth.check_service_token(token, keys=(POOL.public,), audience=aud, now=now)


class TestServiceTokens:
    """Minting and checking service tokens."""

    def test_genuine_token_names_the_caller(self) -> None:
        """A genuine token gives the caller's name and role."""
        assert check(mint()) == rpcauth.ServiceIdentity("queue_manager", "queue-manager", "j1")

    @pytest.mark.parametrize(
        ("token", "aud", "now", "reason"),
        [
            (lambda: mint(aud="node-1"), "node-0", NOW, Reason.WRONG_AUDIENCE),
            (lambda: mint(), "node-0", NOW + 600 + 61, Reason.EXPIRED),
            (lambda: mint(), "node-0", NOW - 61, Reason.NOT_YET_VALID),
            (lambda: "not.a.token", "node-0", NOW, Reason.MALFORMED),
        ],
    )
    def test_refusals(self, token: Any, aud: str, now: float, reason: Reason) -> None:
        """Another audience, expired, not yet valid or malformed: refused with the reason."""
        got = check(token(), aud, now)
        assert isinstance(got, Rejection) and got.reason is reason

    def test_other_key_is_refused(self) -> None:
        """A token signed by another key with the pool's kid does not verify."""
        other = SigningKey.generate(Algorithm.ES256, kid=rpcauth.POOL_KID)
        forged = rpcauth.mint_service_token(
            other, name="queue_manager", role="queue-manager", audience="node-0", now=NOW,
            lifetime=600, jti="f",
        )  # fmt: skip
        got = check(forged)
        assert isinstance(got, Rejection) and got.reason is Reason.BAD_SIGNATURE

    @pytest.mark.parametrize(
        "claims",
        [
            {"iss": "https://vo.example"},
            {"scitokens_batch_role": "root"},
            {"scitokens_batch_role": ["queue-manager"]},
            {"sub": "../x"},
        ],
    )
    def test_pool_signed_but_wrong_claims_are_refused(self, claims: dict[str, Any]) -> None:
        """Even signed by the pool key: another issuer, an unknown role, a path as sub."""
        base = {
            "iss": rpcauth.POOL_ISSUER,
            "sub": "queue_manager",
            "aud": "node-0",
            "scitokens_batch_role": "queue-manager",
            "nbf": NOW,
            "exp": NOW + 60,
            "jti": "x",
        }
        assert isinstance(check(encode(base | claims, POOL)), Rejection)

    def test_mint_refuses_bad_inputs(self) -> None:
        """Minting refuses an unknown role, a path as a name, and a lifetime <= 0."""
        for kwargs in ({"role": "root"}, {"name": "../x"}, {"lifetime": 0}):
            args: dict[str, Any] = {
                "name": "a", "role": "login", "audience": "b", "now": NOW, "lifetime": 1, "jti": "j"
            }  # fmt: skip
            with pytest.raises(ValueError):
                rpcauth.mint_service_token(POOL, **(args | kwargs))


class TestRoleTable:
    """Who may send what to whom."""

    def test_only_the_queue_manager_starts_jobs(self) -> None:
        """StartJob at an execute host: the queue manager only."""
        roles = rpcauth.SERVICE_ROLES
        assert {r for r in roles if rpcauth.rpc_allowed("execute-host", "StartJob", r)} == {
            "queue-manager"
        }

    def test_only_the_login_path_stores_credentials(self) -> None:
        """StoreCredential at the token manager: the login path only."""
        roles = rpcauth.SERVICE_ROLES
        allowed = {r for r in roles if rpcauth.rpc_allowed("token-manager", "StoreCredential", r)}
        assert allowed == {rpcauth.LOGIN_ROLE}

    def test_deny_by_default(self) -> None:
        """A pair not in the table is refused, whatever the role."""
        for role in rpcauth.SERVICE_ROLES:
            assert not rpcauth.rpc_allowed("issuer", "StartJob", role)
            assert not rpcauth.rpc_allowed("token-manager", "Ack", role)

    def test_destinations(self) -> None:
        """The runner mints tokens for exactly the receivers a role may call."""
        assert rpcauth.rpc_destinations("queue-manager") == {"token-manager", "execute-host"}
        assert rpcauth.rpc_destinations("data-server") == frozenset()


@asynccontextmanager
async def guarded(role: str, name: str = "node-0") -> AsyncIterator[tuple[httpx.AsyncClient, list[Message]]]:  # fmt: skip
    """The RPC app of ``name`` (of ``role``) in-process, and the messages its handler got."""
    got: list[Message] = []

    async def handler(message: Message) -> Message:
        got.append(message)
        return Ack()

    guard = RpcGuard(name=name, role=role, keys=(POOL.public,), now=lambda: NOW)
    transport = httpx.ASGITransport(app=rpc_app(name, handler, guard))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, got


def _job() -> StartJob:
    from scitokens_batch.protocol import JobProgram

    return StartJob(
        job=1, slot=0, user="alice", service="vo", token="t", jti="j", exp=NOW + 60,
        program=JobProgram(steps=()),
    )  # fmt: skip


async def test_guarded_app_statuses() -> None:
    """None: 401 (handler not called); wrong role: 403; the queue manager: 200."""
    body = w.encode_rpc(_job())
    async with guarded("execute-host") as (client, got):
        assert (await client.post("/rpc", content=body)).status_code == 401
        tm = {"authorization": f"Bearer {mint('token_manager', 'token-manager')}"}
        assert (await client.post("/rpc", content=body, headers=tm)).status_code == 403
        qm = {"authorization": f"Bearer {mint()}"}
        assert (await client.post("/rpc", content=body, headers=qm)).status_code == 200
        assert len(got) == 1


async def test_guarded_app_refuses_before_decoding() -> None:
    """An unauthenticated caller learns nothing from the decoder (401, not 400)."""
    async with guarded("token-manager", "token_manager") as (client, got):
        reply = await client.post("/rpc", content=b"not json")
        assert reply.status_code == 401 and not got


async def test_guarded_app_measured_overhead() -> None:
    """The check costs little next to a request: the guarded app stays within 3x the open one."""
    body = w.encode_rpc(CredentialRequest(user="alice", service="vo"))
    headers = {"authorization": f"Bearer {mint('queue_manager', 'queue-manager', 'token_manager')}"}

    async def rate(client: httpx.AsyncClient, h: dict[str, str]) -> float:
        t0 = time.perf_counter()
        for _ in range(200):
            assert (await client.post("/rpc", content=body, headers=h)).status_code == 200
        return 200 / (time.perf_counter() - t0)

    async with guarded("token-manager", "token_manager") as (client, _):
        with_guard = await rate(client, headers)

    async def handler(message: Message) -> Message:
        return Ack()

    transport = httpx.ASGITransport(app=rpc_app("token_manager", handler))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        without = await rate(client, {})
    print(f"rpc in-process: {without:.0f} req/s open, {with_guard:.0f} req/s guarded")
    assert with_guard > without / 3


def test_store_and_finish_messages_are_in_the_table() -> None:
    """The messages the runner and the hosts send are the ones the table names."""
    assert StoreCredential.__name__ in rpcauth.RPC_CALLERS["token-manager"]
    assert JobFinished.__name__ in rpcauth.RPC_CALLERS["queue-manager"]


class TestCredentialsFile:
    """``[auth] credentials``: JSON, 0600."""

    def test_readable_by_others_is_refused(self, tmp_path: Path) -> None:
        """Mode 0644 is refused, the message says the expected mode."""
        path = tmp_path / "c.json"
        path.write_text("{}")
        path.chmod(0o644)
        with pytest.raises(ConfigError, match="0600"):
            load_service_secrets(path)

    def test_shape_errors_name_the_member_not_the_value(self, tmp_path: Path) -> None:
        """A wrong member is named; the value (a secret) is not shown."""
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"passwords": {"vo": {"alice": 7}}, "rpc_tokens": {}}))
        path.chmod(0o600)
        with pytest.raises(ConfigError, match="passwords") as caught:
            load_service_secrets(path)
        assert "7" not in str(caught.value).split(":")[-1]

    def test_good_file(self, tmp_path: Path) -> None:
        """A well-formed file loads; its repr shows no secret."""
        path = tmp_path / "c.json"
        doc = {"rpc_tokens": {"qm": "tok"}, "client_secrets": {"vo": {"token_manager": "s3"}}}
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        loaded = load_service_secrets(path)
        assert loaded.rpc_tokens == {"qm": "tok"}
        assert "s3" not in repr(loaded) and "tok" not in repr(loaded)


class TestIssuerApproval:
    """The issuer's approval logic (in virtual time, no process)."""

    async def _start(self, issuer: Any) -> Any:
        from scitokens_batch.protocol import CLIENT_AUTH_BASIC, DeviceAuthorizationRequest

        from ..actors.issuer_helpers import SECRETS

        return await issuer.handle(
            DeviceAuthorizationRequest(
                client_id="token_manager",
                client_secret=SECRETS.get("token_manager"),
                client_auth=CLIENT_AUTH_BASIC,
                scope="read:/data offline_access",
            )
        )

    async def test_required_password_without_one_configured_refuses(self) -> None:
        """A live issuer (password required) refuses a user with no password: deny by default."""
        from scitokens_batch.protocol import DeviceApproval, OAuthError

        from ..actors.issuer_helpers import make_issuer

        issuer = make_issuer(require_password=True)
        start = await self._start(issuer)
        answer = await issuer.handle(DeviceApproval(user_code=start.user_code, user="alice"))
        assert isinstance(answer, OAuthError) and answer.status == 403

    async def test_wrong_user_and_wrong_password_look_the_same(self) -> None:
        """An unknown user and a wrong password get the same answer (no user enumeration)."""
        from scitokens_batch.protocol import DeviceApproval

        from ..actors.issuer_helpers import make_issuer

        issuer = make_issuer(passwords={"alice": "pw"}, require_password=True)
        start = await self._start(issuer)
        a = await issuer.handle(
            DeviceApproval(user_code=start.user_code, user="alice", password="no")
        )
        b = await issuer.handle(
            DeviceApproval(user_code=start.user_code, user="mallory", password="no")
        )
        assert a == b
        ok = await issuer.handle(
            DeviceApproval(user_code=start.user_code, user="alice", password="pw")
        )
        assert ok == Ack()


def test_remembered_token_still_expires() -> None:
    """A token the guard has verified before is refused once it has expired."""
    clock = [NOW]
    guard = RpcGuard(name="node-0", role="execute-host", keys=(POOL.public,), now=lambda: clock[0])
    token = mint()
    assert isinstance(guard.check(token), rpcauth.ServiceIdentity)
    clock[0] = NOW + 600 + rpcauth.CLOCK_LEEWAY + 1
    got = guard.check(token)
    assert isinstance(got, Rejection) and got.reason is Reason.EXPIRED
