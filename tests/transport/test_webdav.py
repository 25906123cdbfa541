"""WebDAV and WLCG storage semantics of our data server, in-process (httpx.ASGITransport):
PROPFIND, HEAD and DELETE on directories, Last-Modified/ETag, Want-Digest/Digest, and HTTP-TPC
COPY answered 202 with performance markers, in pull and push mode."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from scitokens_batch.live._store import FileTree
from scitokens_batch.tokens import SigningKey
from scitokens_batch.transport import http
from scitokens_batch.transport.http import DataStore, data_app, tpc_outcome

from .helpers import BIG, Store, bearer, data_server, put_file, token

DAV = "{DAV:}"
SRC = "https://src.example"
DST = "https://dst.example"


@pytest.fixture
def store(tmp_path: Path, es256_key: SigningKey) -> Store:
    """A data server over ``tmp_path`` with /vo/data/big and an empty /vo/empty."""
    s = data_server(tmp_path / "a", es256_key)
    put_file(s.tree.root, "/vo/data/big", os.urandom(BIG))
    put_file(s.tree.root, "/vo/data/small", b"hello")
    (s.tree.root / "vo" / "empty").mkdir()
    return s


@pytest.fixture
def other(tmp_path: Path, es256_key: SigningKey) -> Store:
    """A second data server (the other end of the copies)."""
    s = data_server(tmp_path / "b", es256_key)
    s.tree.clean_staging()
    return s


def _app(store: Store, **kwargs: Any) -> Any:
    return data_app("store", store.server.admit, store.tree, realm="store", **kwargs)


@asynccontextmanager
async def client_of(app: Any, base: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
        yield c


def _props(body: bytes) -> dict[str, dict[str, Any]]:
    """href -> {collection, length, modified, etag} of a multistatus body."""
    out = {}
    for resp in ET.fromstring(body).iter(f"{DAV}response"):
        href = resp.findtext(f"{DAV}href")
        prop = resp.find(f"{DAV}propstat/{DAV}prop")
        assert href is not None and prop is not None
        out[href] = {
            "collection": prop.find(f"{DAV}resourcetype/{DAV}collection") is not None,
            "length": int(prop.findtext(f"{DAV}getcontentlength") or -1),
            "modified": prop.findtext(f"{DAV}getlastmodified"),
            "etag": prop.findtext(f"{DAV}getetag"),
        }
    return out


async def test_propfind_depth_1_lists_directory(store: Store, es256_key: SigningKey) -> None:
    """PROPFIND Depth 1 on a directory with a read token is 207 listing it and its entries."""
    async with client_of(_app(store)) as client:
        reply = await client.request(
            "PROPFIND",
            "/vo/data/",
            headers={**bearer(token(es256_key, "storage.read:/data")), "Depth": "1"},
        )
    assert reply.status_code == 207
    props = _props(reply.content)
    assert set(props) == {"/vo/data/", "/vo/data/big", "/vo/data/small"}
    assert props["/vo/data/"]["collection"] is True
    assert props["/vo/data/big"] | {"modified": None, "etag": None} == {
        "collection": False,
        "length": BIG,
        "modified": None,
        "etag": None,
    }
    mtime = (store.tree.root / "vo/data/small").stat().st_mtime
    assert props["/vo/data/small"]["modified"] == email.utils.formatdate(mtime, usegmt=True)


async def test_propfind_depth_0_of_file(store: Store, es256_key: SigningKey) -> None:
    """PROPFIND Depth 0 on a file is 207 with only that file and its size."""
    async with client_of(_app(store)) as client:
        reply = await client.request(
            "PROPFIND",
            "/vo/data/small",
            headers={**bearer(token(es256_key, "storage.read:/")), "Depth": "0"},
        )
    assert reply.status_code == 207
    props = _props(reply.content)
    assert list(props) == ["/vo/data/small"]
    assert props["/vo/data/small"]["length"] == 5


@pytest.mark.parametrize(("scope", "status"), [(None, 401), ("storage.read:/x", 403)])
async def test_propfind_needs_read(
    store: Store, es256_key: SigningKey, scope: str | None, status: int
) -> None:
    """PROPFIND without a token is 401, with a token that may not read the path 403, and no listing leaks."""
    headers = {"Depth": "1"} if scope is None else {**bearer(token(es256_key, scope)), "Depth": "1"}
    async with client_of(_app(store)) as client:
        reply = await client.request("PROPFIND", "/vo/data", headers=headers)
    assert reply.status_code == status
    assert b"small" not in reply.content


async def test_propfind_missing_is_404(store: Store, es256_key: SigningKey) -> None:
    """PROPFIND of nothing, with a read token, is 404."""
    async with client_of(_app(store)) as client:
        reply = await client.request(
            "PROPFIND", "/vo/nothing", headers=bearer(token(es256_key, "storage.read:/"))
        )
    assert reply.status_code == 404


async def test_head_directory_is_200(store: Store, es256_key: SigningKey) -> None:
    """HEAD on a directory is 200 (gfal-stat of a directory), GET on it 404."""
    headers = bearer(token(es256_key, "storage.read:/"))
    async with client_of(_app(store)) as client:
        head = await client.head("/vo/data/", headers=headers)
        get = await client.get("/vo/data", headers=headers)
    assert head.status_code == 200
    assert "last-modified" in head.headers
    assert get.status_code == 404


async def test_last_modified_and_etag(store: Store, es256_key: SigningKey) -> None:
    """GET and HEAD carry the same Last-Modified and ETag; a new version changes the ETag."""
    headers = bearer(token(es256_key, "storage.read:/ storage.modify:/data"))
    async with client_of(_app(store)) as client:
        head = await client.head("/vo/data/small", headers=headers)
        get = await client.get("/vo/data/small", headers=headers)
        put = await client.put("/vo/data/small", content=b"hello again", headers=headers)
        after = await client.head("/vo/data/small", headers=headers)
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["last-modified"] == get.headers["last-modified"]
    assert put.status_code == 204
    assert after.headers["etag"] != head.headers["etag"]


async def test_want_digest(store: Store, es256_key: SigningKey) -> None:
    """Want-Digest adler32, md5 and sha-256 are answered with the file's Digest (RFC 3230)."""
    data = (store.tree.root / "vo/data/big").read_bytes()
    headers = bearer(token(es256_key, "storage.read:/"))
    async with client_of(_app(store)) as client:
        adler = await client.head("/vo/data/big", headers={**headers, "Want-Digest": "ADLER32"})
        both = await client.get(
            "/vo/data/big", headers={**headers, "Want-Digest": "md5;q=0.5, sha-256, crc32c"}
        )
        none = await client.head("/vo/data/big", headers={**headers, "Want-Digest": "crc32c"})
    assert adler.headers["digest"] == f"adler32={zlib.adler32(data):08x}"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert both.headers["digest"] == f"md5={md5}, sha-256={sha}"
    assert both.content == data
    assert "digest" not in none.headers


async def test_digest_computed_once_per_version(
    store: Store, es256_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checksum is computed once per file version: a second HEAD does not read the file, a new version is summed again."""
    reads = []
    original = http._checksum

    async def counting(store: DataStore, path: str, alg: str) -> str:
        reads.append(path)
        return await original(store, path, alg)

    monkeypatch.setattr(http, "_checksum", counting)
    headers = {
        **bearer(token(es256_key, "storage.read:/ storage.modify:/data")),
        "Want-Digest": "adler32",
    }
    async with client_of(_app(store)) as client:
        first = await client.head("/vo/data/small", headers=headers)
        second = await client.head("/vo/data/small", headers=headers)
        await client.put("/vo/data/small", content=b"other bytes", headers=headers)
        third = await client.head("/vo/data/small", headers=headers)
    assert first.headers["digest"] == second.headers["digest"] == "adler32=062c0215"
    assert third.headers["digest"] == f"adler32={zlib.adler32(b'other bytes'):08x}"
    assert reads == ["/vo/data/small", "/vo/data/small"]


async def test_delete_directory(store: Store, es256_key: SigningKey) -> None:
    """DELETE of an empty directory is 204 and removes it; of a non-empty one 409, nothing removed."""
    headers = bearer(token(es256_key, "storage.modify:/"))
    async with client_of(_app(store)) as client:
        full = await client.delete("/vo/data", headers=headers)
        empty = await client.delete("/vo/empty/", headers=headers)
        again = await client.delete("/vo/empty", headers=headers)
    assert (full.status_code, empty.status_code, again.status_code) == (409, 204, 404)
    assert (store.tree.root / "vo/data/small").read_bytes() == b"hello"
    assert not (store.tree.root / "vo/empty").exists()


async def test_copy_pull_streams_markers_then_success(
    store: Store, other: Store, es256_key: SigningKey
) -> None:
    """A pull COPY is 202 text/plain with performance markers, then 'success: Created', and the bytes are in place."""
    source = _app(store)
    async with client_of(source, SRC) as pull:
        dest = _app(other, pull=pull, tpc_sources=(SRC,), marker_seconds=0.001)
        async with client_of(dest) as client:
            reply = await client.request(
                "COPY",
                "/vo/in/big",
                headers={
                    **bearer(token(es256_key, "storage.create:/in")),
                    "Source": f"{SRC}/vo/data/big",
                    "TransferHeaderAuthorization": f"Bearer {token(es256_key, 'storage.read:/')}",
                },
            )
    assert reply.status_code == 202
    assert reply.headers["content-type"] == "text/plain"
    lines = reply.text.splitlines()
    assert lines[0] == "Perf Marker" and "\tTotal Stripe Count: 1" in lines
    assert lines[-1] == "success: Created"
    assert tpc_outcome(reply.text, BIG).status == 201
    expected = (store.tree.root / "vo/data/big").read_bytes()
    assert (other.tree.root / "vo/in/big").read_bytes() == expected


async def test_copy_push_puts_to_destination(
    store: Store, other: Store, es256_key: SigningKey
) -> None:
    """A push COPY (Destination at the source) PUTs the file with TransferHeaderAuthorization and ends 'success: Created'."""
    dest = _app(other)
    async with client_of(dest, DST) as push:
        source = _app(store, pull=push, tpc_sources=(DST,))
        async with client_of(source) as client:
            reply = await client.request(
                "COPY",
                "/vo/data/big",
                headers={
                    **bearer(token(es256_key, "storage.read:/data")),
                    "Destination": f"{DST}/vo/in/pushed",
                    "TransferHeaderAuthorization": f"Bearer {token(es256_key, 'storage.create:/in')}",
                },
            )
    assert reply.status_code == 202
    assert reply.text.splitlines()[-1] == "success: Created"
    expected = (store.tree.root / "vo/data/big").read_bytes()
    assert (other.tree.root / "vo/in/pushed").read_bytes() == expected


async def test_copy_push_refused_by_destination_is_failure(
    store: Store, other: Store, es256_key: SigningKey
) -> None:
    """A push whose destination refuses the PUT ends 'failure: 403 destination: ...' and nothing is written."""
    dest = _app(other)
    async with client_of(dest, DST) as push:
        source = _app(store, pull=push, tpc_sources=(DST,))
        async with client_of(source) as client:
            reply = await client.request(
                "COPY",
                "/vo/data/small",
                headers={
                    **bearer(token(es256_key, "storage.read:/data")),
                    "Destination": f"{DST}/vo/in/pushed",
                    "TransferHeaderAuthorization": f"Bearer {token(es256_key, 'storage.read:/')}",
                },
            )
    assert reply.status_code == 202
    outcome = tpc_outcome(reply.text, 5)
    assert (outcome.status, outcome.side) == (403, "destination")
    assert not (other.tree.root / "vo/in").exists()


@pytest.mark.parametrize(
    "destination", ["http://dst.example/vo/in/x", "https://evil.example/vo/in/x", "not a url"]
)
async def test_copy_push_destination_allow_list(
    store: Store, es256_key: SigningKey, destination: str
) -> None:
    """A push to a plain-http or unlisted Destination is 403 before anything is sent (same rule as a pull's Source)."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as push:
        source = _app(store, pull=push, tpc_sources=(DST,))
        async with client_of(source) as client:
            reply = await client.request(
                "COPY",
                "/vo/data/small",
                headers={
                    **bearer(token(es256_key, "storage.read:/data")),
                    "Destination": destination,
                    "TransferHeaderAuthorization": "Bearer secret-destination-token",
                },
            )
    assert reply.status_code == 403
    assert b"forbidden_destination" in reply.content
    assert sent == []


def test_tpc_outcome_without_outcome_line_is_502() -> None:
    """A COPY body cut before its outcome line is a 502 (state unknown), a foreign failure 500."""
    assert tpc_outcome("Perf Marker\nEnd\n", 1).status == 502
    assert tpc_outcome("failure: rejected GET: 403 Forbidden\n", 1).status == 500


async def test_copy_over_quota_is_507_before_202(
    store: Store, other: Store, es256_key: SigningKey
) -> None:
    """A pull COPY whose source announces more than the destination's quota is a plain 507 (no 202), nothing staged or stored."""
    other.tree.quota = 1000
    async with client_of(_app(store), SRC) as pull:
        dest = _app(other, pull=pull, tpc_sources=(SRC,))
        async with client_of(dest) as client:
            reply = await client.request(
                "COPY",
                "/vo/in/big",
                headers={
                    **bearer(token(es256_key, "storage.create:/in")),
                    "Source": f"{SRC}/vo/data/big",
                    "TransferHeaderAuthorization": f"Bearer {token(es256_key, 'storage.read:/')}",
                },
            )
    assert reply.status_code == 507
    assert reply.headers["x-scitokens-batch-side"] == "destination"
    assert not (other.tree.root / "vo/in/big").exists()
    assert list(other.tree.staging.iterdir()) == []


class SlowTree(FileTree):
    """A store that takes 50 ms per chunk written (a slow disk), so a copy lasts."""

    async def write(self, path: str, chunks: AsyncIterator[bytes], **kw: Any) -> bool:
        async def slow() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                await trio.sleep(0.05)
                yield chunk

        return await super().write(path, slow(), **kw)


async def test_markers_repeat_while_the_copy_runs(
    store: Store, tmp_path: Path, es256_key: SigningKey
) -> None:
    """While a copy runs, a marker goes out every marker_seconds with a growing byte count, then the outcome."""
    slow = data_server(tmp_path / "slow", es256_key)
    slow.tree = SlowTree(tmp_path / "slow")
    slow.server.files = slow.tree
    slow.tree.clean_staging()
    async with client_of(_app(store), SRC) as pull:
        dest = data_app(
            "slow",
            slow.server.admit,
            slow.tree,
            realm="slow",
            pull=pull,
            tpc_sources=(SRC,),
            marker_seconds=0.02,
        )
        async with client_of(dest) as client:
            reply = await client.request(
                "COPY",
                "/vo/in/big",
                headers={
                    **bearer(token(es256_key, "storage.create:/in")),
                    "Source": f"{SRC}/vo/data/big",
                    "TransferHeaderAuthorization": f"Bearer {token(es256_key, 'storage.read:/')}",
                },
            )
    moved = [int(x) for x in re.findall(r"Stripe Bytes Transferred: (\d+)", reply.text)]
    assert len(moved) >= 3
    assert moved == sorted(moved) and moved[0] < moved[-1] <= BIG
    assert reply.text.splitlines()[-1] == "success: Created"
    assert (slow.tree.root / "vo/in/big").stat().st_size == BIG
