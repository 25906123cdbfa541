"""A data server (storage element): namespace, bearer-token authorization, shared bandwidth.

Every access is verified — signature, issuer, audience, time with the server's own clock and
leeway, scope against the per-issuer base path — by :class:`~scitokens_batch.tokens.Verifier`.
When it needs keys, the server fetches the issuer's JWKS through the transport (an outage makes
that fetch fail, pitfall P10). Statuses follow conformance M1-M6: 401 for a missing or unusable
token, 403 when the token may not do this, 404 for an authorized read of a missing file, 201 for
a new file, 200 otherwise. A PUT on an existing file needs overwrite rights (``storage.modify``
or ``write``): ``storage.create`` never overwrites (B7, M4).

A :class:`~scitokens_batch.protocol.ThirdPartyCopy` (the transfer service's WebDAV HTTP-TPC
pull) is served by the *destination*: it checks the destination token for writing the target,
exactly as a PUT (create, or modify when the file exists; the same ``use``/``reject`` events),
then pulls the file from the source with a GET through the transport, presenting the source
token (the source checks it and records the read). The source streams the bytes over its link
and the destination receives them over its own, at once: the copy takes as long as the slower
of the two shares (each link is processor-shared on its own; a stream through both really
moves at the smaller rate, which this approximates by timing the two independently). Tokens
are checked when the copy starts only, as for any transfer (``long-transfer.toml``): a copy
longer than its tokens' lives completes. A refusal at either end is a :class:`DataResponse`
whose ``side`` says which.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, MutableMapping

import attrs
import trio

from ..metrics import Recorder
from ..protocol import (
    DataRequest,
    DataResponse,
    Message,
    ThirdPartyCopy,
)
from ..tokens import (
    NeedKeys,
    Operation,
    Reason,
    Rejection,
    VerifiedToken,
    Verifier,
    claimed_identity,
)
from ..transport import Transport, Unreachable
from ._bandwidth import LinkReset, SharedLink
from ._common import Clock, Logger
from ._jwks import fetch_jwks

__all__ = ["DataServer"]

#: ``op.value`` is a Python-level enum property; a dict lookup is the cheap way (per access).
_OP_NAME: dict[Operation, str] = {op: op.value for op in Operation}
#: The operations the access path tests, as module names (an enum member is a class lookup).
_READ, _STAT, _CREATE = Operation.READ, Operation.STAT, Operation.CREATE


@attrs.frozen
class GroupArea:
    """A storage area granting by ``wlcg.groups`` (StoRM's and dCache's group ACLs).

    Attributes:
        path: the area's root (server path).
        read: groups that may read and stat below it.
        write: groups that may also create, overwrite, delete and make directories.
    """

    path: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def covers(self, path: str) -> bool:
        """``path`` is the area's root or below it (whole path components)."""
        root = self.path.rstrip("/")
        return root == "" or path == root or path.startswith(root + "/")

    def allows(self, groups: Iterable[str], op: Operation) -> bool:
        """One of ``groups`` may do ``op`` here (exact group names, as the ACLs list them)."""
        held = set(groups)
        if op is Operation.READ or op is Operation.STAT:
            return not held.isdisjoint(self.read) or not held.isdisjoint(self.write)
        if op in (Operation.CREATE, Operation.MODIFY, Operation.MKDIR):
            return not held.isdisjoint(self.write)
        return False


def area_for(areas: Iterable[GroupArea], path: str) -> GroupArea | None:
    """The area with the longest root covering ``path``; None when none does."""
    best: GroupArea | None = None
    for area in areas:
        if area.covers(path) and (best is None or len(area.path) > len(best.path)):
            best = area
    return best


@attrs.define(kw_only=True)
class DataServer:
    """One storage element.

    Args:
        name: actor name.
        verifier: trusted issuers (with base paths), audiences, leeway, key and token caches.
        issuer_actors: ``iss`` URL -> issuer actor name, to fetch JWKS from.
        files: the namespace: server path -> size in bytes (in live mode a view of a real
            directory tree).
        link: the shared bandwidth.
        clock: this server's clock (true time + skew).
        true_now: the true clock, only for the headroom figure in the events.
        areas: storage areas granting by ``wlcg.groups`` where the token's storage scopes do
            not (the longest matching area decides; a storage scope still grants by itself).
    """

    name: str
    verifier: Verifier
    issuer_actors: Mapping[str, str]
    files: MutableMapping[str, int]
    link: SharedLink
    transport: Transport
    clock: Clock
    true_now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    areas: tuple[GroupArea, ...] = ()
    _fetching: dict[str, trio.Event] = attrs.field(factory=dict, alias="_fetching")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the bandwidth link until cancelled."""
        await self.link.run(task_status=task_status)

    async def handle(self, message: Message) -> Message:
        """Serve one :class:`DataRequest` in virtual time: decide, then move the bytes over the
        shared link and update the namespace; or a :class:`ThirdPartyCopy` (see
        :meth:`third_party_copy`)."""
        if isinstance(message, ThirdPartyCopy):
            if message.destination is not None:
                return await self.third_party_push(message)
            return await self.third_party_copy(message)
        if not isinstance(message, DataRequest):
            raise TypeError(f"data server {self.name}: unexpected message {type(message).__name__}")
        answer = await self.admit(message)
        if not answer.ok:
            return answer
        try:
            await self.link.transfer(answer.size)
        except LinkReset:
            raise Unreachable(f"job {message.job}", self.name, "down") from None  # reset
        if message.op is not Operation.READ and message.op is not Operation.STAT:
            if message.op is Operation.CREATE:
                committed = self.commit_write(message, answer)
                if not committed.ok:
                    return committed
                answer = committed
            self.files[message.path] = answer.size
        return answer

    def commit_write(self, message: DataRequest, answer: DataResponse) -> DataResponse:
        """Decide create-vs-overwrite again when the bytes are in (the commit), as live mode's
        store does with ``linkat``: a file that appeared at the path while this new file was
        coming in may only be replaced by a writer allowed to overwrite (B7, M4).

        Returns:
            ``answer`` when nothing appeared; an overwrite (200) when the token may modify;
            else the refusal (403, recorded as a ``reject`` event).
        """
        if answer.status != 201 or message.path not in self.files:
            return answer
        if self.may_overwrite(message):
            return attrs.evolve(answer, status=200)
        return self.refuse_overwrite(message)

    def may_overwrite(self, message: DataRequest) -> bool:
        """The token of an admitted upload may also replace a file there (``storage.modify``);
        no event is recorded."""
        verdict = self.verifier.authorize(
            message.token, now=self.clock(), op=Operation.MODIFY, path=message.path
        )
        if isinstance(verdict, VerifiedToken):
            return True
        return bool(self.areas) and (
            self._by_groups(message.token, Operation.MODIFY, message.path) is not None
        )

    def refuse_overwrite(self, message: DataRequest) -> DataResponse:
        """A create-only upload found a file in place at commit time: 403, recorded."""
        rejection = Rejection(
            Reason.INSUFFICIENT_SCOPE,
            f"{message.path} was created by another upload meanwhile; overwriting needs "
            "storage.modify",
        )
        self._record_reject(message, Operation.MODIFY, rejection)
        return DataResponse(status=403, reason=rejection.reason, detail=rejection.detail)

    async def third_party_copy(self, message: ThirdPartyCopy) -> DataResponse:
        """Pull one file from ``message.source`` into ``message.destination_path`` (HTTP-TPC).

        Returns:
            The destination's answer to the write (201 new file, 200 overwrite) once the bytes
            are through; or the refusal of either end, with ``side`` set: the destination's
            (its token may not write there), or the source's (its token may not read, the file
            is not there, 502 when the source cannot be reached or fails mid-copy).

        Raises:
            Unreachable: this server was restarted while the bytes were coming in (the
                client's connection breaks, as for a plain transfer).
        """
        write = DataRequest(
            op=Operation.CREATE,
            path=message.destination_path,
            size=message.size,
            token=message.destination_token,
            transfer=message.transfer,
        )
        answer = await self.admit(write)
        if not answer.ok:
            return attrs.evolve(answer, side="destination")
        pull = DataRequest(
            op=Operation.READ,
            path=message.source_path,
            size=message.size,
            token=message.source_token,
            transfer=message.transfer,
        )
        got = await self._copy_alongside(message.source, pull, answer.size, "source")
        if not got.ok:
            return attrs.evolve(got, side="source")
        answer = self.commit_write(write, answer)
        if not answer.ok:
            return attrs.evolve(answer, side="destination")
        self.files[message.destination_path] = answer.size
        return answer

    async def third_party_push(self, message: ThirdPartyCopy) -> DataResponse:
        """Push one file from here to ``message.destination`` (HTTP-TPC push mode).

        Returns:
            The destination's answer to the write once the bytes are through; or the refusal
            of either end, with ``side`` set: the source's (here: its token may not read, the
            file is not there), or the destination's (its token may not write there, 502 when
            it cannot be reached).

        Raises:
            Unreachable: this server was restarted while the bytes were going out.
        """
        destination = message.destination
        assert destination is not None
        read = DataRequest(
            op=Operation.READ,
            path=message.source_path,
            size=message.size,
            token=message.source_token,
            transfer=message.transfer,
        )
        answer = await self.admit(read)
        if not answer.ok:
            return attrs.evolve(answer, side="source")
        write = DataRequest(
            op=Operation.CREATE,
            path=message.destination_path,
            size=answer.size,
            token=message.destination_token,
            transfer=message.transfer,
        )
        got = await self._copy_alongside(destination, write, answer.size, "destination")
        return got if got.ok else attrs.evolve(got, side="destination")

    async def _copy_alongside(
        self, peer: str, request: DataRequest, size: int, role: str
    ) -> DataResponse:
        """Move ``size`` bytes over this server's link while ``peer``, the other end of a
        third-party copy (its ``role``: ``"source"`` or ``"destination"``), serves
        ``request``; either side's failure stops the other.

        Returns:
            The peer's answer; a 502 when it cannot be reached.

        Raises:
            Unreachable: this server was restarted while the bytes were moving.
        """
        answers: list[Message] = []
        reset = False
        async with trio.open_nursery() as nursery:

            async def ask_peer() -> None:
                try:
                    got: Message = await self.transport.request(self.name, peer, request)
                except Unreachable as exc:
                    got = DataResponse(
                        status=502, detail=f"{role} {exc.dest} unreachable ({exc.why})"
                    )
                answers.append(got)
                if not (isinstance(got, DataResponse) and got.ok):
                    nursery.cancel_scope.cancel()  # refused: nothing more to move

            nursery.start_soon(ask_peer)
            try:
                await self.link.transfer(size)
            except LinkReset:
                reset = True
                nursery.cancel_scope.cancel()  # the peer's side is abandoned with ours
        if reset:
            raise Unreachable(f"transfer {request.transfer}", self.name, "down")
        (got,) = answers
        if not isinstance(got, DataResponse):
            raise TypeError(f"data server {peer}: unexpected answer {type(got).__name__}")
        return got

    async def admit(self, message: DataRequest) -> DataResponse:
        """Decide one access and record it: the status, and the bytes it may move.

        Live mode's HTTP front end calls this and moves the bytes itself (real files); the
        decision and the events are the same in both modes.
        """
        op = message.op
        path = message.path
        exists = path in self.files
        if op is _CREATE and exists:
            op = Operation.MODIFY  # B7/M4: an upload over an existing file is an overwrite
        verifier = self.verifier
        hits = verifier.cache_hits
        verdict = verifier.authorize(message.token, now=self.clock(), op=op, path=path)
        if isinstance(verdict, NeedKeys):  # the only path that waits: fetch, then decide
            verdict = await self._authorize_with_keys(verdict, message.token, op, path)
        if (
            isinstance(verdict, Rejection)
            and verdict.reason is Reason.INSUFFICIENT_SCOPE
            and self.areas
        ):
            verdict = self._by_groups(message.token, op, path) or verdict
        if isinstance(verdict, Rejection):
            self._record_reject(message, op, verdict)
            return DataResponse(status=verdict.status, reason=verdict.reason, detail=verdict.detail)
        headroom = round(verdict.exp - self.true_now(), 6)
        cached = verifier.cache_hits != hits
        if op is _READ or op is _STAT:
            if not exists and op is _STAT and self._is_dir(path):
                # HEAD/PROPFIND of a directory (WebDAV): found, nothing to move.
                self._record_use(message, op, verdict, headroom, 200, cached)
                return DataResponse(status=200, size=0)
            if not exists:
                # M3: authorized, not found. Counted as a granted access (the token was good).
                self._record_use(message, op, verdict, headroom, 404, cached)
                return DataResponse(status=404, detail="no such file")
            # A read moves what the client asked for, at most the file (a ranged GET).
            stored = self.files[path]
            size = min(message.size, stored) if message.size > 0 else stored
            status = 200
            if op is _STAT:
                size = 0
        else:
            size = message.size
            status = 201 if op is _CREATE else 200
        self._record_use(message, op, verdict, headroom, status, cached)
        return DataResponse(status=status, size=size)

    def _by_groups(self, token: str | None, op: Operation, path: str) -> VerifiedToken | None:
        """The token, when its scopes fell short but its ``wlcg.groups`` may do ``op`` in the
        area deciding ``path`` (a valid token: the scope check ran after it)."""
        area = area_for(self.areas, path)
        if area is None:
            return None
        checked = self.verifier.check(token, now=self.clock())
        if not isinstance(checked, VerifiedToken):
            return None
        groups = checked.claims.get("wlcg.groups")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            return None
        return checked if area.allows(groups, op) else None

    def _is_dir(self, path: str) -> bool:
        """A directory is at ``path``: the store says so (live), or a file is below it."""
        is_dir = getattr(self.files, "is_dir", None)
        if callable(is_dir):
            return bool(is_dir(path))
        prefix = path.rstrip("/") + "/"
        return any(name.startswith(prefix) for name in self.files)

    async def _authorize_with_keys(
        self, need: NeedKeys, token: str | None, op: Operation, path: str
    ) -> VerifiedToken | Rejection:
        await self._fetch_keys(need)
        verdict = self.verifier.authorize(token, now=self.clock(), op=op, path=path)
        if isinstance(verdict, NeedKeys):
            # Still nothing usable after one fetch: the key is not there to be had.
            return Rejection(Reason.UNKNOWN_KEY, f"no usable key for {verdict.issuer!r}")
        return verdict

    async def _fetch_keys(self, need: NeedKeys) -> None:
        await fetch_jwks(
            need,
            owner=self.name,
            verifier=self.verifier,
            issuer_actors=self.issuer_actors,
            transport=self.transport,
            clock=self.clock,
            recorder=self.recorder,
            running=self._fetching,
        )

    def _record_use(
        self,
        msg: DataRequest,
        op: Operation,
        verdict: VerifiedToken,
        headroom: float,
        status: int,
        cached: bool,
    ) -> None:
        fields = {
            "job": msg.job,
            "op": _OP_NAME[op],
            "path": msg.path,
            "jti": verdict.jti,
            "exp": verdict.exp,
            "headroom_s": headroom,
            "status": status,
            "cached": cached,
        }
        if msg.transfer is not None:
            fields["transfer"] = msg.transfer
        self.recorder.record_fields(self.name, "use", fields)

    def _record_reject(self, msg: DataRequest, op: Operation, rejection: Rejection) -> None:
        jti, exp = claimed_identity(msg.token)  # unverified: which token, and how late
        headroom = None if exp is None else round(exp - self.true_now(), 6)
        extra = {} if msg.transfer is None else {"transfer": msg.transfer}
        self.recorder.record(
            self.name,
            "reject",
            job=msg.job,
            op=op.value,
            path=msg.path,
            status=rejection.status,
            reason=rejection.reason.value,
            detail=rejection.detail,
            jti=jti,
            exp=exp,
            headroom_s=headroom,
            **extra,
        )

    # -- faults ------------------------------------------------------------------------------

    def restart(self) -> None:
        """Drop in-flight transfers and every in-memory cache (keys, accepted tokens)."""
        self.link.reset()
        self.verifier.forget()


def namespace(file_sets: Iterable[tuple[str, int, int]]) -> dict[str, int]:
    """Pre-populated files: for each ``(directory, count, size)``, files ``0 .. count-1``."""
    files: dict[str, int] = {}
    for directory, count, size in file_sets:
        base = directory.rstrip("/")
        for i in range(count):
            files[f"{base}/{i}"] = size
    return files
