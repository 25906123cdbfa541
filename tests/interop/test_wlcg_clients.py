"""Debian's WLCG storage clients against our live data server: davix 0.8.4 and gfal2 2.21.3
(gfal2-plugin-http, gfal2-util 1.8.0), each a real process with only its documented options.

The deployment is the storage security tests' (a live issuer and two of our data servers,
``store`` and ``other``, as ``scitokens-batch serve`` processes on 127.0.0.1, stopped by PID
at the end). Tokens come from the issuer by client credentials. davix gets the token with
``-H "Authorization: Bearer ..."`` (and ``TransferHeaderAuthorization`` for the other end of
a copy); gfal2 2.21 reads it from ``BEARER_TOKEN`` only (not ``BEARER_TOKEN_FILE``) and uses
it for both ends of a third-party copy. Both trust the run's CA through a hashed CA directory
(``--capath`` / ``X509_CERT_DIR``). Every assertion is on the client's exit status and on the
bytes or checksums on disk.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest

from scitokens_batch.live import xrootd_missing
from scitokens_batch.live._deploy import deployment
from tests.security.storage_live import AUDIENCE, SCENARIO, Storage, start_storage

from .conftest import peer_missing

pytestmark = pytest.mark.interop

#: Every client run is bounded (each takes well under a second here).
CLIENT_TIMEOUT = 60.0
DAVIX_TOOLS = ("davix-ls", "davix-get", "davix-put", "davix-rm", "davix-mkdir", "davix-cp")
GFAL_TOOLS = ("gfal-ls", "gfal-stat", "gfal-copy", "gfal-sum", "gfal-rm", "gfal-mkdir")
DAVIX_MISSING = "davix not installed (apt-get install davix)"
GFAL_MISSING = (
    "gfal2 tools not installed (apt-get install gfal2 gfal2-plugin-http python3-gfal2-util "
    "gfal2-util-scripts)"
)
#: gfal2-util's scripts look for a ``python`` that imports gfal2; Debian's is this one.
GFAL_PYTHON = "/usr/bin/python3"
#: A payload with real content (the scenario's files are zeros), on ``other`` and ``store``.
#: Fixed bytes (not os.urandom): the checksums are test ids, and pytest-xdist's workers must
#: collect the same ids.
PAYLOAD = random.Random(20261204).randbytes(700_001)


@attrs.frozen
class Site:
    """The running servers, the tokens, and the clients' environment."""

    storage: Storage
    capath: Path
    rw: str
    read: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The live deployment, a hashed CA directory, a read-write and a read-only token."""
    if shutil.which("openssl") is None:
        peer_missing("openssl not found (apt-get install openssl)")
    for storage in start_storage():
        capath = tmp_path_factory.mktemp("capath")
        shutil.copy(storage.run.tls.ca, capath / "ca.pem")
        subprocess.run(["openssl", "rehash", str(capath)], check=True, timeout=CLIENT_TIMEOUT)
        for server in ("store", "other"):
            (storage.tree(server) / "data" / "payload").write_bytes(PAYLOAD)
        yield Site(
            storage=storage,
            capath=capath,
            rw=storage.token("modifier", "storage.modify:/up storage.read:/"),
            read=storage.token("reader", "storage.read:/"),
        )


@pytest.fixture
def davix() -> None:
    """davix's tools are installed."""
    if not all(shutil.which(t) for t in DAVIX_TOOLS):
        peer_missing(DAVIX_MISSING)


@pytest.fixture
def gfal() -> None:
    """gfal2's tools are installed and their Python finds the bindings."""
    if not all(shutil.which(t) for t in GFAL_TOOLS) or not Path(GFAL_PYTHON).exists():
        peer_missing(GFAL_MISSING)
    probe = subprocess.run(
        [GFAL_PYTHON, "-c", "import gfal2, gfal2_util"],
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        peer_missing(GFAL_MISSING)


def run(argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client, bounded, with its output captured."""
    full = {k: v for k, v in os.environ.items() if k not in ("BEARER_TOKEN", "BEARER_TOKEN_FILE")}
    full.update(env or {})
    return subprocess.run(
        argv, env=full, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
    )


def dv(
    site: Site, tool: str, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A davix tool with the run's CA and ``token`` in ``Authorization``."""
    auth = [] if token is None else ["-H", f"Authorization: Bearer {token}"]
    return run([tool, "--capath", str(site.capath), *auth, *args])


def gf(site: Site, tool: str, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """A gfal tool with the run's CA and ``token`` in ``BEARER_TOKEN`` (what gfal2 2.21 reads)."""
    env = {"BEARER_TOKEN": token, "X509_CERT_DIR": str(site.capath), "GFAL_PYTHONBIN": GFAL_PYTHON}
    return run([tool, *args], env)


def url(site: Site, path: str, server: str = "store") -> str:
    """The URL of a server path."""
    return site.storage.url(server) + path


def on_disk(site: Site, path: str, server: str = "store") -> Path:
    """The file behind a server path."""
    return site.storage.tree(server).joinpath(*path.strip("/").split("/"))


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """The output of a client that must have succeeded (its stderr in the failure message)."""
    assert proc.returncode == 0, (proc.args[0], proc.returncode, proc.stderr[-2000:])
    return proc.stdout


# -- listing and stat --------------------------------------------------------------------------


def test_davix_ls_lists_directory(site: Site, davix: None) -> None:
    """davix-ls (PROPFIND Depth 1) lists the directory; -l shows the payload's size."""
    names = ok(dv(site, "davix-ls", url(site, "/data/"), token=site.read)).split()
    assert sorted(names) == ["0", "1", "payload"]
    long = ok(dv(site, "davix-ls", "-l", url(site, "/data"), token=site.read))
    assert re.search(rf"\b{len(PAYLOAD)}\b.*payload", long), long


def test_davix_ls_without_token_fails(site: Site, davix: None) -> None:
    """davix-ls without a token fails (401), and lists nothing."""
    proc = dv(site, "davix-ls", url(site, "/data/"))
    assert proc.returncode != 0
    assert "payload" not in proc.stdout


def test_gfal_ls_long(site: Site, gfal: None) -> None:
    """gfal-ls -l lists names, sizes and a real modification date (not 1970)."""
    out = ok(gf(site, "gfal-ls", "-l", url(site, "/data"), token=site.read))
    line = next(li for li in out.splitlines() if li.rstrip().endswith("payload"))
    assert str(len(PAYLOAD)) in line
    assert "1970" not in out


def test_gfal_stat_directory_and_file(site: Site, gfal: None) -> None:
    """gfal-stat of a directory says directory; of a file gives its size and a real Modify time."""
    d = ok(gf(site, "gfal-stat", url(site, "/data"), token=site.read))
    assert "directory" in d
    f = ok(gf(site, "gfal-stat", url(site, "/data/payload"), token=site.read))
    assert f"Size: {len(PAYLOAD)}" in f and "regular file" in f
    modify = re.search(r"Modify: (\d{4})", f)
    assert modify is not None and modify[1] != "1970"


# -- checksums ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("ADLER32", f"{zlib.adler32(PAYLOAD):08x}"),
        ("MD5", hashlib.md5(PAYLOAD).hexdigest()),
    ],
    ids=["ADLER32", "MD5"],
)
def test_gfal_sum(site: Site, gfal: None, alg: str, expected: str) -> None:
    """gfal-sum gets the file's checksum from our Digest header (Want-Digest, RFC 3230)."""
    out = ok(gf(site, "gfal-sum", url(site, "/data/payload"), alg, token=site.read))
    assert out.split()[-1] == expected


# -- davix: namespace and bytes ----------------------------------------------------------------


def test_davix_mkdir_put_get_rm(site: Site, davix: None, tmp_path: Path) -> None:
    """davix mkdir/put/get/rm: bytes round-trip, rm of a non-empty directory fails, of an empty one works."""
    src = tmp_path / "up.bin"
    src.write_bytes(PAYLOAD)
    ok(dv(site, "davix-mkdir", url(site, "/up/davix"), token=site.rw))
    ok(dv(site, "davix-put", str(src), url(site, "/up/davix/f"), token=site.rw))
    assert on_disk(site, "/up/davix/f").read_bytes() == PAYLOAD
    ok(dv(site, "davix-get", url(site, "/up/davix/f"), str(tmp_path / "down.bin"), token=site.rw))
    assert (tmp_path / "down.bin").read_bytes() == PAYLOAD
    assert dv(site, "davix-rm", url(site, "/up/davix"), token=site.rw).returncode != 0
    assert on_disk(site, "/up/davix/f").exists()
    ok(dv(site, "davix-rm", url(site, "/up/davix/f"), token=site.rw))
    ok(dv(site, "davix-rm", url(site, "/up/davix"), token=site.rw))
    assert not on_disk(site, "/up/davix").exists()


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_davix_cp_third_party(site: Site, davix: None, mode: str) -> None:
    """davix-cp between our two servers (HTTP-TPC pull and push) copies the exact bytes."""
    target = f"/up/davix-{mode}"
    # Authorization goes to the server the COPY is sent to (the destination when pulling,
    # the source when pushing); TransferHeaderAuthorization to the other end.
    first, second = (site.rw, site.read) if mode == "pull" else (site.read, site.rw)
    proc = run(
        [
            "davix-cp",
            "--capath",
            str(site.capath),
            "-H",
            f"Authorization: Bearer {first}",
            "-H",
            f"TransferHeaderAuthorization: Bearer {second}",
            "--copy-mode",
            mode,
            url(site, "/data/payload", "other"),
            url(site, target),
        ]
    )
    ok(proc)
    assert on_disk(site, target).read_bytes() == PAYLOAD


# -- gfal: namespace, bytes and third-party copies ---------------------------------------------


def test_gfal_mkdir_copy_rm(site: Site, gfal: None, tmp_path: Path) -> None:
    """gfal-mkdir -p, gfal-copy up (-K ADLER32) and down, gfal-rm of a file, of a non-empty directory (fails), -r."""
    src = tmp_path / "up.bin"
    src.write_bytes(PAYLOAD)
    ok(gf(site, "gfal-mkdir", "-p", url(site, "/up/gfal/a/b"), token=site.rw))
    assert on_disk(site, "/up/gfal/a/b").is_dir()
    ok(
        gf(
            site,
            "gfal-copy",
            "-K",
            "ADLER32",
            f"file://{src}",
            url(site, "/up/gfal/a/b/f"),
            token=site.rw,
        )
    )
    assert on_disk(site, "/up/gfal/a/b/f").read_bytes() == PAYLOAD
    down = tmp_path / "down.bin"
    ok(gf(site, "gfal-copy", url(site, "/up/gfal/a/b/f"), f"file://{down}", token=site.rw))
    assert down.read_bytes() == PAYLOAD
    assert gf(site, "gfal-rm", url(site, "/up/gfal/a"), token=site.rw).returncode != 0
    assert on_disk(site, "/up/gfal/a/b/f").exists()
    ok(gf(site, "gfal-rm", "-r", url(site, "/up/gfal"), token=site.rw))
    assert not on_disk(site, "/up/gfal").exists()


@pytest.mark.parametrize(("mode", "source"), [("pull", "other"), ("push", "store")])
def test_gfal_copy_third_party(site: Site, gfal: None, mode: str, source: str) -> None:
    """gfal-copy --copy-mode pull/push between our servers with -K ADLER32 succeeds and the bytes arrive."""
    dest = "store" if source == "other" else "other"
    target = f"/up/gfal-{mode}"
    proc = gf(
        site,
        "gfal-copy",
        "--copy-mode",
        mode,
        "-K",
        "ADLER32",
        url(site, "/data/payload", source),
        url(site, target, dest),
        token=site.rw,
    )
    ok(proc)
    assert on_disk(site, target, dest).read_bytes() == PAYLOAD


def test_gfal_push_refused_by_destination(site: Site, gfal: None) -> None:
    """A push whose token may not write at the destination fails (the COPY's 'failure:' line reaches gfal) and nothing is written."""
    proc = gf(
        site,
        "gfal-copy",
        "--copy-mode",
        "push",
        url(site, "/data/payload", "store"),
        url(site, "/up/refused", "other"),
        token=site.read,
    )
    assert proc.returncode != 0
    assert "403" in proc.stderr
    assert not on_disk(site, "/up/refused", "other").exists()
    assert site.read not in proc.stderr + proc.stdout


# -- ours <-> XRootD ---------------------------------------------------------------------------

#: The deployment above plus Debian's XRootD (``backend = "xrootd"``, HTTP-TPC handler on).
XROOTD_BLOCK = f"""
[[data_servers]]
name = "xrd"
audience = "{AUDIENCE}"
backend = "xrootd"

[data_servers.issuers]
vo = "/"

[[data_servers.files]]
path = "/data"
count = 1
size = "1kB"

# Storage areas: XRootD then chains its SciTokens plugin in front of an authdb of group
# rules, so every XRootD test here also runs in that mode (scopes still grant first).
[[data_servers.areas]]
path = "/"
read = ["/wlcg"]
write = ["/wlcg"]

[[data_servers.areas]]
path = "/protected"
read = ["/wlcg"]
write = ["/wlcg/test"]
"""


@pytest.fixture(scope="module")
def xsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The live issuer, our two data servers and XRootD, with the payload on ``other`` and XRootD."""
    why = xrootd_missing()
    if why is not None:
        peer_missing(f"XRootD: {why}")
    if shutil.which("openssl") is None:
        peer_missing("openssl not found (apt-get install openssl)")
    names = ("vo", "store", "other", "xrd")
    with deployment(SCENARIO + XROOTD_BLOCK, names, prefix="stb-wlcg-clients-") as run:
        storage = Storage(run)
        capath = tmp_path_factory.mktemp("xcapath")
        shutil.copy(run.tls.ca, capath / "ca.pem")
        subprocess.run(["openssl", "rehash", str(capath)], check=True, timeout=CLIENT_TIMEOUT)
        (storage.tree("other") / "data" / "payload").write_bytes(PAYLOAD)
        xpayload = xrootd_tree(storage) / "data" / "payload"
        xpayload.write_bytes(PAYLOAD)
        xpayload.chmod(0o644)
        yield Site(
            storage=storage,
            capath=capath,
            rw=storage.token("modifier", "storage.modify:/up storage.read:/"),
            read=storage.token("reader", "storage.read:/"),
        )


def xrootd_tree(storage: Storage) -> Path:
    """XRootD's namespace on disk (its ``oss.localroot``)."""
    return storage.run.workdir / "services" / "xrd" / "ns"


def test_xrootd_gfal_ls_and_sum(xsite: Site, gfal: None) -> None:
    """gfal-ls and gfal-sum ADLER32 against XRootD (checksums configured with xrootd.chksum)."""
    out = ok(gf(xsite, "gfal-ls", "-l", url(xsite, "/data", "xrd"), token=xsite.read))
    assert "payload" in out
    summed = ok(
        gf(xsite, "gfal-sum", url(xsite, "/data/payload", "xrd"), "ADLER32", token=xsite.read)
    )
    assert summed.split()[-1] == f"{zlib.adler32(PAYLOAD):08x}"


@pytest.mark.parametrize(
    ("mode", "source", "dest"),
    [
        ("pull", "other", "xrd"),  # XRootD's libXrdHttpTPC pulls from ours
        ("push", "other", "xrd"),  # ours PUTs to XRootD
        ("pull", "xrd", "store"),  # ours pulls from XRootD
    ],
)
def test_xrootd_gfal_copy_third_party(
    xsite: Site, gfal: None, mode: str, source: str, dest: str
) -> None:
    """gfal-copy -p -K ADLER32 between ours and XRootD in the modes that work: the bytes arrive."""
    target = f"/up/x-{mode}-{source}-{dest}"
    proc = gf(
        xsite,
        "gfal-copy",
        "-p",
        "--copy-mode",
        mode,
        "-K",
        "ADLER32",
        url(xsite, "/data/payload", source),
        url(xsite, target, dest),
        token=xsite.rw,
    )
    ok(proc)
    root = xrootd_tree(xsite.storage) if dest == "xrd" else xsite.storage.tree(dest)
    assert root.joinpath(*target.strip("/").split("/")).read_bytes() == PAYLOAD


def test_xrootd_push_to_ours(xsite: Site, gfal: None) -> None:
    """XRootD 5.5.3 pushing to our server (its libcurl PUT over HTTP/1.1) copies the exact bytes."""
    target = "/up/x-push-xrd-store"
    proc = gf(
        xsite,
        "gfal-copy",
        "--copy-mode",
        "push",
        "-K",
        "ADLER32",
        url(xsite, "/data/payload", "xrd"),
        url(xsite, target, "store"),
        token=xsite.rw,
    )
    ok(proc)
    assert on_disk(xsite, target).read_bytes() == PAYLOAD


def test_xrootd_davix_namespace(xsite: Site, davix: None, tmp_path: Path) -> None:
    """davix ls/mkdir/put/get/rm against XRootD, for the table: listing, bytes round-trip,
    rm of a non-empty directory refused, removal of the file and the emptied directory."""
    names = ok(dv(xsite, "davix-ls", url(xsite, "/data/", "xrd"), token=xsite.read)).split()
    assert "payload" in names
    src = tmp_path / "up.bin"
    src.write_bytes(PAYLOAD)
    ok(dv(xsite, "davix-mkdir", url(xsite, "/up/dx", "xrd"), token=xsite.rw))
    ok(dv(xsite, "davix-put", str(src), url(xsite, "/up/dx/f", "xrd"), token=xsite.rw))
    disk = xrootd_tree(xsite.storage) / "up" / "dx" / "f"
    assert disk.read_bytes() == PAYLOAD
    down = tmp_path / "down.bin"
    ok(dv(xsite, "davix-get", url(xsite, "/up/dx/f", "xrd"), str(down), token=xsite.rw))
    assert down.read_bytes() == PAYLOAD
    # A non-empty directory: refused (XRootD: 500), nothing removed.
    assert dv(xsite, "davix-rm", url(xsite, "/up/dx", "xrd"), token=xsite.rw).returncode != 0
    assert disk.exists()
    ok(dv(xsite, "davix-rm", url(xsite, "/up/dx/f", "xrd"), token=xsite.rw))
    ok(dv(xsite, "davix-rm", url(xsite, "/up/dx", "xrd"), token=xsite.rw))
    assert not disk.parent.exists()


def test_xrootd_gfal_stat(xsite: Site, gfal: None) -> None:
    """gfal-stat of a directory and a file on XRootD, for the table."""
    d = ok(gf(xsite, "gfal-stat", url(xsite, "/data", "xrd"), token=xsite.read))
    assert "directory" in d
    f = ok(gf(xsite, "gfal-stat", url(xsite, "/data/payload", "xrd"), token=xsite.read))
    assert f"Size: {len(PAYLOAD)}" in f


def _davix_cp(
    site: Site, mode: str, source: str, dest: str, *, at_copy: str, other: str
) -> subprocess.CompletedProcess[str]:
    """davix-cp in ``mode``: ``at_copy`` in Authorization (the end the COPY goes to: the
    destination when pulling, the source when pushing), ``other`` for the other end."""
    return run(
        [
            "davix-cp",
            "--capath",
            str(site.capath),
            "-H",
            f"Authorization: Bearer {at_copy}",
            "-H",
            f"TransferHeaderAuthorization: Bearer {other}",
            "--copy-mode",
            mode,
            source,
            dest,
        ]
    )


@pytest.mark.parametrize(
    ("mode", "source", "dest"),
    [
        ("pull", "other", "xrd"),  # XRootD's libXrdHttpTPC GETs from ours
        ("push", "other", "xrd"),  # ours PUTs to XRootD
        ("pull", "xrd", "store"),  # ours GETs from XRootD
        ("push", "xrd", "store"),  # XRootD PUTs to ours
    ],
)
def test_xrootd_davix_cp_third_party(
    xsite: Site, davix: None, mode: str, source: str, dest: str
) -> None:
    """davix-cp (HTTP-TPC) between ours and XRootD, both modes both ways: the exact bytes arrive."""
    parent = f"/up/dcp-{mode}-{source}"
    target = f"{parent}/f"
    # XRootD's TPC does not make the destination's parents: make them first, as FTS does.
    ok(dv(xsite, "davix-mkdir", url(xsite, parent, dest), token=xsite.rw))
    at_copy, other = (xsite.rw, xsite.read) if mode == "pull" else (xsite.read, xsite.rw)
    proc = _davix_cp(
        xsite,
        mode,
        url(xsite, "/data/payload", source),
        url(xsite, target, dest),
        at_copy=at_copy,
        other=other,
    )
    ok(proc)
    root = xrootd_tree(xsite.storage) if dest == "xrd" else xsite.storage.tree(dest)
    assert root.joinpath(*target.strip("/").split("/")).read_bytes() == PAYLOAD


def test_xrootd_gfal_mkdir_copy_rm(xsite: Site, gfal: None, tmp_path: Path) -> None:
    """gfal-mkdir -p, gfal-copy up (-K ADLER32) and down, gfal-rm of a file, of a non-empty
    directory, and -r, against XRootD: the bytes on its disk, and what each removal leaves."""
    src = tmp_path / "up.bin"
    src.write_bytes(PAYLOAD)
    disk = xrootd_tree(xsite.storage) / "up" / "xgfal"
    ok(gf(xsite, "gfal-mkdir", "-p", url(xsite, "/up/xgfal/a/b", "xrd"), token=xsite.rw))
    assert (disk / "a" / "b").is_dir()
    ok(
        gf(
            xsite,
            "gfal-copy",
            "-K",
            "ADLER32",
            f"file://{src}",
            url(xsite, "/up/xgfal/a/b/f", "xrd"),
            token=xsite.rw,
        )
    )
    assert (disk / "a" / "b" / "f").read_bytes() == PAYLOAD
    down = tmp_path / "down.bin"
    ok(
        gf(
            xsite,
            "gfal-copy",
            url(xsite, "/up/xgfal/a/b/f", "xrd"),
            f"file://{down}",
            token=xsite.rw,
        )
    )
    assert down.read_bytes() == PAYLOAD
    # A non-empty directory: refused, nothing removed (as ours).
    assert gf(xsite, "gfal-rm", url(xsite, "/up/xgfal/a", "xrd"), token=xsite.rw).returncode != 0
    assert (disk / "a" / "b" / "f").exists()
    ok(gf(xsite, "gfal-rm", url(xsite, "/up/xgfal/a/b/f", "xrd"), token=xsite.rw))
    assert not (disk / "a" / "b" / "f").exists()
    ok(gf(xsite, "gfal-rm", "-r", url(xsite, "/up/xgfal", "xrd"), token=xsite.rw))
    assert not disk.exists()


def _curl(site: Site, *args: str, token: str) -> tuple[int, str]:
    """curl's HTTP status and body for one request (exit status 0 asserted)."""
    proc = run(
        [
            "curl",
            "-sS",
            "--capath",
            str(site.capath),
            "-H",
            f"Authorization: Bearer {token}",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *args,
        ]
    )
    out = ok(proc)
    body, _, status = out.rpartition("\n")
    return int(status), body


@pytest.mark.parametrize("server", ["store", "xrd"])
def test_directory_head_propfind_delete(xsite: Site, server: str) -> None:
    """curl against a directory on ours and on XRootD: HEAD is 200, PROPFIND Depth 1 is 207
    listing the file, DELETE of the non-empty directory is refused and removes nothing, of the
    emptied one succeeds."""
    if shutil.which("curl") is None:
        peer_missing("curl not found (apt-get install curl)")
    base = url(xsite, "/up/dirops", server)
    root = xrootd_tree(xsite.storage) if server == "xrd" else xsite.storage.tree(server)
    disk = root / "up" / "dirops"
    assert _curl(xsite, "-X", "MKCOL", base, token=xsite.rw)[0] == 201
    assert _curl(xsite, "-X", "PUT", "--data-binary", "x", base + "/f", token=xsite.rw)[0] in (
        200,
        201,
    )
    head, _ = _curl(xsite, "-I", base, token=xsite.read)
    listing, body = _curl(xsite, "-X", "PROPFIND", "-H", "Depth: 1", base, token=xsite.read)
    full, why = _curl(xsite, "-X", "DELETE", base, token=xsite.rw)
    assert (disk / "f").exists()
    assert _curl(xsite, "-X", "DELETE", base + "/f", token=xsite.rw)[0] in (200, 204)
    empty, _ = _curl(xsite, "-X", "DELETE", base, token=xsite.rw)
    assert not disk.exists()
    assert (head, listing) == (200, 207)
    assert "dirops/f" in body
    assert full == DELETE_NON_EMPTY[server], (full, why)
    assert empty == DELETE_EMPTY[server], empty


#: DELETE of a non-empty directory: ours 409 (as dCache); XRootD 5.5.3 answers 500 (its
#: rmdir error, "Directory not empty", mapped to a server error), as measured.
DELETE_NON_EMPTY = {"store": 409, "xrd": 500}
#: DELETE of an empty directory: ours 204, XRootD 200 (its answer to every DELETE).
DELETE_EMPTY = {"store": 204, "xrd": 200}


def test_xrootd_areas_reach_its_configuration(xsite: Site) -> None:
    """The scenario's ``[[data_servers.areas]]`` reach the XRootD the runner starts: the
    SciTokens plugin chained (``++``) in front of an authdb with one group record per group,
    its areas longest first (group decisions themselves: test_xrootd_areas.py)."""
    workdir = xsite.storage.run.workdir / "services" / "xrd" / "xrootd"
    config = (workdir / "xrootd.cfg").read_text().splitlines()
    assert any(line.startswith("ofs.authlib ++ libXrdAccSciTokens.so") for line in config)
    assert f"acc.authdb {workdir / 'authdb'}" in config
    rules = [li for li in (workdir / "authdb").read_text().splitlines() if not li.startswith("#")]
    assert rules == ["g /wlcg /protected rl / a", "g /wlcg/test /protected a / -"]
    assert "onmissing = passthrough" in (workdir / "scitokens.cfg").read_text()
