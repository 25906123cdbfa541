"""A live deployment for the security tests: an issuer, the token manager, two execute hosts
and a data server as real processes on 127.0.0.1 (no queue manager: the tests play it, or an
attacker), started and stopped by PID through the live runner's machinery."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run
from scitokens_batch.protocol import (
    Ack,
    Message,
    StoreCredential,
    TokenResponse,
    rpcauth,
)
from scitokens_batch.protocol import wire as w

AUDIENCE = "https://store.sec.example"
HOSTS = ("node-0", "node-1")

SCENARIO = f"""
[scenario]
name = "live-security"
duration = "1h"
seed = 11

[[issuers]]
name = "vo"
url = "https://issuer.sec.example/vo"
access_token_lifetime = "10m"

[[issuers.users]]
name = "alice"
scopes = ["read:/data", "write:/results/alice"]

[[issuers.users]]
name = "bob"
password = "bob-scenario-password"
scopes = ["read:/data", "write:/results/bob"]

[[execute_hosts]]
name = "node"
count = 2
slots = 4

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"

[data_servers.issuers]
vo = "/vo"

[[data_servers.files]]
path = "/vo/data"
count = 1
size = "1kB"

[[workloads]]
name = "a"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data", "write:/results/alice"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]

[[workloads]]
name = "b"
user = "bob"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data", "write:/results/bob"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""

SERVICES = ("vo", "token_manager", *HOSTS, "store")


@attrs.define
class Deployment:
    """The running services, and the means to call them as anyone."""

    run: _Run

    @property
    def workdir(self) -> Path:
        """The run's work directory."""
        return self.run.workdir

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return self.run.issuer_urls.get(name) or self.run.peers[name]

    def token(self, name: str, role: str, audience: str) -> str:
        """A genuine service token (signed by the run's pool key) for ``name`` as ``role``."""
        return self.run._service_token(name, role, audience)

    def post_rpc(self, dest: str, message: Message | bytes, token: str | None) -> httpx.Response:
        """POST one RPC envelope to ``dest``, with ``token`` as the service token (or none)."""
        body = message if isinstance(message, bytes) else w.encode_rpc(message)
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        with httpx.Client(verify=self.ssl(), timeout=30.0) as client:
            return client.post(self.url(dest) + "/rpc", content=body, headers=headers)

    def ssl(self) -> ssl.SSLContext:
        """A TLS context trusting the run's CA."""
        return ssl.create_default_context(cafile=str(self.run.tls.ca))

    def login(self, user: str) -> TokenResponse:
        """The user's real device-flow login (with the run's password for the user)."""
        scopes = {
            "alice": ["read:/data", "write:/results/alice"],
            "bob": ["read:/data", "write:/results/bob"],
        }[user]

        async def go() -> TokenResponse:
            transport = self.run.transport()
            try:
                return await self.run.device_login(transport, "vo", user, scopes, AUDIENCE)
            finally:
                await transport.aclose()

        return trio.run(go)

    def store(self, user: str, refresh_token: str, token: str | None) -> httpx.Response:
        """``StoreCredential`` for ``user`` with ``refresh_token``, presenting ``token``."""
        message = StoreCredential(
            user=user,
            service="vo",
            issuer="vo",
            scopes="read:/data",
            audience=AUDIENCE,
            refresh_token=refresh_token,
        )
        return self.post_rpc("token_manager", message, token)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The events a service recorded so far."""
        path = self.workdir / "events" / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def login_token(self) -> str:
        """The login path's service token (what the runner presents to store credentials)."""
        return self.token("runner", rpcauth.LOGIN_ROLE, "token_manager")


def start() -> Iterator[Deployment]:
    """Start the services, log both users in through the real login path; stop on the way out."""
    with deployment(SCENARIO, SERVICES, prefix="stb-sec-test-", keep_workdir=False) as run:
        dep = Deployment(run)

        async def login_all() -> None:
            transport = run.transport()
            try:
                await run.login_all(transport)
            finally:
                await transport.aclose()

        trio.run(login_all)
        yield dep


def ack(reply: httpx.Response) -> Ack:
    """The Ack an RPC reply carries."""
    answer = w.decode_rpc(reply.content)
    assert isinstance(answer, Ack), answer
    return answer
