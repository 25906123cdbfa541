"""Group-based authorization (storage areas, issue 11): the same cases against our data server
and against Debian's XRootD 5.5.3 configured from the same areas (``live/_xrootd.py``).

The areas are the issue's example, in server paths (the issuer's base path is ``/vo``): ``/``
readable and writable by ``/wlcg``, ``/vo/protected`` readable by ``/wlcg`` and writable only
by ``/wlcg/test`` (and ``/wlcg/ops``, a writer in ``/`` only). Tokens are WLCG 1.0 with ``wlcg.groups`` and no storage scope (``openid``
only) unless the case says otherwise, minted by our token core; XRootD trusts the key by its
preloaded scitokens-cpp cache (issuer on port 1, as in test_xrootd.py). Our server is the live
data server's HTTP face (``data_app``) in-process, with the same decision code as ``serve``.

Each case pins both servers' statuses and the bytes on disk; where they differ the case says
why, and docs/live.md ("Storage areas on XRootD") records it.
"""

from __future__ import annotations

import re
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from scitokens_batch.actors import GroupArea
from scitokens_batch.errors import LocalInputError
from scitokens_batch.live import (
    RunCA,
    XrootdArea,
    XrootdIssuer,
    XrootdServer,
    XrootdSpec,
    xrootd_missing,
)
from scitokens_batch.live._xrootd import _authdb
from scitokens_batch.tokens import (
    Algorithm,
    Profile,
    SigningKey,
    build_claims,
    encode,
    jwks_document,
)
from scitokens_batch.transport.http import data_app

from ..transport.helpers import AUDIENCE as OUR_AUDIENCE
from ..transport.helpers import ISSUER as OUR_ISSUER
from ..transport.helpers import T0, data_server
from .conftest import peer_missing
from .peers import wall_clock

pytestmark = pytest.mark.interop

XRD_ISSUER = "https://127.0.0.1:1/vo"
XRD_AUDIENCE = "https://xrootd.example"
#: The issue's example areas (server paths), for both servers, plus ``/wlcg/ops``: a writer
#: in ``/`` that ``/vo/protected`` leaves out (so the inner area must shut it out).
AREAS = (
    ("/", ("/wlcg",), ("/wlcg", "/wlcg/ops")),
    ("/vo/protected", ("/wlcg",), ("/wlcg/test",)),
)
#: Files present at the start on both servers.
FILES = {
    "/vo/data/f": b"open bytes\n",
    "/vo/protected/f": b"protected bytes\n",
    "/vo/protectedx/f": b"sibling bytes\n",
}
#: Upper bound on one request.
WAIT = 20.0


@attrs.frozen
class Case:
    """One request, and the status each server answers (the docstring of the module)."""

    name: str
    groups: tuple[str, ...]
    method: str
    path: str
    ours: int
    xrootd: int
    scope: str = "openid"
    why: str = ""


CASES = [
    Case("read in /", ("/wlcg",), "GET", "/vo/data/f", 200, 200),
    Case("read missing in /", ("/wlcg",), "GET", "/vo/data/nothing", 404, 404),
    Case("write in /", ("/wlcg",), "PUT", "/vo/data/new", 201, 200, why="XRootD: 200 for new"),
    Case("mkdir in /", ("/wlcg",), "MKCOL", "/vo/data/dir", 201, 201),
    Case("list /protected", ("/wlcg",), "PROPFIND", "/vo/protected", 207, 207),
    Case("read in /protected", ("/wlcg",), "GET", "/vo/protected/f", 200, 200),
    Case("write in /protected, reader", ("/wlcg",), "PUT", "/vo/protected/no", 403, 403),
    Case("delete in /protected, reader", ("/wlcg",), "DELETE", "/vo/protected/f", 403, 403),
    Case(
        "write in /protected, writer",
        ("/wlcg", "/wlcg/test"),
        "PUT",
        "/vo/protected/yes",
        201,
        200,
        why="XRootD: 200 for new",
    ),
    Case("writer only: read in /", ("/wlcg/test",), "GET", "/vo/data/f", 403, 403),
    Case("writer only: read in /protected", ("/wlcg/test",), "GET", "/vo/protected/f", 200, 200),
    Case("outer-only group: write in /", ("/wlcg/ops",), "PUT", "/vo/data/ops", 201, 200),
    Case(
        "outer-only group: read in /protected", ("/wlcg/ops",), "GET", "/vo/protected/f", 403, 403
    ),
    Case("other group", ("/other",), "GET", "/vo/protected/f", 403, 403),
    Case("no group, no scope", (), "GET", "/vo/data/f", 403, 403),
    Case(
        "scope grants by itself",
        (),
        "PUT",
        "/vo/protected/by-scope",
        201,
        200,
        scope="storage.create:/protected",
        why="XRootD: 200 for new",
    ),
    Case(
        "sibling /protectedx is in /",
        ("/wlcg",),
        "PUT",
        "/vo/protectedx/new",
        201,
        403,
        why="XrdAcc matches paths as strings: /vo/protected also covers /vo/protectedx",
    ),
]


@attrs.frozen
class Servers:
    """Both servers and what the cases need."""

    xrootd: XrootdServer
    xrootd_root: Path
    ca: RunCA
    ours_root: Path
    key: SigningKey


def _populate(root: Path) -> None:
    for path, data in FILES.items():
        target = root.joinpath(*path.strip("/").split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """XRootD with the areas (HTTPS, keys preloaded), and a directory for our server."""
    why = xrootd_missing()
    if why is not None:
        peer_missing(f"XRootD: {why}")
    world = Path(tempfile.mkdtemp(prefix="scitokens-batch-areas-"))
    world.chmod(0o755)  # reachable by the xrootd user
    try:
        ca = RunCA.create(world / "ca")
        key = SigningKey.generate(Algorithm.ES256, kid="areas")
        root = world / "ns"
        _populate(root)
        spec = XrootdSpec(
            name="areas",
            root=root,
            exports=("/vo",),
            issuers=(XrootdIssuer(XRD_ISSUER, "/vo"),),
            audiences=(XRD_AUDIENCE,),
            tls=ca,
            preload={XRD_ISSUER: jwks_document([key.public])},
            trust="preload",
            areas=tuple(XrootdArea(p, r, w) for p, r, w in AREAS),
        )
        server = XrootdServer.start(spec, world / "xrootd")
        try:
            yield Servers(server, root, ca, tmp_path_factory.mktemp("ours"), key)
        finally:
            server.stop()
    finally:
        shutil.rmtree(world, ignore_errors=True)


def _token(key: SigningKey, case: Case, *, issuer: str, audience: str, now: float) -> str:
    claims = build_claims(
        profile=Profile.WLCG,
        issuer=issuer,
        subject="alice",
        audience=audience,
        scopes=case.scope,
        groups=case.groups,
        issued_at=now - 5,
        lifetime=600,
        jti=f"areas-{case.name}",
    )
    return encode(claims, key)


def _request(client: httpx.Client, case: Case, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    if case.method == "PUT":
        return client.put(case.path, content=b"new bytes\n", headers=headers).status_code
    if case.method == "PROPFIND":
        headers["Depth"] = "1"
    return client.request(case.method, case.path, headers=headers).status_code


def _ours(servers: Servers, case: Case) -> int:
    """The case against our data server (in-process), on a fresh copy of the files."""
    root = servers.ours_root / case.name.replace(" ", "-").replace("/", "_").replace(",", "")
    store = data_server(root, servers.key)
    store.server.areas = tuple(GroupArea(p, r, w) for p, r, w in AREAS)
    _populate(store.tree.root)
    token = _token(servers.key, case, issuer=OUR_ISSUER, audience=OUR_AUDIENCE, now=T0)
    app = data_app("store", store.server.admit, store.tree, realm="store")

    async def go() -> int:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            headers = {"Authorization": f"Bearer {token}"}
            if case.method == "PUT":
                reply = await client.put(case.path, content=b"new bytes\n", headers=headers)
            else:
                if case.method == "PROPFIND":
                    headers["Depth"] = "1"
                reply = await client.request(case.method, case.path, headers=headers)
            return reply.status_code

    status = trio.run(go)
    _check_disk(store.tree.root, case, status)
    return status


def _check_disk(root: Path, case: Case, status: int) -> None:
    """What a granted write left on disk, and that a refused one left nothing changed."""
    target = root.joinpath(*case.path.strip("/").split("/"))
    granted = 200 <= status < 300
    if case.method == "PUT":
        assert target.exists() == granted, (case.name, status)
        if granted:
            assert target.read_bytes() == b"new bytes\n"
    elif case.method == "DELETE":
        assert target.exists() != granted, (case.name, status)
    elif case.method == "MKCOL":
        assert target.is_dir() == granted, (case.name, status)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_group_areas_ours_and_xrootd(servers: Servers, case: Case) -> None:
    """Each group-area case gets the pinned status from our server and from XRootD configured
    with the same areas, and a granted write or delete changes exactly that path on disk."""
    assert _ours(servers, case) == case.ours
    token = _token(servers.key, case, issuer=XRD_ISSUER, audience=XRD_AUDIENCE, now=wall_clock())
    context = ssl.create_default_context(cafile=str(servers.ca.ca))
    with httpx.Client(base_url=servers.xrootd.url, verify=context, timeout=WAIT) as client:
        status = _request(client, case, token)
    assert status == case.xrootd, (case.name, status)
    _check_disk(servers.xrootd_root, case, status)


def test_authdb_lists_each_groups_areas_longest_first(tmp_path: Path) -> None:
    """The generated authdb has one record per group, every area in it longest path first
    (XrdAcc takes a record's first matching path), ``-`` where the area leaves the group out."""
    spec = XrootdSpec(
        name="areas",
        root=tmp_path,
        exports=("/vo",),
        issuers=(),
        audiences=(),
        areas=(
            XrootdArea("/", ("/wlcg",), ("/wlcg",)),
            XrootdArea("/vo/a/deeper", (), ("/ops",)),
            XrootdArea("/vo/a", ("/wlcg",), ()),
        ),
    )
    rules = [line for line in _authdb(spec).splitlines() if not line.startswith("#")]
    assert rules == [
        "g /ops /vo/a/deeper a /vo/a - / -",
        "g /wlcg /vo/a/deeper - /vo/a rl / a",
    ]


@pytest.mark.parametrize(
    ("path", "groups", "field"),
    [
        ("relative", (), "path"),
        ("/vo", ("/two words",), "read[]"),
        ("/vo", ("/a#comment",), "read[]"),
        ("/v o", (), "path"),
    ],
)
def test_area_values_an_authdb_cannot_hold_are_refused(
    path: str, groups: tuple[str, ...], field: str
) -> None:
    """A relative or blank-holding area path, and a group with white space or '#', are refused
    with a one-line error naming the field (an authdb line is split on white space)."""
    with pytest.raises(LocalInputError, match=rf"XrootdArea\.{re.escape(field)}"):
        XrootdArea(path, groups)
