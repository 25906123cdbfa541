"""The configuration of one live service (``scitokens-batch serve ROLE --config FILE``).

A TOML file. The live runner writes one per process; an integrator writes them by hand to run
the actors on several hosts (every address comes from here)::

    role = "data-server"                # issuer | token-manager | queue-manager |
                                        # execute-host | data-server
    name = "frames"                     # the actor's name in the scenario
    scenario = "/srv/ligo-live.toml"    # every service loads the same scenario ...
    overrides = ["issuers[0].access_token_lifetime=60s"]   # ... with the same --set values
    seed = 7                            # optional: the scenario's seed otherwise
    listen = "127.0.0.1:8443"           # or listen_fd = 3 (a socket the launcher bound)
    workdir = "/var/lib/scitokens-batch/frames"   # state, sandboxes, the data tree
    events = "/var/lib/scitokens-batch/frames/events.jsonl"   # optional
    t0 = 1795000000.0                   # optional: wall time of the run's t = 0
    log_level = "info"

    [tls]                               # optional: plain HTTP without it
    cert = "server.pem"
    key = "server.key"
    ca = "ca.pem"                       # what this service trusts as a client

    [auth]                              # required for every RPC service, and off loopback
    pool_key = "pool-key.pem"           # the pool's public key: service tokens are checked with it
    credentials = "frames.secrets.json" # 0600: this service's secrets (see below)

    [issuer_urls]                       # issuer name -> its live `iss` (replaces the scenario's)
    ligo = "https://127.0.0.1:8441/ligo"

    [peers]                             # actor name -> base URL, for everything it talks to
    token_manager = "https://127.0.0.1:8442"

    [connect_via]                       # optional: loopback port -> port to connect to instead
    8442 = 39001                        # (the runner's relay of a partition fault, _relay.py)

Relative paths are relative to the config file's directory.

The ``[auth]`` credentials file is JSON, mode 0600 (a file others can read is refused)::

    {"rpc_tokens": {"queue_manager": "<service token for the queue manager>", ...},
     "client_secrets": {"ligo": {"token_manager": "<secret>"}},
     "passwords": {"ligo": {"alice": "<password>"}}}

``rpc_tokens``: the service token this service presents to each RPC peer it calls (made by the
runner, or by ``deployment()``, signed with the pool key: ``protocol/_rpcauth.py``);
``client_secrets``: OAuth client secrets by issuer and client id (the issuer's clients, the
token manager's own); ``passwords``: users' device-approval passwords (issuers only).
"""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path
from typing import Any, Final

import attrs

from ..errors import LocalInputError

__all__ = [
    "ROLES",
    "AuthFiles",
    "ConfigError",
    "ServiceConfig",
    "ServiceSecrets",
    "TlsFiles",
    "load_service_config",
    "load_service_secrets",
]

ROLES: Final = (
    "issuer",
    "token-manager",
    "queue-manager",
    "execute-host",
    "data-server",
    "transfer-service",
    "data-manager",
)


class ConfigError(LocalInputError):
    """A service configuration file is wrong (file, key, expected, received)."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file, self.key = file, key
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


@attrs.frozen(kw_only=True)
class TlsFiles:
    """Server certificate and key, and the CA bundle this service trusts as a client."""

    cert: Path
    key: Path
    ca: Path


@attrs.frozen(kw_only=True)
class AuthFiles:
    """The pool's public key and this service's credentials file (``[auth]``)."""

    pool_key: Path
    credentials: Path


@attrs.frozen(kw_only=True)
class ServiceSecrets:
    """What a service's credentials file holds (see the module docstring); never shown."""

    rpc_tokens: dict[str, str] = attrs.field(factory=dict, repr=False)
    client_secrets: dict[str, dict[str, str]] = attrs.field(factory=dict, repr=False)
    passwords: dict[str, dict[str, str]] = attrs.field(factory=dict, repr=False)
    #: issuers: the per-run secret of the admin interface (``transport/http.py`` ADMIN_PATH)
    admin_secret: str | None = attrs.field(default=None, repr=False)


def load_service_secrets(path: Path) -> ServiceSecrets:
    """Read a credentials file: JSON, mode 0600 at most.

    Raises:
        ConfigError: unreadable, readable by others, not JSON, or a member of the wrong shape
            (the message names the member, never a value).
    """
    file = str(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            file, "", f"expected mode 0600 (it holds secrets), received {stat.S_IMODE(mode):04o}"
        )
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError(file, "", "expected a JSON object, received other text") from None
    if not isinstance(doc, dict):
        raise ConfigError(file, "", "expected a JSON object")
    extra = sorted(set(doc) - {"rpc_tokens", "client_secrets", "passwords", "admin_secret"})
    if extra:
        raise ConfigError(
            file,
            extra[0],
            "unknown member (expected rpc_tokens, client_secrets, passwords, admin_secret)",
        )
    admin = doc.get("admin_secret")
    if admin is not None and (not isinstance(admin, str) or len(admin) < 16):
        raise ConfigError(file, "admin_secret", "expected a string of at least 16 characters")
    tokens = doc.get("rpc_tokens", {})
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
    ):
        raise ConfigError(file, "rpc_tokens", "expected an object of peer name -> token")
    nested: dict[str, dict[str, dict[str, str]]] = {}
    for member in ("client_secrets", "passwords"):
        value = doc.get(member, {})
        if not isinstance(value, dict) or not all(
            isinstance(inner, dict)
            and all(isinstance(k, str) and isinstance(v, str) and v for k, v in inner.items())
            for inner in value.values()
        ):
            raise ConfigError(
                file, member, "expected an object of issuer -> {name -> non-empty string}"
            )
        nested[member] = value
    return ServiceSecrets(
        rpc_tokens=tokens,
        client_secrets=nested["client_secrets"],
        passwords=nested["passwords"],
        admin_secret=admin,
    )


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """One service (see the module docstring for the keys)."""

    role: str
    name: str
    scenario: Path
    workdir: Path
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    listen: str | None = None
    listen_fd: int | None = None
    events: Path | None = None
    t0: float | None = None
    log_level: str = "info"
    tls: TlsFiles | None = None
    auth: AuthFiles | None = None
    issuer_urls: dict[str, str] = attrs.field(factory=dict)
    peers: dict[str, str] = attrs.field(factory=dict)
    #: environment given to exec steps (execute hosts), e.g. the data servers' URLs
    job_env: dict[str, str] = attrs.field(factory=dict)
    #: loopback port -> the port to connect to instead (a partition fault's relay)
    connect_via: dict[int, int] = attrs.field(factory=dict)

    def to_toml(self) -> str:
        """This configuration as TOML (what the live runner writes)."""
        lines: list[str] = []

        def put(key: str, value: Any) -> None:
            if value is None:
                return
            lines.append(f"{key} = {_toml_value(value)}")

        put("role", self.role)
        put("name", self.name)
        put("scenario", str(self.scenario))
        put("overrides", list(self.overrides))
        put("seed", self.seed)
        put("listen", self.listen)
        put("listen_fd", self.listen_fd)
        put("workdir", str(self.workdir))
        put("events", str(self.events) if self.events else None)
        put("t0", self.t0)
        put("log_level", self.log_level)
        if self.tls is not None:
            lines += ["", "[tls]"]
            put("cert", str(self.tls.cert))
            put("key", str(self.tls.key))
            put("ca", str(self.tls.ca))
        if self.auth is not None:
            lines += ["", "[auth]"]
            put("pool_key", str(self.auth.pool_key))
            put("credentials", str(self.auth.credentials))
        for table in ("issuer_urls", "peers", "job_env"):
            values: dict[str, str] = getattr(self, table)
            if values:
                lines += ["", f"[{table}]"]
                for k, v in sorted(values.items()):
                    put(_toml_key(k), v)
        if self.connect_via:
            lines += ["", "[connect_via]"]
            for port, via in sorted(self.connect_via.items()):
                put(str(port), via)
        return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "role": (str,),
    "name": (str,),
    "scenario": (str,),
    "workdir": (str,),
    "overrides": (list,),
    "seed": (int,),
    "listen": (str,),
    "listen_fd": (int,),
    "events": (str,),
    "t0": (int, float),
    "log_level": (str,),
    "tls": (dict,),
    "auth": (dict,),
    "issuer_urls": (dict,),
    "peers": (dict,),
    "job_env": (dict,),
    "connect_via": (dict,),
}
_REQUIRED: Final = ("role", "name", "scenario", "workdir")
_LEVELS: Final = ("debug", "info", "warning", "error")


def load_service_config(path: Path) -> ServiceConfig:
    """Read and check a service configuration.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown or missing key, or a wrong value;
            the message names the file, the key, what was expected and what was received.
    """
    file = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"not valid TOML ({exc})") from None
    for key, value in doc.items():
        if key not in _TYPES:
            raise ConfigError(file, key, f"unknown key (expected one of {', '.join(_TYPES)})")
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
            names = " or ".join(t.__name__ for t in _TYPES[key])
            raise ConfigError(file, key, f"expected {names}, received {value!r}")
    for key in _REQUIRED:
        if key not in doc:
            raise ConfigError(file, key, "missing (required)")
    if doc["role"] not in ROLES:
        raise ConfigError(
            file, "role", f"expected one of {', '.join(ROLES)}, received {doc['role']!r}"
        )
    if ("listen" in doc) == ("listen_fd" in doc):
        raise ConfigError(file, "listen", "expected exactly one of listen or listen_fd")
    if "listen" in doc:
        host, _, port = doc["listen"].rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(file, "listen", f"expected HOST:PORT, received {doc['listen']!r}")
    level = doc.get("log_level", "info")
    if level not in _LEVELS:
        raise ConfigError(
            file, "log_level", f"expected one of {', '.join(_LEVELS)}, received {level!r}"
        )
    base = path.parent

    def rel(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    tls = None
    if "tls" in doc:
        for key in ("cert", "key", "ca"):
            value = doc["tls"].get(key)
            if not isinstance(value, str):
                raise ConfigError(file, f"tls.{key}", f"expected a file name, received {value!r}")
        extra = set(doc["tls"]) - {"cert", "key", "ca"}
        if extra:
            raise ConfigError(
                file, f"tls.{sorted(extra)[0]}", "unknown key (expected cert, key, ca)"
            )
        tls = TlsFiles(
            cert=rel(doc["tls"]["cert"]), key=rel(doc["tls"]["key"]), ca=rel(doc["tls"]["ca"])
        )
    auth = None
    if "auth" in doc:
        for key in ("pool_key", "credentials"):
            value = doc["auth"].get(key)
            if not isinstance(value, str):
                raise ConfigError(file, f"auth.{key}", f"expected a file name, received {value!r}")
        extra = set(doc["auth"]) - {"pool_key", "credentials"}
        if extra:
            raise ConfigError(
                file, f"auth.{sorted(extra)[0]}", "unknown key (expected pool_key, credentials)"
            )
        auth = AuthFiles(
            pool_key=rel(doc["auth"]["pool_key"]), credentials=rel(doc["auth"]["credentials"])
        )
    for table in ("issuer_urls", "peers", "job_env"):
        for k, v in doc.get(table, {}).items():
            if not isinstance(v, str):
                raise ConfigError(file, f"{table}.{k}", f"expected a string, received {v!r}")
    for k, v in doc.get("issuer_urls", {}).items():
        if not v.startswith(("https://", "http://")) or v.endswith("/"):
            raise ConfigError(
                file,
                f"issuer_urls.{k}",
                f"expected an http(s) URL without a trailing /, received {v!r}",
            )
    connect_via: dict[int, int] = {}
    for k, v in doc.get("connect_via", {}).items():
        ok = k.isdigit() and 0 < int(k) < 65536
        if not ok or isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
            raise ConfigError(
                file, f"connect_via.{k}", f"expected PORT = PORT (1-65535), received {k} = {v!r}"
            )
        connect_via[int(k)] = v
    overrides = doc.get("overrides", [])
    if not all(isinstance(o, str) for o in overrides):
        raise ConfigError(file, "overrides", "expected a list of key.path=value strings")
    return ServiceConfig(
        role=doc["role"],
        name=doc["name"],
        scenario=rel(doc["scenario"]),
        workdir=rel(doc["workdir"]),
        overrides=tuple(overrides),
        seed=doc.get("seed"),
        listen=doc.get("listen"),
        listen_fd=doc.get("listen_fd"),
        events=rel(doc["events"]) if "events" in doc else None,
        t0=float(doc["t0"]) if "t0" in doc else None,
        log_level=level,
        tls=tls,
        auth=auth,
        issuer_urls=dict(doc.get("issuer_urls", {})),
        peers=dict(doc.get("peers", {})),
        job_env=dict(doc.get("job_env", {})),
        connect_via=connect_via,
    )
