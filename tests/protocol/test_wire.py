"""The live-mode wire format (protocol/_wire.py): OAuth2 forms and answers, bearer challenges, RPC."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.protocol import (
    CLIENT_AUTH_BASIC,
    CLIENT_AUTH_NONE,
    CLIENT_AUTH_POST,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_JWT,
    TOKEN_TYPE_REFRESH,
    AccessStep,
    Ack,
    ClaimAlive,
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
    JobProgram,
    OAuthError,
    RevocationRequest,
    StartJob,
    StoreCredential,
    ThirdPartyCopy,
    TokenRequest,
    TokenResponse,
    TransferAccepted,
    TransferFile,
    TransferRefused,
    TransferSubmit,
)
from scitokens_batch.protocol import wire as w
from scitokens_batch.tokens import Reason

from ..strategies import rpc_messages, utf8_text, utf8_words

SECRET = "s3cr3t-VALUE"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"

#: RFC 6750 §3: error_description and realm characters (quoted, no '"' nor '\').
DESCRIPTION_CHARS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def form_of(body: bytes) -> list[tuple[str, str]]:
    """The decoded pairs of a form body, in order."""
    return urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True)


def decoded_basic(header: str) -> str:
    """The raw ``id:secret`` text inside a Basic header (still form-encoded)."""
    scheme, _, value = header.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(value).decode("ascii")


# -- forms and client authentication -------------------------------------------------------------


class TestForms:
    """``application/x-www-form-urlencoded`` (RFC 6749 appendix B, §3.1)."""

    def test_encode_form_skips_none(self) -> None:
        """encode_form leaves out None fields and form-encodes the rest (RFC 6749 appendix B)."""
        body = w.encode_form({"a": "x y", "b": None, "c": "é&="})
        assert form_of(body) == [("a", "x y"), ("c", "é&=")]
        assert body.isascii()

    def test_empty_value_is_absent(self) -> None:
        """A parameter without a value is treated as omitted (RFC 6749 §3.1)."""
        assert w.parse_form(b"grant_type=refresh_token&scope=") == {"grant_type": "refresh_token"}

    @pytest.mark.parametrize(
        "body",
        [b"scope=a&scope=b", b"scope=a&scope=", b"scope=&scope=a", b"scope=a&x=1&scope=a"],
    )
    def test_repeated_parameter_is_invalid_request(self, body: bytes) -> None:
        """A parameter sent twice is invalid_request naming it, whatever the copies hold (RFC 6749 §3.1)."""
        with pytest.raises(w.WireError) as err:
            w.parse_form(body)
        assert (err.value.field, err.value.error) == ("scope", "invalid_request")

    def test_non_ascii_body_is_refused(self) -> None:
        """A form body must be URL-encoded ASCII (RFC 6749 appendix B)."""
        with pytest.raises(w.WireError) as err:
            w.parse_form("scope=é".encode())
        assert err.value.field == "body"

    def test_percent_encoded_utf8_is_decoded(self) -> None:
        """Values are UTF-8 percent-encoded (RFC 6749 appendix B)."""
        assert w.parse_form(b"user=%C3%A9+x") == {"user": "é x"}


class TestBasic:
    """client_secret_basic: HTTP Basic of the form-encoded id and secret (RFC 6749 §2.3.1)."""

    @pytest.mark.parametrize(
        ("client_id", "secret"),
        [
            ("plain", "secret"),
            ("with:colon", "pa:ss:word"),
            ("per%cent", "100%"),
            ("with space", "a b+c"),
            ("ünïcødé-客户", "秘密 ✓"),
            ("=&?#/", "\\\"'"),
        ],
    )
    def test_round_trip(self, client_id: str, secret: str) -> None:
        """Id and secret are form-encoded before Basic, so ':' '%' ' ' and non-ASCII survive (RFC 6749 §2.3.1)."""
        header = w.basic_header(client_id, secret)
        raw_id, sep, _ = decoded_basic(header).partition(":")
        assert sep == ":" and ":" not in raw_id  # the one ':' is the separator
        assert urllib.parse.unquote_plus(raw_id) == client_id
        assert w.basic_credentials(header) == (client_id, secret)

    def test_colon_and_percent_are_escaped(self) -> None:
        """':' in the id becomes %3A, '%' becomes %25 and a space '+' (RFC 6749 §2.3.1, appendix B)."""
        assert decoded_basic(w.basic_header("a:b %", "c")) == "a%3Ab+%25:c"

    @given(client_id=utf8_text, secret=utf8_text)
    def test_round_trip_any_text(self, client_id: str, secret: str) -> None:
        """Any UTF-8 id and secret survive client_secret_basic (RFC 6749 §2.3.1)."""
        assert w.basic_credentials(w.basic_header(client_id, secret)) == (client_id, secret)

    @pytest.mark.parametrize("header", [None, "Bearer abc", "Digest x=1", ""])
    def test_not_basic_is_none(self, header: str | None) -> None:
        """No Authorization, or another scheme, is no client_secret_basic (RFC 6749 §2.3.1)."""
        assert w.basic_credentials(header) is None

    def test_scheme_is_case_insensitive(self) -> None:
        """The auth scheme is case-insensitive (RFC 9110 §11.1)."""
        value = base64.b64encode(b"id:pw").decode()
        assert w.basic_credentials(f"bAsIc {value}") == ("id", "pw")

    @pytest.mark.parametrize(
        "value",
        [
            "not base64!",
            base64.b64encode(b"no-colon").decode(),
            base64.b64encode(b"\xff:x").decode(),
        ],
    )
    def test_unusable_basic_is_invalid_client(self, value: str) -> None:
        """Basic credentials that are not base64 of UTF-8 ``id:secret`` are invalid_client (RFC 6749 §5.2)."""
        with pytest.raises(w.WireError) as err:
            w.basic_credentials(f"Basic {value}")
        assert (err.value.field, err.value.error) == ("Authorization", "invalid_client")


def token_requests() -> list[TokenRequest]:
    """One token request per grant and client authentication (K2, K3, K4, RFC 6749 §6)."""
    grants: list[dict[str, Any]] = [
        {"grant_type": GRANT_REFRESH, "refresh_token": "rt-" + SECRET, "scope": "read:/a"},
        {
            "grant_type": GRANT_CLIENT_CREDENTIALS,
            "scope": "storage.read:/ storage.create:/out",
            "audience": "https://store.example",
        },
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": TOKEN,
            "subject_token_type": TOKEN_TYPE_ACCESS,
            "requested_token_type": TOKEN_TYPE_REFRESH,
            "scope": "storage.read:/ offline_access",
            "audience": "https://fts.example https://store.example",
        },
        {"grant_type": GRANT_DEVICE_CODE, "device_code": "dc-" + SECRET},
    ]
    auths = [
        {"client_auth": CLIENT_AUTH_BASIC, "client_secret": SECRET},
        {"client_auth": CLIENT_AUTH_POST, "client_secret": SECRET},
        {"client_auth": CLIENT_AUTH_NONE},
    ]
    return [TokenRequest(client_id="rucio", **g, **a) for g in grants for a in auths]


class TestTokenRequest:
    """The token endpoint request (RFC 6749 §4.4, §6; RFC 8693 §2.1; RFC 8628 §3.4)."""

    @pytest.mark.parametrize(
        "req", token_requests(), ids=lambda r: f"{r.grant_type.split(':')[-1]}-{r.client_auth}"
    )
    def test_round_trip(self, req: TokenRequest) -> None:
        """Every grant with every client authentication decodes to the same request (K2, K3, K4)."""
        body, headers = w.token_request_form(req)
        decoded = w.decode_token_request(body, headers.get("Authorization"))
        assert decoded == req

    def test_basic_sends_no_secret_in_the_form(self) -> None:
        """client_secret_basic puts the credentials in Authorization only (RFC 6749 §2.3.1)."""
        req = TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS,
            client_id="fts",
            client_secret=SECRET,
            client_auth=CLIENT_AUTH_BASIC,
        )
        body, headers = w.token_request_form(req)
        assert dict(form_of(body)) == {"grant_type": GRANT_CLIENT_CREDENTIALS}
        assert set(headers) == {"Authorization"}

    def test_post_sends_id_and_secret_in_the_form(self) -> None:
        """client_secret_post sends client_id and client_secret as form fields (RFC 6749 §2.3.1)."""
        req = TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS,
            client_id="fts",
            client_secret=SECRET,
            client_auth=CLIENT_AUTH_POST,
        )
        body, headers = w.token_request_form(req)
        assert dict(form_of(body))["client_secret"] == SECRET and headers == {}

    @given(
        client_id=utf8_words,
        secret=utf8_words,
        scope=st.none() | utf8_words,
        audience=st.none() | utf8_words,
        how=st.sampled_from([CLIENT_AUTH_BASIC, CLIENT_AUTH_POST]),
    )
    def test_round_trip_any_text(
        self, client_id: str, secret: str, scope: str | None, audience: str | None, how: str
    ) -> None:
        """Any non-empty UTF-8 id, secret, scope and audience survive either client authentication (RFC 6749 §2.3.1, K3)."""
        req = TokenRequest(
            grant_type=GRANT_CLIENT_CREDENTIALS,
            client_id=client_id,
            client_secret=secret,
            client_auth=how,
            scope=scope,
            audience=audience,
        )
        body, headers = w.token_request_form(req)
        assert w.decode_token_request(body, headers.get("Authorization")) == req

    def test_basic_and_client_secret_in_form_is_refused(self) -> None:
        """A client must not use two authentication methods: Basic + client_secret is invalid_request (RFC 6749 §2.3)."""
        body = w.encode_form({"grant_type": GRANT_REFRESH, "client_secret": SECRET})
        with pytest.raises(w.WireError) as err:
            w.decode_token_request(body, w.basic_header("rucio", SECRET))
        assert (err.value.field, err.value.error) == ("client_secret", "invalid_request")

    def test_basic_and_other_client_id_is_invalid_client(self) -> None:
        """A form client_id other than the Basic user is invalid_client (RFC 6749 §2.3.1)."""
        body = w.encode_form({"grant_type": GRANT_REFRESH, "client_id": "mallory"})
        with pytest.raises(w.WireError) as err:
            w.decode_token_request(body, w.basic_header("rucio", SECRET))
        assert (err.value.field, err.value.error) == ("client_id", "invalid_client")

    def test_basic_and_same_client_id_is_fine(self) -> None:
        """Repeating the Basic user as form client_id is allowed (RFC 6749 §2.3.1)."""
        body = w.encode_form({"grant_type": GRANT_REFRESH, "client_id": "rucio"})
        req = w.decode_token_request(body, w.basic_header("rucio", SECRET))
        assert (req.client_id, req.client_secret, req.client_auth) == (
            "rucio",
            SECRET,
            CLIENT_AUTH_BASIC,
        )

    def test_missing_grant_type(self) -> None:
        """A request without grant_type is invalid_request naming grant_type (RFC 6749 §5.2)."""
        with pytest.raises(w.WireError) as err:
            w.decode_token_request(w.encode_form({"client_id": "rucio"}), None)
        assert (err.value.field, err.value.error) == ("grant_type", "invalid_request")

    def test_no_client_is_invalid_client(self) -> None:
        """Neither Basic nor client_id is invalid_client (RFC 6749 §5.2)."""
        with pytest.raises(w.WireError) as err:
            w.decode_token_request(w.encode_form({"grant_type": GRANT_REFRESH}), None)
        assert (err.value.field, err.value.error) == ("client_id", "invalid_client")

    def test_repeated_parameter(self) -> None:
        """A repeated token-request parameter is invalid_request (RFC 6749 §3.1)."""
        body = b"grant_type=refresh_token&client_id=a&refresh_token=x&refresh_token=y"
        with pytest.raises(w.WireError) as err:
            w.decode_token_request(body, None)
        assert (err.value.field, err.value.error) == ("refresh_token", "invalid_request")

    def test_secret_free_repr(self) -> None:
        """A decoded token request shows no secret, refresh token, subject token or device code in repr."""
        for req in token_requests():
            body, headers = w.token_request_form(req)
            text = repr(w.decode_token_request(body, headers.get("Authorization")))
            assert SECRET not in text and TOKEN not in text


class TestOtherRequests:
    """Device authorization (RFC 8628 §3.1), revocation (RFC 7009 §2.1), the approval page."""

    @pytest.mark.parametrize("how", [CLIENT_AUTH_BASIC, CLIENT_AUTH_POST, CLIENT_AUTH_NONE])
    def test_device_authorization_round_trip(self, how: str) -> None:
        """A device authorization request decodes to itself with each client authentication (RFC 8628 §3.1, K2)."""
        req = DeviceAuthorizationRequest(
            client_id="tm",
            client_secret=None if how == CLIENT_AUTH_NONE else SECRET,
            client_auth=how,
            scope="openid offline_access storage.read:/",
            audience="https://store.example",
        )
        body, headers = w.device_authorization_form(req)
        assert w.decode_device_authorization(body, headers.get("Authorization")) == req

    @pytest.mark.parametrize("how", [CLIENT_AUTH_BASIC, CLIENT_AUTH_POST, CLIENT_AUTH_NONE])
    def test_revocation_round_trip(self, how: str) -> None:
        """A revocation request decodes to itself, the token hidden from repr (RFC 7009 §2.1)."""
        req = RevocationRequest(
            token="rt-" + SECRET,
            client_id="tm",
            client_secret=None if how == CLIENT_AUTH_NONE else SECRET,
            client_auth=how,
            token_type_hint="refresh_token",
        )
        body, headers = w.revocation_form(req)
        decoded = w.decode_revocation(body, headers.get("Authorization"))
        assert decoded == req
        assert SECRET not in repr(decoded)

    def test_revocation_without_token(self) -> None:
        """A revocation request must name the token (RFC 7009 §2.1)."""
        with pytest.raises(w.WireError) as err:
            w.decode_revocation(w.encode_form({"client_id": "tm"}), None)
        assert (err.value.field, err.value.error) == ("token", "invalid_request")

    @pytest.mark.parametrize("approve", [True, False])
    def test_device_approval_round_trip(self, approve: bool) -> None:
        """The verification page's answer decodes to itself (RFC 8628 §3.3)."""
        req = DeviceApproval(user_code="WDJB-MJHT", user="alice", approve=approve)
        assert w.decode_device_approval(w.device_approval_form(req)) == req

    def test_device_approval_defaults_to_yes(self) -> None:
        """An approval without ``approve`` approves (the page's default button, RFC 8628 §3.3)."""
        decoded = w.decode_device_approval(b"user_code=ABCD&user=alice")
        assert decoded.approve is True

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b"user=alice", "user_code"),
            (b"user_code=ABCD", "user"),
            (b"user_code=ABCD&user=alice&approve=maybe", "approve"),
        ],
    )
    def test_device_approval_errors(self, body: bytes, field: str) -> None:
        """An incomplete or unclear approval is invalid_request naming the field (RFC 8628 §3.3)."""
        with pytest.raises(w.WireError) as err:
            w.decode_device_approval(body)
        assert err.value.field == field


# -- answers ---------------------------------------------------------------------------------------


class TestTokenResponse:
    """Token endpoint answers (RFC 6749 §5.1, §5.2; RFC 8693 §2.2)."""

    @pytest.mark.parametrize(
        "resp",
        [
            TokenResponse(access_token=TOKEN, expires_in=1200.0, scope="storage.read:/"),
            TokenResponse(
                access_token=TOKEN,
                expires_in=599.5,
                scope="storage.read:/ offline_access",
                refresh_token="rt-" + SECRET,
            ),
            TokenResponse(
                access_token=TOKEN,
                expires_in=3600.0,
                scope="",
                token_type="N_A",
                issued_token_type=TOKEN_TYPE_REFRESH,
            ),
            TokenResponse(
                access_token=TOKEN,
                expires_in=60.0,
                scope="read:/",
                issued_token_type=TOKEN_TYPE_JWT,
            ),
        ],
    )
    def test_round_trip(self, resp: TokenResponse) -> None:
        """A 200 body decodes back to the response, issued_token_type included (RFC 6749 §5.1, RFC 8693 §2.2.1)."""
        body = json.dumps(w.token_response_body(resp)).encode()
        assert w.decode_token_response(200, body) == resp

    def test_body_fields(self) -> None:
        """The body has access_token, token_type, expires_in (a JSON integer when whole) and scope (RFC 6749 §5.1)."""
        body = w.token_response_body(
            TokenResponse(access_token=TOKEN, expires_in=1200.0, scope="read:/")
        )
        assert body == {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 1200,
            "scope": "read:/",
        }
        assert isinstance(body["expires_in"], int)

    def test_int_expires_in(self) -> None:
        """An int expires_in (typed float, so mypy lets it through) encodes too (RFC 6749 §5.1)."""
        resp = TokenResponse(access_token=TOKEN, expires_in=600, scope="")
        assert w.token_response_body(resp)["expires_in"] == 600

    def test_exchange_answer_minimal(self) -> None:
        """A token exchange answer with only access_token, issued_token_type, token_type and expires_in decodes (K4)."""
        body = json.dumps(
            {
                "access_token": TOKEN,
                "issued_token_type": TOKEN_TYPE_ACCESS,
                "token_type": "Bearer",
                "expires_in": 300,
            }
        ).encode()
        resp = w.decode_token_response(200, body)
        assert isinstance(resp, TokenResponse)
        assert (resp.issued_token_type, resp.scope, resp.expires_in) == (
            TOKEN_TYPE_ACCESS,
            "",
            300.0,
        )

    @pytest.mark.parametrize(
        ("status", "body", "error", "description"),
        [
            (
                400,
                {"error": "invalid_grant", "error_description": "revoked"},
                "invalid_grant",
                "revoked",
            ),
            (400, {"error": "invalid_target"}, "invalid_target", ""),
            (
                401,
                {"error": "invalid_client", "error_description": "who?"},
                "invalid_client",
                "who?",
            ),
            (503, {"error": "temporarily_unavailable"}, "temporarily_unavailable", ""),
        ],
    )
    def test_errors(self, status: int, body: dict[str, str], error: str, description: str) -> None:
        """A non-200 JSON answer is an OAuthError with its error, description and status (RFC 6749 §5.2, K4)."""
        answer = w.decode_token_response(status, json.dumps(body).encode())
        assert answer == OAuthError(error=error, description=description, status=status)

    @pytest.mark.parametrize("body", [b"<html>Service Unavailable</html>", b"", b"[1, 2]"])
    def test_503_without_json(self, body: bytes) -> None:
        """A 503 from a proxy without a JSON error is temporarily_unavailable (RFC 6749 §5.2)."""
        answer = w.decode_token_response(503, body)
        assert answer == OAuthError(error="temporarily_unavailable", status=503)

    def test_other_status_without_json(self) -> None:
        """Another status without a JSON error keeps the status in the error (RFC 6749 §5.2)."""
        assert w.decode_token_response(502, b"Bad Gateway") == OAuthError(
            error="http_502", status=502
        )

    @pytest.mark.parametrize(
        ("doc", "field"),
        [
            ({"expires_in": 60}, "access_token"),
            ({"access_token": "", "expires_in": 60}, "access_token"),
            ({"access_token": TOKEN}, "expires_in"),
            ({"access_token": TOKEN, "expires_in": "60"}, "expires_in"),
            ({"access_token": TOKEN, "expires_in": True}, "expires_in"),
            ({"access_token": TOKEN, "expires_in": -1}, "expires_in"),
        ],
    )
    def test_bad_200(self, doc: dict[str, Any], field: str) -> None:
        """A 200 without a usable access_token or expires_in is a WireError naming the field, without the token (RFC 6749 §5.1)."""
        with pytest.raises(w.WireError) as err:
            w.decode_token_response(200, json.dumps(doc).encode())
        assert err.value.field == field
        assert TOKEN not in str(err.value)

    def test_nan_expires_in(self) -> None:
        """expires_in NaN (which Python's json reads) is refused (RFC 6749 §5.1)."""
        with pytest.raises(w.WireError):
            w.decode_token_response(200, b'{"access_token": "x", "expires_in": NaN}')

    def test_token_hidden_from_repr(self) -> None:
        """A decoded token response does not show its access or refresh token in repr."""
        resp = TokenResponse(
            access_token=TOKEN, expires_in=60.0, scope="", refresh_token="rt-" + SECRET
        )
        decoded = w.decode_token_response(200, json.dumps(w.token_response_body(resp)).encode())
        assert TOKEN not in repr(decoded) and SECRET not in repr(decoded)


class TestOtherAnswers:
    """Device authorization answers (RFC 8628 §3.2), errors (RFC 6749 §5.2), acks (RFC 7009 §2.2)."""

    def test_device_authorization_round_trip(self) -> None:
        """A device authorization answer decodes back, device_code hidden from repr (RFC 8628 §3.2, K2)."""
        resp = DeviceAuthorizationResponse(
            device_code="dc-" + SECRET,
            user_code="WDJB-MJHT",
            verification_uri="https://issuer.example/vo/device",
            expires_in=1800.0,
            interval=5.0,
        )
        body = json.dumps(w.device_authorization_body(resp)).encode()
        decoded = w.decode_device_authorization_response(200, body)
        assert decoded == resp
        assert SECRET not in repr(decoded)

    def test_device_authorization_default_interval(self) -> None:
        """A missing interval is 5 seconds (RFC 8628 §3.2, K2)."""
        body = b'{"device_code": "d", "user_code": "u", "verification_uri": "v", "expires_in": 60}'
        decoded = w.decode_device_authorization_response(200, body)
        assert isinstance(decoded, DeviceAuthorizationResponse) and decoded.interval == 5.0

    def test_device_authorization_incomplete(self) -> None:
        """A 200 device answer without user_code is a WireError (RFC 8628 §3.2)."""
        with pytest.raises(w.WireError):
            w.decode_device_authorization_response(200, b'{"device_code": "d"}')

    def test_device_authorization_error(self) -> None:
        """A refused device authorization is the OAuthError (RFC 8628 §3.2, RFC 6749 §5.2)."""
        body = b'{"error": "unauthorized_client"}'
        assert w.decode_device_authorization_response(400, body) == OAuthError(
            error="unauthorized_client", status=400
        )

    def test_oauth_error_body(self) -> None:
        """error_description is sent only when there is one (RFC 6749 §5.2)."""
        assert w.oauth_error_body(OAuthError(error="invalid_scope")) == {"error": "invalid_scope"}
        assert w.oauth_error_body(OAuthError(error="invalid_scope", description="no")) == {
            "error": "invalid_scope",
            "error_description": "no",
        }

    def test_ack_or_error(self) -> None:
        """200 is Ack, any other status the OAuthError (RFC 7009 §2.2, §2.2.1)."""
        assert w.decode_ack_or_error(200, b"{}") == Ack()
        assert w.decode_ack_or_error(200, b"") == Ack()
        assert w.decode_ack_or_error(400, b'{"error": "unsupported_token_type"}') == OAuthError(
            error="unsupported_token_type", status=400
        )


# -- bearer challenges (RFC 6750 §3) -------------------------------------------------------------


def quoted_params(header: str) -> dict[str, str]:
    """The quoted auth-params of a challenge, raw."""
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


class TestBearerChallenge:
    """``WWW-Authenticate: Bearer`` for refusals (RFC 6750 §3, §3.1; M1-M5)."""

    @pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.MISSING_TOKEN])
    def test_round_trip(self, reason: Reason) -> None:
        """Every refusal reason gives its RFC 6750 error code, and our reason back from the description (RFC 6750 §3.1, M1-M5)."""
        header = w.bearer_challenge(reason, "the detail", realm="store")
        assert header.startswith("Bearer ")
        params = quoted_params(header)
        assert params["realm"] == "store"
        assert params["error"] == reason.oauth_error
        assert params["error"] == (
            "insufficient_scope" if reason.status == 403 else "invalid_token"
        )
        assert w.parse_bearer_challenge(header) == (
            reason.oauth_error,
            reason,
            f"{reason.value}: the detail",
        )

    def test_missing_token_has_no_error(self) -> None:
        """A request without a token gets a challenge with no error attribute (RFC 6750 §3.1)."""
        header = w.bearer_challenge(Reason.MISSING_TOKEN, "no bearer token", realm="store")
        assert header == 'Bearer realm="store"'
        assert w.parse_bearer_challenge(header) == (None, Reason.MISSING_TOKEN, "")

    @pytest.mark.parametrize(
        "detail",
        ['say "hi"', "back\\slash", "naïve — ünïcødé", "line\r\nInjected: yes", "\x00\x7f"],
    )
    def test_description_charset(self, detail: str) -> None:
        """'"', '\\', non-ASCII and control characters never reach the header: error_description stays in %x20-21 / %x23-5B / %x5D-7E (RFC 6750 §3)."""
        header = w.bearer_challenge(Reason.EXPIRED, detail, realm='re"al\\m é')
        assert header.isascii() and "\r" not in header and "\n" not in header
        params = quoted_params(header)
        assert set(params) == {"realm", "error", "error_description"}
        for value in params.values():
            assert DESCRIPTION_CHARS.fullmatch(value), value
        error, reason, description = w.parse_bearer_challenge(header)
        assert (error, reason) == ("invalid_token", Reason.EXPIRED)
        assert len(description) == len("expired: ") + len(detail)

    @given(reason=st.sampled_from(Reason), detail=st.text(), realm=st.text())
    def test_any_text(self, reason: Reason, detail: str, realm: str) -> None:
        """Whatever the detail and realm, the header is RFC 6750 §3 clean and parses back to the reason (RFC 6750 §3)."""
        header = w.bearer_challenge(reason, detail, realm=realm)
        params = quoted_params(header)
        assert all(DESCRIPTION_CHARS.fullmatch(v) for v in params.values())
        assert w.parse_bearer_challenge(header)[:2] == (reason.oauth_error, reason)

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (
                'Bearer error=invalid_token, error_description="expired: at 12"',
                ("invalid_token", Reason.EXPIRED, "expired: at 12"),
            ),
            (
                'Bearer realm="x",error="invalid_token",error_description="a \\"b\\" c\\\\d"',
                ("invalid_token", None, 'a "b" c\\d'),
            ),
            (
                'Basic realm="issuer", Bearer realm="store", error="insufficient_scope"',
                ("insufficient_scope", None, ""),
            ),
            ('bearer  error = "invalid_token"', ("invalid_token", None, "")),
            ("Bearer", (None, Reason.MISSING_TOKEN, "")),
            ('Basic realm="x"', (None, None, "")),
            ('BearerX error="invalid_token"', (None, None, "")),
            ("", (None, None, "")),
            (None, (None, None, "")),
        ],
    )
    def test_parse_other_servers(
        self, header: str | None, expected: tuple[str | None, Reason | None, str]
    ) -> None:
        """Challenges from other servers parse by RFC 9110 §11.2 auth-param rules: token or quoted values, quoted pairs, several challenges (RFC 6750 §3)."""
        assert w.parse_bearer_challenge(header) == expected


# -- RPC -----------------------------------------------------------------------------------------


def start_job(**over: Any) -> StartJob:
    """A StartJob whose program has one step of each kind."""
    fields: dict[str, Any] = {
        "job": 17,
        "slot": 2,
        "user": "alice",
        "service": "vo",
        "token": TOKEN,
        "jti": "jti-17",
        "exp": 1_767_226_800.0,
        "program": JobProgram(
            steps=(
                AccessStep(server="store", path="/vo/data/1", size=100_000_000),
                ComputeStep(seconds=12.5),
                AccessStep(server="store", path="/vo/out/alice/1", size=5, write=True),
                ExecStep(argv=["sh", "-c", "cat $BEARER_TOKEN_FILE"], timeout=60.0),
            ),
            reread=False,
        ),
    }
    fields.update(over)
    return StartJob(**fields)


def envelope(name: str, body: Any) -> bytes:
    """An RPC envelope as bytes."""
    return json.dumps({"type": name, "body": body}).encode()


def start_job_body(**over: Any) -> dict[str, Any]:
    """The JSON body of :func:`start_job`, with top-level overrides."""
    body: dict[str, Any] = json.loads(w.encode_rpc(start_job()))["body"]
    body.update(over)
    return body


def copy_file(i: int = 0) -> TransferFile:
    """One file of a transfer job."""
    return TransferFile(
        source="cern",
        source_path=f"/vo/raw/{i}",
        destination="bnl",
        destination_path=f"/vo/copy/{i}",
        size=5_000_000_000,
    )


def transfer_submit() -> TransferSubmit:
    """A two-file transfer job with per-file tokens (L5)."""
    return TransferSubmit(
        job="r-1",
        files=(copy_file(0), copy_file(1)),
        source_tokens=(TOKEN, TOKEN),
        destination_tokens=(TOKEN, TOKEN),
        fts_token=TOKEN,
    )


class TestRpc:
    """The JSON envelope between the batch-system actors (protocol/_wire.py RPC)."""

    def test_rpc_messages(self) -> None:
        """Exactly the batch-system messages (the schedd's claim keep-alive included), and those of Rucio -> FTS -> storage (L5, HTTP-TPC
        copies and their answers), travel over RPC, by class name."""
        assert set(w.RPC_MESSAGES) == {
            "Ack",
            "CredentialRequest",
            "CredentialResponse",
            "CredentialUpdate",
            "StoreCredential",
            "StartJob",
            "JobFinished",
            "ClaimAlive",
            "TransferSubmit",
            "TransferAccepted",
            "TransferRefused",
            "ThirdPartyCopy",
            "DataResponse",
        }

    @pytest.mark.parametrize(
        "message",
        [
            Ack(),
            Ack(ok=False, detail="busy"),
            CredentialRequest(user="alice", service="vo", wait=20.0, min_valid=60.0),
            CredentialResponse(token=TOKEN, jti="j", exp=1.5),
            CredentialResponse(token=None),
            CredentialUpdate(user="alice", service="vo", token=TOKEN, jti="j", exp=2.0),
            StoreCredential(
                user="alice",
                service="vo",
                issuer="vo",
                scopes="storage.read:/",
                audience="https://store.example",
                refresh_token="rt-" + SECRET,
            ),
            start_job(),
            JobFinished(job=17, host="node-1", exit_code=1, reason="held", cpu_seconds=3.25),
            ClaimAlive(jobs=(3, 17)),
            ClaimAlive(),
            transfer_submit(),
            TransferSubmit(job="r-2", files=(copy_file(),), fts_token=TOKEN),
            TransferAccepted(job="r-1", files=2),
            TransferRefused(job="r-1", status=400, reason="source_tokens[1]: no 'aud' (L5)"),
            ThirdPartyCopy(
                source="cern",
                source_path="/vo/raw/0",
                destination_path="/vo/copy/0",
                size=5_000_000_000,
                source_token=TOKEN,
                destination_token=TOKEN,
                transfer="r-1/0",
            ),
            DataResponse(status=201, size=5_000_000_000),
            DataResponse(
                status=403, reason=Reason.INSUFFICIENT_SCOPE, detail="no", side="destination"
            ),
        ],
        ids=lambda m: type(m).__name__,
    )
    def test_round_trip(self, message: Any) -> None:
        """Each RPC message decodes to itself and shows no token or secret in repr (I12, I13)."""
        decoded = w.decode_rpc(w.encode_rpc(message))
        assert decoded == message
        assert TOKEN not in repr(decoded) and SECRET not in repr(decoded)

    def test_enum_error_never_shows_the_value(self) -> None:
        """An unknown reason is named by its length, not quoted: it could be a misplaced token."""
        with pytest.raises(w.WireError) as err:
            w.decode_rpc(envelope("DataResponse", {"status": 401, "reason": TOKEN}))
        assert TOKEN not in str(err.value) and "a string of" in str(err.value)

    def test_steps_are_tagged(self) -> None:
        """Job steps travel as a union tagged by ``kind``, in order, with argv as an array."""
        steps = json.loads(w.encode_rpc(start_job()))["body"]["program"]["steps"]
        assert [s["kind"] for s in steps] == ["AccessStep", "ComputeStep", "AccessStep", "ExecStep"]
        assert steps[3]["argv"] == ["sh", "-c", "cat $BEARER_TOKEN_FILE"]

    @given(rpc_messages())
    def test_round_trip_any(self, message: Any) -> None:
        """Any RPC message, whatever its text and numbers, decodes to itself."""
        assert w.decode_rpc(w.encode_rpc(message)) == message

    def test_not_rpc(self) -> None:
        """An OAuth or data message does not travel over RPC."""
        with pytest.raises(TypeError):
            w.encode_rpc(TokenRequest(grant_type=GRANT_REFRESH, client_id="x"))

    def test_ack_body_may_be_absent(self) -> None:
        """An envelope without body is the message with its defaults."""
        assert w.decode_rpc(b'{"type": "Ack"}') == Ack()

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            (b"not json", "envelope"),
            (b"[1, 2]", "envelope"),
            (b'{"type": "Ack", "body": {}, "extra": 1}', "envelope"),
            (b'{"body": {}}', "type"),
            (b'{"type": "TokenRequest", "body": {}}', "type"),
            (b'{"type": 7, "body": {}}', "type"),
            (b'{"type": "Ack", "body": [1]}', "body"),
        ],
    )
    def test_bad_envelope(self, raw: bytes, field: str) -> None:
        """A broken envelope is a WireError naming the part at fault."""
        with pytest.raises(w.WireError) as err:
            w.decode_rpc(raw)
        assert err.value.field == field

    @pytest.mark.parametrize(
        ("name", "body", "field", "words"),
        [
            ("JobFinished", {"job": "7", "host": "h", "exit_code": 0}, "body.job", "integer"),
            ("JobFinished", {"job": True, "host": "h", "exit_code": 0}, "body.job", "integer"),
            ("JobFinished", {"job": 7, "host": 5, "exit_code": 0}, "body.host", "string"),
            ("JobFinished", {"job": 7, "host": "h", "exit_code": 1.9}, "body.exit_code", "integer"),
            ("JobFinished", {"job": 7, "host": "h"}, "body.exit_code", "missing"),
            ("JobFinished", {"job": 7, "host": "h", "exit_code": 0, "zzz": 1}, "body", "zzz"),
            ("Ack", {"ok": "false"}, "body.ok", "boolean"),
            (
                "CredentialUpdate",
                {"user": "u", "service": "s", "token": 12, "jti": "j", "exp": 1},
                "body.token",
                "string",
            ),
            ("CredentialResponse", {"token": None, "exp": "soon"}, "body.exp", "number"),
            ("CredentialRequest", {"user": "u", "service": "s", "wait": -1}, "body", "wait"),
            (
                "TransferSubmit",
                {"job": "j", "files": [], "fts_token": 1},
                "body.fts_token",
                "string",
            ),
            (
                "TransferSubmit",
                {"job": "j", "files": [{"source": "a"}], "fts_token": "t"},
                "body.files[0].source_path",
                "missing",
            ),
            (
                "TransferSubmit",
                {"job": "j", "files": [], "fts_token": "t", "source_tokens": "abc"},
                "body.source_tokens",
                "array",
            ),
            (
                "DataResponse",
                {"status": 403, "reason": "nope"},
                "body.reason",
                "insufficient_scope",
            ),
            ("DataResponse", {"status": 403, "reason": 3}, "body.reason", "received integer"),
        ],
    )
    def test_wrong_fields(self, name: str, body: dict[str, Any], field: str, words: str) -> None:
        """A wrong type, a missing or an extra field is a WireError naming the field, never coerced."""
        with pytest.raises(w.WireError) as err:
            w.decode_rpc(envelope(name, body))
        assert err.value.field == field
        assert words in str(err.value)

    @pytest.mark.parametrize(
        ("program", "field"),
        [
            ({"steps": [], "reread": "false"}, "body.program.reread"),
            ({"steps": {"kind": "ComputeStep", "seconds": 1}}, "body.program.steps"),
            ({"steps": [{"kind": "ExecStep", "argv": "ls"}]}, "body.program.steps[0].argv"),
            ({"steps": [{"kind": "ExecStep", "argv": ["ls", 1]}]}, "body.program.steps[0].argv[1]"),
            (
                {
                    "steps": [
                        {"kind": "ComputeStep", "seconds": 1},
                        {"kind": "ComputeStep", "seconds": "x"},
                    ]
                },
                "body.program.steps[1].seconds",
            ),
            ({"steps": [{"kind": "ShellStep", "argv": ["ls"]}]}, "body.program.steps[0].kind"),
            ({"steps": [{"argv": ["ls"]}]}, "body.program.steps[0].kind"),
            ({"steps": ["ComputeStep"]}, "body.program.steps[0]"),
            (
                {
                    "steps": [
                        {"kind": "AccessStep", "server": "s", "path": "/p", "size": 1, "write": 1}
                    ]
                },
                "body.program.steps[0].write",
            ),
            (
                {"steps": [{"kind": "AccessStep", "server": "s", "path": "/p", "size": -1}]},
                "body.program.steps[0]",
            ),
            (
                {"steps": [{"kind": "ComputeStep", "seconds": 1, "extra": 2}]},
                "body.program.steps[0]",
            ),
        ],
    )
    def test_wrong_program(self, program: dict[str, Any], field: str) -> None:
        """A StartJob whose program does not fit is a WireError with the path to the culprit (tagged union of steps)."""
        with pytest.raises(w.WireError) as err:
            w.decode_rpc(envelope("StartJob", start_job_body(program=program)))
        assert err.value.field == field
        assert TOKEN not in str(err.value)

    @pytest.mark.parametrize(
        "body",
        [
            start_job_body(job=TOKEN),
            start_job_body(user=[TOKEN]),
            start_job_body(program={"steps": [{"kind": TOKEN}]}),
            start_job_body(program={"steps": [{"kind": "ExecStep", "argv": TOKEN}]}),
            start_job_body(token={"t": TOKEN}),
            {**start_job_body(), TOKEN: 1},
        ],
    )
    def test_no_token_in_errors(self, body: dict[str, Any]) -> None:
        """A token in the wrong place never shows in the WireError (no token in a log line)."""
        with pytest.raises(w.WireError) as err:
            w.decode_rpc(envelope("StartJob", body))
        text = f"{err.value} {err.value.field}"
        assert TOKEN[:12] not in text

    def test_no_token_in_type_error(self) -> None:
        """A token sent as the envelope type is not echoed."""
        with pytest.raises(w.WireError) as err:
            w.decode_rpc(envelope(TOKEN, {}))
        assert TOKEN[:10] not in str(err.value)


def json_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) to a value inside a JSON document."""
    paths = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            paths += json_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            paths += json_paths(v, (*prefix, i))
    return paths


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced."""
    copy = json.loads(json.dumps(doc))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


_START_JOB_PATHS = json_paths(start_job_body())


@pytest.mark.parametrize("path", _START_JOB_PATHS, ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize(
    "value",
    [TOKEN, [TOKEN], {TOKEN: TOKEN}, {"kind": TOKEN}, 7, None, True],
    ids=["token", "list", "key", "kind", "int", "null", "bool"],
)
def test_no_token_in_any_rpc_error(path: tuple[Any, ...], value: Any) -> None:
    """Wherever a token lands in a StartJob body, it is either a valid value or a WireError that does not show it (no token in a log line)."""
    problem: w.WireError | None = None
    try:
        w.decode_rpc(envelope("StartJob", replaced(start_job_body(), path, value)))
    except w.WireError as exc:
        problem = exc
    if problem is not None:
        assert TOKEN[:12] not in f"{problem} {problem.field}"


@pytest.mark.parametrize(
    "body",
    [
        f"grant_type=x&client_id=a&client_secret={SECRET}&client_secret={SECRET}",
        f"grant_type=x&client_id=a&refresh_token={SECRET}&refresh_token={SECRET}",
        f"client_id=a&client_secret={SECRET}",
        f"grant_type=x&client_secret={SECRET}",
    ],
)
def test_no_secret_in_form_errors(body: str) -> None:
    """A refused form never shows a secret it carried (RFC 6749 §3.1, §5.2)."""
    with pytest.raises(w.WireError) as err:
        w.decode_token_request(body.encode(), None)
    assert SECRET not in str(err.value)


def test_no_secret_in_basic_errors() -> None:
    """A refused Basic header never shows the credentials (RFC 6749 §2.3.1)."""
    for value in (base64.b64encode(SECRET.encode()).decode(), SECRET + "!"):
        with pytest.raises(w.WireError) as err:
            w.basic_credentials(f"Basic {value}")
        assert SECRET not in str(err.value)
    body = w.encode_form({"grant_type": "x", "client_secret": SECRET})
    with pytest.raises(w.WireError) as err:
        w.decode_token_request(body, w.basic_header("a", SECRET))
    assert SECRET not in str(err.value)
