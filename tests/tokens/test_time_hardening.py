"""Non-finite times can never grant: the verifier refuses them, check_times fails closed."""

from __future__ import annotations

import base64
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.errors import LocalInputError, TokenFormatError
from scitokens_batch.tokens import (
    KeyCachePolicy,
    Profile,
    Reason,
    Rejection,
    SigningKey,
    TrustedIssuer,
    Verifier,
    build_claims,
    check_times,
    peek,
    verifier_for,
)

from .helpers import AUDIENCE, ISSUER, T0, claims, encode_with_header, token

_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf, -math.nan])


@given(now=_ANY_FLOAT, leeway=_ANY_FLOAT, exp=_ANY_FLOAT, nbf=_ANY_FLOAT, iat=_ANY_FLOAT)
def test_check_times_grants_only_inside_the_window(
    now: float, leeway: float, exp: float, nbf: float, iat: float
) -> None:
    """check_times grants only when every bound holds with finite now and leeway: NaN never grants."""
    verdict = check_times({"exp": exp, "nbf": nbf, "iat": iat}, now=now, leeway=leeway)
    if verdict is None:
        assert math.isfinite(now) and math.isfinite(leeway)
        assert now < exp + leeway and now >= nbf - leeway and now >= iat - leeway
    else:
        assert isinstance(verdict, Rejection)


@given(now=_NON_FINITE)
def test_check_times_refuses_non_finite_now(now: float) -> None:
    """A NaN or infinite now is refused even for a token valid at every finite instant."""
    verdict = check_times({"exp": math.inf, "nbf": -math.inf, "iat": -math.inf}, now=now)
    assert isinstance(verdict, Rejection)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_verifier_refuses_non_finite_now(es256_key: SigningKey, now: float) -> None:
    """Verifier.check and authorize raise LocalInputError for a non-finite now, expired or not."""
    v = Verifier(
        issuers=[TrustedIssuer(ISSUER, "/vo")],
        audiences=[AUDIENCE],
        key_policy=KeyCachePolicy(refresh=86400),
    )
    v.keys_fetched(ISSUER, [es256_key.public], now=T0)
    with pytest.raises(LocalInputError, match="now: expected finite"):
        v.check(token(es256_key), now=now)
    with pytest.raises(LocalInputError, match="now: expected finite"):
        verifier_for(ISSUER, [AUDIENCE], [es256_key.public], now=now)


def test_verifier_refuses_nan_leeway() -> None:
    """A NaN leeway is refused when the verifier is built (it would disable every time check)."""
    with pytest.raises(LocalInputError, match="leeway"):
        Verifier(issuers=[TrustedIssuer(ISSUER, "/vo")], audiences=[AUDIENCE], leeway=math.nan)


def test_infinite_exp_claim_is_malformed(es256_key: SigningKey) -> None:
    """A token whose exp decodes to infinity (JSON 1e999) is refused as malformed."""
    v = verifier_for(ISSUER, [AUDIENCE], [es256_key.public], now=T0, base_path="/vo")
    body = claims(exp=math.inf)
    tok = encode_with_header({"alg": "ES256", "typ": "JWT", "kid": es256_key.kid}, body, es256_key)
    verdict = v.check(tok, now=T0 + 1)
    assert isinstance(verdict, Rejection) and verdict.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lifetime", math.inf),
        ("lifetime", math.nan),
        ("lifetime", 1e300),
        ("lifetime", 0.5),
        ("nbf_backdate", math.inf),
        ("nbf_backdate", math.nan),
        ("issued_at", math.inf),
    ],
)
def test_build_claims_refuses_out_of_range_times(field: str, value: float) -> None:
    """Lifetimes below 1 s or beyond ten years, and non-finite times, are refused by name."""
    kw: dict[str, object] = {"lifetime": 600.0, "nbf_backdate": 0.0, "issued_at": T0}
    kw[field] = value
    with pytest.raises(LocalInputError, match=field):
        build_claims(
            profile=Profile.SCITOKENS,
            issuer=ISSUER,
            subject="alice",
            audience=AUDIENCE,
            scopes="read:/a",
            jti="j",
            **kw,  # type: ignore[arg-type]
        )


def _deep(depth: int) -> str:
    return (
        base64.urlsafe_b64encode(('{"a":' + "[" * depth + "]" * depth + "}").encode())
        .decode()
        .rstrip("=")
    )


@pytest.mark.parametrize("where", ["header", "payload"])
def test_deeply_nested_token_json_is_malformed(es256_key: SigningKey, where: str) -> None:
    """A 16 kB token nesting JSON 5,000 deep is refused as malformed, never a RecursionError."""
    v = verifier_for(ISSUER, [AUDIENCE], [es256_key.public], now=T0, base_path="/vo")
    ok_header = base64.urlsafe_b64encode(b'{"alg":"ES256"}').decode().rstrip("=")
    parts = [_deep(5000), "e30"] if where == "header" else [ok_header, _deep(5000)]
    tok = ".".join([*parts, "AA"])
    assert len(tok) < 16384
    verdict = v.check(tok, now=T0)
    assert isinstance(verdict, Rejection) and verdict.reason is Reason.MALFORMED
    with pytest.raises(TokenFormatError, match="too deeply"):
        peek(tok)
