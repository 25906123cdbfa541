"""Interop with Debian's scitokens-cpp 0.7.3, both ways, by running its command-line tools.

Our tokens go through ``scitokens-verify`` and ``scitokens-test-access`` with our JWKS
preloaded into the tool's sqlite key cache under a per-test ``XDG_CACHE_HOME`` (H1, H5,
peers.md b. workaround 1), so no network is used; tokens made by ``scitokens-create`` (H11)
go through our verifier. The last tests pin the two cpp 0.7.3 path bugs that make us stricter
(H10, peers.md rule 7).
"""

from __future__ import annotations

import pytest

from scitokens_batch.tokens import (
    REQUIRED_CLAIMS,
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

from .peers import (
    AUDIENCE,
    CPP_ACCESS_FAILED,
    CPP_ACCESS_OK,
    CPP_VERIFY_OK,
    ISSUER,
    CppPeer,
    PeerRun,
    our_token,
    wall_clock,
)

pytestmark = pytest.mark.interop

#: scitokens-test-access AUTHZ -> our operation (a PUT of a new file is CREATE).
OPS = {"read": Operation.READ, "write": Operation.CREATE}


def _ours(key: SigningKey, token: str, now: float, authz: str, path: str) -> object:
    """Our verdict on ``authz`` of ``path`` (base path ``/``, like cpp's test-access)."""
    verifier = verifier_for(ISSUER, [AUDIENCE], [key.public], now=now)
    return verifier.authorize(token, now=now, op=OPS[authz], path=path)


def _assert_granted(run: PeerRun, *, ok: bool) -> None:
    """A ``scitokens-test-access`` run accepted the token, then granted (rc 0) or denied (rc 1)."""
    lines = run.stdout.splitlines()
    assert lines[:1] == [f"{CPP_VERIFY_OK}  Checking authorizations."], run
    expected = (0, CPP_ACCESS_OK) if ok else (1, CPP_ACCESS_FAILED)
    assert (run.returncode, lines[-1]) == expected, run


@pytest.mark.parametrize(
    ("profile", "scope", "acl", "granted", "denied"),
    [
        (
            Profile.SCITOKENS,
            "read:/dir",
            "read:/dir",
            ("read", "/dir/file.txt"),
            ("write", "/dir/new.txt"),
        ),
        (
            Profile.SCITOKENS,
            "write:/dir",
            "write:/dir",
            ("write", "/dir/new.txt"),
            ("read", "/dir/file.txt"),
        ),
        (
            Profile.WLCG,
            "storage.read:/dir",
            "read:/dir",
            ("read", "/dir/file.txt"),
            ("write", "/dir/new.txt"),
        ),
        (
            Profile.WLCG,
            "storage.modify:/dir",
            "write:/dir",
            ("write", "/dir/new.txt"),
            ("read", "/dir/file.txt"),
        ),
    ],
    ids=["scitokens-read", "scitokens-write", "wlcg-storage.read", "wlcg-storage.modify"],
)
def test_cpp_accepts_our_tokens(
    cpp: CppPeer,
    signing_key: SigningKey,
    profile: Profile,
    scope: str,
    acl: str,
    granted: tuple[str, str],
    denied: tuple[str, str],
) -> None:
    """scitokens-verify and scitokens-test-access accept our ES256/RS256 tokens of both profiles and grant exactly what we grant (H5, H7, H9, peers.md rules 1-6)."""
    now = wall_clock()
    cpp.preload(ISSUER, [signing_key.public], now=now)
    token = our_token(signing_key, now=now, profile=profile, scopes=scope)

    run = cpp.verify(token)
    assert (run.returncode, run.stdout.strip(), run.stderr) == (0, CPP_VERIFY_OK, ""), run

    # H9: cpp's Enforcer maps storage.read -> read and storage.modify -> write (+ modify), so
    # test-access is asked with the SciTokens authz names for both profiles.
    listed = cpp.list_access(token)
    assert listed.returncode == 0, listed
    assert f"ACL: {acl}" in listed.stdout.splitlines(), listed

    _assert_granted(cpp.test_access(token, *granted), ok=True)
    _assert_granted(cpp.test_access(token, *denied), ok=False)
    assert isinstance(_ours(signing_key, token, now, *granted), VerifiedToken)
    mine = _ours(signing_key, token, now, *denied)
    assert isinstance(mine, Rejection)
    assert mine.reason is Reason.INSUFFICIENT_SCOPE

    # The keys came from our preloaded row: cpp neither refreshed nor replaced it (H2, H4).
    row = cpp.cached_row(ISSUER)
    assert row["next_update"] == int(now) + 3600
    assert [k["kid"] for k in row["jwks"]["keys"]] == [signing_key.kid]


@pytest.mark.parametrize("case", ["forged", "expired", "wrong-audience"])
def test_cpp_rejects_what_we_reject(cpp: CppPeer, es256_key: SigningKey, case: str) -> None:
    """scitokens-cpp and ours both refuse a forged, an expired and a wrong-audience token, so the preloaded cache really is what cpp verifies with (peers.md rules 3-5, H6)."""
    now = wall_clock()
    key = SigningKey.from_key(es256_key.key, kid="interop-es256")
    cpp.preload(ISSUER, [key.public], now=now)
    verifier = verifier_for(ISSUER, [AUDIENCE], [key.public], now=now)
    if case == "forged":
        rogue = SigningKey.generate(Algorithm.ES256, kid=key.kid)  # same kid, other key
        token = our_token(rogue, now=now)
        run = cpp.verify(token)
        assert run.returncode == 1, run
        assert run.stdout.strip() == "Failed to deserialize a token: Invalid signature", run
        reason = Reason.BAD_SIGNATURE
    elif case == "expired":
        token = our_token(key, now=now - 605, lifetime=600)  # exp 5 s ago
        run = cpp.verify(token)
        assert run.returncode == 1, run
        assert "token verification failed: token expired" in run.stdout, run
        reason = Reason.EXPIRED
    else:
        token = our_token(key, now=now, audience="https://other.example")
        assert cpp.verify(token).returncode == 0  # verify does not check aud (H8)
        _assert_granted(cpp.test_access(token, "read", "/dir/file.txt"), ok=False)
        reason = Reason.WRONG_AUDIENCE
    mine = verifier.authorize(token, now=now, op=Operation.READ, path="/dir/file.txt")
    assert isinstance(mine, Rejection)
    assert mine.reason is reason


def _cpp_create(cpp: CppPeer, key: SigningKey, profile: str, scope: str) -> PeerRun:
    """``scitokens-create`` with ``key`` (public PEM as --cred, PKCS#8 private PEM as --key)."""
    cred, priv = cpp.home / "cred.pem", cpp.home / "key.pem"
    cred.write_bytes(key.public.public_pem())
    priv.touch(mode=0o600)
    priv.write_bytes(key.private_pem())
    return cpp.create(
        "--cred", str(cred), "--key", str(priv), "--keyid", key.kid, "--issuer", ISSUER,
        "--profile", profile, "--claim", f"aud={AUDIENCE}", "--claim", f"scope={scope}",
        "--claim", "sub=alice",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "scope", "version_claim"),
    [
        ("scitokens2", "read:/dir", ("ver", "scitoken:2.0")),
        ("wlcg", "storage.read:/dir", ("wlcg.ver", WLCG_VER)),
    ],
)
def test_ours_accepts_scitokens_create_tokens(
    cpp: CppPeer, es256_key: SigningKey, profile: str, scope: str, version_claim: tuple[str, str]
) -> None:
    """Tokens made by scitokens-create 0.7.3 (ES256, profiles scitokens2 and wlcg) carry every claim we require and pass our verifier (H11, A1, A14)."""
    key = SigningKey.from_key(es256_key.key, kid="interop-es256")
    run = _cpp_create(cpp, key, profile, scope)
    assert (run.returncode, run.stderr) == (0, ""), run
    token = run.stdout.strip()
    header, claims = peek(token)
    assert header == {"alg": "ES256", "kid": key.kid}
    assert set(REQUIRED_CLAIMS) <= claims.keys()  # scitokens-create sets nbf and jti too
    assert claims[version_claim[0]] == version_claim[1]
    assert (claims["iss"], claims["aud"], claims["sub"], claims["scope"]) == (
        ISSUER, AUDIENCE, "alice", scope,
    )  # fmt: skip
    assert claims["exp"] - claims["iat"] == 600  # H11: default lifetime

    now = wall_clock()
    verifier = verifier_for(ISSUER, [AUDIENCE], [key.public], now=now)
    read = verifier.authorize(token, now=now, op=Operation.READ, path="/dir/file.txt")
    assert isinstance(read, VerifiedToken), read
    assert read.profile is (Profile.WLCG if profile == "wlcg" else Profile.SCITOKENS)
    write = verifier.authorize(token, now=now, op=Operation.CREATE, path="/dir/new.txt")
    assert isinstance(write, Rejection)
    assert write.reason is Reason.INSUFFICIENT_SCOPE


def test_scitokens_create_cannot_sign_rs256(cpp: CppPeer, rs256_key: SigningKey) -> None:
    """scitokens-create 0.7.3 only signs ES256: an RSA credential fails to load, so RS256 peer-made tokens come from scitokens-py only (H11, peers.md b. workaround 3)."""
    run = _cpp_create(
        cpp, SigningKey.from_key(rs256_key.key, kid="interop-rs256"), "scitokens2", "read:/dir"
    )
    assert run.returncode == 1, run
    assert run.stdout == "", run
    assert "failed to load public key: PEM_read_bio_EC_PUBKEY failed" in run.stderr, run


def test_cpp_prefix_match_grants_dirty_but_ours_refuses(
    cpp: CppPeer, es256_key: SigningKey
) -> None:
    """scitokens-cpp 0.7.3 wrongly lets ``read:/dir`` read ``/dirty/file.txt`` (raw prefix match, H10, peers.md table); ours refuses by whole components (B4)."""
    now = wall_clock()
    cpp.preload(ISSUER, [es256_key.public], now=now)
    token = our_token(es256_key, now=now, scopes="read:/dir")
    _assert_granted(cpp.test_access(token, "read", "/dirty/file.txt"), ok=True)
    mine = _ours(es256_key, token, now, "read", "/dirty/file.txt")
    assert isinstance(mine, Rejection)
    assert mine.reason is Reason.INSUFFICIENT_SCOPE


def test_cpp_normalises_dotdot_in_scope_but_ours_refuses(
    cpp: CppPeer, es256_key: SigningKey
) -> None:
    """scitokens-cpp 0.7.3 turns scope ``read:/dir/../etc`` into ``read:/etc`` and grants ``/etc/passwd`` (peers.md rule 7); ours refuses the whole token (B5, G10)."""
    now = wall_clock()
    cpp.preload(ISSUER, [es256_key.public], now=now)
    token = our_token(es256_key, now=now, scope="read:/dir/../etc")  # our builder refuses '..'
    listed = cpp.list_access(token)
    assert listed.returncode == 0, listed
    assert "ACL: read:/etc" in listed.stdout.splitlines(), listed
    _assert_granted(cpp.test_access(token, "read", "/etc/passwd"), ok=True)
    mine = _ours(es256_key, token, now, "read", "/etc/passwd")
    assert isinstance(mine, Rejection)
    assert mine.reason is Reason.MALFORMED
    assert "path traversal" in mine.detail


def test_cpp_verify_accepts_scope_above_root_but_ours_refuses(
    cpp: CppPeer, es256_key: SigningKey
) -> None:
    """scitokens-verify 0.7.3 accepts scope ``read:/../etc``, which crashes its Enforcer (so test-access and list-access are never run on it, peers.md rule 7); ours refuses it (B5)."""
    now = wall_clock()
    cpp.preload(ISSUER, [es256_key.public], now=now)
    token = our_token(es256_key, now=now, scope="read:/../etc")
    run = cpp.verify(token)
    assert (run.returncode, run.stdout.strip()) == (0, CPP_VERIFY_OK), run
    mine = _ours(es256_key, token, now, "read", "/etc/passwd")
    assert isinstance(mine, Rejection)
    assert mine.reason is Reason.MALFORMED
    assert "path traversal" in mine.detail
