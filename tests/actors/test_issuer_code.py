"""The issuer's authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), in virtual time:
exact redirect URIs, S256 only, single-use short-lived codes bound to client, redirect URI
and verifier, the consent page's login."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import jwt
import pytest
import trio
import trio.testing

from scitokens_batch.actors import ClientPolicy, Issuer
from scitokens_batch.actors.issuer import (
    AUTHORIZATION_CODE_LIFETIME,
    MAX_APPROVAL_FAILURES,
)
from scitokens_batch.protocol import (
    CLIENT_AUTH_POST,
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH,
    AuthorizationRequest,
    AuthorizationResponse,
    OAuthError,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.tokens import peek

from .issuer_helpers import URL, clients, make_issuer, signing_key

REDIRECT = "http://localhost:8080/"
VERIFIER = "v" * 43 + "-._~0123456789"
AUD = "https://storage.example"


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _issuer() -> Issuer:
    """The helpers' issuer plus a public client ``agent`` for the code grant, and a client
    ``nocode`` with a redirect URI but without the grant; alice has a password."""
    registry = clients()
    registry["agent"] = ClientPolicy(
        client_id="agent",
        grants=frozenset({GRANT_AUTHORIZATION_CODE, GRANT_REFRESH}),
        redirect_uris=(REDIRECT, "http://localhost:4242"),
        audiences=(AUD,),
    )
    registry["nocode"] = ClientPolicy(
        client_id="nocode", grants=frozenset({GRANT_REFRESH}), redirect_uris=(REDIRECT,)
    )
    return make_issuer(clients=registry, passwords={"alice": "alice-pw"}, require_password=True)


def _request(**kw: Any) -> AuthorizationRequest:
    fields: dict[str, Any] = {
        "client_id": "agent",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid offline_access read:/data",
        "state": "st-1",
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": _challenge(VERIFIER),
        "code_challenge_method": "S256",
        "user": "alice",
        "password": "alice-pw",
    }
    fields.update(kw)
    return AuthorizationRequest(**fields)


async def _code(issuer: Issuer, **kw: Any) -> str:
    answer = await issuer.handle(_request(**kw))
    assert isinstance(answer, AuthorizationResponse) and answer.code is not None, answer
    assert (answer.redirect_uri, answer.state, answer.error) == (REDIRECT, "st-1", None)
    return answer.code


async def _redeem(issuer: Issuer, code: str, **kw: Any) -> TokenResponse | OAuthError:
    fields: dict[str, Any] = {
        "grant_type": GRANT_AUTHORIZATION_CODE,
        "client_id": "agent",
        "client_auth": CLIENT_AUTH_POST,
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    fields.update(kw)
    answer = await issuer.handle(TokenRequest(**fields))
    assert isinstance(answer, TokenResponse | OAuthError)
    return answer


async def test_code_flow_gives_tokens_and_an_id_token_with_the_nonce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A good request, alice's login and consent give a code; the code with its verifier gives
    an access token (exactly the scopes asked), a refresh token and an ID token carrying the
    nonce, aud = the client id."""
    issuer = _issuer()
    code = await _code(issuer)
    tokens = await _redeem(issuer, code)
    assert isinstance(tokens, TokenResponse)
    assert tokens.scope == "read:/data offline_access openid"
    assert tokens.refresh_token is not None and tokens.id_token is not None
    assert peek(tokens.access_token)[1]["sub"] == "alice"
    claims = jwt.decode(
        tokens.id_token,
        key=signing_key().key.public_key(),  # type: ignore[arg-type]
        algorithms=["ES256"],
        audience="agent",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert (claims["iss"], claims["sub"], claims["nonce"]) == (URL, "alice", "n-0S6_WzA2Mj")


async def test_check_without_user_shows_the_page(autojump_clock: trio.testing.MockClock) -> None:
    """Without a user the request is only checked: no code, no error (the page is shown)."""
    issuer = _issuer()
    answer = await issuer.handle(_request(user=None, password=None))
    assert answer == AuthorizationResponse(redirect_uri=REDIRECT, state="st-1")


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "nobody"},
        {"redirect_uri": None},
        {"redirect_uri": "http://localhost:8080"},  # no trailing slash: not the registered one
        {"redirect_uri": "http://localhost:8080/cb"},  # no prefix matching
        {"redirect_uri": "http://evil.example/"},
    ],
)
async def test_unknown_client_or_redirect_is_not_redirected(
    autojump_clock: trio.testing.MockClock, change: dict[str, Any]
) -> None:
    """RFC 6749 §4.1.2.1: an unknown client or a redirect URI that is not exactly registered
    is an error on the page, never a redirect (no open redirector)."""
    answer = await _issuer().handle(_request(**change))
    assert isinstance(answer, OAuthError) and answer.error == "invalid_request"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_id": "nocode"}, "unauthorized_client"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain", "code_challenge": VERIFIER[:43]}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"scope": "read:data"}, "invalid_scope"),
        ({"audience": "https://evil.example"}, "invalid_target"),
        ({"approve": False}, "access_denied"),
    ],
)
async def test_refusals_go_back_to_the_client(
    autojump_clock: trio.testing.MockClock, change: dict[str, Any], error: str
) -> None:
    """Once client and redirect URI are good, a refusal is a redirect with error and state:
    no grant, no code response type, no PKCE or plain PKCE, bad scope or audience, a denial."""
    answer = await _issuer().handle(_request(**change))
    assert isinstance(answer, AuthorizationResponse)
    assert (answer.error, answer.code, answer.state) == (error, None, "st-1")


async def test_wrong_password_is_403_and_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """A failed login is access_denied 403 on the page; after MAX_APPROVAL_FAILURES failures
    even the right password is refused until the lockout window has passed."""
    issuer = _issuer()
    for _ in range(MAX_APPROVAL_FAILURES):
        bad = await issuer.handle(_request(password="guess"))
        assert isinstance(bad, OAuthError) and (bad.error, bad.status) == ("access_denied", 403)
    locked = await issuer.handle(_request())
    assert isinstance(locked, OAuthError) and locked.status == 403
    await trio.sleep(301)
    assert isinstance(await _code(issuer), str)


@pytest.mark.parametrize(
    "change",
    [
        {"code_verifier": None},
        {"code_verifier": "w" * 43},
        {"code_verifier": VERIFIER[:42]},  # too short for RFC 7636 §4.1
        {"redirect_uri": "http://localhost:4242"},  # registered, but not the request's
        {"redirect_uri": None},
        {"client_id": "cli"},  # another (public) client
    ],
)
async def test_code_is_bound_to_client_redirect_and_verifier(
    autojump_clock: trio.testing.MockClock, change: dict[str, Any]
) -> None:
    """The code gives nothing without the right verifier, the same redirect URI and the same
    client: invalid_grant, and the code is spent by a failed redemption of its client."""
    issuer = _issuer()
    code = await _code(issuer)
    wrong = await _redeem(issuer, code, **change)
    assert isinstance(wrong, OAuthError), wrong
    assert wrong.error in ("invalid_grant", "unauthorized_client")
    if change.get("client_id") != "cli":
        again = await _redeem(issuer, code)
        assert isinstance(again, OAuthError) and again.error == "invalid_grant"


async def test_code_is_single_use_and_replay_revokes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 6749 §4.1.2: a second redemption is invalid_grant and revokes the refresh token
    the first one gave."""
    issuer = _issuer()
    code = await _code(issuer)
    first = await _redeem(issuer, code)
    assert isinstance(first, TokenResponse)
    replay = await _redeem(issuer, code)
    assert isinstance(replay, OAuthError) and replay.error == "invalid_grant"
    refreshed = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_REFRESH,
            client_id="agent",
            refresh_token=first.refresh_token,
        )
    )
    assert isinstance(refreshed, OAuthError) and refreshed.error == "invalid_grant"


async def test_code_expires(autojump_clock: trio.testing.MockClock) -> None:
    """A code redeemed at its lifetime is invalid_grant."""
    issuer = _issuer()
    code = await _code(issuer)
    await trio.sleep(AUTHORIZATION_CODE_LIFETIME)
    late = await _redeem(issuer, code)
    assert isinstance(late, OAuthError) and late.error == "invalid_grant"


async def test_discovery_lists_the_code_flow() -> None:
    """Discovery names the authorization endpoint, S256 only and the code response type."""
    doc = _issuer().discovery_document()
    assert doc["authorization_endpoint"] == URL + "/authorize"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert GRANT_AUTHORIZATION_CODE in doc["grant_types_supported"]
