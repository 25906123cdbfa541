"""HTTP-TPC (COPY) pulls only from allowed https sources: a plain-http source never receives
the source token, an internal URL (the issuer's JWKS) is never fetched, nothing is written."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from scitokens_batch.protocol import DataResponse, ThirdPartyCopy
from scitokens_batch.transport.http import HttpTransport, Peer, tpc_source_refusal

from .storage_live import Storage, bearer, start_storage


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    """A live issuer and data servers for the module."""
    yield from start_storage()


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A plain TCP listener on 127.0.0.1 standing for a plain-http source (it never answers)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.5)
    yield sock
    sock.close()


def _copy(storage: Storage, dest_path: str, source: str) -> tuple[int, str]:
    dest = storage.token("creator", "storage.create:/up storage.read:/")
    src = storage.token("reader", "storage.read:/")

    async def main() -> tuple[int, str]:
        async with storage.client() as client:
            reply = await client.request(
                "COPY",
                storage.url() + dest_path,
                headers={
                    **bearer(dest),
                    "Source": source,
                    "TransferHeaderAuthorization": f"Bearer {src}",
                },
            )
            return reply.status_code, reply.text

    return trio.run(main)


def test_plain_http_source_is_refused(storage: Storage, trap: socket.socket) -> None:
    """A COPY from an http:// source is refused (403) and the source sees no connection, so
    the source token never crosses the network in clear text."""
    port = trap.getsockname()[1]
    status, text = _copy(storage, "/up/from-http", f"http://127.0.0.1:{port}/data/0")
    assert status == 403
    assert "https" in text
    with pytest.raises(TimeoutError):
        trap.accept()
    assert not (storage.tree() / "up" / "from-http").exists()


@pytest.mark.parametrize(
    "source",
    [
        "{issuer}/jwks",
        "{issuer}/.well-known/openid-configuration",
        "https://{other_host}@{issuer_host}/vo/jwks",
        "https://localhost:{other_port}/data/0",
    ],
)
def test_source_outside_the_allow_list_is_refused(storage: Storage, source: str) -> None:
    """A COPY from an https URL that is not an allowed source (the issuer's JWKS, a userinfo
    trick, another name of an allowed host) is refused before anything is fetched."""
    issuer_host = storage.issuer_url.split("/")[2]
    other_host = storage.url("other").split("/")[2]
    url = source.format(
        issuer=storage.issuer_url,
        issuer_host=issuer_host,
        other_host=other_host,
        other_port=other_host.split(":")[1],
    )
    status, text = _copy(storage, "/up/from-internal", url)
    assert status == 403, text
    assert "forbidden_source" in text
    assert not (storage.tree() / "up" / "from-internal").exists()


def test_copy_from_a_scenario_data_server_works(storage: Storage) -> None:
    """By default the scenario's own data servers are allowed sources: the copy is accepted
    (202), ends with ``success: Created`` (WLCG HTTP-TPC) and is stored."""
    status, text = _copy(storage, "/up/from-other", storage.url("other") + "/data/0")
    assert status == 202
    assert text.splitlines()[-1] == "success: Created"
    assert (storage.tree() / "up" / "from-other").stat().st_size == 1000


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("https://a.example:8443/f", True),
        ("https://A.EXAMPLE:8443/f", True),
        ("https://a.example/f", False),  # port 443, not 8443
        ("http://a.example:8443/f", False),
        ("https://a.example:8443@evil.example:8443/f", False),
        ("https://evil.example:8443/a.example:8443", False),
        ("https://x.site.org/f", True),
        ("https://x.y.site.org/f", True),
        ("https://site.org/f", False),
        ("https://evilsite.org/f", False),
        ("https://x.site.org:444/f", False),
        ("https://a.example:99999/f", False),
        ("ftp://a.example:8443/f", False),
        ("https:///f", False),
    ],
)
def test_source_matching(source: str, allowed: bool) -> None:
    """Sources match allowed origins on parsed scheme, host and port (``*.`` for a domain),
    never on a string prefix."""
    refusal = tpc_source_refusal(source, ("https://a.example:8443", "https://*.site.org"))
    assert (refusal is None) is allowed, refusal


def test_no_allowed_source_refuses_all() -> None:
    """An empty allow-list allows nothing."""
    assert tpc_source_refusal("https://a.example/f", ()) is not None


async def test_client_sends_no_copy_with_a_plain_http_end(trap: socket.socket) -> None:
    """The transfer service's side (HttpTransport) refuses to send a COPY whose source or
    destination is plain http: nothing reaches the network, no token in clear text."""
    port = trap.getsockname()[1]
    peers = {
        "dst": Peer("dst", f"http://127.0.0.1:{port}", "data"),
        "src": Peer("src", "https://127.0.0.1:1", "data"),
        "src-http": Peer("src-http", f"http://127.0.0.1:{port}", "data"),
        "dst-https": Peer("dst-https", "https://127.0.0.1:1", "data"),
    }
    transport = HttpTransport(peers)
    try:
        for dest, source in (("dst", "src"), ("dst-https", "src-http")):
            copy = ThirdPartyCopy(
                source=source,
                source_path="/data/0",
                destination_path="/up/x",
                size=1,
                source_token="source-token",
                destination_token="destination-token",
                transfer="t/1",
            )
            answer = await transport.request("fts", dest, copy)
            assert isinstance(answer, DataResponse)
            assert answer.status == 400 and "https only" in (answer.detail or "")
    finally:
        await transport.aclose()
    with pytest.raises(TimeoutError):
        trap.accept()
