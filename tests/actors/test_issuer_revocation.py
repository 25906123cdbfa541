"""The issuer's revocation endpoint (E4, E6; RFC 7009 §2.1-2.2.1)."""

from __future__ import annotations

import trio
import trio.testing

from scitokens_batch.actors import Issuer
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_REFRESH,
    Ack,
    Message,
    OAuthError,
    RevocationRequest,
)

from .issuer_helpers import SECRETS, error, make_issuer, token

AUD = "https://storage.example"


async def _revoke(
    issuer: Issuer, token_text: str, client: str = "token_manager", **kw: str
) -> Message:
    kw.setdefault("client_secret", SECRETS[client])
    return await issuer.handle(
        RevocationRequest(
            token=token_text,
            client_id=client,
            client_auth=CLIENT_AUTH_BASIC,
            token_type_hint="refresh_token",
            **kw,
        )
    )


async def test_revoked_refresh_token_is_invalid_grant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """E4/RFC 7009 §2.1: the issuer revokes a refresh token on request (200), after which it
    is invalid_grant, and so is every token rotated from the same login (a predecessor still
    in its grace, too): "the revocation of ... the underlying authorization grant"."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    current = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert current.refresh_token is not None
    await trio.sleep(10)
    assert await _revoke(issuer, current.refresh_token) == Ack()
    for presented in (current.refresh_token, rt):
        refused = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=presented)
        assert (refused.error, refused.description) == ("invalid_grant", "refresh token revoked")
    other = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=other)  # another login: fine


async def test_unknown_or_already_revoked_token_is_200() -> None:
    """RFC 7009 §2.2: "invalid tokens do not cause an error response": an unknown token, or
    one revoked before, is answered 200 like a revoked one."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    assert await _revoke(issuer, "rt-" + "0" * 48) == Ack()
    assert await _revoke(issuer, "junk") == Ack()
    assert await _revoke(issuer, rt) == Ack()
    assert await _revoke(issuer, rt) == Ack()


async def test_another_clients_token_is_refused() -> None:
    """RFC 7009 §2.1: the server "verifies whether the token was issued to the client making
    the revocation request. If this validation fails, the request is refused and the client is
    informed of the error" — here RFC 6749 §5.2's invalid_grant ("issued to another client");
    the token stays valid."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    refused = await _revoke(issuer, rt, client="fts")
    assert isinstance(refused, OAuthError)
    assert (refused.error, refused.status) == ("invalid_grant", 400)
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)


async def test_revocation_needs_client_authentication() -> None:
    """RFC 7009 §2.1 / RFC 6749 §5.2: a wrong secret is invalid_client (401), an unknown
    client too, and nothing is revoked."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    wrong = await _revoke(issuer, rt, client_secret="cs-wrong")
    assert isinstance(wrong, OAuthError) and (wrong.error, wrong.status) == ("invalid_client", 401)
    unknown = await issuer.handle(RevocationRequest(token=rt, client_id="nobody"))
    assert isinstance(unknown, OAuthError) and unknown.error == "invalid_client"
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)


async def test_access_tokens_cannot_be_revoked() -> None:
    """E6 / RFC 7009 §2.2.1: a valid access token of ours is unsupported_token_type (access
    tokens are not revocable; they expire)."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    access = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    answer = await _revoke(issuer, access.access_token)
    assert isinstance(answer, OAuthError)
    assert (answer.error, answer.status) == ("unsupported_token_type", 400)
