"""Compact JWS encode, parse and signature check for ES256 and RS256.

Why not ``jwt.encode`` / ``jwt.decode`` on the hot path: PyJWT checks ``exp``/``nbf``/``iat``
against the wall clock with no way to pass a clock (style.md, "Warning"), and its layer costs a
nearly fixed 23-31 µs per decode (perf-notes.md) — more than the whole budget above the raw ES256
verify that issue 2 sets. So this module does the three-part compact serialisation itself and
calls ``cryptography`` directly with key objects; PyJWT remains the independent reference in the
tests (tokens made here decode with ``jwt.decode``; tokens made by PyJWT verify here).

Parsing is strict: only the base64url alphabet (no padding, no whitespace anywhere: RFC 7515
§7.1 and the b64token grammar of RFC 6750 §2.1), JSON objects for header and payload, at most
16 KiB (HTCondor's token size cap, F5), and ``alg`` must be ES256 or RS256 (D1).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..errors import TokenFormatError
from ._keys import PublicKey, SigningKey
from ._profiles import Algorithm
from ._reasons import Reason, Rejection

__all__ = [
    "MAX_TOKEN_BYTES",
    "ParsedToken",
    "encode",
    "parse",
    "peek",
    "signature_valid",
]

#: F5: HTCondor refuses token files of 16384 bytes or more; we refuse such tokens everywhere.
MAX_TOKEN_BYTES = 16384

_ALGS = {a.value: a for a in Algorithm}
#: RFC 6979 deterministic ECDSA: the nonce is derived from the key and the message, so one key
#: and one payload give one token, byte for byte (design.md, "Determinism"). As safe as random
#: nonces, and immune to a weak RNG.
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()
#: The base64url alphabet plus the dot. ``bytes.translate(None, _TOKEN_CHARS)`` deletes them:
#: anything left is a character a token may not hold (a C loop; a set test is 13x slower).
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_VALUE = {c: i for i, c in enumerate(_B64URL_ALPHABET)}


def _unb64(part: bytes) -> bytes:
    """Decode unpadded base64url, refusing non-canonical forms.

    The caller has already checked the alphabet for the whole token. The last character of a
    group of 2 or 3 carries 4 or 2 unused bits; Python ignores them, so two different strings
    would decode to the same signature. RFC 4648 §3.5 lets a decoder refuse non-zero pad bits,
    and we do: otherwise a modified token would still verify.
    """
    rem = len(part) % 4
    if rem == 1:
        raise binascii.Error("impossible base64url length")
    if rem and _B64URL_VALUE[part[-1]] & (0b1111 if rem == 2 else 0b11):
        raise binascii.Error("non-canonical base64url (non-zero pad bits)")
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def encode(claims: dict[str, Any], key: SigningKey) -> str:
    """Sign ``claims`` with ``key``: header ``{"alg", "kid", "typ": "JWT"}`` (peers.md rule 2).

    Returns:
        The compact serialisation ``header.payload.signature``.
    """
    signing_input = key.header_b64 + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    pk = key.key
    if isinstance(pk, ec.EllipticCurvePrivateKey):
        # JWS (RFC 7518 §3.4) wants the raw 64-byte r || s, cryptography gives DER.
        r, s = decode_dss_signature(pk.sign(signing_input, _ECDSA_SHA256))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = pk.sign(signing_input, _PKCS1, _SHA256)
    return (signing_input + b"." + _b64(sig)).decode("ascii")


@attrs.frozen(slots=True)
class ParsedToken:
    """A token split and decoded, signature not yet checked.

    Attributes:
        header: the JOSE header (``alg`` is already known to be ES256 or RS256).
        claims: the payload.
        alg: the algorithm the header names.
        signing_input: ``header.payload`` as bytes, what the signature covers.
        signature: the raw signature bytes.
    """

    header: dict[str, Any]
    claims: dict[str, Any]
    alg: Algorithm
    signing_input: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @property
    def kid(self) -> str | None:
        """The header's ``kid``, or None."""
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) and kid else None


def parse(token: str) -> ParsedToken | Rejection:
    """Split and decode a compact JWS; a :class:`Rejection` says why it is not one.

    ``alg`` values other than ES256 and RS256 (``none``, ``HS256``...) are ``bad_signature``:
    such a token carries no signature any peer could trust (D1, peers.md rule 3).
    """
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        return Rejection(Reason.MALFORMED, "token contains non-ASCII characters")
    if len(raw) >= MAX_TOKEN_BYTES:
        return Rejection(
            Reason.MALFORMED, f"token is {len(raw)} bytes (limit {MAX_TOKEN_BYTES - 1})"
        )
    if raw.translate(None, _TOKEN_CHARS):
        return Rejection(
            Reason.MALFORMED, "token has characters outside base64url (whitespace or padding?)"
        )
    parts = raw.split(b".")
    if len(parts) != 3:
        return Rejection(Reason.MALFORMED, f"token has {len(parts)} parts (a JWS has 3)")
    h_b64, p_b64, s_b64 = parts
    try:
        # json.loads on str skips its encoding detection; the UTF-8 decode is cheaper.
        header = json.loads(_unb64(h_b64).decode())
        claims = json.loads(_unb64(p_b64).decode())
        signature = _unb64(s_b64)
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return Rejection(Reason.MALFORMED, "token header or payload is not base64url JSON")
    except RecursionError:
        # 16 kB of "[[[[..." nests JSON thousands deep: json recurses once per level. A bearer
        # token from anyone must give a verdict, never crash the server that judges it.
        return Rejection(Reason.MALFORMED, "token header or payload nests JSON too deeply")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return Rejection(Reason.MALFORMED, "token header and payload must be JSON objects")
    alg = _ALGS.get(header.get("alg"))  # type: ignore[arg-type]
    if alg is None:
        return Rejection(
            Reason.BAD_SIGNATURE, f"alg {header.get('alg')!r} is not allowed (only ES256, RS256)"
        )
    if "crit" in header:
        # RFC 7515 §4.1.11: a recipient that does not understand a critical extension must reject.
        return Rejection(Reason.MALFORMED, "token header has 'crit' extensions we do not support")
    return ParsedToken(
        header=header,
        claims=claims,
        alg=alg,
        signing_input=h_b64 + b"." + p_b64,
        signature=signature,
    )


def signature_valid(token: ParsedToken, key: PublicKey) -> bool:
    """True when ``token``'s signature verifies with ``key`` and their algorithms agree."""
    return key.alg is token.alg and key.verify(token.signing_input, token.signature)


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a token, *without* verifying anything (``token inspect``).

    Raises:
        TokenFormatError: when the token is not a compact JWS with JSON header and payload.
    """
    text = token.strip()
    parts = text.split(".")
    if len(parts) != 3:
        raise TokenFormatError(f"a token has 3 dot-separated parts (got {len(parts)})")
    if text.encode("utf-8", "replace").translate(None, _TOKEN_CHARS):
        raise TokenFormatError("token has characters outside the base64url alphabet")
    try:
        header = json.loads(_unb64(parts[0].encode("ascii")))
        claims = json.loads(_unb64(parts[1].encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise TokenFormatError("token header or payload is not base64url-encoded JSON") from exc
    except RecursionError:
        raise TokenFormatError("token header or payload nests JSON too deeply") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenFormatError("token header and payload must be JSON objects")
    return header, claims


def claimed_identity(token: str | None) -> tuple[str | None, float | None]:
    """The ``jti`` and ``exp`` a token *claims*, unverified (None where it has none usable).

    For events about a token that was refused or seen from outside a validator: which token
    it was and how late, never whether it is genuine.
    """
    if not token:
        return None, None
    parsed = parse(token)
    if isinstance(parsed, Rejection):
        return None, None
    raw_jti, raw_exp = parsed.claims.get("jti"), parsed.claims.get("exp")
    jti = raw_jti if isinstance(raw_jti, str) else None
    exp = (
        float(raw_exp)
        if isinstance(raw_exp, int | float) and not isinstance(raw_exp, bool)
        else None
    )
    return jti, exp
