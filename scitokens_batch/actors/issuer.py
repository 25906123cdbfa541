"""The VO token issuer: VO policy, token endpoint grants, JWKS with rotation, rate limit.

It answers :class:`~scitokens_batch.protocol.TokenRequest` and
:class:`~scitokens_batch.protocol.JwksRequest`. Refresh tokens are opaque strings it keeps in a
table; they rotate on every use (E4, I7), and the previous one stays usable for a grace period
(E4: "AS SHOULD allow ~1 day grace"). What a user may be granted is the VO policy: a request is
narrowed to it, and refused with ``invalid_scope`` when nothing is left (B15).

An outage is not the issuer's business: the world takes it off the network (connection refused).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import attrs
import trio

from ..errors import ScopeError
from ..metrics import Recorder
from ..protocol import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    JwksRequest,
    JwksResponse,
    Message,
    OAuthError,
    TokenRequest,
    TokenResponse,
)
from ..tokens import (
    KeyRing,
    Profile,
    Scope,
    SigningKey,
    VerifiedToken,
    build_claims,
    encode,
    format_scopes,
    narrow,
    parse_scopes,
    short_hash,
    verifier_for,
)
from ._common import Clock, Logger, new_jti, new_secret

__all__ = ["Issuer", "UserPolicy"]


@attrs.frozen(kw_only=True)
class UserPolicy:
    """What the VO lets one user have.

    Attributes:
        name: the user (``sub`` of their tokens).
        scopes: the most this user may be granted.
        groups: ``wlcg.groups`` (WLCG profile tokens carry them).
    """

    name: str
    scopes: tuple[Scope, ...]
    groups: tuple[str, ...] = ()


@attrs.define
class _RefreshGrant:
    user: str
    client: str
    scopes: tuple[Scope, ...]
    audience: str | None
    expires: float
    #: when it was replaced by a newer one (rotation); usable until then + grace
    rotated_at: float | None = None
    revoked: bool = False


@attrs.define(kw_only=True)
class Issuer:
    """One VO issuer.

    Args:
        name: actor name on the network.
        url: the ``iss`` claim, byte for byte.
        profile: token profile it emits.
        keys: its key ring (rotation ahead of use, D6).
        users: the VO policy.
        access_token_lifetime: seconds.
        refresh_token_lifetime: seconds.
        nbf_backdate: ``nbf = iat - nbf_backdate`` (E1).
        max_requests_per_second: beyond this, 503 (None: unlimited).
        refresh_grace: how long a rotated refresh token is still accepted (E4).
        now: the issuer's clock (absolute seconds).
        rng: this actor's seeded RNG (jti, refresh tokens).
        recorder: event recorder.
        log: structlog logger.
    """

    name: str
    url: str
    profile: Profile
    keys: KeyRing
    users: Mapping[str, UserPolicy]
    access_token_lifetime: float
    refresh_token_lifetime: float
    nbf_backdate: float = 0.0
    max_requests_per_second: float | None = None
    refresh_grace: float = 86400.0
    client_lifetimes: Mapping[str, float] = attrs.field(factory=dict)
    now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    _grants: dict[str, _RefreshGrant] = attrs.field(factory=dict, alias="_grants")
    _window: int = attrs.field(default=-1, alias="_window")
    _window_count: int = attrs.field(default=0, alias="_window_count")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The issuer is purely reactive; it is ready at once."""
        task_status.started()
        await trio.sleep_forever()

    # -- out-of-band actions (the user's login, the VO admin, faults) ---------------------

    def enroll(
        self, user: str, *, client: str, scopes: Sequence[str] | str, audience: str | None
    ) -> str:
        """The user's login (device flow done before the scenario): a refresh token for ``client``.

        Raises:
            ScopeError: when none of the requested scopes is within the VO policy.
        """
        policy = self.users[user]
        requested = parse_scopes(scopes if isinstance(scopes, str) else " ".join(scopes))
        granted = narrow(requested, policy.scopes)
        if not granted:
            raise ScopeError(f"user {user!r} may have none of {format_scopes(requested)!r}")
        token = new_secret(self.rng, "rt-")
        self._grants[token] = _RefreshGrant(
            user=user,
            client=client,
            scopes=granted,
            audience=audience,
            expires=self.now() + self.refresh_token_lifetime,
        )
        return token

    def revoke_user(self, user: str) -> int:
        """Revoke every refresh token of ``user`` (RFC 7009 by an admin); returns how many."""
        n = 0
        for grant in self._grants.values():
            if grant.user == user and not grant.revoked:
                grant.revoked = True
                n += 1
        return n

    def rotate_key(self, new_key: SigningKey, *, publish_ahead: float) -> None:
        """Publish ``new_key`` now and sign with it from now + ``publish_ahead`` (D6)."""
        self.keys.rotate(new_key, at=self.now(), publish_ahead=publish_ahead)

    # -- the endpoints ---------------------------------------------------------------------

    async def handle(self, message: Message) -> Message:
        """Answer a token or JWKS request."""
        if isinstance(message, JwksRequest):
            self.recorder.record(
                self.name, "request", endpoint="jwks", status=200, grant=None, error=None
            )
            return JwksResponse(keys=self.keys.published(self.now()))
        if not isinstance(message, TokenRequest):
            raise TypeError(f"issuer {self.name}: unexpected message {type(message).__name__}")
        if self._rate_limited():
            return self._error(message, "temporarily_unavailable", "rate limit exceeded", 503)
        if message.grant_type == GRANT_REFRESH:
            return self._refresh(message)
        if message.grant_type == GRANT_CLIENT_CREDENTIALS:
            return self._client_credentials(message)
        if message.grant_type == GRANT_TOKEN_EXCHANGE:
            return self._exchange(message)
        return self._error(message, "unsupported_grant_type", f"grant {message.grant_type!r}")

    def _rate_limited(self) -> bool:
        limit = self.max_requests_per_second
        if limit is None:
            return False
        # Fixed one-second windows of the issuer's clock: simple, and deterministic.
        second = int(self.now())
        if second != self._window:
            self._window, self._window_count = second, 0
        self._window_count += 1
        return self._window_count > limit

    def _error(
        self, req: TokenRequest, error: str, description: str, status: int = 400
    ) -> OAuthError:
        self.recorder.record(
            self.name, "request", endpoint="token", status=status, grant=req.grant_type, error=error
        )
        return OAuthError(error=error, description=description, status=status)

    def _requested(
        self, req: TokenRequest, allowed: Sequence[Scope]
    ) -> tuple[Scope, ...] | OAuthError:
        """The scopes to grant: the request narrowed to ``allowed`` (B15), or an error."""
        if req.scope is None:
            return tuple(allowed)
        try:
            requested = parse_scopes(req.scope)
        except ScopeError as exc:
            return self._error(req, "invalid_scope", str(exc))
        granted = narrow(requested, allowed)
        if not granted:
            return self._error(req, "invalid_scope", f"none of {req.scope!r} may be granted")
        return granted

    def _refresh(self, req: TokenRequest) -> Message:
        now = self.now()
        grant = self._grants.get(req.refresh_token or "")
        if grant is None or grant.client != req.client_id:
            return self._error(req, "invalid_grant", "unknown refresh token")
        if grant.revoked:
            return self._error(req, "invalid_grant", "refresh token revoked")
        if now >= grant.expires:
            return self._error(req, "invalid_grant", "refresh token expired")
        if grant.rotated_at is not None and now >= grant.rotated_at + self.refresh_grace:
            return self._error(req, "invalid_grant", "refresh token already used (rotated)")
        scopes = self._requested(req, grant.scopes)
        if isinstance(scopes, OAuthError):
            return scopes
        audience = req.audience if req.audience is not None else grant.audience
        access = self._mint(grant.user, req.client_id, scopes, audience, GRANT_REFRESH)
        # Rotation (E4, I7): a new refresh token each time; the old one lives out its grace.
        grant.rotated_at = now if grant.rotated_at is None else grant.rotated_at
        new_rt = new_secret(self.rng, "rt-")
        self._grants[new_rt] = _RefreshGrant(
            user=grant.user,
            client=grant.client,
            scopes=grant.scopes,
            audience=grant.audience,
            expires=grant.expires,
        )
        return attrs.evolve(access, refresh_token=new_rt)

    def _client_credentials(self, req: TokenRequest) -> Message:
        policy = self.users.get(req.client_id)
        if policy is None:
            return self._error(req, "invalid_client", f"unknown client {req.client_id!r}", 401)
        scopes = self._requested(req, policy.scopes)
        if isinstance(scopes, OAuthError):
            return scopes
        return self._mint(
            req.client_id, req.client_id, scopes, req.audience, GRANT_CLIENT_CREDENTIALS
        )

    def _exchange(self, req: TokenRequest) -> Message:
        """RFC 8693: a token for a token, never wider than the subject token (K4, K5).

        The subject token is checked like any data server would (format, issuer, key,
        signature, time, scopes), except its audience: the issuer is the authority on its own
        tokens, whoever they were meant for.
        """
        now = self.now()
        verifier = verifier_for(self.url, None, self.keys.published(now), now=now)
        subject = verifier.check(req.subject_token, now=now)
        if not isinstance(subject, VerifiedToken):
            # The keys are given, so the verdict is a Rejection (never NeedKeys).
            return self._error(req, "invalid_grant", f"subject token: {subject}")
        scopes = self._requested(req, subject.scopes)
        if isinstance(scopes, OAuthError):
            return scopes
        return self._mint(
            subject.subject, req.client_id, scopes, req.audience, GRANT_TOKEN_EXCHANGE
        )

    def _mint(
        self, user: str, client: str, scopes: Sequence[Scope], audience: str | None, grant: str
    ) -> TokenResponse:
        now = self.now()
        key = self.keys.signing_key(now)
        lifetime = self.client_lifetimes.get(client, self.access_token_lifetime)
        policy = self.users.get(user)
        claims = build_claims(
            profile=self.profile,
            issuer=self.url,
            subject=user,
            audience=audience if audience is not None else self.url,
            scopes=scopes,
            issued_at=now,
            lifetime=lifetime,
            jti=new_jti(self.rng),
            nbf_backdate=self.nbf_backdate,
            groups=policy.groups if (policy and self.profile is Profile.WLCG) else (),
        )
        token = encode(claims, key)
        scope_text = claims["scope"]
        self.recorder.record(
            self.name, "request", endpoint="token", status=200, grant=grant, error=None
        )
        self.recorder.record(
            self.name,
            "mint",
            jti=claims["jti"],
            token_sha=short_hash(token),
            sub=user,
            client=client,
            grant=grant,
            scope=scope_text,
            aud=claims["aud"],
            iat=claims["iat"],
            exp=claims["exp"],
            kid=key.kid,
        )
        return TokenResponse(
            access_token=token, expires_in=float(claims["exp"] - claims["iat"]), scope=scope_text
        )
