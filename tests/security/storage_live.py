"""A live issuer and two of our data servers on 127.0.0.1, for the storage attack tests.

Started through the live runner's own machinery (:func:`~scitokens_batch.live._deploy.deployment`),
so the data servers are real ``scitokens-batch serve data-server`` processes with their real
hypercorn configuration; every process is stopped by PID on the way out. Tokens come from the
issuer by client credentials (one client per right: create-only, modify, read).
"""

from __future__ import annotations

import os
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
    CLIENT_AUTH_POST,
    GRANT_CLIENT_CREDENTIALS,
    TokenRequest,
    TokenResponse,
)

AUDIENCE = "https://store.vo.example"
SECRET = "storage-test-secret"
#: The quota of ``store`` (bytes on disk): small, so the quota test moves little.
QUOTA = 4_000_000

SCENARIO = f"""
[scenario]
name = "storage-security"
duration = "1h"
seed = 14

[[issuers]]
name = "vo"
url = "https://issuer.vo.example/vo"
profile = "wlcg"

[[issuers.users]]
name = "alice"
scopes = ["storage.read:/"]

[[issuers.clients]]
name = "creator"
secret = "{SECRET}"
grants = ["client_credentials"]
scopes = ["storage.create:/up", "storage.read:/"]

[[issuers.clients]]
name = "modifier"
secret = "{SECRET}"
grants = ["client_credentials"]
scopes = ["storage.modify:/up", "storage.read:/"]

[[issuers.clients]]
name = "reader"
secret = "{SECRET}"
grants = ["client_credentials"]
scopes = ["storage.read:/"]

[[execute_hosts]]
name = "node"
count = 1
slots = 1

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"
quota = "{QUOTA}B"

[data_servers.issuers]
vo = "/"

[[data_servers.files]]
path = "/data"
count = 2
size = "1kB"

[[data_servers]]
name = "other"
audience = "{AUDIENCE}"

[data_servers.issuers]
vo = "/"

[[data_servers.files]]
path = "/data"
count = 1
size = "1kB"

[[workloads]]
name = "w"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["storage.read:/"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""


@attrs.define
class Storage:
    """The running services and what the tests need to reach them."""

    run: _Run

    def url(self, server: str = "store") -> str:
        """A data server's base URL."""
        return self.run.peers[server]

    @property
    def issuer_url(self) -> str:
        """The live issuer's ``iss``."""
        return self.run.issuer_urls["vo"]

    def tree(self, server: str = "store") -> Path:
        """The data tree a data server serves."""
        return self.run.workdir / "services" / server / "data"

    def staging(self, server: str = "store") -> Path:
        """Where a data server stages uploads."""
        return self.run.workdir / "services" / server / "data.staging"

    def pid(self, server: str = "store") -> int:
        """The data server's process id."""
        pid = self.run.services[server].pid
        assert pid is not None
        return pid

    def ssl(self) -> ssl.SSLContext:
        """A client TLS context trusting the run's CA."""
        return ssl.create_default_context(cafile=str(self.run.tls.ca))

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client trusting the run's CA, with a bounded timeout."""
        kwargs.setdefault("timeout", 20.0)
        return httpx.AsyncClient(verify=self.ssl(), **kwargs)

    def token(self, client: str, scope: str) -> str:
        """An access token of ``client`` (client credentials) for ``scope``."""

        async def get() -> Any:
            transport = self.run.transport()
            try:
                return await transport.request(
                    "test",
                    "vo",
                    TokenRequest(
                        grant_type=GRANT_CLIENT_CREDENTIALS,
                        client_id=client,
                        client_secret=SECRET,
                        client_auth=CLIENT_AUTH_POST,
                        scope=scope,
                        audience=AUDIENCE,
                    ),
                )
            finally:
                await transport.aclose()

        answer = trio.run(get)
        assert isinstance(answer, TokenResponse), answer
        return answer.access_token

    def restart(self, server: str = "store", *, kill: bool = True) -> None:
        """Stop the data server (SIGKILL by default) and start it again, waiting for it."""
        svc = self.run.services[server]
        svc.stop(kill=kill)
        svc.start(None)
        trio.run(self.run.wait_healthy, [server])


def start_storage() -> Iterator[Storage]:
    """Start the issuer and both data servers; every process is stopped by PID afterwards."""
    with deployment(SCENARIO, ("vo", "store", "other"), prefix="stb-storage-test-") as run:
        yield Storage(run)


def bearer(token: str) -> dict[str, str]:
    """The F3 header."""
    return {"Authorization": f"Bearer {token}"}


def files_under(directory: Path) -> list[str]:
    """Every entry (files, links) under ``directory``, relative, sorted."""
    found = []
    for parent, dirs, files in os.walk(directory):
        for name in files + dirs:
            found.append(os.path.relpath(os.path.join(parent, name), directory))
    return sorted(found)
