"""Group-based authorization: storage areas with ``wlcg.groups`` ACLs decided by the longest
matching path (StoRM, dCache), through our data server's HTTP face in-process, and loaded from
a scenario's ``[[data_servers.areas]]`` into the virtual-time actor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from scitokens_batch.actors import GroupArea
from scitokens_batch.actors.data_server import area_for
from scitokens_batch.scenario import parse_scenario
from scitokens_batch.tokens import Operation, Profile, SigningKey, build_claims, encode
from scitokens_batch.transport.http import data_app

from ..actors.transfer_helpers import build
from .helpers import AUDIENCE, ISSUER, T0, Store, bearer, data_server, put_file

#: The issue's example: ``/`` readable and writable by /wlcg, ``/protected`` readable by
#: /wlcg and writable only by /wlcg/test (server paths: the issuer's base path is /vo).
AREAS = (
    GroupArea("/", read=("/wlcg",), write=("/wlcg",)),
    GroupArea("/vo/protected", read=("/wlcg",), write=("/wlcg/test",)),
)


def group_token(key: SigningKey, groups: tuple[str, ...], scopes: str = "openid") -> str:
    """A WLCG token with ``wlcg.groups`` and no storage scope unless ``scopes`` names one."""
    claims = build_claims(
        profile=Profile.WLCG,
        issuer=ISSUER,
        subject="alice",
        audience=AUDIENCE,
        scopes=scopes,
        groups=groups,
        issued_at=T0 - 10,
        lifetime=600,
        jti="jti-groups",
    )
    return encode(claims, key)


@pytest.fixture
def store(tmp_path: Path, es256_key: SigningKey) -> Store:
    """A data server with the example areas and a file in /vo/protected."""
    s = data_server(tmp_path, es256_key)
    s.server.areas = AREAS
    put_file(s.tree.root, "/vo/protected/f", b"protected bytes")
    s.tree.clean_staging()
    return s


@asynccontextmanager
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the data server in-process."""
    app = data_app("store", store.server.admit, store.tree, realm="store")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


def test_longest_matching_area_decides() -> None:
    """The area with the longest root covering the path decides, by whole components."""
    assert area_for(AREAS, "/vo/protected/x") is AREAS[1]
    assert area_for(AREAS, "/vo/protected") is AREAS[1]
    assert area_for(AREAS, "/vo/protectedx") is AREAS[0]
    assert AREAS[1].allows(["/wlcg"], Operation.READ)
    assert not AREAS[1].allows(["/wlcg"], Operation.CREATE)


async def test_group_member_reads_and_writes_the_open_area(
    store: Store, es256_key: SigningKey
) -> None:
    """A /wlcg token without storage scopes reads (404 for a missing file), lists and writes where /wlcg may."""
    headers = bearer(group_token(es256_key, ("/wlcg",)))
    async with client(store) as c:
        missing = await c.get("/vo/data/nothing", headers=headers)
        put = await c.put("/vo/data/new", content=b"x", headers=headers)
        listing = await c.request("PROPFIND", "/vo/protected", headers=headers)
        read = await c.get("/vo/protected/f", headers=headers)
    assert (missing.status_code, put.status_code) == (404, 201)
    assert listing.status_code == 207 and b"/vo/protected/f" in listing.content
    assert (read.status_code, read.content) == (200, b"protected bytes")


async def test_write_needs_the_areas_write_group(store: Store, es256_key: SigningKey) -> None:
    """In /protected a /wlcg token may not write (403, nothing written); a /wlcg/test one may (201), and overwrite (204)."""
    plain = bearer(group_token(es256_key, ("/wlcg",)))
    tester = bearer(group_token(es256_key, ("/wlcg", "/wlcg/test")))
    async with client(store) as c:
        refused = await c.put("/vo/protected/new", content=b"no", headers=plain)
        made = await c.put("/vo/protected/new", content=b"yes", headers=tester)
        over = await c.put("/vo/protected/f", content=b"again", headers=tester)
        delete = await c.delete("/vo/protected/new", headers=plain)
    assert refused.status_code == 403
    assert (made.status_code, over.status_code, delete.status_code) == (201, 204, 403)
    assert (store.tree.root / "vo/protected/new").read_bytes() == b"yes"


async def test_scope_grants_by_itself_and_no_group_no_scope_is_refused(
    store: Store, es256_key: SigningKey
) -> None:
    """A storage scope still grants without any group; a token with neither is 403."""
    scoped = bearer(group_token(es256_key, (), "storage.create:/protected"))
    nothing = bearer(group_token(es256_key, ("/other",)))
    async with client(store) as c:
        made = await c.put("/vo/protected/by-scope", content=b"s", headers=scoped)
        refused = await c.get("/vo/protected/f", headers=nothing)
    assert (made.status_code, refused.status_code) == (201, 403)
    assert b"protected bytes" not in refused.content


async def test_scenario_areas_reach_the_actor() -> None:
    """``[[data_servers.areas]]`` is loaded and given to the data server actor (virtual time)."""
    world, _ = build(parse_scenario(SCENARIO, file="areas.toml"))
    assert world.data_servers["store"].areas == (
        GroupArea("/", ("/wlcg",), ("/wlcg",)),
        GroupArea("/protected", ("/wlcg",), ("/wlcg/test",)),
    )


SCENARIO = """
[scenario]
name = "areas"
duration = "1h"
seed = 1

[[issuers]]
name = "vo"
url = "https://issuer.vo.example/vo"
profile = "wlcg"

[[issuers.users]]
name = "alice"
groups = ["/wlcg", "/wlcg/test"]
scopes = ["storage.read:/"]

[[execute_hosts]]
name = "node"
count = 1
slots = 1

[[data_servers]]
name = "store"
audience = "https://store.vo.example"

[data_servers.issuers]
vo = "/"

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
arrival = { kind = "burst", at = "0s" }
token = { service = "vo", scopes = ["storage.read:/"], audience = "https://store.vo.example" }
steps = [{ compute = { kind = "fixed", duration = "1s" } }]
"""
