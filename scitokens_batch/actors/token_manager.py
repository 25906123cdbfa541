"""The token manager: HTCondor's OAuth credmon on the submit host.

It holds each user's refresh token per service (the ``.top`` file, I2), mints the access token
(the ``.use`` file) as soon as a credential is stored, and on every scan (``scan_interval``, I4)
renews each access token once ``renew_fraction`` of its life has passed (I5). A failed refresh
is retried with exponential back-off (``retry_backoff`` doubling up to ``retry_backoff_max``),
between scans. Refresh tokens rotate (I7): the new one replaces the old atomically.

The token manager is a confidential OAuth client of each issuer (E4: "client authenticates"):
it sends its ``client_id`` (its actor name) and the secret registered for it at that issuer
with every refresh, as HTTP Basic (RFC 6749 §2.3.1).

Every renewed token is pushed to the queue manager, which forwards it to the execute hosts
running the user's jobs; the starters copy it into the sandboxes (I13).

Durability (live mode, ``persist``): a stored credential is persisted before the
``StoreCredential`` is acknowledged, and a renewed one (its rotated refresh token above all)
before the new access token is used or pushed, so a ``kill -9`` never loses what the issuer or the
user was told was kept.

A crash takes the token manager off the network; the store survives (it is on disk) unless the
fault says ``lose_state`` — then the refresh tokens are gone and nothing can be renewed until
the users log in again (they do not, within a scenario).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Awaitable, Callable, Mapping

import attrs
import trio

from ..metrics import Recorder
from ..protocol import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_NONE,
    GRANT_REFRESH,
    Ack,
    Backoff,
    CredentialRequest,
    CredentialResponse,
    CredentialUpdate,
    Message,
    OAuthError,
    StoreCredential,
    TokenRequest,
    TokenResponse,
)
from ..tokens import RenewalPolicy, peek
from ..transport import Transport, Unreachable
from ._common import Clock, Logger

__all__ = ["Credential", "TokenManager"]

#: Token endpoint errors after which a refresh token is given up for good.
_FINAL_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


@attrs.define(kw_only=True)
class Credential:
    """One user's credential for one service (``<user>/<service>.top`` + ``.use``)."""

    user: str
    service: str
    issuer: str  # the issuer actor's name
    scopes: str
    audience: str
    refresh_token: str | None = attrs.field(repr=False)
    access_token: str | None = attrs.field(default=None, repr=False)
    jti: str | None = None
    iat: float = 0.0
    exp: float = 0.0
    attempts: int = 0
    retry_at: float | None = None
    #: the refresh token was refused for good (revoked, expired): no more retries
    dead: bool = False
    changed: trio.Event = attrs.field(factory=trio.Event, repr=False)

    def usable(self, now: float, min_valid: float = 0.0) -> bool:
        """An access token exists and is valid for at least ``min_valid`` more seconds."""
        return self.access_token is not None and self.exp - now > min_valid


@attrs.define(kw_only=True)
class TokenManager:
    """The credmon.

    Args:
        name: actor name.
        queue_manager: where renewed tokens are pushed.
        policy: when a token is due (fraction of its life, I5).
        scan_interval: seconds between scans (I4).
        backoff: retry delays after a failed refresh.
        client_secrets: its client secret at each issuer, by the issuer's actor name; an
            issuer not listed registered it as a public client (no secret sent).
        persist: awaited with a credential whenever it changed for good (stored, renewed),
            before anyone is told or the new token is used; None: nothing to persist.
        transport, now, rng, recorder, log: injected.
    """

    name: str = "token_manager"
    queue_manager: str = "queue_manager"
    policy: RenewalPolicy
    scan_interval: float
    backoff: Backoff
    client_secrets: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    #: check that a stored refresh token belongs to the user it is stored for (live mode: the
    #: first refresh happens before the Ack, and its access token's ``sub`` must be the user)
    verify_owner: bool = False
    transport: Transport
    now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    persist: Callable[[Credential], Awaitable[None]] | None = None
    _store: dict[tuple[str, str], Credential] = attrs.field(factory=dict, alias="_store")
    _wake: trio.Event = attrs.field(factory=trio.Event, alias="_wake")

    def store(self, cred: Credential) -> None:
        """Deposit a credential (the user's ``condor_store_cred``; before the scenario starts)."""
        self._store[(cred.user, cred.service)] = cred
        self._wake.set()

    def credential(self, user: str, service: str) -> Credential | None:
        """The stored credential, for inspection by tests and the world."""
        return self._store.get((user, service))

    def stored(self) -> list[tuple[str, str]]:
        """The (user, service) pairs in the store."""
        return sorted(self._store)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan now, then every ``scan_interval``; retry failed refreshes in between."""
        task_status.started()
        next_scan = self.now()
        while True:
            now = self.now()
            if now >= next_scan:
                await self._pass(scan=True)
                # Scans keep their grid even when one took a while (credmon sleeps 60 s after a
                # pass; with instant passes the two agree, and the grid is easier to reason about).
                next_scan += self.scan_interval * max(
                    1, math.floor((now - next_scan) / self.scan_interval) + 1
                )
            else:
                await self._pass(scan=False)
            wake_at = min([next_scan, *self._retry_times()])
            self._wake = trio.Event()
            with trio.move_on_at(trio.current_time() + max(0.0, wake_at - self.now())):
                await self._wake.wait()

    def _retry_times(self) -> list[float]:
        return [c.retry_at for c in self._store.values() if c.retry_at is not None and not c.dead]

    async def _pass(self, *, scan: bool) -> None:
        """Renew what is due (on a scan) and retry what is waiting for its back-off."""
        for key in sorted(self._store):
            cred = self._store.get(key)
            if cred is None or cred.dead or cred.refresh_token is None:
                continue
            now = self.now()
            if cred.retry_at is not None:
                if now >= cred.retry_at:
                    await self._refresh(cred)
                continue
            if cred.access_token is None or (scan and self.policy.is_due(cred.iat, cred.exp, now)):
                await self._refresh(cred)

    async def _refresh(self, cred: Credential, *, persist: bool = True) -> None:
        initial = cred.access_token is None
        secret = self.client_secrets.get(cred.issuer)
        request = TokenRequest(
            grant_type=GRANT_REFRESH,
            client_id=self.name,
            client_secret=secret,
            client_auth=CLIENT_AUTH_NONE if secret is None else CLIENT_AUTH_BASIC,
            refresh_token=cred.refresh_token,
            scope=cred.scopes,
            audience=cred.audience,
        )
        try:
            answer = await self.transport.request(self.name, cred.issuer, request)
        except Unreachable as exc:
            self._failed(cred, f"issuer unreachable ({exc.why})")
            return
        if isinstance(answer, OAuthError):
            # invalid_grant: the refresh token is revoked, expired or already rotated away;
            # invalid_client / unauthorized_client: we are not (or no longer) a client allowed
            # to refresh. Retrying cannot help (RFC 6749 §5.2); anything else (503...) can.
            self._failed(
                cred, f"{answer.status} {answer.error}", final=answer.error in _FINAL_ERRORS
            )
            return
        assert isinstance(answer, TokenResponse), answer
        _, claims = peek(answer.access_token)
        renewed = attrs.evolve(
            cred,
            access_token=answer.access_token,
            jti=str(claims["jti"]),
            iat=float(claims["iat"]),
            exp=float(claims["exp"]),
            # I7: rotate, the old one is discarded
            refresh_token=answer.refresh_token or cred.refresh_token,
            attempts=0,
            retry_at=None,
        )
        if persist and self.persist is not None:
            # The issuer has rotated: the old refresh token is spent. The new one is on disk
            # before anyone can see the new access token, or a crash now loses the credential.
            await self.persist(renewed)
        cred.access_token, cred.refresh_token = renewed.access_token, renewed.refresh_token
        cred.jti, cred.iat, cred.exp = renewed.jti, renewed.iat, renewed.exp
        cred.attempts, cred.retry_at = 0, None
        cred.changed.set()
        cred.changed = trio.Event()
        self.recorder.record(
            self.name,
            "refresh",
            user=cred.user,
            service=cred.service,
            jti=cred.jti,
            exp=cred.exp,
            initial=initial,
        )
        if not initial:
            await self._push(cred)

    def _failed(self, cred: Credential, error: str, *, final: bool = False) -> None:
        cred.attempts += 1
        if final:
            cred.dead, cred.retry_at = True, None
            retry_in: float | None = None
            self.log.warning(
                "refresh token refused; credential is dead",
                user=cred.user,
                service=cred.service,
                error=error,
            )
        else:
            retry_in = self.backoff.delay(cred.attempts - 1)
            cred.retry_at = self.now() + retry_in
        self.recorder.record(
            self.name,
            "refresh_failed",
            user=cred.user,
            service=cred.service,
            error=error,
            attempt=cred.attempts,
            retry_in_s=retry_in,
        )

    async def _push(self, cred: Credential) -> None:
        assert cred.access_token is not None and cred.jti is not None
        update = CredentialUpdate(
            user=cred.user,
            service=cred.service,
            token=cred.access_token,
            jti=cred.jti,
            exp=cred.exp,
        )
        # Unreachable: hosts keep what they had; new job starts still ask for the current token.
        with contextlib.suppress(Unreachable):
            await self.transport.request(self.name, self.queue_manager, update)

    async def handle(self, message: Message) -> Message:
        """Answer the queue manager's :class:`CredentialRequest` (waiting up to ``wait``), and
        take a user's :class:`StoreCredential` (live mode's ``condor_store_cred``)."""
        if isinstance(message, StoreCredential):
            stored = Credential(
                user=message.user,
                service=message.service,
                issuer=message.issuer,
                scopes=message.scopes,
                audience=message.audience,
                refresh_token=message.refresh_token,
            )
            if self.verify_owner:
                # The check refreshes once (the issuer rotates the token); nothing reaches the
                # disk before the token is known to be this user's.
                refused = await self._check_owner(stored)
                if refused:
                    self.log.warning(
                        "credential refused", user=stored.user, service=stored.service, why=refused
                    )
                    return Ack(ok=False, detail=refused)
            if self.persist is not None:
                await self.persist(stored)  # condor_store_cred succeeds once the .top is on disk
            self.store(stored)
            return Ack()
        if not isinstance(message, CredentialRequest):
            raise TypeError(f"token manager: unexpected message {type(message).__name__}")
        cred = self._store.get((message.user, message.service))
        deadline = trio.current_time() + message.wait
        while True:
            if cred is not None and cred.usable(self.now(), message.min_valid):
                return CredentialResponse(token=cred.access_token, jti=cred.jti, exp=cred.exp)
            if cred is None or cred.dead or trio.current_time() >= deadline:
                return CredentialResponse(token=None)
            with trio.move_on_at(deadline):
                await cred.changed.wait()

    async def _check_owner(self, cred: Credential) -> str:
        """Refresh once with the issuer (the authority on whose refresh token it is) and
        check the access token's ``sub`` is the user; "" when it is, else why not.

        The rotated credential is not persisted here: the caller persists it once it is known
        to be the user's (else a refused token would overwrite the user's stored one).
        """
        await self._refresh(cred, persist=False)
        if cred.access_token is None:
            return "the issuer did not take the refresh token"
        _, claims = peek(cred.access_token)
        if claims.get("sub") != cred.user:
            return f"the refresh token is not {cred.user}'s"
        return ""

    # -- faults ------------------------------------------------------------------------------

    def crash(self, *, lose_state: bool) -> None:
        """Stop (the world cancels ``run`` and takes us off the network); maybe lose the store."""
        if lose_state:
            for cred in self._store.values():
                cred.refresh_token = None
                cred.access_token = None
                cred.retry_at = None
                cred.dead = True

    def restarted(self) -> Mapping[tuple[str, str], Credential]:
        """Back after a crash: the store is as the crash left it."""
        self._wake = trio.Event()
        return self._store
