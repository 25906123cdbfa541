"""Token builders shared by the token-core tests."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from scitokens_batch.tokens import Algorithm, Profile, SigningKey, build_claims, encode

ISSUER = "https://issuer.example/vo"
AUDIENCE = "https://storage.example"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def claims(**over: Any) -> dict[str, Any]:
    """SciTokens 2.0 claims valid from T0 for 600 s, with overrides (None deletes a claim)."""
    c = build_claims(
        profile=Profile.SCITOKENS,
        issuer=ISSUER,
        subject="alice",
        audience=AUDIENCE,
        scopes="read:/frames write:/results/alice",
        issued_at=T0,
        lifetime=600,
        jti="jti-1",
    )
    for k, v in over.items():
        k = k.replace("__", ".")
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def token(key: SigningKey, **over: Any) -> str:
    """A signed token made from :func:`claims` with overrides."""
    return encode(claims(**over), key)


def b64(obj: Any) -> str:
    """Unpadded base64url of a JSON object."""
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def encode_with_header(header: dict[str, Any], body: dict[str, Any], key: SigningKey) -> str:
    """Sign ``body`` under an arbitrary ``header`` (e.g. without kid) with ``key``."""
    signing_input = f"{b64(header)}.{b64(body)}".encode()
    if key.alg is Algorithm.ES256:
        assert isinstance(key.key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        assert not isinstance(key.key, ec.EllipticCurvePrivateKey)
        sig = key.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
