"""A data server killed (SIGKILL) during uploads leaves no partial file in its data tree, and
its staging directory is emptied when it starts again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trio

from .storage_live import Storage, bearer, files_under, start_storage

UPLOADS = 5


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    """A live issuer and data servers for the module."""
    yield from start_storage()


def test_kill_during_uploads_leaves_nothing(storage: Storage) -> None:
    """5 uploads in flight, the server SIGKILLed, restarted: no partial upload is visible by
    GET or in the tree, and staging holds no leftover."""
    token = storage.token("modifier", "storage.modify:/up storage.read:/")
    staging = storage.staging("other")

    async def slow_body() -> AsyncIterator[bytes]:
        block = b"p" * 64 * 1024
        for _ in range(2000):  # ~128 MB, far more than is sent before the kill
            yield block
            await trio.sleep(0.01)

    async def main() -> list[str]:
        outcomes: list[str] = []
        async with storage.client() as client:

            async def upload(i: int) -> None:
                try:
                    reply = await client.put(
                        f"{storage.url('other')}/up/crash-{i}",
                        content=slow_body(),
                        headers={**bearer(token), "content-length": str(2000 * 64 * 1024)},
                    )
                    outcomes.append(str(reply.status_code))
                except httpx.TransportError as exc:
                    outcomes.append(type(exc).__name__)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for i in range(UPLOADS):
                        nursery.start_soon(upload, i)
                    # Wait until every upload has bytes staged, then kill the server.
                    for _ in range(400):  # bounded: 20 s
                        if (
                            len([n for n in files_under(staging) if n.startswith("upload-")])
                            >= UPLOADS
                        ):
                            break
                        await trio.sleep(0.05)
                    await trio.sleep(0.5)
                    staged = sum((staging / n).stat().st_size for n in files_under(staging))
                    assert staged > 0
                    await trio.to_thread.run_sync(
                        lambda: storage.run.services["other"].stop(kill=True)
                    )
        return outcomes

    outcomes = trio.run(main)
    assert len(outcomes) == UPLOADS
    assert not any(o.startswith("2") for o in outcomes), outcomes
    # Before the restart the partial files are there, but outside the served tree.
    assert [n for n in files_under(storage.tree("other")) if "upload" in n] == []
    assert len([n for n in files_under(staging) if n.startswith("upload-")]) == UPLOADS
    svc = storage.run.services["other"]
    svc.start(None)
    trio.run(storage.run.wait_healthy, ["other"])
    assert files_under(staging) == []

    async def gets() -> list[int]:
        async with storage.client() as client:
            return [
                (
                    await client.get(f"{storage.url('other')}/up/crash-{i}", headers=bearer(token))
                ).status_code
                for i in range(UPLOADS)
            ]

    assert trio.run(gets) == [404] * UPLOADS
    assert [n for n in files_under(storage.tree("other")) if "crash" in n or "upload" in n] == []
