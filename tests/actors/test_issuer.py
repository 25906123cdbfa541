"""The issuer's token endpoint as an actor: grants, rotation, narrowing, errors (E4, B15, K3-K5)."""

from __future__ import annotations

import random

import pytest

from scitokens_batch.actors import Issuer, UserPolicy
from scitokens_batch.metrics import ListSink, Recorder
from scitokens_batch.protocol import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    JwksRequest,
    JwksResponse,
    OAuthError,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.tokens import KeyRing, Profile, SigningKey, parse_scope, peek

URL = "https://issuer.example/vo"
T0 = 1_767_225_600.0


class Clock:
    """A settable clock for a synchronous look at a reactive actor."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> Issuer:
    users = {
        "alice": UserPolicy(
            name="alice", scopes=(parse_scope("read:/data"), parse_scope("write:/out/alice"))
        ),
        "fts": UserPolicy(name="fts", scopes=(parse_scope("read:/data"),)),
    }
    return Issuer(
        name="vo",
        url=URL,
        profile=Profile.SCITOKENS,
        keys=KeyRing.single(SigningKey.generate(kid="vo-1")),
        users=users,
        access_token_lifetime=1200,
        refresh_token_lifetime=30 * 86400,
        max_requests_per_second=3,
        refresh_grace=600,
        now=clock,
        rng=random.Random(1),
        recorder=Recorder(clock=lambda: 0.0, sink=ListSink()),
        log=None,
    )


async def _ask(issuer: Issuer, **kw: object) -> TokenResponse | OAuthError:
    answer = await issuer.handle(TokenRequest(client_id="token_manager", **kw))  # type: ignore[arg-type]
    assert isinstance(answer, TokenResponse | OAuthError)
    return answer


async def test_refresh_rotates_with_grace(issuer: Issuer, clock: Clock) -> None:
    """E4/I7: each refresh gives a new refresh token; the old one works only within the grace."""
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience="https://s")
    first = await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert isinstance(first, TokenResponse) and first.refresh_token not in (None, rt)
    assert peek(first.access_token)[1]["aud"] == "https://s"
    clock.t += 599
    assert isinstance(await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt), TokenResponse)
    clock.t += 1
    late = await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert isinstance(late, OAuthError) and (late.error, late.status) == ("invalid_grant", 400)
    assert isinstance(
        await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=first.refresh_token),
        TokenResponse,
    )


async def test_revoked_and_foreign_refresh_tokens(issuer: Issuer) -> None:
    """RFC 6749 §5.2: a revoked refresh token, or another client's, is invalid_grant."""
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience="https://s")
    other = await issuer.handle(
        TokenRequest(grant_type=GRANT_REFRESH, client_id="thief", refresh_token=rt)
    )
    assert isinstance(other, OAuthError) and other.error == "invalid_grant"
    issuer.revoke_user("alice")
    revoked = await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert isinstance(revoked, OAuthError) and "revoked" in revoked.description


async def test_request_narrowed_to_policy(issuer: Issuer) -> None:
    """B15: scopes beyond the policy are dropped and the response says what was granted;
    nothing grantable at all is invalid_scope."""
    rt = issuer.enroll(
        "alice", client="token_manager", scopes="read:/data write:/out/alice", audience="https://s"
    )
    narrowed = await _ask(
        issuer, grant_type=GRANT_REFRESH, refresh_token=rt, scope="read:/data/run1 write:/out/bob"
    )
    assert isinstance(narrowed, TokenResponse) and narrowed.scope == "read:/data/run1"
    refused = await _ask(
        issuer, grant_type=GRANT_REFRESH, refresh_token=narrowed.refresh_token, scope="write:/"
    )
    assert isinstance(refused, OAuthError) and refused.error == "invalid_scope"


async def test_client_credentials(issuer: Issuer) -> None:
    """K3: a client with a policy gets a token for itself, no refresh token; others are refused."""
    ok = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS,
            client_id="fts",
            scope="read:/data",
            audience="https://fts",
        )
    )
    assert isinstance(ok, TokenResponse) and ok.refresh_token is None
    assert peek(ok.access_token)[1]["sub"] == "fts"
    bad = await issuer.handle(TokenRequest(grant_type=GRANT_CLIENT_CREDENTIALS, client_id="nobody"))
    assert isinstance(bad, OAuthError) and (bad.error, bad.status) == ("invalid_client", 401)


async def test_exchange_never_widens(issuer: Issuer, clock: Clock) -> None:
    """K4/K5: an exchange may narrow the subject token's scopes and retarget its audience,
    never widen them; an expired or foreign subject token is invalid_grant."""
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience="https://fts")
    subject = await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert isinstance(subject, TokenResponse)
    narrow = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_TOKEN_EXCHANGE,
            client_id="fts",
            subject_token=subject.access_token,
            scope="read:/data/set1",
            audience="https://storage",
        )
    )
    assert isinstance(narrow, TokenResponse) and narrow.scope == "read:/data/set1"
    clock.t += 1
    claims = peek(narrow.access_token)[1]
    assert (claims["sub"], claims["aud"]) == ("alice", "https://storage")
    wider = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_TOKEN_EXCHANGE,
            client_id="fts",
            subject_token=subject.access_token,
            scope="write:/out/alice",
        )
    )
    assert isinstance(wider, OAuthError) and wider.error == "invalid_scope"
    forged = subject.access_token.rsplit(".", 1)[0] + "." + "A" * 86
    for token in (forged, "junk"):
        clock.t += 1  # one request a second: stay under the fixture's rate limit
        bad = await issuer.handle(
            TokenRequest(grant_type=GRANT_TOKEN_EXCHANGE, client_id="fts", subject_token=token)
        )
        assert isinstance(bad, OAuthError) and bad.error == "invalid_grant"
    clock.t += 1200
    expired = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_TOKEN_EXCHANGE, client_id="fts", subject_token=subject.access_token
        )
    )
    assert isinstance(expired, OAuthError) and "expired" in expired.description


async def test_rate_limit_answers_503(issuer: Issuer, clock: Clock) -> None:
    """Past max_requests_per_second the token endpoint answers 503; the next second it serves."""
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience="https://s")
    answers = [await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt) for _ in range(4)]
    assert [getattr(a, "status", 200) for a in answers] == [200, 200, 200, 503]
    clock.t += 1
    assert isinstance(await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt), TokenResponse)


async def test_jwks_publishes_ahead(issuer: Issuer, clock: Clock) -> None:
    """D6: a rotated key is in the JWKS at once and signs only after publish_ahead."""
    issuer.rotate_key(SigningKey.generate(kid="vo-2"), publish_ahead=60)
    jwks = await issuer.handle(JwksRequest(issuer=URL))
    assert isinstance(jwks, JwksResponse) and [k.kid for k in jwks.keys] == ["vo-1", "vo-2"]
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience="https://s")
    before = await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    clock.t += 60
    after = await _ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert isinstance(before, TokenResponse) and isinstance(after, TokenResponse)
    assert (peek(before.access_token)[0]["kid"], peek(after.access_token)[0]["kid"]) == (
        "vo-1",
        "vo-2",
    )
