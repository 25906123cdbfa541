"""Real clients and servers against the live services: tokens fetched over HTTPS from our issuer
are accepted by scitokens-py and scitokens-cpp fetching its keys live, and curl with a
discovered token gets the conformance statuses from our data server and from XRootD."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from scitokens_batch import _files
from scitokens_batch.tokens import peek

from ..interop.conftest import peer_missing
from ..interop.peers import CPP_TOOLS, CppPeer, PyPeer
from .cluster import AUDIENCE, Cluster

pytestmark = [pytest.mark.interop, pytest.mark.live]

CURL_TIMEOUT = 20


def curl(
    cluster: Cluster, method: str, url: str, token_file: Path | None, *, data: bool = False
) -> int:
    """``curl`` with the token found by WLCG discovery in ``BEARER_TOKEN_FILE`` (F1, F3)."""
    script = 'curl -sS -o /dev/null -w "%{http_code}" --cacert "$CA" -X "$METHOD" '
    if token_file is not None:
        script += '-H "Authorization: Bearer $(cat "$BEARER_TOKEN_FILE")" '
    if data:
        script += "--data-binary @/etc/hostname "
    script += '"$URL"'
    env = {"PATH": "/usr/bin:/bin", "CA": str(cluster.ca), "METHOD": method, "URL": url}
    if token_file is not None:
        env["BEARER_TOKEN_FILE"] = str(token_file)
    proc = subprocess.run(
        ["sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.fixture(scope="module")
def alice(cluster: Cluster) -> str:
    """alice's access token, from a device-flow login over HTTPS (K2)."""
    tokens = cluster.user_tokens()
    assert tokens.refresh_token is not None
    return tokens.access_token


@pytest.fixture
def token_file(tmp_path: Path, alice: str) -> Path:
    """alice's token in a 0600 file, as the starter writes it."""
    path = tmp_path / "bt_alice"
    _files.write_private(path, alice + "\n")
    return path


def test_discovery_document_is_served_under_the_issuer_path(cluster: Cluster) -> None:
    """D2/D3/D5: GET <iss>/.well-known/openid-configuration names the issuer and jwks_uri, and
    the JWKS carries cache headers (D4)."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(cluster.ca),
            cluster.issuer + "/.well-known/openid-configuration",
        ],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=True,
    )
    meta = json.loads(out.stdout)
    assert meta["issuer"] == cluster.issuer
    assert meta["jwks_uri"] == cluster.issuer + "/jwks"
    for key in ("token_endpoint", "device_authorization_endpoint", "revocation_endpoint"):
        assert meta[key].startswith(cluster.issuer + "/")
    headers = subprocess.run(
        [
            "curl",
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            str(cluster.ca),
            meta["jwks_uri"],
        ],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=True,
    ).stdout.lower()
    assert "cache-control: public, max-age=" in headers


def test_live_token_has_the_claims_every_peer_needs(alice: str, cluster: Cluster) -> None:
    """peers.md rules 1-4: the live token's iss is the live issuer byte for byte, it has a kid,
    ver scitoken:2.0 and the requested audience."""
    header, claims = peek(alice)
    assert claims["iss"] == cluster.issuer
    assert header["kid"] and header["alg"] == "ES256"
    assert claims["ver"] == "scitoken:2.0" and claims["aud"] == AUDIENCE


def test_scitokens_py_fetches_our_keys_over_https(
    tmp_path: Path, alice: str, cluster: Cluster
) -> None:
    """peers.md a.: scitokens-py 1.9.7 trusting our CA through SSL_CERT_FILE discovers and fetches
    the keys from the live issuer and its Enforcer grants read, not write (G3, G7, G10)."""
    pytest.importorskip("scitokens")
    home = tmp_path / "py-home"
    home.mkdir(mode=0o700)
    peer = PyPeer(home=home, extra_env={"SSL_CERT_FILE": str(cluster.bundle)})
    (result,) = peer.run(
        [
            {
                "op": "verify",
                "token": alice,
                "public_pem": None,
                "enforce": {
                    "issuer": cluster.issuer,
                    "audience": AUDIENCE,
                    "tests": [
                        ["read", "/data/0"],
                        ["write", "/data/0"],
                        ["write", "/results/alice/x"],
                    ],
                },
            }
        ]
    )
    assert result["deserialized"], result["error"]
    granted = [t["granted"] for t in result["tests"]]
    assert granted == [True, False, True]


def test_scitokens_cpp_fetches_our_keys_over_https(
    tmp_path: Path, alice: str, cluster: Cluster
) -> None:
    """peers.md b.2: scitokens-cpp 0.7.3 with our CA bind-mounted over the system bundle (a private
    mount namespace) fetches the keys live and grants read on the scope (H2, H9)."""
    tools = {t: shutil.which(t) for t in CPP_TOOLS}
    if not all(tools.values()):
        peer_missing("scitokens-cpp not installed (apt-get install scitokens-cpp)")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        peer_missing("the mount-namespace CA overlay needs root and unshare")
    home = tmp_path / "cpp-home"
    home.mkdir(mode=0o700)
    cpp = CppPeer(home=home, tools={t: p for t, p in tools.items() if p})
    ok = cpp.run(
        "scitokens-test-access",
        alice,
        cluster.issuer,
        AUDIENCE,
        "read",
        "/data/0",
        ca_overlay=cluster.bundle,
    )
    assert ok.returncode == 0, ok
    row = cpp.cached_row(cluster.issuer)  # fetched, not preloaded: the cache was empty
    assert row["jwks"]["keys"][0]["kid"] == peek(alice)[0]["kid"]
    denied = cpp.run(
        "scitokens-test-access",
        alice,
        cluster.issuer,
        AUDIENCE,
        "read",
        "/other/0",
        ca_overlay=cluster.bundle,
    )
    assert denied.returncode != 0


#: (server, expected status) per case: ours answers 401 for an unusable token (RFC 6750 §3.1,
#: C4 strict), XRootD 5.5.3 answers 403 for every refusal and 200 for a new file.
CASES = {
    "read in scope": ("GET", "/vo/data/0", {"store": 200, "xroot": 200}),
    "write in scope": ("PUT", "/vo/results/alice/new.out", {"store": 201, "xroot": 200}),
    "write does not grant read": ("GET", "/vo/results/alice/none", {"store": 403, "xroot": 403}),
    "read outside the scope": ("GET", "/vo/other/0", {"store": 403, "xroot": 403}),
    "write outside the scope": ("PUT", "/vo/data/new", {"store": 403, "xroot": 403}),
}


@pytest.mark.parametrize("server", ["store", "xroot"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_curl_with_discovered_token(
    cluster: Cluster, token_file: Path, server: str, case: str
) -> None:
    """M3-M5 over HTTPS: curl with the token from BEARER_TOKEN_FILE gets 200/201 in scope and 403
    outside it, from our data server and from XRootD."""
    method, path, expected = CASES[case]
    status = curl(cluster, method, cluster.url(server) + path, token_file, data=method == "PUT")
    assert status == expected[server]


@pytest.mark.parametrize("server", ["store", "xroot"])
def test_lowercase_authorization_header(cluster: Cluster, alice: str, server: str) -> None:
    """RFC 9110 §5.1: header names are case-insensitive; a client sending "authorization" (as
    httpx and every HTTP/2 client do) is served like one sending "Authorization"."""
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            str(cluster.ca),
            "-H",
            f"authorization: Bearer {alice}",
            cluster.url(server) + "/vo/data/0",
        ],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=True,
    )
    assert proc.stdout == "200"


@pytest.mark.parametrize(("server", "expected"), [("store", 401), ("xroot", 403)])
def test_curl_without_token(cluster: Cluster, server: str, expected: int) -> None:
    """M2/RFC 6750 §3.1: no token is 401 at our server; XRootD without the default authorizer says 403."""
    assert curl(cluster, "GET", cluster.url(server) + "/vo/data/0", None) == expected


def test_curl_with_expired_token(cluster: Cluster, tmp_path: Path) -> None:
    """E1: a token past exp is refused: 401 (invalid_token) at ours, 403 at XRootD; it worked
    while it was valid."""
    token = cluster.probe_token()
    path = tmp_path / "bt_probe"
    _files.write_private(path, token.access_token + "\n")
    assert curl(cluster, "GET", cluster.url("store") + "/vo/data/0", path) == 200
    _, claims = peek(token.access_token)
    time.sleep(max(0.0, claims["exp"] - time.time()) + 1.0)
    assert curl(cluster, "GET", cluster.url("store") + "/vo/data/0", path) == 401
    assert curl(cluster, "GET", cluster.url("xroot") + "/vo/data/0", path) == 403


def test_services_listen_on_loopback_only(cluster: Cluster) -> None:
    """Brief: every server binds 127.0.0.1 only (checked in /proc for each service's pid)."""
    from scitokens_batch.live import listening_addresses

    for name in ("vo", "store", "xroot"):
        pid = cluster.pid(name)
        assert pid is not None
        addresses = listening_addresses(pid)
        assert addresses and {host for host, _ in addresses} == {"127.0.0.1"}, (name, addresses)
