"""The data manager: Rucio's replication rules, turned into transfer jobs with tokens (L1-L3).

A replication rule copies a dataset (files on a source data server) to a destination data
server, starting at a given time. For each rule the data manager:

1. obtains, by client credentials as its own OAuth client (K3, L3: not by token exchange), a
   token for the transfer service (scope ``fts``, audience = the service's, L1) and per-file
   storage tokens (L2): for the source ``storage.read:<prefix>``, for the destination
   ``storage.modify:<prefix> storage.read:<prefix>``, each with the audience of that storage
   server, where ``<prefix>`` is the dataset's directory as the token sees it (the server adds
   its base path for the issuer, B6);
2. keeps each token while at least ``token_min_lifetime`` (300 s) of it is left (L3), so that
   every file of a dataset, and every job of a rule submitted meanwhile, carries the same one;
3. checks that the issuer granted every scope it asked for (B14: "clients MUST check returned
   scopes"): a narrowed token (B15) would fail at the storage, so the files it was for are not
   submitted, and the rule records why;
4. submits the files in jobs of at most ``bulk`` files, one source and one destination token per
   file (L5).

An issuer that cannot be reached or answers 5xx, and a transfer service that cannot be reached
or answers 503, are retried with ``backoff`` (without end: an outage delays a rule). Any other
refusal of a token request fails the rest of the rule; a transfer job the service refuses fails
that job's files. What happens to the files after submission is the transfer service's business
(its events); the data manager does not poll it.

Events: ``rule_start``, ``rule_submitted``, ``rule_failed`` and ``token_request_failed``
(metrics/_events.py lists their fields).
"""

from __future__ import annotations

import random

import attrs
import trio

from ..metrics import Recorder
from ..protocol import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_NONE,
    GRANT_CLIENT_CREDENTIALS,
    Backoff,
    Message,
    OAuthError,
    TokenRequest,
    TokenResponse,
    TransferAccepted,
    TransferFile,
    TransferRefused,
    TransferSubmit,
)
from ..tokens import peek
from ..transport import Transport, Unreachable
from ._common import Clock, Logger

__all__ = ["DataManager", "Endpoint", "ReplicationRule"]


@attrs.frozen(kw_only=True)
class Endpoint:
    """A storage server as the data manager knows it (a Rucio RSE).

    Attributes:
        server: the data server's actor name.
        audience: the audience its tokens must carry (L2).
        base_path: the server path that the token path ``/`` stands for, for the data
            manager's issuer (B6; Rucio's ``oidc_base_path``).
    """

    server: str
    audience: str
    base_path: str = "/"

    def server_path(self, token_path: str) -> str:
        """The server path of ``token_path``."""
        if self.base_path in ("", "/"):
            return token_path
        return self.base_path.rstrip("/") + token_path


@attrs.frozen(kw_only=True)
class ReplicationRule:
    """Copy a dataset's files from ``source`` to ``destination``, starting at ``start``.

    Attributes:
        name: the rule's name (job ids are ``<name>-<k>``, k = 1, 2, ...).
        start: when the rule is created (absolute seconds of the data manager's clock).
        source: where the dataset is.
        source_path: the dataset's directory, as the token sees it.
        destination: where it is copied to.
        destination_path: the directory of the copies at the destination, as the token sees it.
        files: the file names in the directory, with their sizes, in order.
    """

    name: str
    start: float
    source: Endpoint
    source_path: str
    destination: Endpoint
    destination_path: str
    files: tuple[tuple[str, int], ...]


@attrs.define(kw_only=True)
class _Cached:
    token: str = attrs.field(repr=False)
    exp: float


class _Failed(Exception):
    """A token request refused for good; the message says why (never holds a token)."""


@attrs.define(kw_only=True)
class DataManager:
    """Rucio.

    Args:
        name: actor name.
        issuer: the issuer actor that mints its tokens.
        client_id: its OAuth client id there.
        client_secret: its client secret (None: a public client).
        transfer_service: the transfer service's actor name.
        transfer_audience: the transfer service's audience (L1).
        rules: the replication rules.
        token_min_lifetime: a cached token is handed out only with at least this much left
            (L3: 300 s).
        bulk: at most this many files per transfer job.
        backoff: delays between retries.
        transport, now, rng, recorder, log: injected.
    """

    name: str = "rucio"
    issuer: str
    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    transfer_service: str
    transfer_audience: str
    rules: tuple[ReplicationRule, ...] = ()
    token_min_lifetime: float = 300.0
    bulk: int = 100
    backoff: Backoff
    transport: Transport
    now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    _cache: dict[tuple[str, str], _Cached] = attrs.field(factory=dict, alias="_cache")
    _locks: dict[tuple[str, str], trio.Lock] = attrs.field(factory=dict, alias="_locks")

    def __attrs_post_init__(self) -> None:
        if self.bulk < 1:
            raise ValueError(f"bulk must be >= 1 (got {self.bulk})")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Carry out every rule at its time."""
        async with trio.open_nursery() as nursery:
            for rule in self.rules:
                nursery.start_soon(self._rule, rule)
            task_status.started()
            await trio.sleep_forever()

    async def handle(self, message: Message) -> Message:
        """The data manager takes no requests (rules come from the scenario)."""
        raise TypeError(f"data manager: unexpected message {type(message).__name__}")

    # -- rules -------------------------------------------------------------------------------

    async def _rule(self, rule: ReplicationRule) -> None:
        await trio.sleep(max(0.0, rule.start - self.now()))
        self.recorder.record(
            self.name,
            "rule_start",
            rule=rule.name,
            source=rule.source.server,
            destination=rule.destination.server,
            files=len(rule.files),
        )
        batches = [rule.files[i : i + self.bulk] for i in range(0, len(rule.files), self.bulk)]
        for k, batch in enumerate(batches, start=1):
            job = f"{rule.name}-{k}"
            try:
                await self._submit(rule, job, batch)
            except _Failed as exc:
                # The same request would be refused for the rest: fail the rule's remainder.
                left = sum(len(b) for b in batches[k - 1 :])
                self.recorder.record(
                    self.name, "rule_failed", rule=rule.name, job=None, files=left, reason=str(exc)
                )
                return

    async def _submit(
        self, rule: ReplicationRule, job: str, batch: tuple[tuple[str, int], ...]
    ) -> None:
        """Submit one job, retrying while the transfer service cannot take it.

        Raises:
            _Failed: a token request was refused for good.
        """
        files = tuple(
            TransferFile(
                source=rule.source.server,
                source_path=rule.source.server_path(f"{rule.source_path}/{name}"),
                destination=rule.destination.server,
                destination_path=rule.destination.server_path(f"{rule.destination_path}/{name}"),
                size=size,
            )
            for name, size in batch
        )
        read = f"storage.read:{rule.source_path}"
        write = f"storage.modify:{rule.destination_path} storage.read:{rule.destination_path}"
        attempts = 0
        while True:
            fts = await self._token("fts", self.transfer_audience)
            source = await self._token(read, rule.source.audience)
            destination = await self._token(write, rule.destination.audience)
            request = TransferSubmit(
                job=job,
                files=files,
                source_tokens=(source,) * len(files),
                destination_tokens=(destination,) * len(files),
                fts_token=fts,
            )
            try:
                answer = await self.transport.request(self.name, self.transfer_service, request)
            except Unreachable as exc:
                error = f"transfer service unreachable ({exc.why})"
            else:
                if isinstance(answer, TransferAccepted):
                    self.recorder.record(
                        self.name, "rule_submitted", rule=rule.name, job=job, files=len(files)
                    )
                    return
                if not isinstance(answer, TransferRefused):
                    raise TypeError(f"transfer service: unexpected answer {type(answer).__name__}")
                error = f"{answer.status} {answer.reason}"
                if answer.status < 500:
                    self.recorder.record(
                        self.name,
                        "rule_failed",
                        rule=rule.name,
                        job=job,
                        files=len(files),
                        reason=f"transfer service refused the job: {error}",
                    )
                    return
            attempts += 1
            delay = self.backoff.delay(attempts - 1)
            self.log.info(
                "transfer job not taken; retrying", job=job, error=error, retry_in_s=delay
            )
            await trio.sleep(delay)

    # -- tokens (L1-L3) ----------------------------------------------------------------------

    async def _token(self, scope: str, audience: str) -> str:
        """A token for ``scope`` and ``audience``: the cached one while it has at least
        ``token_min_lifetime`` left (L3), else a new one by client credentials (K3).

        Raises:
            _Failed: the issuer refused the request for good, or granted less than asked (B14).
        """
        key = (scope, audience)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:  # one request per token at a time: rules share the cache
            cached = self._cache.get(key)
            if cached is not None and cached.exp - self.now() >= self.token_min_lifetime:
                return cached.token
            token, exp = await self._request_token(scope, audience)
            self._cache[key] = _Cached(token=token, exp=exp)
            return token

    async def _request_token(self, scope: str, audience: str) -> tuple[str, float]:
        request = TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS,
            client_id=self.client_id,
            client_secret=self.client_secret,
            client_auth=CLIENT_AUTH_NONE if self.client_secret is None else CLIENT_AUTH_BASIC,
            scope=scope,
            audience=audience,
        )
        attempts = 0
        while True:
            try:
                answer = await self.transport.request(self.name, self.issuer, request)
            except Unreachable as exc:
                error = f"issuer unreachable ({exc.why})"
            else:
                if isinstance(answer, TokenResponse):
                    granted = set(answer.scope.split())
                    missing = [s for s in scope.split() if s not in granted]
                    if missing:
                        raise _Failed(
                            f"the issuer granted {answer.scope!r} for {scope!r}: "
                            f"{' '.join(missing)!r} dropped (B15; the client checks the "
                            "returned scopes, B14)"
                        )
                    _, claims = peek(answer.access_token)
                    return answer.access_token, float(claims["exp"])
                if not isinstance(answer, OAuthError):
                    raise TypeError(f"issuer: unexpected answer {type(answer).__name__}")
                error = f"{answer.status} {answer.error}"
                if answer.description:
                    error += f" ({answer.description})"
                if answer.status < 500:
                    self.recorder.record(
                        self.name,
                        "token_request_failed",
                        scope=scope,
                        audience=audience,
                        error=error,
                        attempt=attempts + 1,
                        retry_in_s=None,
                    )
                    raise _Failed(f"token request for {scope!r} refused: {error}")
            attempts += 1
            delay = self.backoff.delay(attempts - 1)
            self.recorder.record(
                self.name,
                "token_request_failed",
                scope=scope,
                audience=audience,
                error=error,
                attempt=attempts,
                retry_in_s=delay,
            )
            await trio.sleep(delay)
