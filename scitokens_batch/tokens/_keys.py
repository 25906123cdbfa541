"""Signing keys, public keys, JWKS, and issuer-side key rotation (conformance D1, D5, D6).

Keys are ``cryptography`` key objects kept ready for use: a verifier never re-parses a PEM or a
JWK per token (perf-notes.md: a PEM costs 8-9 µs more per call than a key object, and
scitokens-cpp is slow precisely because it re-parses on every call).

The ``kid`` of a generated key is its RFC 7638 JWK thumbprint, so it is stable for a given key
and never collides between two different keys of one issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import KeyFileError
from ._profiles import Algorithm

__all__ = [
    "KeyRing",
    "PrivateKey",
    "PublicKey",
    "PublicKeyObject",
    "SigningKey",
    "jwks_document",
    "parse_jwks",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKeyObject: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: RS256 keys below this size are refused (NIST SP 800-57; every peer uses 2048 or more).
MIN_RSA_BITS = 2048


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, *, field: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"JWK field {field!r} must be a base64url string (got {text!r})")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"JWK field {field!r} is not base64url (got {text!r})") from exc


def _uint_b64(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def _public_jwk_members(key: PublicKeyObject) -> dict[str, str]:
    """The required members of a public JWK, as RFC 7638 lists them for the thumbprint."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        nums = key.public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _uint_b64(nums.x, 32), "y": _uint_b64(nums.y, 32)}
    nums_r = key.public_numbers()
    return {"e": _uint_b64(nums_r.e), "kty": "RSA", "n": _uint_b64(nums_r.n)}


def thumbprint(key: PublicKeyObject) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a stable ``kid`` for ``key``."""
    canonical = json.dumps(_public_jwk_members(key), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _make_verify(key: PublicKeyObject) -> Callable[[bytes, bytes], bool]:
    """A verifier closure: no per-call type dispatch on the hot path (perf-notes.md)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        verify_der = key.verify
        algorithm = ec.ECDSA(hashes.SHA256())

        def es256(signing_input: bytes, signature: bytes) -> bool:
            # JWS carries the raw 64-byte r || s (RFC 7518 §3.4); cryptography wants DER.
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            try:
                verify_der(der, signing_input, algorithm)
            except InvalidSignature:
                return False
            return True

        return es256
    verify_rsa = key.verify
    pad, sha = padding.PKCS1v15(), hashes.SHA256()

    def rs256(signing_input: bytes, signature: bytes) -> bool:
        try:
            verify_rsa(signature, signing_input, pad, sha)
        except InvalidSignature:
            return False
        return True

    return rs256


def _jose_header(alg: Algorithm, kid: str) -> bytes:
    header = {"alg": alg.value, "kid": kid, "typ": "JWT"}
    return _b64url(json.dumps(header, separators=(",", ":")).encode()).encode("ascii")


def _algorithm_of(key: PrivateKey | PublicKeyObject) -> Algorithm:
    """The one algorithm a key may be used with; refuses curves and sizes no peer accepts."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            # peers.md rule 3: scitokens-cpp accepts only P-256 for EC keys.
            raise KeyFileError(f"EC keys must be on curve P-256 for ES256 (got {key.curve.name})")
        return Algorithm.ES256
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"RSA keys must have >= {MIN_RSA_BITS} bits (got {key.key_size})")
        return Algorithm.RS256
    raise KeyFileError(f"only EC P-256 and RSA keys are supported (got {type(key).__name__})")


@attrs.frozen(slots=True)
class PublicKey:
    """A verification key as published in a JWKS.

    Attributes:
        kid: the key id; every token we sign names it in its header (peers.md rule 2).
        alg: the single algorithm this key verifies.
        key: the ``cryptography`` public key object.
    """

    kid: str
    alg: Algorithm
    key: PublicKeyObject = attrs.field(repr=False, eq=False)
    #: The RFC 7638 thumbprint of the key material, independent of ``kid``; equality uses it.
    fingerprint: str = attrs.field(
        repr=False,
        default=attrs.Factory(lambda self: thumbprint(self.key), takes_self=True),
    )
    #: ``verify(signing_input, jws_signature) -> bool``, bound once to this key (hot path).
    verify: Callable[[bytes, bytes], bool] = attrs.field(
        repr=False,
        eq=False,
        init=False,
        default=attrs.Factory(lambda self: _make_verify(self.key), takes_self=True),
    )

    def to_jwk(self) -> dict[str, str]:
        """The JWK for a JWKS (D5: ``kid``, ``kty``, ``alg``, ``use``, ``crv/x/y`` or ``n/e``)."""
        return {
            "kid": self.kid,
            "alg": self.alg.value,
            "use": "sig",
            **_public_jwk_members(self.key),
        }

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, as scitokens-py and ``scitokens-verify --cred`` take it."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """Build a key from one JWK; ``KeyFileError`` says which member is wrong."""
        if not isinstance(jwk, Mapping):
            raise KeyFileError(f"a JWK must be a JSON object (got {type(jwk).__name__})")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyFileError(f"JWK member 'kid' must be a non-empty string (got {kid!r})")
        kty = jwk.get("kty")
        key: PublicKeyObject
        if kty == "EC":
            if jwk.get("crv") != "P-256":
                raise KeyFileError(f"JWK {kid}: 'crv' must be 'P-256' (got {jwk.get('crv')!r})")
            x = int.from_bytes(_b64url_decode(jwk.get("x"), field="x"), "big")  # type: ignore[arg-type]
            y = int.from_bytes(_b64url_decode(jwk.get("y"), field="y"), "big")  # type: ignore[arg-type]
            try:
                key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            except ValueError as exc:
                raise KeyFileError(f"JWK {kid}: (x, y) is not a point on P-256") from exc
        elif kty == "RSA":
            n = int.from_bytes(_b64url_decode(jwk.get("n"), field="n"), "big")  # type: ignore[arg-type]
            e = int.from_bytes(_b64url_decode(jwk.get("e"), field="e"), "big")  # type: ignore[arg-type]
            try:
                key = rsa.RSAPublicNumbers(e, n).public_key()
            except ValueError as exc:
                raise KeyFileError(f"JWK {kid}: not a valid RSA public key ({exc})") from exc
        else:
            raise KeyFileError(f"JWK {kid}: 'kty' must be 'EC' or 'RSA' (got {kty!r})")
        alg = _algorithm_of(key)
        if "alg" in jwk and jwk["alg"] != alg.value:
            raise KeyFileError(f"JWK {kid}: 'alg' must be {alg.value!r} (got {jwk['alg']!r})")
        return cls(kid=kid, alg=alg, key=key)


@attrs.frozen(slots=True)
class SigningKey:
    """A private signing key with its ``kid`` and algorithm.

    The private key never appears in ``repr`` (no key material in logs).
    """

    kid: str
    alg: Algorithm
    key: PrivateKey = attrs.field(repr=False, eq=False)
    public: PublicKey = attrs.field(repr=False, eq=False)
    #: The base64url JOSE header every token signed by this key carries, computed once.
    header_b64: bytes = attrs.field(
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _jose_header(self.alg, self.kid), takes_self=True),
    )

    @classmethod
    def generate(cls, alg: Algorithm = Algorithm.ES256, *, kid: str | None = None) -> SigningKey:
        """A fresh key: ES256 on P-256, or RS256 with 2048 bits.

        Args:
            alg: the signing algorithm.
            kid: the key id; by default the RFC 7638 thumbprint of the public key.
        """
        key: PrivateKey
        if alg is Algorithm.ES256:
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls.from_key(key, kid=kid)

    @classmethod
    def derive(cls, alg: Algorithm, material: bytes, *, kid: str | None = None) -> SigningKey:
        """A key computed from ``material``: the same bytes always give the same key.

        For virtual-time runs, whose outputs must be byte-identical for one seed (design.md,
        "Determinism"); never for a live issuer, whose keys come from the CSPRNG. ES256: the
        private scalar is a SHAKE-256 expansion of ``material`` reduced into [1, n-1]. RS256:
        two 1024-bit primes found by a Miller-Rabin search over the same expansion (the
        ``cryptography`` package has no seeded RSA generation).

        Args:
            alg: the signing algorithm.
            material: the seed bytes (at least 16; e.g. the scenario seed and issuer name).
            kid: the key id; by default the RFC 7638 thumbprint of the public key.
        """
        if len(material) < 16:
            raise ValueError(f"key material must be at least 16 bytes (got {len(material)})")
        stream = _Expander(material)
        key: PrivateKey
        if alg is Algorithm.ES256:
            scalar = stream.integer(_P256_ORDER.bit_length() + 64) % (_P256_ORDER - 1) + 1
            key = ec.derive_private_key(scalar, ec.SECP256R1())
        else:
            key = _derived_rsa(stream)
        return cls.from_key(key, kid=kid)

    @classmethod
    def from_key(cls, key: PrivateKey, *, kid: str | None = None) -> SigningKey:
        """Wrap an existing private key object."""
        alg = _algorithm_of(key)
        pub = key.public_key()
        the_kid = kid if kid is not None else thumbprint(pub)
        return cls(kid=the_kid, alg=alg, key=key, public=PublicKey(kid=the_kid, alg=alg, key=pub))

    @classmethod
    def from_pem(cls, data: bytes, *, kid: str | None = None, source: str = "key") -> SigningKey:
        """Load an unencrypted PKCS#8 or traditional PEM private key."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyFileError(f"{source}: expected an EC P-256 or RSA private key")
        return cls.from_key(key, kid=kid)

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key. Write it only with mode 0600."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


#: The order of the P-256 group (SEC 2, §2.4.2).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_RSA_E = 65537
#: Odd primes below 2000: trial division rejects most candidates before Miller-Rabin runs.
_SMALL_PRIMES = tuple(
    n for n in range(3, 2000, 2) if all(n % d for d in range(3, int(n**0.5) + 1, 2))
)


class _Expander:
    """A deterministic byte stream: SHAKE-256 of the material and a block counter."""

    def __init__(self, material: bytes) -> None:
        self._material = material
        self._block = 0

    def integer(self, bits: int) -> int:
        """The next ``bits``-bit non-negative integer of the stream."""
        nbytes = (bits + 7) // 8
        self._block += 1
        digest = hashlib.shake_256(self._block.to_bytes(8, "big") + self._material).digest(nbytes)
        return int.from_bytes(digest, "big") >> (nbytes * 8 - bits)


def _probably_prime(n: int, stream: _Expander, rounds: int = 40) -> bool:
    """Miller-Rabin with ``rounds`` bases from the stream (error < 4**-40, FIPS 186-5 C.3.1)."""
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        a = 2 + stream.integer(n.bit_length()) % (n - 3)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _derived_prime(stream: _Expander, bits: int) -> int:
    """The first probable prime p of the stream with the top two bits set (so p*q has
    exactly 2 * ``bits`` bits) and gcd(e, p - 1) = 1."""
    while True:
        candidate = stream.integer(bits) | (0b11 << (bits - 2)) | 1
        if (candidate - 1) % _RSA_E != 0 and _probably_prime(candidate, stream):
            return candidate


def _derived_rsa(stream: _Expander) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key from the stream (``SigningKey.derive``)."""
    p = _derived_prime(stream, 1024)
    q = _derived_prime(stream, 1024)
    while q == p:  # pragma: no cover - 2**-1000
        q = _derived_prime(stream, 1024)
    d = rsa.rsa_recover_private_exponent(_RSA_E, p, q)
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(_RSA_E, p * q),
    )
    return numbers.private_key()


def jwks_document(keys: Iterable[PublicKey]) -> dict[str, list[dict[str, str]]]:
    """A JWKS document ``{"keys": [...]}`` (D5)."""
    return {"keys": [k.to_jwk() for k in keys]}


def parse_jwks(doc: Any, *, source: str = "JWKS") -> tuple[PublicKey, ...]:
    """Parse a JWKS document; refuse duplicate ``kid`` values.

    Raises:
        KeyFileError: naming ``source``, the key index and what is wrong.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise KeyFileError(f"{source}: expected a JSON object with a 'keys' list")
    keys: list[PublicKey] = []
    seen: set[str] = set()
    for i, jwk in enumerate(doc["keys"]):
        try:
            key = PublicKey.from_jwk(jwk)
        except KeyFileError as exc:
            raise KeyFileError(f"{source}: keys[{i}]: {exc}") from exc
        if key.kid in seen:
            raise KeyFileError(f"{source}: keys[{i}]: duplicate kid {key.kid!r}")
        seen.add(key.kid)
        keys.append(key)
    return tuple(keys)


@attrs.frozen(slots=True)
class _RingEntry:
    key: SigningKey
    publish_at: float
    sign_from: float
    retire_at: float | None


@attrs.define
class KeyRing:
    """An issuer's keys over time: publish ahead of use, sign with the newest, retire old ones.

    D6: a new key must be published for at least the validators' key-cache expiration before the
    issuer signs with it; :meth:`rotate` takes that lead time as ``publish_ahead`` so scenarios
    can also show what happens with too short a lead (validators see an unknown ``kid``).
    """

    _entries: list[_RingEntry] = attrs.field(factory=list, alias="_entries")

    @classmethod
    def single(cls, key: SigningKey, *, since: float = float("-inf")) -> KeyRing:
        """A ring holding one key, published and signing since ``since``."""
        ring = cls()
        ring.add(key, publish_at=since, sign_from=since)
        return ring

    def add(self, key: SigningKey, *, publish_at: float, sign_from: float) -> None:
        """Schedule ``key``: in the JWKS from ``publish_at``, signing from ``sign_from``."""
        if sign_from < publish_at:
            raise ValueError(
                f"sign_from ({sign_from}) must be >= publish_at ({publish_at}) for key {key.kid}"
            )
        if any(e.key.kid == key.kid for e in self._entries):
            raise ValueError(f"kid {key.kid!r} is already in the key ring")
        self._entries.append(_RingEntry(key, publish_at, sign_from, None))

    def rotate(self, new_key: SigningKey, *, at: float, publish_ahead: float) -> None:
        """Publish ``new_key`` at ``at`` and sign with it from ``at + publish_ahead``."""
        self.add(new_key, publish_at=at, sign_from=at + publish_ahead)

    def retire(self, kid: str, *, at: float) -> None:
        """Stop publishing ``kid`` from ``at`` (E6: revoking a key = no longer serving it)."""
        for i, e in enumerate(self._entries):
            if e.key.kid == kid:
                self._entries[i] = attrs.evolve(e, retire_at=at)
                return
        raise KeyError(kid)

    def published(self, now: float) -> tuple[PublicKey, ...]:
        """The keys in the JWKS at ``now``."""
        return tuple(
            e.key.public
            for e in self._entries
            if e.publish_at <= now and (e.retire_at is None or now < e.retire_at)
        )

    def signing_key(self, now: float) -> SigningKey:
        """The key to sign with at ``now``: the one whose ``sign_from`` is latest but not future."""
        best: _RingEntry | None = None
        for e in self._entries:
            active = e.sign_from <= now and (e.retire_at is None or now < e.retire_at)
            if active and (best is None or e.sign_from >= best.sign_from):
                best = e
        if best is None:
            raise LookupError(f"no signing key is active at t={now}")
        return best.key

    def keys(self) -> Sequence[SigningKey]:
        """Every key ever added, in order."""
        return tuple(e.key for e in self._entries)
