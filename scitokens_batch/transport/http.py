"""The HTTP(S) transport of live mode: an httpx client and the ASGI apps hypercorn serves.

Not imported by ``scitokens_batch.transport`` itself: virtual time never loads httpx. The live
layer imports this module explicitly.

The client (:class:`HttpTransport`) implements the same :class:`~._base.Transport` protocol as
the in-memory network, so the actors do not know which one they talk through. Each destination
is a :class:`Peer` of one kind, and each kind speaks the protocol the real systems speak
(``protocol/_wire.py``): OAuth2 forms and JSON for issuers, bearer-token HTTP for data servers
(ours or XRootD), JSON RPC between the batch-system actors. A refused or reset connection is
:class:`~._base.Unreachable`, exactly what the in-memory network raises for a down actor.

The server side (:func:`issuer_app`, :func:`data_app`, :func:`rpc_app`) turns HTTP requests into
messages for the actor's ``handle``; every app also answers ``GET`` :data:`HEALTH_PATH`.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import email.utils
import hashlib
import hmac
import html
import json
import logging
import math
import os
import re
import ssl
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, Protocol
from xml.sax.saxutils import escape as _xml_escape

import attrs
import httpcore
import httpx
import trio

from ..protocol import (
    Ack,
    AuthorizationResponse,
    ClientRegistrationResponse,
    DataRequest,
    DataResponse,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    JwksRequest,
    JwksResponse,
    Message,
    OAuthError,
    RevocationRequest,
    ThirdPartyCopy,
    TokenRequest,
    TokenResponse,
    UserinfoRequest,
    UserinfoResponse,
    rpcauth,
)
from ..protocol import wire as w
from ..tokens import Operation, PublicKey, Reason, Rejection, jwks_document, parse_jwks
from ._base import Unreachable

__all__ = [
    "DEFAULT_TPC_PORT",
    "HEALTH_PATH",
    "JOB_HEADER",
    "DataStore",
    "Escapes",
    "HttpTransport",
    "InsufficientStorage",
    "Peer",
    "RpcGuard",
    "data_app",
    "issuer_app",
    "rpc_app",
    "tpc_source_refusal",
]

#: Every service answers ``GET`` here with 200 and ``{"status": "ok", "actor": name}``.
HEALTH_PATH: Final = "/.well-known/scitokens-batch/health"
#: The job an access belongs to (for the events; real clients simply do not send it).
JOB_HEADER: Final = "x-scitokens-batch-job"
#: Which transfer a data access belongs to (FTS's ``<job>/<file>``), for the events.
TRANSFER_HEADER: Final = "x-scitokens-batch-transfer"
#: Which end refused a third-party copy: ``source`` or ``destination``.
SIDE_HEADER: Final = "x-scitokens-batch-side"
#: The size a third-party copy is expected to move (for the destination's decision and events).
SIZE_HEADER: Final = "x-scitokens-batch-size"
#: The body length of every PUT we send, spelled exactly so. XrdHttp 5.5.3 finds it with a
#: case-sensitive ``strcmp(key, "Content-Length")`` (``XrdHttpReq::parseLine``), though header
#: names are case-insensitive (RFC 9110 §5.1): sent as ``content-length`` it reads a length of
#: 0, creates an empty file, answers 200, then parses the body as the next request's header
#: ("Corrupted header detected") and drops the link, so the client's read fails with a
#: ``ReadError`` (a reset) or the next request on that connection does (issue 15).
LENGTH_HEADER: Final = "Content-Length"
#: Bytes per chunk when streaming file bodies.
CHUNK: Final = 256 * 1024
#: Uploads up to this size are sent as one buffer rather than streamed.
SMALL_BODY: Final = 8 * 1024 * 1024
#: The most a form or RPC body may hold.
MAX_BODY: Final = 1 << 20
#: The largest OAuth form (token, device authorization, revocation, approval) the issuer
#: reads; beyond it, 413 (a subject token is a few kB; nothing legitimate comes near 64 KiB).
MAX_FORM: Final = 64 << 10
#: The most request body read and dropped to answer before the body was read (a refusal).
DRAIN_LIMIT: Final = 1 << 32
#: Seconds a refusal waits for the rest of the request body before closing anyway: a client
#: that announced a large body and stalls (or drips) must not hold the connection.
DRAIN_SECONDS: Final = 10.0
#: The largest announced body read and dropped before a 507 (as large as the bodies our own
#: client sends in one piece); a larger or unannounced one is not read: the upload was refused
#: *because* of its size, the answer goes out at once and the connection is closed.
DRAIN_LIMIT_507: Final = 8 * 1024 * 1024
#: Seconds an upload may go without a byte before it is abandoned (408).
BODY_IDLE_TIMEOUT: Final = 30.0
#: The port of an ``https://`` URL without one.
DEFAULT_TPC_PORT: Final = 443
#: Seconds between two HTTP-TPC performance markers in a COPY's answer (XRootD sends one
#: every 5 s; gfal2 gives up on a copy whose markers stop for minutes).
TPC_MARKER_SECONDS: Final = 5.0
#: The most entries a ``PROPFIND`` with ``Depth: 1`` lists (the rest are left out).
PROPFIND_LIMIT: Final = 10_000
#: The most body a ``PROPFIND`` may carry (its ``<propfind>``: read and ignored, every
#: answer holds the same properties).
PROPFIND_BODY: Final = 64 << 10
#: Checksums kept per data server (one per file version and algorithm).
DIGEST_CACHE_SIZE: Final = 4096

_METHOD_OF: Final = {
    Operation.READ: "GET",
    Operation.STAT: "HEAD",
    Operation.CREATE: "PUT",
    Operation.MODIFY: "PUT",
    Operation.MKDIR: "MKCOL",
}

_log: Final = logging.getLogger(__name__)

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Any]],
    Awaitable[None],
]


@attrs.frozen
class Peer:
    """Where an actor is and what it speaks.

    Attributes:
        name: actor name.
        url: base URL: for an issuer its ``iss`` (``https://127.0.0.1:8443/vo``); for a data
            server or an RPC actor ``https://host:port``.
        kind: ``"issuer"``, ``"data"`` or ``"rpc"``.
        makes_parents: a data server whose third-party copies create the destination's
            parent directories (ours); False (XRootD 5.5.3): the client makes them first.
    """

    name: str
    url: str
    kind: str = attrs.field(validator=attrs.validators.in_(("issuer", "data", "rpc")))
    makes_parents: bool = True


#: Failures of a request on a connection the server had already closed.
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _max_age(header: str | None, default: float = 3600.0) -> float:
    match = re.search(r"max-age=(\d+)", header or "")
    return float(match.group(1)) if match else default


class _ViaBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting to a relay's port instead of some loopback ports
    (``HttpTransport.connect_via``)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, via: dict[int, int]) -> None:
        self.inner, self.via = inner, via

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        if host in ("127.0.0.1", "localhost"):
            port = self.via.get(port, port)
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@attrs.define
class HttpTransport:
    """The live :class:`~._base.Transport`: one pooled HTTPS client per process.

    Args:
        peers: every actor this process may talk to, by name.
        ca_file: the CA bundle to trust (the run's ``ca.pem``); None trusts the system store.
        timeout: seconds for connecting and for each read.
        rpc_tokens: this service's service token for each RPC peer it calls, by the peer's
            name (``protocol/_rpcauth.py``), sent as ``Authorization: Bearer``.
        connect_via: loopback port -> the port to connect to instead (a live ``partition``
            fault's relay, ``live/_relay.py``); URLs, ``Host`` and TLS names are unchanged.
    """

    peers: Mapping[str, Peer]
    ca_file: str | None = None
    timeout: float = 30.0
    rpc_tokens: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    connect_via: Mapping[int, int] = attrs.field(factory=dict)
    _client: httpx.AsyncClient | None = attrs.field(default=None, alias="_client")
    #: data requests tried again after a kept-alive connection turned out closed
    stale_retries: int = attrs.field(default=0, init=False)

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared client, made on first use (inside the event loop)."""
        if self._client is None:
            self._client = self._new_client(
                httpx.Limits(max_connections=256, max_keepalive_connections=64)
            )
        return self._client

    def _fresh_client(self) -> httpx.AsyncClient:
        """A client with no pooled connection (one request, then closed)."""
        return self._new_client(httpx.Limits())

    def _new_client(self, limits: httpx.Limits) -> httpx.AsyncClient:
        verify = ssl.create_default_context(cafile=self.ca_file)
        if not self.connect_via:
            return httpx.AsyncClient(
                verify=verify,
                timeout=httpx.Timeout(self.timeout),
                limits=limits,
                headers={"user-agent": "scitokens-batch"},
            )
        transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
        # httpx has no public knob for where a connection goes; its pool (httpcore) takes a
        # network backend, which we wrap so that only the TCP connect is redirected.
        pool = transport._pool
        pool._network_backend = _ViaBackend(pool._network_backend, dict(self.connect_via))
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.timeout),
            headers={"user-agent": "scitokens-batch"},
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(self, src: str, dest: str, message: Message) -> Message:
        """Send ``message`` to ``dest`` over HTTP(S); see the module docstring."""
        peer = self.peers.get(dest)
        if peer is None:
            raise Unreachable(src, dest, "unknown")
        try:
            try:
                return await self._request(src, peer, message)
            except _STALE:
                if not isinstance(message, DataRequest):
                    raise
                # A kept-alive connection the server had closed or given up: GET, HEAD and PUT
                # are idempotent, so try once more, at once, on a new connection, as browsers
                # and curl do (tests/transport/test_xrdhttp_quirks.py). Never for OAuth
                # posts: a replayed refresh could burn a single-use refresh token.
                self.stale_retries += 1
            async with self._fresh_client() as fresh:
                return await self._data(peer, message, client=fresh)
        except (httpx.TransportError, ssl.SSLError) as exc:
            # Refused, reset, timed out or cut: the same as a down actor in virtual time.
            why = "timeout" if isinstance(exc, httpx.TimeoutException) else "down"
            raise Unreachable(src, dest, why, detail=f"{type(exc).__name__}: {exc}") from exc

    async def _request(self, src: str, peer: Peer, message: Message) -> Message:
        if isinstance(message, DataRequest):
            return await self._data(peer, message)
        if isinstance(message, ThirdPartyCopy):
            return await self._copy(src, peer, message)
        if peer.kind == "rpc":
            headers = {"content-type": "application/json"}
            token = self.rpc_tokens.get(peer.name)
            if token is not None:
                headers["authorization"] = f"Bearer {token}"
            reply = await self.client.post(
                peer.url + "/rpc", content=w.encode_rpc(message), headers=headers
            )
            if reply.status_code in (401, 403):
                # Refused by the peer's RPC authorization: no answer, and worth a log line
                # (a wiring error: a missing or wrong service token, never a passing fault).
                _log.warning(
                    "%s -> %s: %s refused (%s)",
                    src,
                    peer.name,
                    type(message).__name__,
                    reply.status_code,
                )
            if reply.status_code != 200:
                # The actor is up but could not answer (a 500): to the caller, no answer.
                raise Unreachable(src, peer.name, f"http {reply.status_code}")
            return w.decode_rpc(reply.content)
        return await self._oauth(peer, message)

    async def _oauth(self, peer: Peer, message: Message) -> Message:
        base = peer.url
        form = {"content-type": "application/x-www-form-urlencoded"}
        if isinstance(message, JwksRequest):
            return await self._jwks(message.issuer)
        if isinstance(message, TokenRequest):
            body, headers = w.token_request_form(message)
            reply = await self.client.post(base + "/token", content=body, headers=form | headers)
            return w.decode_token_response(reply.status_code, reply.content)
        if isinstance(message, DeviceAuthorizationRequest):
            body, headers = w.device_authorization_form(message)
            reply = await self.client.post(
                base + "/device_authorization", content=body, headers=form | headers
            )
            return w.decode_device_authorization_response(reply.status_code, reply.content)
        if isinstance(message, RevocationRequest):
            body, headers = w.revocation_form(message)
            reply = await self.client.post(base + "/revoke", content=body, headers=form | headers)
            return w.decode_ack_or_error(reply.status_code, reply.content)
        if isinstance(message, DeviceApproval):
            reply = await self.client.post(
                base + "/device", content=w.device_approval_form(message), headers=form
            )
            return w.decode_ack_or_error(reply.status_code, reply.content)
        raise TypeError(f"{type(message).__name__} is not an issuer request")

    async def _jwks(self, issuer: str) -> Message:
        """D2: ``<iss>/.well-known/openid-configuration`` -> ``jwks_uri`` -> keys."""
        meta = await self.client.get(issuer + "/.well-known/openid-configuration")
        if meta.status_code != 200:
            return OAuthError(error="discovery_failed", status=meta.status_code)
        try:
            jwks_uri = meta.json()["jwks_uri"]
            keys_reply = await self.client.get(str(jwks_uri))
            if keys_reply.status_code != 200:
                return OAuthError(error="jwks_failed", status=keys_reply.status_code)
            keys = parse_jwks(keys_reply.json(), source=str(jwks_uri))
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            # A broken document (JSON nested thousands deep included) is a failed fetch, never
            # a crash of the data server.
            return OAuthError(error="jwks_failed", description=type(exc).__name__, status=502)
        return JwksResponse(keys=keys, max_age=_max_age(keys_reply.headers.get("cache-control")))

    async def _copy(self, src: str, peer: Peer, msg: ThirdPartyCopy) -> DataResponse:
        """HTTP-TPC pull: ``COPY`` to the destination with the source's URL in ``Source``;
        push (``msg.destination`` set): ``COPY`` to the source with ``Destination``."""
        if msg.destination is not None:
            return await self._push(src, peer, msg, msg.destination)
        source = self.peers.get(msg.source)
        if source is None:
            raise Unreachable(src, msg.source, "unknown")
        if not (source.url.startswith("https://") and peer.url.startswith("https://")):
            # The tokens would cross the network in clear text (to the destination, or from
            # it to the source): refused before anything is sent.
            return DataResponse(
                status=400,
                detail=f"third-party copy between {peer.url} and {source.url}: https only",
                side="source",
            )
        headers = {
            "Source": source.url + urllib.parse.quote(msg.source_path),
            SIZE_HEADER: str(msg.size),
            TRANSFER_HEADER: msg.transfer,
        }
        if msg.destination_token is not None:
            headers["Authorization"] = f"Bearer {msg.destination_token}"
        if msg.source_token is not None:
            headers["TransferHeaderAuthorization"] = f"Bearer {msg.source_token}"
        url = peer.url + urllib.parse.quote(msg.destination_path)
        if not peer.makes_parents:
            await self._make_parents(peer, msg.destination_path, msg.destination_token)
        # A copy takes as long as the bytes do: no read timeout beyond the copy's own.
        reply = await self.client.request(
            "COPY", url, headers=headers, timeout=httpx.Timeout(self.timeout, read=None)
        )
        if reply.status_code == 202:
            # WLCG HTTP-TPC: the outcome is the last line of the streamed marker body.
            return tpc_outcome(reply.text, msg.size)
        answer = _data_response(reply.status_code, reply.headers, reply.content, msg.size)
        side = reply.headers.get(SIDE_HEADER)
        return attrs.evolve(answer, side=side) if side is not None else answer

    async def _make_parents(self, peer: Peer, path: str, token: str | None) -> None:
        """MKCOL each ancestor of ``path``, top down, answers ignored (FTS through gfal2 does
        the same): one that exists or may not be made leaves the copy to say what is wrong."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        parts = [p for p in path.split("/") if p][:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:depth])
            await self.client.request(
                "MKCOL", peer.url + urllib.parse.quote(parent), headers=headers
            )

    async def _push(self, src: str, peer: Peer, msg: ThirdPartyCopy, dest: str) -> DataResponse:
        destination = self.peers.get(dest)
        if destination is None:
            raise Unreachable(src, dest, "unknown")
        if not (destination.url.startswith("https://") and peer.url.startswith("https://")):
            return DataResponse(
                status=400,
                detail=f"third-party copy between {peer.url} and {destination.url}: https only",
                side="destination",
            )
        headers = {
            "Destination": destination.url + urllib.parse.quote(msg.destination_path),
            TRANSFER_HEADER: msg.transfer,
        }
        if msg.source_token is not None:
            headers["Authorization"] = f"Bearer {msg.source_token}"
        if msg.destination_token is not None:
            headers["TransferHeaderAuthorization"] = f"Bearer {msg.destination_token}"
        url = peer.url + urllib.parse.quote(msg.source_path)
        reply = await self.client.request(
            "COPY", url, headers=headers, timeout=httpx.Timeout(self.timeout, read=None)
        )
        if reply.status_code == 202:
            return tpc_outcome(reply.text, msg.size)
        answer = _data_response(reply.status_code, reply.headers, reply.content, msg.size)
        side = reply.headers.get(SIDE_HEADER) or "source"
        return attrs.evolve(answer, side=side)

    async def _data(
        self, peer: Peer, req: DataRequest, *, client: httpx.AsyncClient | None = None
    ) -> DataResponse:
        client = client or self.client
        method = _METHOD_OF.get(req.op)
        if method is None:
            raise TypeError(f"no HTTP method for {req.op}")
        url = peer.url + urllib.parse.quote(req.path)
        headers = {}
        if req.token is not None:
            headers["Authorization"] = f"Bearer {req.token}"  # F3
        if req.job is not None:
            headers[JOB_HEADER] = str(req.job)
        if req.transfer is not None:
            headers[TRANSFER_HEADER] = req.transfer
        if method == "PUT":
            headers[LENGTH_HEADER] = str(req.size)  # never chunked: XrdHttp needs the length
            body = bytes(req.size) if req.size <= SMALL_BODY else _zeros(req.size)
            reply = await client.request(method, url, content=body, headers=headers)
            return _data_response(reply.status_code, reply.headers, reply.content, req.size)
        async with client.stream(method, url, headers=headers) as reply:
            # One pass over the body: counted on success, its start kept for a refusal.
            moved = 0
            detail = bytearray()
            async for chunk in reply.aiter_raw():
                moved += len(chunk)
                if not reply.is_success and len(detail) < _DETAIL_BYTES:
                    detail += chunk[: _DETAIL_BYTES - len(detail)]
            if not reply.is_success:
                moved = 0
            return _data_response(reply.status_code, reply.headers, bytes(detail), moved)


async def _zeros(size: int) -> AsyncIterator[bytes]:
    block = bytes(min(size, CHUNK))
    left = size
    while left > 0:
        chunk = block if left >= len(block) else block[:left]
        left -= len(chunk)
        yield chunk


#: How much of a refusal's body is kept for its detail.
_DETAIL_BYTES: Final = 200

_FAILURE_LINE: Final = re.compile(r"(\d{3}) (source|destination): (.*)")


def tpc_outcome(body: str, size: int) -> DataResponse:
    """The outcome of an HTTP-TPC ``COPY`` answered 202: its last ``success:`` or
    ``failure:`` line (WLCG HTTP-TPC; ours writes ``failure: <status> <side>: <detail>``,
    other servers free text, taken as 500). No outcome line (the connection ended early) is
    502: the copy's state is unknown, as gfal2 reports it."""
    for line in reversed(body.splitlines()):
        line = line.strip()
        if line.startswith("success:"):
            return DataResponse(status=201, size=size)
        if line.startswith("failure:"):
            text = line.removeprefix("failure:").strip()
            found = _FAILURE_LINE.fullmatch(text)
            if found is None:
                return DataResponse(status=500, detail=text[:_DETAIL_BYTES])
            return DataResponse(
                status=int(found[1]), detail=found[3][:_DETAIL_BYTES], side=found[2]
            )
    return DataResponse(status=502, detail="third-party copy ended without an outcome line")


def _data_response(status: int, headers: httpx.Headers, body: bytes, moved: int) -> DataResponse:
    if 200 <= status < 300:
        return DataResponse(status=status, size=moved)
    # A server that does not say why (XRootD answers a bare 403 to every refusal) leaves the
    # reason None; ours names it at the start of error_description.
    _, reason, description = w.parse_bearer_challenge(headers.get("www-authenticate"))
    detail = description or _error_description(body)
    return DataResponse(status=status, reason=reason, detail=detail)


def _error_description(body: bytes) -> str:
    """``error_description`` of a JSON error body (ours), else the start of the body as text."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # a peer's body nested thousands deep too
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error_description"), str):
        return str(doc["error_description"])
    return body[:_DETAIL_BYTES].decode("utf-8", "replace").strip()


# -- the server side ---------------------------------------------------------------------------

Handler = Callable[[Message], Awaitable[Message]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _TooLarge(Exception):
    pass


class Escapes(PermissionError):
    """A server path that would leave the data tree: a symbolic link on the way (the store
    never follows one). Answered 403."""


class InsufficientStorage(OSError):
    """An upload that would exceed the data server's quota or eat its free-space margin.
    Answered 507 (RFC 4918 §11.5)."""


async def _read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not event.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    content_length: int | None = None,
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if status != 204:  # RFC 9110 §8.6: a 204 MUST NOT carry Content-Length
        length = len(body) if content_length is None else content_length
        raw.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, doc: Any, headers: Mapping[str, str] | None = None
) -> None:
    await _respond(
        send,
        status,
        json.dumps(doc).encode(),
        {"content-type": "application/json", **(headers or {})},
    )


def _header(scope: Mapping[str, Any], name: str) -> str | None:
    key = name.encode()
    for k, v in scope.get("headers", ()):
        if k.lower() == key:
            return bytes(v).decode("latin-1")
    return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _app(name: str, route: Callable[[dict[str, Any], Receive, Send], Awaitable[None]]) -> ASGIApp:
    """Common frame: lifespan, health, body limits, and 500 on a bug (never a traceback out)."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == HEALTH_PATH:
            await _json(send, 200, {"status": "ok", "actor": name})
            return
        started = False
        body_done = False

        async def tracked_receive() -> dict[str, Any]:
            nonlocal body_done
            event = await receive()
            if event["type"] == "http.disconnect" or not event.get("more_body", False):
                body_done = True
            return event

        async def tracked_send(event: dict[str, Any]) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
                # An answer before the request body was read (a refused upload, a 413): read
                # the rest and drop it first. hypercorn closes the connection as soon as the
                # answer is complete, and closing with unread bytes resets it; a client still
                # sending (httpx sends the whole body before reading) would then see a broken
                # connection instead of the 401/403.
                # Bounded in bytes and in time: a client that announced a large body and then
                # stalls is cut off (hypercorn closes the connection after the answer).
                limit = DRAIN_LIMIT
                if event["status"] == 507:
                    # Refused for its size: a small body is still read (so the client, which
                    # sends it before reading, sees the 507), a large one is not waited for.
                    announced = _header(scope, "content-length") or ""
                    fits = announced.isdigit() and int(announced) <= DRAIN_LIMIT_507
                    limit = int(announced) if fits else 0
                drained = 0
                with trio.move_on_after(DRAIN_SECONDS):
                    while not body_done and drained < limit:
                        drained += len((await tracked_receive()).get("body", b""))
            await send(event)

        try:
            await route(scope, tracked_receive, tracked_send)
        except _TooLarge:
            await _json(
                tracked_send, 413, {"error": "invalid_request", "error_description": "too large"}
            )
        except Exception:
            # A bug in a handler or the store: logged here, a bare 500 for the client (the
            # exception text may hold anything). Once the answer has started there is no
            # status left to change: the server cuts the connection.
            _log.exception("%s: %s %s failed", name, scope["method"], scope["path"])
            if started:
                raise
            await _json(tracked_send, 500, {"error": "server_error"})

    return app


_NO_STORE: Final = {"cache-control": "no-store", "pragma": "no-cache"}  # RFC 6749 §5.1


async def _oauth_answer(send: Send, answer: Message, *, basic: bool) -> None:
    if isinstance(answer, ClientRegistrationResponse):
        await _json(send, 201, w.registration_body(answer), _NO_STORE)  # RFC 7591 §3.2.1
    elif isinstance(answer, AuthorizationResponse):
        # RFC 6749 §4.1.2: the user agent goes back to the client with the code (or error).
        location = w.authorization_redirect(answer)
        await _respond(send, 302, headers={"location": location, **_NO_STORE})
    elif isinstance(answer, TokenResponse):
        await _json(send, 200, w.token_response_body(answer), _NO_STORE)
    elif isinstance(answer, DeviceAuthorizationResponse):
        await _json(send, 200, w.device_authorization_body(answer), _NO_STORE)
    elif isinstance(answer, Ack):
        if answer.ok:
            await _json(send, 200, {})
        else:
            await _json(send, 400, {"error": "invalid_request", "error_description": answer.detail})
    elif isinstance(answer, OAuthError):
        headers = dict(_NO_STORE)
        if answer.status == 401 and basic:
            headers["www-authenticate"] = 'Basic realm="token endpoint"'  # RFC 6749 §5.2
        if answer.status == 503:
            headers["retry-after"] = "1"
        await _json(send, answer.status, w.oauth_error_body(answer), headers)
    else:
        raise TypeError(f"issuer answered {type(answer).__name__}")


async def _authorize_page(scope: dict[str, Any], handler: Handler, send: Send) -> None:
    """``GET /authorize`` (RFC 6749 §4.1.1): the issuer checks the request; a good one gets
    the consent page (the user logs in with their password and approves, as on the device
    page), whose form posts the same parameters back with ``user``, ``password``, ``approve``.
    """
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_FORM:
        raise _TooLarge
    try:
        request = w.decode_authorization(w.parse_form(raw), consent=False)
    except w.WireError as exc:
        await _oauth_answer(send, OAuthError(error=exc.error, description=str(exc)), basic=False)
        return
    answer = await handler(request)
    if not isinstance(answer, AuthorizationResponse) or answer.error is not None:
        await _oauth_answer(send, answer, basic=False)
        return
    hidden = "".join(
        f'<input type=hidden name={name} value="{html.escape(value)}">'
        for name, value in w.parse_form(raw).items()
    )
    page = (
        "<!doctype html><title>Authorize</title><form method=post>"
        f"<p>{html.escape(request.client_id)} asks for {html.escape(request.scope or '')}</p>"
        f"{hidden}User <input name=user> Password <input type=password name=password>"
        "<button name=approve value=yes>Approve</button>"
        "<button name=approve value=no>Deny</button></form>"
    )
    headers = {"content-type": "text/html", "x-frame-options": "DENY", **_NO_STORE}
    await _respond(send, 200, page.encode(), headers)


async def _userinfo(scope: dict[str, Any], handler: Handler, send: Send, method: str) -> None:
    """OpenID Connect Core §5.3: ``GET``/``POST /userinfo`` with ``Authorization: Bearer``;
    refusals carry RFC 6750 §3's ``WWW-Authenticate: Bearer`` (the form-body token of §2.2
    is not taken: oidc-agent and IAM's clients send the header)."""
    if method not in ("GET", "POST"):
        await _respond(send, 405, headers={"allow": "GET, POST"})
        return
    authorization = _header(scope, "authorization") or ""
    kind, _, token = authorization.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        # RFC 6750 §3.1: no credentials at all: a bare challenge, no error code.
        await _respond(send, 401, headers={"www-authenticate": 'Bearer realm="userinfo"'})
        return
    answer = await handler(UserinfoRequest(token=token.strip()))
    if isinstance(answer, UserinfoResponse):
        await _json(send, 200, w.userinfo_body(answer), _NO_STORE)
        return
    if not isinstance(answer, OAuthError):
        raise TypeError(f"issuer answered UserinfoRequest with {type(answer).__name__}")
    challenge = f'Bearer realm="userinfo", error="{answer.error}"'
    await _json(send, answer.status, w.oauth_error_body(answer), {"www-authenticate": challenge})


@attrs.define
class _Buckets:
    """A token bucket per client address (``rate`` a second, a burst of ``rate``), on trio's
    clock; addresses idle long enough to have a full bucket are forgotten."""

    rate: float
    _levels: dict[str, tuple[float, float]] = attrs.field(factory=dict, alias="_levels")

    def take(self, address: str) -> float:
        """Take one token for ``address``: 0 when there was one, else seconds to wait."""
        now = trio.current_time()
        if len(self._levels) > 4096:  # bounded: drop the buckets that are full again
            self._levels = {
                a: (lvl, t)
                for a, (lvl, t) in self._levels.items()
                if lvl + (now - t) * self.rate < self.rate
            }
        level, then = self._levels.get(address, (self.rate, now))
        level = min(self.rate, level + (now - then) * self.rate)
        if level < 1.0:
            self._levels[address] = (level, now)
            return (1.0 - level) / self.rate
        self._levels[address] = (level - 1.0, now)
        return 0.0


def issuer_app(
    name: str,
    url: str,
    handler: Handler,
    discovery: Callable[[], Mapping[str, Any]],
    *,
    jwks_max_age: int | None = None,
    per_address_rate: float | None = None,
    admin: AdminHandler | None = None,
    admin_secret: str | None = None,
) -> ASGIApp:
    """The issuer's HTTPS face (D2, D3, D5; K1-K4; RFC 7009; RFC 8628).

    Routes, under the path of ``url`` (an issuer ``https://host/vo`` serves ``/vo/...``):
    ``GET /.well-known/openid-configuration`` (also the RFC 8414 forms at the host root),
    ``GET /jwks``, ``POST /token``, ``POST /device_authorization``, ``POST /revoke``,
    ``GET``/``POST /device`` (the user's approval page).

    The JWKS goes out with ``Cache-Control: max-age`` of the handler's
    :class:`JwksResponse` (D4), unless ``jwks_max_age`` overrides it.

    Forms larger than :data:`MAX_FORM` are refused with 413 before they are parsed. With
    ``per_address_rate``, each client address has a token bucket of that many requests a
    second (a burst of as many) on the form endpoints; beyond it: 429 with ``Retry-After``
    (RFC 6585 §4), before the request is read.

    With ``admin`` and ``admin_secret``, ``POST {ADMIN_PATH}<op>`` (a JSON object) reaches the
    issuer's admin interface (:func:`_admin_route`); without them the path is 404.
    """
    prefix = urllib.parse.urlsplit(url).path.rstrip("/")
    buckets = _Buckets(per_address_rate) if per_address_rate is not None else None
    meta_paths = {
        f"{prefix}/.well-known/openid-configuration",
        f"/.well-known/openid-configuration{prefix}",
        f"/.well-known/oauth-authorization-server{prefix}",
    }

    async def route(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if path.startswith(ADMIN_PATH) and admin is not None and admin_secret:
            await _admin_route(scope, receive, send, admin, admin_secret)
            return
        if method == "GET" and path in meta_paths:
            await _json(send, 200, dict(discovery()), {"cache-control": "public, max-age=3600"})
            return
        if method == "GET" and path == f"{prefix}/jwks":
            answer = await handler(JwksRequest(issuer=url))
            if isinstance(answer, OAuthError):
                await _oauth_answer(send, answer, basic=False)
                return
            if not isinstance(answer, JwksResponse):
                raise TypeError(f"issuer answered JwksRequest with {type(answer).__name__}")
            max_age = round(answer.max_age) if jwks_max_age is None else jwks_max_age
            await _json(
                send,
                200,
                jwks_document(answer.keys),
                {"cache-control": f"public, max-age={max_age}"},  # D4
            )
            return
        if path == f"{prefix}/userinfo":
            await _userinfo(scope, handler, send, method)
            return
        if path == f"{prefix}/authorize" and method == "GET":
            await _authorize_page(scope, handler, send)
            return
        if method == "GET" and path == f"{prefix}/device":
            page = (
                "<!doctype html><title>Device login</title><form method=post>"
                "User code <input name=user_code> User <input name=user>"
                " Password <input type=password name=password>"
                "<button name=approve value=yes>Approve</button>"
                "<button name=approve value=no>Deny</button></form>"
            )
            await _respond(send, 200, page.encode(), {"content-type": "text/html"})
            return
        decoders: dict[str, Callable[[bytes, str | None], Message]] = {
            f"{prefix}/token": w.decode_token_request,
            f"{prefix}/device_authorization": w.decode_device_authorization,
            f"{prefix}/revoke": w.decode_revocation,
            f"{prefix}/device": lambda body, _auth: w.decode_device_approval(body),
            f"{prefix}/authorize": lambda body, _auth: w.decode_authorization(
                w.parse_form(body), consent=True
            ),
            # RFC 7591 §3.1 (JSON); the issuer answers 404 unless the scenario enables it.
            f"{prefix}/register": lambda body, _auth: w.decode_registration(body),
        }
        decode = decoders.get(path)
        if decode is None:
            await _json(send, 404, {"error": "not_found"})
            return
        if method != "POST":
            await _respond(send, 405, headers={"allow": "POST"})
            return
        if buckets is not None:
            wait = buckets.take((scope.get("client") or ("?",))[0])
            if wait > 0:
                await _json(
                    send,
                    429,
                    {"error": "temporarily_unavailable", "error_description": "too many requests"},
                    {"retry-after": str(math.ceil(wait)), **_NO_STORE},
                )
                return
        authorization = _header(scope, "authorization")
        basic = (authorization or "").lower().startswith("basic")
        try:
            message = decode(await _read_body(receive, MAX_FORM), authorization)
        except w.WireError as exc:
            status = 401 if exc.error == "invalid_client" else 400
            await _oauth_answer(
                send, OAuthError(error=exc.error, description=str(exc), status=status), basic=basic
            )
            return
        await _oauth_answer(send, await handler(message), basic=basic)

    return _app(name, route)


#: The issuer's admin interface: ``POST {ADMIN_PATH}<operation>`` (``Issuer.admin``).
ADMIN_PATH: Final = "/.scitokens-batch/admin/"
#: The header carrying the run's admin secret (never ``Authorization``: no bearer token, a
#: user's or a service's, can ever be taken for it).
ADMIN_HEADER: Final = "x-scitokens-batch-admin"
#: (operation, JSON arguments) -> (status, JSON answer).
AdminHandler = Callable[[str, Mapping[str, Any]], Awaitable[tuple[int, Mapping[str, Any]]]]


def _is_loopback(host: str) -> bool:
    return host == "::1" or host.startswith("127.")


async def _admin_route(
    scope: dict[str, Any], receive: Receive, send: Send, admin: AdminHandler, secret: str
) -> None:
    """The issuer's admin interface: loopback clients only, the per-run secret in
    :data:`ADMIN_HEADER` (compared in constant time), a JSON object of at most
    :data:`MAX_FORM` bytes. Anything else is refused before the body is read: 404 from
    elsewhere than loopback (it does not exist there), 401 without the right secret (a bearer
    token is never looked at), 405 for another method than POST."""
    client = (scope.get("client") or ("",))[0]
    if not _is_loopback(str(client)):
        await _json(send, 404, {"error": "not_found"})
        return
    given = _header(scope, ADMIN_HEADER) or ""
    if not hmac.compare_digest(given.encode(), secret.encode()):
        await _json(send, 401, {"error": "admin secret required"}, _NO_STORE)
        return
    if scope["method"] != "POST":
        await _respond(send, 405, headers={"allow": "POST"})
        return
    op = scope["path"][len(ADMIN_PATH) :]
    try:
        args = json.loads(await _read_body(receive, MAX_FORM) or b"{}")
    except ValueError:
        args = None
    if not isinstance(args, dict):
        await _json(send, 400, {"error": "expected a JSON object"}, _NO_STORE)
        return
    status, answer = await admin(op, args)
    await _json(send, status, dict(answer), _NO_STORE)


@attrs.frozen
class RpcGuard:
    """Who may call an RPC service (``protocol/_rpcauth.py``).

    Attributes:
        name: the service's actor name: the ``aud`` its callers' service tokens must carry.
        role: its role, the row of :data:`~scitokens_batch.protocol.rpcauth.RPC_CALLERS`.
        keys: the pool's public key(s) service tokens are checked with.
        now: the wall clock (unix seconds).
    """

    name: str
    role: str
    keys: tuple[PublicKey, ...]
    now: Callable[[], float] = attrs.field(eq=False)
    #: tokens already verified (a service sees one per caller): an ES256 verification is
    #: ~80 us, about half of an in-process call; bounded, and only good tokens get in
    _verified: dict[str, rpcauth.ServiceIdentity] = attrs.field(
        factory=dict, eq=False, repr=False, alias="_verified"
    )

    def check(self, token: str) -> rpcauth.ServiceIdentity | Rejection:
        """Who presents ``token`` (see :func:`~scitokens_batch.protocol.rpcauth.
        check_service_token`), remembering good tokens until they expire."""
        now = self.now()
        known = self._verified.get(token)
        if known is not None and known.still_valid(now):
            return known
        checked = rpcauth.check_service_token(token, keys=self.keys, audience=self.name, now=now)
        if isinstance(checked, rpcauth.ServiceIdentity):
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[token] = checked
        return checked


#: Verified service tokens an RPC service remembers.
_VERIFIED_MAX: Final = 256


async def _rpc_refuse(send: Send, status: int, error: str, detail: str) -> None:
    headers = {}
    if status == 401:
        headers["www-authenticate"] = f'Bearer realm="rpc", error="{error}"'
    await _json(send, status, {"error": error, "error_description": detail}, headers)


def rpc_app(name: str, handler: Handler, guard: RpcGuard | None = None) -> ASGIApp:
    """``POST /rpc`` with one JSON envelope in and one out (``protocol/_wire.py``).

    With ``guard`` (every live service has one), a call must carry a service token for this
    service, valid under the pool key: none or an invalid one is 401 (before the body is
    read); a caller whose role may not send this message type here is 403. Without ``guard``
    (in-process tests only) every call is taken.
    """

    async def route(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["path"] != "/rpc":
            await _json(send, 404, {"error": "not_found"})
            return
        if scope["method"] != "POST":
            await _respond(send, 405, headers={"allow": "POST"})
            return
        caller: rpcauth.ServiceIdentity | None = None
        if guard is not None:
            token = _bearer(scope)
            if token is None:
                _log.warning("%s: rpc call without a service token refused", name)
                await _rpc_refuse(send, 401, "invalid_token", "a service token is required")
                return
            checked = guard.check(token)
            if isinstance(checked, Rejection):
                _log.warning("%s: rpc service token refused: %s", name, checked.detail)
                await _rpc_refuse(send, 401, "invalid_token", checked.detail)
                return
            caller = checked
        try:
            message = w.decode_rpc(await _read_body(receive))
        except w.WireError as exc:
            await _json(send, 400, {"error": "invalid_request", "error_description": str(exc)})
            return
        if guard is not None and caller is not None:
            kind = type(message).__name__
            if not rpcauth.rpc_allowed(guard.role, kind, caller.role):
                _log.warning(
                    "%s: %s from %s (%s, jti %s) refused",
                    name,
                    kind,
                    caller.name,
                    caller.role,
                    caller.jti,
                )
                await _rpc_refuse(
                    send,
                    403,
                    "insufficient_scope",
                    f"role {caller.role} may not send {kind} to role {guard.role}",
                )
                return
        answer = await handler(message)
        await _respond(send, 200, w.encode_rpc(answer), {"content-type": "application/json"})

    return _app(name, route)


class DataStore(Protocol):
    """The bytes behind a data server (live mode: a directory tree).

    Paths are server paths; a store refuses any that would leave its tree (:class:`Escapes`).
    """

    def size(self, path: str) -> int | None:
        """The size of the file at ``path``; None when there is no file there."""
        ...

    def is_dir(self, path: str) -> bool:
        """A directory exists at ``path``."""
        ...

    def read(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes, in chunks."""
        ...

    async def write(
        self,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        overwrite: Callable[[], bool],
        expected: int | None = None,
    ) -> bool:
        """Store ``chunks`` at ``path`` atomically, deciding create-vs-overwrite at commit.

        Args:
            path: the server path.
            chunks: the body.
            overwrite: asked at commit time when a file holds the name: may it be replaced?
                (False: :class:`FileExistsError`, and nothing is written.)
            expected: the announced size, checked against the space before the first byte.

        Returns:
            True for a new file, False for a replaced one.

        Raises:
            InsufficientStorage: the quota or free space would be exceeded.
            FileExistsError: a file is at ``path`` and ``overwrite`` said no.
        """
        ...

    def delete(self, path: str) -> bool:
        """Remove the file; False when there was none."""
        ...

    def mkdir(self, path: str) -> bool:
        """Create the directory (and parents, B7); False when it existed."""
        ...

    def stat(self, path: str) -> os.stat_result | None:
        """The file's or directory's status; None when neither is there."""
        ...

    def listdir(self, path: str, limit: int) -> list[tuple[str, os.stat_result]]:
        """The directory's entries (name, status), by name, at most ``limit``."""
        ...

    def rmdir(self, path: str) -> bool:
        """Remove the empty directory; False when there is none (``OSError`` ENOTEMPTY when
        it is not empty)."""
        ...

    def check_space(self, incoming: int) -> None:
        """Raise :class:`InsufficientStorage` when ``incoming`` more bytes do not fit."""
        ...


_OPS: Final = {
    "GET": Operation.READ,
    "HEAD": Operation.STAT,
    "PUT": Operation.CREATE,
    "DELETE": Operation.MODIFY,
    "MKCOL": Operation.MKDIR,
    # WebDAV listing and stat (RFC 4918 §9.1): authorized as a read of the path, as XRootD
    # and dCache do (storage.read / read).
    "PROPFIND": Operation.STAT,
}


def _bearer(scope: Mapping[str, Any]) -> str | None:
    header = _header(scope, "authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a URL without user info; None when it has none such."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or (DEFAULT_TPC_PORT if scheme == "https" else 80)


def tpc_source_refusal(
    source: str, allowed: tuple[str, ...], *, header: str = "Source"
) -> str | None:
    """Why a third-party copy may not pull from ``source``; None when it may.

    Only ``https://`` sources are fetched (the source token goes in their ``Authorization``),
    and only from an origin in ``allowed``: ``"https://host:port"`` (port 443 when absent), or
    ``"https://*.example.org:port"`` for every host under a domain. The comparison is on the
    parsed scheme, host and port, never on a string prefix (``https://a@b`` is host ``b``).
    A push copy's ``Destination`` passes the same rule (``header`` names it in the answer).
    """
    origin = _origin(source)
    if origin is None:
        return f"{header} is not a URL with a host"
    scheme, host, port = origin
    if scheme != "https":
        return f"{header} must be https:// (the other end's token is never sent in clear text)"
    for entry in allowed:
        want = _origin(entry.replace("*.", "wildcard.", 1))
        if want is None or want[0] != "https" or want[2] != port:
            continue
        if entry.split("://", 1)[-1].startswith("*."):
            domain = want[1].removeprefix("wildcard")
            if host.endswith(domain):
                return None
        elif want[1] == host:
            return None
    return f"{header} {scheme}://{host}:{port} is not an allowed third-party-copy peer"


def data_app(
    name: str,
    admit: Callable[[DataRequest], Awaitable[DataResponse]],
    store: DataStore,
    *,
    realm: str,
    pull: httpx.AsyncClient | None = None,
    tpc_sources: tuple[str, ...] = (),
    may_overwrite: Callable[[DataRequest], bool] | None = None,
    refuse_overwrite: Callable[[DataRequest], DataResponse] | None = None,
    marker_seconds: float = TPC_MARKER_SECONDS,
    now: Callable[[], float] = lambda: 0.0,
) -> ASGIApp:
    """A data server over HTTP(S): GET, HEAD, PUT, DELETE, MKCOL, PROPFIND with bearer tokens.

    ``admit`` decides (the actor's verifier, with its events); this app moves the bytes.
    Statuses follow conformance M1-M6: 401 with ``WWW-Authenticate: Bearer`` for a missing or
    unusable token, 403 (``error="insufficient_scope"``) when the token may not do this, 404
    for an authorized access to nothing, 201 for a new file or directory, 204 for an
    overwrite or a delete, 405 for MKCOL on an existing directory (RFC 4918 §9.3.1), 409 for
    a PUT onto a directory or anything below a file, 400 for a path that still holds ``%``
    once decoded (it would be authorized as one path and opened as another), 403 for a path
    through a symbolic link (:class:`Escapes`), 507 when the upload does not fit
    (:class:`InsufficientStorage`).

    Create-vs-overwrite is decided when the upload is committed, not when it starts: a new
    file (``admit`` answered 201) that another upload created meanwhile is replaced only if
    ``may_overwrite`` says the token may modify it; otherwise the upload is refused with
    ``refuse_overwrite``'s answer (default: 403 ``insufficient_scope``) and nothing is written.

    With ``pull`` (an HTTP client), ``COPY`` is a third-party copy in HTTP-TPC pull mode (the
    WLCG/FTS convention): the destination token in ``Authorization`` is checked for writing the
    path, as for a PUT, then the file named by the ``Source`` header is fetched with the
    ``TransferHeaderAuthorization`` header as that request's ``Authorization`` and stored.
    The ``Source`` must be ``https://`` and one of ``tpc_sources`` (see
    :func:`tpc_source_refusal`; empty: no source at all), else the copy is refused with 403
    before anything is fetched. A refusal by the source is answered with the source's status
    and ``X-Scitokens-Batch-Side: source``; an unreachable source is 502.

    Once the source has answered, the copy is answered ``202 Accepted`` with a ``text/plain``
    body of WLCG performance markers every ``marker_seconds`` and, last, ``success: Created``
    or ``failure: <status> <side>: <detail>`` (the WLCG HTTP-TPC convention of XRootD and
    dCache, which gfal2 and FTS read). A ``COPY`` with ``Destination`` (and no ``Source``) is
    a push: the token in ``Authorization`` must allow reading the path here, the
    ``Destination`` passes the same allow-list, and the file is PUT there with
    ``TransferHeaderAuthorization`` as that request's ``Authorization``.

    WebDAV (RFC 4918): ``PROPFIND`` with ``Depth: 0`` or ``1`` (anything else is taken as 1)
    answers 207 with ``resourcetype``, ``getcontentlength``, ``getlastmodified`` and
    ``getetag``; ``HEAD`` on a directory is 200; ``DELETE`` of an empty directory is 204, of a
    non-empty one 409. ``GET`` and ``HEAD`` carry ``Last-Modified`` and ``ETag``, and answer
    ``Want-Digest`` (adler32, md5, sha-256) with ``Digest`` (RFC 3230), computed once per file
    version (inode, size, mtime) and kept. ``now`` is the wall clock of the markers'
    ``Timestamp`` (live mode passes the system clock).
    """
    digests: collections.OrderedDict[tuple[Any, ...], str] = collections.OrderedDict()

    async def digest_header(path: str, st: os.stat_result, want: str | None) -> dict[str, str]:
        algs = _wanted_digests(want)
        if not algs:
            return {}
        values = []
        for alg in algs:
            key = (path, st.st_ino, st.st_size, st.st_mtime_ns, alg)
            value = digests.get(key)
            if value is None:
                value = await _checksum(store, path, alg)
                digests[key] = value
                while len(digests) > DIGEST_CACHE_SIZE:
                    digests.popitem(last=False)
            else:
                digests.move_to_end(key)
            values.append(f"{alg}={value}")
        return {"digest": ", ".join(values)}

    def overwrite_check(request: DataRequest, admitted: DataResponse) -> Callable[[], bool]:
        if admitted.status != 201:
            return lambda: True  # admitted as an overwrite: the token may modify
        if may_overwrite is None:
            return lambda: False
        return lambda: may_overwrite(request)

    def overwrite_refused(request: DataRequest) -> DataResponse:
        if refuse_overwrite is not None:
            return refuse_overwrite(request)
        return DataResponse(
            status=403,
            reason=Reason.INSUFFICIENT_SCOPE,
            detail=f"{request.path} exists; overwriting needs storage.modify",
        )

    async def route(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if len(path) > 1:
            # A collection's URL ends in '/' (davix, gfal): the same server path.
            path = path.rstrip("/") or "/"
        if method == "COPY" and pull is not None:
            if _header(scope, "source") is None and _header(scope, "destination") is not None:
                await _push(scope, send, path)
            else:
                await _copy(scope, send, path)
            return
        op = _OPS.get(method)
        if op is None:
            await _respond(send, 405, headers={"allow": ", ".join(_OPS)})
            return
        if "\x00" in path or not path.startswith("/"):
            await _json(send, 400, {"error": "invalid_request"})
            return
        if "%" in path:
            # The ASGI path is already percent-decoded, and the scope check reads escapes (B5):
            # "/di%2572" would be authorized as "/dir" but the store would open "di%72", outside
            # the scope. A name that still holds '%' once decoded is refused.
            await _json(
                send,
                400,
                {"error": "invalid_request", "error_description": "'%' in a decoded path"},
            )
            return
        job_text = _header(scope, JOB_HEADER)
        length = _header(scope, "content-length")
        size = int(length) if length is not None and length.isdigit() else 0
        request = DataRequest(
            op=op,
            path=path,
            size=size if method == "PUT" else 0,
            token=_bearer(scope),
            job=int(job_text) if job_text is not None and job_text.isdigit() else None,
            transfer=_header(scope, TRANSFER_HEADER),
        )
        answer = await admit(request)
        if answer.status in (401, 403):
            await _refuse(send, answer)
            return
        if not answer.ok:
            await _json(
                send, answer.status, {"error": "not_found", "error_description": answer.detail}
            )
            return
        try:
            await _serve(scope, method, path, request, answer, receive, send, length)
        except Escapes as exc:
            await _json(send, 403, {"error": "forbidden", "error_description": str(exc)})

    async def _serve(
        scope: dict[str, Any],
        method: str,
        path: str,
        request: DataRequest,
        answer: DataResponse,
        receive: Receive,
        send: Send,
        length: str | None,
    ) -> None:
        if method in ("GET", "HEAD"):
            st = store.stat(path)
            if st is None or (method == "GET" and stat_is_dir(st)):
                await _json(send, 404, {"error": "not_found"})
                return
            headers = _version_headers(st)
            if not stat_is_dir(st):
                headers.update(await digest_header(path, st, _header(scope, "want-digest")))
            if method == "HEAD":
                size = 0 if stat_is_dir(st) else st.st_size
                await _respond(send, 200, headers=headers, content_length=size)
            else:
                await _stream_file(send, store, path, headers)
        elif method == "PROPFIND":
            await _read_body(receive, PROPFIND_BODY)
            await _propfind(send, path, _header(scope, "depth"))
        elif method == "PUT":
            # A directory in the way (at the path, or a file where a parent should be) is a
            # conflict with the namespace (RFC 9110 §15.5.10), not a server error.
            if store.is_dir(path):
                await _respond(send, 409)
                return
            expected = request.size if length is not None and length.isdigit() else None
            try:
                created = await store.write(
                    path,
                    _body_chunks(receive),
                    overwrite=overwrite_check(request, answer),
                    expected=expected,
                )
            except InsufficientStorage as exc:
                await _insufficient(send, exc)
                return
            except FileExistsError:
                refused = overwrite_refused(request)
                await _refuse(send, refused)
                return
            except (IsADirectoryError, NotADirectoryError):
                await _respond(send, 409)
                return
            except TimeoutError as exc:
                body = {"error": "request_timeout", "error_description": str(exc)}
                await _json(send, 408, body, {"connection": "close"})
                return
            await _respond(send, 201 if created else 204)
        elif method == "DELETE":
            if not store.is_dir(path):
                await _respond(send, 204 if store.delete(path) else 404)
                return
            try:
                removed = store.rmdir(path)
            except OSError as exc:
                if isinstance(exc, Escapes):
                    raise
                # RFC 4918 §9.6 lets a server refuse a collection it will not empty; XRootD
                # and dCache answer 409 for a non-empty directory, and so do we.
                await _respond(send, 409)
                return
            await _respond(send, 204 if removed else 404)
        else:  # MKCOL
            try:
                made = store.mkdir(path)
            except NotADirectoryError:
                await _respond(send, 409)  # RFC 4918 §9.3.1: a parent is not a collection
                return
            except FileExistsError:
                made = False  # made meanwhile
            await _respond(send, 201 if made else 405)

    async def _propfind(send: Send, path: str, depth: str | None) -> None:
        st = store.stat(path)
        if st is None:
            await _json(send, 404, {"error": "not_found"})
            return
        entries = [(path, st)]
        if depth != "0" and stat_is_dir(st):
            base = path.rstrip("/")
            entries += [(f"{base}/{n}", e) for n, e in store.listdir(path, PROPFIND_LIMIT)]
        body = _multistatus(entries)
        headers = {"content-type": 'application/xml; charset="utf-8"'}
        await _respond(send, 207, body, headers)

    async def _insufficient(send: Send, exc: InsufficientStorage, side: str | None = None) -> None:
        headers = {"connection": "close"}
        if side is not None:
            headers[SIDE_HEADER] = side
        body = {"error": "insufficient_storage", "error_description": str(exc)}
        await _json(send, 507, body, headers)

    async def _refuse(send: Send, answer: DataResponse, side: str | None = None) -> None:
        reason = answer.reason or Reason.INSUFFICIENT_SCOPE
        challenge = w.bearer_challenge(reason, answer.detail, realm=realm)
        body = {
            "error": reason.oauth_error or "invalid_request",
            "error_description": answer.detail,
        }
        headers = {"www-authenticate": challenge}
        if side is not None:
            headers[SIDE_HEADER] = side
        await _json(send, answer.status, body, headers)

    async def _copy(scope: dict[str, Any], send: Send, path: str) -> None:
        assert pull is not None
        source = _header(scope, "source")
        if source is None or "%" in path:
            await _json(send, 400, {"error": "invalid_request", "error_description": "Source"})
            return
        why = tpc_source_refusal(source, tpc_sources)
        if why is not None:
            # Checked before the destination token, before anything is fetched: the server
            # is never made to request (or send a token to) a URL it was not told to trust.
            body = {"error": "forbidden_source", "error_description": why}
            await _json(send, 403, body, {SIDE_HEADER: "source"})
            return
        size_text = _header(scope, SIZE_HEADER) or "0"
        write = DataRequest(
            op=Operation.CREATE,
            path=path,
            size=int(size_text) if size_text.isdigit() else 0,
            token=_bearer(scope),
            transfer=_header(scope, TRANSFER_HEADER),
        )
        answer = await admit(write)
        if answer.status in (401, 403):
            await _refuse(send, answer, "destination")
            return
        if not answer.ok:
            await _json(send, answer.status, {"error": "refused"}, {SIDE_HEADER: "destination"})
            return
        headers = {}
        source_auth = _header(scope, "transferheaderauthorization")
        if source_auth is not None:
            headers["Authorization"] = source_auth
        if write.transfer is not None:
            headers[TRANSFER_HEADER] = write.transfer
        try:
            async with _source_stream(pull, source, headers) as reply:
                if not reply.is_success:
                    detail = bytes(await reply.aread())[:_DETAIL_BYTES]
                    out = {SIDE_HEADER: "source"}
                    if "www-authenticate" in reply.headers:
                        out["www-authenticate"] = reply.headers["www-authenticate"]
                    await _respond(send, reply.status_code, detail, out)
                    return
                if store.is_dir(path):
                    await _respond(send, 409, headers={SIDE_HEADER: "destination"})
                    return
                announced = reply.headers.get("content-length", "")
                if announced.isdigit():
                    # Refused as a plain 507 while it still can be, before the 202.
                    store.check_space(int(announced))
                moved = [0]

                async def pulled() -> AsyncIterator[bytes]:
                    async for chunk in reply.aiter_raw():
                        moved[0] += len(chunk)
                        yield chunk

                async def work() -> str | None:
                    try:
                        await store.write(
                            path,
                            pulled(),
                            overwrite=overwrite_check(write, answer),
                            expected=int(announced) if announced.isdigit() else None,
                        )
                    except httpx.TransportError as exc:
                        return f"502 source: {type(exc).__name__}"
                    except InsufficientStorage as exc:
                        return f"507 destination: {exc}"
                    except FileExistsError:
                        return f"403 destination: {overwrite_refused(write).detail}"
                    except Escapes as exc:
                        return f"403 destination: {exc}"
                    except (IsADirectoryError, NotADirectoryError):
                        return "409 destination: a directory or file is in the way"
                    return None

                await _tpc_stream(send, moved, work, marker_seconds, now)
        except httpx.TransportError as exc:
            body = {"error": "source_unreachable", "error_description": type(exc).__name__}
            await _json(send, 502, body, {SIDE_HEADER: "source"})
            return
        except InsufficientStorage as exc:
            await _insufficient(send, exc, "destination")
            return

    async def _push(scope: dict[str, Any], send: Send, path: str) -> None:
        """HTTP-TPC push: this server is the source and PUTs the file to ``Destination``."""
        assert pull is not None
        destination = _header(scope, "destination") or ""
        if "%" in path:
            await _json(send, 400, {"error": "invalid_request", "error_description": "path"})
            return
        why = tpc_source_refusal(destination, tpc_sources, header="Destination")
        if why is not None:
            # As for a pull: nothing is sent (no token, no byte) to an end not trusted.
            body = {"error": "forbidden_destination", "error_description": why}
            await _json(send, 403, body, {SIDE_HEADER: "destination"})
            return
        read = DataRequest(
            op=Operation.READ,
            path=path,
            token=_bearer(scope),
            transfer=_header(scope, TRANSFER_HEADER),
        )
        answer = await admit(read)
        if answer.status in (401, 403):
            await _refuse(send, answer, "source")
            return
        size = store.size(path)
        if not answer.ok or size is None:
            await _json(send, 404, {"error": "not_found"}, {SIDE_HEADER: "source"})
            return
        headers = {LENGTH_HEADER: str(size)}
        dest_auth = _header(scope, "transferheaderauthorization")
        if dest_auth is not None:
            headers["Authorization"] = dest_auth
        if read.transfer is not None:
            headers[TRANSFER_HEADER] = read.transfer
        moved = [0]

        async def pushed() -> AsyncIterator[bytes]:
            async for chunk in store.read(path):
                moved[0] += len(chunk)
                yield chunk

        async def work() -> str | None:
            content: bytes | AsyncIterator[bytes] = pushed()
            if size <= SMALL_BODY:
                # In one piece, as our client's PUTs (httpx keeps our LENGTH_HEADER, one copy).
                content = b"".join([chunk async for chunk in pushed()])
            try:
                reply = await pull.request("PUT", destination, content=content, headers=headers)
            except httpx.TransportError as exc:
                return f"502 destination: {type(exc).__name__}"
            if reply.is_success:
                return None
            detail = _error_description(reply.content) or reply.reason_phrase
            return f"{reply.status_code} destination: {detail}"

        await _tpc_stream(send, moved, work, marker_seconds, now)

    return _app(name, route)


@contextlib.asynccontextmanager
async def _source_stream(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> AsyncIterator[httpx.Response]:
    """A third-party copy's GET of its source, sent again once if a kept-alive connection
    turns out to be unusable before any answer (``RemoteProtocolError``): a server may drop a
    kept-alive link at any time (XRootD 5.5.3 did after every PUT sent with a lower-case
    ``content-length``, see :data:`LENGTH_HEADER`). A GET has no effect at the source, so
    sending it again is safe."""
    request = client.build_request("GET", url, headers=headers)
    try:
        reply = await client.send(request, stream=True)
    except httpx.RemoteProtocolError:
        reply = await client.send(client.build_request("GET", url, headers=headers), stream=True)
    try:
        yield reply
    finally:
        await reply.aclose()


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        event: dict[str, Any] | None = None
        with trio.move_on_after(BODY_IDLE_TIMEOUT):
            event = await receive()
        if event is None:
            # A client that announced a body and stalls: give up (the partial upload is
            # discarded) instead of holding the connection and the staged file forever.
            raise TimeoutError(f"no upload bytes for {BODY_IDLE_TIMEOUT:g} s")
        if event["type"] == "http.disconnect":
            raise ConnectionResetError("client went away during the upload")
        chunk = event.get("body", b"")
        if chunk:
            yield chunk
        if not event.get("more_body", False):
            return


async def _stream_file(
    send: Send, store: DataStore, path: str, headers: Mapping[str, str] | None = None
) -> None:
    size = store.size(path)
    if size is None:
        await _json(send, 404, {"error": "not_found"})
        return
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(size).encode()),
                (b"content-type", b"application/octet-stream"),
                *raw,
            ],
        }
    )
    async for chunk in store.read(path):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def stat_is_dir(st: os.stat_result) -> bool:
    """The status is a directory's."""
    return (st.st_mode & 0o170000) == 0o040000


def _http_date(st: os.stat_result) -> str:
    return email.utils.formatdate(st.st_mtime, usegmt=True)


def _etag(st: os.stat_result) -> str:
    # Changes with every new version of the file: a commit links a new inode into place.
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _version_headers(st: os.stat_result) -> dict[str, str]:
    return {"last-modified": _http_date(st), "etag": _etag(st)}


#: RFC 3230 digest names we compute (IANA "HTTP Digest Algorithm Values"), lower-cased.
_DIGESTS: Final = ("adler32", "md5", "sha-256")


def _wanted_digests(want: str | None) -> list[str]:
    """The algorithms of a ``Want-Digest`` we compute, in the client's order (``q=0`` out)."""
    if not want:
        return []
    found: list[str] = []
    for item in want.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        refused = params.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000")
        if name in _DIGESTS and name not in found and not refused:
            found.append(name)
    return found


async def _checksum(store: DataStore, path: str, alg: str) -> str:
    """One pass over the file: adler32 as 8 hex digits, md5 and sha-256 in base64 (RFC 3230
    and the forms XRootD and dCache answer)."""
    if alg == "adler32":
        value = 1
        async for chunk in store.read(path):
            value = zlib.adler32(chunk, value)
        return f"{value:08x}"
    h = hashlib.md5(usedforsecurity=False) if alg == "md5" else hashlib.sha256()
    async for chunk in store.read(path):
        h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def _multistatus(entries: list[tuple[str, os.stat_result]]) -> bytes:
    """A WebDAV 207 body (RFC 4918 §13) with the properties davix and gfal2 read."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    for path, st in entries:
        is_dir = stat_is_dir(st)
        href = urllib.parse.quote(path + ("/" if is_dir and path != "/" else ""))
        kind = "<D:collection/>" if is_dir else ""
        parts.append(
            f"<D:response><D:href>{_xml_escape(href)}</D:href><D:propstat><D:prop>"
            f"<D:resourcetype>{kind}</D:resourcetype>"
            f"<D:getcontentlength>{0 if is_dir else st.st_size}</D:getcontentlength>"
            f"<D:getlastmodified>{_http_date(st)}</D:getlastmodified>"
            f"<D:getetag>{_xml_escape(_etag(st))}</D:getetag>"
            "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        )
    parts.append("</D:multistatus>\n")
    return "\n".join(parts).encode()


def _perf_marker(moved: int, now: float) -> bytes:
    """One WLCG HTTP-TPC performance marker (one stripe, as XRootD sends)."""
    return (
        f"Perf Marker\n\tTimestamp: {int(now)}\n\tStripe Index: 0\n"
        f"\tStripe Bytes Transferred: {moved}\n\tTotal Stripe Count: 1\nEnd\n"
    ).encode()


async def _tpc_stream(
    send: Send,
    moved: list[int],
    work: Callable[[], Awaitable[str | None]],
    interval: float,
    now: Callable[[], float],
) -> None:
    """Answer a third-party copy 202 and stream markers while ``work`` moves the bytes, then
    its outcome: ``success: Created``, or ``failure: <what work returned>``."""
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    outcome: list[str | None] = []

    async def markers() -> None:
        while True:
            marker = _perf_marker(moved[0], now())
            await send({"type": "http.response.body", "body": marker, "more_body": True})
            await trio.sleep(interval)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(markers)
        try:
            outcome.append(await work())
        finally:
            nursery.cancel_scope.cancel()
    line = "success: Created" if outcome[0] is None else f"failure: {outcome[0]}"
    await send({"type": "http.response.body", "body": f"{line}\n".encode()})
