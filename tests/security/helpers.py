"""A small live deployment for the security tests: real services on 127.0.0.1, each started,
killed and restarted by its PID through the live runner's own machinery."""

from __future__ import annotations

import os
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run
from scitokens_batch.protocol import wire as w

AUDIENCE = "https://store.vo.example"
SCOPES = ["read:/data", "write:/results/alice"]
PROBE_SECRET = "probe-secret-for-security-tests"

SCENARIO = """
[scenario]
name = "security"
duration = "1h"
seed = 11

[[issuers]]
name = "vo"
url = "https://issuer.vo.example/vo"
access_token_lifetime = "5m"
{issuer_keys}

[[issuers.users]]
name = "alice"
scopes = ["read:/data", "write:/results/alice"]

[[issuers.clients]]
name = "probe"
secret = "{probe_secret}"
grants = ["client_credentials"]
scopes = ["read:/data"]

[[execute_hosts]]
name = "node"
count = 1
slots = 1

[[data_servers]]
name = "store"
audience = "{audience}"

[data_servers.issuers]
vo = "/vo"

[[workloads]]
name = "w"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data", "write:/results/alice"], audience = "{audience}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""


@attrs.define
class Live:
    """The running services, and what the tests need to reach, kill and inspect them."""

    run: _Run

    @property
    def token_url(self) -> str:
        return self.run.issuer_urls["vo"] + "/token"

    @property
    def tm_secret(self) -> str:
        # Live secrets come from the CSPRNG, drawn by the runner (never from the seed).
        secret = self.run.client_secrets.get("vo", {}).get("token_manager")
        assert secret is not None
        return secret

    def workdir(self, name: str) -> Path:
        return self.run.workdir / "services" / name

    def log(self, name: str) -> Path:
        return self.run.workdir / "logs" / f"{name}.log"

    def events(self, name: str) -> Path:
        return self.run.workdir / "events" / f"{name}.jsonl"

    def client(self) -> httpx.AsyncClient:
        """An HTTPS client trusting the run's CA (bounded timeouts)."""
        ctx = ssl.create_default_context(cafile=str(self.run.tls.ca))
        return httpx.AsyncClient(verify=ctx, timeout=10.0)

    def kill9(self, name: str) -> None:
        """SIGKILL the service by its PID and reap it."""
        pid = self.run.services[name].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        self.run.services[name].stop(kill=True)

    def restart(self, name: str) -> None:
        """Start the service again (same socket address) and wait until it answers."""
        self.run.services[name].start(None)
        trio.run(self.run.wait_healthy, [name])

    def login(self) -> str:
        """alice's device-flow login for the token manager's client: her refresh token."""

        async def go() -> str:
            transport = self.run.transport()
            try:
                answer = await self.run.device_login(transport, "vo", "alice", SCOPES, AUDIENCE)
            finally:
                await transport.aclose()
            assert answer.refresh_token is not None
            return answer.refresh_token

        return trio.run(go)

    async def refresh(self, client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
        """One refresh grant, as the token manager sends it (HTTP Basic)."""
        return await client.post(
            self.token_url,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Authorization": w.basic_header("token_manager", self.tm_secret)},
        )


def live(
    names: tuple[str, ...], *, issuer_keys: str = "", log_level: str = "info"
) -> Iterator[Live]:
    """Start ``names``; every process is stopped by PID on the way out."""
    text = SCENARIO.format(issuer_keys=issuer_keys, probe_secret=PROBE_SECRET, audience=AUDIENCE)
    with deployment(text, names, prefix="stb-security-", log_level=log_level) as run:
        yield Live(run)


def json_of(response: httpx.Response) -> Any:
    return response.json()
