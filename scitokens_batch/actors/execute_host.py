"""An execute host: startd (slots) and one starter per running job.

Each job gets a sandbox whose ``.condor_creds/<service>.use`` holds its access token (I12; here
an in-memory value, in live mode a real file). Renewed tokens pushed by the queue manager land
in the host's credential store; every ``sandbox_refresh`` the starter copies the newest one into
the sandbox (I13, ``SEC_CREDENTIAL_REFRESH``). The job runs its steps: compute steps take their
time, data steps ask a data server with the token found in the sandbox — read again before each
access (``reread``, correct) or kept from the start (``copy-at-start``, pitfall P16).

The sandbox itself is a seam (:class:`Sandbox`): in virtual time a value in memory
(:class:`MemorySandbox`), in live mode a real directory with ``.condor_creds/<service>.use``
written 0600 and atomically, where an exec step (a real command) finds its token by WLCG
discovery. The starter reads the token through the same seam before each access.

A token that cannot be staged (the sandbox cannot be made, a full disk, a file in the way, a
name that would lead outside the sandbox) fails that job with the reason, as HTCondor's starter
does; it never takes the host, or the other jobs on it, down.

A denied access fails the job with that reason. An unreachable data server is retried
(``ACCESS_RETRIES`` times, ``ACCESS_RETRY_DELAY`` apart, as xrdcp and gfal do) before the job
fails.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from .._vtime import sleep
from ..metrics import Recorder
from ..protocol import (
    AccessStep,
    Ack,
    ClaimAlive,
    ComputeStep,
    CredentialUpdate,
    DataRequest,
    DataResponse,
    ExecStep,
    JobFinished,
    Message,
    StartJob,
)
from ..tokens import Operation, claimed_identity
from ..transport import Transport, Unreachable
from ._common import Clock, Logger

__all__ = [
    "ACCESS_RETRIES",
    "ACCESS_RETRY_DELAY",
    "ExecuteHost",
    "MemorySandbox",
    "Sandbox",
    "SandboxFactory",
]

#: A data server that does not answer is tried this many more times before the job fails.
ACCESS_RETRIES = 5
#: Seconds between those tries.
ACCESS_RETRY_DELAY = 30.0


class Sandbox(Protocol):
    """A job's sandbox, as far as tokens and commands go."""

    def stage(self, token: str, *, jti: str, exp: float) -> None:
        """Put ``token`` where the job finds it (replacing what was there, atomically)."""
        ...

    def token(self) -> str | None:
        """The token the job finds now (None: none, or unreadable)."""
        ...

    async def execute(self, step: ExecStep) -> tuple[int, str]:
        """Run a real command in the sandbox: (exit code, reason when it failed)."""
        ...

    def remove(self) -> None:
        """The job is over: clean up."""
        ...


#: Makes the sandbox of a job: ``(job id, user, service) -> Sandbox``.
SandboxFactory = Callable[[int, str, str], Sandbox]


@attrs.define
class MemorySandbox:
    """Virtual time: the staged token is a value; commands cannot run."""

    job: int
    _token: str | None = attrs.field(default=None, repr=False, alias="_token")

    def stage(self, token: str, *, jti: str, exp: float) -> None:
        self._token = token

    def token(self) -> str | None:
        return self._token

    async def execute(self, step: ExecStep) -> tuple[int, str]:
        # The loader refuses exec steps without --live; reaching this is a wiring bug.
        raise RuntimeError(f"job {self.job}: exec steps only run in live mode")

    def remove(self) -> None:
        self._token = None


def memory_sandboxes(job: int, user: str, service: str) -> Sandbox:
    """The virtual-time :data:`SandboxFactory`."""
    return MemorySandbox(job)


@attrs.define
class _BrokenSandbox:
    """The sandbox could not be made: every staging fails with why (the job then fails)."""

    why: str

    def stage(self, token: str, *, jti: str, exp: float) -> None:
        raise OSError(self.why)

    def token(self) -> str | None:
        return None

    async def execute(self, step: ExecStep) -> tuple[int, str]:
        return 1, self.why

    def remove(self) -> None:
        pass


class _StagingFailed(Exception):
    """A re-staging failed; the job ends with this reason."""


def _why(exc: BaseException) -> str:
    """A short reason for a failed staging (``strerror`` and the file, never a token)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


@attrs.define
class _StagedToken:
    token: str = attrs.field(repr=False)
    jti: str
    exp: float


@attrs.define
class _Running:
    start: StartJob
    sandbox: _StagedToken
    box: Sandbox
    scope: trio.CancelScope
    started: float
    cpu: float = 0.0


@attrs.define(kw_only=True)
class ExecuteHost:
    """One execute host.

    Args:
        name: host name (``node-3``).
        slots: how many jobs it runs at once.
        sandbox_refresh: seconds between sandbox re-stagings (0: never).
        clock: this host's clock (true time + skew; a ``clock_step`` changes the skew).
    """

    name: str
    slots: int
    sandbox_refresh: float
    queue_manager: str = "queue_manager"
    transport: Transport
    clock: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    sandboxes: SandboxFactory = memory_sandboxes
    #: data servers that record nothing themselves (XRootD in live mode): this host records
    #: ``use``/``reject`` events for them, from the answers it gets (reason ``unspecified``
    #: when the server does not say why)
    observed_servers: frozenset[str] = frozenset()
    _creds: dict[tuple[str, str], _StagedToken] = attrs.field(factory=dict, alias="_creds")
    _running: dict[int, _Running] = attrs.field(factory=dict, alias="_running")
    _nursery: trio.Nursery | None = attrs.field(default=None, alias="_nursery")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (a crash cancels this and every job on the host)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def handle(self, message: Message) -> Message:
        """Start jobs; take renewed credentials; confirm the claims of running jobs."""
        if isinstance(message, StartJob):
            return self._start(message)
        if isinstance(message, ClaimAlive):  # the claims of those jobs that still run here
            return ClaimAlive(jobs=tuple(j for j in message.jobs if j in self._running))
        if isinstance(message, CredentialUpdate):
            key = (message.user, message.service)
            held = self._creds.get(key)
            if held is None or message.exp > held.exp:
                self._creds[key] = _StagedToken(message.token, message.jti, message.exp)
            return Ack()
        raise TypeError(f"execute host {self.name}: unexpected message {type(message).__name__}")

    def _start(self, msg: StartJob) -> Ack:
        if self._nursery is None or len(self._running) >= self.slots:
            return Ack(ok=False, detail="no free slot")
        key = (msg.user, msg.service)
        staged = _StagedToken(msg.token, msg.jti, msg.exp)
        held = self._creds.get(key)
        if held is None or staged.exp > held.exp:
            self._creds[key] = staged
        else:
            staged = held
        scope = trio.CancelScope()
        box: Sandbox
        try:
            box = self.sandboxes(msg.job, msg.user, msg.service)
        except (OSError, ValueError) as exc:
            # The job fails in its starter (with this reason), like any other staging failure.
            box = _BrokenSandbox(f"sandbox: {_why(exc)}")
        self._running[msg.job] = _Running(msg, staged, box, scope, trio.current_time())
        self._nursery.start_soon(self._starter, msg.job)
        return Ack()

    def _stage(self, run: _Running, token: _StagedToken) -> None:
        run.sandbox = token
        run.box.stage(token.token, jti=token.jti, exp=token.exp)
        # host_time: this host's (skewed) clock when the sandbox file was written, as its mtime
        # would show it; the event's t stays true time.
        self.recorder.record(
            self.name,
            "stage",
            job=run.start.job,
            service=run.start.service,
            jti=token.jti,
            exp=token.exp,
            host_time=round(self.clock(), 6),
        )

    async def _starter(self, job_id: int) -> None:
        run = self._running[job_id]
        exit_code, reason = 0, ""
        with run.scope:
            try:
                self._stage(run, run.sandbox)
                async with trio.open_nursery() as nursery:
                    if self.sandbox_refresh > 0:
                        nursery.start_soon(self._refresher, run)
                    exit_code, reason = await self._execute(run)
                    nursery.cancel_scope.cancel()
            except* (OSError, ValueError, _StagingFailed) as group:
                # One job's credential could not be staged: that job fails (HTCondor's starter
                # puts it on hold); the host and its other jobs go on.
                first = group.exceptions[0]
                why = str(first) if isinstance(first, _StagingFailed) else _why(first)
                exit_code, reason = 1, f"staging the {run.start.service} credential failed: {why}"
                self.log.warning("credential staging failed", job=job_id, why=why)
        with contextlib.suppress(OSError):
            run.box.remove()
        if run.scope.cancelled_caught:
            return  # killed with the host: the queue manager has requeued the job
        del self._running[job_id]
        cpu = run.cpu
        done = JobFinished(
            job=job_id, host=self.name, exit_code=exit_code, reason=reason, cpu_seconds=cpu
        )
        try:
            await self.transport.request(self.name, self.queue_manager, done)
        except Unreachable:
            self.log.warning("job end not reported: queue manager unreachable", job=job_id)

    async def _refresher(self, run: _Running) -> None:
        """I13: every ``sandbox_refresh`` copy the host's newest credential into the sandbox."""
        key = (run.start.user, run.start.service)
        while True:
            await sleep(self.sandbox_refresh)
            newest = self._creds.get(key)
            if (
                newest is not None
                and newest.jti != run.sandbox.jti
                and newest.exp > run.sandbox.exp
            ):
                try:
                    self._stage(run, newest)
                except (OSError, ValueError) as exc:
                    raise _StagingFailed(_why(exc)) from None

    async def _execute(self, run: _Running) -> tuple[int, str]:
        program = run.start.program
        at_start = run.box.token()
        for step in program.steps:
            if isinstance(step, ComputeStep):
                await sleep(step.seconds)
                run.cpu += step.seconds  # only what ran: a job that fails early used less
                continue
            if isinstance(step, ExecStep):
                began = trio.current_time()
                code, why = await run.box.execute(step)
                run.cpu += trio.current_time() - began
                if code != 0:
                    return code, why
                continue
            token = run.box.token if program.reread else lambda: at_start
            answer = await self._access(run.start.job, step, token)
            if answer is None:
                return 1, f"{step.server}: unreachable after {ACCESS_RETRIES + 1} tries"
            if not answer.ok:
                verb = "write" if step.write else "read"
                why = answer.reason.value if answer.reason is not None else answer.detail
                return 1, f"{verb} {step.path}: {answer.status} {why}"
        return 0, ""

    async def _access(
        self, job: int, step: AccessStep, token: Callable[[], str | None]
    ) -> DataResponse | None:
        """One access, retried while the server is unreachable; each try presents the token
        found at that moment (a retry 30 s later must not resend a token that has since been
        renewed and may have expired)."""
        # A PUT is a PUT: the data server decides whether it creates or overwrites.
        op = Operation.CREATE if step.write else Operation.READ
        for attempt in range(ACCESS_RETRIES + 1):
            request = DataRequest(op=op, path=step.path, size=step.size, token=token(), job=job)
            try:
                answer = await self.transport.request(self.name, step.server, request)
            except Unreachable as exc:
                self.log.info(
                    "data server unreachable",
                    server=step.server,
                    job=job,
                    why=exc.why,
                    detail=exc.detail,
                    attempt=attempt + 1,
                )
                if attempt < ACCESS_RETRIES:
                    await trio.sleep(ACCESS_RETRY_DELAY)
                continue
            assert isinstance(answer, DataResponse)
            if step.server in self.observed_servers:
                self._observe(step.server, request, answer)
            return answer
        return None

    def _observe(self, server: str, request: DataRequest, answer: DataResponse) -> None:
        jti, exp = claimed_identity(request.token)  # unverified: only to say which token
        headroom = None if exp is None else round(exp - self.clock(), 6)
        common = {
            "job": request.job,
            "op": request.op.value,
            "path": request.path,
            "jti": jti,
            "exp": exp,
            "headroom_s": headroom,
            "status": answer.status,
            "observed_by": self.name,
        }
        if answer.ok or answer.status == 404:
            self.recorder.record(server, "use", cached=False, **common)
        else:
            reason = answer.reason.value if answer.reason is not None else "unspecified"
            self.recorder.record(server, "reject", reason=reason, detail=answer.detail, **common)

    # -- faults ------------------------------------------------------------------------------

    def crash(self) -> list[int]:
        """Kill every job here and forget the credential store; returns the killed job ids."""
        killed = sorted(self._running)
        for run in self._running.values():
            run.scope.cancel()
            run.box.remove()
        self._running.clear()
        self._creds.clear()
        return killed

    @property
    def running(self) -> int:
        """Jobs running here now."""
        return len(self._running)
