"""``scitokens-batch run SCENARIO --live``: the whole set of actors as processes on 127.0.0.1.

What the runner does, in order:

1. Makes the run's CA (trustme) unless the user gives one, and binds one listening socket per
   service on 127.0.0.1 (port 0: the kernel picks), so every address is known before anything
   starts and no port can be taken in between. Each service gets its socket as an inherited
   file descriptor (hypercorn's ``fd://``); XRootD gets its own through systemd socket
   activation (``_xrootd.py``).
2. Writes one service configuration per actor and starts ``python -m scitokens_batch serve``
   for each (issuers, data servers, execute hosts, the token manager), each in its own session,
   logging to ``<workdir>/logs/<name>.log``, and waits until each answers its health URL.
3. Logs every user in: an RFC 8628 device flow against the issuer, approved as the user (with
   the user's password), whose refresh token goes to the token manager (``StoreCredential``,
   HTCondor's ``condor_store_cred``), presenting the login path's service token.
4. Starts the queue manager, whose submissions begin at once; applies the scenario's faults on
   the wall clock (docs/live.md, "Faults in live mode"): outages and crashes stop a process and
   start it again (an issuer keeps its keys and refresh-token table in its work directory);
   ``key_rotation`` and ``refresh_token_revoked`` go through the issuer's admin interface
   (loopback, the run's admin secret); ``clock_step`` rewrites a service's clock-offset file
   (libfaketime's timestamp file for XRootD); ``partition`` cuts the relays (``_relay.py``)
   its links go through; ``transfer_service_state_loss`` kills the transfer service
   (SIGKILL), replaces its state directory with the stale copy the fault describes
   (``_fts_store.py``) and starts it again on the same port, where it resumes its transfers.
5. After ``scenario.duration``, stops every process it started by PID (SIGTERM, then SIGKILL
   after a bounded wait), merges the services' events by time, and writes the same outputs as a
   virtual run (``summary.json`` says ``"mode": "live"``).

Whatever happens (an error, Ctrl-C), every process started is stopped before returning, the
relays' sockets are closed and the clock-offset and faketime files are removed.

Secrets of a run (made with step 2's configurations): a pool key (ES256) that signs one
service token per (caller, callee) pair the RPC table allows (``protocol/_rpcauth.py``); its
private half never leaves this process, the services get its public half. The token
manager's client secret at each issuer and every user's password that the scenario does not
set are drawn from the CSPRNG (``secrets``), never derived from the seed. Each service gets
its own share in ``config/<name>.secrets.json`` (0600, in the 0700 ``config/``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from .. import _files
from ..errors import LocalInputError, PeerStartError, ScenarioError
from ..metrics import Event, Recorder
from ..protocol import (
    CLIENT_AUTH_BASIC,
    GRANT_DEVICE_CODE,
    Ack,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    OAuthError,
    StoreCredential,
    TokenRequest,
    TokenResponse,
    rpcauth,
)
from ..scenario import (
    ClockStep,
    DataBackend,
    DataServerRestart,
    ExecuteHostCrash,
    IssuerOutage,
    KeyRotation,
    Partition,
    RefreshTokenRevoked,
    RunResult,
    Scenario,
    TokenManagerCrash,
    TransferServiceStateLoss,
    result_from_events,
)
from ..tokens import Algorithm, SigningKey
from ..transport.http import ADMIN_HEADER, ADMIN_PATH, HEALTH_PATH, HttpTransport, Peer
from ._clock import OFFSET_FILE, wall_now, write_offset
from ._config import AuthFiles, ServiceConfig, TlsFiles
from ._fts_store import replace_with_stale_copy
from ._relay import Relay
from ._store import FileTree, populate
from ._tls import RunCA
from ._xrootd import XrootdArea, XrootdIssuer, XrootdServer, XrootdSpec, write_faketime

__all__ = ["LIVE_FAULTS", "LiveError", "ServiceProcess", "run_live"]

#: Fault kinds a live run can apply (``check_live`` says why the others cannot).
LIVE_FAULTS: tuple[type[Any], ...] = (
    IssuerOutage,
    TokenManagerCrash,
    ExecuteHostCrash,
    DataServerRestart,
    KeyRotation,
    RefreshTokenRevoked,
    ClockStep,
    Partition,
    TransferServiceStateLoss,
)
#: Why a live run cannot apply a fault kind, for the one-line refusal (every kind can now).
_NOT_LIVE: dict[type[Any], str] = {}
#: The libfaketime timestamp file of an XRootD whose clock a ``clock_step`` steps.
FAKETIME_FILE = "faketime"
#: Seconds a service has to answer its health URL after it starts.
START_TIMEOUT = 30.0
#: Seconds a service has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Service tokens stay valid this long past the scenario's duration.
SERVICE_TOKEN_MARGIN = 86400.0


class LiveError(RuntimeError):
    """A live run could not be carried out (a service did not start, a login failed)."""


@attrs.define
class ServiceProcess:
    """One started service: its process, configuration, socket and log."""

    name: str
    role: str
    config_path: Path
    log_path: Path
    port: int
    url: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def start(self, sock: socket.socket | None) -> None:
        """Start ``serve`` with the socket as an inherited descriptor (re-bound when None)."""
        if sock is None:
            sock = _bind(self.port)
        fd = sock.fileno()
        text = self.config_path.read_text()
        lines = [ln for ln in text.splitlines() if not ln.startswith("listen_fd")]
        self.config_path.write_text("\n".join([f"listen_fd = {fd}", *lines]) + "\n")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scitokens_batch",
                    "serve",
                    self.role,
                    "--config",
                    str(self.config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(fd,),
                start_new_session=True,  # our Ctrl-C is not theirs: we stop them ourselves
            )
        sock.close()  # the child has it; a stopped service must refuse connections (outage)

    def stop(self, *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (SIGKILL with ``kill``), wait at most ``timeout``, then SIGKILL; reap."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def exited(self) -> int | None:
        """Its exit code if it has exited on its own, else None."""
        return self.proc.poll() if self.proc is not None else None

    @property
    def has_health(self) -> bool:
        """It answers :data:`HEALTH_PATH`."""
        return True

    def log_tail(self, lines: int = 15) -> str:
        """The end of its log, for error messages."""
        return _log_tail(self.log_path, lines)


@attrs.define
class XrootdService:
    """A data server served by XRootD (``backend = "xrootd"``), with the same handle as
    :class:`ServiceProcess`. XRootD binds its own socket (socket activation, ``_xrootd.py``);
    its start already waits until it answers."""

    name: str
    spec: XrootdSpec
    workdir: Path
    url: str
    role: str = "data-server"
    server: XrootdServer | None = None
    last_log: Path | None = None

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        return self.server.pid if self.server is not None else None

    @property
    def proc(self) -> XrootdServer | None:
        """Non-None while it runs."""
        return self.server

    @property
    def log_path(self) -> Path:
        """Its log file (the last one, once stopped)."""
        return self.last_log or self.workdir

    @property
    def has_health(self) -> bool:
        """XRootD has no health route; :meth:`start` waits for it instead."""
        return False

    def start(self, sock: socket.socket | None) -> None:
        """Start the daemon on the planned port (the planning socket is closed first)."""
        if sock is not None:
            sock.close()
        try:
            self.server = XrootdServer.start(self.spec, self.workdir)
        except PeerStartError as exc:
            # XRootD 5.5.3 was seen (once, on a loaded machine) to die with SIGSEGV while
            # starting, before writing its log; start it once more, as systemd's
            # Restart=on-failure would. A second failure is reported.
            sys.stderr.write(f"XRootD {self.name} failed to start, trying once more: {exc}\n")
            self.server = XrootdServer.start(self.spec, self.workdir)
        self.last_log = self.server.log_path

    def stop(self, *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop it by its pid (bounded)."""
        server, self.server = self.server, None
        return server.stop(timeout) if server is not None else None

    def exited(self) -> int | None:
        """Its exit code if it died, else None."""
        if self.server is None or self.server.running:
            return None
        return self.server.stop()

    def log_tail(self, lines: int = 15) -> str:
        """The end of its log."""
        return _log_tail(self.log_path, lines)


def _log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _bind(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))  # loopback only, never the wildcard
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def new_workdir(prefix: str) -> Path:
    """A fresh work directory (``mkdtemp``) with the layout of every live run.

    XRootD runs as its own user and must reach its directory under ``services/``; everything
    secret below is 0700/0600 on its own (each service's work directory, keys, sandboxes).
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)
    for sub in ("logs", "events", "config", "services", "tls"):
        (workdir / sub).mkdir(mode=0o755 if sub == "services" else 0o700)
    return workdir


def check_live(spec: Scenario, source: str) -> None:
    """Refuse what a live run cannot do, naming the key path, the fault, the backend and why."""
    for i, fault in enumerate(spec.faults):
        if not isinstance(fault, LIVE_FAULTS):
            reason = _NOT_LIVE.get(type(fault), "it has no live mechanism")
            raise ScenarioError(
                source,
                f"faults[{i}].kind",
                f"{fault.kind!r} cannot be applied live: {reason}; run it in virtual time",
            )
        if isinstance(fault, Partition):
            sides = [set(spec.resolve_hosts(n) or (n,)) for n in fault.between]
            issuers = {i.name for i in spec.issuers}
            for server in spec.data_servers:
                across = [side for side in sides if server.name not in side]
                faces_issuer = len(across) == 1 and bool(issuers & across[0])
                if server.backend is DataBackend.XROOTD and faces_issuer:
                    raise ScenarioError(
                        source,
                        f"faults[{i}].between",
                        f"'partition' cannot be applied live between data server {server.name!r} "
                        "with backend 'xrootd' and an issuer: XRootD's own key fetches cannot "
                        "be routed through the runner's relay; partition it from the execute "
                        "hosts instead, or use our data server",
                    )
        if isinstance(fault, ClockStep):
            from ._xrootd import faketime_missing

            for name in spec.resolve_hosts(fault.host) or (fault.host,):
                ds = next((d for d in spec.data_servers if d.name == name), None)
                missing = faketime_missing()
                if ds is not None and ds.backend is DataBackend.XROOTD and missing is not None:
                    raise ScenarioError(
                        source,
                        f"faults[{i}].host",
                        f"'clock_step' cannot be applied live to data server {name!r} with "
                        f"backend 'xrootd': XRootD reads the system clock, stepped only under "
                        f"libfaketime, and {missing}",
                    )
    for i, ds in enumerate(spec.data_servers):
        if ds.backend is DataBackend.XROOTD:
            from ._xrootd import xrootd_missing

            why = xrootd_missing()
            if why is not None:
                raise ScenarioError(
                    source, f"data_servers[{i}].backend", f"'xrootd' cannot run here: {why}"
                )


@attrs.define
class _Run:
    spec: Scenario
    scenario_path: Path
    overrides: tuple[str, ...]
    seed: int
    workdir: Path
    tls: RunCA
    log_level: str
    t0: float
    services: dict[str, ServiceProcess | XrootdService] = attrs.field(factory=dict)
    sockets: dict[str, socket.socket] = attrs.field(factory=dict)
    issuer_urls: dict[str, str] = attrs.field(factory=dict)
    peers: dict[str, str] = attrs.field(factory=dict)
    recorder: Recorder | None = None
    #: the pool key signing every service token of this run (never written to disk)
    pool_key: SigningKey = attrs.field(
        factory=lambda: SigningKey.generate(Algorithm.ES256, kid=rpcauth.POOL_KID), repr=False
    )
    #: issuer -> client id -> secret (CSPRNG; the token manager's, unless the scenario sets it)
    client_secrets: dict[str, dict[str, str]] = attrs.field(factory=dict, repr=False)
    #: issuer -> user -> device approval password (the scenario's, else CSPRNG)
    passwords: dict[str, dict[str, str]] = attrs.field(factory=dict, repr=False)
    #: the login path's service token for the token manager (``StoreCredential``)
    login_token: str = attrs.field(default="", repr=False)
    #: issuer -> the per-run secret of its admin interface (CSPRNG; in its credentials file)
    admin_secrets: dict[str, str] = attrs.field(factory=dict, repr=False)
    #: service -> the clock offset it follows (``clock_step``; the sum of the steps so far)
    clock_offsets: dict[str, float] = attrs.field(factory=dict)
    #: (caller, callee) -> the relay of that link (only links a partition fault names)
    relays: dict[tuple[str, str], Relay] = attrs.field(factory=dict)

    def _draw_secrets(self) -> None:
        """Client secrets and passwords the scenario leaves unset, from the CSPRNG."""
        for isp in self.spec.issuers:
            if not any(c.name == "token_manager" for c in isp.clients):
                self.client_secrets[isp.name] = {"token_manager": "cs-" + secrets.token_urlsafe(32)}
            self.passwords[isp.name] = {
                u.name: u.password or secrets.token_urlsafe(18) for u in isp.users
            }

    def _service_token(self, name: str, role: str, audience: str) -> str:
        return rpcauth.mint_service_token(
            self.pool_key,
            name=name,
            role=role,
            audience=audience,
            now=wall_now(),
            lifetime=max(self.spec.meta.duration, 0.0) + SERVICE_TOKEN_MARGIN,
            jti=secrets.token_hex(16),
        )

    def _write_secrets(self, name: str, role: str, roles: Sequence[tuple[str, str]]) -> AuthFiles:
        """The service's credentials file (0600): its service tokens for the peers it may
        call, and the client secrets and passwords its role needs."""
        callees = rpcauth.rpc_destinations(role)
        doc: dict[str, Any] = {
            "rpc_tokens": {
                other: self._service_token(name, role, other)
                for other, other_role in roles
                if other_role in callees and other != name
            }
        }
        if role == "issuer":
            doc["client_secrets"] = {name: self.client_secrets.get(name, {})}
            doc["passwords"] = {name: self.passwords.get(name, {})}
            doc["admin_secret"] = self.admin_secrets.setdefault(name, secrets.token_urlsafe(32))
        elif role == "token-manager":
            doc["client_secrets"] = self.client_secrets
        path = self.workdir / "config" / f"{name}.secrets.json"
        _files.write_private(path, json.dumps(doc) + "\n")
        return AuthFiles(pool_key=self.pool_key_path, credentials=path)

    @property
    def pool_key_path(self) -> Path:
        """The pool's public key, as the services read it."""
        return self.workdir / "config" / "pool-key.pem"

    def plan(self) -> None:
        """Bind every socket and write every service's configuration."""
        self._draw_secrets()
        _files.write_private(self.pool_key_path, self.pool_key.public.public_pem().decode())
        self.login_token = self._service_token("runner", rpcauth.LOGIN_ROLE, "token_manager")
        roles: list[tuple[str, str]] = [(i.name, "issuer") for i in self.spec.issuers]
        roles += [(d.name, "data-server") for d in self.spec.data_servers]
        roles += [(h, "execute-host") for h in self.spec.host_names]
        if self.spec.transfer_service is not None:
            roles.append((self.spec.transfer_service.name, "transfer-service"))
        if self.spec.data_manager is not None:
            roles.append((self.spec.data_manager.name, "data-manager"))
        roles += [("token_manager", "token-manager"), ("queue_manager", "queue-manager")]
        for name, _ in roles:
            self.sockets[name] = _bind()
        self._plan_relays()
        for name, role in roles:
            port = self.sockets[name].getsockname()[1]
            base = f"https://127.0.0.1:{port}"
            if role == "issuer":
                path = urllib.parse.urlsplit(self.spec.issuer(name).url).path
                self.issuer_urls[name] = base + path
            else:
                self.peers[name] = base
        job_env = {
            "SSL_CERT_FILE": str(self.tls.bundle),
            "CURL_CA_BUNDLE": str(self.tls.bundle),
            "REQUESTS_CA_BUNDLE": str(self.tls.bundle),
        }
        for d in self.spec.data_servers:
            job_env[f"SCITOKENS_BATCH_URL_{_env_name(d.name)}"] = self.peers[d.name]
        for name, role in roles:
            if role == "data-server" and self.spec.data_server(name).backend is DataBackend.XROOTD:
                self._plan_xrootd(name)
                continue
            workdir = self.workdir / "services" / name
            workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            config = ServiceConfig(
                role=role,
                name=name,
                scenario=self.scenario_path,
                workdir=workdir,
                overrides=self.overrides,
                seed=self.seed,
                listen_fd=0,  # replaced with the real descriptor at start
                events=self.workdir / "events" / f"{name}.jsonl",
                t0=self.t0,
                log_level=self.log_level,
                tls=TlsFiles(cert=self.tls.cert, key=self.tls.key, ca=self.tls.bundle),
                auth=self._write_secrets(name, role, roles),
                issuer_urls=self.issuer_urls,
                peers=self.peers,
                job_env=job_env if role == "execute-host" else {},
                connect_via={
                    r.target_port: r.port for r in self.relays.values() if r.caller == name
                },
            )
            config_path = self.workdir / "config" / f"{name}.toml"
            _files.write_private(config_path, config.to_toml())
            url = self.issuer_urls.get(name) or self.peers[name]
            port = self.sockets[name].getsockname()[1]
            self.services[name] = ServiceProcess(
                name, role, config_path, self.workdir / "logs" / f"{name}.log", port, url
            )
            if role == "data-server":
                populate(FileTree(workdir / "data"), self._files_of(name))

    def _plan_relays(self) -> None:
        """One relay per directed link between the two sides of each partition (both ways)."""
        for fault in self.spec.faults:
            if not isinstance(fault, Partition):
                continue
            a, b = (self.spec.resolve_hosts(n) or (n,) for n in fault.between)
            for x in a:
                for y in b:
                    for link in ((x, y), (y, x)):
                        if link not in self.relays and link[1] in self.sockets:
                            target = self.sockets[link[1]].getsockname()[1]
                            self.relays[link] = Relay(*link, target_port=target, sock=_bind())

    def _files_of(self, name: str) -> list[tuple[str, int, int]]:
        """The files a data server holds at the start: its file sets, and the datasets on it
        (under its base path for the data manager's issuer, B6)."""
        ds = self.spec.data_server(name)
        files = [(f.path, f.count, f.size) for f in ds.files]
        dm = self.spec.data_manager
        for dataset in self.spec.datasets:
            if dataset.server == name and dm is not None:
                base = ds.issuers.get(dm.issuer, "/").rstrip("/")
                files.append((base + "/" + dataset.path.strip("/"), dataset.files, dataset.size))
        return files

    def _plan_xrootd(self, name: str) -> None:
        ds = self.spec.data_server(name)
        workdir = self.workdir / "services" / name
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)  # reachable by the xrootd user (it holds no secret of ours)
        root = workdir / "ns"
        populate(FileTree(root), self._files_of(name))
        spec = XrootdSpec(
            name=name,
            root=root,
            exports=tuple(sorted(set(ds.issuers.values()))) or ("/",),
            issuers=tuple(
                XrootdIssuer(url=self.issuer_urls[iss], base_path=base)
                for iss, base in sorted(ds.issuers.items())
            ),
            audiences=(ds.audience,),
            tls=self.tls,
            trust="auto",
            port=self.sockets[name].getsockname()[1],
            faketime_file=workdir / FAKETIME_FILE if self._clock_stepped(name) else None,
            areas=tuple(XrootdArea(a.path, a.read, a.write) for a in ds.areas),
        )
        self.services[name] = XrootdService(name, spec, workdir / "xrootd", self.peers[name])

    def _clock_stepped(self, name: str) -> bool:
        """A ``clock_step`` fault names this service (or its group)."""
        return any(
            isinstance(f, ClockStep) and name in (self.spec.resolve_hosts(f.host) or (f.host,))
            for f in self.spec.faults
        )

    def start(self, name: str) -> None:
        """Start one service (first start: with its planned socket)."""
        self.services[name].start(self.sockets.pop(name, None))

    def stop_all(self) -> None:
        """Stop every process (reverse start order), by PID."""
        for svc in reversed(list(self.services.values())):
            svc.stop()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        for relay in self.relays.values():
            relay.sock.close()  # its task ended with the event loop; the port is freed here
        for name in self.clock_offsets:  # nothing follows them any more: none is left behind
            (self.workdir / "services" / name / OFFSET_FILE).unlink(missing_ok=True)
            (self.workdir / "services" / name / FAKETIME_FILE).unlink(missing_ok=True)
        for svc in self.services.values():
            if isinstance(svc, XrootdService) and svc.spec.faketime_file is not None:
                svc.spec.faketime_file.unlink(missing_ok=True)

    async def wait_healthy(self, names: Sequence[str]) -> None:
        """Every service in ``names`` answers its health URL, or :class:`LiveError`."""
        deadline = trio.current_time() + START_TIMEOUT
        async with httpx.AsyncClient(verify=_ssl(self.tls.ca), timeout=2.0) as client:
            for name in names:
                svc = self.services[name]
                if not svc.has_health:
                    continue
                url = svc.url.split("/", 3)
                health = "/".join(url[:3]) + HEALTH_PATH
                while True:
                    code = svc.exited()
                    if code is not None:
                        raise LiveError(
                            f"service {name} exited with {code} at start; "
                            f"its log ({svc.log_path}) ends:\n{svc.log_tail()}"
                        )
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(health)).status_code == 200:
                            break
                    if trio.current_time() > deadline:
                        raise LiveError(
                            f"service {name} did not answer {health} within {START_TIMEOUT:g} s; "
                            f"its log ends:\n{svc.log_tail()}"
                        )
                    await trio.sleep(0.05)

    def transport(self) -> HttpTransport:
        """A client transport to every service (the runner acts as the users)."""
        peers = {n: Peer(n, u, "issuer") for n, u in self.issuer_urls.items()}
        data = {d.name for d in self.spec.data_servers}
        for n, u in self.peers.items():
            peers[n] = Peer(n, u, "data" if n in data else "rpc")
        return HttpTransport(
            peers,
            ca_file=str(self.tls.bundle),
            rpc_tokens={"token_manager": self.login_token} if self.login_token else {},
        )

    async def login_all(self, transport: HttpTransport) -> None:
        """Every (user, service) of the workloads logs in by device flow (3. above)."""
        seen: set[tuple[str, str]] = set()
        for w in self.spec.workloads:
            key = (w.user, w.token.service)
            if key in seen:
                continue
            seen.add(key)
            tokens = await self.device_login(
                transport, w.issuer, w.user, w.token.scopes, w.token.audience
            )
            answer = await transport.request(
                "runner",
                "token_manager",
                StoreCredential(
                    user=w.user,
                    service=w.token.service,
                    issuer=w.issuer,
                    scopes=" ".join(w.token.scopes),
                    audience=w.token.audience,
                    refresh_token=tokens.refresh_token or "",
                ),
            )
            if not isinstance(answer, Ack) or not answer.ok:
                raise LiveError(f"the token manager refused {w.user}'s credential: {answer}")

    async def device_login(
        self,
        transport: HttpTransport,
        issuer: str,
        user: str,
        scopes: Sequence[str],
        audience: str,
    ) -> TokenResponse:
        """The user's login at ``issuer`` for the token manager's client (RFC 8628): start,
        approve as the user, poll (honouring ``interval`` and ``slow_down``, bounded by the
        code's life). The answer carries a refresh token (``offline_access``)."""
        secret = self.client_secrets.get(issuer, {}).get("token_manager")
        if secret is None:  # the scenario registers the token manager's client itself
            isp = self.spec.issuer(issuer)
            secret = next(c.secret for c in isp.clients if c.name == "token_manager")
        start = await transport.request(
            "runner",
            issuer,
            DeviceAuthorizationRequest(
                client_id="token_manager",
                client_secret=secret,
                client_auth=CLIENT_AUTH_BASIC,
                scope=" ".join([*scopes, "offline_access"]),
                audience=audience,
            ),
        )
        if not isinstance(start, DeviceAuthorizationResponse):
            raise LiveError(f"device authorization at {issuer} for {user} failed: {start}")
        approved = await transport.request(
            "runner",
            issuer,
            DeviceApproval(
                user_code=start.user_code,
                user=user,
                password=self.passwords.get(issuer, {}).get(user),
            ),
        )
        if not isinstance(approved, Ack):
            raise LiveError(f"{user} could not approve the device login at {issuer}: {approved}")
        interval = start.interval
        deadline = trio.current_time() + min(start.expires_in, 120.0)
        while trio.current_time() < deadline:  # bounded by the code's life
            answer = await transport.request(
                "runner",
                issuer,
                TokenRequest(
                    grant_type=GRANT_DEVICE_CODE,
                    client_id="token_manager",
                    client_secret=secret,
                    client_auth=CLIENT_AUTH_BASIC,
                    device_code=start.device_code,
                ),
            )
            if isinstance(answer, TokenResponse):
                if answer.refresh_token is None:
                    raise LiveError(f"{issuer} gave {user} no refresh token (offline_access)")
                return answer
            assert isinstance(answer, OAuthError), answer
            if answer.error == "slow_down":
                interval += 5.0  # RFC 8628 §3.5
            elif answer.error != "authorization_pending":
                raise LiveError(
                    f"device login of {user} at {issuer}: {answer.error} {answer.description}"
                )
            await trio.sleep(interval)
        raise LiveError(f"device login of {user} at {issuer} did not finish in time")

    async def faults(self, start: float) -> None:
        """Apply the scenario's faults at ``start`` + ``at`` on the trio clock."""
        async with trio.open_nursery() as nursery:
            for fault in sorted(self.spec.faults, key=lambda f: f.at):
                nursery.start_soon(self._fault, fault, start)

    async def admin(self, issuer: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call ``issuer``'s admin interface (``Issuer.admin``) with the run's secret.

        Raises:
            LiveError: it did not answer 200 (the message carries its error, never the secret).
        """
        parts = urllib.parse.urlsplit(self.issuer_urls[issuer])
        url = f"{parts.scheme}://{parts.netloc}{ADMIN_PATH}{op}"
        async with httpx.AsyncClient(verify=_ssl(self.tls.ca), timeout=10.0) as client:
            answer = await client.post(
                url, json=args, headers={ADMIN_HEADER: self.admin_secrets[issuer]}
            )
        if answer.status_code != 200:
            raise LiveError(f"{issuer}'s admin interface refused {op}: {answer.status_code}")
        doc: dict[str, Any] = answer.json()
        return doc

    async def _runner_fault(self, fault: Any) -> bool:
        """Apply a fault that stops no service (through the issuer's admin interface, a clock
        offset file, the relays); False when ``fault`` is not one of them."""
        if isinstance(fault, KeyRotation):
            self._record(fault, "start")
            await self.admin(fault.issuer, "rotate", {"publish_ahead": fault.publish_ahead})
            return True
        if isinstance(fault, RefreshTokenRevoked):
            self._record(fault, "start")
            targets = [fault.issuer] if fault.issuer else [i.name for i in self.spec.issuers]
            for name in targets:
                if any(u.name == fault.user for u in self.spec.issuer(name).users):
                    await self.admin(name, "revoke_user", {"user": fault.user})
            return True
        if isinstance(fault, ClockStep):
            self._record(fault, "start")
            for name in self.spec.resolve_hosts(fault.host) or (fault.host,):
                offset = self.clock_offsets.get(name, 0.0) + fault.offset
                self.clock_offsets[name] = offset
                svc = self.services.get(name)
                if isinstance(svc, XrootdService) and svc.spec.faketime_file is not None:
                    write_faketime(svc.spec.faketime_file, offset)  # libfaketime re-reads it
                else:
                    write_offset(self.workdir / "services" / name, offset)
            return True
        if isinstance(fault, TransferServiceStateLoss):
            # P12 as a site sees it: the FTS host dies (kill -9, nothing flushed on the way
            # out), its database comes back from a stale copy, FTS starts again on its port.
            assert self.spec.transfer_service is not None  # the loader checked it
            name = self.spec.transfer_service.name
            svc = self.services[name]
            self._record(fault, "start")
            await trio.to_thread.run_sync(functools.partial(svc.stop, kill=True))
            await trio.to_thread.run_sync(
                replace_with_stale_copy, self.workdir / "services" / name, fault.restore
            )
            await trio.to_thread.run_sync(svc.start, None)
            await self.wait_healthy([name])
            return True
        if isinstance(fault, Partition):
            sides = [set(self.spec.resolve_hosts(n) or (n,)) for n in fault.between]
            links = [
                r
                for (x, y), r in self.relays.items()
                if (x in sides[0] and y in sides[1]) or (x in sides[1] and y in sides[0])
            ]
            self._record(fault, "start")
            for relay in links:
                relay.partition()
            await trio.sleep(fault.duration)
            for relay in links:
                relay.heal()
            self._record(fault, "end")
            return True
        return False

    async def _fault(self, fault: Any, start: float) -> None:
        await trio.sleep_until(start + fault.at)
        if await self._runner_fault(fault):
            return
        names: tuple[str, ...]
        if isinstance(fault, IssuerOutage):
            names, down, kill = (fault.issuer,), fault.duration, False
        elif isinstance(fault, TokenManagerCrash):
            names, down, kill = ("token_manager",), fault.restart_after, True
        elif isinstance(fault, ExecuteHostCrash):
            # one host, or every host of a group (as virtual time resolves it)
            names = self.spec.resolve_hosts(fault.host) or (fault.host,)
            down, kill = fault.restart_after, True
        else:
            assert isinstance(fault, DataServerRestart)
            names, down, kill = (fault.server,), fault.downtime, False
        self._record(fault, "start")
        stopped = [self.services[name] for name in names]
        for svc in stopped:
            await trio.to_thread.run_sync(functools.partial(svc.stop, kill=kill))
        if isinstance(fault, TokenManagerCrash) and fault.lose_state:
            # The credential store (the .top files) is gone with the machine's disk.
            for stored in ("credentials.db", "credentials.db-wal", "credentials.db-shm"):
                (self.workdir / "services" / "token_manager" / stored).unlink(missing_ok=True)
        await trio.sleep(down)
        for svc in stopped:
            await trio.to_thread.run_sync(svc.start, None)
        await self.wait_healthy(list(names))
        self._record(fault, "end")

    def _record(self, fault: Any, phase: str) -> None:
        if self.recorder is not None:
            fields = {
                k: list(v) if isinstance(v, tuple) else v  # partition's between, as virtual time
                for k, v in attrs.asdict(fault).items()
                if isinstance(v, str | int | float | bool | tuple)
            }
            restore = getattr(fault, "restore", None)
            if restore is not None:  # an enum: its value, as virtual time records it
                fields["restore"] = restore.value
            self.recorder.record("world", "fault", fault=fault.kind, phase=phase, **fields)


def _env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def _ssl(ca: Path) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(ca))


def merged_events(directory: Path, order: Sequence[str]) -> Iterator[Event]:
    """The services' events as one stream ordered by time (ties: service order, then seq),
    renumbered so ``(t, seq)`` is again a total order."""
    rank = {name: i for i, name in enumerate(order)}
    events: list[tuple[float, int, int, Event]] = []
    for path in sorted(directory.glob("*.jsonl")):
        who = path.stem
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):  # a killed service may leave half a line: skip it
                    ev = Event.from_json(line)
                    events.append((ev.t, rank.get(who, len(rank)), ev.seq, ev))
    events.sort(key=lambda e: e[:3])
    for seq, (_, _, _, ev) in enumerate(events):
        yield ev._replace(seq=seq)


def run_live(
    spec: Scenario,
    scenario_path: Path,
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    out: Path | None = None,
    log_level: str = "info",
    tls: RunCA | None = None,
    keep_workdir: bool = False,
    progress: Callable[[float, float], None] | None = None,
    events: str = "all",
) -> RunResult:
    """Run ``spec`` live (see the module docstring).

    Args:
        scenario_path: the scenario file every service loads (with ``overrides``).
        tls: the user's own CA and server certificate; None makes a throw-away one.
        keep_workdir: keep configurations, logs and sandboxes (kept anyway after a failure).
        events: what events.jsonl in ``out`` holds (``--events``: all, none, errors).

    Raises:
        ScenarioError: the scenario asks for something a live run cannot do.
        LiveError: a service did not start or a login failed (every process is stopped).
    """
    source = str(scenario_path)
    check_live(spec, source)
    the_seed = spec.meta.seed if seed is None else seed
    workdir = new_workdir("scitokens-batch-live-")
    wall0 = time.perf_counter()
    run = _Run(
        spec=spec,
        scenario_path=scenario_path.resolve(),
        overrides=tuple(overrides),
        seed=the_seed,
        workdir=workdir,
        tls=tls or RunCA.create(workdir / "tls"),
        log_level=log_level,
        t0=wall_now(),
    )
    from ._serve import AppendSink

    sink = AppendSink(workdir / "events" / "runner.jsonl")
    run.recorder = Recorder(clock=lambda: wall_now() - run.t0, sink=sink)
    try:
        try:
            run.plan()
            try:
                trio.run(_drive, run, progress)
            except BaseExceptionGroup as group:
                # What a task raised inside trio's nurseries: surface our own errors as
                # themselves (one line at the command line), never as a group traceback.
                # Ctrl-C too: it must reach the command line as itself (exit 130).
                mine, _ = group.split((LiveError, LocalInputError, KeyboardInterrupt))
                found: BaseException | None = mine
                while isinstance(found, BaseExceptionGroup):
                    found = found.exceptions[0]
                if found is not None:
                    raise found from None
                raise
        finally:
            run.stop_all()
            sink.close()
        result = result_from_events(
            spec,
            merged_events(workdir / "events", ["world", *run.services]),
            seed=the_seed,
            out=out,
            mode="live",
            wall=time.perf_counter() - wall0,
            extra={"services": len(run.services)},
            epoch=run.t0,  # jobs.log shows the wall-clock times the jobs really had
            events_out=events,
            work=_verifier_work(spec, workdir / "events"),
        )
        if out is not None:
            shutil.copytree(workdir / "logs", out / "logs", dirs_exist_ok=True)
            for svc in run.services.values():
                if isinstance(svc, XrootdService) and svc.last_log and svc.last_log.is_file():
                    shutil.copy(svc.last_log, out / "logs" / f"{svc.name}.xrootd.log")
    except BaseException:
        sys.stderr.write(f"live run failed; configurations and logs are kept in {workdir}\n")
        raise
    if keep_workdir:
        sys.stderr.write(f"configurations, logs and the run's CA are kept in {workdir}\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _verifier_work(spec: Scenario, directory: Path) -> tuple[int, int] | None:
    """The data servers' (signatures computed, signature memo hits), summed; None when any is
    unknown: an XRootD server (its plugin verifies), or a service that was killed."""
    from ._serve import read_work, work_file

    checks = hits = 0
    for ds in spec.data_servers:
        if ds.backend is not DataBackend.BUILTIN:
            return None
        tally = read_work(work_file(directory / f"{ds.name}.jsonl"))
        if tally is None or tally.get("running") or not tally.get("complete"):
            return None
        checks += tally["signature_checks"]
        hits += tally["signature_memo_hits"]
    return checks, hits


async def _drive(run: _Run, progress: Callable[[float, float], None] | None) -> None:
    async with trio.open_nursery() as relays:
        for relay in run.relays.values():
            relays.start_soon(relay.serve)
        await _drive_services(run, progress)
        relays.cancel_scope.cancel()


async def _drive_services(run: _Run, progress: Callable[[float, float], None] | None) -> None:
    # The workload's clock starts with the queue manager and the data manager (its rules)
    last = [n for n, s in run.services.items() if s.role == "data-manager"]
    first = [n for n, s in run.services.items() if s.role != "queue-manager" and n not in last]
    for name in first:
        await trio.to_thread.run_sync(run.start, name)
    await run.wait_healthy(first)
    transport = run.transport()
    try:
        await run.login_all(transport)
    finally:
        await transport.aclose()
    for name in last:
        run.start(name)
    run.start("queue_manager")
    await run.wait_healthy([*last, "queue_manager"])
    start = trio.current_time()
    duration = run.spec.meta.duration
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.faults, start)
        while trio.current_time() < start + duration:
            for svc in run.services.values():
                code = svc.exited()
                if code is not None:
                    raise LiveError(
                        f"service {svc.name} died (exit {code}); its log ends:\n{svc.log_tail()}"
                    )
            if progress is not None:
                progress(trio.current_time() - start, duration)
            await trio.sleep(min(1.0, start + duration - trio.current_time()))
        nursery.cancel_scope.cancel()
