"""The VO token issuer: VO policy, registered clients, the OAuth2 grants, JWKS, rate limit.

It answers, at the message level (the same in virtual time and in live mode, where the HTTP
layer maps form posts onto these messages):

================================  ==============================================================
message (``protocol``)            endpoint (the paths of ``discovery_document()``)
================================  ==============================================================
``TokenRequest``                  ``<url>/token``: refresh (RFC 6749 §6), client credentials
                                  (§4.4), token exchange (RFC 8693), device code polling
                                  (RFC 8628 §3.4)
``DeviceAuthorizationRequest``    ``<url>/device_authorization`` (RFC 8628 §3.1)
``DeviceApproval``                ``<url>/device``: the user at the verification page
``RevocationRequest``             ``<url>/revoke`` (RFC 7009)
``JwksRequest``                   ``<url>/jwks`` (D2)
================================  ==============================================================

Every client request is authenticated against the client registry (:class:`ClientPolicy`):
an unknown client, or a confidential one with a missing or wrong secret, is ``invalid_client``
(401); a grant the client is not registered for is ``unauthorized_client``. Errors are the codes
of RFC 6749 §5.2, RFC 8693 §2.2.2 (``invalid_target``), RFC 8628 §3.5 and RFC 7009 §2.2.1, with
status 400 except ``invalid_client`` (401) and the rate limit (503). Error descriptions never
hold a token, a device code or a secret.

Refresh tokens are opaque strings kept in a table (by SHA-256 digest); they rotate on every use
(E4, I7). Reuse follows RFC 9700 §4.14.2 with a reuse grace (E4, P12): a token is rotated once,
to one successor derived from it with a secret key (HMAC), so a retry of the same rotated token
within ``refresh_token_grace`` gets that same successor back (a client that lost the answer is
not locked out, and parallel refreshes make no new branches), while any use of a rotated token
once its successor was used, or after the grace, revokes the whole family (every token rotated
from the same login). Rotated tokens are kept as small tombstones until the family expires, so a
late replay is still recognised. Device codes are forgotten shortly after they expire.

Durability (live mode): every change to the refresh-token table is handed to ``persist`` (when
set) and awaited before the answer leaves, so a rotation a client saw survives a crash.
What a user may be granted is the VO policy, and what a token exchange may grant is the subject
token: a request is narrowed to it, and refused with ``invalid_scope`` when nothing is left
(B15). ``offline_access`` and ``openid`` in a requested scope are OAuth scopes, not
capabilities: they are taken out before the capability scopes are parsed.

An outage is not the issuer's business: the world takes it off the network (connection refused).
"""

from __future__ import annotations

import base64
import collections
import enum
import hashlib
import hmac
import random
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import trio

from ..errors import LocalInputError, ScopeError
from ..metrics import Recorder
from ..protocol import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_POST,
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_JWT,
    TOKEN_TYPE_REFRESH,
    Ack,
    AuthorizationRequest,
    AuthorizationResponse,
    ClientRegistrationRequest,
    ClientRegistrationResponse,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    JwksRequest,
    JwksResponse,
    Message,
    OAuthError,
    RevocationRequest,
    TokenRequest,
    TokenResponse,
    UserinfoRequest,
    UserinfoResponse,
)
from ..tokens import (
    Algorithm,
    KeyRing,
    Profile,
    Scope,
    SigningKey,
    VerifiedToken,
    build_claims,
    encode,
    format_scopes,
    narrow,
    parse_scope,
    parse_scopes,
    short_hash,
    verifier_for,
)
from ._common import Clock, Logger, new_jti, new_secret

__all__ = [
    "ANY_AUDIENCE",
    "GRANTS",
    "OAUTH_SCOPES",
    "ClientPolicy",
    "Issuer",
    "RegistrationPolicy",
    "UserPolicy",
]

#: Every grant type the token endpoint implements, in the order discovery lists them.
GRANTS = (
    GRANT_REFRESH,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    GRANT_DEVICE_CODE,
    GRANT_AUTHORIZATION_CODE,
)
#: OAuth/OIDC scopes that are not capabilities (K1): never parsed as one, never an error.
OAUTH_SCOPES = frozenset({"offline_access", "openid"})
#: The group request scope (WLCG profile): ``wlcg.groups``, or ``wlcg.groups:/vo/sub``.
GROUPS_SCOPE = "wlcg.groups"

#: RFC 8628 §6.1: a user code of 8 characters from 20 consonants (no vowels: no words, and no
#: look-alikes such as 0/O or 1/I) has 20^8 ≈ 2.6e10 values; shown as ``WDJB-MJHT``.
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
#: RFC 8628 §3.5: "the interval MUST be increased by 5 seconds" on every ``slow_down``.
_SLOW_DOWN_STEP = 5.0
#: How long an expired device code is still told apart (``expired_token``) before it is
#: forgotten (then: ``invalid_grant``, unknown); bounds the table to the codes of one lifetime.
DEVICE_RETENTION = 60.0
#: The default ``refresh_token_grace``: minutes, long enough for a client to retry a refresh
#: whose answer it lost (a crash, a timeout), short enough that a stolen rotated token is soon
#: useless and the rotated entries are soon compacted.
DEFAULT_GRACE = 300.0
#: Wrong passwords tried on one user code before the code is denied (guessing is bounded).
MAX_APPROVAL_FAILURES = 5
#: RFC 6749 §4.1.2: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED";
#: a client redeems it at once, so one minute is plenty (INDIGO IAM: 5 minutes).
AUTHORIZATION_CODE_LIFETIME = 60.0
#: Consent-page logins: after this many failures for one user within LOGIN_LOCKOUT seconds,
#: that user's logins there are refused for the rest of the window (bounded guessing, like the
#: device page's per-code limit; the consent page has no code to count on).
LOGIN_LOCKOUT = 300.0
#: RFC 7636 §4.1: ``code_verifier`` is 43 to 128 unreserved characters; §4.2: the S256
#: challenge is its SHA-256 in base64url without padding (43 characters).
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")

#: An ``aud`` claim value: one audience, or several (C1).
Audience: TypeAlias = str | tuple[str, ...]


def _known_grants(_: object, attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    if not isinstance(value, frozenset) or not value <= set(GRANTS):
        raise ValueError(
            f"{attribute.name} must be a frozenset of {', '.join(GRANTS)} (got {value!r})"
        )


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds or None (got {value!r})")


@attrs.frozen(kw_only=True)
class UserPolicy:
    """What the VO lets one user have.

    Attributes:
        name: the user (``sub`` of their tokens).
        scopes: the most this user may be granted.
        groups: the default ``wlcg.groups`` (WLCG profile tokens carry them).
        optional_groups: groups the user belongs to that a token lists only when asked for
            by name (``wlcg.groups:/wlcg/test``), as INDIGO IAM's optional groups.
    """

    name: str
    scopes: tuple[Scope, ...]
    groups: tuple[str, ...] = ()
    optional_groups: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ClientPolicy:
    """A registered OAuth client (the token manager, FTS, Rucio, a service host...).

    Attributes:
        client_id: the ``client_id`` it authenticates as; the ``sub`` of its client
            credentials tokens (A13: ``host:fully.qualified.domain`` for services).
        secret: its client secret (RFC 6749 §2.3.1); None for a public client, which
            authenticates with its ``client_id`` alone (RFC 6749 §2.1).
        grants: the GRANT_* constants it may use; any other is ``unauthorized_client``.
        scopes: the most a client credentials token may hold (the client is the subject);
            the other grants are bounded by the user's policy or the subject token instead.
        audiences: the audiences it may ask for (``invalid_target`` otherwise); empty: the
            issuer's ``known_audiences`` (its data servers and services); ``("*",)``: any
            (an explicit opt-in). A default audience (the refresh token's, the subject
            token's) is not checked.
        access_token_lifetime: seconds its access tokens live, whatever the grant (K5, P13:
            "exchanged tokens get the exchanging client's lifetimes"); None: the issuer's.
    """

    client_id: str
    secret: str | None = attrs.field(default=None, repr=False)
    grants: frozenset[str] = attrs.field(validator=_known_grants)
    scopes: tuple[Scope, ...] = ()
    audiences: tuple[str, ...] = ()
    access_token_lifetime: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: RFC 6749 §3.1.2: the redirection URIs registered for the authorization code grant,
    #: compared as exact strings (RFC 9700 §4.1.3: no pattern, no prefix)
    redirect_uris: tuple[str, ...] = ()
    #: the most any token of this client may hold, whatever the user may have (a dynamically
    #: registered client: the issuer's ``RegistrationPolicy.scopes``); None: no bound
    scope_bound: tuple[Scope, ...] | None = None
    #: a registered client's secret as its SHA-256 (hex): the durable table holds no secret
    secret_sha256: str | None = attrs.field(default=None, repr=False)

    @property
    def confidential(self) -> bool:
        """It has a secret it must present (RFC 6749 §2.1)."""
        return self.secret is not None or self.secret_sha256 is not None

    def bound(self, allowed: Sequence[Scope]) -> tuple[Scope, ...]:
        """``allowed`` within ``scope_bound``: each scope of one covered by the other, kept."""
        if self.scope_bound is None:
            return tuple(allowed)
        inner = list(narrow(allowed, self.scope_bound))
        inner += [s for s in narrow(self.scope_bound, allowed) if s not in inner]
        return tuple(inner)


@attrs.frozen(kw_only=True)
class RegistrationPolicy:
    """Dynamic client registration (RFC 7591) at an issuer that enables it.

    Attributes:
        grants: the grants a registered client may have; what it asks beyond is dropped.
        scopes: the most any token of a registered client may hold (the user's policy still
            applies); a client asking to register other scopes gets these at most.
        max_clients: registered clients kept at most; beyond: 503 (the table is bounded).
    """

    grants: frozenset[str] = attrs.field(
        default=frozenset({GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE, GRANT_REFRESH}),
        validator=_known_grants,
    )
    scopes: tuple[Scope, ...] = ()
    max_clients: int = 1000


@attrs.define(kw_only=True)
class _RefreshGrant:
    user: str
    client: str
    scopes: tuple[Scope, ...]
    audience: Audience | None
    expires: float
    #: every refresh token rotated from one login shares it: revocation takes them all
    family: int
    #: when it was replaced by a newer one (rotation); usable until then + grace
    rotated_at: float | None = None
    revoked: bool = False
    #: the OAuth scopes (``openid``, ``offline_access``) granted at the login: a refresh may
    #: ask for them again, never for more
    oauth: frozenset[str] = frozenset()
    #: the ``wlcg.groups`` asked for at the login (the scope words); None: none asked, the
    #: user's default groups
    groups: tuple[str, ...] | None = None


#: The refresh-token table is never pruned below this many entries.
PRUNE_FLOOR = 4096
#: ``ClientPolicy.audiences`` entry meaning "any audience" (an explicit opt-in).
ANY_AUDIENCE = "*"


def _digest(refresh_token: str) -> str:
    """The table key of a refresh token: its SHA-256, so the table (and its copy on disk in
    live mode) never holds a usable refresh token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


class _DeviceState(enum.Enum):
    PENDING = "pending"  # waiting for the user
    APPROVED = "approved"  # the user said yes; the next poll gets the tokens
    DENIED = "denied"  # the user said no
    CONSUMED = "consumed"  # the tokens were handed out


@attrs.define(kw_only=True)
class _DeviceGrant:
    client: str
    user_code: str
    #: the requested scope as sent (OAuth scopes included); None: whatever the user may have
    scope: str | None
    audience: Audience | None
    expires: float
    interval: float
    last_poll: float | None = None
    user: str | None = None
    state: _DeviceState = _DeviceState.PENDING
    #: failed logins at the approval page for this code
    failures: int = 0


@attrs.define(kw_only=True)
class _AuthorizationCode:
    client: str
    redirect_uri: str
    challenge: str
    user: str
    #: the requested scope as sent (OAuth scopes included)
    scope: str | None
    audience: Audience | None
    nonce: str | None
    expires: float
    #: redeemed (or tried): single use
    used: bool = False
    #: the refresh-token family issued with it, revoked if the code is replayed (§4.1.2)
    family: int | None = None


@attrs.define(kw_only=True)
class Issuer:
    """One VO issuer.

    Args:
        name: actor name on the network.
        url: the ``iss`` claim, byte for byte.
        profile: token profile it emits.
        keys: its key ring (rotation ahead of use, D6).
        users: the VO policy.
        clients: the registered OAuth clients, by ``client_id``.
        access_token_lifetime: seconds, for clients without a lifetime of their own.
        refresh_token_lifetime: seconds from the login (enrolment, device approval, exchange).
        nbf_backdate: ``nbf = iat - nbf_backdate`` (E1).
        max_requests_per_second: beyond this, 503 (None: unlimited).
        refresh_token_grace: how long a retry of a rotated refresh token still gets its
            successor (E4, RFC 9700 §4.14.2); 5 minutes by default.
        device_code_lifetime: ``expires_in`` of a device code (RFC 8628 §3.2; K2: 1800 s).
        device_poll_interval: the polling ``interval`` a device code starts with (5 s).
        known_audiences: what a client with no ``audiences`` of its own may ask for.
        persist: awaited with the changed rows of the refresh-token table (digest -> row,
            None: deleted; :meth:`restore_rows` reads them back) before an answer leaves;
            None: nothing to persist (virtual time).
        successor_key: the HMAC key successors are derived with (live mode keeps it on disk,
            so a restarted issuer derives the same ones); None: drawn from ``rng`` at first use.
        passwords: each user's password for the device approval page.
        require_password: approvals must carry the user's password (live issuers); a user
            without one in ``passwords`` can then not log in at all.
        now: the issuer's clock (absolute seconds).
        rng: this actor's seeded RNG (jti, refresh tokens, device and user codes).
        recorder: event recorder.
        log: structlog logger.
    """

    name: str
    url: str
    profile: Profile
    keys: KeyRing
    users: Mapping[str, UserPolicy]
    clients: Mapping[str, ClientPolicy] = attrs.field(factory=dict)
    access_token_lifetime: float
    refresh_token_lifetime: float
    nbf_backdate: float = 0.0
    max_requests_per_second: float | None = None
    refresh_token_grace: float = DEFAULT_GRACE
    device_code_lifetime: float = 1800.0
    device_poll_interval: float = 5.0
    passwords: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    require_password: bool = False
    #: dynamic client registration (RFC 7591); None: off (no endpoint)
    registration: RegistrationPolicy | None = None
    now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    known_audiences: frozenset[str] = frozenset()
    persist: Callable[[Mapping[str, Mapping[str, Any] | None]], Awaitable[None]] | None = None
    successor_key: bytes | None = attrs.field(default=None, repr=False)
    _grants: dict[str, _RefreshGrant] = attrs.field(factory=dict, alias="_grants")
    #: rotated tokens past their grace: digest -> (family, family expiry), for reuse detection
    _spent: dict[str, tuple[int, float]] = attrs.field(factory=dict, alias="_spent")
    #: digests changed since the last ``persist``
    _dirty: set[str] = attrs.field(factory=set, alias="_dirty")
    _persist_lock: trio.Lock = attrs.field(factory=trio.Lock, alias="_persist_lock")
    _device_expiry: collections.deque[tuple[float, str]] = attrs.field(
        factory=collections.deque, alias="_device_expiry"
    )
    _families: int = attrs.field(default=0, alias="_families")
    _prune_at: int = attrs.field(default=4096, alias="_prune_at")
    _devices: dict[str, _DeviceGrant] = attrs.field(factory=dict, alias="_devices")
    _user_codes: dict[str, str] = attrs.field(factory=dict, alias="_user_codes")
    #: authorization codes by digest (a code is a bearer secret too), and their expiries
    _codes: dict[str, _AuthorizationCode] = attrs.field(factory=dict, alias="_codes")
    _code_expiry: collections.deque[tuple[float, str]] = attrs.field(
        factory=collections.deque, alias="_code_expiry"
    )
    #: user -> times of recent failed consent-page logins
    _login_failures: dict[str, list[float]] = attrs.field(factory=dict, alias="_login_failures")
    #: dynamically registered clients (RFC 7591), and those not yet persisted
    _registered: dict[str, ClientPolicy] = attrs.field(factory=dict, alias="_registered")
    _dirty_clients: set[str] = attrs.field(factory=set, alias="_dirty_clients")
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
            LocalInputError: ``client`` is not registered (it could never use the token).
        """
        if client not in self.clients:
            raise LocalInputError(
                f"issuer {self.name}: expected a registered client, received {client!r}"
            )
        policy = self.users[user]
        text = scopes if isinstance(scopes, str) else " ".join(scopes)
        capabilities, oauth = _capability_scopes(text)
        requested = parse_scopes(capabilities or "")
        granted = narrow(requested, policy.scopes)
        if not granted:
            raise ScopeError(f"user {user!r} may have none of {format_scopes(requested)!r}")
        return self._new_refresh_token(
            user=user,
            client=client,
            scopes=granted,
            audience=audience,
            expires=self.now() + self.refresh_token_lifetime,
            oauth=oauth,
            groups=_group_words(text),
        )

    def revoke_user(self, user: str) -> int:
        """Revoke every refresh token of ``user`` (RFC 7009 by an admin); returns how many."""
        n = 0
        for digest, grant in self._grants.items():
            if grant.user == user and not grant.revoked:
                grant.revoked = True
                self._dirty.add(digest)
                n += 1
        return n

    def rotate_key(self, new_key: SigningKey, *, publish_ahead: float) -> None:
        """Publish ``new_key`` now and sign with it from now + ``publish_ahead`` (D6)."""
        self.keys.rotate(new_key, at=self.now(), publish_ahead=publish_ahead)

    async def admin(self, op: str, args: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """The issuer's admin interface (live mode: ``transport/http.py``, "admin"): the same
        transitions a virtual ``key_rotation`` or ``refresh_token_revoked`` fault makes.

        Operations (``args`` is the request's JSON object):

        - ``keys``: the key ring as published now (kids only, never key material);
        - ``rotate`` ``{"publish_ahead": s}``: add a new key of the current algorithm, publish it
          now and sign with it from now + ``publish_ahead`` (D6; kid ``<issuer>-<n>``);
        - ``retire`` ``{"kid": k}``: stop publishing (and signing with) ``k`` from now;
        - ``revoke_user`` ``{"user": u}``: revoke every refresh token of ``u`` (committed to the
          durable table before the answer).

        Returns:
            (HTTP status, JSON object): 200 and the result, or 400/404 with ``error``.
        """
        now = self.now()
        if op == "rotate":
            ahead = args.get("publish_ahead", 0.0)
            if isinstance(ahead, bool) or not isinstance(ahead, int | float) or not ahead >= 0:
                return 400, {"error": f"publish_ahead: expected seconds >= 0, received {ahead!r}"}
            keys = self.keys.keys()
            key = SigningKey.generate(keys[0].alg, kid=f"{self.name}-{len(keys) + 1}")
            self.rotate_key(key, publish_ahead=float(ahead))
            self.log.info("admin_rotate", kid=key.kid, publish_ahead=float(ahead))
            return 200, {"kid": key.kid, "publish_at": now, "sign_from": now + float(ahead)}
        if op == "retire":
            kid = args.get("kid")
            if not isinstance(kid, str):
                return 400, {"error": f"kid: expected a string, received {kid!r}"}
            try:
                self.keys.retire(kid, at=now)
            except KeyError:
                return 404, {"error": f"kid: no key {kid!r} in the ring"}
            self.log.info("admin_retire", kid=kid)
            return 200, {"retired": kid, "at": now}
        if op == "revoke_user":
            user = args.get("user")
            if not isinstance(user, str):
                return 400, {"error": f"user: expected a string, received {user!r}"}
            n = self.revoke_user(user)
            await self._flush()  # durable before the admin is told it is done
            self.log.info("admin_revoke_user", user=user, revoked=n)
            return 200, {"user": user, "revoked": n}
        if op == "keys":
            try:
                signing: str | None = self.keys.signing_key(now).kid
            except LookupError:
                signing = None
            return 200, {
                "published": [k.kid for k in self.keys.published(now)],
                "signing": signing,
            }
        return 404, {"error": f"unknown operation {op!r} (keys, rotate, retire, revoke_user)"}

    def _prune(self) -> None:
        """Forget refresh tokens that can never be used again (expired, or rotated longer ago
        than the grace): every rotation adds an entry, and a long-lived issuer must not grow
        without bound. Run when the table doubles, so its cost is amortised; small tables are
        never pruned, so a replayed token there is still told apart ("already used")."""
        now = self.now()
        grace = self.refresh_token_grace
        kept: dict[str, _RefreshGrant] = {}
        for digest, g in self._grants.items():
            if now >= g.expires:
                self._dirty.add(digest)  # gone for good
            elif g.rotated_at is not None and now >= g.rotated_at + grace:
                # Past its grace a rotated token is only worth recognising (RFC 9700 reuse
                # detection): a tombstone of two numbers instead of the whole grant.
                self._spent[digest] = (g.family, g.expires)
                self._dirty.add(digest)
            else:
                kept[digest] = g
        self._grants = kept
        for digest, (_, expires) in list(self._spent.items()):
            if now >= expires:
                del self._spent[digest]
                self._dirty.add(digest)
        self._prune_at = max(PRUNE_FLOOR, 2 * (len(self._grants) + len(self._spent)))

    def _row(self, digest: str) -> dict[str, Any] | None:
        """The persisted form of one table entry (None: it is gone)."""
        g = self._grants.get(digest)
        if g is not None:
            return _grant_row(g)
        spent = self._spent.get(digest)
        if spent is not None:
            return {"spent": True, "family": spent[0], "expires": spent[1]}
        return None

    def take_changes(self) -> dict[str, dict[str, Any] | None]:
        """The rows changed since the last call (digest -> row, None: deleted); the family
        counter is the row ``"families"``."""
        changes: dict[str, dict[str, Any] | None] = {d: self._row(d) for d in self._dirty}
        self._dirty.clear()
        for client_id in self._dirty_clients:
            changes[_CLIENT_ROW + client_id] = _client_row(self._registered[client_id])
        self._dirty_clients.clear()
        if changes:
            changes["families"] = {"families": self._families}
        return changes

    def restore_rows(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        """Load the rows :meth:`take_changes` handed out (a restart)."""
        for digest, row in rows.items():
            if digest == "families":
                self._families = max(self._families, int(row["families"]))
            elif digest.startswith(_CLIENT_ROW):
                client = _client_from_row(row)
                self._registered[client.client_id] = client
            elif row.get("spent"):
                self._spent[digest] = (int(row["family"]), float(row["expires"]))
            else:
                self._grants[digest] = _grant_from_row(row)
        self._prune_at = max(PRUNE_FLOOR, 2 * (len(self._grants) + len(self._spent)))

    async def _flush(self) -> None:
        """Hand the changed rows to ``persist`` and wait until they are durable.

        The lock makes this a group commit: a request whose changes another request's flush
        took waits for that flush to finish before it answers.
        """
        if self.persist is None:
            self._dirty.clear()
            self._dirty_clients.clear()
            return
        async with self._persist_lock:
            changes = self.take_changes()
            if changes:
                try:
                    await self.persist(changes)
                except BaseException:
                    # Not durable: the next flush writes these rows again (current values).
                    self._dirty.update(
                        k for k in changes if k != "families" and not k.startswith(_CLIENT_ROW)
                    )
                    self._dirty_clients.update(
                        k.removeprefix(_CLIENT_ROW) for k in changes if k.startswith(_CLIENT_ROW)
                    )
                    raise

    def snapshot(self) -> dict[str, Any]:
        """The refresh-token table, for a restart (live mode keeps it on disk, 0600): digests
        of the tokens only, never the tokens."""
        return {
            "families": self._families,
            "grants": {digest: _grant_row(g) for digest, g in self._grants.items()},
            "spent": {d: list(v) for d, v in self._spent.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot` (the issuer is back after a restart)."""
        self._families = int(state["families"])
        self._grants = {digest: _grant_from_row(g) for digest, g in state["grants"].items()}
        self._spent = {d: (int(v[0]), float(v[1])) for d, v in state.get("spent", {}).items()}

    def discovery_document(self) -> dict[str, Any]:
        """The ``<url>/.well-known/openid-configuration`` document (D2, D3, D5; RFC 8414).

        ``issuer`` and ``jwks_uri`` are what every validator reads (D5); the endpoints are the
        paths the live HTTP layer serves. ``scopes_supported`` is every scope some user or
        client may be granted, plus the OAuth scopes, sorted.
        """
        scopes = {str(s) for policy in self.users.values() for s in policy.scopes}
        scopes.update(str(s) for client in self.clients.values() for s in client.scopes)
        scopes.update(OAUTH_SCOPES)
        auth_methods = [CLIENT_AUTH_BASIC, CLIENT_AUTH_POST]
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks",
            "token_endpoint": f"{self.url}/token",
            "device_authorization_endpoint": f"{self.url}/device_authorization",
            "revocation_endpoint": f"{self.url}/revoke",
            "authorization_endpoint": f"{self.url}/authorize",
            **(
                {"registration_endpoint": f"{self.url}/register"}
                if self.registration is not None
                else {}
            ),
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": list(GRANTS),
            "scopes_supported": sorted(scopes),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "userinfo_endpoint": f"{self.url}/userinfo",
            # ID tokens are signed like access tokens, with whichever key signs then.
            "id_token_signing_alg_values_supported": sorted(a.value for a in Algorithm),
            "claims_supported": ["aud", "exp", "iat", "iss", "nonce", "sub", "wlcg.groups"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": list(auth_methods),
        }

    # -- the endpoints ---------------------------------------------------------------------

    async def handle(self, message: Message) -> Message:
        """Answer a token, device, revocation or JWKS request.

        Whatever the answer changed in the refresh-token table is persisted (``persist``)
        before the answer is returned: a client never holds a refresh token a crash could undo.
        """
        answer = self._answer(message)
        # Always through the flush when persisting, even with nothing changed here: an answer
        # may reveal what another request changed (a retry gets the successor that request
        # created), and must not leave before that request's commit is done.
        await self._flush()
        return answer

    def _answer(self, message: Message) -> Message:
        if isinstance(message, JwksRequest):
            self.recorder.record(
                self.name, "request", endpoint="jwks", status=200, grant=None, error=None
            )
            return JwksResponse(keys=self.keys.published(self.now()))
        if isinstance(message, DeviceApproval):
            # The user's browser at the verification page: not a client, not rate limited.
            return self._approve(message)
        if isinstance(message, UserinfoRequest):
            return self._userinfo(message)
        if isinstance(message, AuthorizationRequest):
            # The user's browser at the authorization endpoint, like the device page.
            return self._authorize(message)
        if isinstance(message, ClientRegistrationRequest):
            if self._rate_limited():
                return self._error(message, "temporarily_unavailable", "rate limit exceeded", 503)
            return self._register(message)
        if not isinstance(message, TokenRequest | DeviceAuthorizationRequest | RevocationRequest):
            raise TypeError(f"issuer {self.name}: unexpected message {type(message).__name__}")
        if self._rate_limited():
            return self._error(message, "temporarily_unavailable", "rate limit exceeded", 503)
        client = self._authenticate(message)
        if isinstance(client, OAuthError):
            return client
        if isinstance(message, DeviceAuthorizationRequest):
            return self._device_authorization(message, client)
        if isinstance(message, RevocationRequest):
            return self._revoke(message, client)
        grant = message.grant_type
        if grant not in GRANTS:
            return self._error(message, "unsupported_grant_type", f"grant {grant!r}")
        if grant not in client.grants:
            return self._error(
                message,
                "unauthorized_client",
                f"client {client.client_id!r} is not registered for the {grant!r} grant",
            )
        if grant == GRANT_REFRESH:
            return self._refresh(message, client)
        if grant == GRANT_CLIENT_CREDENTIALS:
            return self._client_credentials(message, client)
        if grant == GRANT_TOKEN_EXCHANGE:
            return self._exchange(message, client)
        if grant == GRANT_AUTHORIZATION_CODE:
            return self._code_token(message, client)
        return self._device_token(message, client)

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

    def _record(self, req: _Request, status: int, error: str | None) -> None:
        if isinstance(req, TokenRequest):
            endpoint, grant = "token", req.grant_type
        elif isinstance(req, DeviceAuthorizationRequest):
            endpoint, grant = "device_authorization", GRANT_DEVICE_CODE
        elif isinstance(req, DeviceApproval):
            endpoint, grant = "device", GRANT_DEVICE_CODE
        elif isinstance(req, UserinfoRequest):
            endpoint, grant = "userinfo", None
        elif isinstance(req, AuthorizationRequest):
            endpoint, grant = "authorize", GRANT_AUTHORIZATION_CODE
        elif isinstance(req, ClientRegistrationRequest):
            endpoint, grant = "register", None
        else:
            endpoint, grant = "revoke", None
        self.recorder.record(
            self.name, "request", endpoint=endpoint, status=status, grant=grant, error=error
        )

    def _error(self, req: _Request, error: str, description: str, status: int = 400) -> OAuthError:
        """An error answer (RFC 6749 §5.2). ``description`` must hold no token or secret."""
        self._record(req, status, error)
        return OAuthError(error=error, description=description, status=status)

    def _authenticate(
        self, req: TokenRequest | DeviceAuthorizationRequest | RevocationRequest
    ) -> ClientPolicy | OAuthError:
        """The registered client making ``req``, or ``invalid_client`` (RFC 6749 §2.3.1, §5.2).

        A public client needs no secret (one it sends anyway is ignored); how a confidential
        one sent its secret (``client_auth``: Basic or form) does not matter here.
        """
        client = self.clients.get(req.client_id) or self._registered.get(req.client_id)
        if client is None:
            return self._error(req, "invalid_client", f"unknown client {req.client_id!r}", 401)
        if client.secret_sha256 is not None:
            given = hashlib.sha256((req.client_secret or "").encode()).hexdigest()
            if req.client_secret is None or not hmac.compare_digest(given, client.secret_sha256):
                return self._error(
                    req, "invalid_client", f"client {client.client_id!r}: wrong secret", 401
                )
        elif client.secret is not None:
            if req.client_secret is None:
                return self._error(
                    req,
                    "invalid_client",
                    f"client {client.client_id!r} must authenticate (client_secret_basic or "
                    f"client_secret_post)",
                    401,
                )
            if not hmac.compare_digest(req.client_secret.encode(), client.secret.encode()):
                return self._error(
                    req, "invalid_client", f"client {client.client_id!r}: wrong secret", 401
                )
        return client

    def _narrowed(
        self, req: _Request, scope: str | None, allowed: Sequence[Scope]
    ) -> tuple[Scope, ...] | OAuthError:
        """The scopes to grant: ``scope`` narrowed to ``allowed`` (B15), or ``invalid_scope``.

        Without ``scope`` (absent or blank) the answer is everything ``allowed`` (RFC 6749 §6:
        "treated as equal to the scope originally granted"). A ``scope`` of OAuth and group
        scopes only (``openid``, ``offline_access``, ``wlcg.groups``) gets exactly that, no
        capability (as INDIGO IAM: the issuer grants what is asked, never more): ``()``.
        """
        capabilities, oauth = _capability_scopes(scope)
        if capabilities is None and (oauth or _group_words(scope)):
            return ()
        if capabilities is None:
            granted = tuple(allowed)
        else:
            try:
                requested = parse_scopes(capabilities)
            except ScopeError as exc:
                return self._error(req, "invalid_scope", str(exc))
            granted = narrow(requested, allowed)
        if not granted:
            return self._error(req, "invalid_scope", f"none of {scope!r} may be granted")
        return granted

    def _audience(
        self, req: _Request, requested: str | None, client: ClientPolicy, default: Audience | None
    ) -> Audience | OAuthError | None:
        """The ``aud`` to issue: the requested one(s) if the client may ask for them, else
        ``default`` (RFC 8693 §2.1 ``audience``; several are space-separated, as Rucio sends
        them, L2). A requested audience the client is not registered for is ``invalid_target``
        (RFC 8693 §2.2.2)."""
        if requested is None:
            return default
        wanted = tuple(requested.split())
        if not wanted:
            return self._error(req, "invalid_request", "audience is empty")
        if ANY_AUDIENCE not in client.audiences:
            allowed = client.audiences or self.known_audiences
            refused = [aud for aud in wanted if aud not in allowed]
            if refused:
                return self._error(
                    req,
                    "invalid_target",
                    f"client {client.client_id!r} may not ask for audience {refused[0]!r}",
                )
        return wanted[0] if len(wanted) == 1 else wanted

    # -- the grants --------------------------------------------------------------------------

    def _refresh(self, req: TokenRequest, client: ClientPolicy) -> Message:
        """RFC 6749 §6 with rotation (E4, I7) and down-scoping (B15)."""
        now = self.now()
        digest = _digest(req.refresh_token or "")
        grant = self._grants.get(digest)
        spent = self._spent.get(digest)
        if grant is None and spent is not None:
            return self._reused(req, spent[0])
        if grant is None or grant.client != client.client_id:
            # RFC 6749 §5.2 invalid_grant: "... or was issued to another client".
            return self._error(req, "invalid_grant", "unknown refresh token")
        if grant.revoked:
            return self._error(req, "invalid_grant", "refresh token revoked")
        if now >= grant.expires:
            return self._error(req, "invalid_grant", "refresh token expired")
        successor = self._successor(req.refresh_token or "")
        if grant.rotated_at is not None:
            # RFC 9700 §4.14.2 with E4's grace: the retry of a rotated token gets its one
            # successor again while that is unused and the grace lasts; anything else is reuse.
            current = self._grants.get(_digest(successor))
            if (
                now >= grant.rotated_at + self.refresh_token_grace
                or current is None
                or current.rotated_at is not None
            ):
                return self._reused(req, grant.family)
        # A login that asked for no capability (openid, groups) refreshes to none.
        whole = req.scope is None and not grant.scopes
        scopes = () if whole else self._narrowed(req, req.scope, grant.scopes)
        if isinstance(scopes, OAuthError):
            return scopes
        audience = self._audience(req, req.audience, client, grant.audience)
        if isinstance(audience, OAuthError):
            return audience
        # The OAuth scopes of the login, or those of them asked for again (never more).
        oauth = grant.oauth if req.scope is None else _capability_scopes(req.scope)[1]
        # Groups: those asked for now, else the login's (membership is checked at each mint).
        groups = _group_words(req.scope) or grant.groups
        access = self._mint(
            grant.user,
            client,
            scopes,
            audience,
            GRANT_REFRESH,
            oauth=oauth & grant.oauth,
            groups=groups,
        )
        # Rotation (E4, I7): one successor per token, with the grant's whole scope (RFC 6749
        # §6: "identical"), not the down-scoped request, and the login's expiry.
        if grant.rotated_at is None:
            grant.rotated_at = now
            self._dirty.add(_digest(req.refresh_token or ""))
            self._new_refresh_token(
                user=grant.user,
                client=grant.client,
                scopes=grant.scopes,
                audience=grant.audience,
                expires=grant.expires,
                family=grant.family,
                token=successor,
                oauth=grant.oauth,
                groups=grant.groups,
            )
        return attrs.evolve(access, refresh_token=successor)

    def _successor(self, refresh_token: str) -> str:
        """The one refresh token ``refresh_token`` rotates to: an HMAC of it, so a retry gets
        the same one back without the table holding any usable token."""
        if self.successor_key is None:
            self.successor_key = self.rng.getrandbits(256).to_bytes(32, "big")
        mac = hmac.new(self.successor_key, refresh_token.encode(), hashlib.sha256).digest()
        return "rt-" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _reused(self, req: TokenRequest, family: int) -> OAuthError:
        """RFC 9700 §4.14.2: a rotated refresh token used again (after its grace, or after its
        successor was used) revokes every token of its family; the answer is invalid_grant."""
        n = self._revoke_family(family)
        self.recorder.record(self.name, "refresh_reuse", client=req.client_id, revoked=n)
        return self._error(
            req, "invalid_grant", "refresh token already used (rotated); its family is revoked"
        )

    def _revoke_family(self, family: int) -> int:
        n = 0
        for digest, other in self._grants.items():
            if other.family == family and not other.revoked:
                other.revoked = True
                self._dirty.add(digest)
                n += 1
        return n

    def _client_credentials(self, req: TokenRequest, client: ClientPolicy) -> Message:
        """RFC 6749 §4.4 (K3): a token about the client itself (A13: ``sub`` = client id),
        within the client's registered scopes; no refresh token."""
        scopes = self._narrowed(req, req.scope, client.scopes)
        if isinstance(scopes, OAuthError):
            return scopes
        audience = self._audience(req, req.audience, client, None)
        if isinstance(audience, OAuthError):
            return audience
        return self._mint(client.client_id, client, scopes, audience, GRANT_CLIENT_CREDENTIALS)

    def _exchange(self, req: TokenRequest, client: ClientPolicy) -> Message:
        """RFC 8693: a token for a token, never wider than the subject token (K4, K5).

        The subject token is checked like any data server would (format, issuer, key,
        signature, time, scopes), except its audience: the issuer is the authority on its own
        tokens, whoever they were meant for. The new token keeps the subject's ``aud`` unless
        another is asked for, and lives as long as the exchanging client's tokens do (P13).
        ``offline_access`` or ``requested_token_type`` = refresh token also gets a refresh
        token bound to the exchanging client (L6: FTS), refreshable with the refresh grant.
        """
        if req.subject_token is None:
            return self._error(req, "invalid_request", "subject_token is missing")
        if req.subject_token_type not in (None, TOKEN_TYPE_ACCESS):
            return self._error(
                req,
                "invalid_request",
                f"subject_token_type {req.subject_token_type!r} is not supported "
                f"(expected {TOKEN_TYPE_ACCESS!r})",
            )
        if req.requested_token_type not in (
            None,
            TOKEN_TYPE_ACCESS,
            TOKEN_TYPE_JWT,
            TOKEN_TYPE_REFRESH,
        ):
            return self._error(
                req,
                "invalid_request",
                f"requested_token_type {req.requested_token_type!r} is not supported",
            )
        now = self.now()
        verifier = verifier_for(self.url, None, self.keys.published(now), now=now)
        subject = verifier.check(req.subject_token, now=now)
        if not isinstance(subject, VerifiedToken):
            # The keys are given, so the verdict is a Rejection (never NeedKeys); its text
            # names the reason, never the token.
            return self._error(req, "invalid_grant", f"subject token: {subject}")
        # The subject's own OAuth scopes are its login's, not a capability to pass on.
        capabilities = tuple(s for s in subject.scopes if str(s) not in OAUTH_SCOPES)
        scopes = self._narrowed(req, req.scope, capabilities)
        if isinstance(scopes, OAuthError):
            return scopes
        aud = subject.claims["aud"]
        default: Audience = aud if isinstance(aud, str) else tuple(aud)
        audience = self._audience(req, req.audience, client, default)
        if isinstance(audience, OAuthError):
            return audience
        offline = "offline_access" in _capability_scopes(req.scope)[1]
        refresh_token = None
        # offline_access is granted (and in the scope claim) when asked for: a refresh token
        # comes with it.
        oauth = frozenset({"offline_access"}) if offline else frozenset()
        if offline or req.requested_token_type == TOKEN_TYPE_REFRESH:
            refresh_token = self._new_refresh_token(
                user=subject.subject,
                client=client.client_id,
                scopes=scopes,
                audience=audience,
                expires=now + self.refresh_token_lifetime,
                oauth=oauth,
            )
        access = self._mint(
            subject.subject, client, scopes, audience, GRANT_TOKEN_EXCHANGE, oauth=oauth
        )
        return attrs.evolve(
            access, refresh_token=refresh_token, issued_token_type=TOKEN_TYPE_ACCESS
        )

    # -- device code (RFC 8628) ----------------------------------------------------------------

    def _device_authorization(
        self, req: DeviceAuthorizationRequest, client: ClientPolicy
    ) -> Message:
        """RFC 8628 §3.1-3.2 (K2): a device code to poll with and a user code to approve."""
        if GRANT_DEVICE_CODE not in client.grants:
            return self._error(
                req,
                "unauthorized_client",
                f"client {client.client_id!r} is not registered for the device code grant",
            )
        capabilities = _capability_scopes(req.scope)[0]
        if capabilities is not None:
            try:
                parse_scopes(capabilities)  # the grammar now; the user's policy at approval
            except ScopeError as exc:
                return self._error(req, "invalid_scope", str(exc))
        audience = self._audience(req, req.audience, client, None)
        if isinstance(audience, OAuthError):
            return audience
        self._forget_expired_devices()
        device_code = new_secret(self.rng, "dc-")
        user_code = self._new_user_code()
        self._devices[device_code] = _DeviceGrant(
            client=client.client_id,
            user_code=user_code,
            scope=req.scope,
            audience=audience,
            expires=self.now() + self.device_code_lifetime,
            interval=self.device_poll_interval,
        )
        self._user_codes[user_code] = device_code
        # Lifetimes are all the same, so expiries come in order: a queue, popped at the front.
        self._device_expiry.append((self.now() + self.device_code_lifetime, device_code))
        self._record(req, 200, None)
        return DeviceAuthorizationResponse(
            device_code=device_code,
            user_code=user_code,
            verification_uri=f"{self.url}/device",
            expires_in=self.device_code_lifetime,
            interval=self.device_poll_interval,
        )

    def _forget_expired_devices(self) -> None:
        """Drop device codes expired more than DEVICE_RETENTION ago (RFC 8628 §3.2
        ``expires_in``): the table holds at most one lifetime's worth of codes."""
        now = self.now()
        while self._device_expiry and now >= self._device_expiry[0][0] + DEVICE_RETENTION:
            _, code = self._device_expiry.popleft()
            device = self._devices.pop(code, None)
            if device is not None:
                self._user_codes.pop(device.user_code, None)

    def _new_user_code(self) -> str:
        while True:
            chars = "".join(self.rng.choice(_USER_CODE_ALPHABET) for _ in range(8))
            code = f"{chars[:4]}-{chars[4:]}"
            if code not in self._user_codes:
                return code

    def _approve(self, msg: DeviceApproval) -> Message:
        """The user enters the user code at the verification page and approves or denies."""
        # RFC 8628 §6.1: compare case-insensitively, without the punctuation users add.
        typed = "".join(c for c in msg.user_code.upper() if c.isalnum())
        code = f"{typed[:4]}-{typed[4:]}"
        device = self._devices.get(self._user_codes.get(code, ""))
        if device is None:
            return self._error(msg, "invalid_request", "unknown user code")
        if self.now() >= device.expires:
            return self._error(msg, "expired_token", "the user code has expired")
        if device.state is not _DeviceState.PENDING:
            return self._error(msg, "invalid_request", "the user code was already used")
        if msg.user not in self.users or not self._password_ok(msg):
            # The login fails; the device code stays pending (the user may type it again), up
            # to MAX_APPROVAL_FAILURES times: then the code is denied, so guessing is bounded.
            # The same answer whether the user or the password was wrong.
            device.failures += 1
            if device.failures >= MAX_APPROVAL_FAILURES:
                device.state = _DeviceState.DENIED
            return self._error(msg, "access_denied", "unknown user or wrong password", 403)
        device.user = msg.user
        device.state = _DeviceState.APPROVED if msg.approve else _DeviceState.DENIED
        self._record(msg, 200, None)
        return Ack()

    def _password_ok(self, msg: DeviceApproval) -> bool:
        """The user's password, compared in constant time; none needed where none is set and
        none required (virtual time)."""
        expected = self.passwords.get(msg.user)
        if expected is None:
            return not self.require_password
        given = msg.password if msg.password is not None else ""
        return hmac.compare_digest(given.encode(), expected.encode())

    def _device_token(self, req: TokenRequest, client: ClientPolicy) -> Message:
        """RFC 8628 §3.4-3.5: the device polls; tokens once the user approved."""
        if req.device_code is None:
            return self._error(req, "invalid_request", "device_code is missing")
        self._forget_expired_devices()
        device = self._devices.get(req.device_code)
        if device is None or device.client != client.client_id:
            return self._error(req, "invalid_grant", "unknown device code")
        if device.state is _DeviceState.CONSUMED:
            return self._error(req, "invalid_grant", "the device code was already used")
        now = self.now()
        if now >= device.expires:
            return self._error(req, "expired_token", "the device code has expired")
        if device.state is _DeviceState.DENIED:
            return self._error(req, "access_denied", "the user denied the request")
        if device.state is _DeviceState.PENDING:
            too_soon = device.last_poll is not None and now - device.last_poll < device.interval
            device.last_poll = now
            if too_soon:
                device.interval += _SLOW_DOWN_STEP
                return self._error(
                    req, "slow_down", f"poll at most every {device.interval:g} seconds"
                )
            return self._error(req, "authorization_pending", "the user has not approved yet")
        assert device.user is not None
        # The token request may name the audience too (oidc-agent sends ``audience`` here, not
        # at the device authorization), as INDIGO IAM takes it: checked against the client's
        # audiences like any request, and bound to the refresh token as well.
        granted = self._user_grant(req, client, device.user, device.scope, device.audience)
        if isinstance(granted, OAuthError):
            return granted
        device.state = _DeviceState.CONSUMED
        return self._first_tokens(client, device.user, device.scope, granted, GRANT_DEVICE_CODE)

    # -- authorization code with PKCE (RFC 6749 §4.1, RFC 7636) -------------------------------

    def _authorize(self, msg: AuthorizationRequest) -> Message:
        """The authorization endpoint: check the request, then (``msg.user`` set) the user's
        login and consent at the page, and hand out a code.

        Until the client and its redirect URI are known good nothing is redirected (RFC 6749
        §4.1.2.1): an unknown client or a redirect URI not registered for it, byte for byte,
        is an ``OAuthError`` (the page shows it). Every later refusal goes back to the client
        at the redirect URI with ``error`` and ``state``: a client not registered for the
        grant (``unauthorized_client``), a ``response_type`` other than ``code``, no PKCE or a
        method other than S256 (``invalid_request``, RFC 7636 §4.4.1: ``plain`` is refused), a
        malformed scope, an audience the client may not ask for, or the user's denial
        (``access_denied``). A failed login is ``access_denied`` (403) on the page, not a
        redirect: the user may try again, up to MAX_APPROVAL_FAILURES times in LOGIN_LOCKOUT.
        """
        client = self.clients.get(msg.client_id) or self._registered.get(msg.client_id)
        if client is None:
            return self._error(msg, "invalid_request", f"unknown client {msg.client_id!r}")
        if msg.redirect_uri is None or msg.redirect_uri not in client.redirect_uris:
            return self._error(
                msg,
                "invalid_request",
                f"redirect_uri {msg.redirect_uri!r} is not registered for client "
                f"{client.client_id!r}",
            )
        redirect_uri = msg.redirect_uri

        def refuse(error: str, description: str) -> AuthorizationResponse:
            self._record(msg, 302, error)
            return AuthorizationResponse(
                redirect_uri=redirect_uri, error=error, description=description, state=msg.state
            )

        if GRANT_AUTHORIZATION_CODE not in client.grants:
            return refuse(
                "unauthorized_client",
                f"client {client.client_id!r} is not registered for the authorization code grant",
            )
        if msg.response_type != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        if msg.code_challenge is None:
            return refuse("invalid_request", "code_challenge is required (PKCE, RFC 7636)")
        if msg.code_challenge_method != "S256":
            return refuse(
                "invalid_request", "code_challenge_method must be S256 (plain is not supported)"
            )
        if not _CHALLENGE.fullmatch(msg.code_challenge):
            return refuse("invalid_request", "code_challenge is not a base64url SHA-256")
        capabilities = _capability_scopes(msg.scope)[0]
        if capabilities is not None:
            try:
                parse_scopes(capabilities)
            except ScopeError as exc:
                return refuse("invalid_scope", str(exc))
        audience = self._audience(msg, msg.audience, client, None)
        if isinstance(audience, OAuthError):
            return AuthorizationResponse(
                redirect_uri=redirect_uri,
                error=audience.error,
                description=audience.description,
                state=msg.state,
            )
        if msg.user is None:  # the check before the page is shown
            self._record(msg, 200, None)
            return AuthorizationResponse(redirect_uri=redirect_uri, state=msg.state)
        if not self._login(msg.user, msg.password):
            return self._error(msg, "access_denied", "unknown user or wrong password", 403)
        if not msg.approve:
            return refuse("access_denied", "the user denied the request")
        self._forget_expired_codes()
        code = new_secret(self.rng, "ac-")
        expires = self.now() + AUTHORIZATION_CODE_LIFETIME
        self._codes[_digest(code)] = _AuthorizationCode(
            client=client.client_id,
            redirect_uri=redirect_uri,
            challenge=msg.code_challenge,
            user=msg.user,
            scope=msg.scope,
            audience=audience,
            nonce=msg.nonce,
            expires=expires,
        )
        self._code_expiry.append((expires, _digest(code)))
        self._record(msg, 302, None)
        return AuthorizationResponse(redirect_uri=redirect_uri, code=code, state=msg.state)

    def _login(self, user: str, password: str | None) -> bool:
        """The consent page's login, with bounded guessing per user."""
        now = self.now()
        recent = [t for t in self._login_failures.get(user, []) if now - t < LOGIN_LOCKOUT]
        ok = (
            len(recent) < MAX_APPROVAL_FAILURES
            and user in self.users
            and self._password_ok(DeviceApproval(user_code="", user=user, password=password))
        )
        if not ok:
            recent.append(now)
        if recent:
            self._login_failures[user] = recent[-MAX_APPROVAL_FAILURES:]
        else:
            self._login_failures.pop(user, None)
        if len(self._login_failures) > PRUNE_FLOOR:  # bounded: forget the oldest users
            self._login_failures.pop(next(iter(self._login_failures)))
        return ok

    def _forget_expired_codes(self) -> None:
        now = self.now()
        while self._code_expiry and now >= self._code_expiry[0][0] + DEVICE_RETENTION:
            self._codes.pop(self._code_expiry.popleft()[1], None)

    def _code_token(self, req: TokenRequest, client: ClientPolicy) -> Message:
        """RFC 6749 §4.1.3 with RFC 7636 §4.6: the code, by the client it was issued to, with
        the same redirect URI and the verifier of its challenge; once only (§4.1.2: a replay
        also revokes the tokens issued with it)."""
        if req.code is None:
            return self._error(req, "invalid_request", "code is missing")
        self._forget_expired_codes()
        entry = self._codes.get(_digest(req.code))
        if entry is None or entry.client != client.client_id:
            return self._error(req, "invalid_grant", "unknown authorization code")
        if entry.used:
            revoked = self._revoke_family(entry.family) if entry.family is not None else 0
            self.recorder.record(self.name, "code_reuse", client=client.client_id, revoked=revoked)
            return self._error(
                req, "invalid_grant", "authorization code already used; its tokens are revoked"
            )
        entry.used = True  # any redemption spends it, a failed one too
        now = self.now()
        if now >= entry.expires:
            return self._error(req, "invalid_grant", "the authorization code has expired")
        if req.redirect_uri != entry.redirect_uri:
            return self._error(
                req, "invalid_grant", "redirect_uri differs from the authorization request's"
            )
        verifier = req.code_verifier or ""
        if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
            _s256(verifier), entry.challenge
        ):
            return self._error(req, "invalid_grant", "code_verifier does not match (PKCE)")
        granted = self._user_grant(req, client, entry.user, entry.scope, entry.audience)
        if isinstance(granted, OAuthError):
            return granted
        response = self._first_tokens(
            client, entry.user, entry.scope, granted, GRANT_AUTHORIZATION_CODE, entry.nonce
        )
        entry.family = self._families  # a replay of the code revokes this family
        return response

    def _user_grant(
        self,
        req: TokenRequest,
        client: ClientPolicy,
        user: str,
        scope: str | None,
        bound_audience: Audience | None,
    ) -> tuple[tuple[Scope, ...], Audience | None] | OAuthError:
        """What a grant the user approved (device code, authorization code) may hold: the
        scopes it asked for within the user's policy and the client's bound (narrowed by the
        token request's own ``scope``), and the audience; or the refusal."""
        policy = self.users.get(user)
        if policy is None:  # removed from the VO since the approval
            return self._error(req, "access_denied", f"user {user!r} is not in the VO")
        scopes = self._narrowed(req, scope, client.bound(policy.scopes))
        if isinstance(scopes, OAuthError):
            return scopes
        audience = self._audience(req, req.audience, client, bound_audience)
        if isinstance(audience, OAuthError):
            return audience
        return scopes, audience

    def _first_tokens(
        self,
        client: ClientPolicy,
        user: str,
        scope: str | None,
        granted: tuple[tuple[Scope, ...], Audience | None],
        grant: str,
        nonce: str | None = None,
    ) -> TokenResponse:
        """The first access token of a new refresh-token family, with that refresh token."""
        scopes, audience = granted
        oauth = _capability_scopes(scope)[1]
        refresh_token = self._new_refresh_token(
            user=user,
            client=client.client_id,
            scopes=scopes,
            audience=audience,
            expires=self.now() + self.refresh_token_lifetime,
            oauth=oauth,
            groups=_group_words(scope),
        )
        access = self._mint(
            user,
            client,
            scopes,
            audience,
            grant,
            oauth=oauth,
            nonce=nonce,
            groups=_group_words(scope),
        )
        return attrs.evolve(access, refresh_token=refresh_token)

    # -- dynamic client registration (RFC 7591) ---------------------------------------------

    def _register(self, req: ClientRegistrationRequest) -> Message:
        """RFC 7591 §3: register a client, bounded by the issuer's ``registration`` policy.

        Open registration (no initial access token), as INDIGO IAM allows by default; so what
        a registered client may get is the policy's: its grants are those it asked for within
        ``RegistrationPolicy.grants`` (none left: ``invalid_client_metadata``), its tokens hold
        at most ``RegistrationPolicy.scopes`` whatever the user may have. Redirect URIs must be
        https, http on a loopback host or a reversed-domain private scheme (RFC 8252 §7.1,
        §7.3: native apps such as oidc-agent), without a fragment (``invalid_redirect_uri``);
        the code grant needs one. The client is
        confidential (a secret drawn here, kept as its SHA-256) unless it asks for ``none``.
        """
        policy = self.registration
        if policy is None:
            return self._error(req, "invalid_request", "registration is not enabled", 404)
        if len(self._registered) >= policy.max_clients:
            return self._error(req, "temporarily_unavailable", "registration limit reached", 503)
        asked = req.grant_types or (GRANT_AUTHORIZATION_CODE,)
        grants = tuple(g for g in GRANTS if g in asked and g in policy.grants)
        if not grants:
            return self._error(
                req, "invalid_client_metadata", "none of the grant_types may be registered"
            )
        for uri in req.redirect_uris:
            if not _registrable_redirect(uri):
                return self._error(
                    req,
                    "invalid_redirect_uri",
                    f"redirect_uri {uri!r}: expected https, or http on a loopback host, "
                    f"without a fragment",
                )
        if GRANT_AUTHORIZATION_CODE in grants and not req.redirect_uris:
            return self._error(
                req, "invalid_redirect_uri", "the authorization_code grant needs redirect_uris"
            )
        method = req.token_endpoint_auth_method or CLIENT_AUTH_BASIC
        if method not in (CLIENT_AUTH_BASIC, CLIENT_AUTH_POST, "none"):
            return self._error(
                req,
                "invalid_client_metadata",
                f"token_endpoint_auth_method {method!r} is not supported",
            )
        capabilities, oauth = _capability_scopes(req.scope)
        try:
            wanted = parse_scopes(capabilities) if capabilities is not None else policy.scopes
        except ScopeError as exc:
            return self._error(req, "invalid_client_metadata", f"scope: {exc}")
        bound = ClientPolicy(
            client_id="-", grants=frozenset(grants), scope_bound=policy.scopes
        ).bound(wanted)
        secret = None if method == "none" else new_secret(self.rng, "cs-")
        while True:
            client_id = "dcr-" + new_jti(self.rng)
            if client_id not in self.clients and client_id not in self._registered:
                break
        client = ClientPolicy(
            client_id=client_id,
            grants=frozenset(grants),
            redirect_uris=req.redirect_uris,
            scope_bound=bound,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest() if secret else None,
        )
        self._registered[client_id] = client
        self._dirty_clients.add(client_id)
        self._record(req, 201, None)
        return ClientRegistrationResponse(
            client_id=client_id,
            client_secret=secret,
            client_id_issued_at=int(self.now()),
            redirect_uris=req.redirect_uris,
            grant_types=grants,
            scope=format_scopes((*bound, *(parse_scope(o) for o in sorted(oauth)))),
            token_endpoint_auth_method=method,
            client_name=req.client_name,
        )

    # -- userinfo (OpenID Connect Core §5.3) ------------------------------------------------

    def _userinfo(self, req: UserinfoRequest) -> Message:
        """The user an access token of ours with the ``openid`` scope stands for.

        A token that does not verify (signature, issuer, times; any audience) is
        ``invalid_token`` (401), one without ``openid`` ``insufficient_scope`` (403), as RFC
        6750 §3.1 says; the description names the rejection reason, never the token.
        """
        now = self.now()
        verifier = verifier_for(self.url, None, self.keys.published(now), now=now)
        verified = verifier.check(req.token, now=now)
        if not isinstance(verified, VerifiedToken):
            return self._error(req, "invalid_token", f"access token: {verified}", 401)
        if "openid" not in {str(s) for s in verified.scopes}:
            return self._error(req, "insufficient_scope", "the token lacks the openid scope", 403)
        policy = self.users.get(verified.subject)
        if policy is None:  # a client credentials token, or a user removed from the VO
            return self._error(req, "invalid_token", "the token is not about a user of the VO", 401)
        self._record(req, 200, None)
        return UserinfoResponse(sub=policy.name, groups=policy.groups)

    # -- revocation (RFC 7009) -------------------------------------------------------------

    def _revoke(self, req: RevocationRequest, client: ClientPolicy) -> Message:
        """RFC 7009 §2: revoke a refresh token and every token rotated from the same login.

        An unknown (or already revoked) token is 200 all the same (§2.2). A refresh token
        issued to another client is refused (§2.1: the server "verifies whether the token was
        issued to the client making the revocation request. If this validation fails, the
        request is refused and the client is informed of the error"), with RFC 6749 §5.2's
        ``invalid_grant`` ("... or was issued to another client"). A valid access token of
        ours is ``unsupported_token_type`` (§2.2.1): access tokens cannot be revoked (E6).
        """
        grant = self._grants.get(_digest(req.token))
        if grant is None:
            now = self.now()
            verifier = verifier_for(self.url, None, self.keys.published(now), now=now)
            if isinstance(verifier.check(req.token, now=now), VerifiedToken):
                return self._error(
                    req,
                    "unsupported_token_type",
                    "access tokens cannot be revoked; they expire (E6)",
                )
            self._record(req, 200, None)
            return Ack()
        if grant.client != client.client_id:
            return self._error(req, "invalid_grant", "the token was issued to another client")
        self._revoke_family(grant.family)
        self._record(req, 200, None)
        return Ack()

    # -- minting -----------------------------------------------------------------------------

    def _new_refresh_token(
        self,
        *,
        user: str,
        client: str,
        scopes: tuple[Scope, ...],
        audience: Audience | None,
        expires: float,
        family: int | None = None,
        token: str | None = None,
        oauth: frozenset[str] = frozenset(),
        groups: tuple[str, ...] | None = None,
    ) -> str:
        if family is None:
            self._families += 1
            family = self._families
        if token is None:
            token = new_secret(self.rng, "rt-")
        if len(self._grants) + len(self._spent) >= self._prune_at:
            self._prune()
        digest = _digest(token)
        self._dirty.add(digest)
        self._grants[digest] = _RefreshGrant(
            user=user,
            client=client,
            scopes=scopes,
            audience=audience,
            expires=expires,
            family=family,
            oauth=oauth,
            groups=groups,
        )
        return token

    def _mint(
        self,
        user: str,
        client: ClientPolicy,
        scopes: Sequence[Scope],
        audience: Audience | None,
        grant: str,
        *,
        oauth: frozenset[str] = frozenset(),
        nonce: str | None = None,
        groups: tuple[str, ...] | None = None,
    ) -> TokenResponse:
        """An access token (and, when ``openid`` is in ``oauth`` and ``user`` is a user of the
        VO, an ID token); ``oauth``: the OAuth scopes granted, listed in the ``scope`` claim
        after the capabilities (as INDIGO IAM does)."""
        now = self.now()
        key = self.keys.signing_key(now)
        lifetime = client.access_token_lifetime or self.access_token_lifetime
        policy = self.users.get(user)
        claims = build_claims(
            profile=self.profile,
            issuer=self.url,
            subject=user,
            audience=audience if audience is not None else self.url,
            scopes=(*scopes, *(parse_scope(name) for name in sorted(oauth))),
            issued_at=now,
            lifetime=lifetime,
            jti=new_jti(self.rng),
            nbf_backdate=self.nbf_backdate,
            groups=(
                _groups_for(policy, groups) if (policy and self.profile is Profile.WLCG) else ()
            ),
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
            client=client.client_id,
            grant=grant,
            scope=scope_text,
            aud=claims["aud"],
            iat=claims["iat"],
            exp=claims["exp"],
            kid=key.kid,
        )
        id_token = None
        if "openid" in oauth and policy is not None:
            id_token = self._id_token(user, client, claims, nonce)
        return TokenResponse(
            access_token=token,
            expires_in=float(claims["exp"] - claims["iat"]),
            scope=scope_text,
            id_token=id_token,
        )

    def _id_token(
        self, user: str, client: ClientPolicy, access: Mapping[str, Any], nonce: str | None
    ) -> str:
        """OpenID Connect Core §2: an ID token for ``client`` (``aud`` = its id) about
        ``user``, signed with the key that signed the access token, living as long."""
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": user,
            "aud": client.client_id,
            "iat": access["iat"],
            "exp": access["exp"],
            "jti": new_jti(self.rng),
        }
        if nonce is not None:
            claims["nonce"] = nonce  # §3.1.3.7 rule 11: the client checks it
        return encode(claims, self.keys.signing_key(self.now()))


_Request: TypeAlias = (
    TokenRequest
    | DeviceAuthorizationRequest
    | DeviceApproval
    | RevocationRequest
    | UserinfoRequest
    | AuthorizationRequest
    | ClientRegistrationRequest
)


def _capability_scopes(scope: str | None) -> tuple[str | None, frozenset[str]]:
    """Split a requested ``scope`` into its capability scopes and its OAuth scopes.

    Returns:
        The capability scopes as a space-separated string (None when there are none), and the
        OAuth scopes (``offline_access``, ``openid``) that were asked for.
    """
    if scope is None:
        return None, frozenset()
    words = scope.split()
    capabilities = [w for w in words if w not in OAUTH_SCOPES and not _is_group_scope(w)]
    oauth = frozenset(word for word in words if word in OAUTH_SCOPES)
    return (" ".join(capabilities) if capabilities else None), oauth


def _is_group_scope(word: str) -> bool:
    """``wlcg.groups`` or ``wlcg.groups:<group>`` (WLCG profile §3.3.2): a request for group
    membership claims, not a capability."""
    return word == GROUPS_SCOPE or word.startswith(GROUPS_SCOPE + ":")


def _group_words(scope: str | None) -> tuple[str, ...] | None:
    """The ``wlcg.groups`` words of a requested scope, in order; None when there are none."""
    words = tuple(w for w in (scope or "").split() if _is_group_scope(w))
    return words or None


def _groups_for(policy: UserPolicy, words: tuple[str, ...] | None) -> tuple[str, ...]:
    """The ``wlcg.groups`` claim for ``policy``'s user (INDIGO IAM): without a group request
    the default groups; ``wlcg.groups`` alone the default groups; ``wlcg.groups:/g`` the group
    ``/g`` if the user belongs to it (default or optional; silently dropped otherwise). In the
    order asked, each once."""
    if words is None:
        return policy.groups
    member = set(policy.groups) | set(policy.optional_groups)
    out: list[str] = []
    for word in words:
        wanted = policy.groups if word == GROUPS_SCOPE else (word.split(":", 1)[1],)
        out.extend(g for g in wanted if g in member and g not in out)
    return tuple(out)


#: Row key prefix of a registered client in the durable table (refresh tokens are hex digests).
_CLIENT_ROW = "client:"


def _registrable_redirect(uri: str) -> bool:
    """https, http on a loopback host (RFC 8252 §7.3), or a private-use scheme named after a
    reversed domain (RFC 8252 §7.1, oidc-agent's ``edu.kit.data.oidc-agent:/redirect``);
    never a fragment (RFC 6749 §3.1.2)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.fragment or "#" in uri:
        return False
    if parts.scheme in ("https", "http"):
        if not parts.netloc:
            return False
        return parts.scheme == "https" or parts.hostname in ("localhost", "127.0.0.1", "::1")
    return "." in parts.scheme and not parts.netloc and parts.path.startswith("/")


def _client_row(c: ClientPolicy) -> dict[str, Any]:
    """A registered client as JSON values (its secret as a SHA-256 only)."""
    return {
        "client": {
            "client_id": c.client_id,
            "grants": sorted(c.grants),
            "redirect_uris": list(c.redirect_uris),
            "scope_bound": format_scopes(c.scope_bound or ()),
            "secret_sha256": c.secret_sha256,
        }
    }


def _client_from_row(row: Mapping[str, Any]) -> ClientPolicy:
    c = row["client"]
    return ClientPolicy(
        client_id=c["client_id"],
        grants=frozenset(c["grants"]),
        redirect_uris=tuple(c["redirect_uris"]),
        scope_bound=parse_scopes(c["scope_bound"]) if c["scope_bound"] else (),
        secret_sha256=c["secret_sha256"],
    )


def _s256(verifier: str) -> str:
    """RFC 7636 §4.2: ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _grant_row(g: _RefreshGrant) -> dict[str, Any]:
    """A grant as JSON-ready values (no token: the table is keyed by digests)."""
    return {
        "user": g.user,
        "client": g.client,
        "scopes": format_scopes(g.scopes),
        "audience": list(g.audience) if isinstance(g.audience, tuple) else g.audience,
        "expires": g.expires,
        "family": g.family,
        "rotated_at": g.rotated_at,
        "revoked": g.revoked,
        "oauth": sorted(g.oauth),
        "groups": list(g.groups) if g.groups is not None else None,
    }


def _grant_from_row(g: Mapping[str, Any]) -> _RefreshGrant:
    return _RefreshGrant(
        user=g["user"],
        client=g["client"],
        scopes=parse_scopes(g["scopes"]) if g["scopes"] else (),
        audience=tuple(g["audience"]) if isinstance(g["audience"], list) else g["audience"],
        expires=float(g["expires"]),
        family=int(g["family"]),
        rotated_at=g["rotated_at"],
        revoked=bool(g["revoked"]),
        # rows written before the OAuth scopes were kept have none
        oauth=frozenset(g.get("oauth", ())),
        groups=tuple(g["groups"]) if g.get("groups") is not None else None,
    )
