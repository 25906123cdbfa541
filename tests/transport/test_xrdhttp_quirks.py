"""Our HTTP client against a loopback HTTPS server that reads requests the way XrdHttp 5.5.3
does (issue 15: the XRootD live smoke test lost jobs to "data server unreachable: ReadError").

XrdHttp finds a request's body length with a case-sensitive ``strcmp(key, "Content-Length")``
(``XrdHttpReq::parseLine``). A PUT whose header is spelled ``content-length`` (httpx's own
spelling when asked for it in lower case) is taken as empty: XRootD creates an empty file,
answers 200, then parses the body as the next request's header ("Corrupted header detected")
and drops the link, so the client's read fails with a reset or the next request on that
connection does. :class:`XrdHttpLike` reproduces exactly that parsing, so these tests fail with
the old header spelling, deterministically, without XRootD installed (tests/interop and the
live smoke test check the real daemon).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from scitokens_batch.live._tls import RunCA
from scitokens_batch.protocol import DataRequest, DataResponse
from scitokens_batch.tokens import Operation, SigningKey
from scitokens_batch.transport import http
from scitokens_batch.transport.http import HttpTransport, Peer, data_app

from .helpers import bearer, data_server, put_file, token

#: Upper bound on any one server start, stop or request in these tests.
WAIT = 10.0
#: XrdHttp 5.5.3 gives up on a header line longer than this ("line too long").
_MAX_LINE = 4096
_REQUEST_LINE = re.compile(r"[A-Z]+ /\S* HTTP/1\.1")


@attrs.define
class XrdHttpLike:
    """A TLS HTTP/1.1 server with XrdHttp 5.5.3's request parsing (see the module docstring).

    Attributes:
        files: path -> the bytes PUT there.
        connections: connections accepted.
        corrupted: connections dropped because a body was parsed as a header.
        drop_after: when set, a connection's request number ``drop_after + 1`` is read and the
            link closed without an answer (a server that has given the link up, as XRootD does
            after "Corrupted header detected"), to exercise the client's stale-connection retry.
    """

    files: dict[str, bytes] = attrs.field(factory=dict)
    connections: int = 0
    corrupted: int = 0
    drop_after: int | None = None

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the client closes it or a request is unreadable."""
        self.connections += 1
        buffer = bytearray()
        answered = 0

        async def fill() -> bool:
            data = await stream.receive_some(65536)
            buffer.extend(data)
            return bool(data)

        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    if b"\r\n" not in buffer and len(buffer) > _MAX_LINE:
                        self.corrupted += 1  # "Corrupted header detected, or line too long"
                        return
                    if not await fill():
                        return
                head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
                del buffer[: len(head) + 4]
                lines = head.decode("latin-1").split("\r\n")
                if not _REQUEST_LINE.fullmatch(lines[0]):
                    self.corrupted += 1
                    return
                if self.drop_after is not None and answered >= self.drop_after:
                    return
                method, path, _ = lines[0].split(" ")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name == "Content-Length":  # strcmp: case-sensitive, as XrdHttp 5.5.3
                        length = int(value.strip())
                if method == "PUT":
                    while len(buffer) < length:
                        if not await fill():
                            return
                    self.files[path] = bytes(buffer[:length])
                    del buffer[:length]
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n:-)")
                else:
                    body = self.files.get(path)
                    if body is None:
                        await stream.send_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                        )
                    else:
                        await stream.send_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                        )
                answered += 1
        except trio.BrokenResourceError:
            return
        finally:
            # XrdHttp closes the socket with whatever is unread in it: a reset for the client.
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def serving(server: XrdHttpLike, ca: RunCA) -> AsyncIterator[str]:
    """Run ``server`` over TLS on a free loopback port; yields its base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(ca.cert), str(ca.key))

    async def tls(stream: trio.SocketStream) -> None:
        wrapped = trio.SSLStream(stream, context, server_side=True)
        try:
            await wrapped.do_handshake()
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(stream)
            return
        await server.handle(wrapped)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, tls, listeners)
        try:
            yield f"https://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def run_ca(tmp_path_factory: pytest.TempPathFactory) -> RunCA:
    """A throw-away CA and server certificate for 127.0.0.1."""
    return RunCA.create(tmp_path_factory.mktemp("ca"))


async def _put(t: HttpTransport, path: str, size: int) -> DataResponse:
    answer = await t.request("node", "xrd", DataRequest(op=Operation.CREATE, path=path, size=size))
    assert isinstance(answer, DataResponse)
    return answer


async def test_puts_reach_a_case_sensitive_server_whole(
    run_ca: RunCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUTs in one buffer and streamed both carry a length XrdHttp 5.5.3 reads: every body
    arrives whole, on one kept-alive connection, with no stale-connection retry."""
    monkeypatch.setattr(http, "SMALL_BODY", 64 * 1024)  # 300 kB below is then streamed
    server = XrdHttpLike()
    async with serving(server, run_ca) as url:
        t = HttpTransport({"xrd": Peer("xrd", url, "data")}, ca_file=str(run_ca.ca), timeout=WAIT)
        try:
            with trio.fail_after(WAIT):
                small = await _put(t, "/vo/a.out", 100_000)
                streamed = await _put(t, "/vo/b.out", 300_000)
                read = await t.request(
                    "node", "xrd", DataRequest(op=Operation.READ, path="/vo/a.out", size=100_000)
                )
        finally:
            await t.aclose()
    assert isinstance(read, DataResponse)
    assert (small.status, streamed.status, read.status, read.size) == (200, 200, 200, 100_000)
    assert {p: len(b) for p, b in server.files.items()} == {
        "/vo/a.out": 100_000,
        "/vo/b.out": 300_000,
    }
    assert (server.connections, server.corrupted, t.stale_retries) == (1, 0, 0)


async def test_a_dropped_kept_alive_connection_is_retried_at_once(run_ca: RunCA) -> None:
    """A data request on a kept-alive link the server has given up (closed without an answer)
    is sent again once on a fresh connection and succeeds: the caller never sees Unreachable,
    so no execute host waits out its 30 s access retry for it."""
    server = XrdHttpLike(files={"/vo/a": b"a" * 1000}, drop_after=1)
    read = DataRequest(op=Operation.READ, path="/vo/a", size=1000)
    async with serving(server, run_ca) as url:
        t = HttpTransport({"xrd": Peer("xrd", url, "data")}, ca_file=str(run_ca.ca), timeout=WAIT)
        try:
            with trio.fail_after(WAIT):
                first = await t.request("node", "xrd", read)
                second = await t.request("node", "xrd", read)
        finally:
            await t.aclose()
    assert isinstance(first, DataResponse) and isinstance(second, DataResponse)
    assert (first.status, second.status, second.size) == (200, 200, 1000)
    assert (server.connections, t.stale_retries) == (2, 1)


async def test_tpc_push_reaches_a_case_sensitive_destination_whole(
    tmp_path: Path, es256_key: SigningKey, run_ca: RunCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our data server's HTTP-TPC push (its PUT to the Destination), in one buffer and
    streamed, carries a length XrdHttp 5.5.3 reads: the destination gets every byte."""
    monkeypatch.setattr(http, "SMALL_BODY", 64 * 1024)
    store = data_server(tmp_path / "src", es256_key)
    put_file(store.tree.root, "/vo/data/small", b"s" * 1000)
    put_file(store.tree.root, "/vo/data/large", b"L" * 300_000)
    server = XrdHttpLike()
    async with serving(server, run_ca) as url:
        context = ssl.create_default_context(cafile=str(run_ca.ca))
        async with httpx.AsyncClient(verify=context, timeout=WAIT) as push:
            app = data_app(
                "store",
                store.server.admit,
                store.tree,
                realm="store",
                pull=push,
                tpc_sources=(url,),
                marker_seconds=0.05,
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as client:
                for name in ("small", "large"):
                    with trio.fail_after(WAIT):
                        reply = await client.request(
                            "COPY",
                            f"/vo/data/{name}",
                            headers={
                                **bearer(token(es256_key, "storage.read:/data")),
                                "Destination": f"{url}/vo/in/{name}",
                            },
                        )
                    assert reply.status_code == 202
                    assert reply.text.splitlines()[-1] == "success: Created", reply.text
    assert server.files == {"/vo/in/small": b"s" * 1000, "/vo/in/large": b"L" * 300_000}
    assert server.corrupted == 0
