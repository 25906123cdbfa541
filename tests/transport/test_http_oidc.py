"""The issuer app's OIDC routes, in process (no sockets): authorize page and redirect,
userinfo challenges, registration, the ID token in token responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from scitokens_batch.protocol import (
    AuthorizationRequest,
    AuthorizationResponse,
    ClientRegistrationRequest,
    ClientRegistrationResponse,
    OAuthError,
    TokenResponse,
    UserinfoRequest,
    UserinfoResponse,
)
from scitokens_batch.protocol import wire as w
from scitokens_batch.tokens import SigningKey
from scitokens_batch.transport.http import issuer_app

from .helpers import StubIssuer, discovery

ISSUER = "https://issuer.example/vo"
QUERY = {
    "client_id": "app",
    "response_type": "code",
    "redirect_uri": "http://localhost:8080/",
    "scope": "openid read:/data",
    "state": "s&1",
    "code_challenge": "c" * 43,
    "code_challenge_method": "S256",
}


@asynccontextmanager
async def _client(stub: StubIssuer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the issuer app in-process, answered by ``stub``."""
    app = issuer_app("vo", ISSUER, stub, discovery(ISSUER))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_authorize_page_then_redirect() -> None:
    """GET /authorize asks the issuer to check and shows the consent form carrying the query;
    POST /authorize with the login answers a 302 to the redirect URI with code and state."""
    stub = StubIssuer(SigningKey.generate(kid="k"))
    stub.answers[AuthorizationRequest] = AuthorizationResponse(
        redirect_uri=QUERY["redirect_uri"], state="s&1"
    )
    async with _client(stub) as client:
        page = await client.get("/vo/authorize", params=QUERY)
        stub.answers[AuthorizationRequest] = AuthorizationResponse(
            redirect_uri=QUERY["redirect_uri"], code="ac-x", state="s&1"
        )
        consent = await client.post(
            "/vo/authorize", data={**QUERY, "user": "alice", "password": "pw", "approve": "yes"}
        )
    assert page.status_code == 200 and 'name=state value="s&amp;1"' in page.text
    assert consent.status_code == 302
    assert consent.headers["location"] == "http://localhost:8080/?code=ac-x&state=s%261"
    check, login = stub.seen
    assert isinstance(check, AuthorizationRequest) and check.user is None
    assert isinstance(login, AuthorizationRequest)
    assert (login.user, login.password, login.approve) == ("alice", "pw", True)


async def test_authorize_error_is_a_page_or_a_redirect() -> None:
    """An OAuthError from the check is a JSON 400 without Location; a refusal with a redirect
    URI is a 302 carrying error and state."""
    stub = StubIssuer(SigningKey.generate(kid="k"))
    stub.answers[AuthorizationRequest] = OAuthError(error="invalid_request", description="x")
    async with _client(stub) as client:
        bad = await client.get("/vo/authorize", params=QUERY)
        stub.answers[AuthorizationRequest] = AuthorizationResponse(
            redirect_uri=QUERY["redirect_uri"], error="access_denied", state="s"
        )
        denied = await client.get("/vo/authorize", params=QUERY)
        missing = await client.get("/vo/authorize")
    assert bad.status_code == 400 and "location" not in bad.headers
    assert denied.status_code == 302
    assert denied.headers["location"] == "http://localhost:8080/?error=access_denied&state=s"
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


async def test_userinfo_challenges_and_answer() -> None:
    """Userinfo: no bearer is a bare 401 challenge (the handler is not asked); an error
    carries it in WWW-Authenticate; an answer is sub, preferred_username and wlcg.groups."""
    stub = StubIssuer(SigningKey.generate(kid="k"))
    async with _client(stub) as client:
        bare = await client.get("/vo/userinfo")
        stub.answers[UserinfoRequest] = OAuthError(
            error="insufficient_scope", description="no openid", status=403
        )
        narrow = await client.get("/vo/userinfo", headers={"authorization": "Bearer t1"})
        stub.answers[UserinfoRequest] = UserinfoResponse(sub="alice", groups=("/wlcg",))
        good = await client.post("/vo/userinfo", headers={"authorization": "Bearer t2"})
        put = await client.put("/vo/userinfo")
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == 'Bearer realm="userinfo"'
    assert narrow.status_code == 403
    assert 'error="insufficient_scope"' in narrow.headers["www-authenticate"]
    assert good.json() == {"sub": "alice", "preferred_username": "alice", "wlcg.groups": ["/wlcg"]}
    assert put.status_code == 405
    assert stub.seen == [UserinfoRequest(token="t1"), UserinfoRequest(token="t2")]


async def test_register_and_id_token() -> None:
    """POST /register maps JSON metadata to the message and answers 201 with the client; a
    token response carries id_token; wrong metadata types are invalid_client_metadata."""
    stub = StubIssuer(SigningKey.generate(kid="k"))
    stub.answers[ClientRegistrationRequest] = ClientRegistrationResponse(
        client_id="dcr-1",
        client_secret="cs-1",
        client_id_issued_at=5,
        redirect_uris=("http://localhost:1/",),
        grant_types=("authorization_code",),
        scope="read:/data",
        token_endpoint_auth_method="client_secret_basic",
    )
    async with _client(stub) as client:
        reg = await client.post(
            "/vo/register",
            json={"redirect_uris": ["http://localhost:1/"], "grant_types": ["authorization_code"]},
        )
        bad = await client.post("/vo/register", json={"redirect_uris": "http://x/"})
    assert reg.status_code == 201 and reg.headers["cache-control"] == "no-store"
    doc = reg.json()
    assert (doc["client_id"], doc["client_secret"], doc["response_types"]) == (
        "dcr-1",
        "cs-1",
        ["code"],
    )
    assert doc["client_secret_expires_at"] == 0
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"
    body = w.token_response_body(
        TokenResponse(access_token="a", expires_in=1, scope="openid", id_token="idt")
    )
    assert body["id_token"] == "idt"
    decoded = w.decode_token_response(200, httpx.Response(200, json=body).content)
    assert isinstance(decoded, TokenResponse) and decoded.id_token == "idt"
