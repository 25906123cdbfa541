"""Keys, JWKS and the issuer's key ring (conformance D1, D5, D6)."""

from __future__ import annotations

import hashlib
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scitokens_batch.errors import KeyFileError
from scitokens_batch.tokens import (
    Algorithm,
    KeyRing,
    PublicKey,
    SigningKey,
    jwks_document,
    parse_jwks,
)


class TestSigningKey:
    def test_generated_kid_is_rfc7638_thumbprint(self, es256_key: SigningKey) -> None:
        """D5: the default kid is the RFC 7638 thumbprint, as PyJWT computes it independently."""
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(es256_key.public.key))
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
        expected = jwt.utils.base64url_encode(
            hashlib.sha256(
                json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
            ).digest()
        ).decode()
        assert es256_key.kid == expected

    def test_private_key_never_in_repr(self, es256_key: SigningKey) -> None:
        """No key material in logs: repr shows kid and alg only."""
        text = repr(es256_key)
        assert "PRIVATE" not in text and es256_key.kid in text
        assert "key=" not in text

    def test_pem_round_trip_keeps_kid(self, rs256_key: SigningKey) -> None:
        """A key written as PEM and read back is the same key under a given kid."""
        back = SigningKey.from_pem(rs256_key.private_pem(), kid=rs256_key.kid)
        assert back.public == rs256_key.public
        assert back.alg is Algorithm.RS256

    def test_other_curves_refused(self) -> None:
        """peers.md rule 3: only P-256 EC keys (ES256) are accepted by scitokens-cpp."""
        with pytest.raises(KeyFileError, match="P-256"):
            SigningKey.from_key(ec.generate_private_key(ec.SECP384R1()))

    def test_small_rsa_refused(self) -> None:
        """RSA keys below 2048 bits are refused."""
        with pytest.raises(KeyFileError, match="2048 bits"):
            SigningKey.from_key(rsa.generate_private_key(public_exponent=65537, key_size=1024))

    def test_garbage_pem_names_source(self) -> None:
        """A file that is not a PEM key gives an error naming the source."""
        with pytest.raises(KeyFileError, match=r"mykey\.pem"):
            SigningKey.from_pem(b"not a key", source="mykey.pem")


class TestJwks:
    @pytest.mark.parametrize("alg", [Algorithm.ES256, Algorithm.RS256])
    def test_round_trip(self, alg: Algorithm, es256_key: SigningKey, rs256_key: SigningKey) -> None:
        """D5: a JWKS we export parses back to equal keys with kid, kty, alg and use set."""
        key = es256_key if alg is Algorithm.ES256 else rs256_key
        doc = jwks_document([key.public])
        jwk = doc["keys"][0]
        assert {"kid", "kty", "alg", "use"} <= set(jwk)
        assert jwk["alg"] == alg.value and jwk["use"] == "sig"
        assert parse_jwks(json.loads(json.dumps(doc))) == (key.public,)

    def test_pyjwt_reads_our_jwks(self, es256_key: SigningKey) -> None:
        """Our JWKS is understood by PyJWT's independent JWK parser."""
        jwks = jwt.PyJWKSet.from_dict(jwks_document([es256_key.public]))
        assert jwks.keys[0].key_id == es256_key.kid

    def test_duplicate_kid_refused(self, es256_key: SigningKey) -> None:
        """A JWKS with the same kid twice is refused, naming the index."""
        jwk = es256_key.public.to_jwk()
        with pytest.raises(KeyFileError, match=r"keys\[1\]: duplicate kid"):
            parse_jwks({"keys": [jwk, jwk]})

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"kty": "oct"}, "'kty' must be"),
            ({"crv": "P-384"}, "'crv' must be 'P-256'"),
            ({"alg": "RS256"}, "'alg' must be 'ES256'"),
            ({"kid": ""}, "'kid' must be a non-empty string"),
            ({"x": "!!!"}, "x"),
        ],
    )
    def test_bad_jwk_members(
        self, es256_key: SigningKey, change: dict[str, str], message: str
    ) -> None:
        """Each broken JWK member is named in the error."""
        jwk = {**es256_key.public.to_jwk(), **change}
        with pytest.raises(KeyFileError, match=message):
            PublicKey.from_jwk(jwk)

    def test_not_a_jwks(self) -> None:
        """A JSON document without a keys list is refused."""
        with pytest.raises(KeyFileError, match="'keys' list"):
            parse_jwks({"kid": "x"})


class TestKeyRing:
    def test_publish_ahead_then_sign(self) -> None:
        """D6: a rotated key is published at `at` but signs only from `at + publish_ahead`."""
        old, new = SigningKey.generate(), SigningKey.generate()
        ring = KeyRing.single(old, since=0.0)
        ring.rotate(new, at=100.0, publish_ahead=50.0)
        assert ring.published(99.0) == (old.public,)
        assert ring.published(100.0) == (old.public, new.public)
        assert ring.signing_key(149.9) is old
        assert ring.signing_key(150.0) is new

    def test_retire_stops_publishing(self) -> None:
        """E6: retiring a key removes it from the JWKS from that instant."""
        old, new = SigningKey.generate(), SigningKey.generate()
        ring = KeyRing.single(old, since=0.0)
        ring.rotate(new, at=10.0, publish_ahead=0.0)
        ring.retire(old.kid, at=20.0)
        assert ring.published(19.0) == (old.public, new.public)
        assert ring.published(20.0) == (new.public,)

    def test_no_signing_key_before_first(self) -> None:
        """Asking for a signing key before any is active is an error, not None."""
        ring = KeyRing()
        ring.add(SigningKey.generate(), publish_at=5.0, sign_from=5.0)
        with pytest.raises(LookupError):
            ring.signing_key(4.0)

    def test_sign_before_publish_refused(self) -> None:
        """A key cannot sign before it is published."""
        with pytest.raises(ValueError, match="sign_from"):
            KeyRing().add(SigningKey.generate(), publish_at=10.0, sign_from=5.0)
