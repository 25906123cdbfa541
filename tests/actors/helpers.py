"""Small worlds for actor tests: a scenario text, run under pytest-trio's autojump clock."""

from __future__ import annotations

import textwrap

from scitokens_batch.metrics import Event, ListSink
from scitokens_batch.scenario import Scenario, World
from scitokens_batch.scenario._loader import parse_scenario
from scitokens_batch.scenario._run import drive

HEADER = """
[scenario]
name = "actor-test"
duration = "{duration}"
seed = 1

[[issuers]]
name = "vo"
url = "https://issuer.example/vo"
access_token_lifetime = "{lifetime}"

[[issuers.users]]
name = "alice"
scopes = ["read:/data", "write:/out/alice"]

[token_manager]
renew_fraction = 0.5
scan_interval = "60s"
retry_backoff = "30s"
retry_backoff_max = "10m"

[queue_manager]
negotiation_interval = "20s"
credential_wait = "20s"
release_held_after = "10m"

[[execute_hosts]]
name = "node"
count = {hosts}
slots = 1
sandbox_refresh = "5m"

[[data_servers]]
name = "store"
audience = "https://store.example"
bandwidth = "100MB/s"

[data_servers.issuers]
vo = "/vo"

[[data_servers.files]]
path = "/vo/data"
count = 10
size = "100MB"
"""


def scenario(
    body: str, *, duration: str = "2h", lifetime: str = "20m", hosts: int = 1, **overrides: str
) -> Scenario:
    """The common header plus ``body`` (workloads, faults), parsed as a scenario file.

    Keyword overrides are ``--set`` style, with ``__`` for the dots:
    ``queue_manager__credential_wait="60s"``.
    """
    text = HEADER.format(duration=duration, lifetime=lifetime, hosts=hosts) + textwrap.dedent(body)
    sets = [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return parse_scenario(text, file="actor-test.toml", overrides=sets)


def workload(steps: str, *, jobs: int = 1, at: str = "0s", token_use: str = "reread") -> str:
    """One workload of ``jobs`` jobs for alice, all submitted at ``at``."""
    return f"""
[[workloads]]
name = "w"
user = "alice"
issuer = "vo"
jobs = {jobs}
arrival = {{ kind = "burst", at = "{at}" }}
token = {{ service = "vo", scopes = ["read:/data", "write:/out/alice"], audience = "https://store.example" }}
token_use = "{token_use}"
steps = [{steps}]
"""


async def simulate(spec: Scenario, *, until: float | None = None) -> tuple[World, list[Event]]:
    """Run ``spec`` in the current trio run (use the ``autojump_clock`` fixture)."""
    sink = ListSink()
    world = await drive(spec, seed=spec.meta.seed, sink=sink, log_level="critical", until=until)
    return world, sink.events


def times(events: list[Event], kind: str, **match: object) -> list[float]:
    """The times of the events of ``kind`` whose fields include ``match``."""
    return [
        e.t
        for e in events
        if e.kind == kind and all(e.fields.get(k) == v for k, v in match.items())
    ]


def of(events: list[Event], kind: str) -> list[Event]:
    """The events of ``kind``."""
    return [e for e in events if e.kind == kind]
