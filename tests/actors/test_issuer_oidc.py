"""The issuer's OpenID Connect side and IAM-like grants, in virtual time: the device-code token
request's ``audience``, exact scope grants, ID tokens and userinfo."""

from __future__ import annotations

import jwt
import pytest
import trio
import trio.testing

from scitokens_batch.actors import Issuer, UserPolicy
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    OAuthError,
    UserinfoRequest,
    UserinfoResponse,
)
from scitokens_batch.tokens import Profile, parse_scope, peek

from .issuer_helpers import SECRETS, T0, URL, error, make_issuer, signing_key, token

AUD = "https://storage.example"


async def _approved(issuer: Issuer, scope: str | None, audience: str | None = None) -> str:
    """A device code the token manager started and alice approved."""
    start = await issuer.handle(
        DeviceAuthorizationRequest(
            client_id="token_manager",
            client_secret=SECRETS["token_manager"],
            client_auth=CLIENT_AUTH_BASIC,
            scope=scope,
            audience=audience,
        )
    )
    assert isinstance(start, DeviceAuthorizationResponse)
    await issuer.handle(DeviceApproval(user_code=start.user_code, user="alice"))
    return start.device_code


def _id_claims(id_token: str, client: str) -> dict[str, object]:
    """The ID token's claims, its ES256 signature checked with the issuer's key."""
    public = signing_key().key.public_key()
    claims: dict[str, object] = jwt.decode(
        id_token,
        key=public,  # type: ignore[arg-type]
        algorithms=["ES256"],
        audience=client,
        options={"verify_exp": False, "verify_iat": False},
    )
    return claims


async def test_device_token_request_audience_is_bound_to_the_refresh_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The audience sent on the device-code token request (oidc-agent's --aud) is the access
    token's aud, and the refresh token keeps it (as INDIGO IAM)."""
    issuer = make_issuer()
    code = await _approved(issuer, "read:/data offline_access")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code, audience=AUD)
    assert peek(tokens.access_token)[1]["aud"] == AUD
    await trio.sleep(60)
    refreshed = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token)
    assert peek(refreshed.access_token)[1]["aud"] == AUD


async def test_device_token_request_audience_overrides_the_authorization_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An audience on the token request wins over the device authorization request's."""
    issuer = make_issuer()
    code = await _approved(issuer, "read:/data", audience="https://fts.example")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code, audience=AUD)
    assert peek(tokens.access_token)[1]["aud"] == AUD


async def test_device_token_request_audience_not_allowed_is_invalid_target(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An audience the client may not ask for is invalid_target and spends nothing: the same
    code still gets tokens for an allowed audience."""
    issuer = make_issuer()
    code = await _approved(issuer, "read:/data")
    refused = await error(
        issuer, grant_type=GRANT_DEVICE_CODE, device_code=code, audience="https://evil.example"
    )
    assert (refused.error, refused.status) == ("invalid_target", 400)
    assert "evil.example" in refused.description
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code, audience=AUD)
    assert peek(tokens.access_token)[1]["aud"] == AUD


async def test_openid_alone_gets_no_capability(autojump_clock: trio.testing.MockClock) -> None:
    """A login asking only for openid gets a token whose scope is exactly openid, and an ID
    token (INDIGO IAM: the issuer grants what is asked, never every scope allowed)."""
    issuer = make_issuer()
    code = await _approved(issuer, "openid")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    assert tokens.scope == "openid"
    assert peek(tokens.access_token)[1]["scope"] == "openid"
    assert tokens.id_token is not None


async def test_id_token_claims(autojump_clock: trio.testing.MockClock) -> None:
    """OIDC Core §2: the ID token is signed with the issuer key; iss, sub, aud = the client id,
    iat and exp as the access token's; no ID token without openid."""
    issuer = make_issuer()
    code = await _approved(issuer, "openid offline_access read:/data")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    assert tokens.scope == "read:/data offline_access openid"
    assert tokens.id_token is not None
    claims = _id_claims(tokens.id_token, "token_manager")
    access = peek(tokens.access_token)[1]
    assert claims["iss"] == URL and claims["sub"] == "alice"
    assert claims["aud"] == "token_manager"
    assert (claims["iat"], claims["exp"]) == (access["iat"], access["exp"])
    assert claims["iat"] == int(T0)
    assert "nonce" not in claims
    plain = await token(
        issuer, grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token, scope="read:/data"
    )
    assert plain.id_token is None and plain.scope == "read:/data"


async def test_userinfo(autojump_clock: trio.testing.MockClock) -> None:
    """OIDC Core §5.3: a token of ours with openid gets the user; one without openid is
    insufficient_scope (403), a bad one invalid_token (401)."""
    issuer = make_issuer()
    code = await _approved(issuer, "openid read:/data offline_access")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    info = await issuer.handle(UserinfoRequest(token=tokens.access_token))
    assert info == UserinfoResponse(sub="alice")
    without = await token(
        issuer, grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token, scope="read:/data"
    )
    refused = await issuer.handle(UserinfoRequest(token=without.access_token))
    assert isinstance(refused, OAuthError)
    assert (refused.error, refused.status) == ("insufficient_scope", 403)
    bad = await issuer.handle(UserinfoRequest(token=tokens.access_token[:-4] + "AAAA"))
    assert isinstance(bad, OAuthError)
    assert (bad.error, bad.status) == ("invalid_token", 401)
    assert tokens.access_token not in bad.description
    await trio.sleep(1201)  # past exp
    late = await issuer.handle(UserinfoRequest(token=tokens.access_token))
    assert isinstance(late, OAuthError) and late.error == "invalid_token"


async def test_oauth_scopes_survive_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    """The OAuth scopes of a login are in the persisted row: a restarted issuer refreshes to
    the same scope claim."""
    issuer = make_issuer()
    code = await _approved(issuer, "openid read:/data offline_access")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    again = make_issuer()
    again.restore(issuer.snapshot())
    refreshed = await token(again, grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token)
    assert refreshed.scope == "read:/data offline_access openid"
    assert refreshed.id_token is not None


def _wlcg_issuer() -> Issuer:
    """A WLCG-profile issuer whose alice is in /wlcg by default and may ask for /wlcg/test."""
    users = {
        "alice": UserPolicy(
            name="alice",
            scopes=(parse_scope("storage.read:/"),),
            groups=("/wlcg",),
            optional_groups=("/wlcg/test",),
        )
    }
    return make_issuer(profile=Profile.WLCG, users=users)


@pytest.mark.parametrize(
    ("scope", "groups"),
    [
        ("storage.read:/ offline_access", ["/wlcg"]),  # no group request: the defaults
        ("storage.read:/ wlcg.groups", ["/wlcg"]),
        ("storage.read:/ wlcg.groups:/wlcg/test", ["/wlcg/test"]),
        ("wlcg.groups:/wlcg/test wlcg.groups", ["/wlcg/test", "/wlcg"]),
        ("storage.read:/ wlcg.groups:/cms", None),  # not a member: dropped
    ],
)
async def test_optional_groups(
    autojump_clock: trio.testing.MockClock, scope: str, groups: list[str] | None
) -> None:
    """INDIGO IAM's optional groups: the wlcg.groups claim lists only the groups asked for
    (default groups for wlcg.groups alone, or without any group request), never one the user
    is not in; a refresh keeps the login's groups."""
    issuer = _wlcg_issuer()
    code = await _approved(issuer, scope)
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    claims = peek(tokens.access_token)[1]
    assert claims.get("wlcg.groups") == groups
    refreshed = await token(issuer, grant_type=GRANT_REFRESH, refresh_token=tokens.refresh_token)
    assert peek(refreshed.access_token)[1].get("wlcg.groups") == groups


async def test_group_request_alone_gets_no_capability(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request of wlcg.groups only gets no storage scope (exactly what is asked)."""
    issuer = _wlcg_issuer()
    code = await _approved(issuer, "wlcg.groups:/wlcg/test")
    tokens = await token(issuer, grant_type=GRANT_DEVICE_CODE, device_code=code)
    claims = peek(tokens.access_token)[1]
    assert claims["wlcg.groups"] == ["/wlcg/test"]
    assert "storage.read" not in claims.get("scope", "")
