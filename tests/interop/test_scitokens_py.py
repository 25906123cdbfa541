"""Interop with python ``scitokens`` 1.9.7, both ways, each check in a fresh subprocess.

The subprocess (``scitokens_py_driver.py``) starts with ``XDG_CACHE_HOME`` in this test's
temporary directory, so the library's ``KeyCache`` singleton and its sqlite file live there
(G4, G12). Keys are given as ``deserialize(public_key=PEM)`` or preloaded into that cache with
``addkeyinfo`` (peers.md a.), never fetched. The ``Enforcer`` checks ``exp``/``nbf``/``iat``
against the wall clock (G2, G11), so tokens here are minted at the real current time.
"""

from __future__ import annotations

import pytest

from scitokens_batch.tokens import (
    REQUIRED_CLAIMS,
    SCITOKENS_VER,
    WLCG_VER,
    Algorithm,
    Operation,
    Profile,
    Reason,
    Rejection,
    SigningKey,
    VerifiedToken,
    peek,
    verifier_for,
)

from .peers import AUDIENCE, ISSUER, PyPeer, our_token, pem, wall_clock

pytestmark = pytest.mark.interop

#: Enforcer authz -> our operation (the Enforcer's "write" is an upload: CREATE).
OPS = {"read": Operation.READ, "write": Operation.CREATE}


def _enforce(*tests: tuple[str, str]) -> dict[str, object]:
    """The driver's ``enforce`` argument: ``Enforcer(ISSUER, AUDIENCE).test(...)`` per test."""
    return {"issuer": ISSUER, "audience": AUDIENCE, "tests": [list(t) for t in tests]}


def _ours_grants(key: SigningKey, token: str, now: float, authz: str, path: str) -> bool:
    """Whether our verifier (base path ``/``, like the Enforcer) grants ``authz`` on ``path``."""
    verifier = verifier_for(ISSUER, [AUDIENCE], [key.public], now=now)
    verdict = verifier.authorize(token, now=now, op=OPS[authz], path=path)
    assert isinstance(verdict, VerifiedToken | Rejection), verdict
    if isinstance(verdict, Rejection):
        assert verdict.reason is Reason.INSUFFICIENT_SCOPE, verdict
    return isinstance(verdict, VerifiedToken)


@pytest.mark.parametrize(
    ("scope", "tests"),
    [
        (
            "read:/dir",
            {("read", "/dir/file.txt"): True, ("write", "/dir/new.txt"): False,
             ("read", "/dirty/file.txt"): False},
        ),
        (
            "write:/dir",
            {("write", "/dir/new.txt"): True, ("read", "/dir/file.txt"): False},
        ),
    ],
    ids=["read", "write"],
)  # fmt: skip
def test_py_enforcer_accepts_our_scitokens(
    scitokens_py: PyPeer, signing_key: SigningKey, scope: str, tests: dict[tuple[str, str], bool]
) -> None:
    """scitokens-py 1.9.7 deserialises our ES256/RS256 SciTokens 2.0 tokens and its Enforcer grants exactly what ours grants (G2, G7, G10, peers.md rules 1-6)."""
    now = wall_clock()
    token = our_token(signing_key, now=now, scopes=scope)
    forged = our_token(SigningKey.generate(signing_key.alg, kid=signing_key.kid), now=now)
    good, bad = scitokens_py.run(
        [
            {"op": "verify", "token": token, "public_pem": pem(signing_key.public),
             "enforce": _enforce(*tests)},
            {"op": "verify", "token": forged, "public_pem": pem(signing_key.public),
             "enforce": None},
        ]
    )  # fmt: skip
    assert good["deserialized"], good["error"]
    assert good["claims"]["ver"] == SCITOKENS_VER
    granted = {(t["authz"], t["path"]): t["granted"] for t in good["tests"]}
    assert granted == tests, good["tests"]
    for (authz, path), ok in tests.items():
        assert _ours_grants(signing_key, token, now, authz, path) is ok, (authz, path)
    # The key really is what deserialize checks with: the same kid under another key fails.
    assert not bad["deserialized"]
    assert bad["error"].startswith("InvalidSignatureError"), bad["error"]


def test_py_keycache_preload_accepts_our_token(
    scitokens_py: PyPeer, signing_key: SigningKey
) -> None:
    """With our key preloaded by ``KeyCache.addkeyinfo`` under the token's ``kid``, scitokens-py finds it by (iss, kid) without any fetch and its Enforcer grants read (G4, G12, peers.md a. and rule 2)."""
    now = wall_clock()
    token = our_token(signing_key, now=now)
    _, result = scitokens_py.run(
        [
            {"op": "preload", "issuer": ISSUER, "kid": signing_key.kid,
             "public_pem": pem(signing_key.public)},
            {"op": "verify", "token": token, "public_pem": None,
             "enforce": _enforce(("read", "/dir/file.txt"))},
        ]
    )  # fmt: skip
    assert result["deserialized"], result["error"]
    assert [t["granted"] for t in result["tests"]] == [True], result["tests"]
    assert (scitokens_py.cache_dir / "scitokens" / "scitokens_keycache.sqllite").is_file()


def test_py_deserializes_our_wlcg_token(scitokens_py: PyPeer, signing_key: SigningKey) -> None:
    """scitokens-py 1.9.7 deserialises our WLCG 1.0 token (signature and times); its Enforcer is not asked, as it does not implement WLCG ``storage.*`` scopes or ``wlcg.ver`` (G8, G10, P18, peers.md rule 6) — scitokens-cpp checks WLCG enforcement instead."""
    now = wall_clock()
    token = our_token(signing_key, now=now, profile=Profile.WLCG, scopes="storage.read:/dir")
    (result,) = scitokens_py.run(
        [{"op": "verify", "token": token, "public_pem": pem(signing_key.public), "enforce": None}]
    )
    assert result["deserialized"], result["error"]
    assert result["claims"]["wlcg.ver"] == WLCG_VER
    assert result["claims"]["scope"] == "storage.read:/dir"
    assert _ours_grants(signing_key, token, now, "read", "/dir/file.txt")


def _mint(scitokens_py: PyPeer, key: SigningKey, claims: dict[str, object]) -> str:
    """A token made by ``SciToken(key, alg, key_id).update_claims(...).serialize(...)`` (G1)."""
    (result,) = scitokens_py.run(
        [
            {"op": "mint", "private_pem": key.private_pem().decode("ascii"),
             "alg": key.alg.value, "kid": key.kid, "issuer": ISSUER, "lifetime": 600,
             "claims": claims},
        ]
    )  # fmt: skip
    token: str = result["token"]
    return token


def test_ours_accepts_scitokens_py_tokens(scitokens_py: PyPeer, signing_key: SigningKey) -> None:
    """A SciTokens 2.0 token minted by scitokens-py 1.9.7 (ES256/RS256; ver, aud, sub, scope set by us, iat/nbf/exp/jti by the library) passes our verifier (G1, A14)."""
    token = _mint(
        scitokens_py,
        signing_key,
        {"ver": SCITOKENS_VER, "aud": AUDIENCE, "sub": "alice", "scope": "read:/dir"},
    )
    header, claims = peek(token)
    assert header["alg"] == signing_key.alg.value
    assert header["kid"] == signing_key.kid
    assert set(REQUIRED_CLAIMS) <= claims.keys()
    assert claims["iss"] == ISSUER
    assert claims["nbf"] == claims["iat"] == claims["exp"] - 600  # G1

    now = wall_clock()
    assert _ours_grants(signing_key, token, now, "read", "/dir/file.txt")
    assert not _ours_grants(signing_key, token, now, "write", "/dir/new.txt")


def test_ours_rejects_scitokens_py_default_token(scitokens_py: PyPeer) -> None:
    """A scitokens-py token with only the library's defaults has no ``ver`` and no ``aud``: it is SciTokens 1.0, which we refuse as ``malformed`` — cpp's Enforcer and XRootD refuse it too (A14, G1, peers.md rule 4, table row "no ver, no aud")."""
    key = SigningKey.generate(Algorithm.ES256, kid="interop-es256")
    token = _mint(scitokens_py, key, {"sub": "alice", "scope": "read:/dir"})
    _, claims = peek(token)
    assert "ver" not in claims
    assert "aud" not in claims
    now = wall_clock()
    verifier = verifier_for(ISSUER, [AUDIENCE], [key.public], now=now)
    verdict = verifier.authorize(token, now=now, op=Operation.READ, path="/dir/file.txt")
    assert isinstance(verdict, Rejection)
    assert verdict.reason is Reason.MALFORMED
    assert "'ver'" in verdict.detail, verdict
