"""The ASGI apps of live mode (transport/http.py), driven in-process through httpx.ASGITransport:
the data server (conformance M1-M5 over HTTP), the RPC endpoint and the issuer's routes."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_POST,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH,
    Ack,
    CredentialRequest,
    DeviceApproval,
    DeviceAuthorizationRequest,
    JobFinished,
    JwksRequest,
    JwksResponse,
    RevocationRequest,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.protocol import wire as w
from scitokens_batch.tokens import Reason, SigningKey, parse_jwks
from scitokens_batch.transport.http import (
    HEALTH_PATH,
    JOB_HEADER,
    MAX_BODY,
    data_app,
    issuer_app,
    rpc_app,
)

from .helpers import (
    BIG,
    ISSUER,
    T0,
    Store,
    StubIssuer,
    bearer,
    canned_device,
    canned_token,
    data_server,
    discovery,
    echo_ack,
    put_file,
    refusal,
    token,
)


@asynccontextmanager
async def asgi(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def challenge(reply: httpx.Response) -> dict[str, str]:
    """The quoted auth-params of the reply's Bearer challenge."""
    header = reply.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


# -- the data server ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, es256_key: SigningKey) -> Store:
    """A data server over ``tmp_path`` with one big file at /vo/data/big."""
    s = data_server(tmp_path, es256_key)
    put_file(tmp_path, "/vo/data/big", os.urandom(BIG))
    return s


@asynccontextmanager
async def data_client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the data server's HTTP face."""
    async with asgi(data_app("store", store.server.admit, store.tree, realm="store")) as client:
        yield client


async def test_get_streams_exact_bytes(store: Store, es256_key: SigningKey) -> None:
    """GET in scope is 200 with the file's exact bytes, streamed in several chunks (M3, B6, F3)."""
    expected = (store.tree.root / "vo/data/big").read_bytes()
    async with data_client(store) as client:
        reply = await client.get(
            "/vo/data/big", headers=bearer(token(es256_key, "storage.read:/data"))
        )
    assert reply.status_code == 200
    assert reply.headers["content-length"] == str(BIG)
    assert reply.content == expected
    assert store.transport.fetches == [ISSUER]  # keys fetched once, through the transport (D2)


async def test_head_gives_size(store: Store, es256_key: SigningKey) -> None:
    """HEAD in scope is 200 with Content-Length and no body (B11 stat, M3)."""
    async with data_client(store) as client:
        reply = await client.head(
            "/vo/data/big", headers=bearer(token(es256_key, "storage.read:/"))
        )
    assert reply.status_code == 200
    assert reply.headers["content-length"] == str(BIG)
    assert reply.content == b""


async def test_get_missing_is_404(store: Store, es256_key: SigningKey) -> None:
    """An authorized GET of a missing file is 404, not 403 (M3)."""
    async with data_client(store) as client:
        reply = await client.get(
            "/vo/data/nope", headers=bearer(token(es256_key, "storage.read:/"))
        )
    assert reply.status_code == 404
    assert "www-authenticate" not in reply.headers


async def test_put_new_then_on_disk(store: Store, es256_key: SigningKey) -> None:
    """PUT of a new file with storage.create is 201 and the bytes are on disk, parents made (M4, B7)."""
    data = os.urandom(BIG)
    headers = bearer(token(es256_key, "storage.create:/out"))
    async with data_client(store) as client:
        reply = await client.put("/vo/out/alice/run1/f", content=data, headers=headers)
    assert reply.status_code == 201
    assert (store.tree.root / "vo/out/alice/run1/f").read_bytes() == data
    assert [p.name for p in (store.tree.root / "vo/out/alice/run1").iterdir()] == ["f"]


async def test_put_over_existing_with_create_is_403(store: Store, es256_key: SigningKey) -> None:
    """PUT over an existing file with only storage.create is 403 insufficient_scope, the file unchanged (M4, B7)."""
    target = put_file(store.tree.root, "/vo/out/f", b"old")
    async with data_client(store) as client:
        reply = await client.put(
            "/vo/out/f", content=b"new", headers=bearer(token(es256_key, "storage.create:/out"))
        )
    assert reply.status_code == 403
    assert challenge(reply)["error"] == "insufficient_scope"
    assert target.read_bytes() == b"old"


async def test_put_over_existing_with_modify_is_204(store: Store, es256_key: SigningKey) -> None:
    """PUT over an existing file with storage.modify replaces it: 204 (M4, B8)."""
    target = put_file(store.tree.root, "/vo/out/f", b"old contents")
    async with data_client(store) as client:
        reply = await client.put(
            "/vo/out/f", content=b"new", headers=bearer(token(es256_key, "storage.modify:/out"))
        )
    assert reply.status_code == 204
    assert reply.content == b""
    assert "content-length" not in reply.headers  # RFC 9110 §8.6
    assert target.read_bytes() == b"new"


async def test_delete_with_modify(store: Store, es256_key: SigningKey) -> None:
    """DELETE with storage.modify is 204, then 404 once the file is gone (M4, B8)."""
    target = put_file(store.tree.root, "/vo/out/f", b"x")
    headers = bearer(token(es256_key, "storage.modify:/out"))
    async with data_client(store) as client:
        first = await client.delete("/vo/out/f", headers=headers)
        second = await client.delete("/vo/out/f", headers=headers)
    assert (first.status_code, second.status_code) == (204, 404)
    assert not target.exists()


async def test_delete_with_create_is_403(store: Store, es256_key: SigningKey) -> None:
    """DELETE with only storage.create is 403 and the file stays (M4, B7)."""
    target = put_file(store.tree.root, "/vo/out/f", b"x")
    async with data_client(store) as client:
        reply = await client.delete(
            "/vo/out/f", headers=bearer(token(es256_key, "storage.create:/out"))
        )
    assert reply.status_code == 403
    assert target.exists()


async def test_mkcol_then_405(store: Store, es256_key: SigningKey) -> None:
    """MKCOL is 201 (parents made), then 405 on the existing collection (M4, B7, RFC 4918 §9.3.1)."""
    headers = bearer(token(es256_key, "storage.create:/out"))
    async with data_client(store) as client:
        first = await client.request("MKCOL", "/vo/out/a/b", headers=headers)
        second = await client.request("MKCOL", "/vo/out/a/b", headers=headers)
    assert (first.status_code, second.status_code) == (201, 405)
    assert (store.tree.root / "vo/out/a/b").is_dir()


async def test_mkcol_under_partial_name_scope_is_403(store: Store, es256_key: SigningKey) -> None:
    """MKCOL under a partial-name scope is 403 (M5, B4)."""
    async with data_client(store) as client:
        reply = await client.request(
            "MKCOL", "/vo/outer", headers=bearer(token(es256_key, "storage.create:/out"))
        )
    assert reply.status_code == 403
    assert not (store.tree.root / "vo/outer").exists()


async def test_expired_token_is_401(store: Store, es256_key: SigningKey) -> None:
    """An expired token is 401 with a Bearer challenge error="invalid_token" whose description names expired (RFC 6750 §3.1, M1)."""
    expired = token(es256_key, "storage.read:/", issued_at=T0 - 7200, lifetime=600)
    async with data_client(store) as client:
        reply = await client.get("/vo/data/big", headers=bearer(expired))
    assert reply.status_code == 401
    params = challenge(reply)
    assert params["realm"] == "store"
    assert params["error"] == "invalid_token"
    assert params["error_description"].startswith("expired")
    assert w.parse_bearer_challenge(reply.headers["www-authenticate"])[1] is Reason.EXPIRED
    assert reply.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer "}]
)
async def test_no_token_is_401_without_error(store: Store, headers: dict[str, str]) -> None:
    """No bearer token is 401 with a challenge that has no error attribute (RFC 6750 §3.1, F3)."""
    async with data_client(store) as client:
        reply = await client.get("/vo/data/big", headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="store"'
    assert w.parse_bearer_challenge(reply.headers["www-authenticate"])[1] is Reason.MISSING_TOKEN


async def test_out_of_scope_is_403(store: Store, es256_key: SigningKey) -> None:
    """A path outside the token's scope is 403 error="insufficient_scope" (RFC 6750 §3.1, M5)."""
    put_file(store.tree.root, "/vo/private/f", b"secret")
    async with data_client(store) as client:
        reply = await client.get(
            "/vo/private/f", headers=bearer(token(es256_key, "storage.read:/data"))
        )
    assert reply.status_code == 403
    params = challenge(reply)
    assert params["error"] == "insufficient_scope"
    assert params["error_description"].startswith("insufficient_scope")
    assert b"secret" not in reply.content


async def test_dir_scope_does_not_grant_dirty(store: Store, es256_key: SigningKey) -> None:
    """storage.read:/dir grants /dir/f but not /dirty/f (M5, B4)."""
    put_file(store.tree.root, "/vo/dir/f", b"in")
    put_file(store.tree.root, "/vo/dirty/f", b"out")
    headers = bearer(token(es256_key, "storage.read:/dir"))
    async with data_client(store) as client:
        inside = await client.get("/vo/dir/f", headers=headers)
        outside = await client.get("/vo/dirty/f", headers=headers)
    assert (inside.status_code, inside.content) == (200, b"in")
    assert outside.status_code == 403


async def test_scope_without_storage_is_403(store: Store, es256_key: SigningKey) -> None:
    """A token with only openid is 403 on GET and on PUT (M2)."""
    headers = bearer(token(es256_key, "openid"))
    async with data_client(store) as client:
        get = await client.get("/vo/data/big", headers=headers)
        put = await client.put("/vo/out/x", content=b"x", headers=headers)
    assert (get.status_code, put.status_code) == (403, 403)


async def test_untrusted_issuer_before_key_fetch(store: Store, es256_key: SigningKey) -> None:
    """An untrusted issuer is refused 401 untrusted_issuer before any key fetch (M1)."""
    other = token(es256_key, "storage.read:/", issuer="https://evil.example/vo")
    async with data_client(store) as client:
        reply = await client.get("/vo/data/big", headers=bearer(other))
    assert reply.status_code == 401
    assert challenge(reply)["error_description"].startswith("untrusted_issuer")
    assert store.transport.fetches == []


async def test_base_path_applies(store: Store, es256_key: SigningKey) -> None:
    """Scope paths are relative to the issuer's base path: storage.read:/ does not reach /data/big outside /vo (B6, M1)."""
    put_file(store.tree.root, "/data/big", b"outside the base path")
    async with data_client(store) as client:
        reply = await client.get("/data/big", headers=bearer(token(es256_key, "storage.read:/")))
    assert reply.status_code == 403


@pytest.mark.parametrize("path", ["/vo/data/%2e%2e/private/f", "/vo/data/%2E%2E/%2E%2E/private/f"])
async def test_dot_dot_refused(store: Store, es256_key: SigningKey, path: str) -> None:
    """A '..' component in the request path is refused without reaching the file (M5, B5)."""
    put_file(store.tree.root, "/vo/private/f", b"secret")
    async with data_client(store) as client:
        reply = await client.get(path, headers=bearer(token(es256_key, "storage.read:/")))
    assert reply.status_code == 403  # as XRootD answers "/../" (peers.md), and before the store
    assert challenge(reply)["error"] == "insufficient_scope"
    assert b"secret" not in reply.content


async def test_percent_in_decoded_path_refused(store: Store, es256_key: SigningKey) -> None:
    """A path that still holds an escape once decoded ('/di%2572') is refused: the scope check would decode it again and grant /dir (M5, B5)."""
    put_file(store.tree.root, "/vo/di%72/secret", b"outside /dir")
    async with data_client(store) as client:
        reply = await client.get(
            "/vo/di%2572/secret", headers=bearer(token(es256_key, "storage.read:/dir"))
        )
    assert reply.status_code == 400
    assert b"outside" not in reply.content


async def test_escaped_plain_characters_are_the_same_file(
    store: Store, es256_key: SigningKey
) -> None:
    """An escaped unreserved character ('%64' for 'd') names the same file as the plain one (RFC 3986 §6.2.2.2)."""
    put_file(store.tree.root, "/vo/dir/f", b"in")
    async with data_client(store) as client:
        reply = await client.get(
            "/vo/%64ir/f", headers=bearer(token(es256_key, "storage.read:/dir"))
        )
    assert (reply.status_code, reply.content) == (200, b"in")


@pytest.mark.parametrize("method", ["POST", "PROPPATCH", "PATCH", "OPTIONS"])
async def test_unsupported_method(store: Store, es256_key: SigningKey, method: str) -> None:
    """An unsupported method is 405 with Allow listing what the server does (RFC 9110 §15.5.6)."""
    async with data_client(store) as client:
        reply = await client.request(
            method, "/vo/data/big", headers=bearer(token(es256_key, "storage.read:/"))
        )
    assert reply.status_code == 405
    allowed = {m.strip() for m in reply.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "PUT", "DELETE", "MKCOL", "PROPFIND"}


async def test_health(store: Store) -> None:
    """The health route answers 200 with the actor's name, without a token."""
    async with data_client(store) as client:
        reply = await client.get(HEALTH_PATH)
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "actor": "store"}


async def test_job_header_reaches_the_events(store: Store, es256_key: SigningKey) -> None:
    """The job header is recorded with the access, as in virtual time."""
    headers = bearer(token(es256_key, "storage.read:/")) | {JOB_HEADER: "42"}
    async with data_client(store) as client:
        await client.get("/vo/data/big", headers=headers)
    (use,) = [e for e in store.events if e.kind == "use"]
    assert (use.fields["job"], use.fields["status"], use.fields["path"]) == (
        42,
        200,
        "/vo/data/big",
    )


@pytest.mark.parametrize("path", ["/vo/out/d", "/vo/out/f/sub"])
async def test_put_conflicts_are_409(store: Store, es256_key: SigningKey, path: str) -> None:
    """PUT onto a directory, or below a file, is 409 Conflict, not a crash (RFC 9110 §15.5.10)."""
    (store.tree.root / "vo/out/d").mkdir(parents=True)
    put_file(store.tree.root, "/vo/out/f", b"x")
    async with data_client(store) as client:
        reply = await client.put(
            path, content=b"x", headers=bearer(token(es256_key, "storage.modify:/out"))
        )
    assert reply.status_code == 409
    assert (store.tree.root / "vo/out/d").is_dir()
    assert (store.tree.root / "vo/out/f").read_bytes() == b"x"


async def test_mkcol_under_a_file_is_409(store: Store, es256_key: SigningKey) -> None:
    """MKCOL below an existing file is a conflict (RFC 4918 §9.3.1), not a crash."""
    put_file(store.tree.root, "/vo/out/f", b"x")
    async with data_client(store) as client:
        reply = await client.request(
            "MKCOL", "/vo/out/f/sub", headers=bearer(token(es256_key, "storage.create:/out"))
        )
    assert reply.status_code == 409


# -- RPC -----------------------------------------------------------------------------------------


async def test_rpc_round_trip() -> None:
    """POST /rpc carries one envelope to the handler and its answer back (protocol/_wire.py RPC)."""
    message = JobFinished(job=3, host="node-1", exit_code=0)
    async with asgi(rpc_app("qm", echo_ack)) as client:
        reply = await client.post("/rpc", content=w.encode_rpc(message))
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert w.decode_rpc(reply.content) == Ack(detail="JobFinished")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"type": "Nope", "body": {}}',
        b'{"type": "JobFinished", "body": {"job": "1"}}',
    ],
)
async def test_rpc_bad_envelope_is_400(body: bytes) -> None:
    """A broken envelope is 400 invalid_request, and the handler is not called."""
    calls: list[Any] = []

    async def handler(message: Any) -> Any:
        calls.append(message)
        return Ack()

    async with asgi(rpc_app("qm", handler)) as client:
        reply = await client.post("/rpc", content=body)
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_request"
    assert calls == []


async def test_rpc_routes() -> None:
    """GET /rpc is 405 with Allow: POST, another path 404, health 200."""
    async with asgi(rpc_app("qm", echo_ack)) as client:
        get = await client.get("/rpc")
        other = await client.post("/other", content=b"{}")
        health = await client.get(HEALTH_PATH)
    assert (get.status_code, get.headers["allow"]) == (405, "POST")
    assert other.status_code == 404
    assert health.json() == {"status": "ok", "actor": "qm"}


async def test_rpc_body_too_large() -> None:
    """A body over MAX_BODY is 413, never read whole."""
    async with asgi(rpc_app("qm", echo_ack)) as client:
        reply = await client.post("/rpc", content=b" " * (MAX_BODY + 1))
    assert reply.status_code == 413


async def test_rpc_handler_failure_is_500() -> None:
    """A handler that raises gives 500 with a JSON error and no traceback."""

    async def broken(message: Any) -> Any:
        raise RuntimeError("bug with secret detail")

    async with asgi(rpc_app("qm", broken)) as client:
        reply = await client.post("/rpc", content=w.encode_rpc(Ack()))
    assert reply.status_code == 500
    assert reply.json() == {"error": "server_error"}


async def test_rpc_non_rpc_answer_is_500() -> None:
    """A handler answering a message that does not travel over RPC gives 500."""

    async def wrong(message: Any) -> Any:
        return canned_token()

    async with asgi(rpc_app("qm", wrong)) as client:
        reply = await client.post(
            "/rpc", content=w.encode_rpc(CredentialRequest(user="a", service="s"))
        )
    assert reply.status_code == 500


# -- the issuer ----------------------------------------------------------------------------------


@pytest.fixture
def stub(es256_key: SigningKey) -> StubIssuer:
    """A stub issuer handler."""
    return StubIssuer(es256_key)


@asynccontextmanager
async def issuer_client(
    stub: StubIssuer, url: str = ISSUER, **kw: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an issuer app at ``url`` answered by ``stub``."""
    async with asgi(issuer_app("vo", url, stub, discovery(url), **kw)) as client:
        yield client


def form_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Content type of a form post, plus ``extra``."""
    return {"content-type": "application/x-www-form-urlencoded", **(extra or {})}


@pytest.mark.parametrize(
    "path",
    [
        "/vo/.well-known/openid-configuration",
        "/.well-known/openid-configuration/vo",
        "/.well-known/oauth-authorization-server/vo",
    ],
)
async def test_discovery_routes(stub: StubIssuer, path: str) -> None:
    """The discovery document is served under the issuer's path and at the RFC 8414 forms (D2, D3, D5)."""
    async with issuer_client(stub) as client:
        reply = await client.get(path)
    assert reply.status_code == 200
    assert reply.json()["jwks_uri"] == f"{ISSUER}/jwks"
    assert reply.json()["issuer"] == ISSUER


async def test_issuer_at_host_root(stub: StubIssuer) -> None:
    """An issuer without a path serves /.well-known/openid-configuration and /token at the root (D2, D3)."""
    async with issuer_client(stub, "https://issuer.example") as client:
        meta = await client.get("/.well-known/openid-configuration")
        tok = await client.post(
            "/token", content=b"grant_type=refresh_token&client_id=a", headers=form_headers()
        )
    assert meta.status_code == 200 and meta.json()["issuer"] == "https://issuer.example"
    assert tok.status_code == 200


async def test_jwks_with_max_age(stub: StubIssuer, es256_key: SigningKey) -> None:
    """GET /jwks serves the keys with Cache-Control max-age from the issuer's answer (D4, D5)."""
    stub.answers[JwksRequest] = JwksResponse(keys=(es256_key.public,), max_age=900)
    async with issuer_client(stub) as client:
        reply = await client.get("/vo/jwks")
    assert reply.status_code == 200
    assert re.search(r"\bmax-age=900\b", reply.headers["cache-control"])
    assert parse_jwks(reply.json()) == (es256_key.public,)
    assert stub.seen == [JwksRequest(issuer=ISSUER)]


async def test_jwks_failure_is_not_a_crash(stub: StubIssuer) -> None:
    """An issuer that cannot answer the JWKS request gives its error status, not a crash (D2)."""
    stub.answers[JwksRequest] = refusal(503, "temporarily_unavailable")
    async with issuer_client(stub) as client:
        reply = await client.get("/vo/jwks")
    assert reply.status_code == 503


async def test_token_basic(stub: StubIssuer) -> None:
    """A token request with client_secret_basic reaches the handler decoded, and the answer is no-store (RFC 6749 §2.3.1, §5.1, K3)."""
    stub.answers[TokenRequest] = canned_token()
    req = TokenRequest(
        grant_type=GRANT_CLIENT_CREDENTIALS,
        client_id="fts:prod",
        client_secret="p%ss w:rd",
        client_auth=CLIENT_AUTH_BASIC,
        scope="storage.read:/",
        audience="https://store.example",
    )
    body, headers = w.token_request_form(req)
    async with issuer_client(stub) as client:
        reply = await client.post("/vo/token", content=body, headers=form_headers(headers))
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["pragma"] == "no-cache"
    assert w.decode_token_response(200, reply.content) == TokenResponse(
        access_token="at-canned", expires_in=1200.0, scope="storage.read:/"
    )
    assert stub.seen == [req]


async def test_invalid_client_after_basic_has_challenge(stub: StubIssuer) -> None:
    """invalid_client after HTTP Basic is 401 with WWW-Authenticate: Basic (RFC 6749 §5.2)."""
    stub.answers[TokenRequest] = refusal(401, "invalid_client", "wrong secret")
    body = w.encode_form({"grant_type": GRANT_REFRESH, "refresh_token": "rt"})
    async with issuer_client(stub) as client:
        reply = await client.post(
            "/vo/token",
            content=body,
            headers=form_headers({"Authorization": w.basic_header("a", "b")}),
        )
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Basic ")
    assert reply.json() == {"error": "invalid_client", "error_description": "wrong secret"}
    assert reply.headers["cache-control"] == "no-store"


async def test_invalid_client_after_post_has_no_challenge(stub: StubIssuer) -> None:
    """invalid_client without HTTP Basic is 401 without a Basic challenge (RFC 6749 §5.2)."""
    stub.answers[TokenRequest] = refusal(401, "invalid_client")
    req = TokenRequest(
        grant_type=GRANT_REFRESH, client_id="a", client_secret="b", client_auth=CLIENT_AUTH_POST
    )
    body, _ = w.token_request_form(req)
    async with issuer_client(stub) as client:
        reply = await client.post("/vo/token", content=body, headers=form_headers())
    assert reply.status_code == 401
    assert "www-authenticate" not in reply.headers


async def test_unusable_basic_is_401(stub: StubIssuer) -> None:
    """Basic credentials that do not decode are 401 invalid_client with a Basic challenge, the handler not called (RFC 6749 §5.2)."""
    async with issuer_client(stub) as client:
        reply = await client.post(
            "/vo/token",
            content=b"grant_type=refresh_token",
            headers=form_headers({"Authorization": "Basic !!"}),
        )
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"
    assert reply.headers["www-authenticate"].startswith("Basic ")
    assert stub.seen == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"grant_type=refresh_token&grant_type=client_credentials&client_id=a", "grant_type"),
        (b"client_id=a", "grant_type"),
        (b"grant_type=refresh_token&client_id=a&client_id=b", "client_id"),
    ],
)
async def test_malformed_form_is_400(stub: StubIssuer, body: bytes, field: str) -> None:
    """A malformed token request is 400 invalid_request naming the field, no-store, handler not called (RFC 6749 §3.1, §5.2)."""
    async with issuer_client(stub) as client:
        reply = await client.post("/vo/token", content=body, headers=form_headers())
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_request"
    assert field in reply.json()["error_description"]
    assert reply.headers["cache-control"] == "no-store"
    assert stub.seen == []


async def test_rate_limited_has_retry_after(stub: StubIssuer) -> None:
    """A 503 temporarily_unavailable carries Retry-After (RFC 6749 §5.2, RFC 9110 §10.2.3)."""
    stub.answers[TokenRequest] = refusal(503, "temporarily_unavailable", "rate limit exceeded")
    async with issuer_client(stub) as client:
        reply = await client.post(
            "/vo/token", content=b"grant_type=refresh_token&client_id=a", headers=form_headers()
        )
    assert reply.status_code == 503
    assert reply.headers["retry-after"].isdigit()
    assert w.decode_token_response(503, reply.content) == refusal(
        503, "temporarily_unavailable", "rate limit exceeded"
    )


async def test_get_on_token_is_405(stub: StubIssuer) -> None:
    """GET on the token endpoint is 405 with Allow: POST (RFC 6749 §3.2)."""
    async with issuer_client(stub) as client:
        reply = await client.get("/vo/token")
    assert (reply.status_code, reply.headers["allow"]) == (405, "POST")


@pytest.mark.parametrize("path", ["/vo/nope", "/token", "/vo/token/extra", "/other/jwks"])
async def test_unknown_path_is_404(stub: StubIssuer, path: str) -> None:
    """Paths outside the issuer's routes are 404, including the routes without the issuer's path (D3)."""
    async with issuer_client(stub) as client:
        reply = await client.post(path, content=b"grant_type=x&client_id=a", headers=form_headers())
    assert reply.status_code == 404


async def test_device_flow_routes(stub: StubIssuer) -> None:
    """Device authorization, the approval page and its POST reach the handler and answer as RFC 8628 §3.2/§3.3 says (K2)."""
    stub.answers[DeviceAuthorizationRequest] = canned_device()
    async with issuer_client(stub) as client:
        start = await client.post(
            "/vo/device_authorization", content=b"client_id=tm&scope=openid", headers=form_headers()
        )
        page = await client.get("/vo/device")
        approve = await client.post(
            "/vo/device",
            content=w.device_approval_form(DeviceApproval(user_code="WDJB-MJHT", user="alice")),
            headers=form_headers(),
        )
    assert start.status_code == 200 and start.headers["cache-control"] == "no-store"
    assert w.decode_device_authorization_response(200, start.content) == canned_device()
    assert page.status_code == 200 and "user_code" in page.text
    assert approve.status_code == 200
    assert stub.seen == [
        DeviceAuthorizationRequest(client_id="tm", scope="openid"),
        DeviceApproval(user_code="WDJB-MJHT", user="alice"),
    ]


async def test_revocation(stub: StubIssuer) -> None:
    """Revocation answers 200 when the handler acks, 400 with the detail when it does not (RFC 7009 §2.2)."""
    req = RevocationRequest(
        token="rt-x", client_id="tm", client_secret="s", client_auth=CLIENT_AUTH_BASIC
    )
    body, headers = w.revocation_form(req)
    async with issuer_client(stub) as client:
        ok = await client.post("/vo/revoke", content=body, headers=form_headers(headers))
        stub.answers[RevocationRequest] = Ack(ok=False, detail="nope")
        refused = await client.post("/vo/revoke", content=body, headers=form_headers(headers))
    assert ok.status_code == 200
    assert w.decode_ack_or_error(ok.status_code, ok.content) == Ack()
    assert refused.status_code == 400 and refused.json()["error_description"] == "nope"
    assert stub.seen == [req, req]


async def test_issuer_handler_wrong_answer_is_500(stub: StubIssuer) -> None:
    """A handler answering something that is no issuer answer gives 500, not a traceback."""
    stub.answers[TokenRequest] = JobFinished(job=1, host="h", exit_code=0)
    async with issuer_client(stub) as client:
        reply = await client.post(
            "/vo/token", content=b"grant_type=refresh_token&client_id=a", headers=form_headers()
        )
    assert reply.status_code == 500


async def test_issuer_health(stub: StubIssuer) -> None:
    """The issuer answers the health route too."""
    async with issuer_client(stub) as client:
        reply = await client.get(HEALTH_PATH)
    assert reply.json() == {"status": "ok", "actor": "vo"}
