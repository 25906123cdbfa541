"""Run one actor as a long-lived HTTP(S) service: ``scitokens-batch serve ROLE --config FILE``.

The process loads the scenario (the same file and overrides as every other service), builds the
world with the HTTP transport, and serves the one actor its configuration names with hypercorn
on trio. It shuts down cleanly on SIGTERM or SIGINT: the server stops taking requests, the
actor's tasks are cancelled, the events file is flushed. Logs are JSON lines on stderr
(structlog), never holding a token.

Every RPC service authenticates and authorizes its callers (``protocol/_rpcauth.py``): it
needs the ``[auth]`` of its configuration (the pool's public key, its own service tokens), and
refuses to start without it. Any service refuses to listen on an address other than loopback
without ``[auth]``.

State that must survive a restart lives in the work directory, 0600: the issuer's signing keys
and successor key (written atomically) and its refresh-token table (only SHA-256 digests of the
refresh tokens, never the tokens), the token manager's credentials, the transfer service's
jobs, files and managed tokens (``_fts_store.py``); the tables are SQLite databases in WAL
mode, each change committed before the answer that reveals it
(``_durable.py``), so neither a stop nor a ``kill -9`` loses a rotation or a stored credential.
Temporary copies a killed predecessor left (and an execute host's stale job sandboxes) are
removed at start.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any

import attrs
import structlog
import trio
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .. import _files
from ..actors import Credential, DataServer, HostClock, Issuer, TokenManager
from ..metrics import Event, Recorder
from ..protocol import rpcauth
from ..scenario import DataBackend, World, load_scenario
from ..scenario._world import LiveWiring
from ..tokens import Algorithm, PublicKey, SigningKey, redact_event_dict
from ..transport.http import (
    AdminHandler,
    HttpTransport,
    Peer,
    RpcGuard,
    data_app,
    issuer_app,
    rpc_app,
)
from ._clock import follow_offset, wall_now
from ._config import ConfigError, ServiceConfig, ServiceSecrets, load_service_secrets
from ._durable import DurableTable, remove_temp_copies
from ._fts_store import durable_transfer_service
from ._limits import serve_limited
from ._sandbox import directory_sandboxes, remove_stale_sandboxes
from ._store import FileTree

__all__ = ["CONNECTIONS_PER_CLIENT", "AppendSink", "peers_of", "serve", "service_logger"]

#: Open connections one client address may hold on a service (the accept loop closes more).
CONNECTIONS_PER_CLIENT = 256


@attrs.define
class AppendSink:
    """Events of one service, one JSON line each, flushed per line; the live runner merges
    the files of all services.

    A process killed mid-line leaves half a line at the end of its file: the restarted
    service cuts it before appending (the runner skips one left at the very end).
    """

    path: Path
    _fh: IO[str] | None = attrs.field(default=None, alias="_fh")

    def write(self, event: Event) -> None:
        if self._fh is None:
            _files.cut_torn_tail(self.path)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._fh.write(event.to_json() + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@attrs.define
class _NoSink:
    def write(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


def service_logger(level: str, name: str, clock: Callable[[], float]) -> Any:
    """structlog JSON lines on stderr, stamped with the run time and the service name."""

    def stamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["t"] = round(clock(), 3)
        event.setdefault("service", name)
        return event

    return structlog.wrap_logger(
        structlog.PrintLogger(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        processors=[
            structlog.processors.add_log_level,
            # every value redacted and bounded: no token in a log line, whatever field it is in
            redact_event_dict,
            stamp,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )


def peers_of(
    config: ServiceConfig, issuer_names: set[str], data_names: set[str]
) -> dict[str, Peer]:
    """Every actor this service may talk to, with the protocol it speaks."""
    peers = {name: Peer(name, url, "issuer") for name, url in config.issuer_urls.items()}
    for name, url in config.peers.items():
        if name in issuer_names:
            continue
        peers[name] = Peer(name, url.rstrip("/"), "data" if name in data_names else "rpc")
    return peers


def _xrootd_peers(peers: dict[str, Peer], xrootd: set[str]) -> dict[str, Peer]:
    """Mark the XRootD data servers: their HTTP-TPC does not create a copy's parent
    directories, so the transfer service makes them first (as FTS does through gfal2)."""
    return {
        name: attrs.evolve(peer, makes_parents=False) if name in xrootd else peer
        for name, peer in peers.items()
    }


#: Roles that serve RPC (and so must authenticate their callers).
RPC_ROLES = ("token-manager", "queue-manager", "execute-host", "transfer-service", "data-manager")


def _listen_host(config: ServiceConfig) -> str:
    """The address the service will listen on (of ``listen``, or of the inherited socket)."""
    if config.listen is not None:
        return config.listen.rpartition(":")[0].strip("[]")
    assert config.listen_fd is not None
    with socket.socket(fileno=os.dup(config.listen_fd)) as sock:
        return str(sock.getsockname()[0])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth(config: ServiceConfig) -> tuple[tuple[PublicKey, ...], ServiceSecrets]:
    """The pool key and this service's secrets; refuse what would run unauthenticated.

    Raises:
        ConfigError: an RPC service without ``[auth]``, any service off loopback without it,
            or an unreadable key or credentials file.
    """
    file = f"the configuration of {config.name}"
    if config.auth is not None:
        file = str(config.auth.pool_key)
    if config.auth is None:
        if config.role in RPC_ROLES:
            raise ConfigError(
                file,
                "auth",
                f"missing: a {config.role} authenticates its callers and needs [auth] "
                "(pool_key, credentials), see docs/live.md",
            )
        host = _listen_host(config)
        if not _is_loopback(host):
            raise ConfigError(
                file, "auth", f"missing: listening on {host} (not loopback) needs [auth]"
            )
        return (), ServiceSecrets()
    try:
        pub = serialization.load_pem_public_key(config.auth.pool_key.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(file, "", f"expected the pool's public key in PEM ({exc})") from None
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise ConfigError(file, "", "expected an EC P-256 public key (ES256)")
    key = PublicKey(kid=rpcauth.POOL_KID, alg=Algorithm.ES256, key=pub)
    return (key,), load_service_secrets(config.auth.credentials)


def _issuer_state(issuer: Issuer, workdir: Path) -> None:
    """Keep the issuer's signing key across restarts (and load it back on a restart)."""
    key_file = workdir / "signing-key.pem"
    meta_file = workdir / "signing-key.json"
    if key_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        key = SigningKey.from_pem(key_file.read_bytes(), kid=meta["kid"], source=str(key_file))
        issuer.keys = type(issuer.keys).single(key)
    else:
        key = issuer.keys.signing_key(issuer.now())
        _files.write_private(key_file, key.private_pem())
        _files.write_private(meta_file, json.dumps({"kid": key.kid}) + "\n")
    successor_file = workdir / "successor-key"
    if successor_file.exists():
        issuer.successor_key = bytes.fromhex(successor_file.read_text().strip())
    else:
        issuer.successor_key = os.urandom(32)
        _files.write_private(successor_file, issuer.successor_key.hex() + "\n")


#: The key changes made through the admin interface, replayed at a restart (0600: it holds
#: the private keys the rotations added).
_ADMIN_KEYS = "admin-keys.json"


def _replay_admin_keys(issuer: Issuer, workdir: Path) -> None:
    """Apply the rotations and retirements an earlier life of this issuer was asked for."""
    path = workdir / _ADMIN_KEYS
    if not path.exists():
        return
    for op in json.loads(path.read_text()):
        if op["op"] == "rotate":
            key = SigningKey.from_pem(op["pem"].encode(), kid=op["kid"], source=str(path))
            issuer.keys.add(key, publish_at=op["publish_at"], sign_from=op["sign_from"])
        else:
            issuer.keys.retire(op["kid"], at=op["at"])


def _durable_admin(issuer: Issuer, workdir: Path) -> AdminHandler:
    """The issuer's admin operations, each key change written to :data:`_ADMIN_KEYS` (atomic,
    0600) before the answer, so a restarted issuer publishes and signs with the same keys."""
    path = workdir / _ADMIN_KEYS

    async def admin(op: str, args: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
        status, answer = await issuer.admin(op, args)
        if status == 200 and op in ("rotate", "retire"):
            ops = json.loads(path.read_text()) if path.exists() else []
            if op == "rotate":
                ring = issuer.keys.keys()  # every key the KeyRing ever held
                key = next(k for k in ring if k.kid == answer["kid"])
                ops.append(
                    {
                        "op": "rotate",
                        "kid": key.kid,
                        "pem": key.private_pem().decode(),
                        "publish_at": answer["publish_at"],
                        "sign_from": answer["sign_from"],
                    }
                )
            else:
                ops.append({"op": "retire", "kid": answer["retired"], "at": answer["at"]})
            _files.write_private(path, json.dumps(ops) + "\n")
        return status, answer

    return admin


def _durable_issuer(issuer: Issuer, workdir: Path) -> DurableTable:
    """The issuer's refresh-token table on disk (SQLite WAL): loaded now, and every change
    committed before the answer that carries it leaves (``Issuer.persist``)."""
    table = DurableTable(workdir / "grants.db")
    legacy = workdir / "grants.json"
    if legacy.exists():  # the whole-table snapshot of earlier versions
        issuer.restore(json.loads(legacy.read_text()))
        table.apply(_snapshot_rows(issuer))
        legacy.unlink()
    issuer.restore_rows(table.load())
    issuer.persist = table.apply_async
    return table


def _snapshot_rows(issuer: Issuer) -> dict[str, Any]:
    state = issuer.snapshot()
    rows: dict[str, Any] = {"families": {"families": state["families"]}}
    rows.update(state["grants"])
    rows.update(
        {d: {"spent": True, "family": f, "expires": e} for d, (f, e) in state["spent"].items()}
    )
    return rows


async def serve(config: ServiceConfig) -> None:
    """Serve the actor ``config`` names until SIGTERM/SIGINT (see the module docstring).

    Raises:
        LocalInputError: the scenario, the overrides or the configuration do not fit.
    """
    from hypercorn.config import Config as HypercornConfig

    spec = load_scenario(config.scenario, overrides=config.overrides)
    if config.issuer_urls:
        spec = attrs.evolve(
            spec,
            issuers=tuple(
                attrs.evolve(i, url=config.issuer_urls.get(i.name, i.url)) for i in spec.issuers
            ),
        )
    t0 = config.t0 if config.t0 is not None else wall_now()
    if config.role == "data-manager":
        # A rule's ``at`` counts from the scenario's epoch (virtual t = 0); live, t = 0 is when
        # the data manager starts (with the queue manager, once the users are logged in), not
        # the fixed epoch of the file, long past, which would start every rule at once.
        spec = attrs.evolve(spec, meta=attrs.evolve(spec.meta, epoch=wall_now()))

    def since_start() -> float:
        return wall_now() - t0

    workdir = config.workdir
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A killed predecessor may have left partial copies of secrets (atomic writes cut short).
    remove_temp_copies(workdir)
    sink: AppendSink | _NoSink = AppendSink(config.events) if config.events else _NoSink()
    recorder = Recorder(clock=since_start, sink=sink)
    log = service_logger(config.log_level, config.name, since_start)
    issuers = {i.name for i in spec.issuers}
    data = {d.name for d in spec.data_servers}
    pool_keys, secrets = _auth(config)
    transport = HttpTransport(
        _xrootd_peers(
            peers_of(config, issuers, data),
            {d.name for d in spec.data_servers if d.backend is DataBackend.XROOTD},
        ),
        ca_file=str(config.tls.ca) if config.tls else None,
        rpc_tokens=secrets.rpc_tokens,
        connect_via=config.connect_via,
    )
    job_env = dict(config.job_env)
    wiring = LiveWiring(
        transport=transport,
        sandboxes=lambda host: directory_sandboxes(workdir / "sandboxes", wall_now, job_env),
        files=lambda server: FileTree(workdir / "data", quota=spec.data_server(server).quota),
        observed_servers=frozenset(
            d.name for d in spec.data_servers if d.backend is DataBackend.XROOTD
        ),
        client_secrets=secrets.client_secrets,
        passwords=secrets.passwords,
    )
    world = World.build(
        spec,
        seed=spec.meta.seed if config.seed is None else config.seed,
        recorder=recorder,
        true_now=wall_now,
        log=log,
        source=str(config.scenario),
        live=wiring,
    )
    guard = RpcGuard(name=config.name, role=config.role, keys=pool_keys, now=wall_now)
    actor, app, after = _pick(world, config, guard, admin_secret=secrets.admin_secret)
    # Virtual time draws jti values and refresh tokens from RNGs seeded by the scenario, for
    # reproducible runs. A live service hands them to real clients: they must be unguessable,
    # and a restarted issuer must not draw the same ones again (A5).
    actor.rng = random.SystemRandom()

    hc = HypercornConfig()
    hc.bind = [f"fd://{config.listen_fd}"] if config.listen_fd is not None else [str(config.listen)]
    if config.tls is not None:
        hc.certfile, hc.keyfile = str(config.tls.cert), str(config.tls.key)
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 2.0
    # Slow or stalled clients (docs/security.md, "Storage"): a connection idle between requests,
    # or that never completes its request head, is closed after keep_alive_timeout; a TLS
    # handshake must finish in ssl_handshake_timeout; a request head may not exceed
    # h11_max_incomplete_size. hypercorn's read_timeout stays off: it times every socket read,
    # also while a long download or copy is being sent and the client rightly sends nothing.
    # A stalled upload body is timed out by the data app (BODY_IDLE_TIMEOUT), and the accept
    # loop caps connections per client address (serve_limited).
    hc.keep_alive_timeout = 15.0
    hc.ssl_handshake_timeout = 10.0
    hc.h11_max_incomplete_size = 16 * 1024
    if config.role == "data-server":
        # HTTP/1.1 only, as XRootD and dCache serve WebDAV: XRootD 5.5.3's HTTP-TPC push
        # (libcurl, which picks h2 when offered) fails against hypercorn's HTTP/2 with
        # "Failure when receiving data from the peer", and no storage client needs h2.
        hc.alpn_protocols = ["http/1.1"]
    hc.backlog = 1024

    shutdown = trio.Event()
    log.info("starting", role=config.role, bind=hc.bind, tls=config.tls is not None)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, shutdown, log)
            clock = world.host_clocks.get(config.name)
            if clock is not None:  # an execute host or data server: clock_step faults (live)
                base = clock.skew

                def step(offset: float, clock: HostClock = clock) -> None:
                    clock.skew = base + offset

                nursery.start_soon(follow_offset, workdir, step, log)
            await nursery.start(actor.run)
            await serve_limited(
                app, hc, per_address=CONNECTIONS_PER_CLIENT, shutdown_trigger=shutdown.wait
            )
            nursery.cancel_scope.cancel()
    finally:
        after()
        await transport.aclose()
        sink.close()
        log.info("stopped")


_CRED_FIELDS = (
    "user",
    "service",
    "issuer",
    "scopes",
    "audience",
    "refresh_token",
    "access_token",
    "jti",
    "iat",
    "exp",
)


def _durable_credentials(tm: TokenManager, workdir: Path) -> DurableTable:
    """The credmon's ``.top``/``.use`` files as one SQLite table (0600, WAL): loaded now (back
    after a crash, the store is what was committed), and every stored or renewed credential
    committed before it is acknowledged or used (``TokenManager.persist``; I2, I3)."""
    table = DurableTable(workdir / "credentials.db")
    legacy = workdir / "credentials.json"
    if legacy.exists():  # the once-a-second snapshot of earlier versions
        table.apply({_cred_key(e["user"], e["service"]): e for e in json.loads(legacy.read_text())})
        legacy.unlink()
    for entry in table.load().values():
        tm.store(Credential(**{f: entry[f] for f in _CRED_FIELDS}))

    async def persist(cred: Credential) -> None:
        row = {f: getattr(cred, f) for f in _CRED_FIELDS}
        await table.apply_async({_cred_key(cred.user, cred.service): row})

    tm.persist = persist
    return table


def _cred_key(user: str, service: str) -> str:
    return json.dumps([user, service])


async def _on_signals(shutdown: trio.Event, log: Any) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutting down", signal=signal.Signals(signum).name)
            shutdown.set()
            return


def work_file(events: Path) -> Path:
    """Where a data server service keeps its verifier's work, beside its events file."""
    return events.with_name(events.stem + ".work.json")


def _tally_work(server: DataServer, events: Path | None) -> Callable[[], None]:
    """Keep ``server``'s verifier counters (signatures computed, memo hits) for the run's
    summary, summed over the service's incarnations (a restart starts from zero).

    The file says ``running`` while a process serves; one that finds it still so was preceded
    by a killed process whose counts are lost, and marks the tally incomplete for good (the
    summary then reports null rather than an undercount). Returns what to do on the way out.
    """
    if events is None:
        return lambda: None
    path = work_file(events)
    tally = read_work(path) or {"signature_checks": 0, "signature_memo_hits": 0, "complete": True}
    if tally.get("running"):
        tally["complete"] = False
    _files.write_public(path, json.dumps({**tally, "running": True}))

    def done() -> None:
        stats = server.verifier.statistics()
        tally["signature_checks"] += stats.signature_checks
        tally["signature_memo_hits"] += stats.signature_memo_hits
        _files.write_public(path, json.dumps({**tally, "running": False}))

    return done


def read_work(path: Path) -> dict[str, Any] | None:
    """A data server service's work tally (see :func:`_tally_work`), or None when absent or
    unreadable."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not all(
        isinstance(found.get(k), int) for k in ("signature_checks", "signature_memo_hits")
    ):
        return None
    return found


def _pick(
    world: World, config: ServiceConfig, guard: RpcGuard, *, admin_secret: str | None = None
) -> tuple[Any, Any, Callable[[], None]]:
    """(actor, ASGI app, what to do on the way out) for the configured role and name."""
    name, role = config.name, config.role

    def nothing() -> None:
        pass

    def missing(kind: str, names: list[str]) -> Exception:
        from ._config import ConfigError

        return ConfigError(
            str(config.scenario),
            "name",
            f"expected the name of {kind} in the scenario ({', '.join(sorted(names))}), "
            f"received {name!r}",
        )

    if role == "issuer":
        issuer = world.issuers.get(name)
        if issuer is None:
            raise missing("an issuer", list(world.issuers))
        _issuer_state(issuer, config.workdir)
        _replay_admin_keys(issuer, config.workdir)
        grants = _durable_issuer(issuer, config.workdir)
        app = issuer_app(
            name,
            issuer.url,
            issuer.handle,
            issuer.discovery_document,
            per_address_rate=world.spec.issuer(name).max_requests_per_second_per_address,
            admin=_durable_admin(issuer, config.workdir),
            admin_secret=admin_secret,
        )
        return issuer, app, grants.close
    if role == "data-server":
        server = world.data_servers.get(name)
        if server is None:
            raise missing("a data server", list(world.data_servers))
        tree = server.files
        assert isinstance(tree, FileTree)
        assert isinstance(server.transport, HttpTransport)
        tree.clean_staging()  # partial uploads of a killed predecessor are never served
        sources = world.spec.data_server(name).tpc_sources
        if sources is None:  # default: the scenario's own data servers
            sources = tuple(p.url for p in server.transport.peers.values() if p.kind == "data")
        app = data_app(
            name,
            server.admit,
            tree,
            realm=name,
            pull=server.transport.client,
            tpc_sources=sources,
            may_overwrite=server.may_overwrite,
            refuse_overwrite=server.refuse_overwrite,
            now=wall_now,
        )
        return server, app, _tally_work(server, config.events)
    if role == "execute-host":
        host = world.hosts.get(name)
        if host is None:
            raise missing("an execute host", list(world.hosts))
        # Jobs do not outlive their host's process: a sandbox found now is a killed
        # predecessor's, with its tokens still in it.
        remove_stale_sandboxes(config.workdir / "sandboxes")
        return host, rpc_app(name, host.handle, guard), nothing
    if role == "transfer-service":
        fts = world.transfer_service
        if fts is None or fts.name != name:
            raise missing("the transfer service", [fts.name] if fts else [])
        # FTS's database: jobs, file states and managed tokens, reloaded and resumed now
        store = durable_transfer_service(fts, config.workdir)
        return fts, rpc_app(name, fts.handle, guard), store.close
    if role == "data-manager":
        rucio = world.data_manager
        if rucio is None or rucio.name != name:
            raise missing("the data manager", [rucio.name] if rucio else [])
        return rucio, rpc_app(name, rucio.handle, guard), nothing
    if role == "token-manager":
        tm = world.token_manager
        creds = _durable_credentials(tm, config.workdir)
        return tm, rpc_app(name, tm.handle, guard), creds.close
    qm = world.queue_manager
    # Nobody tells a live schedd that a host died: it keeps its claims alive and lets the job
    # lease of an unconfirmed one expire, as HTCondor does (ALIVE_INTERVAL, JobLeaseDuration).
    qm.alive_interval = world.spec.queue_manager.alive_interval
    qm.job_lease = world.spec.queue_manager.job_lease
    return qm, rpc_app(name, qm.handle, guard), nothing
