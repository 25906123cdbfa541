"""An issuer on its own, in trio's virtual time, with a small client registry for the grants."""

from __future__ import annotations

import functools
import random
from typing import Any

import trio

from scitokens_batch.actors import ClientPolicy, Issuer, UserPolicy
from scitokens_batch.metrics import ListSink, Recorder
from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    Message,
    OAuthError,
    TokenRequest,
    TokenResponse,
)
from scitokens_batch.tokens import KeyRing, Profile, SigningKey, parse_scope

URL = "https://issuer.example/vo"
#: Unix seconds that virtual t = 0 stands for (an unusual value: a stray time.time() shows).
T0 = 1_767_225_600.0
#: The clients' secrets (test values; an issuer never puts one in an answer or an event).
SECRETS = {
    "token_manager": "cs-token-manager-secret",
    "fts": "cs-fts-secret",
    "host:svc.example": "cs-svc-secret",
}
FTS_LIFETIME = 600.0

__all__ = [
    "FTS_LIFETIME",
    "SECRETS",
    "T0",
    "URL",
    "ask",
    "clients",
    "error",
    "make_issuer",
    "signing_key",
    "token",
]


@functools.cache
def signing_key() -> SigningKey:
    """One key for every issuer of the module (generation is not what is tested)."""
    return SigningKey.generate(kid="vo-1")


def clients() -> dict[str, ClientPolicy]:
    """The registry most tests use.

    - ``token_manager``: confidential; refresh and device code (what the world registers).
    - ``fts``: confidential; token exchange, refresh and client credentials; ``read:/data``;
      may ask for two audiences only; its tokens live 10 minutes (P13).
    - ``cli``: public; device code only.
    - ``host:svc.example``: confidential; client credentials only (A13).
    """
    return {
        "token_manager": ClientPolicy(
            client_id="token_manager",
            secret=SECRETS["token_manager"],
            grants=frozenset({GRANT_REFRESH, GRANT_DEVICE_CODE}),
        ),
        "fts": ClientPolicy(
            client_id="fts",
            secret=SECRETS["fts"],
            grants=frozenset({GRANT_TOKEN_EXCHANGE, GRANT_REFRESH, GRANT_CLIENT_CREDENTIALS}),
            scopes=(parse_scope("read:/data"),),
            audiences=("https://fts.example", "https://storage.example"),
            access_token_lifetime=FTS_LIFETIME,
        ),
        "cli": ClientPolicy(client_id="cli", grants=frozenset({GRANT_DEVICE_CODE})),
        "host:svc.example": ClientPolicy(
            client_id="host:svc.example",
            secret=SECRETS["host:svc.example"],
            grants=frozenset({GRANT_CLIENT_CREDENTIALS}),
            scopes=(parse_scope("read:/data/svc"), parse_scope("host.auth")),
        ),
    }


def make_issuer(**overrides: Any) -> Issuer:
    """An issuer whose clock is trio's (plus T0); call it inside a trio test."""
    users = {
        "alice": UserPolicy(
            name="alice", scopes=(parse_scope("read:/data"), parse_scope("write:/out/alice"))
        ),
        "bob": UserPolicy(name="bob", scopes=(parse_scope("read:/data/bob"),)),
    }
    fields: dict[str, Any] = {
        "name": "vo",
        "url": URL,
        "profile": Profile.SCITOKENS,
        "keys": KeyRing.single(signing_key()),
        "users": users,
        "clients": clients(),
        # what a client registered without audiences may ask for (the scenario's servers)
        "known_audiences": frozenset({"https://storage.example", "https://fts.example", URL}),
        "access_token_lifetime": 1200.0,
        "refresh_token_lifetime": 30 * 86400.0,
        "now": lambda: T0 + trio.current_time(),
        "rng": random.Random(1),
        "recorder": Recorder(clock=trio.current_time, sink=ListSink()),
        "log": None,
    }
    fields.update(overrides)
    return Issuer(**fields)


async def ask(issuer: Issuer, client: str = "token_manager", **kw: Any) -> Message:
    """A token request from ``client``, authenticated with its secret (HTTP Basic) unless
    ``client_secret`` is given."""
    kw.setdefault("client_secret", SECRETS.get(client))
    request = TokenRequest(client_id=client, client_auth=CLIENT_AUTH_BASIC, **kw)
    return await issuer.handle(request)


async def token(issuer: Issuer, client: str = "token_manager", **kw: Any) -> TokenResponse:
    """Like :func:`ask`, for a request that must succeed."""
    answer = await ask(issuer, client, **kw)
    assert isinstance(answer, TokenResponse), answer
    return answer


async def error(issuer: Issuer, client: str = "token_manager", **kw: Any) -> OAuthError:
    """Like :func:`ask`, for a request that must fail."""
    answer = await ask(issuer, client, **kw)
    assert isinstance(answer, OAuthError), answer
    return answer
