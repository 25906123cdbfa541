"""The issuer's device authorization grant, in virtual time (K2; RFC 8628 §3.1-3.5, §6.1)."""

from __future__ import annotations

import re

import trio
import trio.testing

from scitokens_batch.actors import Issuer
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    Ack,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    OAuthError,
)
from scitokens_batch.tokens import peek

from .issuer_helpers import SECRETS, URL, error, make_issuer, token

AUD = "https://storage.example"


async def _authorize(
    issuer: Issuer, client: str = "token_manager", **kw: str
) -> DeviceAuthorizationResponse:
    """Start a device flow as ``client`` (authenticated with its secret, if it has one)."""
    answer = await issuer.handle(
        DeviceAuthorizationRequest(
            client_id=client,
            client_secret=SECRETS.get(client),
            client_auth=CLIENT_AUTH_BASIC,
            **kw,
        )
    )
    assert isinstance(answer, DeviceAuthorizationResponse), answer
    return answer


async def _approve(
    issuer: Issuer, user_code: str, user: str = "alice", approve: bool = True
) -> object:
    return await issuer.handle(DeviceApproval(user_code=user_code, user=user, approve=approve))


async def _poll_error(issuer: Issuer, device_code: str, client: str = "token_manager") -> str:
    answer = await error(issuer, client, grant_type=GRANT_DEVICE_CODE, device_code=device_code)
    assert answer.status == 400
    return answer.error


async def test_device_authorization_response() -> None:
    """K2/RFC 8628 §3.2: a secret device code, a user code like WDJB-MJHT (§6.1), the
    verification page under the issuer URL, expires_in 1800 s and interval 5 s by default."""
    issuer = make_issuer()
    start = await _authorize(issuer, scope="read:/data offline_access", audience=AUD)
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", start.user_code)
    assert start.device_code.startswith("dc-") and len(start.device_code) > 40
    assert start.device_code not in repr(start)
    assert start.verification_uri == URL + "/device"
    assert (start.expires_in, start.interval) == (1800.0, 5.0)
    other = await _authorize(issuer)
    assert (other.device_code, other.user_code) != (start.device_code, start.user_code)


async def test_device_timing_is_configurable() -> None:
    """K2: device_code_lifetime and device_poll_interval set expires_in and interval."""
    issuer = make_issuer(device_code_lifetime=60.0, device_poll_interval=2.0)
    start = await _authorize(issuer)
    assert (start.expires_in, start.interval) == (60.0, 2.0)


async def test_device_flow_pending_slow_down_approved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 8628 §3.5: authorization_pending before approval; a poll sooner than the interval
    is slow_down and the interval grows 5 -> 10 s; once the user approves, the next poll gets
    an access token for the user (scopes narrowed to the policy) and a refresh token bound to
    the polling client; the device code is then spent (invalid_grant)."""
    issuer = make_issuer()
    start = await _authorize(issuer, scope="read:/data write:/out/bob offline_access", audience=AUD)
    code = start.device_code
    assert await _poll_error(issuer, code) == "authorization_pending"  # t = 0
    await trio.sleep(1)
    slow = await error(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    assert (slow.error, slow.description) == ("slow_down", "poll at most every 10 seconds")
    await trio.sleep(9)  # 9 s after the last poll: still too soon for 10 s
    assert await _poll_error(issuer, code) == "slow_down"  # now 15 s
    await trio.sleep(15)
    assert trio.current_time() == 25
    assert await _poll_error(issuer, code) == "authorization_pending"
    assert isinstance(await _approve(issuer, start.user_code), Ack)
    await trio.sleep(15)
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    claims = peek(tokens.access_token)[1]
    assert (claims["sub"], claims["aud"]) == ("alice", AUD)
    assert claims["scope"] == "read:/data offline_access"  # granted as asked (IAM)
    assert tokens.refresh_token is not None
    assert await _poll_error(issuer, code) == "invalid_grant"
    refreshed = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token)
    assert refreshed.scope == "read:/data offline_access"  # the whole grant (RFC 6749 §6)
    stolen = await error(
        issuer, "fts", grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token
    )
    assert stolen.error == "invalid_grant"


async def test_slow_down_grows_by_five_each_time(autojump_clock: trio.testing.MockClock) -> None:
    """RFC 8628 §3.5: "the interval MUST be increased by 5 seconds for this and all subsequent
    requests": 5 -> 10 -> 15, and a poll a full interval later is fine again."""
    issuer = make_issuer()
    code = (await _authorize(issuer)).device_code
    descriptions = []
    for wait in (0, 1, 1, 15):
        await trio.sleep(wait)
        answer = await error(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
        descriptions.append((answer.error, answer.description))
    assert [e for e, _ in descriptions] == [
        "authorization_pending",
        "slow_down",
        "slow_down",
        "authorization_pending",
    ]
    assert [d for _, d in descriptions[1:3]] == [
        "poll at most every 10 seconds",
        "poll at most every 15 seconds",
    ]


async def test_device_code_expires(autojump_clock: trio.testing.MockClock) -> None:
    """RFC 8628 §3.5: polling at or after expires_in (1800 s) is expired_token; so is approving
    the user code then."""
    issuer = make_issuer()
    start = await _authorize(issuer)
    await trio.sleep(1799)
    assert await _poll_error(issuer, start.device_code) == "authorization_pending"
    await trio.sleep(1)
    assert await _poll_error(issuer, start.device_code) == "expired_token"
    late = await _approve(issuer, start.user_code)
    assert isinstance(late, OAuthError) and late.error == "expired_token"


async def test_approved_but_collected_too_late(autojump_clock: trio.testing.MockClock) -> None:
    """RFC 8628 §3.5: an approved device code not polled before it expires is expired_token."""
    issuer = make_issuer(device_code_lifetime=60.0)
    start = await _authorize(issuer)
    assert isinstance(await _approve(issuer, start.user_code), Ack)
    await trio.sleep(60)
    assert await _poll_error(issuer, start.device_code) == "expired_token"


async def test_user_denies(autojump_clock: trio.testing.MockClock) -> None:
    """RFC 8628 §3.5: a denied request is access_denied at the next poll, and stays so."""
    issuer = make_issuer()
    start = await _authorize(issuer)
    assert isinstance(await _approve(issuer, start.user_code, approve=False), Ack)
    assert await _poll_error(issuer, start.device_code) == "access_denied"
    await trio.sleep(5)
    assert await _poll_error(issuer, start.device_code) == "access_denied"


async def test_approval_errors() -> None:
    """RFC 8628 §6.1: the user code is matched case-insensitively without its dash; an unknown
    code is invalid_request, a user outside the VO is access_denied (the code stays pending),
    and a code already used is invalid_request."""
    issuer = make_issuer()
    start = await _authorize(issuer)
    unknown = await _approve(issuer, "BBBB-BBBB" if start.user_code != "BBBB-BBBB" else "CCCC-CCCC")
    assert isinstance(unknown, OAuthError) and (unknown.error, unknown.status) == (
        "invalid_request",
        400,
    )
    stranger = await _approve(issuer, start.user_code, user="mallory")
    assert isinstance(stranger, OAuthError) and stranger.error == "access_denied"
    assert await _poll_error(issuer, start.device_code) == "authorization_pending"
    typed = start.user_code.replace("-", "").lower()
    assert isinstance(await _approve(issuer, typed, user="bob"), Ack)
    again = await _approve(issuer, start.user_code)
    assert isinstance(again, OAuthError) and again.error == "invalid_request"
    bobs = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=start.device_code)
    assert (peek(bobs.access_token)[1]["sub"], bobs.scope) == ("bob", "read:/data/bob")


async def test_nothing_the_user_may_have_is_invalid_scope() -> None:
    """B15: an approved request for scopes outside the user's policy is invalid_scope."""
    issuer = make_issuer()
    start = await _authorize(issuer, scope="write:/out/alice")
    assert isinstance(await _approve(issuer, start.user_code, user="bob"), Ack)
    assert await _poll_error(issuer, start.device_code) == "invalid_scope"


async def test_device_client_checks() -> None:
    """RFC 6749 §5.2 for RFC 8628: a public client starts a flow with its client_id alone; a
    wrong secret is invalid_client (401); a client without the device grant is
    unauthorized_client; another client's device code is invalid_grant; a missing one is
    invalid_request; a malformed scope is invalid_scope at once."""
    issuer = make_issuer()
    public = await _authorize(issuer, "cli")
    wrong = await issuer.handle(
        DeviceAuthorizationRequest(client_id="token_manager", client_secret="cs-nope")
    )
    assert isinstance(wrong, OAuthError) and (wrong.error, wrong.status) == ("invalid_client", 401)
    fts = await issuer.handle(
        DeviceAuthorizationRequest(client_id="fts", client_secret=SECRETS["fts"])
    )
    assert isinstance(fts, OAuthError) and fts.error == "unauthorized_client"
    assert await _poll_error(issuer, public.device_code, client="token_manager") == "invalid_grant"
    assert await _poll_error(issuer, public.device_code, client="cli") == "authorization_pending"
    missing = await error(issuer, grant_type=GRANT_DEVICE_CODE)
    assert missing.error == "invalid_request"
    bad_scope = await issuer.handle(DeviceAuthorizationRequest(client_id="cli", scope="read:x"))
    assert isinstance(bad_scope, OAuthError) and bad_scope.error == "invalid_scope"
