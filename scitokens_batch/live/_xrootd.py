"""XRootD (XrdHttp + the SciTokens authorization plugin) as a live data server on 127.0.0.1.

Live mode points real clients at a real storage element: Debian's XRootD 5.5.3 with XrdHttp and
``libXrdAccSciTokens``, the validator measured in peers.md (section c. and the interop table).
:meth:`XrootdServer.start` writes its configuration, starts it, waits until it answers HTTP(S)
and returns a handle; :meth:`XrootdServer.stop` ends it by its pid. The API is synchronous
(``subprocess``), to be called from trio through ``trio.to_thread.run_sync``; nothing here uses
``preexec_fn`` or other thread-unsafe process tricks.

Three tricks make the daemon behave, each from peers.md c.:

* **Loopback only, by socket activation.** XRootD has no bind-address directive: ``xrd.port`` and
  ``xrd.protocol`` bind the wildcard address. The Debian binary is linked with libsystemd, and
  ``XrdInet::BindSD`` takes over a listening socket handed over the systemd way: the socket on
  fd 3, ``LISTEN_FDS=1`` and ``LISTEN_PID`` equal to the daemon's own pid. We bind
  ``127.0.0.1:<port>`` ourselves, give it to the child as its stdin, and a tiny ``sh`` wrapper
  moves it to fd 3 and sets ``LISTEN_PID=$$`` before it ``exec``s xrootd: ``exec`` keeps the
  pid, so ``$$`` is the daemon's pid. After start-up we check in ``/proc`` that the daemon
  listens on nothing but ``127.0.0.1:<port>``.
* **Never root.** ``xrootd`` refuses to run as root ("Security reasons prohibit running as
  superuser"), so with euid 0 it gets ``-R xrootd``; then every directory it writes (admin, pid,
  log, the scitokens-cpp key cache, the namespace) belongs to that user, and every path it reads
  must be reachable by it (checked before start, with an error naming the blocking directory).
* **Trusting a loopback HTTPS issuer.** The plugin verifies tokens with scitokens-cpp 0.7.3
  inside the daemon, which fetches keys with libcurl's compiled-in CA file and offers no setting
  to change it (peers.md b., conformance H2, H12). Two ways work:

  - ``preload``: write the issuer's JWKS into the plugin's sqlite key cache under a private
    ``XDG_CACHE_HOME`` before start (conformance H1, H5; :func:`preload_cpp_keycache`). Offline,
    no privileges needed.
  - ``overlay``: run the daemon under ``unshare -m`` with the run's ``bundle.pem`` (system
    bundle + our CA) bind-mounted over ``/etc/ssl/certs/ca-certificates.crt``, so the plugin
    fetches keys live over HTTPS from our issuer. Needs root (or CAP_SYS_ADMIN); the host file
    is not changed, the mount dies with the daemon's private mount namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sysconfig
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import attrs

from .. import _files
from ..errors import LocalInputError, PeerError, PeerMissingError, PeerStartError
from ._tls import RunCA

__all__ = [
    "CURL_CA_FILE",
    "LIBFAKETIME",
    "XROOTD_USER",
    "XrootdArea",
    "XrootdIssuer",
    "XrootdServer",
    "XrootdSpec",
    "faketime_missing",
    "listening_addresses",
    "preload_cpp_keycache",
    "write_faketime",
    "xrootd_missing",
]

#: The unprivileged user XRootD runs as when we are root (``-R``; Debian's package creates it).
XROOTD_USER = "xrootd"
#: libcurl's compiled-in CA file on Debian, the only one scitokens-cpp 0.7.3 uses (peers.md b.).
CURL_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Debian's libfaketime (``apt-get install libfaketime``), the multi-threaded variant XRootD
#: needs: a live ``clock_step`` on XRootD steps the clock the daemon reads through it.
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def faketime_missing() -> str | None:
    """Why XRootD cannot be started under libfaketime here, or None."""
    if not LIBFAKETIME.is_file():
        return f"libfaketime is not installed ({LIBFAKETIME}; apt-get install libfaketime)"
    return None


def write_faketime(path: Path, offset: float) -> None:
    """Set the clock offset of a daemon started with ``faketime_file = path``: libfaketime's
    relative form (``+600`` / ``-600`` seconds), read again at every clock call
    (``FAKETIME_NO_CACHE=1``); world-readable, as the daemon runs as its own user."""
    _files.write_public(path, f"{offset:+.0f}\n")


#: How long :meth:`XrootdServer.start` waits for the first HTTP answer (it takes well under 1 s).
START_TIMEOUT = 20.0
#: How long :meth:`XrootdServer.stop` waits after SIGTERM, then after SIGKILL.
STOP_TIMEOUT = 10.0

#: The plugins our configuration loads. XRootD 5 looks for ``<name>-5.so`` first (versioned
#: plugins), the Debian package ships only that name. Value: the package that ships it.
_PLUGINS = {
    "libXrdHttp": "xrootd-server-plugins",
    "libXrdAccSciTokens": "xrootd-scitokens-plugins",
}
#: scitokens-cpp's key cache below ``$XDG_CACHE_HOME`` (sic: ``sqllite``; conformance H1).
_CPP_CACHE_DIR = "scitokens"
_CPP_CACHE_FILE = "scitokens_cpp.sqllite"
#: A preloaded key is not refreshed for this long (cpp refreshes after ``next_update``, H3) ...
_PRELOAD_REFRESH_AFTER = 3600.0
#: ... and kept this long, scitokens-cpp's own ``expires`` for fetched keys (4 days, H2).
_PRELOAD_KEEP_FOR = 4 * 86400.0
#: Lines of the daemon's log quoted in a start-up error.
_LOG_TAIL_LINES = 30
#: Pause between readiness probes.
_PROBE_INTERVAL = 0.05

#: Moves the listening socket from stdin to fd 3 and execs xrootd with the systemd variables.
#: ``$$`` is the shell's pid, which ``exec`` hands on to xrootd: it is the daemon's pid
#: (sd_listen_fds checks ``LISTEN_PID == getpid()``). Arguments: the xrootd command line.
_ACTIVATE = 'exec 3<&0 </dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
#: The same, first bind-mounting ``$1`` over ``$2`` in the private mount namespace made by
#: ``unshare -m`` (which neither forks nor changes the pid). Exit code 111 = the mount failed.
_OVERLAY = (
    'mount --bind "$1" "$2" || { echo "overlay: cannot bind-mount $1 over $2" >&2; exit 111; }; '
    "shift 2; " + _ACTIVATE
)

TrustMode = Literal["auto", "preload", "overlay"]
_TRUST_MODES: tuple[TrustMode, ...] = ("auto", "preload", "overlay")


def _no_blank(what: str, value: str) -> None:
    """Config values are split on white space by XRootD and the INI parser: refuse any."""
    if not value or any(c.isspace() for c in value):
        raise LocalInputError(f"{what} must be non-empty without white space (got {value!r})")


def _absolute(what: str, value: str) -> None:
    _no_blank(what, value)
    if not value.startswith("/"):
        raise LocalInputError(f"{what} must be an absolute path (got {value!r})")


def _check_issuer_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    _no_blank(f"XrootdIssuer.{attribute.name}", value)


def _check_base_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    _absolute(f"XrootdIssuer.{attribute.name}", value)


@attrs.frozen
class XrootdIssuer:
    """One trusted issuer: the exact ``iss`` and the namespace path its scopes are relative to.

    ``url`` must match the tokens' ``iss`` byte for byte (peers.md rule 1: a trailing ``/`` is
    another issuer). ``base_path`` maps a scope: with ``/data``, ``read:/dir`` grants
    ``/data/dir`` (peers.md rule 6; conformance B6, M1).
    """

    url: str = attrs.field(validator=_check_issuer_url)
    base_path: str = attrs.field(validator=_check_base_path)


def _check_area_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    _absolute(f"XrootdArea.{attribute.name}", value)


def _check_groups(
    _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for group in value:
        # An authdb line is split on white space; '#' would start a comment there.
        _no_blank(f"XrootdArea.{attribute.name}[]", group)
        if "#" in group:
            raise LocalInputError(
                f"XrootdArea.{attribute.name}[] must not contain '#' (got {group!r})"
            )


def _groups(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class XrootdArea:
    """A storage area granting by ``wlcg.groups`` (scenario ``[[data_servers.areas]]``),
    written as XrdAcc group rules (see :func:`_authdb` for how, and docs/live.md for where
    XRootD's semantics differ from ours).

    Attributes:
        path: the area's root in XRootD's namespace (base paths included).
        read: groups that may read, stat and list below it.
        write: groups that may also create, overwrite, delete and make directories.
    """

    path: str = attrs.field(validator=_check_area_path)
    read: tuple[str, ...] = attrs.field(default=(), converter=_groups, validator=_check_groups)
    write: tuple[str, ...] = attrs.field(default=(), converter=_groups, validator=_check_groups)


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):  # a lone string would become a tuple of letters
        return (value,)
    return tuple(value)


def _tuple_of_issuers(value: Iterable[XrootdIssuer]) -> tuple[XrootdIssuer, ...]:
    return tuple(value)


def _tuple_of_areas(value: Iterable[XrootdArea]) -> tuple[XrootdArea, ...]:
    return tuple(value)


def _dict_of_jwks(value: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return dict(value)


@attrs.frozen(kw_only=True)
class XrootdSpec:
    """What XRootD data server to run.

    Attributes:
        name: a label for logs and errors.
        root: the namespace on disk (``oss.localroot``); URL ``/data/x`` is file ``root/data/x``.
            Created if missing; with euid 0 the whole tree is given to :attr:`user`.
        exports: the exported path prefixes (``all.export``), e.g. ``("/data",)``.
        issuers: the trusted issuers, one ``[Issuer]`` section each (conformance M1).
        audiences: ``[Global] audience``; tokens must name one of them (peers.md rule 4: with
            none configured XRootD rejects every token that carries an ``aud``).
        tls: the run's CA and server certificate; when given, the port also speaks HTTPS.
        preload: issuer URL -> JWKS document written into the plugin's key cache before start.
        trust: ``"preload"`` (only the preloaded keys; fetches need a CA libcurl already
            trusts), ``"overlay"`` (live HTTPS key fetches, trusting ``tls.bundle``; needs root
            and ``unshare``) or ``"auto"`` (overlay when it can work here, else preload).
        port: the TCP port on 127.0.0.1; 0 picks a free one.
        user: the account XRootD runs as when we are root (it refuses root).
        binary: the ``xrootd`` executable (a name on ``PATH`` or a path).
        faketime_file: run the daemon under libfaketime (:data:`LIBFAKETIME`) with this
            timestamp file (:func:`write_faketime`; ``+0`` is written when it does not exist),
            so that a ``clock_step`` can step the clock its SciTokens plugin judges tokens by.
        areas: storage areas granting by ``wlcg.groups`` where a token's scopes do not; with
            any, the SciTokens plugin is chained in front of XRootD's default authorizer
            (``ofs.authlib ++``, ``onmissing = passthrough``) and an ``acc.authdb`` holds the
            group rules (:func:`_authdb`).
    """

    name: str
    root: Path = attrs.field(converter=Path)
    exports: tuple[str, ...] = attrs.field(converter=_tuple_of_str)
    issuers: tuple[XrootdIssuer, ...] = attrs.field(converter=_tuple_of_issuers)
    audiences: tuple[str, ...] = attrs.field(converter=_tuple_of_str)
    tls: RunCA | None = None
    preload: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_dict_of_jwks)
    trust: TrustMode = "auto"
    port: int = 0
    user: str = XROOTD_USER
    binary: str = "xrootd"
    faketime_file: Path | None = None
    areas: tuple[XrootdArea, ...] = attrs.field(default=(), converter=_tuple_of_areas)

    def __attrs_post_init__(self) -> None:
        _no_blank("XrootdSpec.name", self.name)
        _absolute("XrootdSpec.root", str(self.root))
        if not self.exports:
            raise LocalInputError("XrootdSpec.exports must name at least one path (got none)")
        for export in self.exports:
            _absolute("XrootdSpec.exports[]", export)
        for audience in self.audiences:
            _no_blank("XrootdSpec.audiences[]", audience)
            if "," in audience:  # the plugin splits the audience list on commas
                raise LocalInputError(
                    f"XrootdSpec.audiences[] must not contain ',' (got {audience!r})"
                )
        if self.trust not in _TRUST_MODES:
            raise LocalInputError(
                f"XrootdSpec.trust must be one of {_TRUST_MODES} (got {self.trust!r})"
            )
        if not 0 <= self.port <= 65535:
            raise LocalInputError(f"XrootdSpec.port must be within 0..65535 (got {self.port})")
        for issuer, jwks in self.preload.items():
            if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
                raise LocalInputError(
                    f"XrootdSpec.preload[{issuer!r}] must be a JWKS document {{'keys': [...]}}"
                )


# --- what is installed --------------------------------------------------------------------


def _library_dirs(binary: str | None) -> list[Path]:
    """Where the dynamic loader (and so XRootD's plugin loader) finds the plugins."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if binary is not None:
        prefix = Path(binary).resolve().parent.parent
        dirs += [prefix / "lib" / arch, prefix / "lib64", prefix / "lib"]
    for prefix in (Path("/usr"), Path("/"), Path("/usr/local")):
        dirs += [prefix / "lib" / arch, prefix / "lib64", prefix / "lib"]
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def _find_plugin(name: str, dirs: Sequence[Path]) -> Path | None:
    for directory in dirs:
        for candidate in (f"{name}-5.so", f"{name}.so"):
            if (directory / candidate).is_file():
                return directory / candidate
    return None


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def xrootd_missing(
    *,
    binary: str = "xrootd",
    user: str = XROOTD_USER,
    library_dirs: Sequence[Path] | None = None,
) -> str | None:
    """Why XRootD cannot be used as a data server here, or None if it can.

    Checks the ``xrootd`` binary, the two plugins our configuration loads (XrdHttp and the
    SciTokens authorization plugin), and, when we are root, the account it must run as.

    Args:
        binary: the executable, a name on ``PATH`` or a path.
        user: the account used with euid 0 (XRootD refuses to run as root, peers.md c.).
        library_dirs: where to look for the plugins; default: the loader's usual directories.

    Returns:
        One sentence per missing part, joined with ``"; "``, each with the Debian package to
        install; None when everything is there.
    """
    problems: list[str] = []
    found = shutil.which(binary)
    if found is None:
        problems.append(f"xrootd binary {binary!r} not found (apt-get install xrootd-server)")
    dirs = list(library_dirs) if library_dirs is not None else _library_dirs(found)
    for plugin, package in _PLUGINS.items():
        if _find_plugin(plugin, dirs) is None:
            where = ", ".join(map(str, dirs)) or "no library directory"
            problems.append(f"{plugin}-5.so not found in {where} (apt-get install {package})")
    if os.geteuid() == 0 and not _user_exists(user):
        problems.append(
            f"user {user!r} does not exist (XRootD refuses to run as root and is run with -R)"
        )
    return "; ".join(problems) or None


def _overlay_missing(spec: XrootdSpec) -> str | None:
    """Why the mount-namespace overlay cannot work here, or None if it can."""
    if spec.tls is None:
        return "trust='overlay' needs tls (a RunCA whose bundle.pem is mounted)"
    if os.geteuid() != 0:
        return "trust='overlay' needs root (unshare -m and mount --bind)"
    if not CURL_CA_FILE.is_file():
        return f"trust='overlay' needs {CURL_CA_FILE} (libcurl's CA file) to mount over"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"trust='overlay' needs {tool!r} (util-linux / mount)"
    try:
        probe = subprocess.run(
            ["unshare", "-m", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"trust='overlay': 'unshare -m true' failed: {exc}"
    if probe.returncode != 0:
        detail = probe.stderr.decode(errors="replace").strip()
        return f"trust='overlay': 'unshare -m true' failed (rc={probe.returncode}): {detail}"
    return None


def _resolve_trust(spec: XrootdSpec) -> Literal["preload", "overlay"]:
    if spec.trust == "preload":
        return "preload"
    why = _overlay_missing(spec)
    if spec.trust == "overlay":
        if why is not None:
            raise PeerMissingError(why)
        return "overlay"
    return "preload" if why is not None else "overlay"


# --- files ------------------------------------------------------------------------------


@attrs.frozen
class _Account:
    """The run-as account; None fields mean "whoever we are" (no ``-R``, no chown)."""

    name: str | None
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def lookup(cls, user: str | None) -> _Account:
        if user is None:
            return cls(None, os.geteuid(), os.getegid(), frozenset(os.getgroups()))
        entry = pwd.getpwnam(user)
        return cls(
            user,
            entry.pw_uid,
            entry.pw_gid,
            frozenset(os.getgrouplist(user, entry.pw_gid)),
        )

    def chown(self, path: Path) -> None:
        if self.name is not None:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def can(self, path: Path, bits: int) -> bool:
        """Whether the account has the permission ``bits`` (``r=4 w=2 x=1``) on ``path``."""
        if self.uid == 0:
            return True
        st = path.stat()
        if st.st_uid == self.uid:
            mode = (st.st_mode >> 6) & 7
        elif st.st_gid in self.groups or st.st_gid == self.gid:
            mode = (st.st_mode >> 3) & 7
        else:
            mode = st.st_mode & 7
        return mode & bits == bits


def _reachable_dir(account: _Account, path: Path, what: str) -> None:
    """Make sure directory ``path`` exists and the run-as account can search its way into it.

    Checked before anything is created: every existing directory from ``/`` down must be
    searchable by the account. Missing directories are then created with mode 0755 (whatever
    the umask), so that the account can pass them too.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    existing = path.parents[len(missing) - 1] if missing else path
    for directory in reversed((existing, *existing.parents)):
        if not account.can(directory, 1):
            mode = stat.filemode(directory.stat().st_mode)
            raise LocalInputError(
                f"{what} {path} is not reachable by user {account.name!r}: {directory} is "
                f"{mode}; use a directory every user can search (e.g. under /tmp, mode 0755)"
            )
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)


def _make_dir(path: Path, account: _Account, *, mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    account.chown(path)


def _chown_tree(root: Path, account: _Account) -> None:
    """Give the namespace to the run-as account, so that PUT can create files anywhere in it."""
    if account.name is None:
        return
    account.chown(root)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            account.chown(Path(directory) / name)


def preload_cpp_keycache(
    cache_home: Path,
    issuer: str,
    jwks: dict[str, Any],
    *,
    now: float,
    owner: str | None,
    refresh_after: float = _PRELOAD_REFRESH_AFTER,
    keep_for: float = _PRELOAD_KEEP_FOR,
) -> Path:
    """Write ``issuer``'s JWKS into scitokens-cpp 0.7.3's sqlite key cache (conformance H1, H5).

    The cache is ``cache_home/scitokens/scitokens_cpp.sqllite`` (sic), table
    ``keycache(issuer TEXT PRIMARY KEY, keys TEXT)``, with ``keys`` the JSON
    ``{"jwks": ..., "next_update": unix, "expires": unix}``. scitokens-cpp reads it from
    ``$XDG_CACHE_HOME``; with a row whose ``next_update`` is in the future it never fetches
    (peers.md b., workaround 1), which lets it trust an issuer it cannot reach or whose CA it
    does not know. The row replaces any existing one for ``issuer``.

    Args:
        cache_home: the daemon's ``XDG_CACHE_HOME``.
        issuer: the exact ``iss`` (peers.md rule 1).
        jwks: the JWKS document ``{"keys": [...]}``; keys need ``kid`` (peers.md b.).
        now: the current unix time; scitokens-cpp compares the row with the real clock.
        owner: the account the cache must belong to (the daemon writes it after a fetch), or
            None to leave ownership as it is.
        refresh_after: seconds until ``next_update`` (cpp then tries a refresh, and keeps the
            keys when it fails, H3).
        keep_for: seconds until ``expires`` (then the keys are dropped).

    Returns:
        The path of the sqlite file.
    """
    account = _Account.lookup(owner)
    directory = cache_home / _CPP_CACHE_DIR
    for path in (cache_home, directory):
        _make_dir(path, account, mode=0o700)
    database = directory / _CPP_CACHE_FILE
    row = {
        "jwks": jwks,
        "next_update": int(now + refresh_after),
        "expires": int(now + keep_for),
    }
    connection = sqlite3.connect(database)
    try:
        with connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS keycache (issuer TEXT PRIMARY KEY, keys TEXT)"
            )
            connection.execute(
                "INSERT OR REPLACE INTO keycache VALUES (?, ?)", (issuer, json.dumps(row))
            )
    finally:
        connection.close()
    os.chmod(database, 0o600)
    account.chown(database)
    return database


def _xrootd_config(
    spec: XrootdSpec,
    *,
    port: int,
    var: Path,
    tls: Path | None,
    scitokens_cfg: Path,
    authdb: Path | None = None,
) -> str:
    """``xrootd.cfg``, as in peers.md c. (xroot and http share one port)."""
    lines = [
        f"# {spec.name}: written by scitokens-batch (live/_xrootd.py)",
        "all.role server",
        *(f"all.export {export}" for export in spec.exports),
        f"oss.localroot {spec.root}",
        f"all.adminpath {var / 'admin'}",
        f"all.pidpath {var / 'run'}",
        # The socket we pass on fd 3 is taken over because its port matches (XrdInet::BindSD).
        f"xrd.port {port}",
        f"xrd.protocol XrdHttp:{port} libXrdHttp.so",
        # The bearer token reaches the plugin as the CGI 'authz' (peers.md c.). XrdHttp 5.5.3
        # matches the header name case-sensitively, though HTTP header names are not (RFC 9110
        # §5.1): httpx and every HTTP/2 client send "authorization". Map both spellings.
        "http.header2cgi Authorization authz",
        "http.header2cgi authorization authz",
        "ofs.authorize",
    ]
    if authdb is None:
        # No '++': SciTokens is the only authorizer, so no token or a bad one is a 403.
        lines.append(f"ofs.authlib libXrdAccSciTokens.so config={scitokens_cfg}")
    else:
        # '++': the plugin in front of the default authorizer. A token whose scopes do not
        # grant the access is passed on (onmissing = passthrough) with its wlcg.groups as
        # the entity's groups, which the authdb's group rules decide (storage areas).
        lines += [
            f"ofs.authlib ++ libXrdAccSciTokens.so config={scitokens_cfg}",
            f"acc.authdb {authdb}",
        ]
    lines.append("scitokens.trace all")
    if tls is not None:
        lines += [
            f"xrd.tls {tls / 'server.pem'} {tls / 'server.key'}",
            f"xrd.tlsca certfile {tls / 'ca.pem'}",
            # HTTP-TPC (COPY, pull and push) as WLCG sites run it: the handler's libcurl
            # trusts the same CA file as the server (xrd.tlsca).
            "http.exthandler xrdtpc libXrdHttpTPC.so",
            "tpc.trace all",
        ]
    # Checksums for Want-Digest (gfal-sum, gfal-copy -K): computed by the server on request.
    lines.append("xrootd.chksum adler32 md5")
    return "\n".join(lines) + "\n"


def _scitokens_config(spec: XrootdSpec) -> str:
    """``scitokens.cfg``: ``[Global] audience`` and one ``[Issuer]`` section per issuer."""
    lines = ["[Global]"]
    if spec.audiences:
        lines.append(f"audience = {', '.join(spec.audiences)}")
    if spec.areas:
        # Also the default; written out because the group rules depend on it.
        lines.append("onmissing = passthrough")
    for number, issuer in enumerate(spec.issuers, start=1):
        lines += [
            "",
            f"[Issuer issuer{number}]",
            f"issuer = {issuer.url}",
            f"base_path = {issuer.base_path}",
        ]
    return "\n".join(lines) + "\n"


#: XrdAcc privileges of a group in an area: ``a`` (all: create, overwrite, delete, mkdir,
#: read, stat, list; also rename, lock, chmod) for a writer, ``rl`` (read and list, lookup =
#: stat) for a reader, and ``-`` (no privilege, negating nothing) for a group the area leaves
#: out: it stops the search, so a shorter (outer) area's rights do not leak in.
_AREA_PRIVS = {"write": "a", "read": "rl", "none": "-"}


def _authdb(spec: XrootdSpec) -> str:
    """``authdb``: the storage areas as XrdAcc group rules (``acc.authdb``).

    XrdAcc gives a group the privileges of the *first* path of its record that prefixes the
    request path, and ORs over the entity's groups. So each group gets one record listing
    every area, the longest path first: the longest matching area decides, each group
    contributes what that area grants it, as our data server decides (``areas`` in
    actors/data_server.py). XrdAcc compares paths as strings, not by whole components (see
    docs/live.md).
    """
    areas = sorted(spec.areas, key=lambda a: (-len(a.path.rstrip("/")), a.path))
    groups = sorted({g for area in areas for g in (*area.read, *area.write)})
    lines = [f"# {spec.name}: storage areas, written by scitokens-batch (live/_xrootd.py)"]
    for group in groups:
        pairs = []
        for area in areas:
            kind = "write" if group in area.write else "read" if group in area.read else "none"
            pairs.append(f"{area.path} {_AREA_PRIVS[kind]}")
        lines.append(f"g {group} " + " ".join(pairs))
    return "\n".join(lines) + "\n"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"({path} is empty)"


# --- sockets ----------------------------------------------------------------------------


def _decode_address(hex_address: str) -> tuple[str, int]:
    """``0100007F:1F90`` (``/proc/net/tcp``: host-order 32-bit words) -> ``("127.0.0.1", 8080)``."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port, 16)


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses the process ``pid`` listens on, from ``/proc`` (like ``ss -ltnp``).

    IPv6 addresses are given as IPv6 (``"::"`` is the wildcard), IPv4 as IPv4.

    Raises:
        ProcessLookupError: there is no process ``pid``.
    """
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for name in names:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{name}")
            if link.startswith("socket:["):
                inodes.add(int(link[len("socket:[") : -1]))
    found: set[tuple[str, int]] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[9]) in inodes:  # 0A = TCP_LISTEN
                    found.add(_decode_address(fields[1]))
    return found


def _bind_loopback(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LocalInputError(
            f"XrootdSpec.port: cannot listen on 127.0.0.1:{port} ({exc.strerror})"
        ) from exc
    return sock


def _probe(port: int, context: ssl.SSLContext | None, timeout: float) -> str | None:
    """One HTTP(S) request to the daemon: None if it answered, else what went wrong."""
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=context
        )
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return None


# --- the server -------------------------------------------------------------------------


@attrs.define(eq=False)
class XrootdServer:
    """A running XRootD, started by :meth:`start`; stop it with :meth:`stop` or ``with``.

    Attributes:
        spec: what was asked for.
        workdir: where its configuration, logs and state live.
        port: the TCP port it listens on, on 127.0.0.1 only.
        trust: how it trusts the issuers' keys: ``"preload"`` or ``"overlay"``.
        log_path: the daemon's own log (``xrootd -l``; the plugin's trace is there too).
        startup_s: seconds from exec to the first HTTP answer.
    """

    spec: XrootdSpec
    workdir: Path
    port: int
    trust: Literal["preload", "overlay"]
    log_path: Path
    startup_s: float
    _process: subprocess.Popen[bytes] = attrs.field(repr=False)

    @property
    def pid(self) -> int:
        """The daemon's pid (the pid of the process we started: every wrapper ``exec``s)."""
        return self._process.pid

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` with TLS, else ``http://...``; no trailing slash."""
        scheme = "https" if self.spec.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the daemon has not exited (yet)."""
        return self._process.poll() is None

    @classmethod
    def start(
        cls,
        spec: XrootdSpec,
        workdir: Path,
        *,
        timeout: float = START_TIMEOUT,
        now: float | None = None,
    ) -> XrootdServer:
        """Write the configuration under ``workdir``, start XRootD and wait until it answers.

        Layout: ``workdir/xrootd.cfg``, ``scitokens.cfg``, ``authdb`` (with
        :attr:`XrootdSpec.areas`), ``launcher.log`` (the wrapper's
        output), ``tls/`` (copies of the server credentials the daemon can read) and ``var/``
        (``admin``, ``run``, ``cache`` = ``XDG_CACHE_HOME``, ``xrootd.log``). With euid 0,
        ``tls``, ``var`` and the namespace :attr:`XrootdSpec.root` belong to ``spec.user``.

        Args:
            spec: the server to run.
            workdir: its directory (created if missing); must be reachable by ``spec.user``.
            timeout: seconds to wait for the first HTTP(S) answer.
            now: unix time for the preloaded key-cache rows; default the system clock, which
                is what scitokens-cpp inside the daemon compares them with.

        Returns:
            The running server.

        Raises:
            PeerMissingError: XRootD, a plugin, the run-as user, or what ``trust='overlay'``
                needs is not there (the message names it).
            LocalInputError: a path cannot be reached by the run-as user, or the port cannot
                be bound.
            PeerStartError: the daemon exited or did not answer within ``timeout``, or listens
                on more than ``127.0.0.1:<port>``; the message ends with its log tail.
        """
        missing = xrootd_missing(binary=spec.binary, user=spec.user)
        if missing is not None:
            raise PeerMissingError(f"cannot run XRootD {spec.name!r}: {missing}")
        binary = shutil.which(spec.binary)
        assert binary is not None  # xrootd_missing checked it
        trust = _resolve_trust(spec)
        account = _Account.lookup(spec.user if os.geteuid() == 0 else None)
        if now is None:
            # The daemon's scitokens-cpp checks cache rows against the real clock (H1-H3).
            now = time.time()  # noqa: TID251

        workdir = workdir.absolute()
        root = spec.root.absolute()
        _reachable_dir(account, workdir, "workdir")
        _reachable_dir(account, root, "namespace root")

        var = workdir / "var"
        cache = var / "cache"
        _make_dir(var, account)
        for sub in ("admin", "run"):
            _make_dir(var / sub, account, mode=0o700)
        _make_dir(cache, account, mode=0o700)
        for export in spec.exports:
            (root / export.lstrip("/")).mkdir(parents=True, exist_ok=True)
        _chown_tree(root, account)
        for issuer, jwks in spec.preload.items():
            preload_cpp_keycache(cache, issuer, jwks, now=now, owner=account.name)

        tls_dir: Path | None = None
        if spec.tls is not None:
            tls_dir = workdir / "tls"
            _make_dir(tls_dir, account, mode=0o700)
            for source, name, mode in (
                (spec.tls.cert, "server.pem", 0o644),
                (spec.tls.key, "server.key", 0o600),
                (spec.tls.ca, "ca.pem", 0o644),
            ):
                _files.write_private(tls_dir / name, source.read_bytes(), mode=mode)
                account.chown(tls_dir / name)

        log_path = var / "xrootd.log"
        launcher_log = workdir / "launcher.log"
        scitokens_cfg = workdir / "scitokens.cfg"
        config = workdir / "xrootd.cfg"
        sock = _bind_loopback(spec.port)
        try:
            port = sock.getsockname()[1]
            _files.write_public(scitokens_cfg, _scitokens_config(spec))
            authdb: Path | None = None
            if spec.areas:
                authdb = workdir / "authdb"
                _files.write_public(authdb, _authdb(spec))
            _files.write_public(
                config,
                _xrootd_config(
                    spec,
                    port=port,
                    var=var,
                    tls=tls_dir,
                    scitokens_cfg=scitokens_cfg,
                    authdb=authdb,
                ),
            )
            # A stale log from an earlier run in this workdir would confuse the error tails.
            for stale in (log_path, launcher_log):
                stale.unlink(missing_ok=True)
            argv = [binary, "-c", str(config), "-l", str(log_path)]
            if account.name is not None:
                argv += ["-R", account.name]
            if trust == "overlay":
                assert spec.tls is not None  # _resolve_trust checked it
                command = ["unshare", "-m", "--propagation", "private", "sh", "-c", _OVERLAY]
                command += ["sh", str(spec.tls.bundle), str(CURL_CA_FILE), *argv]
            else:
                command = ["sh", "-c", _ACTIVATE, "sh", *argv]
            env = {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": str(var),
                "XDG_CACHE_HOME": str(cache),
                "LANG": "C.UTF-8",
            }
            if spec.faketime_file is not None:
                why = faketime_missing()
                if why is not None:
                    raise PeerMissingError(f"cannot run XRootD {spec.name!r}: {why}")
                if not spec.faketime_file.exists():
                    write_faketime(spec.faketime_file, 0.0)
                env |= {
                    "LD_PRELOAD": str(LIBFAKETIME),
                    "FAKETIME_TIMESTAMP_FILE": str(spec.faketime_file),
                    "FAKETIME_NO_CACHE": "1",  # read the file at every call: runtime steps
                    # only the wall clock is stepped; XRootD's timers keep a sane monotonic one
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                }
            started = time.monotonic()
            with open(launcher_log, "ab") as output:
                process = subprocess.Popen(
                    command,
                    stdin=sock.fileno(),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=var,
                    close_fds=True,
                    start_new_session=True,
                )
        finally:
            # Only the daemon holds the listening socket from now on: if it dies, connecting
            # fails at once instead of hanging in our backlog.
            sock.close()

        server = cls(
            spec=spec,
            workdir=workdir,
            port=port,
            trust=trust,
            log_path=log_path,
            startup_s=0.0,
            process=process,
        )
        try:
            server.startup_s = server._wait_ready(started, timeout, launcher_log)
            addresses = listening_addresses(server.pid)
            if addresses != {("127.0.0.1", port)}:
                raise server._start_error(
                    f"listens on {sorted(addresses)}, not only 127.0.0.1:{port}", launcher_log
                )
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, started: float, timeout: float, launcher_log: Path) -> float:
        """Poll until the daemon answers HTTP(S); return the seconds it took."""
        context = None
        if self.spec.tls is not None:
            context = ssl.create_default_context(cafile=str(self.spec.tls.ca))
        deadline = started + timeout
        last = "no answer yet"
        while True:
            code = self._process.poll()
            if code is not None:
                raise self._start_error(f"exited with code {code} during start-up", launcher_log)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(
                    f"did not answer on {self.url} within {timeout:g} s (last probe: {last})",
                    launcher_log,
                )
            problem = _probe(self.port, context, min(1.0, remaining))
            if problem is None:
                return time.monotonic() - started
            last = problem
            time.sleep(min(_PROBE_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _start_error(self, what: str, launcher_log: Path) -> PeerStartError:
        return PeerStartError(
            f"XRootD {self.spec.name!r} (pid {self.pid}, trust={self.trust}) {what}\n"
            f"--- {self.log_path} (last {_LOG_TAIL_LINES} lines)\n{_tail(self.log_path)}\n"
            f"--- {launcher_log}\n{_tail(launcher_log)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; reap it. Idempotent.

        Returns:
            The exit status (negative: killed by that signal, as in ``subprocess``).

        Raises:
            PeerError: the process did not exit even ``timeout`` s after SIGKILL.
        """
        code = self._process.poll()
        if code is not None:
            return code
        self._process.send_signal(signal.SIGTERM)  # by pid; Popen never signals a reaped pid
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(
                f"XRootD {self.spec.name!r} (pid {self.pid}) survived SIGKILL for {timeout:g} s"
            ) from None

    def __enter__(self) -> XrootdServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
