"""The messages actors exchange: frozen, keyword-only attrs classes that validate on creation.

The same messages travel over the in-memory network (virtual time) and, in live mode, are
mapped onto HTTP requests and responses (OAuth2 form posts, JWKS documents, WebDAV-style data
requests). Tokens inside messages are never shown by ``repr`` (no token in a log line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final, TypeAlias

import attrs

from ..tokens import Operation, PublicKey, Reason

__all__ = [
    "CLIENT_AUTH_BASIC",
    "CLIENT_AUTH_NONE",
    "CLIENT_AUTH_POST",
    "GRANT_AUTHORIZATION_CODE",
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_DEVICE_CODE",
    "GRANT_REFRESH",
    "GRANT_TOKEN_EXCHANGE",
    "NAME_PATTERN",
    "TOKEN_TYPE_ACCESS",
    "TOKEN_TYPE_JWT",
    "TOKEN_TYPE_REFRESH",
    "AccessStep",
    "Ack",
    "AuthorizationRequest",
    "AuthorizationResponse",
    "ClaimAlive",
    "ClientRegistrationRequest",
    "ClientRegistrationResponse",
    "ComputeStep",
    "CredentialRequest",
    "CredentialResponse",
    "CredentialUpdate",
    "DataRequest",
    "DataResponse",
    "DeviceApproval",
    "DeviceAuthorizationRequest",
    "DeviceAuthorizationResponse",
    "ExecStep",
    "JobFinished",
    "JobProgram",
    "JobStep",
    "JwksRequest",
    "JwksResponse",
    "Message",
    "OAuthError",
    "RevocationRequest",
    "StartJob",
    "StoreCredential",
    "ThirdPartyCopy",
    "TokenRequest",
    "TokenResponse",
    "TransferAccepted",
    "TransferFile",
    "TransferRefused",
    "TransferSubmit",
]

#: RFC 6749 §4.4 / §6, RFC 8693 §2.1: the grant types the issuer understands.
GRANT_REFRESH = "refresh_token"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: RFC 8628 §3.4
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 6749 §4.1 with PKCE (RFC 7636, S256 only)
GRANT_AUTHORIZATION_CODE = "authorization_code"
#: RFC 8693 §3: token type identifiers
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_REFRESH = "urn:ietf:params:oauth:token-type:refresh_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"

#: How a client authenticated (RFC 6749 §2.3.1): HTTP Basic, form fields, or not at all.
CLIENT_AUTH_BASIC = "client_secret_basic"
CLIENT_AUTH_POST = "client_secret_post"
CLIENT_AUTH_NONE = "none"


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 (got {value!r})")


#: What a name that may become a file name (user, service, host) looks like: the union of the
#: scenario's patterns for users and services, bounded. No ``/``, no leading ``.`` (so never
#: ``.`` or ``..``), no NUL, no whitespace: joined to a directory it stays in that directory.
NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}"
_NAME_RE: Final = re.compile(NAME_PATTERN)


def _safe_name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    """A name that travels in a message and may become part of a path (a sandbox's token file
    is named after the service). The message says what is allowed, never echoes the value."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        size = len(value) if isinstance(value, str) else 0
        raise ValueError(f"{attribute.name} must match {NAME_PATTERN} (got {size} characters)")


_NAME: Final = _safe_name


# -- issuer: OAuth2 token endpoint and JWKS --------------------------------------------------


@attrs.frozen(kw_only=True)
class TokenRequest:
    """A token endpoint request (RFC 6749 §6 refresh, §4.4 client credentials; RFC 8693 token
    exchange; RFC 8628 device code).

    Attributes:
        grant_type: one of the GRANT_* constants.
        client_id: the OAuth client (the token manager, FTS, Rucio...).
        client_secret: the client's secret, however it was sent (see ``client_auth``).
        client_auth: how the client authenticated: one of the CLIENT_AUTH_* constants. An
            ``invalid_client`` answer to HTTP Basic is a 401 with ``WWW-Authenticate: Basic``.
        refresh_token: for the refresh grant.
        scope: requested scopes, space-separated; None asks for what the grant allows.
        audience: requested audience (RFC 8693 / the non-standard IAM form field, K3).
        subject_token: for token exchange.
        subject_token_type: for token exchange (TOKEN_TYPE_ACCESS).
        requested_token_type: for token exchange; TOKEN_TYPE_REFRESH asks for a refresh token.
        device_code: for the device code grant.
    """

    grant_type: str
    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    client_auth: str = CLIENT_AUTH_NONE
    refresh_token: str | None = attrs.field(default=None, repr=False)
    scope: str | None = None
    audience: str | None = None
    subject_token: str | None = attrs.field(default=None, repr=False)
    subject_token_type: str | None = None
    requested_token_type: str | None = None
    device_code: str | None = attrs.field(default=None, repr=False)
    #: RFC 6749 §4.1.3 / RFC 7636 §4.5: the authorization code grant
    code: str | None = attrs.field(default=None, repr=False)
    redirect_uri: str | None = None
    code_verifier: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str = attrs.field(repr=False)
    expires_in: float = attrs.field(validator=_non_negative)
    scope: str
    refresh_token: str | None = attrs.field(default=None, repr=False)
    token_type: str = "Bearer"
    #: RFC 8693 §2.2.1: set on token exchange answers
    issued_token_type: str | None = None
    #: OpenID Connect Core §3.1.3.3: set when ``openid`` was granted to a user's login
    id_token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class OAuthError:
    """An error response (RFC 6749 §5.2), or an HTTP-level failure such as 503."""

    error: str
    description: str = ""
    status: int = 400


@attrs.frozen(kw_only=True)
class DeviceAuthorizationRequest:
    """RFC 8628 §3.1: a device (the token manager) asks to start a user's login."""

    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    client_auth: str = CLIENT_AUTH_NONE
    scope: str | None = None
    audience: str | None = None


@attrs.frozen(kw_only=True)
class DeviceAuthorizationResponse:
    """RFC 8628 §3.2: what the device polls with, and what the user enters."""

    device_code: str = attrs.field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: float = attrs.field(validator=_non_negative)
    interval: float = attrs.field(default=5.0, validator=_non_negative)


@attrs.frozen(kw_only=True)
class DeviceApproval:
    """The user, logged in at the verification page, approves (or denies) a user code.

    The issuer's stand-in for its login page: a scenario or a test calls it as the user.
    ``password`` is what the user types to log in (live issuers require it).
    """

    user_code: str
    user: str
    approve: bool = True
    password: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class RevocationRequest:
    """RFC 7009 §2.1: revoke a refresh token (answered with :class:`Ack`, even when unknown)."""

    token: str = attrs.field(repr=False)
    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    client_auth: str = CLIENT_AUTH_NONE
    token_type_hint: str | None = None


@attrs.frozen(kw_only=True)
class AuthorizationRequest:
    """RFC 6749 §4.1.1 with PKCE (RFC 7636 §4.3) and OIDC's ``nonce``, at the authorization
    endpoint; with ``user`` it is the consent page's answer (the user logged in with
    ``password`` and approved or denied), without it only a check of the request (the page is
    shown when it passes)."""

    client_id: str
    response_type: str | None = None
    redirect_uri: str | None = None
    scope: str | None = None
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    audience: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    approve: bool = True


@attrs.frozen(kw_only=True)
class AuthorizationResponse:
    """Where the user agent goes next (RFC 6749 §4.1.2, §4.1.2.1): ``redirect_uri`` with the
    ``code`` or the ``error``, and the client's ``state``; ``code`` is None for an error or for
    a check that passed (``error`` None too: show the consent page)."""

    redirect_uri: str
    code: str | None = attrs.field(default=None, repr=False)
    error: str | None = None
    description: str = ""
    state: str | None = None


@attrs.frozen(kw_only=True)
class ClientRegistrationRequest:
    """RFC 7591 §2, §3.1: the metadata a client registers itself with (dynamic registration).

    Attributes:
        grant_types: GRANT_* values; empty: ``authorization_code`` (§2's default).
        token_endpoint_auth_method: ``client_secret_basic`` (default), ``client_secret_post``
            or ``none`` (a public client).
    """

    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()
    scope: str | None = None
    client_name: str | None = None
    token_endpoint_auth_method: str | None = None


@attrs.frozen(kw_only=True)
class ClientRegistrationResponse:
    """RFC 7591 §3.2.1: the registered client, as the issuer bounded it."""

    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    client_id_issued_at: int
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scope: str
    token_endpoint_auth_method: str
    client_name: str | None = None


@attrs.frozen(kw_only=True)
class UserinfoRequest:
    """OpenID Connect Core §5.3: the claims about the user an access token stands for."""

    token: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class UserinfoResponse:
    """OpenID Connect Core §5.3.2: ``sub`` and what the VO says about the user."""

    sub: str
    groups: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class JwksRequest:
    """GET the issuer's JWKS (D2; the discovery document step is folded in here)."""

    issuer: str


@attrs.frozen(kw_only=True)
class JwksResponse:
    """The JWKS, and the ``Cache-Control: max-age`` the issuer sends with it (D4)."""

    keys: tuple[PublicKey, ...]
    max_age: float = 3600.0


# -- token manager <-> queue manager ----------------------------------------------------------


@attrs.frozen(kw_only=True)
class StoreCredential:
    """The user's ``condor_store_cred``: deposit a refresh token for a service (I2 ``.top``).

    Attributes:
        issuer: the issuer actor's name.
        scopes: what access tokens for this service ask for, space-separated.
    """

    user: str = attrs.field(validator=_NAME)
    service: str = attrs.field(validator=_NAME)
    issuer: str = attrs.field(validator=_NAME)
    scopes: str
    audience: str
    refresh_token: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class CredentialRequest:
    """Ask the token manager for a user's current access token for a service.

    Attributes:
        wait: how long the token manager may wait for a usable token to appear (I14:
            ``CREDD_POLLING_TIMEOUT``; the scenario's ``credential_wait``).
        min_valid: a token with less validity left than this is not usable.
    """

    user: str = attrs.field(validator=_NAME)
    service: str = attrs.field(validator=_NAME)
    wait: float = attrs.field(default=0.0, validator=_non_negative)
    min_valid: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen(kw_only=True)
class CredentialResponse:
    """The access token (None when there is no usable one), with its ``jti`` and ``exp``."""

    token: str | None = attrs.field(repr=False)
    jti: str | None = None
    exp: float | None = None


# -- queue manager <-> execute host ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AccessStep:
    """A data access step of a job: ``op`` on ``path`` at ``server`` (paths already resolved).

    Attributes:
        server: the data server's name.
        path: the *server* path (the server's base path for the job's issuer + token path).
        size: bytes to move.
        write: a PUT (the server decides create vs overwrite); else a GET.
    """

    server: str
    path: str
    size: int = attrs.field(validator=_non_negative)
    write: bool = False


@attrs.frozen(kw_only=True)
class ComputeStep:
    """A compute step of a job: ``seconds`` of CPU (drawn at submit from the workload's RNG)."""

    seconds: float = attrs.field(validator=_non_negative)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ExecStep:
    """A real command run in the job's sandbox (live mode only).

    It finds its token by WLCG bearer-token discovery (``BEARER_TOKEN_FILE``, F1) or in
    ``$_CONDOR_CREDS`` (I12); its exit code decides the job's.

    Attributes:
        argv: the command and its arguments (no shell unless the command is one).
        timeout: seconds before it is killed (the job then fails).
    """

    argv: tuple[str, ...] = attrs.field(converter=_str_tuple)
    timeout: float = attrs.field(default=3600.0, validator=_non_negative)


JobStep: TypeAlias = AccessStep | ComputeStep | ExecStep


@attrs.frozen(kw_only=True)
class JobProgram:
    """What a job does, fully resolved at submit time so a rerun of the job does the same.

    Attributes:
        steps: in order.
        reread: read the sandbox token before each access (True, correct) or keep the one seen
            at job start (False: the "copy-at-start" anti-pattern, P16).
    """

    steps: tuple[AccessStep | ComputeStep | ExecStep, ...]
    reread: bool = True


@attrs.frozen(kw_only=True)
class StartJob:
    """Start a matched job in a slot, with its credentials to stage (I12, I13)."""

    job: int = attrs.field(validator=_non_negative)
    slot: int
    user: str = attrs.field(validator=_NAME)
    service: str = attrs.field(validator=_NAME)
    token: str = attrs.field(repr=False)
    jti: str
    exp: float
    program: JobProgram


@attrs.frozen(kw_only=True)
class CredentialUpdate:
    """A renewed access token pushed toward the execute hosts (token manager -> queue manager
    -> every host running the user's jobs), where the starters pick it up (I13)."""

    user: str = attrs.field(validator=_NAME)
    service: str = attrs.field(validator=_NAME)
    token: str = attrs.field(repr=False)
    jti: str
    exp: float


@attrs.frozen(kw_only=True)
class ClaimAlive:
    """The schedd's keep-alive of its claims on an execute host (HTCondor's ``ALIVE_INTERVAL``
    message to the startd), and the host's answer: the same message holding those of ``jobs``
    it still runs. A restarted host knows none of them; a dead one does not answer."""

    jobs: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class Ack:
    """A request that needs no other answer was taken."""

    ok: bool = True
    detail: str = ""


@attrs.frozen(kw_only=True)
class JobFinished:
    """The starter reports a job's end (exit code 0: completed)."""

    job: int
    host: str = attrs.field(validator=_NAME)
    exit_code: int
    reason: str = ""
    cpu_seconds: float = attrs.field(default=0.0, validator=_non_negative)


# -- data server -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DataRequest:
    """One access to a data server, as a WebDAV/HTTP request with a bearer token (F3).

    Attributes:
        op: the operation (READ is GET, CREATE a PUT of a new file, ...).
        path: the server path (the token path plus the server's base path for the issuer).
        size: bytes moved (written for CREATE/MODIFY; expected for READ).
        token: the bearer token, None when the client found none.
    """

    op: Operation
    path: str
    size: int = attrs.field(default=0, validator=_non_negative)
    token: str | None = attrs.field(default=None, repr=False)
    #: the job making the access (an X-header in live mode), for the events; None for others
    job: int | None = None
    #: the third-party copy this access belongs to (``<transfer job>/<file index>``), for the
    #: events; None for every other access
    transfer: str | None = None


@attrs.frozen(kw_only=True)
class DataResponse:
    """The server's answer: HTTP status, and the reason when refused (M1-M6)."""

    status: int
    reason: Reason | None = None
    detail: str = ""
    size: int = 0
    #: for a third-party copy: which end refused, ``"source"`` or ``"destination"``; None for
    #: a plain access and for a copy that went through
    side: str | None = None

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


# -- data manager (Rucio) -> transfer service (FTS) -> data servers ---------------------------


def _file_tuple(value: Iterable[TransferFile]) -> tuple[TransferFile, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class TransferFile:
    """One file of a transfer job: copy ``source:source_path`` to
    ``destination:destination_path`` (server paths, base paths included).

    Attributes:
        source: the source data server's actor name.
        source_path: the file's path on the source server.
        destination: the destination data server's actor name.
        destination_path: where the copy goes on the destination server.
        size: bytes to copy.
    """

    source: str
    source_path: str
    destination: str
    destination_path: str
    size: int = attrs.field(validator=_non_negative)


@attrs.frozen(kw_only=True)
class TransferSubmit:
    """A transfer job submitted to the transfer service (FTS's REST job submission, oauth2).

    L5: ``source_tokens`` and ``destination_tokens`` hold one token per file, in file order,
    both or neither; the transfer service checks that, and the tokens' claims, on receipt (and
    refuses with :class:`TransferRefused`), not here: a malformed job is an answer, not a
    crash of the sender.

    Attributes:
        job: the job id (chosen by the submitter; unique per submitter).
        files: the files, in order (their index is the file id in events).
        source_tokens: the access token to read each file at its source.
        destination_tokens: the access token to write each file at its destination.
        fts_token: the submitter's token for the transfer service itself (L1: scope ``fts``,
            audience = the service's).
    """

    job: str
    files: tuple[TransferFile, ...] = attrs.field(converter=_file_tuple)
    source_tokens: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, repr=False)
    destination_tokens: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, repr=False)
    fts_token: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class TransferAccepted:
    """The transfer service took a job (HTTP 200 with the job id)."""

    job: str
    files: int


@attrs.frozen(kw_only=True)
class TransferRefused:
    """The transfer service refused a job: HTTP-style status (400 malformed, 401 bad FTS token,
    403 FTS token without the ``fts`` scope, 409 job id taken by another submission, 503 try
    again later) and why, in words that never hold a token."""

    job: str
    status: int
    reason: str


@attrs.frozen(kw_only=True)
class ThirdPartyCopy:
    """A third-party copy, sent to the *destination* data server (WebDAV HTTP-TPC pull mode:
    ``COPY`` with a ``Source`` header). The destination checks ``destination_token`` for
    writing ``destination_path``, pulls the file from ``source`` presenting ``source_token``,
    and answers with a :class:`DataResponse` whose ``side`` names the end that refused.

    In push mode (``destination`` set) it is sent to the *source* data server instead
    (``COPY`` with a ``Destination`` header), which checks ``source_token`` for reading and
    writes the file to ``destination`` presenting ``destination_token``.

    Attributes:
        source: the source data server's actor name.
        source_path: the file's path on the source server.
        destination_path: where the copy goes on the destination server.
        size: bytes to copy.
        source_token: the bearer token for the read at the source (None: none).
        destination_token: the bearer token for the write at the destination (None: none).
        transfer: ``<transfer job>/<file index>``: which file of which job, for the events.
        destination: push mode: the destination data server's actor name (None: pull).
    """

    source: str
    source_path: str
    destination_path: str
    size: int = attrs.field(validator=_non_negative)
    source_token: str | None = attrs.field(default=None, repr=False)
    destination_token: str | None = attrs.field(default=None, repr=False)
    transfer: str
    destination: str | None = None


Message: TypeAlias = (
    Ack
    | CredentialUpdate
    | StoreCredential
    | DeviceAuthorizationRequest
    | DeviceAuthorizationResponse
    | DeviceApproval
    | RevocationRequest
    | TokenRequest
    | TokenResponse
    | OAuthError
    | JwksRequest
    | JwksResponse
    | UserinfoRequest
    | UserinfoResponse
    | AuthorizationRequest
    | AuthorizationResponse
    | ClientRegistrationRequest
    | ClientRegistrationResponse
    | CredentialRequest
    | CredentialResponse
    | StartJob
    | JobFinished
    | ClaimAlive
    | DataRequest
    | DataResponse
    | TransferSubmit
    | TransferAccepted
    | TransferRefused
    | ThirdPartyCopy
)
