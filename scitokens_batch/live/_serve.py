"""Run one actor as a long-lived HTTP(S) service: ``scitokens-batch serve ROLE --config FILE``.

The process loads the scenario (the same file and overrides as every other service), builds the
world with the HTTP transport, and serves the one actor its configuration names with hypercorn
on trio. It shuts down cleanly on SIGTERM or SIGINT: the server stops taking requests, the
actor's tasks are cancelled, the events file is flushed. Logs are JSON lines on stderr
(structlog), never holding a token.

State that must survive a restart lives in the work directory, written 0600 and atomically: the
issuer's signing keys and its refresh-token table (only SHA-256 digests of the refresh tokens,
never the tokens), so an issuer outage in live mode is a real stop and start.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import IO, Any

import attrs
import structlog
import trio

from .. import _files
from ..actors import Credential, Issuer, TokenManager
from ..metrics import Event, Recorder
from ..scenario import DataBackend, World, load_scenario
from ..scenario._world import LiveWiring
from ..tokens import SigningKey
from ..transport.http import HttpTransport, Peer, data_app, issuer_app, rpc_app
from ._clock import wall_now
from ._config import ServiceConfig
from ._limits import serve_limited
from ._sandbox import directory_sandboxes
from ._store import FileTree

__all__ = ["CONNECTIONS_PER_CLIENT", "AppendSink", "peers_of", "serve", "service_logger"]

#: Open connections one client address may hold on a service (the accept loop closes more).
CONNECTIONS_PER_CLIENT = 256


@attrs.define
class AppendSink:
    """Events of one service, one JSON line each, flushed per line (a killed process leaves
    whole lines only; the live runner merges the files of all services)."""

    path: Path
    _fh: IO[str] | None = attrs.field(default=None, alias="_fh")

    def write(self, event: Event) -> None:
        if self._fh is None:
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
    state_file = workdir / "grants.json"
    if state_file.exists():
        issuer.restore(json.loads(state_file.read_text()))


def _save_issuer(issuer: Issuer, workdir: Path) -> None:
    _files.write_private(workdir / "grants.json", json.dumps(issuer.snapshot()) + "\n")


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

    def since_start() -> float:
        return wall_now() - t0

    workdir = config.workdir
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    sink: AppendSink | _NoSink = AppendSink(config.events) if config.events else _NoSink()
    recorder = Recorder(clock=since_start, sink=sink)
    log = service_logger(config.log_level, config.name, since_start)
    issuers = {i.name for i in spec.issuers}
    data = {d.name for d in spec.data_servers}
    transport = HttpTransport(
        peers_of(config, issuers, data),
        ca_file=str(config.tls.ca) if config.tls else None,
    )
    job_env = dict(config.job_env)
    wiring = LiveWiring(
        transport=transport,
        sandboxes=lambda host: directory_sandboxes(workdir / "sandboxes", wall_now, job_env),
        files=lambda server: FileTree(workdir / "data", quota=spec.data_server(server).quota),
        observed_servers=frozenset(
            d.name for d in spec.data_servers if d.backend is DataBackend.XROOTD
        ),
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
    actor, app, after = _pick(world, config)
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
    hc.backlog = 1024

    shutdown = trio.Event()
    log.info("starting", role=config.role, bind=hc.bind, tls=config.tls is not None)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, shutdown, log)
            await nursery.start(actor.run)
            if config.role in ("token-manager", "issuer"):
                nursery.start_soon(_keep_saving, after)
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


def _save_credentials(tm: TokenManager, path: Path) -> None:
    """The credmon's ``.top``/``.use`` files, as one 0600 file written atomically (I2, I3)."""
    creds = [tm.credential(u, s) for u, s in tm.stored()]
    doc = [{f: getattr(c, f) for f in _CRED_FIELDS} for c in creds if c is not None and not c.dead]
    _files.write_private(path, json.dumps(doc) + "\n")


def _load_credentials(tm: TokenManager, path: Path) -> None:
    """Back after a crash: what was on disk is the store again (a lost file: nothing)."""
    if not path.exists():
        return
    for entry in json.loads(path.read_text()):
        tm.store(Credential(**{f: entry[f] for f in _CRED_FIELDS}))


async def _keep_saving(save: Callable[[], None], every: float = 1.0) -> None:
    """Persist state every ``every`` seconds (a SIGKILL loses at most that much; SIGTERM saves
    on the way out)."""
    while True:
        await trio.sleep(every)
        save()


async def _on_signals(shutdown: trio.Event, log: Any) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutting down", signal=signal.Signals(signum).name)
            shutdown.set()
            return


def _pick(world: World, config: ServiceConfig) -> tuple[Any, Any, Callable[[], None]]:
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
        app = issuer_app(name, issuer.url, issuer.handle, issuer.discovery_document)
        return issuer, app, lambda: _save_issuer(issuer, config.workdir)
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
        )
        return server, app, nothing
    if role == "execute-host":
        host = world.hosts.get(name)
        if host is None:
            raise missing("an execute host", list(world.hosts))
        return host, rpc_app(name, host.handle), nothing
    if role == "transfer-service":
        fts = world.transfer_service
        if fts is None or fts.name != name:
            raise missing("the transfer service", [fts.name] if fts else [])
        return fts, rpc_app(name, fts.handle), nothing
    if role == "data-manager":
        rucio = world.data_manager
        if rucio is None or rucio.name != name:
            raise missing("the data manager", [rucio.name] if rucio else [])
        return rucio, rpc_app(name, rucio.handle), nothing
    if role == "token-manager":
        tm = world.token_manager
        store = config.workdir / "credentials.json"
        _load_credentials(tm, store)
        return tm, rpc_app(name, tm.handle), lambda: _save_credentials(tm, store)
    return world.queue_manager, rpc_app(name, world.queue_manager.handle), nothing
