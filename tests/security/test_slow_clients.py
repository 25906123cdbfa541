"""Slow and stalled clients cannot starve a data server: stalled uploads are cut, one client
address holds a bounded number of connections, and a legitimate GET still answers at once,
with the server held to a 1,024-descriptor limit."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import trio

from scitokens_batch.live._serve import CONNECTIONS_PER_CLIENT

from .storage_live import Storage, bearer, start_storage

#: The attacker's source address (all of 127/8 is loopback on Linux); the legitimate client
#: stays on 127.0.0.1.
ATTACKER = "127.0.0.2"


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    """A live issuer and data servers for the module."""
    yield from start_storage()


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _stalled_put(host: str, port: int, context: ssl.SSLContext) -> ssl.SSLSocket | None:
    """A TLS connection from :data:`ATTACKER` that sends a PUT head announcing 100 MB, then
    nothing; None when the server refused it (closed at accept)."""
    raw = socket.socket()
    raw.bind((ATTACKER, 0))
    raw.settimeout(5)
    try:
        raw.connect((host, port))
        tls = context.wrap_socket(raw, server_hostname=host)
        tls.sendall(
            f"PUT /up/stall HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Length: 100000000\r\n\r\n".encode()
        )
    except OSError:
        raw.close()
        return None
    return tls


def _legit_get(storage: Storage, token: str) -> float:
    async def main() -> float:
        async with storage.client(timeout=5.0) as client:
            started = time.monotonic()
            reply = await client.get(storage.url() + "/data/0", headers=bearer(token))
            assert reply.status_code == 200
            return time.monotonic() - started

    return trio.run(main)


def test_stalled_uploads_do_not_starve_a_get(storage: Storage) -> None:
    """300 stalled 100 MB uploads and 1,100 idle connections from one address, against a server
    limited to 1,024 descriptors: a GET from another address answers within a second, the
    server holds at most the per-address cap, and the stalled connections are then cut."""
    pid = storage.pid()
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, hard))
    token = storage.token("reader", "storage.read:/")
    host, port_text = storage.url().split("//")[1].split(":")
    port = int(port_text)
    baseline = _fds(pid)
    held: list[socket.socket] = []
    try:
        stalled = [_stalled_put(host, port, storage.ssl()) for _ in range(300)]
        held += [s for s in stalled if s is not None]
        for _ in range(1100):
            raw = socket.socket()
            raw.bind((ATTACKER, 0))
            raw.settimeout(5)
            with contextlib.suppress(OSError):
                raw.connect((host, port))
            held.append(raw)
        assert _legit_get(storage, token) < 1.0
        # The cap bounds what one address holds; the rest was closed at accept.
        assert _fds(pid) - baseline <= CONNECTIONS_PER_CLIENT + 16
        # Stalled heads and refused uploads are cut within the timeouts (15 s idle, 10 s drain).
        deadline = time.monotonic() + 30
        while _fds(pid) - baseline > 8 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _fds(pid) - baseline <= 8
        assert _legit_get(storage, token) < 1.0
    finally:
        for sock in held:
            sock.close()
    assert not (storage.tree() / "up" / "stall").exists()
