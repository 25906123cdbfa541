"""Running the real peers (scitokens-py 1.9.7, scitokens-cpp 0.7.3) from the interop tests.

Every peer runs in a subprocess with a clean environment whose ``HOME`` and ``XDG_CACHE_HOME``
are a per-test temporary directory, so no peer reads or writes the user's key caches (G4, G12,
H1), and every run has a timeout, so no test leaves a process behind.

How each peer is made to trust our issuer without any network (peers.md "How each validator is
made to trust a loopback issuer"):

* scitokens-cpp: the key cache row is written before the run (peers.md b., workaround 1; H1, H5);
* scitokens-py: ``SciToken.deserialize(token, public_key=PEM)``, or
  ``KeyCache.getinstance().addkeyinfo(...)`` before deserialising (peers.md a.; G12).

The issuer is https (H2, G3) but points at port 1 of the loopback interface, where nothing
listens: if a peer ever tried to fetch keys, it would fail at once instead of waiting on DNS.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import jwt

from scitokens_batch.tokens import (
    Profile,
    PublicKey,
    SigningKey,
    build_claims,
    encode,
    jwks_document,
)

#: https, no trailing slash (peers.md rule 1); port 1: nothing listens, a stray fetch fails fast.
ISSUER = "https://127.0.0.1:1/vo"
#: The audience every validator in peers.md is configured with.
AUDIENCE = "https://harness.example"

#: The scitokens-cpp 0.7.3 command-line tools (Debian package ``scitokens-cpp``, H11).
CPP_TOOLS = (
    "scitokens-verify",
    "scitokens-test-access",
    "scitokens-list-access",
    "scitokens-create",
)
#: What scitokens-cpp prints (checked against 0.7.3; peers.md "Reasons given by each validator").
CPP_VERIFY_OK = "Token deserialization successful."
CPP_ACCESS_OK = "Access test successful."
CPP_ACCESS_FAILED = "Access test failed."

#: Every peer run is bounded (the slowest run here takes well under a second).
PEER_TIMEOUT = 30.0
#: The scitokens-py driver script, run with the interpreter running the tests.
PY_DRIVER = Path(__file__).with_name("scitokens_py_driver.py")


def wall_clock() -> float:
    """The real time: the peers check ``exp``/``nbf``/``iat`` against it (G2, G11, H6)."""
    return time.time()


def our_claims(
    *,
    now: float,
    profile: Profile = Profile.SCITOKENS,
    scopes: str = "read:/dir",
    issuer: str = ISSUER,
    audience: str | Sequence[str] = AUDIENCE,
    lifetime: float = 600,
    **overrides: Any,
) -> dict[str, Any]:
    """Claims made by our :func:`build_claims`, then ``overrides`` (``None`` deletes a claim).

    Keyword names use ``__`` for ``.`` (``wlcg__ver``), so claims the builder refuses (a scope
    with ``..``, an ``iss`` with a trailing slash) can be hand-made for the interop table.
    """
    claims = build_claims(
        profile=profile,
        issuer=issuer,
        subject="alice",
        audience=audience,
        scopes=scopes,
        issued_at=now,
        lifetime=lifetime,
        jti=str(uuid.uuid4()),
    )
    for name, value in overrides.items():
        name = name.replace("__", ".")
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def our_token(key: SigningKey, *, now: float, **kwargs: Any) -> str:
    """A token signed by our :func:`encode` (header ``alg``, ``kid``, ``typ``) from :func:`our_claims`."""
    return encode(our_claims(now=now, **kwargs), key)


def pyjwt_token(
    claims: Mapping[str, Any], key: SigningKey | None, headers: Mapping[str, Any]
) -> str:
    """A token hand-made with PyJWT, for headers our encoder never writes (no ``kid``, ``alg: none``).

    ``key=None`` gives an unsigned ``alg: none`` token (``header.payload.``).
    """
    if key is None:
        return jwt.encode(dict(claims), None, algorithm="none", headers=dict(headers))
    return jwt.encode(dict(claims), key.key, algorithm=key.alg.value, headers=dict(headers))


def isolated_env(home: Path) -> dict[str, str]:
    """A clean environment: no inherited caches, config or proxies; ``HOME`` = cache home = ``home``."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    (home / "cache").mkdir(parents=True, exist_ok=True, mode=0o700)
    return env


@attrs.frozen
class PeerRun:
    """One finished run of a peer tool."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together (the cpp tools print their verdicts to either)."""
        return self.stdout + self.stderr

    def __str__(self) -> str:
        shown = [a if len(a) < 60 else a[:20] + "…" for a in self.args]
        return f"{shown} -> rc={self.returncode} stdout={self.stdout!r} stderr={self.stderr!r}"


@attrs.define
class CppPeer:
    """scitokens-cpp 0.7.3 command-line tools with a private, preloaded key cache (H1, H5)."""

    home: Path
    tools: Mapping[str, str]

    @property
    def cache_file(self) -> Path:
        """``$XDG_CACHE_HOME/scitokens/scitokens_cpp.sqllite`` (sic, H1)."""
        return self.home / "cache" / "scitokens" / "scitokens_cpp.sqllite"

    def preload(self, issuer: str, keys: Iterable[PublicKey], *, now: float) -> None:
        """Write ``issuer``'s JWKS into the cache: fresh for 1 h, kept for a day (peers.md b.)."""
        self.cache_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        row = {
            "jwks": jwks_document(keys),
            "next_update": int(now) + 3600,
            "expires": int(now) + 86400,
        }
        with sqlite3.connect(self.cache_file) as db:
            db.execute("CREATE TABLE IF NOT EXISTS keycache (issuer TEXT PRIMARY KEY, keys TEXT)")
            db.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)", (issuer, json.dumps(row)))
        db.close()

    def cached_row(self, issuer: str) -> dict[str, Any]:
        """The cache row of ``issuer`` as the peer left it."""
        with sqlite3.connect(self.cache_file) as db:
            (keys,) = db.execute("SELECT keys FROM keycache WHERE issuer = ?", (issuer,)).fetchone()
        db.close()
        return dict(json.loads(keys))

    def run(self, tool: str, *args: str, ca_overlay: Path | None = None) -> PeerRun:
        """Run one tool to completion (bounded by :data:`PEER_TIMEOUT`).

        Args:
            ca_overlay: a CA bundle bind-mounted over the system one in a private mount
                namespace, so the tool's libcurl trusts a live loopback issuer (peers.md b.2;
                needs root).
        """
        argv: tuple[str, ...] = (self.tools[tool], *args)
        if ca_overlay is not None:
            argv = (
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount --bind "$0" /etc/ssl/certs/ca-certificates.crt && exec "$@"',
                str(ca_overlay),
                *argv,
            )
        proc = subprocess.run(
            argv,
            env=isolated_env(self.home),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=PEER_TIMEOUT,
            check=False,
        )
        return PeerRun(argv, proc.returncode, proc.stdout, proc.stderr)

    def verify(self, token: str) -> PeerRun:
        """``scitokens-verify TOKEN``: signature, time and profile checks, no issuer pinning."""
        return self.run("scitokens-verify", token)

    def test_access(self, token: str, authz: str, path: str, *, issuer: str = ISSUER) -> PeerRun:
        """``scitokens-test-access TOKEN ISSUER AUD AUTHZ PATH`` (the Enforcer).

        Never call it with a scope path above the root (``read:/../etc``): 0.7.3 has undefined
        behaviour there and crashes (peers.md rule 7).
        """
        return self.run("scitokens-test-access", token, issuer, AUDIENCE, authz, path)

    def list_access(self, token: str, *, issuer: str = ISSUER) -> PeerRun:
        """``scitokens-list-access TOKEN ISSUER AUD``: the ACLs the Enforcer derives (H9)."""
        return self.run("scitokens-list-access", token, issuer, AUDIENCE)

    def create(self, *args: str) -> PeerRun:
        """``scitokens-create ARGS...`` (H11); the token is printed on stdout."""
        return self.run("scitokens-create", *args)


@attrs.define
class PyPeer:
    """python ``scitokens`` 1.9.7, driven in a subprocess by ``scitokens_py_driver.py``.

    A subprocess per call gives every test a fresh ``KeyCache`` singleton whose sqlite file
    lives under this test's ``XDG_CACHE_HOME``, set before the singleton exists (G12).
    """

    home: Path
    python: str = sys.executable
    #: added to the isolated environment (e.g. SSL_CERT_FILE to trust a live issuer, peers.md a.)
    extra_env: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def cache_dir(self) -> Path:
        """Where the driver's ``KeyCache`` must keep its sqlite file (G4)."""
        return self.home / "cache"

    def run(self, ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Run ``ops`` (see the driver's docstring) in one subprocess; one result per op."""
        proc = subprocess.run(
            [self.python, "-I", str(PY_DRIVER)],
            input=json.dumps({"ops": list(ops)}),
            env=isolated_env(self.home) | dict(self.extra_env),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=PEER_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"scitokens-py driver failed (rc={proc.returncode}): {proc.stderr}"
            )
        answer = json.loads(proc.stdout)
        if answer["version"] != "1.9.7":
            raise AssertionError(f"expected python scitokens 1.9.7, ran {answer['version']}")
        cache = Path(answer["cache"]).resolve()
        if not cache.is_relative_to(self.cache_dir.resolve()):
            raise AssertionError(f"scitokens-py key cache escaped the test directory: {cache}")
        results: list[dict[str, Any]] = answer["results"]
        return results


def pem(key: PublicKey) -> str:
    """SubjectPublicKeyInfo PEM text, as ``deserialize(public_key=...)`` takes it."""
    return key.public_pem().decode("ascii")


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is exactly ``1``."""
    return os.environ.get(name) == "1"
