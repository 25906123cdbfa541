"""The scenario spec: frozen attrs classes, one per table of the scenario file.

These classes ARE the schema. The loader (``_loader.py``) derives everything from them:
the allowed keys of a table are the fields of its class (plus ``kind`` for tagged unions),
a field without a default is a required key, and each field's ``metadata`` says how its
value is read (a unit such as ``"duration"``), which TOML key it has when that differs from
the attribute name, and what it must satisfy. To add a key, add a field; to add a fault
kind, an arrival kind, a compute distribution or a step kind, add a class with its ``kind``
(or step ``key``) and put it into the matching union alias at the bottom of its section.

Values are in base units: durations and times in float seconds, sizes in int bytes, rates
in float bytes per second, the epoch in float Unix seconds.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import ClassVar, Final, TypeAlias
from urllib.parse import urlsplit

import attrs

from scitokens_batch.scenario._expect import Check
from scitokens_batch.scenario._units import LIMITS
from scitokens_batch.tokens._profiles import (
    SCITOKENS_ANY_AUDIENCE,
    WLCG_ANY_AUDIENCE,
    Algorithm,
    Profile,
)

__all__ = [
    "CHECK",
    "DEFAULT_EPOCH",
    "ITEM_CHECK",
    "NEGATIVE",
    "PARTITION_SERVICES",
    "TOML_KEY",
    "UNIT",
    "Arrival",
    "BurstArrival",
    "ClientSpec",
    "ClockStep",
    "Compute",
    "ComputeStep",
    "DataBackend",
    "DataManagerSpec",
    "DataServerRestart",
    "DataServerSpec",
    "DatasetSpec",
    "EveryArrival",
    "ExecStep",
    "ExecuteHostCrash",
    "ExecuteHostSpec",
    "ExpectSpec",
    "Fault",
    "FileSetSpec",
    "FixedCompute",
    "GrantName",
    "IssuerOutage",
    "IssuerSpec",
    "KeyRotation",
    "LognormalCompute",
    "OAuthToken",
    "Partition",
    "PoissonArrival",
    "QueueManagerSpec",
    "ReadStep",
    "RefreshTokenRestore",
    "RefreshTokenRevoked",
    "RegistrationSpec",
    "RuleSpec",
    "Scenario",
    "ScenarioMeta",
    "Step",
    "StepTarget",
    "SubmitJob",
    "TokenManagerCrash",
    "TokenManagerSpec",
    "TokenRequestSpec",
    "TokenUse",
    "TransferServiceSpec",
    "TransferServiceStateLoss",
    "UniformCompute",
    "UserSpec",
    "WorkloadSpec",
    "WriteStep",
]

# --------------------------------------------------------------------------------------------
# Field metadata understood by the loader.

#: How the raw value is read: "duration", "duration_or_never", "size", "rate", "epoch",
#: "target". Without it the field's type decides (str, int, float, bool, enum, tuple, ...).
UNIT: Final = "scitokens_batch.unit"
#: A duration field that may be negative (clock skews and steps).
NEGATIVE: Final = "scitokens_batch.negative"
#: The TOML key, when it is not the attribute name.
TOML_KEY: Final = "scitokens_batch.toml_key"
#: ``Callable[[value], str | None]`` run on the converted value; a string is what was
#: expected (the loader adds what was received).
CHECK: Final = "scitokens_batch.check"
#: A field the loader fills itself (never a TOML key): a workload's parsed submit description.
INTERNAL: Final = "scitokens_batch.internal"
#: Like CHECK, run on each item of a tuple field.
ITEM_CHECK: Final = "scitokens_batch.item_check"

#: Wall-clock time that virtual t = 0 stands for when the file does not say.
DEFAULT_EPOCH: Final = 1767225600.0  # 2026-01-01T00:00:00Z

#: The actor names, besides issuers, data servers and execute hosts, that a ``partition``
#: fault may name.
PARTITION_SERVICES: Final = ("token_manager", "queue_manager")

FieldCheck: TypeAlias = Callable[[object], "str | None"]

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_USER_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
_CLIENT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")


def _name(value: object) -> str | None:
    if isinstance(value, str) and _NAME_RE.fullmatch(value):
        return None
    return 'a name of letters, digits, "_" and "-", starting with a letter or digit (e.g. "node")'


def _user_name(value: object) -> str | None:
    if isinstance(value, str) and _USER_RE.fullmatch(value):
        return None
    return 'a user name of letters, digits, "_", ".", "@" and "-" (e.g. "alice")'


def _client_id(value: object) -> str | None:
    if isinstance(value, str) and _CLIENT_RE.fullmatch(value):
        return None
    return (
        'a client id of letters, digits, "_", ".", ":", "@" and "-" (e.g. "fts" or '
        '"host:fts.example.org", conformance A13)'
    )


def _non_empty(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def _positive_duration(value: object) -> str | None:
    return None if isinstance(value, float) and value > 0 else "a duration > 0s"


def _positive_number(value: object) -> str | None:
    return None if isinstance(value, int | float) and value > 0 else "a number > 0"


def _non_negative_number(value: object) -> str | None:
    return None if isinstance(value, int | float) and value >= 0 else "a number >= 0"


def _non_negative_int(value: object) -> str | None:
    # Counts (jobs, hosts, slots, files, repeats) share one finite range (LIMITS["count"]).
    if not (isinstance(value, int) and value >= 0):
        return "an integer >= 0"
    return None if value <= LIMITS["count"].high else f"a count {LIMITS['count'].shown}"


def _positive_int(value: object) -> str | None:
    if not (isinstance(value, int) and value >= 1):
        return "an integer >= 1"
    return None if value <= LIMITS["count"].high else f"a count {LIMITS['count'].shown}"


def _lifetime(value: object) -> str | None:
    # A token's exp is iat + whole seconds: below 1 s it would be dead when minted.
    return None if isinstance(value, float) and value >= 1 else "a token lifetime >= 1s"


def _fraction(value: object) -> str | None:
    if isinstance(value, float) and 0 < value < 1:
        return None
    return "a number strictly between 0 and 1"


def _absolute_path(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("/"):
        parts = value.split("/")[1:]
        if value == "/" or all(part not in ("", ".", "..") for part in parts):
            return None
    return 'an absolute, normalised path (e.g. "/ligo/frames": no "//", ".", ".." or trailing "/")'


#: A7: group ::= '/' groupname | group '/' groupname; groupname ::= [a-zA-Z0-9][a-zA-Z0-9_.-]*
_GROUP_RE = re.compile(r"\A(/[a-zA-Z0-9][a-zA-Z0-9_.-]*)+\Z")


def _group(value: object) -> str | None:
    if isinstance(value, str) and _GROUP_RE.match(value):
        return None
    return (
        'a group such as "/ligo/analysis" (conformance A7: /name[/name...], names [a-zA-Z0-9_.-])'
    )


def _issuer_url(value: object) -> str | None:
    # peers.md rule 1: `iss` is compared byte for byte, and scitokens-cpp appends
    # "/.well-known/openid-configuration" by string concatenation; H2: https only.
    if not isinstance(value, str):
        return "an https URL"
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        return 'an https URL (e.g. "https://issuer.example/vo"; conformance H2)'
    if any(c.isspace() for c in value):
        return "an https URL without whitespace"
    if parts.query or parts.fragment:
        return "an https URL without a query or fragment"
    if value.endswith("/"):
        return "an issuer URL without a trailing '/' (peers.md rule 1: iss matches byte for byte)"
    return None


def _tpc_source(value: object) -> str | None:
    if isinstance(value, str):
        scheme, sep, rest = value.partition("://")
        host, _, port = rest.partition(":")
        host_ok = re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host)
        if (
            scheme == "https"
            and sep
            and host_ok
            and (not port or (port.isdigit() and 0 < int(port) < 65536))
        ):
            return None
    return 'an https origin such as "https://storage.example.org:1094" or "https://*.example.org"'


def _server_audience(value: object) -> str | None:
    # C5: "ANY" matches any server in a token, but as a server's own audience it is an error;
    # the WLCG any-audience (C1) is the same kind of wildcard.
    if not isinstance(value, str) or not value.strip():
        return "a non-empty audience string"
    if value in (SCITOKENS_ANY_AUDIENCE, WLCG_ANY_AUDIENCE):
        return (
            "the server's own audience, not a wildcard (conformance C5: server audience "
            '"ANY" is an error), e.g. "https://frames.example"'
        )
    return None


def _service(value: object) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        return None
    return 'a credential service name such as "ligo" (letters, digits, "_", ".", "-")'


def _meta(
    unit: str | None = None,
    *,
    negative: bool = False,
    check: FieldCheck | None = None,
    item_check: FieldCheck | None = None,
    toml_key: str | None = None,
) -> dict[str, object]:
    """Build a field's metadata for the loader."""
    meta: dict[str, object] = {}
    if unit is not None:
        meta[UNIT] = unit
    if negative:
        meta[NEGATIVE] = True
    if check is not None:
        meta[CHECK] = check
    if item_check is not None:
        meta[ITEM_CHECK] = item_check
    if toml_key is not None:
        meta[TOML_KEY] = toml_key
    return meta


_DURATION: Final = _meta("duration")
_NON_ZERO: Final = _meta("duration", check=_positive_duration)
_LIFETIME: Final = _meta("duration", check=_lifetime)
_SKEW: Final = _meta("duration", negative=True)
_NAME: Final = _meta(check=_name)


# --------------------------------------------------------------------------------------------
# [scenario]


@attrs.frozen(kw_only=True)
class ScenarioMeta:
    """The ``[scenario]`` table.

    Attributes:
        name: the scenario's name (in summary.json).
        description: free text.
        duration: virtual seconds simulated; jobs still running then are reported as running.
        seed: the root of every RNG in the run (``--seed`` overrides it).
        epoch: Unix seconds that virtual t = 0 stands for (token ``iat``/``exp`` are
            ``epoch + t``); written as RFC 3339 in the file.
    """

    name: str = attrs.field(metadata=_meta(check=_name))
    description: str = ""
    duration: float = attrs.field(metadata=_NON_ZERO)
    seed: int = 0
    epoch: float = attrs.field(default=DEFAULT_EPOCH, metadata=_meta("epoch"))


# --------------------------------------------------------------------------------------------
# [[issuers]]


@attrs.frozen(kw_only=True)
class UserSpec:
    """An ``[[issuers.users]]`` entry: a user the issuer knows.

    Attributes:
        name: the user name (the token's ``sub``).
        groups: groups such as ``"/ligo"`` (``wlcg.groups``): the default groups.
        optional_groups: groups the user belongs to that tokens list only when asked for by
            name (``wlcg.groups:/ligo/test``), as INDIGO IAM's optional groups.
        scopes: the most this user may be granted, as scope strings (each checked with
            :func:`scitokens_batch.tokens._scopes.parse_scope` at load time).
        password: what the user enters on the issuer's device approval page (live mode);
            absent: a live run draws one from the CSPRNG per run (kept in its 0600 files).
    """

    name: str = attrs.field(metadata=_meta(check=_user_name))
    groups: tuple[str, ...] = attrs.field(default=(), metadata=_meta(item_check=_group))
    scopes: tuple[str, ...] = ()
    password: str | None = attrs.field(default=None, repr=False, metadata=_meta(check=_non_empty))
    optional_groups: tuple[str, ...] = attrs.field(default=(), metadata=_meta(item_check=_group))


class GrantName(enum.Enum):
    """A grant type as a scenario file names it (the world maps it to the protocol's URN)."""

    REFRESH_TOKEN = "refresh_token"  #: RFC 6749 §6
    CLIENT_CREDENTIALS = "client_credentials"  #: RFC 6749 §4.4 (K3)
    TOKEN_EXCHANGE = "token_exchange"  #: RFC 8693 (K4)
    DEVICE_CODE = "device_code"  #: RFC 8628 (K2)
    AUTHORIZATION_CODE = "authorization_code"  #: RFC 6749 §4.1 with PKCE S256 (RFC 7636)


@attrs.frozen(kw_only=True)
class ClientSpec:
    """An ``[[issuers.clients]]`` entry: an OAuth client registered at the issuer.

    Attributes:
        name: the ``client_id``; the ``sub`` of its client credentials tokens (A13).
        secret: its client secret; absent: a public client (no secret).
        grants: the grants it may use.
        scopes: the most its client credentials tokens may hold (each checked with
            ``parse_scope`` at load time).
        audiences: the audiences it may ask for; empty: the scenario's known audiences (its
            data servers', transfer service's and workloads' audiences, and the issuer URL);
            ``["*"]``: any audience (an explicit opt-in).
        access_token_lifetime: seconds its access tokens live, whatever the grant (K5, P13);
            absent: the issuer's ``access_token_lifetime``.
        redirect_uris: the redirection URIs of the authorization code grant, matched exactly.
    """

    name: str = attrs.field(metadata=_meta(check=_client_id))
    secret: str | None = attrs.field(default=None, repr=False, metadata=_meta(check=_non_empty))
    grants: tuple[GrantName, ...] = attrs.field(
        metadata=_meta(check=lambda v: None if v else "at least one grant")
    )
    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] = attrs.field(default=(), metadata=_meta(item_check=_non_empty))
    access_token_lifetime: float | None = attrs.field(default=None, metadata=_LIFETIME)
    redirect_uris: tuple[str, ...] = attrs.field(default=(), metadata=_meta(item_check=_non_empty))


@attrs.frozen(kw_only=True)
class RegistrationSpec:
    """An issuer's ``[issuers.registration]``: dynamic client registration (RFC 7591) on.

    Attributes:
        grants: the grants a registered client may get (what it asks beyond is dropped).
        scopes: the most any token of a registered client may hold (each checked with
            ``parse_scope``); the user's policy applies as well.
        max_clients: registered clients kept at most.
    """

    grants: tuple[GrantName, ...] = (
        GrantName.AUTHORIZATION_CODE,
        GrantName.DEVICE_CODE,
        GrantName.REFRESH_TOKEN,
    )
    scopes: tuple[str, ...] = ()
    max_clients: int = attrs.field(default=1000, metadata=_meta(check=_positive_number))


@attrs.frozen(kw_only=True)
class IssuerSpec:
    """An ``[[issuers]]`` entry: a VO token issuer.

    Attributes:
        name: the issuer's actor name.
        url: the ``iss`` claim, byte for byte: https, no trailing ``/``.
        profile: token profile (``"scitokens"`` or ``"wlcg"``).
        algorithm: signing algorithm (ES256 or RS256).
        access_token_lifetime: seconds an access token is valid.
        refresh_token_lifetime: seconds a refresh token is valid.
        nbf_backdate: ``nbf = iat - nbf_backdate``, seconds.
        latency: seconds of one request/response to the issuer.
        max_requests_per_second: above this the issuer answers 503; None: unlimited.
        max_requests_per_second_per_address: live mode: a token bucket per client address on
            the form endpoints (429 with Retry-After beyond it); None: unlimited.
        refresh_token_grace: how long a retry of a rotated refresh token still gets its one
            successor back (E4, RFC 9700 §4.14.2); later reuse revokes the family. 5 minutes.
        device_code_lifetime: ``expires_in`` of a device code (RFC 8628; K2: 1800 s).
        device_poll_interval: the device code polling ``interval`` it starts with (5 s).
        users: the users it knows.
        clients: the OAuth clients registered at it, besides the token manager (which the
            world registers unless a client of that name is listed here).
    """

    name: str = attrs.field(metadata=_NAME)
    url: str = attrs.field(metadata=_meta(check=_issuer_url))
    profile: Profile = Profile.SCITOKENS
    algorithm: Algorithm = Algorithm.ES256
    access_token_lifetime: float = attrs.field(default=1200.0, metadata=_LIFETIME)
    refresh_token_lifetime: float = attrs.field(default=30 * 86400.0, metadata=_LIFETIME)
    nbf_backdate: float = attrs.field(default=0.0, metadata=_DURATION)
    latency: float = attrs.field(default=0.0, metadata=_DURATION)
    max_requests_per_second: float | None = attrs.field(
        default=None, metadata=_meta(check=_positive_number)
    )
    max_requests_per_second_per_address: float | None = attrs.field(
        default=1000.0, metadata=_meta(check=_positive_number)
    )
    refresh_token_grace: float = attrs.field(default=300.0, metadata=_DURATION)
    device_code_lifetime: float = attrs.field(default=1800.0, metadata=_NON_ZERO)
    device_poll_interval: float = attrs.field(default=5.0, metadata=_NON_ZERO)
    users: tuple[UserSpec, ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    #: dynamic client registration (RFC 7591): off unless this table is present
    registration: RegistrationSpec | None = None

    def user(self, name: str) -> UserSpec | None:
        """Find a user of this issuer.

        Args:
            name: the user name.

        Returns:
            The user called ``name``, or None.
        """
        return next((user for user in self.users if user.name == name), None)

    def client(self, name: str) -> ClientSpec | None:
        """Find a client registered at this issuer.

        Args:
            name: the client id.

        Returns:
            The client called ``name``, or None.
        """
        return next((client for client in self.clients if client.name == name), None)


# --------------------------------------------------------------------------------------------
# [token_manager], [queue_manager], [[execute_hosts]]


@attrs.frozen(kw_only=True)
class TokenManagerSpec:
    """The ``[token_manager]`` table (HTCondor's credmon).

    Attributes:
        renew_fraction: renew an access token once this fraction of its lifetime has
            passed (credmon: 0.5, conformance I5).
        scan_interval: seconds between scans of the credential store (credmon: 60 s, I4).
        retry_backoff: first retry delay after a failed refresh; doubles each time.
        retry_backoff_max: the cap of that doubling.
    """

    renew_fraction: float = attrs.field(default=0.5, metadata=_meta(check=_fraction))
    scan_interval: float = attrs.field(default=60.0, metadata=_NON_ZERO)
    retry_backoff: float = attrs.field(default=30.0, metadata=_NON_ZERO)
    retry_backoff_max: float = attrs.field(default=600.0, metadata=_NON_ZERO)


@attrs.frozen(kw_only=True)
class QueueManagerSpec:
    """The ``[queue_manager]`` table (schedd + negotiator).

    Attributes:
        negotiation_interval: seconds between matchmaking cycles.
        credential_wait: how long to wait for a usable access token before holding a job
            with hold code 4 (``CREDD_POLLING_TIMEOUT``: 20 s, I14).
        release_held_after: periodic release of credential holds; 0: never release.
        alive_interval: live mode: seconds between the schedd's keep-alives of its claims on
            each execute host (HTCondor's ``ALIVE_INTERVAL``, 300 s).
        job_lease: live mode: a running job whose claim no keep-alive confirmed for this long
            is evicted and goes back to idle (HTCondor's ``JobLeaseDuration``, 2400 s). In
            virtual time an ``execute_host_crash`` tells the queue manager at once.
    """

    negotiation_interval: float = attrs.field(default=20.0, metadata=_NON_ZERO)
    credential_wait: float = attrs.field(default=20.0, metadata=_DURATION)
    release_held_after: float = attrs.field(default=600.0, metadata=_DURATION)
    alive_interval: float = attrs.field(default=300.0, metadata=_NON_ZERO)
    job_lease: float = attrs.field(default=2400.0, metadata=_NON_ZERO)


@attrs.frozen(kw_only=True)
class ExecuteHostSpec:
    """An ``[[execute_hosts]]`` entry: a group of identical execute hosts.

    The group ``name = "node", count = 40`` stands for hosts ``node-0`` .. ``node-39``
    (always ``<name>-<i>``, also when ``count = 1``). A fault's ``host`` and a partition
    may name one host, or the group name meaning every host of the group.

    Attributes:
        name: the group name.
        count: how many hosts.
        slots: job slots per host.
        sandbox_refresh: seconds between re-staging fresh tokens into running sandboxes
            (``SEC_CREDENTIAL_REFRESH``: 300 s, I13); 0 disables.
        clock_skew: the hosts' clock minus true time, seconds (may be negative).
    """

    name: str = attrs.field(metadata=_NAME)
    count: int = attrs.field(default=1, metadata=_meta(check=_non_negative_int))
    slots: int = attrs.field(default=1, metadata=_meta(check=_positive_int))
    sandbox_refresh: float = attrs.field(default=300.0, metadata=_DURATION)
    clock_skew: float = attrs.field(default=0.0, metadata=_SKEW)
    #: Extra machine ClassAd attributes (``{ HasSciTokens = true, OpSysAndVer = "AlmaLinux9" }``)
    #: besides ``Cpus`` and ``Memory`` (issue 13; docs/htcondor.md).
    machine_ad: dict[str, str | int | float | bool] = attrs.field(factory=dict)

    @property
    def host_names(self) -> tuple[str, ...]:
        """The names of the hosts in this group: ``name-0`` .. ``name-(count-1)``."""
        return tuple(f"{self.name}-{i}" for i in range(self.count))


# --------------------------------------------------------------------------------------------
# [[data_servers]]


@attrs.frozen(kw_only=True)
class FileSetSpec:
    """A ``[[data_servers.files]]`` entry: ``count`` files named ``0`` .. ``count-1``.

    Attributes:
        path: the directory the files are in, as the server sees it (base paths included).
        count: how many files.
        size: bytes per file.
    """

    path: str = attrs.field(metadata=_meta(check=_absolute_path))
    count: int = attrs.field(metadata=_meta(check=_non_negative_int))
    size: int = attrs.field(metadata=_meta("size"))

    @property
    def file_paths(self) -> tuple[str, ...]:
        """The full paths of the files."""
        prefix = self.path.rstrip("/")
        return tuple(f"{prefix}/{i}" for i in range(self.count))


@attrs.frozen(kw_only=True)
class StorageAreaSpec:
    """A ``[[data_servers.areas]]`` entry: a storage area with group ACLs (StoRM, dCache).

    A token whose storage scopes do not allow an access is still admitted when one of its
    ``wlcg.groups`` may do it in the area with the longest path matching the server path
    (whole components: ``/protected`` covers ``/protected/x``, not ``/protectedx``).

    Attributes:
        path: the area's root, as the server sees it (base paths included).
        read: groups that may read and stat (list) below it.
        write: groups that may create, overwrite, delete and make directories below it (and
            read).
    """

    path: str = attrs.field(metadata=_meta(check=_absolute_path))
    read: tuple[str, ...] = attrs.field(default=(), metadata=_meta(item_check=_group))
    write: tuple[str, ...] = attrs.field(default=(), metadata=_meta(item_check=_group))


class TpcMode(enum.Enum):
    """How the transfer service asks for a third-party copy (WLCG HTTP-TPC)."""

    PULL = "pull"  #: COPY to the destination with ``Source`` (the destination fetches)
    PUSH = "push"  #: COPY to the source with ``Destination`` (the source uploads)


class DataBackend(enum.Enum):
    """What serves a data server in a live run."""

    BUILTIN = "builtin"  #: our data server (the same code as in virtual time)
    XROOTD = "xrootd"  #: XRootD 5.5.3 + libXrdAccSciTokens (live mode only)


@attrs.frozen(kw_only=True)
class DataServerSpec:
    """A ``[[data_servers]]`` entry: a storage element that verifies tokens.

    Attributes:
        name: the server's actor name, used in step paths (``"frames:/frames/x"``).
        audience: the audience this server accepts (exact match; never ``"ANY"``).
        bandwidth: bytes per second shared by all transfers to and from it.
        leeway: clock leeway in seconds when checking ``exp``/``nbf``/``iat``.
        key_refresh: re-fetch an issuer's JWKS after this many seconds (scitokens-cpp: 600).
        key_expiry: stop trusting cached keys after this long without a successful fetch.
        unknown_kid_refetch: after a token with an unknown ``kid``, fetch the JWKS again at
            most this often; None (``"never"``): wait for ``key_refresh``, as
            scitokens-cpp 0.7.3 does (H4).
        token_cache: seconds an accepted token is cached (never past its ``exp``); 0: off.
        clock_skew: this server's clock minus true time (may be negative).
        issuers: trusted issuer name -> base path: token path ``/frames`` is server path
            ``<base>/frames`` (B6).
        files: files present at the start.
        backend: ``"builtin"`` (ours) or ``"xrootd"`` (Debian's XRootD with XrdHttp and the
            SciTokens plugin, ``--live`` only; the settings above that XRootD has no knob for,
            such as ``leeway`` or ``token_cache``, do not apply to it).
        quota: live mode, ours: the most bytes its data tree may occupy on disk; an upload
            that would go beyond is refused with 507. Virtual time holds no bytes and does not
            apply it.
        tpc_sources: live mode, ours: the origins a third-party copy (COPY) may pull from
            (``"https://host:port"``, ``"https://*.domain:port"``); None: the scenario's own
            data servers. Only https sources are ever fetched.
        areas: storage areas granting by ``wlcg.groups`` (:class:`StorageAreaSpec`), in
            both modes; XRootD gets them as XrdAcc group rules (differences: docs/live.md).
    """

    name: str = attrs.field(metadata=_NAME)
    audience: str = attrs.field(metadata=_meta(check=_server_audience))
    bandwidth: float = attrs.field(default=1e9, metadata=_meta("rate", check=_positive_number))
    leeway: float = attrs.field(default=0.0, metadata=_DURATION)
    key_refresh: float = attrs.field(default=600.0, metadata=_NON_ZERO)
    key_expiry: float = attrs.field(default=4 * 86400.0, metadata=_NON_ZERO)
    unknown_kid_refetch: float | None = attrs.field(
        default=None, metadata=_meta("duration_or_never")
    )
    token_cache: float = attrs.field(default=0.0, metadata=_DURATION)
    clock_skew: float = attrs.field(default=0.0, metadata=_SKEW)
    issuers: Mapping[str, str] = attrs.field(
        factory=dict, metadata=_meta(item_check=_absolute_path)
    )
    files: tuple[FileSetSpec, ...] = ()
    backend: DataBackend = DataBackend.BUILTIN
    quota: int = attrs.field(default=10_000_000_000, metadata=_meta("size"))
    tpc_sources: tuple[str, ...] | None = attrs.field(
        default=None, metadata=_meta(item_check=_tpc_source)
    )
    areas: tuple[StorageAreaSpec, ...] = ()


# --------------------------------------------------------------------------------------------
# [transfer_service], [data_manager], [[datasets]], [[rules]]: Rucio -> FTS -> storage (L1-L7)


@attrs.frozen(kw_only=True)
class TransferServiceSpec:
    """The ``[transfer_service]`` table (FTS): third-party copies with managed tokens (L5-L7).

    Attributes:
        name: its actor name.
        issuer: the issuer it trusts for its own tokens and exchanges storage tokens at.
        client: its OAuth client id at that issuer (needs the ``token_exchange`` and
            ``refresh_token`` grants, K5).
        audience: its audience: the FTS token must name it (L1).
        concurrency: copies running at once.
        refresh_margin: refresh an access token this long before its ``exp``, and start no
            copy with a token valid for less (L7: 300 s).
        retry_backoff: first retry delay (token requests, failed copies); doubles each time.
        retry_backoff_max: the cap of that doubling.
        max_retries: a failed copy is retried this many times before the file fails.
        tpc_mode: ``"pull"`` (default) or ``"push"``: which end of each copy it asks.
    """

    name: str = attrs.field(default="fts", metadata=_NAME)
    issuer: str
    client: str = attrs.field(metadata=_meta(check=_client_id))
    audience: str = attrs.field(metadata=_meta(check=_server_audience))
    concurrency: int = attrs.field(default=10, metadata=_meta(check=_positive_int))
    refresh_margin: float = attrs.field(default=300.0, metadata=_NON_ZERO)
    retry_backoff: float = attrs.field(default=30.0, metadata=_NON_ZERO)
    retry_backoff_max: float = attrs.field(default=600.0, metadata=_NON_ZERO)
    max_retries: int = attrs.field(default=3, metadata=_meta(check=_non_negative_int))
    tpc_mode: TpcMode = TpcMode.PULL


@attrs.frozen(kw_only=True)
class DataManagerSpec:
    """The ``[data_manager]`` table (Rucio): replication rules into transfer jobs (L1-L3).

    Attributes:
        name: its actor name.
        issuer: the issuer of its tokens (FTS token and storage tokens, by client credentials).
        client: its OAuth client id there (needs the ``client_credentials`` grant, K3).
        token_min_lifetime: a cached token is handed out only with at least this much left
            (L3: Rucio's ``token_min_lifetime``, 300 s).
        bulk: at most this many files per transfer job.
        retry_backoff: first retry delay while the issuer or the transfer service is
            unreachable; doubles each time.
        retry_backoff_max: the cap of that doubling.
    """

    name: str = attrs.field(default="rucio", metadata=_NAME)
    issuer: str
    client: str = attrs.field(metadata=_meta(check=_client_id))
    token_min_lifetime: float = attrs.field(default=300.0, metadata=_DURATION)
    bulk: int = attrs.field(default=100, metadata=_meta(check=_positive_int))
    retry_backoff: float = attrs.field(default=30.0, metadata=_NON_ZERO)
    retry_backoff_max: float = attrs.field(default=600.0, metadata=_NON_ZERO)


@attrs.frozen(kw_only=True)
class DatasetSpec:
    """A ``[[datasets]]`` entry: ``files`` files named ``0`` .. ``files-1`` in a directory.

    Attributes:
        name: the dataset's name (rules name it).
        server: the data server holding it at the start.
        path: its directory as the token sees it: the server path is the server's base path
            for the data manager's issuer followed by this (B6).
        files: how many files.
        size: bytes per file.
    """

    name: str = attrs.field(metadata=_NAME)
    server: str
    path: str = attrs.field(metadata=_meta(check=_absolute_path))
    files: int = attrs.field(metadata=_meta(check=_non_negative_int))
    size: int = attrs.field(metadata=_meta("size"))


@attrs.frozen(kw_only=True)
class RuleSpec:
    """A ``[[rules]]`` entry: a replication rule, copy ``dataset`` to ``destination``.

    Attributes:
        name: the rule's name (transfer job ids are ``<name>-<k>``); absent: ``rule-<i>``
            for the i-th rule of the file (from 0).
        dataset: the dataset to copy.
        destination: the data server to copy it to.
        path: the directory of the copies at the destination, as the token sees it.
        at: when the rule is created.
    """

    name: str | None = attrs.field(default=None, metadata=_NAME)
    dataset: str
    destination: str
    path: str = attrs.field(metadata=_meta(check=_absolute_path))
    at: float = attrs.field(default=0.0, metadata=_DURATION)

    def rule_name(self, index: int) -> str:
        """The rule's name: ``name``, or ``rule-<index>``."""
        return self.name if self.name is not None else f"rule-{index}"


# --------------------------------------------------------------------------------------------
# [[workloads]]: arrivals (tagged by `kind`)


@attrs.frozen(kw_only=True)
class PoissonArrival:
    """Jobs arrive one at a time with exponential gaps of mean ``mean_interval`` seconds."""

    kind: ClassVar[str] = "poisson"
    mean_interval: float = attrs.field(metadata=_NON_ZERO)


@attrs.frozen(kw_only=True)
class BurstArrival:
    """All jobs are submitted at virtual time ``at`` seconds."""

    kind: ClassVar[str] = "burst"
    at: float = attrs.field(metadata=_DURATION)


@attrs.frozen(kw_only=True)
class EveryArrival:
    """One job every ``interval`` seconds, the first at t = 0."""

    kind: ClassVar[str] = "every"
    interval: float = attrs.field(metadata=_NON_ZERO)


Arrival: TypeAlias = PoissonArrival | BurstArrival | EveryArrival


# Compute durations (tagged by `kind`)


@attrs.frozen(kw_only=True)
class FixedCompute:
    """Compute for exactly ``duration`` seconds."""

    kind: ClassVar[str] = "fixed"
    duration: float = attrs.field(metadata=_DURATION)


@attrs.frozen(kw_only=True)
class LognormalCompute:
    """Compute for a log-normal time: ``median`` seconds, ``sigma`` of the underlying normal.

    Draw with ``rng.lognormvariate(math.log(median), sigma)``.
    """

    kind: ClassVar[str] = "lognormal"
    median: float = attrs.field(metadata=_NON_ZERO)
    sigma: float = attrs.field(metadata=_meta(check=_non_negative_number))


@attrs.frozen(kw_only=True)
class UniformCompute:
    """Compute for a time drawn uniformly from [``low``, ``high``] seconds."""

    kind: ClassVar[str] = "uniform"
    low: float = attrs.field(metadata=_DURATION)
    high: float = attrs.field(metadata=_DURATION)


Compute: TypeAlias = FixedCompute | LognormalCompute | UniformCompute


# Steps (told apart by which step key they have: read, write, compute)


@attrs.frozen(kw_only=True)
class StepTarget:
    """Where a read or write goes: written ``"<data server>:<path>"`` in the file.

    Attributes:
        server: the data server's name.
        path: the path as the token sees it (the server adds its base path for the issuer);
            may hold the placeholders ``{job}`` and ``{random_file}``.
    """

    server: str
    path: str

    def __str__(self) -> str:
        return f"{self.server}:{self.path}"


class _Targeted:
    """``step.server`` and ``step.path``, shortcuts to a read or write step's target."""

    target: StepTarget

    @property
    def server(self) -> str:
        """The data server's name."""
        return self.target.server

    @property
    def path(self) -> str:
        """The path as the token sees it."""
        return self.target.path


@attrs.frozen(kw_only=True)
class ReadStep(_Targeted):
    """``{ read = "server:/path", size = "400MB" }``: download ``size`` bytes.

    Attributes:
        target: server and path (``step.server``/``step.path`` are shortcuts).
        size: bytes transferred.
        repeat: the step is done this many times in a row (a job with 100 accesses need not
            list 100 steps); each repetition draws its own ``{random_file}``.
    """

    key: ClassVar[str] = "read"
    target: StepTarget = attrs.field(metadata=_meta("target", toml_key="read"))
    size: int = attrs.field(metadata=_meta("size"))
    repeat: int = attrs.field(default=1, metadata=_meta(check=_positive_int))


@attrs.frozen(kw_only=True)
class WriteStep(_Targeted):
    """``{ write = "server:/path", size = "20MB" }``: upload ``size`` bytes.

    Attributes:
        target: server and path (``step.server``/``step.path`` are shortcuts).
        size: bytes transferred.
        repeat: the step is done this many times in a row (a job with 100 accesses need not
            list 100 steps); each repetition draws its own ``{random_file}``.
    """

    key: ClassVar[str] = "write"
    target: StepTarget = attrs.field(metadata=_meta("target", toml_key="write"))
    size: int = attrs.field(metadata=_meta("size"))
    repeat: int = attrs.field(default=1, metadata=_meta(check=_positive_int))


@attrs.frozen(kw_only=True)
class ComputeStep:
    """``{ compute = { kind = "lognormal", median = "90m", sigma = 0.4 } }``: use the CPU.

    Attributes:
        compute: the distribution of the compute time.
    """

    key: ClassVar[str] = "compute"
    compute: Compute


def _argv(value: object) -> str | None:
    if not isinstance(value, tuple) or not value or not all(isinstance(a, str) for a in value):
        return "expected a non-empty list of strings (the command and its arguments)"
    if not value[0]:
        return "expected a command name as the first item, received an empty string"
    return None


@attrs.frozen(kw_only=True)
class ExecStep:
    """``{ exec = ["sh", "-c", "curl ..."], timeout = "10m" }``: run a real command in the
    job's sandbox (``--live`` only). It finds its token by WLCG discovery
    (``BEARER_TOKEN_FILE``) or in ``$_CONDOR_CREDS``; a non-zero exit code fails the job.

    Attributes:
        argv: the command and its arguments.
        timeout: the command is killed after this long (and the job fails).
    """

    key: ClassVar[str] = "exec"
    argv: tuple[str, ...] = attrs.field(metadata=_meta(check=_argv, toml_key="exec"))
    timeout: float = attrs.field(default=3600.0, metadata=_NON_ZERO)


Step: TypeAlias = ReadStep | WriteStep | ComputeStep | ExecStep


class TokenUse(enum.Enum):
    """How a job uses the token in its sandbox (pitfall P16)."""

    REREAD = "reread"  #: read the sandbox token file before each use (correct)
    COPY_AT_START = "copy-at-start"  #: keep the token seen at job start (the anti-pattern)


@attrs.frozen(kw_only=True)
class TokenRequestSpec:
    """A workload's ``token`` table: what the job's credential is (``use_oauth_services``).

    Attributes:
        service: the credential service name (the ``<service>.use`` file in the sandbox).
        scopes: requested scopes (each checked with ``parse_scope`` at load time).
        audience: requested ``aud``.
    """

    service: str = attrs.field(metadata=_meta(check=_service))
    scopes: tuple[str, ...]
    audience: str = attrs.field(metadata=_meta(check=_non_empty))


@attrs.frozen(kw_only=True)
class OAuthToken:
    """One credential of a submitted job: ``use_oauth_services`` with its handle.

    Attributes:
        service: the service as ``use_oauth_services`` names it.
        handle: the handle (``<svc>_oauth_permissions_<handle>``), or ``""``.
        scopes: the requested permissions.
        audience: the requested resource (``aud``).
    """

    service: str
    handle: str
    scopes: tuple[str, ...]
    audience: str

    @property
    def name(self) -> str:
        """``<svc>`` or ``<svc>_<handle>``: the sandbox file is ``<name>.use`` (HTCondor)."""
        return f"{self.service}_{self.handle}" if self.handle else self.service


@attrs.frozen(kw_only=True)
class SubmitJob:
    """One proc of a submit description, macros and item data expanded.

    Attributes:
        proc: the proc number (from 0).
        request_cpus: ``request_cpus``.
        request_memory: ``request_memory`` in MB.
        requirements: the job's ``requirements`` expression (ClassAd text), or ``"true"``.
        rank: the job's ``rank`` expression, or ``"0"``.
        attributes: ``+Name = value`` / ``MY.Name = value`` attributes, as ClassAd text.
        argv: ``executable`` and ``arguments`` (empty without an executable).
        tokens: the job's credentials.
    """

    proc: int
    request_cpus: int
    request_memory: int
    requirements: str
    rank: str
    attributes: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]
    tokens: tuple[OAuthToken, ...]


@attrs.frozen(kw_only=True)
class WorkloadSpec:
    """A ``[[workloads]]`` entry: a stream of identical jobs of one user.

    Attributes:
        name: the workload's name.
        user: the submitting user, one of ``issuer``'s users.
        issuer: the issuer whose tokens the jobs carry.
        jobs: how many jobs are submitted.
        arrival: when they are submitted.
        token: the credential each job gets.
        token_use: how jobs use the sandbox token.
        steps: what each job does, in order (at least one).
    """

    name: str = attrs.field(metadata=_NAME)
    user: str
    issuer: str
    jobs: int = attrs.field(metadata=_meta(check=_non_negative_int))
    arrival: Arrival
    token: TokenRequestSpec
    token_use: TokenUse = TokenUse.REREAD
    steps: tuple[Step, ...] = attrs.field(
        metadata=_meta(check=lambda v: None if v else "at least one step")
    )
    #: An HTCondor submit description (path relative to the scenario): the jobs' count, token,
    #: resources and match expressions (issue 13; docs/htcondor.md).
    submit: str | None = None
    #: The submit description's jobs, one a proc (filled by the loader from ``submit``).
    submitted: tuple[SubmitJob, ...] = attrs.field(default=(), metadata={INTERNAL: True})


# --------------------------------------------------------------------------------------------
# [[faults]] (tagged by `kind`)


@attrs.frozen(kw_only=True)
class IssuerOutage:
    """The issuer answers nothing (connection refused) from ``at`` for ``duration`` seconds."""

    kind: ClassVar[str] = "issuer_outage"
    issuer: str
    at: float = attrs.field(metadata=_DURATION)
    duration: float = attrs.field(metadata=_NON_ZERO)


@attrs.frozen(kw_only=True)
class KeyRotation:
    """The issuer publishes a new key at ``at`` and signs with it from ``at + publish_ahead``."""

    kind: ClassVar[str] = "key_rotation"
    issuer: str
    at: float = attrs.field(metadata=_DURATION)
    publish_ahead: float = attrs.field(default=0.0, metadata=_DURATION)


@attrs.frozen(kw_only=True)
class ClockStep:
    """A host's clock jumps by ``offset`` seconds (may be negative) at ``at``.

    ``host`` names one execute host (``"node-3"``), a group (``"node"``: all its hosts), or a
    data server, whose verification then judges ``exp``/``nbf``/``iat`` by the stepped clock.
    An execute host's clock shows in the ``host_time`` of its ``stage`` events; token checks
    happen at the data servers, so its skew alone never refuses a token.
    """

    kind: ClassVar[str] = "clock_step"
    host: str
    at: float = attrs.field(metadata=_DURATION)
    offset: float = attrs.field(metadata=_SKEW)


@attrs.frozen(kw_only=True)
class TokenManagerCrash:
    """The token manager stops at ``at`` and restarts ``restart_after`` seconds later.

    With ``lose_state`` its credential store is lost (the refresh tokens with it).
    """

    kind: ClassVar[str] = "token_manager_crash"
    at: float = attrs.field(metadata=_DURATION)
    restart_after: float = attrs.field(metadata=_DURATION)
    lose_state: bool = False


@attrs.frozen(kw_only=True)
class ExecuteHostCrash:
    """An execute host, or every host of a group, crashes at ``at`` for ``restart_after``."""

    kind: ClassVar[str] = "execute_host_crash"
    host: str
    at: float = attrs.field(metadata=_DURATION)
    restart_after: float = attrs.field(metadata=_DURATION)


@attrs.frozen(kw_only=True)
class DataServerRestart:
    """A data server goes down at ``at`` for ``downtime`` seconds and loses its caches."""

    kind: ClassVar[str] = "data_server_restart"
    server: str
    at: float = attrs.field(metadata=_DURATION)
    downtime: float = attrs.field(metadata=_DURATION)


@attrs.frozen(kw_only=True)
class Partition:
    """The two actors named in ``between`` cannot reach each other from ``at`` for ``duration``.

    An actor is an issuer, a data server, an execute host or host group, ``"token_manager"``
    or ``"queue_manager"``.
    """

    kind: ClassVar[str] = "partition"
    between: tuple[str, str]
    at: float = attrs.field(metadata=_DURATION)
    duration: float = attrs.field(metadata=_NON_ZERO)


@attrs.frozen(kw_only=True)
class RefreshTokenRevoked:
    """The issuer revokes ``user``'s refresh token at ``at``.

    ``issuer`` None means every issuer that knows the user.
    """

    kind: ClassVar[str] = "refresh_token_revoked"
    user: str
    at: float = attrs.field(metadata=_DURATION)
    issuer: str | None = None


class RefreshTokenRestore(enum.Enum):
    """What is left of the transfer service's refresh tokens after a state loss (P12)."""

    NONE = "none"  #: nothing: no refresh can even be asked for
    BACKUP = "backup"  #: a backup from before their last rotation: tokens already used


@attrs.frozen(kw_only=True)
class TransferServiceStateLoss:
    """The transfer service loses its stored refresh tokens at ``at`` (P12: FTS DB loss).

    With ``restore = "backup"`` each comes back as it was before its last rotation: the one
    already used, which the issuer accepts again only within ``refresh_token_grace``.
    """

    kind: ClassVar[str] = "transfer_service_state_loss"
    at: float = attrs.field(metadata=_DURATION)
    restore: RefreshTokenRestore = RefreshTokenRestore.NONE


Fault: TypeAlias = (
    IssuerOutage
    | KeyRotation
    | ClockStep
    | TokenManagerCrash
    | ExecuteHostCrash
    | DataServerRestart
    | Partition
    | RefreshTokenRevoked
    | TransferServiceStateLoss
)


# --------------------------------------------------------------------------------------------
# [expect] and the whole file


@attrs.frozen(kw_only=True)
class ExpectSpec:
    """The ``[expect]`` table.

    Attributes:
        checks: expectations judged against summary.json after the run.
    """

    checks: tuple[Check, ...] = ()


@attrs.frozen(kw_only=True)
class Scenario:
    """A whole scenario file.

    Attributes:
        meta: the ``[scenario]`` table.
        issuers: at least one issuer.
        token_manager: the credmon settings.
        queue_manager: the schedd/negotiator settings.
        execute_hosts: host groups.
        data_servers: storage elements.
        workloads: job streams.
        transfer_service: FTS (needed by rules).
        data_manager: Rucio (needed by datasets and rules).
        datasets: datasets on the data servers.
        rules: replication rules.
        faults: injected faults, in file order.
        expect: expectations.
    """

    meta: ScenarioMeta = attrs.field(metadata=_meta(toml_key="scenario"))
    issuers: tuple[IssuerSpec, ...] = attrs.field(
        metadata=_meta(check=lambda v: None if v else "at least one issuer")
    )
    token_manager: TokenManagerSpec = attrs.field(factory=TokenManagerSpec)
    queue_manager: QueueManagerSpec = attrs.field(factory=QueueManagerSpec)
    execute_hosts: tuple[ExecuteHostSpec, ...] = ()
    data_servers: tuple[DataServerSpec, ...] = ()
    workloads: tuple[WorkloadSpec, ...] = ()
    transfer_service: TransferServiceSpec | None = None
    data_manager: DataManagerSpec | None = None
    datasets: tuple[DatasetSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    faults: tuple[Fault, ...] = ()
    expect: ExpectSpec = attrs.field(factory=ExpectSpec)

    def issuer(self, name: str) -> IssuerSpec:
        """Find an issuer by name.

        Args:
            name: the issuer's name.

        Returns:
            The issuer called ``name``.

        Raises:
            KeyError: there is none (a loaded scenario never names a missing one).
        """
        for issuer in self.issuers:
            if issuer.name == name:
                return issuer
        raise KeyError(name)

    def data_server(self, name: str) -> DataServerSpec:
        """Find a data server by name.

        Args:
            name: the data server's name.

        Returns:
            The data server called ``name``.

        Raises:
            KeyError: there is none.
        """
        for server in self.data_servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def dataset(self, name: str) -> DatasetSpec:
        """Find a dataset by name.

        Args:
            name: the dataset's name.

        Returns:
            The dataset called ``name``.

        Raises:
            KeyError: there is none.
        """
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(name)

    @property
    def host_names(self) -> tuple[str, ...]:
        """Every execute host's name, group by group."""
        return tuple(name for group in self.execute_hosts for name in group.host_names)

    def resolve_hosts(self, name: str) -> tuple[str, ...]:
        """The hosts a fault's ``host`` means: a group name gives all its hosts.

        Args:
            name: a host name (``"node-3"``) or a group name (``"node"``).

        Returns:
            The host names; empty when ``name`` is neither.
        """
        for group in self.execute_hosts:
            if group.name == name:
                return group.host_names
        return (name,) if name in self.host_names else ()
