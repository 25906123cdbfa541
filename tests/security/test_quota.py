"""A data server's quota and free-space margin: an upload that does not fit is refused with
507, before its body when the size is announced, as soon as it crosses the limit otherwise,
and leaves nothing behind."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trio

from .storage_live import QUOTA, Storage, bearer, files_under, start_storage


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    """A live issuer and data servers for the module (``store`` has a 4 MB quota)."""
    yield from start_storage()


@pytest.fixture(scope="module")
def modify(storage: Storage) -> str:
    """A token that may write and overwrite under ``/up``."""
    return storage.token("modifier", "storage.modify:/up storage.read:/")


def _put(storage: Storage, path: str, token: str, content: bytes) -> int:
    async def main() -> int:
        async with storage.client() as client:
            reply = await client.put(storage.url() + path, content=content, headers=bearer(token))
            return reply.status_code

    return trio.run(main)


def _leftovers(storage: Storage) -> list[str]:
    return [n for n in files_under(storage.staging()) if n.startswith("upload-")]


def test_announced_size_over_quota_is_refused_before_the_body(
    storage: Storage, modify: str
) -> None:
    """A PUT announcing more than the quota gets 507 at once, without sending any body."""
    host, port = storage.url().split("//")[1].split(":")
    head = (
        f"PUT /up/huge HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {modify}\r\n"
        f"Content-Length: {100 * QUOTA}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        storage.ssl().wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(head)
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 507"), answer[:200]
    assert time.monotonic() - started < 3
    assert not (storage.tree() / "up" / "huge").exists()
    assert _leftovers(storage) == []


def test_chunked_upload_over_quota_is_cut_and_discarded(storage: Storage, modify: str) -> None:
    """A chunked PUT (no announced size) is stopped once past the quota: 507 (or the
    connection cut while still sending), no file, no partial upload left in staging."""

    async def body() -> AsyncIterator[bytes]:
        block = bytes(256 * 1024)
        for _ in range(2 * QUOTA // len(block)):
            yield block

    async def main() -> int | str:
        # Bounded: a client still sending when the server gives up may wait for its timeout.
        async with storage.client(timeout=5.0) as client:
            try:
                reply = await client.put(
                    storage.url() + "/up/chunked", content=body(), headers=bearer(modify)
                )
            except httpx.TransportError as exc:
                return type(exc).__name__
            return reply.status_code

    outcome = trio.run(main)
    assert outcome == 507 or isinstance(outcome, str), outcome
    assert not (storage.tree() / "up" / "chunked").exists()
    assert _leftovers(storage) == []


def test_quota_counts_what_is_stored(storage: Storage, modify: str) -> None:
    """Files on disk count against the quota, and a delete gives the space back."""
    three = bytes(range(256)) * (3_000_000 // 256)
    assert _put(storage, "/up/three", modify, three) == 201
    assert _put(storage, "/up/two", modify, b"\x01" * 2_000_000) == 507
    assert not (storage.tree() / "up" / "two").exists()

    async def delete() -> int:
        async with storage.client() as client:
            url = storage.url() + "/up/three"
            return (await client.delete(url, headers=bearer(modify))).status_code

    assert trio.run(delete) == 204
    assert _put(storage, "/up/two", modify, b"\x01" * 2_000_000) == 201
    assert _leftovers(storage) == []
