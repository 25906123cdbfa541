"""Seed-derived signing keys and RFC 6979 signatures: byte-identical tokens for one seed."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from scitokens_batch.tokens import Algorithm, SigningKey
from scitokens_batch.tokens._codec import encode
from scitokens_batch.tokens._keys import _Expander, _probably_prime

_CLAIMS = {"sub": "alice", "iss": "https://issuer.example", "aud": "any", "exp": 2, "iat": 1}


class TestDerive:
    @pytest.mark.parametrize("alg", [Algorithm.ES256, Algorithm.RS256])
    def test_same_material_same_key(self, alg: Algorithm) -> None:
        """The same material gives the same private key; other material gives another."""
        a = SigningKey.derive(alg, b"scitokens-batch/7/ligo", kid="k")
        b = SigningKey.derive(alg, b"scitokens-batch/7/ligo", kid="k")
        c = SigningKey.derive(alg, b"scitokens-batch/8/ligo", kid="k")
        assert a.private_pem() == b.private_pem()
        assert a.private_pem() != c.private_pem()

    def test_rsa_key_is_a_valid_2048_bit_key(self) -> None:
        """A derived RS256 key has 2048 bits, e = 65537, and signs tokens PyJWT verifies."""
        key = SigningKey.derive(Algorithm.RS256, b"rsa material 0001")
        assert isinstance(key.key, rsa.RSAPrivateKey)
        numbers = key.key.private_numbers()
        assert key.key.key_size == 2048 and numbers.public_numbers.e == 65537
        assert numbers.p * numbers.q == numbers.public_numbers.n
        token = encode(dict(_CLAIMS), key)
        assert (
            jwt.decode(
                token,
                key.public.key,
                algorithms=["RS256"],
                audience="any",
                options={"verify_exp": False},
            )["sub"]
            == "alice"
        )

    def test_ec_key_on_p256_verifies_with_pyjwt(self) -> None:
        """A derived ES256 key is on P-256 and its tokens verify with PyJWT."""
        key = SigningKey.derive(Algorithm.ES256, b"ec material 00001")
        assert isinstance(key.key, ec.EllipticCurvePrivateKey)
        token = encode(dict(_CLAIMS), key)
        assert (
            jwt.decode(
                token,
                key.public.key,
                algorithms=["ES256"],
                audience="any",
                options={"verify_exp": False},
            )["sub"]
            == "alice"
        )

    def test_short_material_refused(self) -> None:
        """Material shorter than 16 bytes is refused with a message giving the length."""
        with pytest.raises(ValueError, match="at least 16 bytes"):
            SigningKey.derive(Algorithm.ES256, b"short")

    def test_es256_signatures_are_deterministic(self) -> None:
        """RFC 6979: one key and one payload give one token, byte for byte."""
        key = SigningKey.generate(Algorithm.ES256)
        assert encode(dict(_CLAIMS), key) == encode(dict(_CLAIMS), key)
        assert encode(dict(_CLAIMS), key) != encode({**_CLAIMS, "sub": "bob"}, key)

    def test_generated_keys_still_random(self) -> None:
        """generate() (live mode) still draws from the CSPRNG: two keys differ."""
        assert SigningKey.generate().private_pem() != SigningKey.generate().private_pem()


class TestMillerRabin:
    @settings(max_examples=300, deadline=None)
    @given(st.integers(min_value=5, max_value=200_000))
    def test_agrees_with_trial_division(self, n: int) -> None:
        """The seeded Miller-Rabin test agrees with trial division on small odd numbers."""
        n |= 1
        truth = all(n % d for d in range(2, int(n**0.5) + 1))
        assert _probably_prime(n, _Expander(b"miller-rabin test")) == truth

    def test_carmichael_numbers_refused(self) -> None:
        """Carmichael numbers (which fool the Fermat test) are found composite."""
        for n in (561, 41041, 825265, 321197185, 5394826801, 232250619601):
            assert not _probably_prime(n, _Expander(b"miller-rabin test"))

    def test_known_large_prime(self) -> None:
        """2**521 - 1 (a Mersenne prime) passes; 2**521 + 1 does not."""
        assert _probably_prime(2**521 - 1, _Expander(b"miller-rabin test"))
        assert not _probably_prime(2**521 + 1, _Expander(b"miller-rabin test"))
