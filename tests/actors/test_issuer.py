"""The issuer's token endpoint: client authentication, refresh, client credentials, token
exchange, rate limit, JWKS and discovery (E4, B15, K3-K5, A13, P13, D2, D5; RFC 6749 §5.2)."""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from scitokens_batch.actors import Issuer, UserPolicy
from scitokens_batch.actors.issuer import _digest
from scitokens_batch.metrics import ListSink, Recorder, SummaryBuilder
from scitokens_batch.protocol import (
    CLIENT_AUTH_POST,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_REFRESH,
    JwksRequest,
    JwksResponse,
    OAuthError,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.tokens import (
    Scope,
    SigningKey,
    covers,
    narrow,
    parse_scope,
    parse_scopes,
    peek,
)

from .issuer_helpers import (
    FTS_LIFETIME,
    SECRETS,
    URL,
    ask,
    error,
    make_issuer,
    token,
)

AUD = "https://storage.example"
#: What the property test's subject tokens may hold (alice's policy), and scopes outside it.
_POOL = ["read:/data", "read:/data/a", "read:/data/a/b", "write:/out", "write:/out/x"]
_OUTSIDE = ["read:/", "read:/dat", "read:/data2", "write:/", "write:/data", "read:/other/a"]
_POLICY = tuple(parse_scope(s) for s in ("read:/data", "write:/out"))


# -- client authentication (RFC 6749 §2.3.1, §5.2) ---------------------------------------------


async def test_unknown_client_is_invalid_client() -> None:
    """RFC 6749 §5.2: an unknown client_id is invalid_client with status 401."""
    issuer = make_issuer()
    answer = await issuer.handle(TokenRequest(grant_type=GRANT_REFRESH, client_id="nobody"))
    assert isinstance(answer, OAuthError)
    assert (answer.error, answer.status) == ("invalid_client", 401)


async def test_wrong_or_missing_secret_is_invalid_client() -> None:
    """RFC 6749 §2.3.1: a confidential client with a wrong or no secret is invalid_client (401),
    and its refresh token is not used (E4: "client authenticates")."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    for secret in ("cs-wrong", None, SECRETS["fts"]):
        answer = await issuer.handle(
            TokenRequest(
                grant_type=GRANT_REFRESH,
                client_id="token_manager",
                client_secret=secret,
                refresh_token=rt,
            )
        )
        assert isinstance(answer, OAuthError)
        assert (answer.error, answer.status) == ("invalid_client", 401)
    assert issuer._grants[_digest(rt)].rotated_at is None  # never got as far as the refresh token


async def test_secret_in_form_or_basic() -> None:
    """RFC 6749 §2.3.1: client_secret_post authenticates as well as client_secret_basic."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    answer = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_REFRESH,
            client_id="token_manager",
            client_secret=SECRETS["token_manager"],
            client_auth=CLIENT_AUTH_POST,
            refresh_token=rt,
        )
    )
    assert isinstance(answer, TokenResponse)


async def test_grant_not_registered_is_unauthorized_client() -> None:
    """RFC 6749 §5.2: a grant the client is not registered for is unauthorized_client (400)."""
    issuer = make_issuer()
    answer = await error(issuer, "token_manager", grant_type=GRANT_CLIENT_CREDENTIALS)
    assert (answer.error, answer.status) == ("unauthorized_client", 400)
    answer = await error(issuer, "fts", grant_type=GRANT_DEVICE_CODE, device_code="dc-x")
    assert (answer.error, answer.status) == ("unauthorized_client", 400)


async def test_unknown_grant_is_unsupported_grant_type() -> None:
    """RFC 6749 §5.2: a grant type the issuer does not implement is unsupported_grant_type."""
    issuer = make_issuer()
    answer = await error(issuer, grant_type="password")
    assert (answer.error, answer.status) == ("unsupported_grant_type", 400)


# -- refresh (RFC 6749 §6; E4, I7, B15) ---------------------------------------------------------


async def test_refresh_rotates_with_grace_at_exact_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """E4/I7 + RFC 9700: each refresh gives a new refresh token; a retry of the rotated one
    within the grace (600 s here) gets the same successor back, and the first retry at exactly
    rotation + grace is reuse: invalid_grant, and the successor is revoked with it."""
    issuer = make_issuer(refresh_token_grace=600.0)
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    first = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert first.refresh_token not in (None, rt)
    assert peek(first.access_token)[1]["aud"] == AUD
    await trio.sleep(599)
    retry = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert retry.refresh_token == first.refresh_token
    assert retry.access_token != first.access_token
    await trio.sleep(1)
    assert trio.current_time() == 600
    late = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert (late.error, late.status) == ("invalid_grant", 400)
    assert "family is revoked" in late.description
    revoked = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=first.refresh_token)
    assert revoked.error == "invalid_grant"


async def test_retry_after_the_successor_was_used_revokes_the_family(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 9700 §4.14.2: once the successor was used, the rotated token is reuse even inside
    the grace: invalid_grant, and every token of the family (the newest too) is revoked."""
    issuer = make_issuer(refresh_token_grace=600.0)
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    first = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    second = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=first.refresh_token)
    reuse = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert reuse.error == "invalid_grant"
    newest = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=second.refresh_token)
    assert (newest.error, newest.description) == ("invalid_grant", "refresh token revoked")
    other = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    assert isinstance(
        await token(issuer, grant_type=GRANT_REFRESH, refresh_token=other), TokenResponse
    )


async def test_parallel_refreshes_make_one_successor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 9700 §4.14.2: 50 concurrent refreshes with one token rotate it once: every answer
    carries the same successor, and the table grows by one token."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    answers: list[TokenResponse] = []

    async def one() -> None:
        answers.append(await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert len({a.refresh_token for a in answers}) == 1
    assert len(issuer._grants) == 2


async def test_reuse_after_compaction_still_revokes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 9700: a rotated token compacted to a tombstone (past its grace, table pruned) is
    still recognised: its replay revokes the family."""
    from scitokens_batch.actors.issuer import PRUNE_FLOOR

    issuer = make_issuer(refresh_token_grace=0.0)
    first = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    rt = first
    for _ in range(PRUNE_FLOOR + 10):
        rt = (await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)).refresh_token
        assert rt is not None
        await trio.sleep(0.001)
    assert issuer._spent
    assert (await error(issuer, grant_type=GRANT_REFRESH, refresh_token=first)).error == (
        "invalid_grant"
    )
    assert (await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)).description == (
        "refresh token revoked"
    )


async def test_default_grace_is_five_minutes(autojump_clock: trio.testing.MockClock) -> None:
    """The default grace is 300 s: a retry of a rotated token works until then, not a day."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    await trio.sleep(299)
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    await trio.sleep(1)
    assert (await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)).error == (
        "invalid_grant"
    )


async def test_every_change_is_persisted_before_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Durability: a rotation's rows (old token rotated, successor added) reach ``persist``
    before the answer returns, and restore_rows rebuilds an issuer that honours them."""
    persisted: dict[str, Any] = {}

    async def persist(changes: Any) -> None:
        await trio.sleep(0.5)
        persisted.update(changes)

    issuer = make_issuer()
    issuer.persist = persist
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    answer = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert trio.current_time() == 0.5
    assert len(persisted) == 3  # enrolled, successor, and the family counter
    assert "rt-" not in json.dumps(persisted)
    fresh = make_issuer()
    fresh.successor_key = issuer.successor_key
    fresh.restore_rows({k: v for k, v in persisted.items() if v is not None})
    again = await token(fresh, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert again.refresh_token == answer.refresh_token
    assert isinstance(
        await token(fresh, grant_type=GRANT_REFRESH, refresh_token=answer.refresh_token),
        TokenResponse,
    )


async def test_expired_device_codes_are_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 8628 §3.2: a device code is dropped DEVICE_RETENTION after expires_in, so the table
    holds one lifetime's worth of codes at most."""
    from scitokens_batch.actors.issuer import DEVICE_RETENTION
    from scitokens_batch.protocol import DeviceAuthorizationRequest

    issuer = make_issuer(device_code_lifetime=60.0)
    for _ in range(100):
        await issuer.handle(
            DeviceAuthorizationRequest(client_id="cli", client_secret=None, scope="read:/data")
        )
    assert len(issuer._devices) == 100
    await trio.sleep(60 + DEVICE_RETENTION)
    await issuer.handle(
        DeviceAuthorizationRequest(client_id="cli", client_secret=None, scope="read:/data")
    )
    assert len(issuer._devices) == 1 and len(issuer._user_codes) == 1


async def test_refresh_token_expires(autojump_clock: trio.testing.MockClock) -> None:
    """E3: a refresh token lives refresh_token_lifetime from the login, rotations included."""
    issuer = make_issuer(refresh_token_lifetime=3600.0)
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    await trio.sleep(3599)
    rotated = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    await trio.sleep(1)
    expired = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rotated.refresh_token)
    assert (expired.error, expired.description) == ("invalid_grant", "refresh token expired")


async def test_refresh_token_of_another_client_is_invalid_grant() -> None:
    """RFC 6749 §5.2: a refresh token "issued to another client" is invalid_grant."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    stolen = await error(issuer, "fts", grant_type=GRANT_REFRESH, refresh_token=rt)
    assert (stolen.error, stolen.status) == ("invalid_grant", 400)
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)  # still the owner's


async def test_user_revoked_by_admin() -> None:
    """RFC 6749 §5.2: a refresh token revoked by the VO admin is invalid_grant."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    assert issuer.revoke_user("alice") == 1
    revoked = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert (revoked.error, revoked.description) == ("invalid_grant", "refresh token revoked")


async def test_refresh_down_scopes(autojump_clock: trio.testing.MockClock) -> None:
    """B15: scopes beyond the grant are dropped and the response says what was granted; the
    rotated refresh token keeps the whole grant (RFC 6749 §6); nothing grantable at all is
    invalid_scope."""
    issuer = make_issuer()
    rt = issuer.enroll(
        "alice", client="token_manager", scopes="read:/data write:/out/alice", audience=AUD
    )
    narrowed = await token(
        issuer, grant_type=GRANT_REFRESH, refresh_token=rt, scope="read:/data/run1 write:/out/bob"
    )
    assert narrowed.scope == "read:/data/run1"
    assert peek(narrowed.access_token)[1]["scope"] == "read:/data/run1"
    whole = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=narrowed.refresh_token)
    assert whole.scope == "read:/data write:/out/alice"
    refused = await error(
        issuer, grant_type=GRANT_REFRESH, refresh_token=whole.refresh_token, scope="write:/"
    )
    assert (refused.error, refused.status) == ("invalid_scope", 400)


async def test_oauth_scopes_are_not_capabilities() -> None:
    """K1: offline_access and openid in a request are OAuth scopes: never an error, listed in
    the scope when granted; alone they get exactly themselves, no capability (as INDIGO IAM)."""
    issuer = make_issuer()
    rt = issuer.enroll(
        "alice", client="token_manager", scopes="openid read:/data offline_access", audience=AUD
    )
    some = await token(
        issuer, grant_type=GRANT_REFRESH, refresh_token=rt, scope="offline_access read:/data/x"
    )
    assert some.scope == "read:/data/x offline_access"
    only_oauth = await token(
        issuer,
        grant_type=GRANT_REFRESH,
        refresh_token=some.refresh_token,
        scope="openid offline_access",
    )
    assert only_oauth.scope == "offline_access openid"
    assert only_oauth.id_token is not None
    whole = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=only_oauth.refresh_token)
    assert whole.scope == "read:/data offline_access openid"


async def test_bad_scope_grammar_is_invalid_scope() -> None:
    """RFC 6749 §5.2 invalid_scope: a malformed requested scope (B2: storage.read needs a path)."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    bad = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=rt, scope="read:data")
    assert bad.error == "invalid_scope"


# -- client credentials (RFC 6749 §4.4; K3, A13) -----------------------------------------------


async def test_client_credentials_token_is_about_the_client() -> None:
    """A13/K3: a client credentials token has sub = client id, the client's scopes (narrowed
    to the request), the requested audience, and no refresh token."""
    issuer = make_issuer()
    ok = await token(
        issuer,
        "host:svc.example",
        grant_type=GRANT_CLIENT_CREDENTIALS,
        scope="read:/data/svc/x host.auth read:/elsewhere",
        audience="https://fts.example",
    )
    claims = peek(ok.access_token)[1]
    assert (claims["sub"], claims["aud"], claims["scope"]) == (
        "host:svc.example",
        "https://fts.example",
        "read:/data/svc/x host.auth",
    )
    assert ok.refresh_token is None
    nothing = await error(
        issuer, "host:svc.example", grant_type=GRANT_CLIENT_CREDENTIALS, scope="write:/"
    )
    assert (nothing.error, nothing.status) == ("invalid_scope", 400)


async def test_users_are_not_clients() -> None:
    """K3: client credentials are for registered clients only; a user name is invalid_client."""
    issuer = make_issuer()
    answer = await issuer.handle(
        TokenRequest(grant_type=GRANT_CLIENT_CREDENTIALS, client_id="alice")
    )
    assert isinstance(answer, OAuthError)
    assert (answer.error, answer.status) == ("invalid_client", 401)


async def test_audience_outside_the_client_registration_is_invalid_target() -> None:
    """RFC 8693 §2.2.2: an audience the client may not ask for is invalid_target (400)."""
    issuer = make_issuer()
    answer = await error(
        issuer, "fts", grant_type=GRANT_CLIENT_CREDENTIALS, audience="https://evil.example"
    )
    assert (answer.error, answer.status) == ("invalid_target", 400)


async def test_client_lifetime_applies_to_every_grant() -> None:
    """P13/K5: tokens get the requesting client's access_token_lifetime (fts: 600 s), others the
    issuer's (1200 s)."""
    issuer = make_issuer()
    own = await token(issuer, "fts", grant_type=GRANT_CLIENT_CREDENTIALS)
    assert own.expires_in == FTS_LIFETIME
    rt = issuer.enroll("alice", client="fts", scopes="read:/data", audience=AUD)
    refreshed = await token(issuer, "fts", grant_type=GRANT_REFRESH, refresh_token=rt)
    assert refreshed.expires_in == FTS_LIFETIME
    rt2 = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    default = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt2)
    assert default.expires_in == 1200.0


# -- token exchange (RFC 8693; K4, K5, L6, P13) -------------------------------------------------


async def _subject(issuer: Issuer, scopes: str = "read:/data write:/out/alice") -> TokenResponse:
    """alice's access token, as the token manager has it (aud: the storage)."""
    rt = issuer.enroll("alice", client="token_manager", scopes=scopes, audience=AUD)
    return await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)


async def test_exchange_narrows_and_keeps_the_subject_audience() -> None:
    """K4: an exchange narrows the scopes, keeps the subject token's sub and aud unless another
    audience is asked for, and answers issued_token_type = access token, no refresh token."""
    issuer = make_issuer()
    subject = await _subject(issuer)
    same_aud = await token(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        subject_token_type=TOKEN_TYPE_ACCESS,
        scope="read:/data/set1",
    )
    assert same_aud.scope == "read:/data/set1"
    assert (same_aud.issued_token_type, same_aud.refresh_token) == (TOKEN_TYPE_ACCESS, None)
    claims = peek(same_aud.access_token)[1]
    assert (claims["sub"], claims["aud"]) == ("alice", AUD)
    other_aud = await token(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        audience="https://fts.example",
    )
    assert peek(other_aud.access_token)[1]["aud"] == "https://fts.example"
    assert other_aud.scope == "read:/data write:/out/alice"  # no scope asked: the subject's


async def test_exchange_never_widens() -> None:
    """K4/K5: a requested scope outside the subject token's is dropped; none left is
    invalid_scope, even when the user's policy would allow it."""
    issuer = make_issuer()
    subject = await _subject(issuer, scopes="read:/data")
    mixed = await token(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        scope="read:/data/a write:/out/alice read:/",
    )
    assert mixed.scope == "read:/data/a"
    wider = await error(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        scope="write:/out/alice",
    )
    assert (wider.error, wider.status) == ("invalid_scope", 400)


@settings(max_examples=40)
@given(
    held=st.sets(st.sampled_from(_POOL), min_size=1),
    asked=st.sets(st.sampled_from(_POOL + _OUTSIDE)),
)
def test_exchange_never_widens_property(held: set[str], asked: set[str]) -> None:
    """K4/K5, property: whatever is held and asked, every exchanged scope is covered by a held
    scope and was asked for; when nothing asked is covered, the answer is invalid_scope."""

    async def exchange() -> tuple[TokenResponse | OAuthError, tuple[Scope, ...]]:
        issuer = make_issuer(users={"alice": UserPolicy(name="alice", scopes=_POLICY)})
        subject = await _subject(issuer, scopes=" ".join(sorted(held)))
        answer = await ask(
            issuer,
            "fts",
            grant_type=GRANT_TOKEN_EXCHANGE,
            subject_token=subject.access_token,
            scope=" ".join(sorted(asked)) if asked else None,
        )
        assert isinstance(answer, TokenResponse | OAuthError)
        return answer, parse_scopes(subject.scope)

    answer, subject_scopes = trio.run(exchange, clock=trio.testing.MockClock())
    requested = parse_scopes(" ".join(sorted(asked)))
    if isinstance(answer, OAuthError):
        assert answer.error == "invalid_scope"
        assert not narrow(requested, subject_scopes)
        return
    granted = parse_scopes(answer.scope)
    assert granted
    assert all(any(covers(s, g) for s in subject_scopes) for g in granted)
    assert set(granted) <= set(requested) if requested else set(granted) == set(subject_scopes)


async def test_exchange_audience_must_be_registered() -> None:
    """RFC 8693 §2.2.2: a requested audience the exchanging client may not ask for is
    invalid_target; the subject's own audience needs no registration."""
    issuer = make_issuer()
    subject = await _subject(issuer)
    bad = await error(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        audience="https://elsewhere.example",
    )
    assert (bad.error, bad.status) == ("invalid_target", 400)


async def test_exchange_request_errors() -> None:
    """K4, RFC 8693 §2.2.2: no subject token, or a subject_token_type / requested_token_type
    other than the supported ones, is invalid_request."""
    issuer = make_issuer()
    subject = await _subject(issuer)
    missing = await error(issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE)
    assert (missing.error, missing.status) == ("invalid_request", 400)
    as_refresh = await error(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        subject_token_type=TOKEN_TYPE_REFRESH,
    )
    assert as_refresh.error == "invalid_request"
    as_saml = await error(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        requested_token_type="urn:ietf:params:oauth:token-type:saml2",
    )
    assert as_saml.error == "invalid_request"


async def test_exchange_of_a_bad_subject_token_is_invalid_grant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 6749 §5.2 invalid_grant: a forged, unparsable or expired subject token."""
    issuer = make_issuer()
    subject = await _subject(issuer)
    forged = subject.access_token.rsplit(".", 1)[0] + "." + "A" * 86
    for bad_token in (forged, "junk"):
        bad = await error(issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE, subject_token=bad_token)
        assert bad.error == "invalid_grant"
    await trio.sleep(1200)
    expired = await error(
        issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE, subject_token=subject.access_token
    )
    assert expired.error == "invalid_grant" and "expired" in expired.description


async def test_exchange_with_offline_access_gives_a_refresh_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L6/K4: offline_access (or requested_token_type = refresh token) also returns a refresh
    token bound to the exchanging client, with the narrowed scopes and audience; it refreshes
    with the refresh grant, and only for that client."""
    issuer = make_issuer()
    subject = await _subject(issuer)
    exchanged = await token(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=subject.access_token,
        scope="read:/data offline_access",
        audience="https://storage.example",
    )
    assert exchanged.refresh_token is not None
    assert (exchanged.scope, exchanged.issued_token_type) == (
        "read:/data offline_access",
        TOKEN_TYPE_ACCESS,
    )
    await trio.sleep(3000)  # long after the subject token expired
    refreshed = await token(
        issuer, "fts", grant_type=GRANT_REFRESH, refresh_token=exchanged.refresh_token
    )
    claims = peek(refreshed.access_token)[1]
    assert (claims["sub"], claims["aud"]) == ("alice", AUD)
    assert claims["scope"] == "read:/data offline_access"
    assert refreshed.expires_in == FTS_LIFETIME
    foreign = await error(issuer, grant_type=GRANT_REFRESH, refresh_token=refreshed.refresh_token)
    assert foreign.error == "invalid_grant"
    by_type = await token(
        issuer,
        "fts",
        grant_type=GRANT_TOKEN_EXCHANGE,
        subject_token=refreshed.access_token,
        requested_token_type=TOKEN_TYPE_REFRESH,
    )
    assert by_type.refresh_token is not None


async def test_exchanged_token_has_the_exchanging_clients_lifetime() -> None:
    """P13/K5: a 1200 s user token exchanged by fts becomes a 600 s token (fts's lifetime)."""
    issuer = make_issuer()
    subject = await _subject(issuer)
    assert subject.expires_in == 1200.0
    exchanged = await token(
        issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE, subject_token=subject.access_token
    )
    claims = peek(exchanged.access_token)[1]
    assert (exchanged.expires_in, claims["exp"] - claims["iat"]) == (FTS_LIFETIME, FTS_LIFETIME)


async def test_exchanges_are_counted_in_the_summary() -> None:
    """design.md tokens.exchanged: each successful exchange is one mint event with the exchange
    grant, and the summary counts them (and only them)."""
    sink = ListSink()
    issuer = make_issuer(recorder=Recorder(clock=trio.current_time, sink=sink))
    subject = await _subject(issuer)
    for scope in ("read:/data", "read:/data/a offline_access", "write:/nowhere"):
        await ask(
            issuer,
            "fts",
            grant_type=GRANT_TOKEN_EXCHANGE,
            subject_token=subject.access_token,
            scope=scope,
        )
    figures = SummaryBuilder().feed(sink.events).figures()
    assert figures["tokens"]["exchanged"] == 2
    assert figures["issuer"]["errors"] == 1


# -- rate limit, JWKS, discovery, error hygiene --------------------------------------------------


async def test_rate_limit_answers_503(autojump_clock: trio.testing.MockClock) -> None:
    """P10: past max_requests_per_second the token endpoint answers 503; the next second it
    serves again."""
    issuer = make_issuer(max_requests_per_second=3)
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    answers = [await ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt) for _ in range(4)]
    assert [getattr(a, "status", 200) for a in answers] == [200, 200, 200, 503]
    await trio.sleep(1)
    await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)


async def test_jwks_publishes_ahead(autojump_clock: trio.testing.MockClock) -> None:
    """D6: a rotated key is in the JWKS at once and signs only after publish_ahead."""
    issuer = make_issuer()
    issuer.rotate_key(SigningKey.generate(kid="vo-2"), publish_ahead=60)
    jwks = await issuer.handle(JwksRequest(issuer=URL))
    assert isinstance(jwks, JwksResponse) and [k.kid for k in jwks.keys] == ["vo-1", "vo-2"]
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    before = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    await trio.sleep(60)
    after = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert (peek(before.access_token)[0]["kid"], peek(after.access_token)[0]["kid"]) == (
        "vo-1",
        "vo-2",
    )


def test_discovery_document() -> None:
    """D2/D5: the discovery document names the issuer byte for byte, the jwks_uri and the
    endpoints the HTTP layer serves, the grants, and every grantable scope plus the OAuth ones."""
    doc = make_issuer().discovery_document()
    assert doc["issuer"] == URL
    assert doc["jwks_uri"] == URL + "/jwks"
    assert doc["token_endpoint"] == URL + "/token"
    assert doc["device_authorization_endpoint"] == URL + "/device_authorization"
    assert doc["revocation_endpoint"] == URL + "/revoke"
    assert set(doc["grant_types_supported"]) == {
        GRANT_REFRESH,
        GRANT_CLIENT_CREDENTIALS,
        GRANT_TOKEN_EXCHANGE,
        GRANT_DEVICE_CODE,
        "authorization_code",
    }
    assert doc["scopes_supported"] == [
        "host.auth",
        "offline_access",
        "openid",
        "read:/data",
        "read:/data/bob",
        "read:/data/svc",
        "write:/out/alice",
    ]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert doc["response_types_supported"] == ["code"]
    assert doc["userinfo_endpoint"] == URL + "/userinfo"
    json.dumps(doc)  # a plain JSON document


async def test_errors_hold_no_secret_or_token(autojump_clock: trio.testing.MockClock) -> None:
    """design.md: error descriptions (and events) never contain a token or a secret, whatever
    was sent."""
    sink = ListSink()
    issuer = make_issuer(recorder=Recorder(clock=trio.current_time, sink=sink))
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    subject = await _subject(issuer)
    secrets = [rt, subject.access_token, *SECRETS.values(), "cs-guess"]
    answers = [
        await ask(issuer, client_secret="cs-guess", grant_type=GRANT_REFRESH, refresh_token=rt),
        await ask(issuer, "fts", grant_type=GRANT_REFRESH, refresh_token=rt),
        await ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt + "x"),
        await ask(issuer, grant_type=GRANT_REFRESH, refresh_token=rt, scope="write:/"),
        await ask(
            issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE, subject_token=subject.access_token[:-3]
        ),
        await ask(issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE, subject_token=rt),
    ]
    await trio.sleep(2000)
    answers.append(
        await ask(
            issuer, "fts", grant_type=GRANT_TOKEN_EXCHANGE, subject_token=subject.access_token
        )
    )
    assert all(isinstance(a, OAuthError) for a in answers)
    text = repr(answers) + " ".join(getattr(a, "description", "") for a in answers)
    text += repr([e.fields for e in sink.events])
    for secret in secrets:
        assert secret not in text
        assert secret[-20:] not in text


async def test_snapshot_keeps_only_digests_and_restores_the_table() -> None:
    """E4/live restarts: a snapshot of the refresh-token table holds no refresh token, and an
    issuer restored from it still honours (and rotates) the token it had issued."""
    issuer = make_issuer()
    rt = issuer.enroll("alice", client="token_manager", scopes=["read:/data"], audience=AUD)
    state = issuer.snapshot()
    assert rt not in json.dumps(state)
    fresh = make_issuer()
    fresh.restore(json.loads(json.dumps(state)))
    answer = await token(fresh, grant_type=GRANT_REFRESH, refresh_token=rt)
    assert answer.refresh_token not in (None, rt)


async def test_refresh_table_is_pruned_of_dead_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """E4: rotations past their grace are forgotten once the table reaches PRUNE_FLOOR, so a
    long-lived issuer does not grow without bound; the current token keeps working."""
    from scitokens_batch.actors.issuer import PRUNE_FLOOR

    issuer = make_issuer(refresh_token_grace=0.0)
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    for _ in range(PRUNE_FLOOR + 10):
        answer = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
        assert answer.refresh_token is not None
        rt = answer.refresh_token
        await trio.sleep(0.001)
    assert len(issuer._grants) < PRUNE_FLOOR
    assert isinstance(
        await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt), TokenResponse
    )


async def test_client_without_audiences_may_ask_only_for_known_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client registered without audiences may ask for the issuer's known audiences only
    (invalid_target otherwise); ("*",) is the explicit opt-in to any audience."""
    from scitokens_batch.actors import ClientPolicy
    from scitokens_batch.protocol import GRANT_CLIENT_CREDENTIALS

    kw = {"grant_type": GRANT_CLIENT_CREDENTIALS, "scope": "read:/data/svc"}
    issuer = make_issuer()
    ok = await token(issuer, "host:svc.example", audience="https://storage.example", **kw)
    assert peek(ok.access_token)[1]["aud"] == "https://storage.example"
    refused = await error(issuer, "host:svc.example", audience="https://evil.example", **kw)
    assert refused.error == "invalid_target"
    policy = issuer.clients["host:svc.example"]
    anyone = make_issuer(
        clients={**issuer.clients, policy.client_id: attrs.evolve(policy, audiences=("*",))}
    )
    answer = await token(anyone, "host:svc.example", audience="https://evil.example", **kw)
    assert peek(answer.access_token)[1]["aud"] == "https://evil.example"
    assert isinstance(policy, ClientPolicy)


async def test_a_retry_waits_for_the_commit_of_the_rotation_it_reveals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Durability: a parallel retry that gets the successor another request created does not
    answer before that request's commit is done (a crash in between would lose the successor)."""
    committed: list[float] = []

    async def persist(changes: Any) -> None:
        await trio.sleep(0.5)
        committed.append(trio.current_time())

    issuer = make_issuer()
    issuer.persist = persist
    rt = issuer.enroll("alice", client="token_manager", scopes="read:/data", audience=AUD)
    answered: list[float] = []

    async def one() -> None:
        await token(issuer, grant_type=GRANT_REFRESH, refresh_token=rt)
        answered.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.sleep(0.1)
        nursery.start_soon(one)
    assert committed == [0.5] and answered == [0.5, 0.5]
