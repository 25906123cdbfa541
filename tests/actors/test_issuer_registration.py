"""Dynamic client registration (RFC 7591) at the issuer, in virtual time: off unless enabled,
grants and scopes bounded by the issuer's policy, redirect URIs checked, secrets kept as hashes,
registered clients surviving a restart."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from scitokens_batch.actors import Issuer, RegistrationPolicy
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    ClientRegistrationRequest,
    ClientRegistrationResponse,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    OAuthError,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.tokens import parse_scope, peek

from .issuer_helpers import make_issuer

REDIRECT = "http://localhost:8080"


def _issuer(**policy: Any) -> Issuer:
    fields: dict[str, Any] = {"scopes": (parse_scope("read:/data"),)}
    fields.update(policy)
    return make_issuer(registration=RegistrationPolicy(**fields))


async def _register(issuer: Issuer, **kw: Any) -> ClientRegistrationResponse | OAuthError:
    fields: dict[str, Any] = {
        "redirect_uris": (REDIRECT,),
        "grant_types": ("authorization_code", GRANT_REFRESH, GRANT_DEVICE_CODE),
        "scope": "openid offline_access read:/data write:/out/alice",
    }
    fields.update(kw)
    answer = await issuer.handle(ClientRegistrationRequest(**fields))
    assert isinstance(answer, ClientRegistrationResponse | OAuthError)
    return answer


async def test_registration_is_off_by_default() -> None:
    """Without a registration policy the endpoint refuses (404) and discovery lists none."""
    issuer = make_issuer()
    answer = await _register(issuer)
    assert isinstance(answer, OAuthError) and answer.status == 404
    assert "registration_endpoint" not in issuer.discovery_document()


async def test_registered_client_is_bounded_by_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A registered client gets the grants it asked for within the policy (client credentials
    dropped), scopes within the policy (write dropped), a secret; its device login then gets
    at most the policy's scopes though alice may write."""
    issuer = _issuer()
    reg = await _register(issuer, grant_types=(GRANT_DEVICE_CODE, GRANT_CLIENT_CREDENTIALS))
    assert isinstance(reg, ClientRegistrationResponse)
    assert reg.grant_types == (GRANT_DEVICE_CODE,)
    assert reg.scope == "read:/data offline_access openid"
    assert reg.client_secret is not None and reg.client_id.startswith("dcr-")
    assert issuer.discovery_document()["registration_endpoint"].endswith("/register")
    start = await issuer.handle(
        DeviceAuthorizationRequest(
            client_id=reg.client_id,
            client_secret=reg.client_secret,
            client_auth=CLIENT_AUTH_BASIC,
            scope="read:/data write:/out/alice",
        )
    )
    assert isinstance(start, DeviceAuthorizationResponse)
    await issuer.handle(DeviceApproval(user_code=start.user_code, user="alice"))
    tokens = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_DEVICE_CODE,
            client_id=reg.client_id,
            client_secret=reg.client_secret,
            device_code=start.device_code,
        )
    )
    assert isinstance(tokens, TokenResponse)
    assert peek(tokens.access_token)[1]["scope"] == "read:/data"
    wrong = await issuer.handle(
        TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS, client_id=reg.client_id, client_secret="guess"
        )
    )
    assert isinstance(wrong, OAuthError) and wrong.error == "invalid_client"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"redirect_uris": ("http://evil.example/cb",)}, "invalid_redirect_uri"),
        ({"redirect_uris": ("https://app.example/cb#frag",)}, "invalid_redirect_uri"),
        ({"redirect_uris": ("javascript:alert(1)",)}, "invalid_redirect_uri"),
        ({"redirect_uris": ("data:/x",)}, "invalid_redirect_uri"),
        ({"redirect_uris": ()}, "invalid_redirect_uri"),  # the code grant needs one
        ({"grant_types": (GRANT_CLIENT_CREDENTIALS,)}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"scope": "read:data"}, "invalid_client_metadata"),
    ],
)
async def test_bad_metadata_is_refused(change: dict[str, Any], error: str) -> None:
    """RFC 7591 §3.2.2: bad redirect URIs, grants outside the policy, unsupported auth
    methods and malformed scopes are refused, and nothing is registered."""
    issuer = _issuer()
    answer = await _register(issuer, **change)
    assert isinstance(answer, OAuthError) and (answer.error, answer.status) == (error, 400)
    assert issuer.take_changes() == {}


async def test_native_app_redirects_are_accepted() -> None:
    """RFC 8252 §7.1/§7.3: loopback http and a reversed-domain private scheme (oidc-agent's)
    may be registered."""
    reg = await _register(
        _issuer(), redirect_uris=("http://127.0.0.1:4242/", "edu.kit.data.oidc-agent:/redirect")
    )
    assert isinstance(reg, ClientRegistrationResponse)


async def test_registration_is_bounded() -> None:
    """Past max_clients registration answers 503."""
    issuer = _issuer(max_clients=2)
    for _ in range(2):
        assert isinstance(await _register(issuer), ClientRegistrationResponse)
    full = await _register(issuer)
    assert isinstance(full, OAuthError) and full.status == 503


async def test_registered_clients_survive_a_restart() -> None:
    """Registered clients are rows of the durable table (the secret as a SHA-256 only): a
    restarted issuer still authenticates them."""
    issuer = _issuer()
    saved: dict[str, Any] = {}

    async def persist(changes: Any) -> None:
        saved.update({k: v for k, v in changes.items() if v is not None})

    issuer.persist = persist
    reg = await _register(issuer, token_endpoint_auth_method="client_secret_post")
    assert isinstance(reg, ClientRegistrationResponse) and reg.client_secret is not None
    row = saved["client:" + reg.client_id]
    assert reg.client_secret not in repr(row)
    again = _issuer()
    again.restore_rows(saved)
    ok = await again.handle(
        TokenRequest(
            grant_type=GRANT_DEVICE_CODE,
            client_id=reg.client_id,
            client_secret=reg.client_secret,
            device_code="dc-unknown",
        )
    )
    assert isinstance(ok, OAuthError) and ok.error == "invalid_grant"  # authenticated
    bad = await again.handle(
        TokenRequest(
            grant_type=GRANT_DEVICE_CODE,
            client_id=reg.client_id,
            client_secret="wrong",
            device_code="dc-unknown",
        )
    )
    assert isinstance(bad, OAuthError) and bad.error == "invalid_client"
