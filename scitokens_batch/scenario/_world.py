"""The world: everything a scenario run owns, built from the spec (no globals anywhere).

It holds the issuers' keys, the network, the clocks, one seeded RNG per actor, the recorder and
the actors, and knows which transport is in use. Only this module and the runners know whether
time is virtual; actors receive clocks and a transport.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import attrs
import structlog
import trio

from ..actors import (
    ClientPolicy,
    Credential,
    DataManager,
    DataServer,
    Endpoint,
    ExecuteHost,
    GroupArea,
    HostClock,
    Issuer,
    JobAd,
    QueueManager,
    RegistrationPolicy,
    ReplicationRule,
    SandboxFactory,
    SharedLink,
    Submission,
    TokenManager,
    TransferService,
    UserPolicy,
    machine_ad,
    namespace,
)
from ..actors._common import new_secret
from ..errors import ScenarioError, ScopeError
from ..metrics import Recorder
from ..protocol import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    AccessStep,
    Backoff,
    ComputeStep,
    ExecStep,
    JobProgram,
)
from ..tokens import (
    Algorithm,
    KeyCachePolicy,
    KeyRing,
    RenewalPolicy,
    SigningKey,
    TrustedIssuer,
    Verifier,
    parse_scope,
    redact_event_dict,
)
from ..transport import InMemoryNetwork, Transport
from ._spec import (
    BurstArrival,
    ClientSpec,
    EveryArrival,
    FixedCompute,
    GrantName,
    IssuerSpec,
    LognormalCompute,
    PoissonArrival,
    ReadStep,
    Scenario,
    SubmitJob,
    TokenUse,
    UniformCompute,
    WorkloadSpec,
    WriteStep,
)
from ._spec import (
    ComputeStep as ComputeStepSpec,
)
from ._spec import (
    ExecStep as ExecStepSpec,
)

__all__ = ["LiveWiring", "World", "client_secret", "derive_rng", "submissions"]


@attrs.frozen(kw_only=True)
class LiveWiring:
    """What differs when the actors run as live services (built by ``scitokens_batch.live``).

    Attributes:
        transport: the HTTP transport every actor of this process talks through.
        sandboxes: execute host name -> the factory of its real sandbox directories.
        files: data server name -> its namespace on disk.
    """

    transport: Transport
    sandboxes: Callable[[str], SandboxFactory]
    files: Callable[[str], MutableMapping[str, int]]
    #: data servers that record no events of their own (XRootD): the execute hosts record
    #: what they saw of each access on the server's behalf
    observed_servers: frozenset[str] = frozenset()
    #: issuer -> client id -> secret: the secrets the live runner drew from the CSPRNG (never
    #: derived from the seed, which anyone holding the scenario file can read)
    client_secrets: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, repr=False)
    #: issuer -> user -> password for the device approval page (the runner's, or the scenario's)
    passwords: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, repr=False)


#: A scenario file's grant names, as the token endpoint knows them.
_GRANT_URNS: Mapping[GrantName, str] = {
    GrantName.REFRESH_TOKEN: GRANT_REFRESH,
    GrantName.CLIENT_CREDENTIALS: GRANT_CLIENT_CREDENTIALS,
    GrantName.TOKEN_EXCHANGE: GRANT_TOKEN_EXCHANGE,
    GrantName.DEVICE_CODE: GRANT_DEVICE_CODE,
    GrantName.AUTHORIZATION_CODE: GRANT_AUTHORIZATION_CODE,
}
#: The token manager's actor name, which is also its client id at every issuer.
_TOKEN_MANAGER = "token_manager"


def derive_rng(seed: int, *names: object) -> random.Random:
    """An independent RNG for one entity, reproducible from the scenario seed and its name.

    String seeds are hashed with SHA-512 by :class:`random.Random`, so two names never share a
    stream and the stream does not depend on the order entities are created or woken in.
    """
    return random.Random("/".join([str(seed), *map(str, names)]))


def _client_policy(client: ClientSpec) -> ClientPolicy:
    return ClientPolicy(
        client_id=client.name,
        secret=client.secret,
        grants=frozenset(_GRANT_URNS[grant] for grant in client.grants),
        scopes=tuple(parse_scope(s) for s in client.scopes),
        audiences=client.audiences,
        access_token_lifetime=client.access_token_lifetime,
        redirect_uris=client.redirect_uris,
    )


def _registration(isp: IssuerSpec) -> RegistrationPolicy | None:
    """The issuer's dynamic registration policy (RFC 7591), or None: off."""
    reg = isp.registration
    if reg is None:
        return None
    return RegistrationPolicy(
        grants=frozenset(_GRANT_URNS[g] for g in reg.grants),
        scopes=tuple(parse_scope(s) for s in reg.scopes),
        max_clients=reg.max_clients,
    )


def issuer_key(alg: Algorithm, seed: int, issuer: str, index: int) -> SigningKey:
    """Virtual time's ``index``-th signing key of ``issuer`` (kid ``<issuer>-<index>``), derived
    from the seed: two runs of one seed sign the same tokens, byte for byte. Live issuers use
    :meth:`SigningKey.generate` (the CSPRNG) instead."""
    material = f"scitokens-batch/issuer-key/{seed}/{issuer}/{index}".encode()
    return SigningKey.derive(alg, material, kid=f"{issuer}-{index}")


def _clients(
    isp: IssuerSpec, seed: int, live: Mapping[str, str] | None = None
) -> dict[str, ClientPolicy]:
    """The issuer's client registry: the scenario's clients, and the token manager.

    The token manager is a confidential client with the refresh and device code grants, unless
    the scenario registers a client of its name. Its secret: in virtual time drawn from its own
    seeded RNG (same seed, same bytes: determinism; anyone with the scenario file can recompute
    it, which is harmless there); in live mode (``live``: client id -> secret, from the runner)
    the runner's CSPRNG secret, or, when the runner gave none, a CSPRNG secret nobody knows
    (the client is then unusable: deny by default). ``live`` also overrides a scenario secret.
    """
    clients = {client.name: _client_policy(client) for client in isp.clients}
    if live is not None:
        for client_id, policy in list(clients.items()):
            if client_id in live:
                clients[client_id] = attrs.evolve(policy, secret=live[client_id])
    if _TOKEN_MANAGER not in clients:
        if live is not None:
            secret = live.get(_TOKEN_MANAGER) or new_secret(random.SystemRandom(), "cs-")
        else:
            secret = new_secret(derive_rng(seed, "client", isp.name, _TOKEN_MANAGER), "cs-")
        clients[_TOKEN_MANAGER] = ClientPolicy(
            client_id=_TOKEN_MANAGER,
            secret=secret,
            grants=frozenset({GRANT_REFRESH, GRANT_DEVICE_CODE}),
        )
    return clients


def _known_audiences(spec: Scenario, issuer_url: str) -> frozenset[str]:
    """What a client registered without ``audiences`` may ask for: the audiences of the
    scenario's data servers, its transfer service, its workloads' tokens, and the issuer."""
    known = {ds.audience for ds in spec.data_servers}
    known.update(w.token.audience for w in spec.workloads)
    if spec.transfer_service is not None:
        known.add(spec.transfer_service.audience)
    known.add(issuer_url)
    return frozenset(known)


def client_secret(spec: Scenario, seed: int, issuer: str, client: str) -> str | None:
    """The secret of an OAuth client at an issuer, as a virtual-time world registers it (live
    mode draws its own: :attr:`LiveWiring.client_secrets`)."""
    policy = _clients(spec.issuer(issuer), seed).get(client)
    return policy.secret if policy is not None else None


def _arrival_times(w: WorkloadSpec, rng: random.Random) -> list[float]:
    a = w.arrival
    if isinstance(a, BurstArrival):
        return [a.at] * w.jobs
    if isinstance(a, EveryArrival):
        return [k * a.interval for k in range(w.jobs)]
    assert isinstance(a, PoissonArrival)
    times, t = [], 0.0
    for _ in range(w.jobs):
        t += rng.expovariate(1.0 / a.mean_interval)
        times.append(t)
    return times


def _compute_seconds(step: ComputeStepSpec, rng: random.Random) -> float:
    c = step.compute
    if isinstance(c, FixedCompute):
        return c.duration
    if isinstance(c, UniformCompute):
        return rng.uniform(c.low, c.high)
    assert isinstance(c, LognormalCompute)
    return rng.lognormvariate(math.log(c.median), c.sigma)


@attrs.frozen
class _AccessPlan:
    """One read/write step of a workload, resolved once: only ``{job}`` and the random file
    vary per job, so a 100-access job costs a few string operations per access."""

    server: str
    template: str  # the server path (base path joined), placeholders still in
    size: int
    write: bool
    repeat: int
    names: tuple[str, ...]  # files of the {random_file} directory; () when not used


def _plans(
    spec: Scenario,
    wi: int,
    w: WorkloadSpec,
    listing: Mapping[str, Mapping[str, Sequence[str]]],
    source: str,
) -> list[_AccessPlan | ComputeStepSpec | ExecStep]:
    plans: list[_AccessPlan | ComputeStepSpec | ExecStep] = []
    for si, step in enumerate(w.steps):
        if isinstance(step, ComputeStepSpec):
            plans.append(step)
            continue
        if isinstance(step, ExecStepSpec):
            plans.append(ExecStep(argv=step.argv, timeout=step.timeout))
            continue
        assert isinstance(step, ReadStep | WriteStep)
        base = spec.data_server(step.server).issuers.get(w.issuer, "/")
        names: tuple[str, ...] = ()
        if "{random_file}" in step.path:
            directory = step.path.split("{random_file}")[0].rstrip("/") or "/"
            server_dir = _join(base, directory)
            names = tuple(listing.get(step.server, {}).get(server_dir, ()))
            if not names:
                raise ScenarioError(
                    source,
                    f"workloads[{wi}].steps[{si}]",
                    f"{{random_file}} needs pre-populated files in {server_dir!r} on "
                    f"{step.server!r} (expected a data_servers.files entry with that path, "
                    f"received none)",
                )
        plans.append(
            _AccessPlan(
                step.server,
                _join(base, step.path),
                step.size,
                isinstance(step, WriteStep),
                step.repeat,
                names,
            )
        )
    return plans


def _resolve_program(
    plans: Sequence[_AccessPlan | ComputeStepSpec | ExecStep],
    reread: bool,
    job: int,
    rng: random.Random,
    shared: dict[tuple[str, str, str, int, bool], dict[int, AccessStep]] | None = None,
) -> JobProgram:
    """One job's steps. ``shared`` keeps one AccessStep per distinct access for every job
    (they are immutable): a day of 100,000 jobs x 100 accesses would otherwise hold ten
    million step objects and path strings (about 130 bytes each) from the start of the run."""
    if shared is None:
        shared = {}
    steps: list[AccessStep | ComputeStep | ExecStep] = []
    job_text = str(job)
    for plan in plans:
        if isinstance(plan, ExecStep):
            steps.append(plan)
            continue
        if not isinstance(plan, _AccessPlan):
            steps.append(ComputeStep(seconds=_compute_seconds(plan, rng)))
            continue
        path = plan.template.replace("{job}", job_text)
        if plan.names:
            head, tail = path.split("{random_file}", 1)
            names, n = plan.names, len(plan.names)
            # The steps of one server, directory, size and direction, by the file drawn.
            cache = shared.setdefault((plan.server, head, tail, plan.size, plan.write), {})
            for _ in range(plan.repeat):
                drawn = rng.randrange(n)
                step = cache.get(drawn)
                if step is None:
                    step = cache[drawn] = AccessStep(
                        server=plan.server,
                        path=head + names[drawn] + tail,
                        size=plan.size,
                        write=plan.write,
                    )
                steps.append(step)
        else:
            one = AccessStep(server=plan.server, path=path, size=plan.size, write=plan.write)
            steps.extend([one] * plan.repeat)  # immutable: one object serves every repeat
    return JobProgram(steps=tuple(steps), reread=reread)


def _join(base: str, path: str) -> str:
    if base in ("", "/"):
        return path
    return base.rstrip("/") + (path if path.startswith("/") else "/" + path)


def submissions(
    spec: Scenario, *, seed: int, source: str = "scenario", live: bool = False
) -> list[Submission]:
    """Every job of the scenario, ids in submit order, programs resolved (deterministic).

    Args:
        seed: the run's seed (``--seed`` or ``scenario.seed``): arrival times, compute times
            and ``{random_file}`` draws derive from it, never from the file's seed alone.
        source: the scenario file, for error messages.
        live: live mode: a submit description's ``executable``/``arguments`` run as the job's
            exec step, in place of its compute steps (which model it in virtual time).
    """
    listing: dict[str, dict[str, list[str]]] = {}
    for ds in spec.data_servers:
        for fs in ds.files:
            listing.setdefault(ds.name, {})[fs.path.rstrip("/") or "/"] = [
                str(i) for i in range(fs.count)
            ]
    plans = [_plans(spec, wi, w, listing, source) for wi, w in enumerate(spec.workloads)]
    planned: list[tuple[float, int, int, WorkloadSpec]] = []
    for wi, w in enumerate(spec.workloads):
        times = _arrival_times(w, derive_rng(seed, "arrivals", w.name))
        planned.extend((t, wi, k, w) for k, t in enumerate(times))
    planned.sort(key=lambda p: (p[0], p[1], p[2]))
    subs = []
    shared: dict[tuple[str, str, str, int, bool], dict[int, AccessStep]] = {}
    for job, (t, wi, k, w) in enumerate(planned, start=1):
        argv = w.submitted[k].argv if live and w.submitted else ()
        subs.append(
            Submission(
                job=job,
                at=t,
                workload=w.name,
                user=w.user,
                service=w.token.service,
                plan=functools.partial(_job_program, plans[wi], w, k, job, seed, argv, shared),
                ad=_job_ad(w.submitted[k]) if w.submitted else None,
            )
        )
    return subs


def _job_program(
    plans: Sequence[_AccessPlan | ComputeStepSpec | ExecStep],
    w: WorkloadSpec,
    k: int,
    job: int,
    seed: int,
    argv: tuple[str, ...],
    shared: dict[tuple[str, str, str, int, bool], dict[int, AccessStep]],
) -> JobProgram:
    """Job ``job`` (``k``-th of workload ``w``)'s program: its own random stream, derived from
    the run's seed, so that resolving it again (a restart, or late) gives the same steps; the
    step objects are shared with every other job that draws the same access."""
    rng = derive_rng(seed, "job", w.name, k)
    program = _resolve_program(plans, w.token_use is TokenUse.REREAD, job, rng, shared)
    return _with_executable(program, argv) if argv else program


def _with_executable(program: JobProgram, argv: tuple[str, ...]) -> JobProgram:
    """``program`` with the submit description's executable run where it computes (an HTCondor
    job's work is its executable; reads and writes stand for its file transfers): each compute
    step becomes the exec step, or the exec step follows the last read when there is none."""
    run = ExecStep(argv=argv)
    steps = [run if isinstance(s, ComputeStep) else s for s in program.steps]
    if run not in steps:
        reads = [i for i, s in enumerate(steps) if isinstance(s, AccessStep) and not s.write]
        steps.insert(reads[-1] + 1 if reads else 0, run)
    return attrs.evolve(program, steps=tuple(steps))


def _job_ad(job: SubmitJob) -> JobAd:
    """The negotiator's view of one proc of a submit description."""
    return JobAd(
        requirements=job.requirements,
        rank=job.rank,
        request_cpus=job.request_cpus,
        request_memory=job.request_memory,
        attributes=job.attributes,
    )


def _secret(issuers: Mapping[str, Issuer], issuer: str, client: str) -> str | None:
    policy = issuers[issuer].clients.get(client)
    return policy.secret if policy is not None else None


def _transfer_service(
    spec: Scenario,
    seed: int,
    issuers: Mapping[str, Issuer],
    url_to_actor: Mapping[str, str],
    transport: Transport,
    true_now: Callable[[], float],
    recorder: Recorder,
    log: Any,
) -> TransferService | None:
    """FTS, when the scenario has a ``[transfer_service]``: it trusts its issuer for its own
    tokens (audience: its own, L1) and exchanges storage tokens at the issuer that minted them,
    as the same client (with the secret registered there, if any)."""
    ts = spec.transfer_service
    if ts is None:
        return None
    verifier = Verifier(
        issuers=[TrustedIssuer(spec.issuer(ts.issuer).url, "/")], audiences=[ts.audience]
    )
    secrets = {
        name: secret
        for name in issuers
        if (secret := _secret(issuers, name, ts.client)) is not None
    }
    return TransferService(
        name=ts.name,
        audience=ts.audience,
        verifier=verifier,
        issuer_actors=url_to_actor,
        client_id=ts.client,
        client_secrets=secrets,
        concurrency=ts.concurrency,
        refresh_margin=ts.refresh_margin,
        backoff=Backoff(first=ts.retry_backoff, maximum=ts.retry_backoff_max),
        max_retries=ts.max_retries,
        push=ts.tpc_mode.value == "push",
        transport=transport,
        now=true_now,
        rng=derive_rng(seed, "transfer_service", ts.name),
        recorder=recorder,
        log=log.bind(actor=ts.name),
    )


def _data_manager(
    spec: Scenario,
    seed: int,
    issuers: Mapping[str, Issuer],
    transport: Transport,
    true_now: Callable[[], float],
    recorder: Recorder,
    log: Any,
) -> DataManager | None:
    """Rucio, when the scenario has a ``[data_manager]``, with its rules resolved: the
    datasets' servers and the destinations as endpoints (audience, base path for its issuer)."""
    dm = spec.data_manager
    if dm is None:
        return None
    endpoints = {
        ds.name: Endpoint(
            server=ds.name, audience=ds.audience, base_path=ds.issuers.get(dm.issuer, "/")
        )
        for ds in spec.data_servers
    }
    rules = []
    for i, rule in enumerate(spec.rules):
        dataset = spec.dataset(rule.dataset)
        rules.append(
            ReplicationRule(
                name=rule.rule_name(i),
                start=spec.meta.epoch + rule.at,
                source=endpoints[dataset.server],
                source_path=dataset.path,
                destination=endpoints[rule.destination],
                destination_path=rule.path,
                files=tuple((str(k), dataset.size) for k in range(dataset.files)),
            )
        )
    ts = spec.transfer_service
    return DataManager(
        name=dm.name,
        issuer=dm.issuer,
        client_id=dm.client,
        client_secret=_secret(issuers, dm.issuer, dm.client),
        transfer_service=ts.name if ts is not None else "fts",
        transfer_audience=ts.audience if ts is not None else "",
        rules=tuple(rules),
        token_min_lifetime=dm.token_min_lifetime,
        bulk=dm.bulk,
        backoff=Backoff(first=dm.retry_backoff, maximum=dm.retry_backoff_max),
        transport=transport,
        now=true_now,
        rng=derive_rng(seed, "data_manager", dm.name),
        recorder=recorder,
        log=log.bind(actor=dm.name),
    )


@attrs.define
class World:
    """Everything one run owns.

    Build it inside ``trio.run`` (actors create trio objects) with :meth:`build`, then
    :meth:`start` the actors in a nursery.
    """

    spec: Scenario
    seed: int
    network: InMemoryNetwork
    recorder: Recorder
    true_now: Callable[[], float]
    issuers: dict[str, Issuer]
    token_manager: TokenManager
    queue_manager: QueueManager
    hosts: dict[str, ExecuteHost]
    host_clocks: dict[str, HostClock]
    data_servers: dict[str, DataServer]
    log: Any
    source: str
    transfer_service: TransferService | None = None
    data_manager: DataManager | None = None

    @classmethod
    def build(
        cls,
        spec: Scenario,
        *,
        seed: int,
        recorder: Recorder,
        true_now: Callable[[], float],
        log: Any,
        source: str = "scenario",
        live: LiveWiring | None = None,
    ) -> World:
        """Wire the actors of ``spec`` onto an in-memory network, or (``live``) onto HTTP.

        In live mode every process builds the whole world and serves one actor of it; the
        users' logins are then a real device flow (the live runner), not :meth:`Issuer.enroll`.
        """
        net = InMemoryNetwork()
        transport: Transport = net if live is None else live.transport
        issuers: dict[str, Issuer] = {}
        tm_secrets: dict[str, str] = {}
        for isp in spec.issuers:
            key = (
                issuer_key(isp.algorithm, seed, isp.name, 1)
                if live is None
                else SigningKey.generate(isp.algorithm, kid=f"{isp.name}-1")  # CSPRNG
            )
            users = {
                u.name: UserPolicy(
                    name=u.name,
                    scopes=tuple(parse_scope(s) for s in u.scopes),
                    groups=u.groups,
                    optional_groups=u.optional_groups,
                )
                for u in isp.users
            }
            passwords = {u.name: u.password for u in isp.users if u.password is not None}
            if live is not None:
                passwords |= live.passwords.get(isp.name, {})
            clients = _clients(
                isp, seed, None if live is None else live.client_secrets.get(isp.name, {})
            )
            tm_secret = clients[_TOKEN_MANAGER].secret
            if tm_secret is not None:
                tm_secrets[isp.name] = tm_secret
            issuers[isp.name] = Issuer(
                name=isp.name,
                url=isp.url,
                profile=isp.profile,
                keys=KeyRing.single(key, since=-math.inf),
                users=users,
                clients=clients,
                access_token_lifetime=isp.access_token_lifetime,
                refresh_token_lifetime=isp.refresh_token_lifetime,
                nbf_backdate=isp.nbf_backdate,
                max_requests_per_second=isp.max_requests_per_second,
                refresh_token_grace=isp.refresh_token_grace,
                known_audiences=_known_audiences(spec, isp.url),
                device_code_lifetime=isp.device_code_lifetime,
                device_poll_interval=isp.device_poll_interval,
                registration=_registration(isp),
                passwords=passwords,
                require_password=live is not None,
                now=true_now,
                rng=derive_rng(seed, "issuer", isp.name),
                recorder=recorder,
                log=log.bind(actor=isp.name),
            )
            net.register(isp.name, issuers[isp.name].handle, latency=isp.latency)

        tms = spec.token_manager
        tm = TokenManager(
            name=_TOKEN_MANAGER,
            policy=RenewalPolicy(fraction=tms.renew_fraction),
            scan_interval=tms.scan_interval,
            backoff=Backoff(first=tms.retry_backoff, maximum=tms.retry_backoff_max),
            client_secrets=tm_secrets,
            verify_owner=live is not None,
            transport=transport,
            now=true_now,
            rng=derive_rng(seed, _TOKEN_MANAGER),
            recorder=recorder,
            log=log.bind(actor=_TOKEN_MANAGER),
        )
        net.register(tm.name, tm.handle)

        host_slots: list[tuple[str, int]] = []
        hosts: dict[str, ExecuteHost] = {}
        clocks: dict[str, HostClock] = {}
        for hs in spec.execute_hosts:
            for name in hs.host_names:
                clocks[name] = HostClock(true_now, hs.clock_skew)
                hosts[name] = ExecuteHost(
                    name=name,
                    slots=hs.slots,
                    sandbox_refresh=hs.sandbox_refresh,
                    transport=transport,
                    clock=clocks[name],
                    rng=derive_rng(seed, "host", name),
                    recorder=recorder,
                    log=log.bind(actor=name),
                )
                if live is not None:
                    hosts[name].sandboxes = live.sandboxes(name)
                    hosts[name].observed_servers = live.observed_servers
                net.register(name, hosts[name].handle)
                host_slots.append((name, hs.slots))

        url_to_actor = {i.url: i.name for i in spec.issuers}
        servers: dict[str, DataServer] = {}
        for ds in spec.data_servers:
            clocks[ds.name] = HostClock(true_now, ds.clock_skew)
            verifier = Verifier(
                issuers=[TrustedIssuer(spec.issuer(n).url, base) for n, base in ds.issuers.items()],
                audiences=[ds.audience],
                leeway=ds.leeway,
                key_policy=KeyCachePolicy(
                    refresh=ds.key_refresh,
                    expiry=ds.key_expiry,
                    unknown_kid_refetch=ds.unknown_kid_refetch,
                ),
                token_cache=ds.token_cache,
            )
            servers[ds.name] = DataServer(
                name=ds.name,
                verifier=verifier,
                issuer_actors=url_to_actor,
                files=(
                    namespace((f.path, f.count, f.size) for f in ds.files)
                    if live is None
                    else live.files(ds.name)
                ),
                link=SharedLink(ds.bandwidth),
                areas=tuple(GroupArea(a.path, a.read, a.write) for a in ds.areas),
                transport=transport,
                clock=clocks[ds.name],
                true_now=true_now,
                rng=derive_rng(seed, "data_server", ds.name),
                recorder=recorder,
                log=log.bind(actor=ds.name),
            )
            net.register(ds.name, servers[ds.name].handle)

        if live is None:
            # The datasets' files exist at the start (their paths as the data manager's tokens
            # see them, under the server's base path for its issuer, B6).
            for dataset in spec.datasets:
                ds_spec = spec.data_server(dataset.server)
                assert spec.data_manager is not None  # the loader checked it
                base = ds_spec.issuers.get(spec.data_manager.issuer, "/")
                files = servers[dataset.server].files
                for k in range(dataset.files):
                    files[_join(base, f"{dataset.path}/{k}")] = dataset.size
        transfer_service = _transfer_service(
            spec, seed, issuers, url_to_actor, transport, true_now, recorder, log
        )
        if transfer_service is not None:
            net.register(transfer_service.name, transfer_service.handle)
        data_manager = _data_manager(spec, seed, issuers, transport, true_now, recorder, log)
        if data_manager is not None:
            net.register(data_manager.name, data_manager.handle)

        qms = spec.queue_manager
        qm = QueueManager(
            submissions=submissions(spec, seed=seed, source=source, live=live is not None),
            hosts=host_slots,
            machine_ads={
                name: machine_ad(name, hs.slots, hs.machine_ad)
                for hs in spec.execute_hosts
                for name in hs.host_names
            },
            negotiation_interval=qms.negotiation_interval,
            credential_wait=qms.credential_wait,
            release_held_after=qms.release_held_after,
            transport=transport,
            now=true_now,
            rng=derive_rng(seed, "queue_manager"),
            recorder=recorder,
            log=log.bind(actor="queue_manager"),
        )
        net.register(qm.name, qm.handle)

        world = cls(
            spec=spec,
            seed=seed,
            network=net,
            recorder=recorder,
            true_now=true_now,
            issuers=issuers,
            token_manager=tm,
            queue_manager=qm,
            hosts=hosts,
            host_clocks=clocks,
            data_servers=servers,
            log=log,
            source=source,
            transfer_service=transfer_service,
            data_manager=data_manager,
        )
        if live is None:
            world._store_credentials()
        return world

    def _store_credentials(self) -> None:
        """Each user's login before the scenario: a refresh token per (user, service) at the
        token manager (HTCondor's ``condor_submit`` OAuth flow / ``condor_store_cred``)."""
        seen: dict[tuple[str, str], tuple[int, WorkloadSpec]] = {}
        for wi, w in enumerate(self.spec.workloads):
            key = (w.user, w.token.service)
            if key in seen:
                first_i, first = seen[key]
                if (first.issuer, first.token.scopes, first.token.audience) != (
                    w.issuer,
                    w.token.scopes,
                    w.token.audience,
                ):
                    # I15: the same user and service with other scopes or audience is refused.
                    raise ScenarioError(
                        self.source,
                        f"workloads[{wi}].token",
                        f"user {w.user!r} already has service {w.token.service!r} with other "
                        f"scopes, audience or issuer in workloads[{first_i}] (expected the same "
                        f"token request, or another service name)",
                    )
                continue
            seen[key] = (wi, w)
            try:
                refresh = self.issuers[w.issuer].enroll(
                    w.user,
                    client=self.token_manager.name,
                    scopes=w.token.scopes,
                    audience=w.token.audience,
                )
            except ScopeError as exc:
                raise ScenarioError(
                    self.source,
                    f"workloads[{wi}].token.scopes",
                    f"{exc} (the issuer's users[].scopes is the most a user may get)",
                ) from None
            self.token_manager.store(
                Credential(
                    user=w.user,
                    service=w.token.service,
                    issuer=w.issuer,
                    scopes=" ".join(w.token.scopes),
                    audience=w.token.audience,
                    refresh_token=refresh,
                )
            )

    async def start(self, nursery: trio.Nursery) -> None:
        """Start every actor, each in its own restartable cancel scope."""
        for issuer in self.issuers.values():
            await nursery.start(issuer.run)
        for ds in self.data_servers.values():
            await nursery.start(ds.run)
        for host in self.hosts.values():
            await nursery.start(host.run)
        if not self._tm_scope.cancel_called:  # a crash at t=0 keeps it down until its restart
            await nursery.start(self._supervise_token_manager)
        await nursery.start(self.queue_manager.run)
        # Started last (after everything a scenario without rules has), the transfer service
        # before the data manager, whose rules may submit at once.
        if self.transfer_service is not None:
            await nursery.start(self.transfer_service.run)
        if self.data_manager is not None:
            await nursery.start(self.data_manager.run)

    _tm_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    async def _supervise_token_manager(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._tm_scope:
            await self.token_manager.run(task_status=task_status)

    def stop_token_manager(self) -> None:
        """Crash: cancel its loop (:meth:`restart_token_manager` starts it again)."""
        self._tm_scope.cancel()

    def restart_token_manager(self, nursery: trio.Nursery) -> None:
        """Start the token manager loop again after a crash."""
        self._tm_scope = trio.CancelScope()
        nursery.start_soon(self._supervise_token_manager)


def structured_logger(level: str, now: Callable[[], float]) -> Any:
    """A structlog logger writing JSON lines to stderr, each stamped with the run time ``t``."""

    def add_time(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["t"] = round(now(), 6)
        return event

    return structlog.wrap_logger(
        structlog.PrintLogger(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        processors=[
            structlog.processors.add_log_level,
            # every value redacted and bounded: no token in a log line, whatever field it is in
            redact_event_dict,
            add_time,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )
