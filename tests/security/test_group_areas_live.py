"""Group-based authorization against a live data server: tokens from our live issuer by the
real device flow, carrying ``wlcg.groups`` and no storage scope for the paths used, are granted
exactly what their groups' storage areas allow (the issue's example: ``/`` readable and
writable by /wlcg, ``/protected`` readable by /wlcg and writable only by /wlcg/test)."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator

import httpx
import pytest
import trio

from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run

AUDIENCE = "https://store.groups.example"
#: A scope that covers none of the paths below: only the groups can grant there.
ELSEWHERE = "storage.read:/elsewhere"

SCENARIO = f"""
[scenario]
name = "group-areas"
duration = "1h"
seed = 12

[[issuers]]
name = "vo"
url = "https://issuer.groups.example/vo"
profile = "wlcg"

[[issuers.users]]
name = "alice"
groups = ["/wlcg"]
scopes = ["{ELSEWHERE}"]

[[issuers.users]]
name = "bob"
groups = ["/wlcg", "/wlcg/test"]
scopes = ["{ELSEWHERE}"]

[[execute_hosts]]
name = "node"
count = 1
slots = 1

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"

[data_servers.issuers]
vo = "/"

[[data_servers.files]]
path = "/protected"
count = 1
size = "1kB"

[[data_servers.areas]]
path = "/"
read = ["/wlcg"]
write = ["/wlcg"]

[[data_servers.areas]]
path = "/protected"
read = ["/wlcg"]
write = ["/wlcg/test"]

[[workloads]]
name = "w"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["{ELSEWHERE}"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""


@pytest.fixture(scope="module")
def run() -> Iterator[_Run]:
    """The live issuer, token manager and data server; every process stopped by PID."""
    with deployment(SCENARIO, ("vo", "token_manager", "store"), prefix="stb-groups-") as r:
        yield r


def login(run: _Run, user: str) -> str:
    """The user's access token from the real device flow."""

    async def go() -> str:
        transport = run.transport()
        try:
            answer = await run.device_login(transport, "vo", user, [ELSEWHERE], AUDIENCE)
        finally:
            await transport.aclose()
        return answer.access_token

    return trio.run(go)


def payload(token: str) -> dict[str, object]:
    """The JWT's claims, unverified (the data server verifies; this only reads them)."""
    part = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def client(run: _Run) -> httpx.Client:
    """An HTTPS client trusting the run's CA, bounded."""
    return httpx.Client(verify=ssl.create_default_context(cafile=str(run.tls.ca)), timeout=20)


def test_tokens_carry_groups_and_no_covering_scope(run: _Run) -> None:
    """The device-flow tokens hold the users' wlcg.groups and only the unrelated scope."""
    claims = payload(login(run, "bob"))
    assert claims["wlcg.groups"] == ["/wlcg", "/wlcg/test"]
    assert "protected" not in str(claims["scope"])


def test_group_areas_decide_live(run: _Run) -> None:
    """/wlcg reads (404 for a missing file), writes in /, may not write in /protected (403,
    nothing written); /wlcg/test may."""
    tree = run.workdir / "services" / "store" / "data"
    alice = {"Authorization": f"Bearer {login(run, 'alice')}"}
    bob = {"Authorization": f"Bearer {login(run, 'bob')}"}
    base = run.peers["store"]
    with client(run) as c:
        assert c.get(f"{base}/protected/0", headers=alice).status_code == 200
        assert c.get(f"{base}/missing", headers=alice).status_code == 404
        assert c.put(f"{base}/open/a", content=b"a", headers=alice).status_code == 201
        refused = c.put(f"{base}/protected/a", content=b"a", headers=alice)
        made = c.put(f"{base}/protected/b", content=b"b", headers=bob)
        listing = c.request("PROPFIND", f"{base}/protected", headers={**alice, "Depth": "1"})
    assert refused.status_code == 403
    assert not (tree / "protected" / "a").exists()
    assert made.status_code == 201
    assert (tree / "protected" / "b").read_bytes() == b"b"
    assert listing.status_code == 207 and b"/protected/b" in listing.content
