"""Interop with Debian's XRootD 5.5.3 (XrdHttp + libXrdAccSciTokens), run by our launcher.

One XRootD per module (``live/_xrootd.py``): HTTPS with the run's CA, one issuer
``https://127.0.0.1:1/vo`` (port 1: nothing listens there, so the daemon can only use the keys
preloaded into its scitokens-cpp cache, peers.md c. and b. workaround 1) with ``base_path
/data``, audience ``https://xrootd.example``, and a namespace holding ``/data/dir/file.txt``
(1 MB), ``/data/dirty/file.txt`` and ``/data/other/file.txt``. Tokens are minted by our token
core (ES256, ``ver: scitoken:2.0``, ``kid``, ``aud``; peers.md rules 1-4) and presented with
``curl -H "Authorization: Bearer ..."``, each run bounded by a timeout.

The statuses asserted are XRootD's, recorded as seen; where XRootD differs from our data server
(expired token: 403 here, 401 from us; ``/dir`` granting ``/dirty``) the test pins XRootD's
behaviour and says so. The last test trusts the issuer by the mount-namespace overlay instead:
XRootD fetches the keys live over HTTPS from a tiny issuer started in the test.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from scitokens_batch.errors import LocalInputError, PeerMissingError, PeerStartError
from scitokens_batch.live import (
    CURL_CA_FILE,
    RunCA,
    XrootdIssuer,
    XrootdServer,
    XrootdSpec,
    listening_addresses,
    xrootd_missing,
)
from scitokens_batch.tokens import Algorithm, Profile, SigningKey, jwks_document

from .conftest import peer_missing
from .peers import our_token, wall_clock

pytestmark = pytest.mark.interop

#: The module server's issuer: https, no trailing slash (peers.md rule 1); port 1, see above.
ISSUER = "https://127.0.0.1:1/vo"
AUDIENCE = "https://xrootd.example"
BASE_PATH = "/data"
#: Size of /data/dir/file.txt.
PAYLOAD_BYTES = 1 << 20
#: Every curl run is bounded (a request here takes milliseconds).
CURL_TIMEOUT = 20.0


@attrs.frozen
class Site:
    """The module's running XRootD and what the tests need to talk to it."""

    server: XrootdServer
    ca: RunCA
    key: SigningKey
    root: Path
    payload: bytes
    scratch: Path


def _skip_unless_usable() -> None:
    """Skip (or fail with ``SCITOKENS_BATCH_REQUIRE_PEERS=1``) when XRootD or curl is missing."""
    why = xrootd_missing()
    if why is None and shutil.which("curl") is None:
        why = "curl not found (apt-get install curl)"
    if why is not None:
        peer_missing(why)


def _make_namespace(root: Path, payload: bytes) -> None:
    """``root/data/{dir,dirty,other}/file.txt``; the 1 MB payload in ``dir``."""
    for name, content in (
        ("dir", payload),
        ("dirty", b"dirty\n"),
        ("other", b"other\n"),
    ):
        directory = root / BASE_PATH.lstrip("/") / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "file.txt").write_bytes(content)


@pytest.fixture(scope="module")
def world_dir() -> Iterator[Path]:
    """A directory the ``xrootd`` user can reach (pytest's tmp dirs are 0700 root), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="scitokens-batch-xrootd-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def site(world_dir: Path) -> Iterator[Site]:
    """One XRootD for the module: HTTPS, keys preloaded, namespace as in the module docstring."""
    _skip_unless_usable()
    ca = RunCA.create(world_dir / "ca")
    key = SigningKey.generate(Algorithm.ES256, kid="xrootd-es256")
    payload = random.Random(20261122).randbytes(PAYLOAD_BYTES)
    root = world_dir / "ns"
    _make_namespace(root, payload)
    spec = XrootdSpec(
        name="interop",
        root=root,
        exports=(BASE_PATH,),
        issuers=(XrootdIssuer(ISSUER, BASE_PATH),),
        audiences=(AUDIENCE,),
        tls=ca,
        preload={ISSUER: jwks_document([key.public])},
        trust="preload",
    )
    server = XrootdServer.start(spec, world_dir / "xrootd")
    scratch = world_dir / "scratch"
    scratch.mkdir()
    try:
        yield Site(server=server, ca=ca, key=key, root=root, payload=payload, scratch=scratch)
    finally:
        server.stop()
    assert not Path(f"/proc/{server.pid}").exists()


@attrs.frozen
class Answer:
    """One curl exchange: the HTTP status and the body."""

    status: int
    body: bytes


def curl(
    site: Site,
    path: str,
    token: str | None = None,
    *,
    upload: bytes | None = None,
    url: str | None = None,
) -> Answer:
    """GET (or PUT ``upload``) ``path`` with ``curl --cacert ca.pem``, the token in a header file.

    The header comes from a 0600 file (``-H @file``), so tokens never show in ``ps``.
    """
    handle, name = tempfile.mkstemp(dir=site.scratch)
    os.close(handle)
    work = Path(name)
    out, header, body = work.with_suffix(".out"), work.with_suffix(".hdr"), work
    argv = ["curl", "-sS", "--cacert", str(site.ca.ca), "--max-time", str(CURL_TIMEOUT)]
    argv += ["-o", str(out), "-w", "%{http_code}"]
    if token is not None:
        header.write_text(f"Authorization: Bearer {token}\n")
        argv += ["-H", f"@{header}"]
    if upload is not None:
        body.write_bytes(upload)
        argv += ["-T", str(body)]
    argv.append((url or site.server.url) + path)
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=CURL_TIMEOUT + 10, check=False
    )
    assert proc.returncode == 0, f"curl failed: {proc.stderr}"
    return Answer(int(proc.stdout), out.read_bytes() if out.exists() else b"")


def token(site: Site, scopes: str, **claims: Any) -> str:
    """A token from our token core for the module's issuer and audience (peers.md rules 1-5)."""
    claims.setdefault("issuer", ISSUER)
    claims.setdefault("audience", AUDIENCE)
    claims.setdefault("now", wall_clock())
    return our_token(site.key, scopes=scopes, **claims)


def log_text(site: Site) -> str:
    """The daemon's log, with the plugin's trace (``scitokens.trace all``)."""
    return site.server.log_path.read_text(errors="replace")


def test_listens_only_on_loopback(site: Site) -> None:
    """XRootD took over our socket (systemd activation) and listens only on 127.0.0.1:<port> (peers.md c.)."""
    expected = {("127.0.0.1", site.server.port)}
    assert listening_addresses(site.server.pid) == expected
    if shutil.which("ss") is not None:  # an independent view of the same fact
        proc = subprocess.run(
            ["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=True
        )
        mine = [
            line.split()[3]
            for line in proc.stdout.splitlines()
            if f"pid={site.server.pid}," in line
        ]
        assert mine == [f"127.0.0.1:{site.server.port}"]


def test_get_in_scope_returns_the_bytes(site: Site) -> None:
    """``read:/dir`` maps to ``/data/dir`` by base_path and GET returns the exact 1 MB (B6, M1)."""
    answer = curl(site, "/data/dir/file.txt", token(site, "read:/dir"))
    assert answer.status == 200
    assert answer.body == site.payload


def test_get_missing_file_in_scope_is_404(site: Site) -> None:
    """An authorized GET of a file that does not exist is 404, not 403 (M3)."""
    assert curl(site, "/data/dir/missing.txt", token(site, "read:/dir")).status == 404


def test_get_outside_scope_is_403(site: Site) -> None:
    """``read:/dir`` does not reach ``/data/other`` (M5)."""
    assert curl(site, "/data/other/file.txt", token(site, "read:/dir")).status == 403


def test_prefix_confusion_dirty_is_granted(site: Site) -> None:
    """Pins XRootD's known wrong accept: ``read:/dir`` grants ``/data/dirty`` (peers.md table, H10; M5/B4 forbid it, we reject)."""
    answer = curl(site, "/data/dirty/file.txt", token(site, "read:/dir"))
    assert answer == Answer(200, b"dirty\n")


def test_expired_token_is_403(site: Site) -> None:
    """An expired token gets XRootD's 403 (our data server answers 401 there; E-rules, H6)."""
    expired = token(site, "read:/dir", now=wall_clock() - 1200, lifetime=600)
    assert curl(site, "/data/dir/file.txt", expired).status == 403
    assert "token expired" in log_text(site)


def test_wrong_audience_is_403(site: Site) -> None:
    """A token for another audience is refused (peers.md rule 4; C-rules)."""
    other = token(site, "read:/dir", audience="https://other.example")
    assert curl(site, "/data/dir/file.txt", other).status == 403
    assert "'aud' claim verification failed" in log_text(site)


def test_no_token_is_403(site: Site) -> None:
    """Without a token the only authorizer (SciTokens, no ``++``) denies: 403 (peers.md c.; M2)."""
    assert curl(site, "/data/dir/file.txt").status == 403


@pytest.mark.parametrize(
    ("profile", "scope", "name"),
    [
        (Profile.SCITOKENS, "write:/dir", "new-write.txt"),
        (Profile.WLCG, "storage.create:/dir", "new-create.txt"),
    ],
)
def test_put_with_write_scope_creates_the_file(
    site: Site, profile: Profile, scope: str, name: str
) -> None:
    """PUT with ``write:/dir`` or ``storage.create:/dir`` is granted and the file appears (M4, B7, H9)."""
    content = f"uploaded with {scope}\n".encode()
    answer = curl(site, f"/data/dir/{name}", token(site, scope, profile=profile), upload=content)
    # Recorded: XRootD 5.5.3 answers a new file's PUT with 200 and the body ":-)", not the
    # 201 Created that the WLCG compliance tests expect (M4); peers.md's table says only "accept".
    assert answer == Answer(200, b":-)")
    stored = site.root / "data" / "dir" / name
    assert stored.read_bytes() == content


def test_put_with_read_scope_is_403(site: Site) -> None:
    """A read scope never allows a PUT, and nothing is written (peers.md rule 6; M3)."""
    answer = curl(site, "/data/dir/refused.txt", token(site, "read:/dir"), upload=b"no\n")
    assert answer.status == 403
    assert not (site.root / "data" / "dir" / "refused.txt").exists()


# --- launcher errors (no daemon needed beyond what xrootd_missing checks) -------------------


def _spec(root: Path, **changes: Any) -> XrootdSpec:
    fields: dict[str, Any] = {
        "name": "t",
        "root": root,
        "exports": ("/data",),
        "issuers": (XrootdIssuer(ISSUER, BASE_PATH),),
        "audiences": (AUDIENCE,),
    }
    fields.update(changes)
    return XrootdSpec(**fields)


def test_missing_binary_and_plugins_are_named(tmp_path: Path) -> None:
    """A missing binary or plugin is an error that names it and the package to install."""
    why = xrootd_missing(binary=str(tmp_path / "no-xrootd"), library_dirs=[tmp_path])
    assert why is not None
    assert str(tmp_path / "no-xrootd") in why
    assert "libXrdHttp-5.so not found" in why
    assert "libXrdAccSciTokens-5.so not found" in why
    assert "xrootd-scitokens-plugins" in why
    with pytest.raises(PeerMissingError, match="no-xrootd"):
        XrootdServer.start(_spec(tmp_path / "ns", binary=str(tmp_path / "no-xrootd")), tmp_path)


def test_unreachable_workdir_is_refused(world_dir: Path) -> None:
    """A workdir the ``xrootd`` user cannot reach is refused before anything is created, naming the blocking directory (peers.md c.)."""
    _skip_unless_usable()
    if os.geteuid() != 0:
        pytest.skip("only root runs XRootD as another user")
    private = world_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(
        LocalInputError, match=r"not reachable by user 'xrootd': .*/private is drwx------"
    ):
        XrootdServer.start(_spec(world_dir / "ns-unused"), private / "work")
    assert not (private / "work").exists()


def test_start_failure_reports_the_log(world_dir: Path) -> None:
    """A daemon that dies at start-up gives a PeerStartError with its log tail, and no process is left."""
    _skip_unless_usable()
    base = world_dir / "broken"
    ca = RunCA.create(base / "ca")
    # A certificate that does not match the key: XrdTls refuses it and xrootd exits.
    bad = RunCA.existing(ca=ca.ca, cert=ca.ca, key=ca.key)
    with pytest.raises(PeerStartError, match="exited with code") as info:
        XrootdServer.start(_spec(base / "ns", tls=bad, trust="preload"), base / "xrootd")
    assert "--- " in str(info.value)
    assert "xrootd.log" in str(info.value)


# --- live key fetch through the mount-namespace overlay ------------------------------------


class _Issuer(http.server.ThreadingHTTPServer):
    """A tiny HTTPS issuer on 127.0.0.1: discovery document and JWKS, and the paths asked for."""

    daemon_threads = True

    def __init__(self, ca: RunCA, jwks: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _IssuerHandler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca.cert, ca.key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server_address[1]}/vo"
        self.jwks = jwks
        self.requests: list[str] = []


class _IssuerHandler(http.server.BaseHTTPRequestHandler):
    server: _Issuer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        documents = {
            "/vo/.well-known/openid-configuration": {
                "issuer": self.server.url,
                "jwks_uri": f"{self.server.url}/jwks",
            },
            "/vo/jwks": self.server.jwks,
        }
        document = documents.get(self.path)
        body = json.dumps(document).encode() if document is not None else b"{}"
        self.send_response(200 if document is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean; the paths are in server.requests


def test_overlay_fetches_keys_live(site: Site, world_dir: Path) -> None:
    """With ``trust="overlay"`` and no preload, XRootD fetches discovery + JWKS over HTTPS from our loopback issuer and grants the GET (peers.md b. workaround 2, H2)."""
    if os.geteuid() != 0:
        peer_missing("trust='overlay' needs root (unshare -m, mount --bind)")
    issuer = _Issuer(site.ca, jwks_document([site.key.public]))
    thread = threading.Thread(target=issuer.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    base = world_dir / "overlay"
    root = base / "ns"
    _make_namespace(root, site.payload)
    spec = _spec(
        root,
        name="overlay",
        issuers=(XrootdIssuer(issuer.url, BASE_PATH),),
        tls=site.ca,
        trust="overlay",
    )
    try:
        with XrootdServer.start(spec, base / "xrootd") as server:
            assert server.trust == "overlay"
            live = our_token(
                site.key, now=wall_clock(), issuer=issuer.url, audience=AUDIENCE, scopes="read:/dir"
            )
            answer = curl(site, "/data/dir/file.txt", live, url=server.url)
            assert answer.status == 200
            assert answer.body == site.payload
            assert issuer.requests[:2] == ["/vo/.well-known/openid-configuration", "/vo/jwks"]
            cache = base / "xrootd" / "var" / "cache" / "scitokens" / "scitokens_cpp.sqllite"
            assert cache.exists()  # written by the plugin itself after the fetch
            pid = server.pid
        assert server.stop() == server.stop()  # idempotent once stopped
        assert not Path(f"/proc/{pid}").exists()
    finally:
        issuer.shutdown()
        issuer.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
    # The overlay lived only in the daemon's mount namespace: the host file does not know our CA.
    assert site.ca.ca.read_text() not in CURL_CA_FILE.read_text()
