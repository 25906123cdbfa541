"""Encode, parse and signature checks of compact JWS tokens (D1, F5, RFC 7515)."""

from __future__ import annotations

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.errors import TokenFormatError
from scitokens_batch.tokens import (
    MAX_TOKEN_BYTES,
    Algorithm,
    Reason,
    Rejection,
    SigningKey,
    claimed_identity,
    encode,
    parse,
    peek,
    signature_valid,
)

from .helpers import AUDIENCE, b64, claims, token

_NO_TIME = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}


@pytest.mark.parametrize("alg", [Algorithm.ES256, Algorithm.RS256])
def test_pyjwt_decodes_our_tokens(
    alg: Algorithm, es256_key: SigningKey, rs256_key: SigningKey
) -> None:
    """Our encoder produces what PyJWT (an independent implementation) verifies."""
    key = es256_key if alg is Algorithm.ES256 else rs256_key
    tok = token(key)
    decoded = jwt.decode(
        tok, key.public.key, algorithms=[alg.value], audience=AUDIENCE, options=_NO_TIME
    )
    assert decoded == claims()
    assert jwt.get_unverified_header(tok) == {"alg": alg.value, "kid": key.kid, "typ": "JWT"}


@pytest.mark.parametrize("alg", [Algorithm.ES256, Algorithm.RS256])
def test_pyjwt_tokens_verify_with_ours(
    alg: Algorithm, es256_key: SigningKey, rs256_key: SigningKey
) -> None:
    """A token PyJWT signs parses and verifies with our codec."""
    key = es256_key if alg is Algorithm.ES256 else rs256_key
    tok = jwt.encode(claims(), key.key, algorithm=alg.value, headers={"kid": key.kid})
    parsed = parse(tok)
    assert not isinstance(parsed, Rejection)
    assert parsed.kid == key.kid and parsed.claims == claims()
    assert signature_valid(parsed, key.public)


def test_wrong_key_fails(es256_key: SigningKey) -> None:
    """peers.md 'forged' row: the same kid with another key does not verify."""
    rogue = SigningKey.generate(kid=es256_key.kid)
    parsed = parse(token(rogue))
    assert not isinstance(parsed, Rejection)
    assert not signature_valid(parsed, es256_key.public)


def test_algorithm_mismatch_fails(es256_key: SigningKey, rs256_key: SigningKey) -> None:
    """A signature is never checked with a key of another algorithm."""
    parsed = parse(token(rs256_key))
    assert not isinstance(parsed, Rejection)
    assert not signature_valid(parsed, es256_key.public)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "PS256", None])
def test_other_algorithms_refused(alg: str | None) -> None:
    """D1 / peers.md rule 3: only ES256 and RS256; alg none and HMAC are bad signatures."""
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    tok = f"{b64(header)}.{b64(claims())}.c2ln"
    verdict = parse(tok)
    assert isinstance(verdict, Rejection) and verdict.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("tok", "detail"),
    [
        ("a.b", "2 parts"),
        ("a.b.c.d", "4 parts"),
        ("e30.e30.e30 ", "outside base64url"),
        (" e30.e30.e30", "outside base64url"),
        ("e30.e3\n0.e30", "outside base64url"),
        ("e30=.e30.e30", "outside base64url"),
        ("e30.e30.é", "non-ASCII"),
        ("!!!.e30.e30", "outside base64url"),
        ("W10.e30.e30", "JSON objects"),
        ("e30.bm90IGpzb24.e30", "base64url JSON"),
        ("a.e30.e30", "base64url JSON"),
    ],
)
def test_malformed(tok: str, detail: str) -> None:
    """Whitespace, padding, wrong part counts and non-JSON are malformed, with a reason."""
    verdict = parse(tok)
    assert isinstance(verdict, Rejection)
    assert verdict.reason is Reason.MALFORMED
    assert detail in verdict.detail


def test_crit_header_refused(es256_key: SigningKey) -> None:
    """RFC 7515 §4.1.11: an unknown critical header extension makes the token unusable."""
    tok = (
        f"{b64({'alg': 'ES256', 'kid': es256_key.kid, 'crit': ['x'], 'x': 1})}.{b64(claims())}.c2ln"
    )
    verdict = parse(tok)
    assert isinstance(verdict, Rejection) and verdict.reason is Reason.MALFORMED


def test_size_limit(es256_key: SigningKey) -> None:
    """F5: a token of 16384 bytes or more is refused; just under is parsed."""
    base = token(es256_key)
    pad = "x" * ((MAX_TOKEN_BYTES - len(base) - 40) * 3 // 4)  # base64 grows 4/3
    small = token(es256_key, foo=pad)
    assert MAX_TOKEN_BYTES - 64 < len(small) < MAX_TOKEN_BYTES
    assert not isinstance(parse(small), Rejection)
    big = token(es256_key, foo=pad + "x" * 64)
    assert len(big) >= MAX_TOKEN_BYTES
    verdict = parse(big)
    assert isinstance(verdict, Rejection) and "limit" in verdict.detail


def test_non_canonical_base64_refused(es256_key: SigningKey) -> None:
    """RFC 4648 §3.5: a last character with non-zero pad bits is refused (else edits verify)."""
    tok = token(es256_key)
    sig = tok.rsplit(".", 1)[1]
    assert len(sig) % 4 == 2  # 64 bytes -> 86 characters: 4 unused bits in the last one
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(sig[-1]) | 1]
    verdict = parse(tok[:-1] + twin)
    assert isinstance(verdict, Rejection) and verdict.reason is Reason.MALFORMED


@given(data=st.data())
def test_any_single_byte_change_is_rejected(data: st.DataObject, es256_key: SigningKey) -> None:
    """Property: changing any one character of a token makes it fail parse or signature."""
    tok = token(es256_key)
    i = data.draw(st.integers(0, len(tok) - 1), label="position")
    c = data.draw(st.characters(min_codepoint=0, max_codepoint=255).filter(lambda c: c != tok[i]))
    changed = tok[:i] + c + tok[i + 1 :]
    parsed = parse(changed)
    assert isinstance(parsed, Rejection) or not signature_valid(parsed, es256_key.public)


@given(
    sub=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in claims()),
        st.one_of(st.integers(), st.text(max_size=20), st.booleans()),
        max_size=4,
    ),
)
def test_round_trip(sub: str, extra: dict[str, object], es256_key: SigningKey) -> None:
    """Property: whatever the claims, encode then parse gives them back and the signature holds."""
    c = {**claims(sub=sub), **extra}
    parsed = parse(encode(c, es256_key))
    assert not isinstance(parsed, Rejection)
    assert parsed.claims == c
    assert signature_valid(parsed, es256_key.public)


def test_peek_shows_without_verifying(es256_key: SigningKey) -> None:
    """inspect's peek decodes header and claims of even an expired, unverifiable token."""
    header, body = peek("  " + token(SigningKey.generate(), exp=1) + "\n")
    assert header["alg"] == "ES256" and body["exp"] == 1


@pytest.mark.parametrize("bad", ["abc", "a.b", "!!.??.x", "W10.W10.x"])
def test_peek_refuses_non_tokens(bad: str) -> None:
    """peek raises TokenFormatError (not a traceback-worthy error) for non-tokens."""
    with pytest.raises(TokenFormatError):
        peek(bad)


def test_claimed_identity_reads_jti_and_exp_without_verifying(es256_key: SigningKey) -> None:
    """Events about refused tokens name them by their claimed jti and exp; a boolean or missing
    exp, or an unparsable token, gives None rather than a wrong number."""
    good = claims()
    assert claimed_identity(token(es256_key)) == (good["jti"], float(good["exp"]))
    assert claimed_identity(token(es256_key, exp=True)) == (good["jti"], None)
    assert claimed_identity(token(es256_key, jti=None)) == (None, float(good["exp"]))
    assert claimed_identity("not.a.token") == (None, None)
    assert claimed_identity(None) == (None, None)
