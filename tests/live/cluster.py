"""A small live deployment for tests: our HTTPS issuer, our data server and XRootD, as real
processes on 127.0.0.1 (started and stopped by PID through the live runner's own machinery)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import trio

from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run
from scitokens_batch.protocol import (
    CLIENT_AUTH_POST,
    GRANT_CLIENT_CREDENTIALS,
    TokenRequest,
    TokenResponse,
)

AUDIENCE = "https://store.vo.example"
PROBE_SECRET = "probe-secret-for-tests"

SCENARIO = f"""
[scenario]
name = "live-interop"
duration = "1h"
seed = 5

[[issuers]]
name = "vo"
url = "https://issuer.vo.example/vo"
access_token_lifetime = "5m"

[[issuers.users]]
name = "alice"
scopes = ["read:/data", "write:/results/alice"]

[[issuers.clients]]
name = "probe"
secret = "{PROBE_SECRET}"
grants = ["client_credentials"]
scopes = ["read:/data"]
access_token_lifetime = "3s"

[[execute_hosts]]
name = "node"
count = 1
slots = 1

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"

[data_servers.issuers]
vo = "/vo"

[[data_servers.files]]
path = "/vo/data"
count = 2
size = "1MB"

[[data_servers]]
name = "xroot"
audience = "{AUDIENCE}"
backend = "xrootd"

[data_servers.issuers]
vo = "/vo"

[[data_servers.files]]
path = "/vo/data"
count = 2
size = "1MB"

[[workloads]]
name = "w"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data", "write:/results/alice"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""


@attrs.define
class Cluster:
    """The running services and what tests need to reach them."""

    run: _Run
    workdir: Path

    @property
    def issuer(self) -> str:
        """The live ``iss``."""
        return self.run.issuer_urls["vo"]

    def url(self, server: str) -> str:
        """A data server's base URL."""
        return self.run.peers[server]

    @property
    def ca(self) -> Path:
        return self.run.tls.ca

    @property
    def bundle(self) -> Path:
        return self.run.tls.bundle

    def pid(self, name: str) -> int | None:
        return self.run.services[name].pid

    def user_tokens(self) -> TokenResponse:
        """alice's login by device flow, as the live runner does it."""

        async def login() -> TokenResponse:
            transport = self.run.transport()
            try:
                return await self.run.device_login(
                    transport, "vo", "alice", ["read:/data", "write:/results/alice"], AUDIENCE
                )
            finally:
                await transport.aclose()

        return trio.run(login)

    def probe_token(self) -> TokenResponse:
        """A 3-second client-credentials token (for expiry tests)."""

        async def get() -> Any:
            transport = self.run.transport()
            try:
                return await transport.request(
                    "test",
                    "vo",
                    TokenRequest(
                        grant_type=GRANT_CLIENT_CREDENTIALS,
                        client_id="probe",
                        client_secret=PROBE_SECRET,
                        client_auth=CLIENT_AUTH_POST,
                        scope="read:/data",
                        audience=AUDIENCE,
                    ),
                )
            finally:
                await transport.aclose()

        answer = trio.run(get)
        assert isinstance(answer, TokenResponse), answer
        return answer


def start_cluster(names: tuple[str, ...] = ("vo", "store", "xroot")) -> Iterator[Cluster]:
    """Start ``names`` (issuer, data servers); stop every process on the way out."""
    with deployment(SCENARIO, names, prefix="stb-live-test-") as run:
        yield Cluster(run, run.workdir)
