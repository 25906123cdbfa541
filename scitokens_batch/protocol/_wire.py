"""How messages look on the wire in live mode: pure encoders and decoders, no I/O.

Three shapes, each the one the real systems use:

- **OAuth2** (the issuer): requests are ``application/x-www-form-urlencoded`` posts (RFC 6749
  §4.4, §6; RFC 8693 §2.1; RFC 8628 §3.1/§3.4; RFC 7009 §2.1), client authentication by HTTP
  Basic or by form fields (RFC 6749 §2.3.1), answers are JSON (§5.1) and errors JSON with
  ``error`` / ``error_description`` (§5.2).
- **Bearer data access** (the data servers): a method on a path with ``Authorization: Bearer``
  (RFC 6750 §2.1, F3); refusals carry ``WWW-Authenticate: Bearer error=..., error_description=...``
  (RFC 6750 §3).
- **RPC** between the batch-system actors (token manager, queue manager, execute hosts), which
  talk their own protocols in HTCondor, and between the data manager, the transfer service and
  the data servers' third-party copies (Rucio -> FTS -> storage; FTS's REST API and WebDAV
  HTTP-TPC in the real systems): one JSON envelope ``{"type": ..., "body": ...}`` per message,
  made by cattrs from the attrs classes.

Every decoder refuses what breaks its protocol with :class:`WireError` naming the field, the
expected and the received value; none of them ever puts a token or a secret into a message.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.strategies import configure_tagged_union

from ..tokens import Reason, bound
from ..tokens._redact import ECHO_LIMIT
from ._messages import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_NONE,
    CLIENT_AUTH_POST,
    AccessStep,
    Ack,
    AuthorizationRequest,
    AuthorizationResponse,
    ClaimAlive,
    ClientRegistrationRequest,
    ClientRegistrationResponse,
    ComputeStep,
    CredentialRequest,
    CredentialResponse,
    CredentialUpdate,
    DataResponse,
    DeviceApproval,
    DeviceAuthorizationRequest,
    DeviceAuthorizationResponse,
    ExecStep,
    JobFinished,
    Message,
    OAuthError,
    RevocationRequest,
    StartJob,
    StoreCredential,
    ThirdPartyCopy,
    TokenRequest,
    TokenResponse,
    TransferAccepted,
    TransferRefused,
    TransferSubmit,
    UserinfoResponse,
)

__all__ = [
    "RPC_MESSAGES",
    "WireError",
    "authorization_redirect",
    "basic_credentials",
    "bearer_challenge",
    "decode_authorization",
    "decode_device_approval",
    "decode_device_authorization",
    "decode_registration",
    "decode_revocation",
    "decode_rpc",
    "decode_token_request",
    "decode_token_response",
    "encode_form",
    "encode_rpc",
    "oauth_error_body",
    "parse_bearer_challenge",
    "parse_form",
    "registration_body",
    "token_request_form",
    "token_response_body",
    "userinfo_body",
]


class WireError(ValueError):
    """A request or answer that breaks its protocol.

    Attributes:
        error: the OAuth2 error code to answer with (``invalid_request``, ``invalid_client``).
        field: the field at fault.
    """

    def __init__(self, field: str, message: str, *, error: str = "invalid_request") -> None:
        self.field, self.error = field, error
        super().__init__(f"{field}: {message}")


# -- forms (RFC 6749 appendix B) ----------------------------------------------------------------


def encode_form(fields: Mapping[str, str | None]) -> bytes:
    """``application/x-www-form-urlencoded`` of the fields that are not None."""
    return urllib.parse.urlencode({k: v for k, v in fields.items() if v is not None}).encode()


def parse_form(body: bytes) -> dict[str, str]:
    """Parse a form; RFC 6749 §3.1/§3.2: a parameter sent twice is an error, empty is absent."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise WireError(
            "body", "expected an ASCII form (URL-encoded), received other bytes"
        ) from None
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
    form: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in pairs:
        # A repeat is an error even when one of the copies is empty ("scope=&scope=x"): which
        # one counts would otherwise depend on the order.
        if key in seen:
            raise WireError(key, "sent more than once (RFC 6749 §3.1)")
        seen.add(key)
        if value != "":
            form[key] = value
    return form


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic`` -> (client_id, client_secret), each form-decoded (§2.3.1).

    Returns None when the header is absent or not Basic.
    """
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise WireError(
            "Authorization", "Basic credentials are not base64", error="invalid_client"
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise WireError("Authorization", "Basic credentials lack ':'", error="invalid_client")
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


def basic_header(client_id: str, secret: str) -> str:
    """The ``Authorization`` value for client_secret_basic (RFC 6749 §2.3.1)."""
    raw = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def _client(form: dict[str, str], authorization: str | None) -> tuple[str, str | None, str]:
    """(client_id, client_secret, how) from Basic or the form; both at once is an error."""
    basic = basic_credentials(authorization)
    if basic is not None:
        if "client_secret" in form:
            # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
            raise WireError(
                "client_secret", "sent with HTTP Basic as well", error="invalid_request"
            )
        if "client_id" in form and form["client_id"] != basic[0]:
            raise WireError("client_id", "differs from the Basic user", error="invalid_client")
        return basic[0], basic[1], CLIENT_AUTH_BASIC
    client_id = form.get("client_id")
    if client_id is None:
        raise WireError("client_id", "expected a client_id (or HTTP Basic)", error="invalid_client")
    secret = form.get("client_secret")
    return client_id, secret, CLIENT_AUTH_POST if secret is not None else CLIENT_AUTH_NONE


def _client_fields(
    client_id: str, secret: str | None, how: str
) -> tuple[dict[str, str | None], dict[str, str]]:
    if how == CLIENT_AUTH_BASIC and secret is not None:
        return {}, {"Authorization": basic_header(client_id, secret)}
    if how == CLIENT_AUTH_POST or secret is not None:
        return {"client_id": client_id, "client_secret": secret}, {}
    return {"client_id": client_id}, {}


# -- the token endpoint --------------------------------------------------------------------------

#: The longest ``error_description`` sent: room for a sentence quoting a short value.
DESCRIPTION_LIMIT: Final = 200

_TOKEN_FIELDS: Final = (
    "refresh_token",
    "scope",
    "audience",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "device_code",
    "code",
    "redirect_uri",
    "code_verifier",
)


def token_request_form(req: TokenRequest) -> tuple[bytes, dict[str, str]]:
    """The form body and headers of a token request."""
    fields, headers = _client_fields(req.client_id, req.client_secret, req.client_auth)
    fields["grant_type"] = req.grant_type
    for name in _TOKEN_FIELDS:
        fields[name] = getattr(req, name)
    return encode_form(fields), headers


def decode_token_request(body: bytes, authorization: str | None) -> TokenRequest:
    """A token request from its form and ``Authorization`` header.

    Raises:
        WireError: no ``grant_type``, a repeated parameter, or unusable client credentials.
    """
    form = parse_form(body)
    client_id, secret, how = _client(form, authorization)
    grant = form.get("grant_type")
    if grant is None:
        raise WireError("grant_type", "expected a grant_type, received none")
    return TokenRequest(
        grant_type=grant,
        client_id=client_id,
        client_secret=secret,
        client_auth=how,
        **{name: form.get(name) for name in _TOKEN_FIELDS},
    )


def device_authorization_form(req: DeviceAuthorizationRequest) -> tuple[bytes, dict[str, str]]:
    """Form and headers of an RFC 8628 §3.1 device authorization request."""
    fields, headers = _client_fields(req.client_id, req.client_secret, req.client_auth)
    fields.update(scope=req.scope, audience=req.audience)
    return encode_form(fields), headers


def decode_device_authorization(
    body: bytes, authorization: str | None
) -> DeviceAuthorizationRequest:
    """RFC 8628 §3.1 request from its form."""
    form = parse_form(body)
    client_id, secret, how = _client(form, authorization)
    return DeviceAuthorizationRequest(
        client_id=client_id,
        client_secret=secret,
        client_auth=how,
        scope=form.get("scope"),
        audience=form.get("audience"),
    )


def revocation_form(req: RevocationRequest) -> tuple[bytes, dict[str, str]]:
    """Form and headers of an RFC 7009 §2.1 revocation request."""
    fields, headers = _client_fields(req.client_id, req.client_secret, req.client_auth)
    fields.update(token=req.token, token_type_hint=req.token_type_hint)
    return encode_form(fields), headers


def decode_revocation(body: bytes, authorization: str | None) -> RevocationRequest:
    """RFC 7009 §2.1 request from its form."""
    form = parse_form(body)
    client_id, secret, how = _client(form, authorization)
    token = form.get("token")
    if token is None:
        raise WireError("token", "expected the token to revoke, received none")
    return RevocationRequest(
        token=token,
        client_id=client_id,
        client_secret=secret,
        client_auth=how,
        token_type_hint=form.get("token_type_hint"),
    )


def device_approval_form(req: DeviceApproval) -> bytes:
    """The user's answer on the verification page."""
    return encode_form(
        {
            "user_code": req.user_code,
            "user": req.user,
            "password": req.password,
            "approve": "yes" if req.approve else "no",
        }
    )


def decode_device_approval(body: bytes) -> DeviceApproval:
    """The verification page's form: ``user_code``, ``user``, ``password``, ``approve``
    (yes/no)."""
    form = parse_form(body)
    missing = [f for f in ("user_code", "user") if f not in form]
    if missing:
        raise WireError(missing[0], "expected a value, received none")
    approve = form.get("approve", "yes")
    if approve not in ("yes", "no"):
        raise WireError("approve", f"expected 'yes' or 'no', received {_short(approve)}")
    return DeviceApproval(
        user_code=form["user_code"],
        user=form["user"],
        approve=approve == "yes",
        password=form.get("password"),
    )


_AUTHORIZATION_FIELDS: Final = (
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "audience",
)


def decode_authorization(params: Mapping[str, str], *, consent: bool) -> AuthorizationRequest:
    """RFC 6749 §4.1.1 parameters (the query of ``GET /authorize``, or the consent page's
    form, which carries them again with ``user``, ``password`` and ``approve``).

    Raises:
        WireError: no ``client_id``; on the consent form, no ``user`` or a bad ``approve``.
    """
    client_id = params.get("client_id")
    if client_id is None:
        raise WireError("client_id", "expected a client_id, received none")
    fields: dict[str, Any] = {name: params.get(name) for name in _AUTHORIZATION_FIELDS}
    if consent:
        if "user" not in params:
            raise WireError("user", "expected a value, received none")
        approve = params.get("approve", "yes")
        if approve not in ("yes", "no"):
            raise WireError("approve", f"expected 'yes' or 'no', received {_short(approve)}")
        fields.update(user=params["user"], password=params.get("password"))
        fields["approve"] = approve == "yes"
    return AuthorizationRequest(client_id=client_id, **fields)


def decode_registration(body: bytes) -> ClientRegistrationRequest:
    """RFC 7591 §3.1: the client metadata JSON object.

    Raises:
        WireError: not a JSON object, or a member of the wrong type
            (``invalid_client_metadata``, §3.2.2).
    """
    doc = _json_object(body)

    def strings(name: str) -> tuple[str, ...]:
        value = doc.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise WireError(name, "expected an array of strings", error="invalid_client_metadata")
        return tuple(value)

    def string(name: str) -> str | None:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            raise WireError(name, "expected a string", error="invalid_client_metadata")
        return value

    return ClientRegistrationRequest(
        redirect_uris=strings("redirect_uris"),
        grant_types=strings("grant_types"),
        scope=string("scope"),
        client_name=string("client_name"),
        token_endpoint_auth_method=string("token_endpoint_auth_method"),
    )


def registration_body(resp: ClientRegistrationResponse) -> dict[str, Any]:
    """RFC 7591 §3.2.1."""
    body: dict[str, Any] = {
        "client_id": resp.client_id,
        "client_id_issued_at": resp.client_id_issued_at,
        "redirect_uris": list(resp.redirect_uris),
        "grant_types": list(resp.grant_types),
        "scope": resp.scope,
        "token_endpoint_auth_method": resp.token_endpoint_auth_method,
        "response_types": ["code"] if "authorization_code" in resp.grant_types else [],
    }
    if resp.client_secret is not None:
        body["client_secret"] = resp.client_secret
        body["client_secret_expires_at"] = 0  # §3.2.1: 0 = does not expire
    if resp.client_name is not None:
        body["client_name"] = resp.client_name
    return body


def authorization_redirect(resp: AuthorizationResponse) -> str:
    """The ``Location`` of RFC 6749 §4.1.2 (``code``, ``state``) or §4.1.2.1 (``error``,
    ``error_description``, ``state``): the registered redirect URI plus the query."""
    query: dict[str, str | None] = (
        {"code": resp.code}
        if resp.code is not None
        else {
            "error": bound(resp.error or "server_error", ECHO_LIMIT),
            "error_description": bound(resp.description, DESCRIPTION_LIMIT) or None,
        }
    )
    query["state"] = resp.state
    separator = "&" if "?" in resp.redirect_uri else "?"
    return resp.redirect_uri + separator + encode_form(query).decode()


def token_response_body(resp: TokenResponse) -> dict[str, Any]:
    """RFC 6749 §5.1 (+ RFC 8693 §2.2.1 ``issued_token_type``)."""
    body: dict[str, Any] = {
        "access_token": resp.access_token,
        "token_type": resp.token_type,
        "expires_in": _json_number(resp.expires_in),
        "scope": resp.scope,
    }
    if resp.refresh_token is not None:
        body["refresh_token"] = resp.refresh_token
    if resp.issued_token_type is not None:
        body["issued_token_type"] = resp.issued_token_type
    if resp.id_token is not None:
        body["id_token"] = resp.id_token
    return body


def _json_number(value: float) -> int | float:
    """``600`` rather than ``600.0`` for a whole number (an int is taken too: Python 3.11's
    ``int`` has no ``is_integer``)."""
    number = float(value)
    return int(number) if number.is_integer() else number


def decode_token_response(status: int, body: bytes) -> TokenResponse | OAuthError:
    """A token endpoint answer: :class:`TokenResponse` on 200, else :class:`OAuthError`.

    Raises:
        WireError: a 200 whose JSON lacks ``access_token``, or whose ``expires_in`` is missing
            or not a non-negative finite number.
    """
    doc = _json_object(body)
    if status != 200:
        return _oauth_error(status, doc)
    token, expires_in = doc.get("access_token"), doc.get("expires_in")
    if not isinstance(token, str) or not token:
        raise WireError("access_token", "expected a string in a 200 answer, received none")
    if (
        not isinstance(expires_in, int | float)
        or isinstance(expires_in, bool)
        or not 0 <= expires_in < float("inf")
    ):
        raise WireError(
            "expires_in",
            f"expected a non-negative number of seconds, received {type(expires_in).__name__}"
            + (f" {expires_in!r}" if isinstance(expires_in, int | float) else ""),
        )
    refresh, scope = doc.get("refresh_token"), doc.get("scope", "")
    issued, id_token = doc.get("issued_token_type"), doc.get("id_token")
    return TokenResponse(
        access_token=token,
        expires_in=float(expires_in),
        scope=scope if isinstance(scope, str) else "",
        refresh_token=refresh if isinstance(refresh, str) else None,
        token_type=str(doc.get("token_type", "Bearer")),
        issued_token_type=issued if isinstance(issued, str) else None,
        id_token=id_token if isinstance(id_token, str) else None,
    )


def userinfo_body(resp: UserinfoResponse) -> dict[str, Any]:
    """OpenID Connect Core §5.3.2 (+ ``preferred_username`` and ``wlcg.groups``, as INDIGO IAM
    answers)."""
    body: dict[str, Any] = {"sub": resp.sub, "preferred_username": resp.sub}
    if resp.groups:
        body["wlcg.groups"] = list(resp.groups)
    return body


def device_authorization_body(resp: DeviceAuthorizationResponse) -> dict[str, Any]:
    """RFC 8628 §3.2."""
    return {
        "device_code": resp.device_code,
        "user_code": resp.user_code,
        "verification_uri": resp.verification_uri,
        "expires_in": resp.expires_in,
        "interval": resp.interval,
    }


def decode_device_authorization_response(
    status: int, body: bytes
) -> DeviceAuthorizationResponse | OAuthError:
    """RFC 8628 §3.2 answer, or the error."""
    doc = _json_object(body)
    if status != 200:
        return _oauth_error(status, doc)
    try:
        return DeviceAuthorizationResponse(
            device_code=str(doc["device_code"]),
            user_code=str(doc["user_code"]),
            verification_uri=str(doc["verification_uri"]),
            expires_in=float(doc["expires_in"]),
            interval=float(doc.get("interval", 5)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError("device_authorization", f"incomplete answer ({exc})") from None


def oauth_error_body(err: OAuthError) -> dict[str, str]:
    """RFC 6749 §5.2."""
    body = {"error": bound(err.error, ECHO_LIMIT)}
    if err.description:
        # The one place every description leaves through: a value the client sent and the
        # issuer quoted is redacted (a JWT where a client id belongs) and cut short.
        body["error_description"] = bound(err.description, DESCRIPTION_LIMIT)
    return body


def decode_ack_or_error(status: int, body: bytes) -> Ack | OAuthError:
    """Revocation and approval answers: 200 is :class:`Ack`, anything else the error."""
    if status == 200:
        return Ack()
    return _oauth_error(status, _json_object(body))


def _oauth_error(status: int, doc: Mapping[str, Any]) -> OAuthError:
    error = doc.get("error")
    description = doc.get("error_description", "")
    if not isinstance(error, str):
        error = "temporarily_unavailable" if status == 503 else f"http_{status}"
    return OAuthError(error=error, description=str(description), status=status)


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


# -- bearer challenges (RFC 6750 §3) -------------------------------------------------------------


def bearer_challenge(reason: Reason, detail: str, *, realm: str) -> str:
    """``WWW-Authenticate`` for a refusal: the error code of the reason, and a description
    that starts with our reason name (so a client of ours can count it)."""
    parts = [f'realm="{_quote(realm)}"']
    if reason.oauth_error is not None:
        parts.append(f'error="{reason.oauth_error}"')
        parts.append(f'error_description="{_quote(f"{reason.value}: {detail}")}"')
    return "Bearer " + ", ".join(parts)


_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2
_BEARER: Final = re.compile(r"(?:^|,)\s*bearer(?=\s|,|$)", re.IGNORECASE)
_AUTH_PARAM: Final = re.compile(
    rf'\s*,?\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?=,|$)'
)


def _challenge_params(header: str) -> dict[str, str] | None:
    """The auth-params of the Bearer challenge in ``header`` (RFC 9110 §11.2, §11.6.1), or
    None when there is no Bearer challenge. Values may be tokens or quoted strings; a quoted
    pair (``\\x``) stands for ``x``. A parameter that is not ``name=value`` ends the
    challenge (it is the next challenge's scheme)."""
    start = _BEARER.search(header)
    if start is None:
        return None
    params: dict[str, str] = {}
    pos = start.end()
    while (m := _AUTH_PARAM.match(header, pos)) is not None:
        name, quoted, token = m.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
        params.setdefault(name.lower(), value)
        pos = m.end()
    return params


def parse_bearer_challenge(header: str | None) -> tuple[str | None, Reason | None, str]:
    """(error, our reason if the description names one, description) of a Bearer challenge.

    A challenge without an ``error`` is the answer to a request without a token (RFC 6750
    §3.1), so its reason is :attr:`Reason.MISSING_TOKEN`.
    """
    params = _challenge_params(header or "")
    if params is None:
        return None, None, ""
    description = params.get("error_description", "")
    head = description.split(":", 1)[0]
    reason = next((r for r in Reason if r.value == head), None)
    if reason is None and "error" not in params:
        reason = Reason.MISSING_TOKEN
    return params.get("error"), reason, description


def _quote(text: str) -> str:
    # RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' nor '\').
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


# -- RPC -----------------------------------------------------------------------------------------

#: The messages the batch-system actors, and the data manager, transfer service and data
#: servers (third-party copies), exchange over RPC, by envelope ``type``.
RPC_MESSAGES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        Ack,
        CredentialRequest,
        CredentialResponse,
        CredentialUpdate,
        StoreCredential,
        StartJob,
        JobFinished,
        ClaimAlive,
        TransferSubmit,
        TransferAccepted,
        TransferRefused,
        ThirdPartyCopy,
        DataResponse,
    )
}


_STEPS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (AccessStep, ComputeStep, ExecStep)
}
_ENVELOPE_KEYS: Final = frozenset({"type", "body"})


class _Mismatch(TypeError):
    """A JSON value of the wrong kind. The message names kinds, never the value (which may be
    a token)."""


def _kind(value: object) -> str:
    """The JSON name of a value's type."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    names |= {list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _structure_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    raise _Mismatch(f"expected a string, received {_kind(value)}")


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Mismatch(f"expected an integer, received {_kind(value)}")


def _structure_float(value: object, _: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _Mismatch(f"expected a number, received {_kind(value)}")


def _structure_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Mismatch(f"expected a boolean, received {_kind(value)}")


def _structure_enum(value: object, cls: type[enum.Enum]) -> enum.Enum:
    """An enum from its value; the error names the allowed values, never the received one
    (a misplaced token must not reach an error message)."""
    for member in cls:
        if member.value == value and type(member.value) is type(value):
            return member
    allowed = ", ".join(repr(m.value) for m in cls)
    received = _short(value) if isinstance(value, str) else _kind(value)
    raise _Mismatch(f"expected one of {allowed}, received {received}")


def _is_array(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _rpc_converter() -> cattrs.Converter:
    """JSON <-> RPC messages, strictly: a value of the wrong JSON type is refused, never
    coerced (cattrs would otherwise take ``"false"`` as True, ``"ls"`` as ``("l", "s")`` and
    ``1.9`` as 1)."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum
    )

    def array_of(t: Any) -> Callable[[object, object], tuple[Any, ...]]:
        item = typing.get_args(t)[0]

        def structure(value: object, _: object) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise _Mismatch(f"expected an array, received {_kind(value)}")
            out: list[Any] = []
            errors: list[Exception] = []
            for i, element in enumerate(value):
                try:
                    out.append(conv.structure(element, item))
                except Exception as exc:  # collected like cattrs does, with the index
                    exc.add_note(IterableValidationNote(f"Structuring @ index {i}", i, item))
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"While structuring {t!r}", errors, t)
            return tuple(out)

        return structure

    conv.register_structure_hook_factory(_is_array, array_of)
    # Job steps are a union tagged by "kind" (the class name).
    step_union = AccessStep | ComputeStep | ExecStep
    configure_tagged_union(step_union, conv, tag_name="kind")

    def structure_step(value: object, _: object) -> Any:
        if not isinstance(value, dict):
            raise _Mismatch(f"expected an object, received {_kind(value)}")
        kind = value.get("kind")
        cls = _STEPS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            if "kind" not in value:
                received = "none"
            else:
                received = _short(kind) if isinstance(kind, str) else _kind(kind)
            exc = _Mismatch(f"expected one of {sorted(_STEPS)}, received {received}")
            exc.add_note(AttributeValidationNote("Structuring a job step @ kind", "kind", str))
            raise ClassValidationError("While structuring a job step", [exc], object)
        return conv.structure({k: v for k, v in value.items() if k != "kind"}, cls)

    conv.register_structure_hook(step_union, structure_step)
    return conv


_CONVERTER: Final = _rpc_converter()


def _short(text: str, limit: int = 40) -> str:
    """``text`` quoted when it is a short name; else only its length (it could be a token put
    in the wrong place, and an error message never holds a token)."""
    if len(text) <= limit and text.isidentifier():
        return repr(text)
    return f"a string of {len(text)} characters"


def _describe(exc: BaseException, _: Any) -> str:
    """What is wrong, for :func:`cattrs.transform_error`; never the offending value."""
    if isinstance(exc, _Mismatch):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unexpected fields " + ", ".join(_short(k) for k in sorted(exc.extra_fields))
    if isinstance(exc, ValueError):
        return str(exc)  # the message classes' validators: numbers only
    return f"does not fit ({type(exc).__name__})"


def encode_rpc(message: Message) -> bytes:
    """The JSON envelope of an RPC message.

    Raises:
        TypeError: ``message`` is not one of :data:`RPC_MESSAGES`.
    """
    name = type(message).__name__
    if RPC_MESSAGES.get(name) is not type(message):
        raise TypeError(f"{name} does not travel over RPC")
    return json.dumps({"type": name, "body": _CONVERTER.unstructure(message)}).encode()


def decode_rpc(body: bytes) -> Message:
    """An RPC message from its JSON envelope.

    Raises:
        WireError: not a JSON object, an unknown ``type``, or a body that does not fit the type;
            ``field`` is the path to the culprit (``body.program.steps[1].seconds``).
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting too
        raise WireError("envelope", "expected a JSON object, received other bytes") from None
    if not isinstance(doc, dict):
        raise WireError("envelope", f"expected a JSON object, received {_kind(doc)}")
    extra = sorted(set(doc) - _ENVELOPE_KEYS)
    if extra:
        raise WireError("envelope", "unexpected fields " + ", ".join(_short(k) for k in extra))
    name = doc.get("type")
    cls = RPC_MESSAGES.get(name) if isinstance(name, str) else None
    if cls is None:
        received = _short(name) if isinstance(name, str) else _kind(name)
        raise WireError("type", f"expected one of {sorted(RPC_MESSAGES)}, received {received}")
    content = doc.get("body", {})
    if not isinstance(content, dict):
        raise WireError("body", f"expected a JSON object, received {_kind(content)}")
    try:
        message: Message = _CONVERTER.structure(content, cls)
    except Exception as exc:
        problems = cattrs.transform_error(exc, path="body", format_exception=_describe)
        description, _, field = problems[0].rpartition(" @ ")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise WireError(field, f"{description} in {name}{more}") from None
    return message
