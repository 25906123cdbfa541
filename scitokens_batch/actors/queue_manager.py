"""The queue manager: schedd (job queue, shadows) and negotiator (matching) in one actor.

Jobs are submitted at their precomputed arrival times. Every ``negotiation_interval`` the
negotiator matches idle jobs, oldest first, to free slots (the host with the most free slots
first, so the pool fills breadth-first). A job with a job ad (an HTCondor submit description)
is matched with the real ClassAd library: its ``requirements`` and the machine's symmetrically,
then the highest ``rank`` first. Identical job ads form one autocluster whose matches against
the (static) machine ads are computed once, so a cycle costs O(idle jobs), not O(jobs x slots);
a job whose autocluster matches no machine is recorded once as ``unmatched`` and stays idle.

Starting a matched job needs a usable access token from the token manager within
``credential_wait`` (I14 ``CREDD_POLLING_TIMEOUT``); without one the job is held with code 4
(CorruptedCredential), and a periodic release puts it back in the queue after
``release_held_after``.

Claims (live mode, ``alive_interval`` > 0): every ``alive_interval`` the schedd sends each
execute host running its jobs a :class:`~scitokens_batch.protocol.ClaimAlive` naming them
(HTCondor's keep-alive, ``ALIVE_INTERVAL``); the host answers with those it still runs. A job
whose claim no answer confirmed for ``job_lease`` seconds (``JobLeaseDuration``: its host died,
or restarted and knows nothing of it) is evicted and goes back to idle, as HTCondor's shadow
gives up reconnecting when the lease expires: the same ``evicted`` event the virtual-time
``execute_host_crash`` gives at once (there the world tells :meth:`QueueManager.host_down`).

Renewed tokens that the token manager pushes are forwarded to every execute host running a job
of that user and service; the starters there copy them into the sandboxes (I13).

The job lifecycle itself is :class:`~scitokens_batch.protocol.JobLifecycle`: this actor feeds it
events and never assigns a state.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence

import attrs
import classad2
import trio

from .._vtime import sleep_until
from ..metrics import Recorder
from ..protocol import (
    Ack,
    ClaimAlive,
    CredentialRequest,
    CredentialResponse,
    CredentialUpdate,
    Evict,
    Execute,
    Hold,
    HoldCode,
    JobFinished,
    JobLifecycle,
    JobProgram,
    JobState,
    Match,
    Message,
    Release,
    StartJob,
    Terminate,
)
from ..transport import Transport, Unreachable
from ._common import Clock, Logger

__all__ = ["JobAd", "QueueManager", "Submission", "machine_ad"]


@attrs.frozen(kw_only=True, cache_hash=True)  # hashed once: the autocluster key of every cycle
class JobAd:
    """What the negotiator matches on (HTCondor's job ClassAd, the parts we use).

    Equal job ads form one autocluster. Expressions are ClassAd text.

    Attributes:
        requirements: the job's ``requirements``.
        rank: the job's ``rank`` (higher is better; non-numbers count as 0).
        request_cpus: ``RequestCpus``.
        request_memory: ``RequestMemory`` (MB).
        attributes: other attributes (``+Name = value``), as ClassAd text.
    """

    requirements: str = "true"
    rank: str = "0"
    request_cpus: int = 1
    request_memory: int = 1
    attributes: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class Submission:
    """A job to submit at ``at`` (seconds since the scenario start).

    ``ad`` is None for a TOML workload: such jobs match any slot, as before matchmaking.
    """

    job: int
    at: float
    workload: str
    user: str
    service: str
    #: Resolves the job's program. Deterministic (the same program on every call), and called
    #: when the job starts: a 100,000-job day does not hold ten million resolved steps from the
    #: first second on.
    plan: Callable[[], JobProgram] = attrs.field(repr=False, eq=False)
    ad: JobAd | None = None

    @property
    def program(self) -> JobProgram:
        """The job's program (resolved on each call; see ``plan``)."""
        return self.plan()


#: Memory of a slot when the scenario's machine_ad does not say (MB; HTCondor's usual 2 GB/core).
DEFAULT_SLOT_MEMORY = 2048


def machine_ad(
    name: str, slots: int, attributes: dict[str, str | int | float | bool]
) -> dict[str, str | int | float | bool]:
    """A host's machine ad: ``Name``, ``Cpus`` (its slots), ``Memory`` and the scenario's
    attributes (which may override ``Cpus`` and ``Memory``)."""
    return {"Name": name, "Cpus": slots, "Memory": DEFAULT_SLOT_MEMORY * slots, **attributes}


def _classad(attributes: dict[str, str | int | float | bool]) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    for key, value in attributes.items():
        # Strings are values ("AlmaLinux9"), except a START/Requirements expression.
        if key in ("Requirements", "START") and isinstance(value, str):
            ad[key] = classad2.ExprTree(value)
        else:
            ad[key] = value
    return ad


def _job_classad(ad: JobAd) -> classad2.ClassAd:
    job = classad2.ClassAd()
    for key, text in ad.attributes:
        job[key] = classad2.ExprTree(text)
    job["RequestCpus"] = ad.request_cpus
    job["RequestMemory"] = ad.request_memory
    # condor_submit adds the resource clauses to the user's requirements.
    job["Requirements"] = classad2.ExprTree(
        f"({ad.requirements}) && (TARGET.Cpus >= MY.RequestCpus) "
        "&& (TARGET.Memory >= MY.RequestMemory)"
    )
    job["Rank"] = classad2.ExprTree(ad.rank)
    return job


def _evaluate(expr: object, mine: classad2.ClassAd, other: classad2.ClassAd) -> object:
    """``expr`` of ``mine`` against ``other``: an unqualified name is looked up in MY first and
    then in TARGET, as HTCondor's negotiator does (classad2 alone looks only in MY)."""
    if not isinstance(expr, classad2.ExprTree):
        return expr
    scope = classad2.ClassAd()
    scope.update(other)
    scope.update(mine)
    return expr.eval(scope, other)


def _match_rank(job: classad2.ClassAd, machine: classad2.ClassAd) -> float | None:
    """The job's rank of ``machine`` when the two match symmetrically, else None."""
    if _evaluate(job.get("Requirements"), job, machine) is not True:
        return None
    start = machine.get("START", machine.get("Requirements", True))
    if _evaluate(start, machine, job) is not True:
        return None
    rank = _evaluate(job.get("Rank"), job, machine)
    return float(rank) if isinstance(rank, int | float) and not isinstance(rank, bool) else 0.0


@attrs.define
class _Job:
    sub: Submission
    life: JobLifecycle
    started_at: float = 0.0  # trio time when it last started running


@attrs.define
class _Host:
    name: str
    slots: int
    free: list[int]
    up: bool = True
    #: position in the pool's host order (the negotiator's tie-break)
    index: int = 0


@attrs.define(kw_only=True)
class QueueManager:
    """Schedd + negotiator.

    Args:
        submissions: every job of the scenario, in submit order.
        hosts: execute hosts and their slot counts, in name order.
        negotiation_interval: seconds between matchmaking cycles.
        credential_wait: how long a start waits for a usable token before holding (code 4).
        release_held_after: periodic release of credential holds (0: never).
        alive_interval: seconds between claim keep-alives (0: none; virtual time, where an
            ``execute_host_crash`` calls :meth:`host_down`).
        job_lease: evict a running job whose claim was not confirmed for this long.
    """

    name: str = "queue_manager"
    token_manager: str = "token_manager"
    submissions: Sequence[Submission]
    hosts: Sequence[tuple[str, int]]
    negotiation_interval: float
    credential_wait: float
    release_held_after: float
    transport: Transport
    now: Clock
    rng: random.Random
    recorder: Recorder
    log: Logger
    #: host name -> machine ad attributes (:func:`machine_ad`); a host not listed gets the
    #: default ad. Only jobs with a job ad are matched against them.
    machine_ads: dict[str, dict[str, str | int | float | bool]] = attrs.field(factory=dict)
    _jobs: dict[int, _Job] = attrs.field(factory=dict, alias="_jobs")
    _idle: dict[int, None] = attrs.field(factory=dict, alias="_idle")  # insertion-ordered set
    _held: dict[int, None] = attrs.field(factory=dict, alias="_held")  # held with a credential code
    _hosts: dict[str, _Host] = attrs.field(factory=dict, alias="_hosts")
    _nursery: trio.Nursery | None = attrs.field(default=None, alias="_nursery")
    _t0: float = attrs.field(default=0.0, alias="_t0")
    #: autocluster -> the hosts it matches, best rank first (machine ads never change)
    _matches: dict[JobAd, list[tuple[float, str]]] = attrs.field(factory=dict, alias="_matches")
    _machines: dict[str, classad2.ClassAd] = attrs.field(factory=dict, alias="_machines")
    _unmatched: set[int] = attrs.field(factory=set, alias="_unmatched")
    alive_interval: float = 0.0
    job_lease: float = 2400.0
    #: running job -> trio time its claim was last confirmed (only with ``alive_interval``)
    _confirmed: dict[int, float] = attrs.field(factory=dict, alias="_confirmed")
    #: (-free slots, host index) of hosts with free slots, stale entries dropped lazily: the
    #: host with most free slots, first in pool order among equals, in O(log hosts), not
    #: O(hosts) per match (a 20,000-slot pool matches 100,000 jobs a day)
    _by_free: list[tuple[int, int]] = attrs.field(factory=list, alias="_by_free")
    _host_list: list[_Host] = attrs.field(factory=list, alias="_host_list")
    #: (user, service) -> jobs that started running with that credential (a superset of those
    #: running now: finished ones are dropped when next looked at)
    _started: dict[tuple[str, str], dict[int, None]] = attrs.field(factory=dict, alias="_started")

    def __attrs_post_init__(self) -> None:
        for i, (name, slots) in enumerate(self.hosts):
            host = self._hosts[name] = _Host(name, slots, list(range(1, slots + 1)), index=i)
            self._host_list.append(host)
            self._free_changed(host)

    def _free_changed(self, host: _Host) -> None:
        """Index ``host``'s new count of free slots (call after every change of it)."""
        if host.up and host.free:
            heapq.heappush(self._by_free, (-len(host.free), host.index))

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Submit jobs on schedule and negotiate every ``negotiation_interval``.

        One loop does both, so the rule for a submission at the very instant of a cycle is
        fixed by construction (it takes part in that cycle) rather than by which of two tasks
        trio happens to wake first.
        """
        self._t0 = trio.current_time()
        pending = iter(self.submissions)
        sub = next(pending, None)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.alive_interval > 0:
                nursery.start_soon(self._keep_claims_alive)
            task_status.started()
            cycle = 0
            while True:
                next_cycle = self._t0 + cycle * self.negotiation_interval
                while sub is not None and self._t0 + sub.at <= next_cycle:
                    await sleep_until(self._t0 + sub.at)
                    self._submit(sub)
                    sub = next(pending, None)
                await sleep_until(next_cycle)
                self._release_held()
                self._negotiate()
                cycle += 1

    def _submit(self, sub: Submission) -> None:
        life = JobLifecycle(sub.job, now=trio.current_time())
        self._jobs[sub.job] = _Job(sub, life)
        self._idle[sub.job] = None
        self.recorder.record(self.name, "submit", job=sub.job, workload=sub.workload, user=sub.user)

    def _negotiate(self) -> None:
        assert self._nursery is not None
        full: set[JobAd] = set()  # autoclusters that found no free host in this cycle
        for job_id in list(self._idle):
            ad = self._jobs[job_id].sub.ad
            if ad is None:
                host = self._best_host()
                if host is None:
                    return  # no free slot anywhere: no later job can start either
            else:
                matches = self._matches.get(ad)
                if matches is None:
                    matches = self._matches[ad] = self._autocluster(ad)
                if not matches:
                    if job_id not in self._unmatched:  # never matchable: say so once a job
                        self._unmatched.add(job_id)
                        self.recorder.record(self.name, "unmatched", job=job_id)
                    continue
                if ad in full:
                    continue
                host = self._best_matching_host(matches)
                if host is None:
                    full.add(ad)
                    continue
            slot = host.free.pop(0)
            self._free_changed(host)
            del self._idle[job_id]
            job = self._jobs[job_id]
            job.life.process(Match(host=host.name, slot=slot), now=trio.current_time())
            self._nursery.start_soon(self._activate, job, host, slot)

    def _best_matching_host(self, matches: list[tuple[float, str]]) -> _Host | None:
        """The free host of highest rank among ``matches`` (most free slots among equals)."""
        best: _Host | None = None
        best_rank = 0.0
        for rank, name in matches:
            if best is not None and rank < best_rank:
                break  # sorted by rank: nothing better follows
            h = self._hosts[name]
            if h.up and h.free and (best is None or len(h.free) > len(best.free)):
                best, best_rank = h, rank
        return best

    def _autocluster(self, ad: JobAd) -> list[tuple[float, str]]:
        """Every host ``ad`` matches with its rank, best first (then by name)."""
        job = _job_classad(ad)
        found = []
        for name, slots in self.hosts:
            machine = self._machines.get(name)
            if machine is None:
                attributes = self.machine_ads.get(name) or machine_ad(name, slots, {})
                machine = self._machines[name] = _classad(attributes)
            rank = _match_rank(job, machine)
            if rank is not None:
                found.append((rank, name))
        found.sort(key=lambda m: (-m[0], m[1]))
        return found

    def _best_host(self) -> _Host | None:
        """The up host with most free slots, the first in pool order among equals."""
        heap = self._by_free
        while heap:
            negative_free, index = heap[0]
            h = self._host_list[index]
            if h.up and len(h.free) == -negative_free:
                return h
            heapq.heappop(heap)  # stale: the host's count changed since (a newer entry exists)
        return None

    def _release_held(self) -> None:
        if self.release_held_after <= 0:
            return
        now = trio.current_time()
        # Only credential holds are released (periodic_release of hold code 4); the dict holds
        # exactly those, so a cycle costs O(held), not O(jobs).
        for job_id in list(self._held):
            job = self._jobs[job_id]
            if now - job.life.entered_at >= self.release_held_after:
                job.life.process(Release(reason="periodic release of a credential hold"), now=now)
                del self._held[job_id]
                self._idle[job_id] = None
                self.recorder.record(self.name, "released", job=job_id, reason="periodic_release")

    # -- starting a job ----------------------------------------------------------------------

    async def _credential(self, sub: Submission) -> CredentialResponse:
        """A usable token within ``credential_wait``, asking again while the manager is down."""
        deadline = trio.current_time() + self.credential_wait
        while True:
            request = CredentialRequest(
                user=sub.user, service=sub.service, wait=max(0.0, deadline - trio.current_time())
            )
            try:
                answer = await self.transport.request(self.name, self.token_manager, request)
            except Unreachable:
                if trio.current_time() >= deadline:
                    return CredentialResponse(token=None)
                await trio.sleep(min(1.0, deadline - trio.current_time()))
                continue
            assert isinstance(answer, CredentialResponse)
            return answer

    async def _activate(self, job: _Job, host: _Host, slot: int) -> None:
        sub = job.sub
        cred = await self._credential(sub)
        now = trio.current_time()
        if cred.token is None or cred.jti is None or cred.exp is None:
            self._free(host, slot)
            job.life.process(
                Hold(code=HoldCode.CORRUPTED_CREDENTIAL, reason="no usable credential"), now=now
            )
            self._held[sub.job] = None
            self.recorder.record(
                self.name,
                "held",
                job=sub.job,
                code=int(HoldCode.CORRUPTED_CREDENTIAL),
                reason=f"no usable {sub.service} credential within {self.credential_wait:g} s",
            )
            return
        start = StartJob(
            job=sub.job,
            slot=slot,
            user=sub.user,
            service=sub.service,
            token=cred.token,
            jti=cred.jti,
            exp=cred.exp,
            program=sub.program,
        )
        try:
            ack = await self.transport.request(self.name, host.name, start)
        except Unreachable:
            ack = Ack(ok=False, detail="execute host unreachable")
        now = trio.current_time()
        if not (isinstance(ack, Ack) and ack.ok) or not host.up:
            # The claim could not be activated: back to the queue (the job never ran).
            self._free(host, slot)
            self._idle[sub.job] = None
            return
        job.started_at = now
        if self.alive_interval > 0:
            self._confirmed[sub.job] = now
        job.life.process(Execute(), now=now)
        self._started.setdefault((sub.user, sub.service), {})[sub.job] = None
        self.recorder.record(self.name, "execute", job=sub.job, host=host.name, slot=slot)

    def _free(self, host: _Host, slot: int) -> None:
        if host.up and slot not in host.free:
            host.free.append(slot)
            host.free.sort()
            self._free_changed(host)

    # -- messages ----------------------------------------------------------------------------

    async def handle(self, message: Message) -> Message:
        """Job completions from starters, and renewed tokens from the token manager."""
        if isinstance(message, JobFinished):
            return self._finished(message)
        if isinstance(message, CredentialUpdate):
            await self._forward(message)
            return Ack()
        raise TypeError(f"queue manager: unexpected message {type(message).__name__}")

    def _finished(self, msg: JobFinished) -> Ack:
        job = self._jobs.get(msg.job)
        if job is None or job.life.state is not JobState.RUNNING or job.life.host != msg.host:
            return Ack(ok=False, detail="not running there")  # a stale report after an eviction
        now = trio.current_time()
        slot = job.life.slot
        job.life.process(Terminate(exit_code=msg.exit_code, reason=msg.reason), now=now)
        host = self._hosts[msg.host]
        if slot is not None:
            self._free(host, slot)
        status = "completed" if msg.exit_code == 0 else "failed"
        self.recorder.record(
            self.name,
            "terminated",
            job=msg.job,
            host=msg.host,
            exit_code=msg.exit_code,
            status=status,
            reason=msg.reason,
            cpu_s=round(msg.cpu_seconds, 6),
        )
        return Ack()

    async def _forward(self, update: CredentialUpdate) -> None:
        started = self._started.get((update.user, update.service), {})
        hosts: set[str] = set()
        for job_id in list(started):
            life = self._jobs[job_id].life
            if life.state is not JobState.RUNNING:
                del started[job_id]  # finished, evicted or held since: not coming back here
            elif life.host is not None:
                hosts.add(life.host)
        for host in sorted(hosts):
            # Unreachable: the starter keeps its old token; it may expire there (a visible effect).
            with contextlib.suppress(Unreachable):
                await self.transport.request(self.name, host, update)

    # -- faults ------------------------------------------------------------------------------

    def host_down(self, host_name: str, *, reason: str) -> list[int]:
        """An execute host died: requeue its jobs (their work so far is lost). Returns job ids."""
        host = self._hosts[host_name]
        host.up = False
        host.free = []
        now = trio.current_time()
        evicted = []
        for job in self._running_on(host_name):
            self._evict(job, host_name, reason, now)
            evicted.append(job.sub.job)
        return evicted

    def host_up(self, host_name: str) -> None:
        """An execute host is back with all its slots free."""
        host = self._hosts[host_name]
        host.up = True
        host.free = list(range(1, host.slots + 1))
        self._free_changed(host)

    async def _keep_claims_alive(self) -> None:
        """Every ``alive_interval``: a keep-alive to each host running jobs, then evict the
        jobs whose claim was not confirmed within ``job_lease``."""
        while True:
            await trio.sleep(self.alive_interval)
            by_host: dict[str, list[int]] = {}
            for job_id in self._confirmed:
                life = self._jobs[job_id].life
                if life.state is JobState.RUNNING and life.host is not None:
                    by_host.setdefault(life.host, []).append(job_id)
            async with trio.open_nursery() as nursery:
                for host, jobs in sorted(by_host.items()):
                    nursery.start_soon(self._alive, host, tuple(sorted(jobs)))
            now = trio.current_time()
            for job_id, seen in sorted(self._confirmed.items()):
                job = self._jobs[job_id]
                if job.life.state is not JobState.RUNNING:
                    del self._confirmed[job_id]  # ended, or evicted meanwhile
                elif now - seen >= self.job_lease:
                    del self._confirmed[job_id]
                    self._lease_expired(job, now - seen)

    async def _alive(self, host: str, jobs: tuple[int, ...]) -> None:
        try:
            answer = await self.transport.request(self.name, host, ClaimAlive(jobs=jobs))
        except Unreachable:
            return  # not confirmed: the lease runs on
        if not isinstance(answer, ClaimAlive):
            return
        now = trio.current_time()
        for job_id in answer.jobs:
            if job_id in self._confirmed:
                self._confirmed[job_id] = now

    def _lease_expired(self, job: _Job, unconfirmed: float) -> None:
        """The job's lease ran out: back to idle, its slot free (HTCondor: the shadow stops
        trying to reconnect; the job is rescheduled)."""
        now = trio.current_time()
        host_name, slot = job.life.host, job.life.slot
        reason = (
            f"job lease expired: {host_name} confirmed no claim for {unconfirmed:.0f} s "
            f"(job_lease {self.job_lease:g} s)"
        )
        if host_name is not None and slot is not None:
            self._free(self._hosts[host_name], slot)
        self._evict(job, host_name, reason, now)

    def _evict(self, job: _Job, host_name: str | None, reason: str, now: float) -> None:
        """Back to idle, its work on ``host_name`` so far lost; the ``evicted`` event."""
        job.life.process(Evict(reason=reason), now=now)
        self._idle[job.sub.job] = None
        self.recorder.record(
            self.name,
            "evicted",
            job=job.sub.job,
            host=host_name,
            reason=reason,
            lost_cpu_s=round(now - job.started_at, 6),
        )

    def _running_on(self, host_name: str) -> Iterable[_Job]:
        return [
            j
            for j in self._jobs.values()
            if j.life.state is JobState.RUNNING and j.life.host == host_name
        ]
