"""A real data server over a directory, tokens from our token core, and a stub issuer, for the
HTTP transport tests (in-process ASGI and real hypercorn)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import structlog

from scitokens_batch.actors import DataServer, SharedLink
from scitokens_batch.live._store import FileTree
from scitokens_batch.metrics import Event, ListSink, Recorder
from scitokens_batch.protocol import (
    Ack,
    DeviceAuthorizationResponse,
    JwksRequest,
    JwksResponse,
    Message,
    OAuthError,
    TokenResponse,
)
from scitokens_batch.tokens import (
    KeyCachePolicy,
    Profile,
    SigningKey,
    TrustedIssuer,
    Verifier,
    build_claims,
    encode,
)
from scitokens_batch.transport import Transport
from scitokens_batch.transport.http import CHUNK

ISSUER = "https://issuer.example/vo"
AUDIENCE = "https://store.example"
#: The data server's clock: every token below is judged at this instant.
T0 = 1_767_225_600.0
#: Bigger than two streaming chunks, and not a multiple of one.
BIG = 2 * CHUNK + 12345


def token(
    key: SigningKey,
    scopes: str,
    *,
    issued_at: float = T0 - 10,
    lifetime: float = 600,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    jti: str = "jti-1",
) -> str:
    """A WLCG token for alice with ``scopes`` (valid at :data:`T0` unless told otherwise)."""
    claims = build_claims(
        profile=Profile.WLCG,
        issuer=issuer,
        subject="alice",
        audience=audience,
        scopes=scopes,
        issued_at=issued_at,
        lifetime=lifetime,
        jti=jti,
    )
    return encode(claims, key)


def bearer(tok: str) -> dict[str, str]:
    """The F3 header."""
    return {"Authorization": f"Bearer {tok}"}


@attrs.define
class JwksOnly:
    """A transport that answers a data server's JWKS fetches with ``keys`` (D2), counting them."""

    keys: SigningKey
    fetches: list[str] = attrs.field(factory=list)

    async def request(self, src: str, dest: str, message: Message) -> Message:
        assert isinstance(message, JwksRequest)
        self.fetches.append(message.issuer)
        return JwksResponse(keys=(self.keys.public,))


@attrs.define
class Store:
    """A data server trusting :data:`ISSUER` with base path ``/vo``, its files under ``root``."""

    server: DataServer
    tree: FileTree
    #: the fake key transport (unused when the server was given another transport)
    transport: JwksOnly
    sink: ListSink

    @property
    def events(self) -> list[Event]:
        """What the server recorded."""
        return self.sink.events


def data_server(
    root: Path, key: SigningKey, *, issuer: str = ISSUER, transport: Transport | None = None
) -> Store:
    """A :class:`DataServer` as in live mode: a :class:`FileTree` namespace, real verifier.

    It trusts ``issuer`` (actor ``vo``) with base path ``/vo`` and fetches its keys through
    ``transport``, by default a :class:`JwksOnly` answering with ``key``.
    """
    tree = FileTree(root)
    sink = ListSink()
    fake = JwksOnly(key)
    server = DataServer(
        name="store",
        verifier=Verifier(
            issuers=[TrustedIssuer(issuer, "/vo")],
            audiences=[AUDIENCE],
            key_policy=KeyCachePolicy(),
        ),
        issuer_actors={issuer: "vo"},
        files=tree,
        link=SharedLink(1e12),
        transport=transport if transport is not None else fake,
        clock=lambda: T0,
        true_now=lambda: T0,
        rng=random.Random(1),
        recorder=Recorder(clock=lambda: 0.0, sink=sink),
        log=structlog.get_logger(),
    )
    return Store(server=server, tree=tree, transport=fake, sink=sink)


def put_file(root: Path, path: str, data: bytes) -> Path:
    """Write ``data`` at server path ``path`` under ``root``."""
    target = root.joinpath(*path.strip("/").split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


@attrs.define
class StubIssuer:
    """An issuer handler answering canned messages, keeping what it was asked."""

    key: SigningKey
    answers: dict[type[Any], Message] = attrs.field(factory=dict)
    seen: list[Message] = attrs.field(factory=list)

    async def __call__(self, message: Message) -> Message:
        self.seen.append(message)
        if isinstance(message, JwksRequest):
            return self.answers.get(JwksRequest, JwksResponse(keys=(self.key.public,), max_age=600))
        return self.answers.get(type(message), Ack())


def canned_token() -> TokenResponse:
    """A token response as the issuer would send it."""
    return TokenResponse(access_token="at-canned", expires_in=1200, scope="storage.read:/")


def canned_device() -> DeviceAuthorizationResponse:
    """A device authorization answer (RFC 8628 §3.2)."""
    return DeviceAuthorizationResponse(
        device_code="dc-canned",
        user_code="WDJB-MJHT",
        verification_uri="https://issuer.example/vo/device",
        expires_in=600,
    )


def discovery(url: str) -> Callable[[], dict[str, Any]]:
    """A minimal discovery document (D5) for an issuer at ``url``."""

    def document() -> dict[str, Any]:
        return {"issuer": url, "jwks_uri": f"{url}/jwks", "token_endpoint": f"{url}/token"}

    return document


Handler = Callable[[Message], Awaitable[Message]]


async def echo_ack(message: Message) -> Message:
    """An RPC handler that answers every message with an Ack naming its type."""
    return Ack(detail=type(message).__name__)


def refusal(status: int, error: str, description: str = "") -> OAuthError:
    """An OAuth error answer."""
    return OAuthError(error=error, description=description, status=status)
