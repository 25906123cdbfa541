"""HttpTransport against the live apps served for real by hypercorn on trio, over loopback HTTP and
HTTPS (a trustme CA): data access, JWKS discovery, the token endpoint, RPC, and Unreachable."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from scitokens_batch.live._tls import RunCA
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_CLIENT_CREDENTIALS,
    Ack,
    CredentialResponse,
    CredentialUpdate,
    DataRequest,
    DataResponse,
    DeviceApproval,
    DeviceAuthorizationRequest,
    JwksRequest,
    JwksResponse,
    OAuthError,
    RevocationRequest,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.tokens import Operation, Reason, SigningKey
from scitokens_batch.transport import Unreachable
from scitokens_batch.transport.http import HttpTransport, Peer, data_app, issuer_app, rpc_app

from .helpers import (
    BIG,
    Store,
    StubIssuer,
    canned_device,
    canned_token,
    data_server,
    put_file,
    refusal,
    token,
)

#: Upper bound on any one server start, stop or request in these tests.
WAIT = 10.0


@attrs.define
class Server:
    """A hypercorn server a test started; ``stop`` ends it and waits for it to be gone."""

    url: str
    _shutdown: trio.Event
    _stopped: trio.Event

    async def stop(self) -> None:
        self._shutdown.set()
        with trio.fail_after(WAIT):
            await self._stopped.wait()


def free_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (not listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def served(make_app: Callable[[str], Any], tls: RunCA | None = None) -> AsyncIterator[Server]:
    """Serve ``make_app(base_url)`` with hypercorn on a pre-bound loopback port until the block
    ends (or the test stops it earlier)."""
    sock = free_socket()
    port = sock.getsockname()[1]
    scheme = "https" if tls else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the descriptor from here
    config.accesslog = None
    config.graceful_timeout = 1.0
    if tls is not None:
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
    shutdown, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve(
                make_app(base), config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            binds = await nursery.start(run)
        assert binds == [f"{base}"]
        server = Server(base, shutdown, stopped)
        try:
            yield server
        finally:
            await server.stop()


@asynccontextmanager
async def transport(peers: list[Peer], tls: RunCA | None = None) -> AsyncIterator[HttpTransport]:
    """An HttpTransport to ``peers``, closed at the end."""
    t = HttpTransport(
        {p.name: p for p in peers}, ca_file=str(tls.ca) if tls else None, timeout=WAIT
    )
    try:
        yield t
    finally:
        await t.aclose()


def verify_failure(exc: BaseException) -> str:
    """The certificate verification message in the causes of ``exc`` ("" when there is none)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message)
        seen = seen.__cause__ or seen.__context__
    return ""


@pytest.fixture(scope="module")
def run_ca(tmp_path_factory: pytest.TempPathFactory) -> RunCA:
    """The run's CA and a server certificate for 127.0.0.1."""
    return RunCA.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["http", "https"])
def tls(request: pytest.FixtureRequest, run_ca: RunCA) -> RunCA | None:
    """Each test with this fixture runs over plain HTTP and over HTTPS."""
    return run_ca if request.param == "https" else None


@pytest.fixture
def store(tmp_path: Path, es256_key: SigningKey) -> Store:
    """A data server over ``tmp_path`` with /vo/data/big."""
    s = data_server(tmp_path, es256_key)
    put_file(tmp_path, "/vo/data/big", os.urandom(BIG))
    return s


def data(store: Store) -> Callable[[str], Any]:
    """The data server's app."""
    return lambda _base: data_app("store", store.server.admit, store.tree, realm="store")


# -- data ------------------------------------------------------------------------------------------


async def test_read_and_create(store: Store, es256_key: SigningKey, tls: RunCA | None) -> None:
    """A READ moves the whole file and a CREATE uploads its bytes: DataResponse.size is what moved (F3, M3, M4)."""
    tok = token(es256_key, "storage.read:/data storage.create:/out")
    async with (
        served(data(store), tls) as server,
        transport([Peer("store", server.url, "data")], tls) as t,
    ):
        with trio.fail_after(WAIT):
            read = await t.request(
                "job",
                "store",
                DataRequest(op=Operation.READ, path="/vo/data/big", token=tok, job=7),
            )
            made = await t.request(
                "job",
                "store",
                DataRequest(op=Operation.CREATE, path="/vo/out/new", size=BIG, token=tok),
            )
    assert read == DataResponse(status=200, size=BIG)
    assert made == DataResponse(status=201, size=BIG)
    assert (store.tree.root / "vo/out/new").read_bytes() == bytes(BIG)
    assert [e.fields["job"] for e in store.events if e.kind == "use"] == [7, None]


async def test_refusals_carry_the_reason(
    store: Store, es256_key: SigningKey, tls: RunCA | None
) -> None:
    """Refused GETs come back with the status and our reason parsed from the Bearer challenge (RFC 6750 §3, M1, M3, M5)."""
    expired = token(es256_key, "storage.read:/", issued_at=0, lifetime=600)
    narrow = token(es256_key, "storage.read:/elsewhere")
    wide = token(es256_key, "storage.read:/")
    cases = [
        (DataRequest(op=Operation.READ, path="/vo/data/big", token=expired), 401, Reason.EXPIRED),
        (DataRequest(op=Operation.READ, path="/vo/data/big"), 401, Reason.MISSING_TOKEN),
        (
            DataRequest(op=Operation.READ, path="/vo/data/big", token=narrow),
            403,
            Reason.INSUFFICIENT_SCOPE,
        ),
        (DataRequest(op=Operation.READ, path="/vo/data/none", token=wide), 404, None),
        (DataRequest(op=Operation.STAT, path="/vo/data/none", token=wide), 404, None),
    ]
    async with (
        served(data(store), tls) as server,
        transport([Peer("store", server.url, "data")], tls) as t,
    ):
        for req, status, reason in cases:
            with trio.fail_after(WAIT):
                answer = await t.request("job", "store", req)
            assert isinstance(answer, DataResponse)
            assert (answer.status, answer.reason, answer.size) == (status, reason, 0), req
            if reason is Reason.EXPIRED:
                assert answer.detail.startswith("expired")
            if status == 404 and req.op is Operation.READ:
                assert answer.detail == "no such file"  # as in virtual time


async def test_stat(store: Store, es256_key: SigningKey) -> None:
    """A STAT is a HEAD: 200 and no bytes moved (B11)."""
    tok = token(es256_key, "storage.read:/")
    async with served(data(store)) as server, transport([Peer("store", server.url, "data")]) as t:
        with trio.fail_after(WAIT):
            answer = await t.request(
                "job", "store", DataRequest(op=Operation.STAT, path="/vo/data/big", token=tok)
            )
    assert answer == DataResponse(status=200, size=0)


async def test_refused_upload(store: Store, es256_key: SigningKey, tls: RunCA | None) -> None:
    """An upload refused before its body is read is answered 403 with the reason, not a broken connection (M4, B7)."""
    put_file(store.tree.root, "/vo/out/f", b"old")
    tok = token(es256_key, "storage.create:/out")
    async with (
        served(data(store), tls) as server,
        transport([Peer("store", server.url, "data")], tls) as t,
    ):
        with trio.fail_after(WAIT):
            answer = await t.request(
                "job",
                "store",
                DataRequest(op=Operation.MODIFY, path="/vo/out/f", size=4 * BIG, token=tok),
            )
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert (store.tree.root / "vo/out/f").read_bytes() == b"old"


# -- the issuer ------------------------------------------------------------------------------------


def issuer(stub: StubIssuer) -> Callable[[str], Any]:
    """An issuer app at ``<base>/vo`` answered by ``stub``, with its discovery document."""

    def make(base: str) -> Any:
        url = f"{base}/vo"

        def document() -> dict[str, Any]:
            return {"issuer": url, "jwks_uri": f"{url}/jwks", "token_endpoint": f"{url}/token"}

        return issuer_app("vo", url, stub, document)

    return make


async def test_jwks_discovery(es256_key: SigningKey, tls: RunCA | None) -> None:
    """A JwksRequest reads the discovery document, follows jwks_uri and keeps the Cache-Control max-age (D2, D4, D5)."""
    stub = StubIssuer(es256_key)
    stub.answers[JwksRequest] = JwksResponse(keys=(es256_key.public,), max_age=900)
    async with served(issuer(stub), tls) as server:
        iss = f"{server.url}/vo"
        async with transport([Peer("vo", iss, "issuer")], tls) as t:
            with trio.fail_after(WAIT):
                answer = await t.request("store", "vo", JwksRequest(issuer=iss))
    assert answer == JwksResponse(keys=(es256_key.public,), max_age=900.0)
    assert stub.seen == [JwksRequest(issuer=iss)]


async def test_jwks_discovery_failure(es256_key: SigningKey) -> None:
    """An issuer without a discovery document at <iss>/.well-known/openid-configuration is a failed fetch, not a crash (D2, D3)."""
    stub = StubIssuer(es256_key)
    async with served(issuer(stub)) as server:
        wrong = f"{server.url}/other"
        async with transport([Peer("vo", wrong, "issuer")]) as t:
            with trio.fail_after(WAIT):
                answer = await t.request("store", "vo", JwksRequest(issuer=wrong))
    assert isinstance(answer, OAuthError) and answer.status == 404


async def test_token_request_basic(es256_key: SigningKey, tls: RunCA | None) -> None:
    """A client_secret_basic token request reaches the handler with its client id and secret, and the answer comes back (RFC 6749 §2.3.1, §5.1, K3)."""
    stub = StubIssuer(es256_key)
    stub.answers[TokenRequest] = canned_token()
    req = TokenRequest(
        grant_type=GRANT_CLIENT_CREDENTIALS,
        client_id="rucio:prod",
        client_secret="s3cr%t: ü",
        client_auth=CLIENT_AUTH_BASIC,
        scope="storage.read:/ storage.modify:/out",
        audience="https://store.example",
    )
    async with (
        served(issuer(stub), tls) as server,
        transport([Peer("vo", f"{server.url}/vo", "issuer")], tls) as t,
    ):
        with trio.fail_after(WAIT):
            answer = await t.request("rucio", "vo", req)
            stub.answers[TokenRequest] = refusal(401, "invalid_client", "wrong secret")
            refused = await t.request("rucio", "vo", req)
    assert answer == TokenResponse(
        access_token="at-canned", expires_in=1200.0, scope="storage.read:/"
    )
    assert refused == refusal(401, "invalid_client", "wrong secret")
    assert stub.seen == [req, req]
    (seen, _) = stub.seen
    assert isinstance(seen, TokenRequest)
    assert (seen.client_id, seen.client_secret, seen.client_auth) == (
        "rucio:prod",
        "s3cr%t: ü",
        CLIENT_AUTH_BASIC,
    )


# -- RPC -------------------------------------------------------------------------------------------


async def test_rpc_round_trip(tls: RunCA | None) -> None:
    """An RPC message reaches the actor's handler and its answer comes back (protocol/_wire.py RPC)."""
    seen: list[Any] = []

    async def handler(message: Any) -> Any:
        seen.append(message)
        return CredentialResponse(token="at-x", jti="j", exp=5.0)

    update = CredentialUpdate(user="alice", service="vo", token="at-x", jti="j", exp=5.0)
    async with (
        served(lambda _: rpc_app("qm", handler), tls) as server,
        transport([Peer("qm", server.url, "rpc")], tls) as t,
    ):
        with trio.fail_after(WAIT):
            answer = await t.request("tm", "qm", update)
    assert answer == CredentialResponse(token="at-x", jti="j", exp=5.0)
    assert seen == [update]


async def test_rpc_server_error(tls: RunCA | None) -> None:
    """An RPC that fails on the server is Unreachable from the caller, naming the caller."""

    async def broken(message: Any) -> Any:
        raise RuntimeError("bug")

    async with (
        served(lambda _: rpc_app("qm", broken), tls) as server,
        transport([Peer("qm", server.url, "rpc")], tls) as t,
    ):
        with trio.fail_after(WAIT), pytest.raises(Unreachable) as err:
            await t.request("tm", "qm", Ack())
    assert (err.value.src, err.value.dest) == ("tm", "qm")


# -- Unreachable -----------------------------------------------------------------------------------


async def test_closed_port_is_unreachable() -> None:
    """Nothing listening on the port is Unreachable (down), as for a down actor in virtual time."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    async with transport([Peer("qm", f"http://127.0.0.1:{port}", "rpc")]) as t:
        with trio.fail_after(WAIT), pytest.raises(Unreachable) as err:
            await t.request("tm", "qm", Ack())
    assert (err.value.src, err.value.dest, err.value.why) == ("tm", "qm", "down")


async def test_unknown_peer_is_unreachable() -> None:
    """An actor the transport has no address for is Unreachable."""
    async with transport([]) as t:
        with pytest.raises(Unreachable) as err:
            await t.request("tm", "nobody", Ack())
    assert err.value.why == "unknown"


async def test_server_stopped_mid_test(
    store: Store, es256_key: SigningKey, tls: RunCA | None
) -> None:
    """A server that stops between two requests (its pooled connection gone) is Unreachable on the second (P10)."""
    tok = token(es256_key, "storage.read:/")
    req = DataRequest(op=Operation.READ, path="/vo/data/big", token=tok)
    async with (
        served(data(store), tls) as server,
        transport([Peer("store", server.url, "data")], tls) as t,
    ):
        with trio.fail_after(WAIT):
            first = await t.request("job", "store", req)
            await server.stop()
            with pytest.raises(Unreachable) as err:
                await t.request("job", "store", req)
    assert first == DataResponse(status=200, size=BIG)
    assert (err.value.dest, err.value.why) == ("store", "down")


async def test_untrusted_certificate_is_unreachable(
    store: Store, run_ca: RunCA, tmp_path: Path
) -> None:
    """A server whose certificate the client's CA did not sign is never talked to (D4: HTTPS with verification)."""
    other = RunCA.create(tmp_path / "other-ca")
    async with (
        served(data(store), run_ca) as server,
        transport([Peer("store", server.url, "data")], other) as t,
    ):
        with trio.fail_after(WAIT), pytest.raises(Unreachable) as err:
            await t.request("job", "store", DataRequest(op=Operation.READ, path="/vo/data/big"))
    assert "unable to get local issuer certificate" in verify_failure(err.value)
    assert [e for e in store.events if e.kind in ("use", "reject")] == []


async def test_wrong_host_certificate_is_unreachable(store: Store, tmp_path: Path) -> None:
    """A certificate from the trusted CA but for another host name is refused (D4: hostname verification)."""
    elsewhere = RunCA.create(tmp_path / "elsewhere", hosts=("store.example",))
    async with (
        served(data(store), elsewhere) as server,
        transport([Peer("store", server.url, "data")], elsewhere) as t,
    ):
        with trio.fail_after(WAIT), pytest.raises(Unreachable) as err:
            await t.request("job", "store", DataRequest(op=Operation.STAT, path="/vo/data/big"))
    assert "IP address mismatch" in verify_failure(err.value)
    assert [e for e in store.events if e.kind in ("use", "reject")] == []


async def test_plain_http_to_tls_server_is_unreachable(store: Store, run_ca: RunCA) -> None:
    """Plain HTTP to an HTTPS-only server fails as Unreachable, never as a crash."""
    async with served(data(store), run_ca) as server:
        plain = server.url.replace("https://", "http://")
        async with transport([Peer("store", plain, "data")]) as t:
            with trio.fail_after(WAIT), pytest.raises(Unreachable):
                await t.request("job", "store", DataRequest(op=Operation.STAT, path="/vo/data/big"))


# -- a data server fetching keys from an issuer, both served -----------------------------------


async def test_data_server_fetches_keys_over_https(
    tmp_path: Path, es256_key: SigningKey, run_ca: RunCA
) -> None:
    """A live data server fetches the issuer's JWKS over HTTPS (discovery, jwks_uri) and admits the token; with the issuer stopped, a cold cache refuses as unknown_key (D2, D4, P10)."""
    stub = StubIssuer(es256_key)
    async with served(issuer(stub), run_ca) as issuer_server:
        iss = f"{issuer_server.url}/vo"
        tok = token(es256_key, "storage.read:/data", issuer=iss)
        req = DataRequest(op=Operation.READ, path="/vo/data/big", token=tok)
        async with transport([Peer("vo", iss, "issuer")], run_ca) as keys:
            warm = data_server(tmp_path / "warm", es256_key, issuer=iss, transport=keys)
            cold = data_server(tmp_path / "cold", es256_key, issuer=iss, transport=keys)
            for s in (warm, cold):
                put_file(s.tree.root, "/vo/data/big", bytes(BIG))
            async with served(data(warm), run_ca) as w, served(data(cold), run_ca) as c:
                peers = [Peer("warm", w.url, "data"), Peer("cold", c.url, "data")]
                async with transport(peers, run_ca) as client:
                    with trio.fail_after(WAIT):
                        first = await client.request("job", "warm", req)
                        await issuer_server.stop()
                        again = await client.request("job", "warm", req)  # cached keys
                        refused = await client.request("job", "cold", req)
    assert first == again == DataResponse(status=200, size=BIG)
    assert isinstance(refused, DataResponse)
    assert (refused.status, refused.reason) == (401, Reason.UNKNOWN_KEY)
    fetches = [
        (e.actor, e.fields["ok"]) for s in (warm, cold) for e in s.events if e.kind == "jwks_fetch"
    ]
    assert fetches == [("store", True), ("store", False)]
    assert stub.seen == [JwksRequest(issuer=iss)]


async def test_device_flow_and_revocation(es256_key: SigningKey, tls: RunCA | None) -> None:
    """Device authorization, the user's approval and a revocation travel as RFC 8628 §3.1-3.3 and RFC 7009 §2 forms and come back as messages (K2)."""
    stub = StubIssuer(es256_key)
    stub.answers[DeviceAuthorizationRequest] = canned_device()
    start = DeviceAuthorizationRequest(client_id="tm", scope="openid offline_access")
    approval = DeviceApproval(user_code="WDJB-MJHT", user="alice", approve=False)
    revoke = RevocationRequest(
        token="rt-x", client_id="tm", client_secret="pw", client_auth=CLIENT_AUTH_BASIC
    )
    async with (
        served(issuer(stub), tls) as server,
        transport([Peer("vo", f"{server.url}/vo", "issuer")], tls) as t,
    ):
        with trio.fail_after(WAIT):
            answers = [await t.request("tm", "vo", m) for m in (start, approval, revoke)]
            stub.answers[RevocationRequest] = refusal(400, "unsupported_token_type")
            refused = await t.request("tm", "vo", revoke)
    assert answers == [canned_device(), Ack(), Ack()]
    assert refused == refusal(400, "unsupported_token_type")
    assert stub.seen == [start, approval, revoke, revoke]


async def test_jwks_nested_thousands_deep_is_a_failed_fetch() -> None:
    """A hostile issuer's discovery document nested 100,000 deep is a failed fetch (502), never a
    RecursionError in the data server that asked (D2)."""
    deep = b"[" * 100_000 + b"]" * 100_000

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=deep, headers={"content-type": "application/json"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    t = HttpTransport({"vo": Peer("vo", "https://vo.example/vo", "issuer")}, _client=client)
    try:
        reply = await t.request("store", "vo", JwksRequest(issuer="https://vo.example/vo"))
    finally:
        await t.aclose()
    assert isinstance(reply, OAuthError) and reply.status == 502
    assert reply.description == "RecursionError"


def test_error_description_of_a_deep_body_is_its_text() -> None:
    """A peer's error body nested thousands deep gives its first bytes as text, not a crash."""
    from scitokens_batch.transport.http import _error_description

    assert _error_description(b"[" * 100_000).startswith("[[[")
