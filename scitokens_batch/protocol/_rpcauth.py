"""Who may call whom over RPC: service identity tokens (HTCondor IDTOKENS style) and the table
of the message types each role accepts from each other role.

Live mode's batch-system actors call each other with JSON RPC (``_wire.py``). Every call
carries a *service token* in ``Authorization: Bearer``: a JWT signed by the run's pool key
(ES256, made by the live runner; only the runner holds the private half), whose ``sub`` is the
calling service's actor name, ``scitokens_batch_role`` its role and ``aud`` the one service it
may be presented to. The receiver checks it with the pool's public key (our own token core:
:func:`~scitokens_batch.tokens.parse` and :func:`~scitokens_batch.tokens.signature_valid`), then
looks the (its role, message type) pair up in :data:`RPC_CALLERS`: the caller's role must be
listed. Everything not listed is refused (deny by default).

Why an audience per destination: the queue manager presents its token to every execute host.
With one token for all, a host that turned bad could replay the queue manager's token to the
other hosts and start jobs there; a token bound to one host is refused by the others.

Pure: no I/O, the time is a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ..tokens import PublicKey, Reason, Rejection, SigningKey, encode, parse, signature_valid
from ._messages import NAME_PATTERN

__all__ = [
    "CLOCK_LEEWAY",
    "LOGIN_ROLE",
    "POOL_ISSUER",
    "POOL_KID",
    "ROLE_CLAIM",
    "RPC_CALLERS",
    "SERVICE_ROLES",
    "ServiceIdentity",
    "check_service_token",
    "mint_service_token",
    "rpc_allowed",
    "rpc_destinations",
]

#: ``iss`` of every service token: the pool (one per run), never a VO issuer's URL, so a VO
#: access token can never pass for a service token (and the other way round).
POOL_ISSUER: Final = "scitokens-batch:pool"
#: The ``kid`` of the pool key (one key per run).
POOL_KID: Final = "pool"
#: The claim naming the caller's role.
ROLE_CLAIM: Final = "scitokens_batch_role"
#: The role of the users' login path (the runner's device-flow helper, ``condor_store_cred``).
LOGIN_ROLE: Final = "login"
#: The roles a service token may name (the live service roles, and the login path).
SERVICE_ROLES: Final = frozenset(
    {
        "issuer",
        "token-manager",
        "queue-manager",
        "execute-host",
        "data-server",
        "transfer-service",
        "data-manager",
        LOGIN_ROLE,
    }
)

#: receiver role -> message type -> the caller roles allowed to send it. A pair not listed is
#: refused (403). Only the queue manager starts jobs and pushes credentials to hosts, only the
#: queue manager asks for credentials, only the login path stores them.
RPC_CALLERS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "token-manager": {
        "StoreCredential": frozenset({LOGIN_ROLE}),
        "CredentialRequest": frozenset({"queue-manager"}),
    },
    "queue-manager": {
        "CredentialUpdate": frozenset({"token-manager"}),
        "JobFinished": frozenset({"execute-host"}),
    },
    "execute-host": {
        "StartJob": frozenset({"queue-manager"}),
        "CredentialUpdate": frozenset({"queue-manager"}),
        "ClaimAlive": frozenset({"queue-manager"}),
    },
    "transfer-service": {
        "TransferSubmit": frozenset({"data-manager"}),
    },
}

#: Seconds of clock difference between hosts tolerated on ``nbf`` and ``exp``.
CLOCK_LEEWAY: Final = 60.0
_NAME_RE: Final = re.compile(NAME_PATTERN)


@attrs.frozen
class ServiceIdentity:
    """An authenticated caller: its actor name, its role, the token's ``jti`` (for logs) and
    ``exp`` (until when a receiver may remember the check)."""

    name: str
    role: str
    jti: str
    exp: float = attrs.field(default=float("inf"), eq=False)

    def still_valid(self, now: float) -> bool:
        """The token this identity came from has not expired at ``now`` (with the leeway)."""
        return now - CLOCK_LEEWAY < self.exp


def rpc_allowed(receiver_role: str, message_type: str, caller_role: str) -> bool:
    """Whether a caller of ``caller_role`` may send ``message_type`` to a ``receiver_role``."""
    return caller_role in RPC_CALLERS.get(receiver_role, {}).get(message_type, frozenset())


def rpc_destinations(caller_role: str) -> frozenset[str]:
    """The receiver roles a caller of ``caller_role`` may send anything to."""
    return frozenset(
        receiver
        for receiver, table in RPC_CALLERS.items()
        if any(caller_role in roles for roles in table.values())
    )


def mint_service_token(
    key: SigningKey,
    *,
    name: str,
    role: str,
    audience: str,
    now: float,
    lifetime: float,
    jti: str,
) -> str:
    """A service token for ``name`` (of ``role``) to present to the service ``audience``.

    Raises:
        ValueError: an unknown role, a name outside :data:`NAME_PATTERN`, or a lifetime <= 0.
    """
    if role not in SERVICE_ROLES:
        raise ValueError(f"role must be one of {sorted(SERVICE_ROLES)} (got {role!r})")
    for field, value in (("name", name), ("audience", audience)):
        if not _NAME_RE.fullmatch(value):
            raise ValueError(f"{field} must match {NAME_PATTERN} (got {value!r})")
    if lifetime <= 0:
        raise ValueError(f"lifetime must be > 0 (got {lifetime!r})")
    claims: dict[str, Any] = {
        "iss": POOL_ISSUER,
        "sub": name,
        "aud": audience,
        ROLE_CLAIM: role,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lifetime),
        "jti": jti,
    }
    return encode(claims, key)


def check_service_token(
    token: str, *, keys: Sequence[PublicKey], audience: str, now: float
) -> ServiceIdentity | Rejection:
    """Who presents ``token`` to the service ``audience``, or why it is refused.

    Checks, in order: a compact JWS signed by one of ``keys`` (by ``kid``), ``iss`` the pool,
    ``aud`` exactly ``audience``, ``nbf <= now < exp`` (with :data:`CLOCK_LEEWAY`), ``sub`` a
    plain name, the role one of :data:`SERVICE_ROLES`. Details never hold the token.
    """
    parsed = parse(token)
    if isinstance(parsed, Rejection):
        return parsed
    key = next((k for k in keys if k.kid == parsed.kid), None)
    if key is None:
        return Rejection(Reason.UNKNOWN_KEY, "not signed by the pool key")
    if not signature_valid(parsed, key):
        return Rejection(Reason.BAD_SIGNATURE, "the signature does not verify with the pool key")
    claims = parsed.claims
    if claims.get("iss") != POOL_ISSUER:
        return Rejection(Reason.UNTRUSTED_ISSUER, "not a service token of this pool")
    if claims.get("aud") != audience:
        return Rejection(Reason.WRONG_AUDIENCE, f"not a service token for {audience}")
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not isinstance(nbf, int | float) or not isinstance(exp, int | float):
        return Rejection(Reason.MALFORMED, "nbf and exp must be numbers")
    if now + CLOCK_LEEWAY < nbf:
        return Rejection(Reason.NOT_YET_VALID, "the service token is not valid yet")
    if now - CLOCK_LEEWAY >= exp:
        return Rejection(Reason.EXPIRED, "the service token has expired")
    sub, role, jti = claims.get("sub"), claims.get(ROLE_CLAIM), claims.get("jti")
    if not isinstance(sub, str) or not _NAME_RE.fullmatch(sub):
        return Rejection(Reason.MALFORMED, "sub must be a service name")
    if not isinstance(role, str) or role not in SERVICE_ROLES:
        return Rejection(Reason.INSUFFICIENT_SCOPE, "the token names no known role")
    return ServiceIdentity(name=sub, role=role, jti=str(jti), exp=float(exp))
