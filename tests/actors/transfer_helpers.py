"""Small Rucio -> FTS -> storage worlds for actor tests, in trio's virtual time.

The header has one WLCG issuer (clients ``rucio`` and ``fts``), two data servers (``cern``,
the source, and ``bnl``) that trust it under ``/vo``, and a dataset ``raw`` on ``cern``.
A test adds ``[transfer_service]``, ``[data_manager]``, rules and faults as it needs.
"""

from __future__ import annotations

import textwrap
from typing import Any

import trio

from scitokens_batch.metrics import Event, ListSink, Recorder
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_CLIENT_CREDENTIALS,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.scenario import Scenario, World
from scitokens_batch.scenario._loader import parse_scenario
from scitokens_batch.scenario._world import structured_logger

EPOCH = 1767225600.0
CERN = "https://cern.example"
BNL = "https://bnl.example"
FTS_AUD = "https://fts.example"

HEADER = """
[scenario]
name = "transfer-test"
duration = "{duration}"
seed = 5

[[issuers]]
name = "wlcg"
url = "https://wlcg.example/vo"
profile = "wlcg"
access_token_lifetime = "1h"
refresh_token_grace = "{grace}"

[[issuers.clients]]
name = "rucio"
secret = "cs-rucio"
grants = ["client_credentials"]
scopes = {rucio_scopes}
access_token_lifetime = "{rucio_lifetime}"

[[issuers.clients]]
name = "fts"
secret = "cs-fts"
grants = ["token_exchange", "refresh_token"]
access_token_lifetime = "{fts_lifetime}"

[[data_servers]]
name = "cern"
audience = "https://cern.example"
bandwidth = "{cern_bw}"

[data_servers.issuers]
wlcg = "/vo"

[[data_servers]]
name = "bnl"
audience = "https://bnl.example"
bandwidth = "{bnl_bw}"

[data_servers.issuers]
wlcg = "/vo"
"""

#: ``[transfer_service]`` and ``[data_manager]`` with the keys a test sets.
SERVICES = """
[transfer_service]
issuer = "wlcg"
client = "fts"
audience = "https://fts.example"
concurrency = {concurrency}
max_retries = {max_retries}
retry_backoff = "30s"
retry_backoff_max = "10m"

[data_manager]
issuer = "wlcg"
client = "rucio"
bulk = {bulk}
"""


def dataset(files: int, size: str, *, name: str = "raw", path: str = "/data/raw") -> str:
    """A dataset on cern."""
    return f"""
[[datasets]]
name = "{name}"
server = "cern"
path = "{path}"
files = {files}
size = "{size}"
"""


def rule(*, dataset: str = "raw", path: str = "/data/copy", at: str = "0s") -> str:
    """A rule copying ``dataset`` to bnl at ``path``."""
    return f"""
[[rules]]
dataset = "{dataset}"
destination = "bnl"
path = "{path}"
at = "{at}"
"""


def transfer_scenario(
    body: str = "",
    *,
    services: bool = True,
    duration: str = "12h",
    grace: str = "1d",
    rucio_scopes: str = '["fts", "storage.read:/data", "storage.modify:/data"]',
    rucio_lifetime: str = "1h",
    fts_lifetime: str = "1h",
    cern_bw: str = "100MB/s",
    bnl_bw: str = "100MB/s",
    concurrency: int = 10,
    max_retries: int = 3,
    bulk: int = 100,
    overrides: tuple[str, ...] = (),
) -> Scenario:
    """The header (plus the services unless ``services`` is False) plus ``body``."""
    text = HEADER.format(
        duration=duration,
        grace=grace,
        rucio_scopes=rucio_scopes,
        rucio_lifetime=rucio_lifetime,
        fts_lifetime=fts_lifetime,
        cern_bw=cern_bw,
        bnl_bw=bnl_bw,
    )
    if services:
        text += SERVICES.format(concurrency=concurrency, max_retries=max_retries, bulk=bulk)
    text += textwrap.dedent(body)
    return parse_scenario(text, file="transfer-test.toml", overrides=overrides)


def build(spec: Scenario) -> tuple[World, ListSink]:
    """The world of ``spec`` (not started), clocked by trio; call inside a trio test."""
    sink = ListSink()
    t0 = trio.current_time()
    recorder = Recorder(clock=lambda: trio.current_time() - t0, sink=sink)
    world = World.build(
        spec,
        seed=spec.meta.seed,
        recorder=recorder,
        true_now=lambda: EPOCH + trio.current_time() - t0,
        log=structured_logger("critical", lambda: trio.current_time() - t0),
    )
    return world, sink


async def mint(world: World, scope: str, audience: str, *, client: str = "rucio") -> str:
    """A client credentials token of ``client`` at issuer ``wlcg`` (its secret is ``cs-<id>``)."""
    answer = await world.issuers["wlcg"].handle(
        TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS,
            client_id=client,
            client_secret=f"cs-{client}",
            client_auth=CLIENT_AUTH_BASIC,
            scope=scope,
            audience=audience,
        )
    )
    assert isinstance(answer, TokenResponse), answer
    return answer.access_token


def of(events: list[Event], kind: str, **match: Any) -> list[Event]:
    """The events of ``kind`` whose fields include ``match``."""
    return [
        e for e in events if e.kind == kind and all(e.fields.get(k) == v for k, v in match.items())
    ]
