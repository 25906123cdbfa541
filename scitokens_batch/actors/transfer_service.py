"""The transfer service: FTS, third-party copies with managed tokens (conformance L5-L7, P12).

A data manager (Rucio) submits a :class:`~scitokens_batch.protocol.TransferSubmit`: files, one
source and one destination access token per file (L5), and a token for the service itself
(L1). The service checks the submission at once and answers
:class:`~scitokens_batch.protocol.TransferAccepted` or
:class:`~scitokens_batch.protocol.TransferRefused`:

- the FTS token is verified like a data server verifies tokens (signature with the issuer's
  keys, fetched through the transport on demand; ``iss`` trusted; ``exp``; ``aud`` = the
  service's audience, L1) and must hold the ``fts`` scope: 401 / 403 otherwise, 503 when the
  issuer's keys cannot be fetched at all (P10);
- the storage tokens are checked for structure only, as FTS's REST front end does (L5): one per
  file on each side, both or neither; each a JWT with ``iss``, ``exp``, ``scope`` and ``aud``
  (``VerifyAudience``) from an issuer the service can exchange at: 400 otherwise.
- the job id is the submitter's (Rucio's): one already taken is answered only once the new
  submission passed every check above, so a caller learns nothing of the jobs before it is
  authenticated. The same submission again (same id, files, and ``iss`` and ``sub`` of the
  FTS token) is a retry whose first answer was lost, say to a crash between the commit and
  the answer: it is accepted again and nothing is started twice (``transfer_resubmitted``).
  Other files or another submitter under a taken id: 409.

Each file then goes through the states of a ``transfer_state`` event:

``submitted`` (accepted) -> ``token_prep`` (its tokens are being exchanged) -> ``active`` (a
copy is running) -> ``done`` | ``failed`` (with a reason); a failed copy that will be retried
goes back to ``submitted`` (with the reason and the retry delay) and becomes ``active`` again.
(FTS 3.14 itself inserts a file with managed tokens as ``TOKEN_PREP`` and makes it
``SUBMITTED`` once its tokens are exchanged, L6; the order here follows the submission.)

**Managed tokens.** Each distinct storage token is managed once, whatever the number of files
and jobs that carry it (Rucio hands the same cached token for a whole dataset, L3):

- *token_prep*: it is exchanged (RFC 8693, K4) for a refresh token, as the service's own OAuth
  client (``client_secret_basic``): ``requested_token_type`` = refresh token, ``scope`` = the
  token's scope + `` offline_access``, ``audience`` = the token's (L6). The answer's access
  token (which lives as long as the *service's* client tokens do, P13) replaces the submitted
  one.
- *refresh*: at ``exp - refresh_margin`` (L7: ``TokenRefreshMarginPeriod``, 300 s) with the
  refresh grant and the same scope and audience; the rotated refresh token replaces the old one
  atomically (E4, I7). Refreshes stop once no file needs the token any more.
- An issuer that cannot be reached, or answers 5xx, is retried with back-off (``backoff``), for
  the exchange and for a refresh alike, without end: an outage delays, it does not fail.
- Any other refusal is final. A refresh answered ``invalid_grant`` means the refresh token is
  gone (revoked, rotated away, or lost, P12); a refresh token the service no longer holds (the
  :meth:`lose_refresh_tokens` fault) cannot even be sent. Either way the token is *dead*: every
  file that needs it and has not started its copy fails at once, with a reason that says so. A
  copy already running goes on (the storage checked the tokens when it started).

**Copies.** ``concurrency`` workers take files, in the order their tokens became ready, and
send each a :class:`~scitokens_batch.protocol.ThirdPartyCopy` to its destination data server
with the *current* access tokens. A copy starts only with tokens valid for more than
``refresh_margin`` (L7: FTS counts a token as valid until ``exp - TokenRefreshSafetyPeriod``,
also 300 s by default): a worker whose file's token is due for refresh waits for the refresh
(holding its slot). A copy refused by either end, or whose destination cannot be reached, is
retried after ``backoff`` up to ``max_retries`` times (the slot is freed meanwhile), then the
file fails with the last reason.

**Durability** (live mode, ``persist``): the service's state (jobs, each file's state and
attempts, each managed token with its current and previous refresh token) is rows of a table
(:meth:`TransferService.rows`); every change is handed to ``persist`` and awaited before the
answer or the step that depends on it (a job is accepted once its rows are durable; an
exchanged or refreshed token is durable before a copy uses it; a copy is durable as ``active``
before it starts). :meth:`TransferService.restore_rows` loads them back in a restarted service,
which resumes: each token is refreshed when due, each unfinished file is prepared and queued
again (one that was ``active`` goes back to ``submitted``: its copy died with the process).

Events: ``transfer_submitted``, ``transfer_resubmitted``, ``transfer_refused``,
``transfer_state``, ``transfer_done``, ``transfer_failed``, ``exchange``, ``exchange_failed``,
``refresh``, ``refresh_failed`` and ``jwks_fetch`` (metrics/_events.py lists their fields).
Managed tokens are named by the ``jti`` of the token submitted (A5), never by a token or a hash
of a refresh token.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from ..errors import TokenFormatError
from ..metrics import Recorder
from ..protocol import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_NONE,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_REFRESH,
    Backoff,
    DataResponse,
    Message,
    OAuthError,
    ThirdPartyCopy,
    TokenRequest,
    TokenResponse,
    TransferAccepted,
    TransferFile,
    TransferRefused,
    TransferSubmit,
)
from ..tokens import NeedKeys, Reason, Rejection, Verifier, peek
from ..transport import Transport, Unreachable
from ._common import Clock, Logger
from ._jwks import fetch_jwks

__all__ = ["L5_CLAIMS", "FileState", "ManagedToken", "Persist", "TransferService"]

#: Hands changed rows (key -> row, None: deleted) to durable storage; returns once durable.
Persist = Callable[[Mapping[str, Mapping[str, Any] | None]], Awaitable[None]]

#: L5: the claims every storage token of a submission must carry (``aud`` as FTS's
#: ``VerifyAudience`` demands).
L5_CLAIMS = ("iss", "exp", "scope", "aud")


class FileState(enum.Enum):
    """A file's state in the transfer service (the ``state`` of ``transfer_state`` events)."""

    SUBMITTED = "submitted"  #: accepted (or waiting to be retried)
    TOKEN_PREP = "token_prep"  #: its tokens are being exchanged (L6), or it waits for a slot
    ACTIVE = "active"  #: a copy is running
    DONE = "done"
    FAILED = "failed"


_FINISHED = (FileState.DONE, FileState.FAILED)


@attrs.define(eq=False, kw_only=True)
class ManagedToken:
    """One storage access token under the service's management (L6, L7).

    Attributes:
        id: the submitted token's ``jti`` (what events call the token).
        issuer: the actor name of the issuer that minted it (where it is exchanged).
        scope: its ``scope`` claim (asked for again on exchange and refresh).
        audience: its ``aud``, space-separated when several (asked for again).
        key: the SHA-256 of the submitted token (the key of the service's token table).
        serial: which managed token this is (0, 1, ...: its row in the durable state; a token
            submitted again after it died is a new one).
        subject_token: the submitted token, until it is exchanged.
        access_token: the current access token (the exchanged one, then each refreshed one).
        refresh_token: the current refresh token; None before the exchange, or once lost.
        backup_refresh_token: the refresh token held before the last rotation: what a restore
            from a backup taken before that rotation brings back (P12).
        jti: ``jti`` of ``access_token``.
        exp: ``exp`` of ``access_token``.
        ready: exchanged.
        dead: why it can no longer be renewed (final refusal, lost refresh token); None while
            it can.
        attempts: failed attempts since the last success (for the back-off).
        users: the files that need it and are not finished.
        changed: set (and replaced) whenever the token changes or dies.
    """

    id: str
    issuer: str
    scope: str
    audience: str | None
    key: str = ""
    serial: int = 0
    subject_token: str | None = attrs.field(default=None, repr=False)
    access_token: str | None = attrs.field(default=None, repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)
    backup_refresh_token: str | None = attrs.field(default=None, repr=False)
    jti: str | None = None
    exp: float = 0.0
    ready: bool = False
    dead: str | None = None
    attempts: int = 0
    users: set[_File] = attrs.field(factory=set, repr=False)
    changed: trio.Event = attrs.field(factory=trio.Event, repr=False)
    cancel: trio.CancelScope | None = attrs.field(default=None, repr=False)

    def usable(self, now: float, margin: float) -> bool:
        """Exchanged, not dead, and valid for more than ``margin`` seconds (L7)."""
        return self.ready and self.dead is None and self.exp - now > margin

    def notify(self) -> None:
        """Wake whoever waits for this token to change."""
        self.changed.set()
        self.changed = trio.Event()


@attrs.define(eq=False, kw_only=True)
class _File:
    job: str
    index: int
    spec: TransferFile
    source: ManagedToken | None
    destination: ManagedToken | None
    state: FileState = FileState.SUBMITTED
    attempts: int = 0

    @property
    def tokens(self) -> tuple[ManagedToken, ...]:
        return tuple(m for m in (self.source, self.destination) if m is not None)

    @property
    def key(self) -> tuple[str, int]:
        return (self.job, self.index)


class _Retry(Exception):
    """A token request to try again later (unreachable issuer, 5xx)."""


def _digest(token: str) -> str:
    """The table key of a submitted token: its SHA-256 (the table holds tokens anyway, but a
    key should not be one)."""
    return hashlib.sha256(token.encode()).hexdigest()


@attrs.define(kw_only=True)
class TransferService:
    """FTS.

    Args:
        name: actor name.
        audience: the service's own audience (L1); the FTS token must name it.
        verifier: checks FTS tokens (trusted issuer, ``audience``, leeway, key cache).
        issuer_actors: ``iss`` URL -> issuer actor name: where keys are fetched and tokens
            exchanged and refreshed.
        client_id: the service's OAuth client id at those issuers.
        client_secrets: its client secret at each issuer, by actor name; an issuer not listed
            registered it as a public client (no secret sent).
        concurrency: copies running at once.
        refresh_margin: refresh an access token this long before its ``exp``, and start no
            copy with a token valid for less (L7; 300 s).
        backoff: delays between retries of token requests and of failed copies.
        max_retries: a failed copy is retried this many times before the file fails.
        push: ask the *source* for each copy (HTTP-TPC push, ``Destination``) instead of the
            destination (pull, ``Source``).
        transport, now, rng, recorder, log: injected.
        persist: awaited with the changed rows (:meth:`rows`) before an answer or a copy
            depends on them (live mode: ``live/_fts_store.py``); None: nothing to persist.
    """

    name: str = "fts"
    audience: str
    verifier: Verifier
    issuer_actors: Mapping[str, str]
    client_id: str
    client_secrets: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    concurrency: int = 10
    refresh_margin: float = 300.0
    backoff: Backoff
    max_retries: int = 3
    push: bool = False
    transport: Transport
    now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    persist: Persist | None = None
    _nursery: trio.Nursery | None = attrs.field(default=None, alias="_nursery")
    _tokens: dict[str, ManagedToken] = attrs.field(factory=dict, alias="_tokens")
    #: job -> the fingerprint of its submission (who submitted which files)
    _jobs: dict[str, str] = attrs.field(factory=dict, alias="_jobs")
    _queue: trio.MemorySendChannel[_File] | None = attrs.field(default=None, alias="_queue")
    _fetching: dict[str, trio.Event] = attrs.field(factory=dict, alias="_fetching")
    #: job -> its files (what :meth:`rows` writes and a restart resumes; with ``persist``)
    _files: dict[str, list[_File]] = attrs.field(factory=dict, alias="_files")
    #: jobs whose first submission is being committed (only with ``persist``)
    _committing: dict[str, trio.Event] = attrs.field(factory=dict, alias="_committing")
    #: row keys changed since the last :meth:`_flush` (only with ``persist``)
    _dirty: set[str] = attrs.field(factory=set, alias="_dirty")
    #: jobs loaded by :meth:`restore_rows`, resumed when :meth:`run` starts
    _resume: list[str] = attrs.field(factory=list, alias="_resume")
    _serial: int = attrs.field(default=0, alias="_serial")

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 (got {self.concurrency})")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (got {self.max_retries})")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the ``concurrency`` copy workers; serve until cancelled."""
        send, receive = trio.open_memory_channel[_File](math.inf)
        async with trio.open_nursery() as nursery:
            self._nursery, self._queue = nursery, send
            for _ in range(self.concurrency):
                nursery.start_soon(self._worker, receive)
            self._resume_restored(nursery)
            task_status.started()
            await trio.sleep_forever()

    def managed(self) -> list[ManagedToken]:
        """The managed tokens, in the order they were first submitted (tests, inspection)."""
        return list(self._tokens.values())

    # -- submission (L1, L5) -----------------------------------------------------------------

    async def handle(self, message: Message) -> Message:
        """Take a :class:`TransferSubmit`: refuse it, or accept it and start its files."""
        if not isinstance(message, TransferSubmit):
            raise TypeError(f"transfer service: unexpected message {type(message).__name__}")
        checked = await self._check(message)
        if isinstance(checked, tuple):
            status, reason = checked
            self.recorder.record(
                self.name, "transfer_refused", job=message.job, status=status, reason=reason
            )
            return TransferRefused(job=message.job, status=status, reason=reason)
        assert self._nursery is not None
        if message.job in self._jobs:  # the same submission again: its answer was lost
            committing = self._committing.get(message.job)
            if committing is not None:  # the first is being committed: accepted once it is
                await committing.wait()
            if _job_key(message.job) in self._dirty:  # that commit failed: this one must not
                await self._flush()
            self.recorder.record(
                self.name, "transfer_resubmitted", job=message.job, files=len(message.files)
            )
            return TransferAccepted(job=message.job, files=len(message.files))
        self._jobs[message.job] = checked
        managed = bool(message.source_tokens)
        files = [
            _File(
                job=message.job,
                index=i,
                spec=spec,
                source=self._managed(message.source_tokens[i]) if managed else None,
                destination=self._managed(message.destination_tokens[i]) if managed else None,
            )
            for i, spec in enumerate(message.files)
        ]
        self.recorder.record(self.name, "transfer_submitted", job=message.job, files=len(files))
        for f in files:
            self._state(f, FileState.SUBMITTED)
            for m in f.tokens:
                m.users.add(f)
        if self.persist is not None:
            self._files[message.job] = files  # kept for rows() (virtual time needs none)
            self._dirty.add(_job_key(message.job))
            for f in files:
                self._dirty.add(_file_key(f))
                self._dirty.update(_token_key(m) for m in f.tokens)
            committing = self._committing[message.job] = trio.Event()
            try:
                await self._flush()  # accepted once durable: FTS answers after its DB commit
            finally:
                del self._committing[message.job]
                committing.set()
        # The tasks start only now (after the commit, which yields): the same order, with
        # nothing run in between, in both modes.
        for f in files:
            for m in f.tokens:
                if m.cancel is None:  # its management task is not running: start it
                    m.cancel = trio.CancelScope()
                    self._nursery.start_soon(self._manage, m, m.cancel)
        self._nursery.start_soon(self._prepare, files)
        return TransferAccepted(job=message.job, files=len(files))

    async def _check(self, msg: TransferSubmit) -> tuple[int, str] | str:
        """Why ``msg`` is refused (status, reason), or its fingerprint (:func:`_fingerprint`)."""
        if self._nursery is None:
            return 503, "the transfer service is not running"
        verdict = self.verifier.check(msg.fts_token, now=self.now())
        if isinstance(verdict, NeedKeys):
            await self._fetch_keys(verdict)
            verdict = self.verifier.check(msg.fts_token, now=self.now())
            if isinstance(verdict, NeedKeys):
                verdict = Rejection(Reason.UNKNOWN_KEY, f"no usable key for {verdict.issuer!r}")
        if isinstance(verdict, Rejection):
            if verdict.reason is Reason.UNKNOWN_KEY and not self._has_keys(msg.fts_token):
                # P10: the issuer's keys cannot be had now; the submitter may try again.
                return 503, f"fts token: cannot fetch the issuer's keys ({verdict})"
            return verdict.status, f"fts token: {verdict}"
        if not any(scope.authz == "fts" for scope in verdict.scopes):
            held = verdict.claims.get("scope", "")
            return 403, f"fts token: scope {held!r} lacks 'fts' (L1)"
        if not msg.files:
            return 400, "files: expected at least one file, received none"
        if msg.source_tokens or msg.destination_tokens:
            n = len(msg.files)
            for field, tokens in (
                ("source_tokens", msg.source_tokens),
                ("destination_tokens", msg.destination_tokens),
            ):
                if len(tokens) != n:
                    return 400, (
                        f"{field}: expected one token per file ({n}), received {len(tokens)} "
                        "(L5: source and destination tokens, both or neither)"
                    )
            for field, tokens in (
                ("source_tokens", msg.source_tokens),
                ("destination_tokens", msg.destination_tokens),
            ):
                for i, token in enumerate(tokens):
                    problem = self._structure(token)
                    if problem is not None:
                        return 400, f"{field}[{i}]: {problem}"
        fingerprint = _fingerprint(verdict.claims, msg.files)
        if self._jobs.get(msg.job, fingerprint) != fingerprint:
            return 409, (
                f"job {msg.job!r} was already submitted, with other files or by another submitter"
            )
        return fingerprint

    def _structure(self, token: str) -> str | None:
        """L5: what is wrong with a storage token's structure (never its signature)."""
        try:
            _, claims = peek(token)
        except TokenFormatError as exc:
            return f"not a JWT ({exc})"
        missing = [claim for claim in L5_CLAIMS if claim not in claims]
        if missing:
            return (
                f"expected the claims {', '.join(L5_CLAIMS)} (L5), received a token without "
                f"{', '.join(repr(c) for c in missing)}"
            )
        if claims["iss"] not in self.issuer_actors:
            return f"issuer {claims['iss']!r} is not one the transfer service exchanges tokens at"
        if not isinstance(claims.get("jti"), str):
            return "expected a 'jti' claim (A1) to name the token by"
        return None

    def _has_keys(self, token: str) -> bool:
        """Whether usable keys of the token's issuer are cached (else a refusal for an unknown
        key means the keys could not be fetched: try later)."""
        try:
            _, claims = peek(token)
        except TokenFormatError:
            return True
        iss = claims.get("iss")
        return not isinstance(iss, str) or self.verifier.keys.has_keys(iss, now=self.now())

    def _managed(self, token: str) -> ManagedToken:
        """The managed token for a submitted token: the same object for every file and job
        that carries it, unless it died (a new submission of it starts over)."""
        key = _digest(token)
        m = self._tokens.get(key)
        if m is None or m.dead is not None:
            _, claims = peek(token)  # checked by _structure
            aud = claims["aud"]
            m = ManagedToken(
                id=str(claims["jti"]),
                issuer=self.issuer_actors[claims["iss"]],
                scope=str(claims["scope"]),
                audience=aud if isinstance(aud, str) else " ".join(map(str, aud)),
                key=key,
                serial=self._serial,
                subject_token=token,
            )
            self._serial += 1
            self._tokens[key] = m
        return m

    async def _fetch_keys(self, need: NeedKeys) -> None:
        """The issuer's JWKS, once per issuer at a time (as the data server does)."""
        await fetch_jwks(
            need,
            owner=self.name,
            verifier=self.verifier,
            issuer_actors=self.issuer_actors,
            transport=self.transport,
            clock=self.now,
            recorder=self.recorder,
            running=self._fetching,
        )

    # -- token_prep and refresh (L6, L7) -------------------------------------------------------

    async def _prepare(self, files: Sequence[_File]) -> None:
        """token_prep: wait until each token of the job is exchanged (or dead), then queue the
        files in order; a file with a dead token fails."""
        for f in files:
            if f.state not in _FINISHED:  # a dead token may have failed it already
                self._state(f, FileState.TOKEN_PREP)
        seen: dict[int, ManagedToken] = {}
        for f in files:
            for m in f.tokens:
                seen.setdefault(id(m), m)
        for m in seen.values():
            while not m.ready and m.dead is None and m.users:
                await m.changed.wait()
        assert self._queue is not None
        for f in files:
            if f.state in _FINISHED:
                continue
            dead = next((m for m in f.tokens if m.dead is not None), None)
            if dead is not None:
                self._fail(f, self._dead_reason(dead))
            else:
                self._queue.send_nowait(f)
        await self._flush()

    async def _manage(self, m: ManagedToken, scope: trio.CancelScope) -> None:
        """Exchange ``m``, then refresh it at ``exp - refresh_margin`` while files need it."""
        with scope:
            while m.dead is None and not m.ready:
                await self._renew(m, exchange=True)
                await self._flush()
            while m.dead is None:
                await trio.sleep(max(0.0, m.exp - self.refresh_margin - self.now()))
                if not m.users:
                    # Its last file finished at this very instant (the cancellation may not
                    # have reached this task yet): a token no file needs is not refreshed.
                    break
                await self._renew(m, exchange=False)
                await self._flush()
        if m.cancel is scope:
            m.cancel = None

    async def _renew(self, m: ManagedToken, *, exchange: bool) -> None:
        """One exchange or refresh attempt; after a retryable failure, the back-off wait."""
        what = "exchange" if exchange else "refresh"
        if exchange:
            request = self._exchange_request(m)
        elif m.refresh_token is None:
            self._die(
                m,
                what,
                "refresh token lost (the transfer service's stored refresh tokens are gone, "
                "P12): the access token cannot be renewed",
            )
            return
        else:
            request = self._refresh_request(m)
        try:
            answer = await self._token_request(m, request)
        except _Retry as retry:
            m.attempts += 1
            delay = self.backoff.delay(m.attempts - 1)
            self.recorder.record(
                self.name,
                f"{what}_failed",
                token=m.id,
                error=str(retry),
                attempt=m.attempts,
                retry_in_s=delay,
            )
            await trio.sleep(delay)
            return
        if isinstance(answer, OAuthError):
            error = f"{answer.status} {answer.error}"
            if answer.description:
                error += f" ({answer.description})"
            if not exchange and answer.error == "invalid_grant":
                error += ": the refresh token is gone (revoked, rotated away or lost, P12)"
            self._die(m, what, f"{what} refused: {error}")
            return
        if exchange and answer.refresh_token is None:
            self._die(m, what, "exchange answered without a refresh token (L6)")
            return
        _, claims = peek(answer.access_token)
        m.access_token = answer.access_token
        m.jti, m.exp = str(claims["jti"]), float(claims["exp"])
        if exchange:
            m.subject_token = None
            m.refresh_token = m.backup_refresh_token = answer.refresh_token
            m.ready = True
        else:
            # E4, I7: the rotated refresh token replaces the old one at once; the old one is
            # what a backup taken before this rotation would hold.
            m.backup_refresh_token = m.refresh_token
            if answer.refresh_token is not None:
                m.refresh_token = answer.refresh_token
        m.attempts = 0
        self._mark(m)
        await self._flush()  # the rotated refresh token is on disk before it is reported or used
        fields: dict[str, Any] = {"token": m.id, "jti": m.jti, "exp": m.exp}
        if exchange:
            self.recorder.record(self.name, "exchange", **fields)
        else:
            self.recorder.record(self.name, "refresh", initial=False, **fields)
        if m.exp - self.now() <= self.refresh_margin:
            self._die(
                m,
                what,
                f"the issuer's access tokens live {m.exp - self.now():g} s, not more than the "
                f"refresh margin ({self.refresh_margin:g} s): no copy could start with them (L7)",
            )
            return
        m.notify()

    def _exchange_request(self, m: ManagedToken) -> TokenRequest:
        """L6: the submitted access token for a refresh token, same scope + offline_access."""
        scope = m.scope if "offline_access" in m.scope.split() else f"{m.scope} offline_access"
        return self._client_request(
            m,
            grant_type=GRANT_TOKEN_EXCHANGE,
            subject_token=m.subject_token,
            subject_token_type=TOKEN_TYPE_ACCESS,
            requested_token_type=TOKEN_TYPE_REFRESH,
            scope=scope,
            audience=m.audience,
        )

    def _refresh_request(self, m: ManagedToken) -> TokenRequest:
        """L7: ``grant_type=refresh_token`` with the token's scope and audience."""
        return self._client_request(
            m,
            grant_type=GRANT_REFRESH,
            refresh_token=m.refresh_token,
            scope=m.scope,
            audience=m.audience,
        )

    def _client_request(self, m: ManagedToken, **fields: Any) -> TokenRequest:
        secret = self.client_secrets.get(m.issuer)
        return TokenRequest(
            client_id=self.client_id,
            client_secret=secret,
            client_auth=CLIENT_AUTH_NONE if secret is None else CLIENT_AUTH_BASIC,
            **fields,
        )

    async def _token_request(
        self, m: ManagedToken, request: TokenRequest
    ) -> TokenResponse | OAuthError:
        """Send ``request`` to ``m``'s issuer.

        Raises:
            _Retry: the issuer could not be reached or answered 5xx.
        """
        try:
            answer = await self.transport.request(self.name, m.issuer, request)
        except Unreachable as exc:
            raise _Retry(f"issuer unreachable ({exc.why})") from None
        if isinstance(answer, OAuthError) and answer.status >= 500:
            raise _Retry(f"{answer.status} {answer.error}")
        if not isinstance(answer, TokenResponse | OAuthError):
            raise TypeError(f"issuer {m.issuer}: unexpected answer {type(answer).__name__}")
        return answer

    def _die(self, m: ManagedToken, what: str, reason: str) -> None:
        """``m`` can no longer be renewed: every file that needs it and is not copying fails."""
        m.attempts += 1
        m.dead = reason
        self._mark(m)
        self.recorder.record(
            self.name,
            f"{what}_failed",
            token=m.id,
            error=reason,
            attempt=m.attempts,
            retry_in_s=None,
        )
        self.log.warning("managed token is dead", token=m.id, reason=reason)
        m.notify()
        for f in sorted(m.users, key=lambda f: f.key):
            if f.state is not FileState.ACTIVE:
                self._fail(f, self._dead_reason(m))

    @staticmethod
    def _dead_reason(m: ManagedToken) -> str:
        return f"token {m.id}: {m.dead}"

    # -- copies ------------------------------------------------------------------------------

    async def _worker(self, queue: trio.MemoryReceiveChannel[_File]) -> None:
        async for f in queue:
            if f.state not in _FINISHED:
                await self._copy(f)

    async def _copy(self, f: _File) -> None:
        """One copy attempt of ``f``, once its tokens are fresh enough (L7)."""
        while True:
            if f.state in _FINISHED:
                return  # failed while waiting (a token died)
            stale = [m for m in f.tokens if not m.usable(self.now(), self.refresh_margin)]
            if not stale:
                break
            dead = next((m for m in stale if m.dead is not None), None)
            if dead is not None:
                self._fail(f, self._dead_reason(dead))
                return
            await stale[0].changed.wait()
        f.attempts += 1
        self._state(f, FileState.ACTIVE)
        await self._flush()  # a restart knows this copy was under way
        start = self.now()
        spec = f.spec
        request = ThirdPartyCopy(
            source=spec.source,
            source_path=spec.source_path,
            destination_path=spec.destination_path,
            size=spec.size,
            source_token=f.source.access_token if f.source else None,
            destination_token=f.destination.access_token if f.destination else None,
            transfer=f"{f.job}/{f.index}",
            destination=spec.destination if self.push else None,
        )
        # Pull: the destination fetches; push: the source uploads (WLCG HTTP-TPC).
        target = spec.source if self.push else spec.destination
        try:
            answer = await self.transport.request(self.name, target, request)
        except Unreachable as exc:
            error = f"destination {exc.dest} unreachable ({exc.why})"
        else:
            if not isinstance(answer, DataResponse):
                raise TypeError(f"{spec.destination}: unexpected answer {type(answer).__name__}")
            if answer.ok:
                if self.persist is not None:  # durable before it is reported
                    f.state = FileState.DONE
                    self._dirty.add(_file_key(f))
                    await self._flush()
                self._done(f, answer, start)
                return
            error = f"{answer.side or 'destination'} refused: {answer.status}"
            if answer.reason is not None:
                error += f" {answer.reason.value}"
            if answer.detail:
                error += f" ({answer.detail})"
        if f.attempts > self.max_retries:
            self._fail(f, error)
            await self._flush()
            return
        delay = self.backoff.delay(f.attempts - 1)
        self._state(f, FileState.SUBMITTED, reason=error, retry_in_s=delay)
        await self._flush()
        assert self._nursery is not None
        self._nursery.start_soon(self._requeue, f, delay)

    async def _requeue(self, f: _File, delay: float) -> None:
        await trio.sleep(delay)
        if f.state not in _FINISHED:
            assert self._queue is not None
            self._queue.send_nowait(f)

    def _done(self, f: _File, answer: DataResponse, start: float) -> None:
        self._state(f, FileState.DONE)
        self.recorder.record(
            self.name,
            "transfer_done",
            job=f.job,
            file=f.index,
            source=f.spec.source,
            destination=f.spec.destination,
            path=f.spec.destination_path,
            size=answer.size,
            attempts=f.attempts,
            duration_s=round(self.now() - start, 6),
        )
        self._release(f)

    def _fail(self, f: _File, reason: str) -> None:
        self._state(f, FileState.FAILED, reason=reason)
        self.recorder.record(
            self.name,
            "transfer_failed",
            job=f.job,
            file=f.index,
            reason=reason,
            attempts=f.attempts,
        )
        self._release(f)

    def _release(self, f: _File) -> None:
        """``f`` no longer needs its tokens; a token no file needs is no longer refreshed.

        Whoever waits on one of them (a worker holding a slot for ``f``, a job's token_prep)
        is woken to look again: the token may never change now.
        """
        for m in f.tokens:
            m.users.discard(f)
            if not m.users and m.cancel is not None:
                m.cancel.cancel()
                m.cancel = None
            m.notify()

    def _state(
        self,
        f: _File,
        state: FileState,
        *,
        reason: str | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        f.state = state
        if self.persist is not None:
            self._dirty.add(_file_key(f))
        fields: dict[str, Any] = {}
        if retry_in_s is not None:
            fields["retry_in_s"] = retry_in_s
        self.recorder.record(
            self.name,
            "transfer_state",
            job=f.job,
            file=f.index,
            state=state.value,
            attempt=f.attempts,
            reason=reason,
            **fields,
        )

    # -- faults ------------------------------------------------------------------------------

    def lose_refresh_tokens(self, *, backup: bool) -> None:
        """The stored refresh tokens are lost (P12: FTS database loss).

        Args:
            backup: restore them from a backup taken before their last rotation (each one is
                then the refresh token already used, rotated away at the issuer); else they are
                gone altogether and no refresh can even be asked for.
        """
        for m in self._tokens.values():
            m.refresh_token = m.backup_refresh_token if backup else None
            if not backup:
                m.backup_refresh_token = None
            self._mark(m)

    # -- durable state (live mode) -----------------------------------------------------------

    def _mark(self, m: ManagedToken) -> None:
        if self.persist is not None:
            self._dirty.add(_token_key(m))

    async def _flush(self) -> None:
        """Hand the changed rows to ``persist`` and return once they are durable (at once,
        without a checkpoint, when there is nothing to persist: virtual time is unchanged)."""
        if self.persist is None or not self._dirty:
            return
        keys, self._dirty = self._dirty, set()
        rows = self.rows(keys)
        try:
            await self.persist(rows)
        except BaseException:
            self._dirty |= keys  # not durable: the next flush writes them (current values)
            raise

    def rows(self, keys: set[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """The state as table rows (all, or those of ``keys``), as :meth:`restore_rows` reads
        them: ``job:<job>``, ``file:<job>/<index>`` and ``token:<sha256 of the submitted
        token>`` (a token row holds the current access and refresh tokens and the refresh
        token before the last rotation: the table is secret)."""
        out: dict[str, dict[str, Any] | None] = {}
        tokens = {_token_key(m): m for m in self._tokens.values()}
        for files in self._files.values():
            for f in files:
                for m in f.tokens:
                    tokens.setdefault(_token_key(m), m)  # a replaced dead token still has files
        for job, files in self._files.items():
            if keys is None or _job_key(job) in keys:
                out[_job_key(job)] = {
                    "job": job,
                    "files": len(files),
                    "fingerprint": self._jobs.get(job, ""),
                }
            for f in files:
                if keys is None or _file_key(f) in keys:
                    out[_file_key(f)] = {
                        "job": f.job,
                        "index": f.index,
                        "spec": attrs.asdict(f.spec),
                        "source": _token_key(f.source) if f.source else None,
                        "destination": _token_key(f.destination) if f.destination else None,
                        "state": f.state.value,
                        "attempts": f.attempts,
                    }
        for key, m in tokens.items():
            if keys is None or key in keys:
                out[key] = {
                    field: getattr(m, field)
                    for field in (
                        "id",
                        "key",
                        "serial",
                        "issuer",
                        "scope",
                        "audience",
                        "subject_token",
                        "access_token",
                        "refresh_token",
                        "backup_refresh_token",
                        "jti",
                        "exp",
                        "ready",
                        "dead",
                        "attempts",
                    )
                }
        return out

    def restore_rows(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        """Load the state :meth:`rows` wrote (before :meth:`run`); :meth:`run` resumes it."""
        by_key: dict[str, ManagedToken] = {}
        for key, row in rows.items():
            if key.startswith("token:"):
                m = ManagedToken(**{k: v for k, v in row.items() if k != "exp"})
                m.exp = float(row["exp"])
                by_key[key] = m
                self._serial = max(self._serial, m.serial + 1)
                if m.dead is None:
                    self._tokens[m.key] = m  # a new submission of the same token shares it
        files: dict[str, list[_File]] = {}
        for key, row in rows.items():
            if key.startswith("file:"):
                src, dst = row["source"], row["destination"]
                f = _File(
                    job=row["job"],
                    index=int(row["index"]),
                    spec=TransferFile(**row["spec"]),
                    source=by_key[src] if src is not None else None,
                    destination=by_key[dst] if dst is not None else None,
                    state=FileState(row["state"]),
                    attempts=int(row["attempts"]),
                )
                files.setdefault(f.job, []).append(f)
        for key, row in rows.items():
            if key.startswith("job:"):
                job = row["job"]
                # a store written before fingerprints: no submission matches it (409)
                self._jobs[job] = str(row.get("fingerprint", ""))
                self._files[job] = sorted(files.get(job, []), key=lambda f: f.index)
                pending = [f for f in self._files[job] if f.state not in _FINISHED]
                for f in pending:
                    for m in f.tokens:
                        m.users.add(f)
                if pending:
                    self._resume.append(job)
        self._resume.sort()

    def _resume_restored(self, nursery: trio.Nursery) -> None:
        """Resume what :meth:`restore_rows` loaded: manage its tokens, prepare and queue its
        unfinished files (a copy that was running died with the process: submitted again)."""
        for job in self._resume:
            files = [f for f in self._files[job] if f.state not in _FINISHED]
            for f in files:
                if f.state is FileState.ACTIVE:
                    self._state(
                        f,
                        FileState.SUBMITTED,
                        reason="the transfer service restarted during the copy",
                    )
                for m in f.tokens:
                    if m.cancel is None:
                        m.cancel = trio.CancelScope()
                        nursery.start_soon(self._manage, m, m.cancel)
            nursery.start_soon(self._prepare, files)
        self._resume = []


def _fingerprint(claims: Mapping[str, Any], files: Sequence[TransferFile]) -> str:
    """Who submitted which files: SHA-256 of the FTS token's ``iss`` and ``sub`` and the files,
    as canonical JSON (stable across processes: it is stored with the job)."""
    blob = json.dumps(
        [claims.get("iss"), claims.get("sub"), [attrs.asdict(f) for f in files]],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _job_key(job: str) -> str:
    return f"job:{job}"


def _file_key(f: _File) -> str:
    return f"file:{f.job}/{f.index}"


def _token_key(m: ManagedToken) -> str:
    return f"token:{m.serial}"
