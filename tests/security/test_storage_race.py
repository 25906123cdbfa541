"""The create-vs-overwrite decision is atomic at commit time: concurrent uploads of a new file
with a create-only token (``storage.create``) give exactly one 201, and nobody overwrites."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from scitokens_batch.actors import DataServer
from scitokens_batch.live._store import FileTree
from scitokens_batch.protocol import DataRequest
from scitokens_batch.tokens import Operation, Reason, SigningKey

from ..transport.helpers import data_server
from ..transport.helpers import token as helper_token
from .storage_live import Storage, bearer, files_under, start_storage

ROUNDS = 50
WRITERS = 16


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    """A live issuer and data servers for the module."""
    yield from start_storage()


async def _round(client: httpx.AsyncClient, url: str, token: str) -> list[int]:
    statuses = [0] * WRITERS
    start = trio.Event()

    async def put(i: int) -> None:
        await start.wait()
        reply = await client.put(
            url, content=f"writer {i}\n".encode() * 1000, headers=bearer(token)
        )
        statuses[i] = reply.status_code

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(WRITERS):
                nursery.start_soon(put, i)
            start.set()
    return statuses


def test_concurrent_create_only_puts_make_one_file(storage: Storage) -> None:
    """50 rounds of 16 concurrent create-only PUTs of a new file: one 201 and 15 refusals a
    round, and the file holds the winner's bytes."""
    token = storage.token("creator", "storage.create:/up storage.read:/")
    tree = storage.tree()

    async def main() -> list[tuple[list[int], bytes]]:
        results = []
        limits = httpx.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS)
        async with storage.client(limits=limits) as client:
            for r in range(ROUNDS):
                statuses = await _round(client, f"{storage.url()}/up/race-{r}", token)
                results.append((statuses, (tree / "up" / f"race-{r}").read_bytes()))
        return results

    for statuses, content in trio.run(main):
        assert sorted(statuses) == [201] + [403] * (WRITERS - 1), statuses
        winner = statuses.index(201)
        assert content == f"writer {winner}\n".encode() * 1000
    assert [n for n in files_under(storage.staging()) if n.startswith("upload-")] == []


def test_concurrent_modify_puts_all_land(storage: Storage) -> None:
    """Writers allowed to overwrite (``storage.modify``) racing on a new file: one 201, the
    others 204, and the file is one writer's whole upload."""
    token = storage.token("modifier", "storage.modify:/up storage.read:/")

    async def main() -> list[int]:
        async with storage.client() as client:
            return await _round(client, f"{storage.url()}/up/modify-race", token)

    statuses = trio.run(main)
    assert sorted(statuses) == [201] + [204] * (WRITERS - 1), statuses
    content = (storage.tree() / "up" / "modify-race").read_bytes()
    assert content in {f"writer {i}\n".encode() * 1000 for i in range(WRITERS)}


def test_sequential_create_over_existing_is_403(storage: Storage) -> None:
    """A create-only PUT over an existing file is refused and leaves the file as it was."""
    token = storage.token("creator", "storage.create:/up storage.read:/")
    url = f"{storage.url()}/up/sequential"

    async def main() -> tuple[int, int]:
        async with storage.client() as client:
            first = await client.put(url, content=b"first", headers=bearer(token))
            second = await client.put(url, content=b"second", headers=bearer(token))
            return first.status_code, second.status_code

    assert trio.run(main) == (201, 403)
    assert (storage.tree() / "up" / "sequential").read_bytes() == b"first"


# -- the same decision without processes: the virtual-time model and the store --------------


def _virtual(tmp_path: Path, key: SigningKey) -> DataServer:
    """A data server with an in-memory namespace, as in virtual time."""
    return attrs.evolve(data_server(tmp_path, key).server, files={})


async def test_virtual_create_refused_at_commit_if_file_appeared(
    tmp_path: Path, es256_key: SigningKey
) -> None:
    """Virtual time decides at commit too: a create admitted as new, whose file appeared
    meanwhile, is refused (403, a ``reject`` event) unless the token may modify."""
    server = _virtual(tmp_path, es256_key)
    creator = helper_token(es256_key, "storage.create:/up")
    request = DataRequest(op=Operation.CREATE, path="/vo/up/f", size=10, token=creator)
    admitted = await server.admit(request)
    assert admitted.status == 201
    server.files["/vo/up/f"] = 7  # another upload committed first
    refused = server.commit_write(request, admitted)
    assert (refused.status, refused.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert server.files["/vo/up/f"] == 7

    modifier = helper_token(es256_key, "storage.modify:/up")
    request = DataRequest(op=Operation.CREATE, path="/vo/up/g", size=10, token=modifier)
    admitted = await server.admit(request)
    server.files["/vo/up/g"] = 7
    assert server.commit_write(request, admitted).status == 200


async def test_store_asks_overwrite_only_when_a_file_is_there(tmp_path: Path) -> None:
    """FileTree.write links a new file without asking; over an existing one it asks, and a
    no leaves the existing bytes and no staged file."""
    tree = FileTree(tmp_path / "data")
    tree.clean_staging()
    asked: list[str] = []

    def no() -> bool:
        asked.append("asked")
        return False

    async def body(data: bytes) -> AsyncIterator[bytes]:
        yield data

    assert await tree.write("/a/f", body(b"one"), overwrite=no) is True
    assert asked == []
    with pytest.raises(FileExistsError):
        await tree.write("/a/f", body(b"two"), overwrite=no)
    assert asked == ["asked"]
    assert (tmp_path / "data" / "a" / "f").read_bytes() == b"one"
    assert await tree.write("/a/f", body(b"three"), overwrite=lambda: True) is False
    assert (tmp_path / "data" / "a" / "f").read_bytes() == b"three"
    assert os.listdir(tree.staging) == []
