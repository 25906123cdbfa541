"""Symbolic links inside the data tree are never followed: files outside the root are not
served, written or deleted through them (nor through a link pointing inside the tree)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from .storage_live import Storage, bearer, start_storage

SECRET = b"outside the data tree: must never be served\n"


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    """A live issuer and data servers for the module."""
    yield from start_storage()


@pytest.fixture
def outside(tmp_path: Path, storage: Storage) -> Iterator[Path]:
    """A directory outside the tree with a secret file, linked from inside the tree as
    ``/data/out-file``, ``/data/out-dir``, ``/up/out-file``, ``/up/out-dir``, and
    ``/data/in-link`` pointing at ``/data/0``."""
    target = tmp_path / "outside"
    target.mkdir()
    (target / "secret").write_bytes(SECRET)
    tree = storage.tree()
    (tree / "up").mkdir(exist_ok=True)
    links = {
        tree / "data" / "out-file": target / "secret",
        tree / "data" / "out-dir": target,
        tree / "up" / "out-file": target / "secret",
        tree / "up" / "out-dir": target,
        tree / "data" / "in-link": tree / "data" / "0",
    }
    for link, to in links.items():
        link.symlink_to(to)
    yield target
    for link in links:
        link.unlink(missing_ok=True)


def _requests(storage: Storage, requests: list[tuple[str, str, str, bytes]]) -> list[int]:
    async def main() -> list[int]:
        statuses = []
        async with storage.client() as client:
            for method, path, token, body in requests:
                reply = await client.request(
                    method, storage.url() + path, headers=bearer(token), content=body or None
                )
                assert SECRET not in reply.content
                statuses.append(reply.status_code)
        return statuses

    return trio.run(main)


def test_get_through_symlinks_is_refused(storage: Storage, outside: Path) -> None:
    """GET and HEAD of a link to an outside file, of a file below a link to an outside
    directory, and of a link inside the tree are refused, and never return the secret."""
    read = storage.token("reader", "storage.read:/")
    paths = ["/data/out-file", "/data/out-dir/secret", "/data/in-link"]
    statuses = _requests(storage, [(m, p, read, b"") for p in paths for m in ("GET", "HEAD")])
    assert all(s in (403, 404) for s in statuses), statuses


def test_put_through_symlinks_is_refused(storage: Storage, outside: Path) -> None:
    """PUT over a link to an outside file and below a link to an outside directory is refused
    (with create and with modify rights); nothing outside changes or appears."""
    create = storage.token("creator", "storage.create:/up storage.read:/")
    modify = storage.token("modifier", "storage.modify:/up storage.read:/")
    requests = [
        ("PUT", path, token, b"overwritten")
        for token in (create, modify)
        for path in ("/up/out-file", "/up/out-dir/secret", "/up/out-dir/new-file")
    ]
    requests.append(("MKCOL", "/up/out-dir/newdir", modify, b""))
    statuses = _requests(storage, requests)
    assert all(s == 403 for s in statuses), statuses
    assert (outside / "secret").read_bytes() == SECRET
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (storage.tree() / "up" / "out-file").is_symlink()


def test_delete_through_symlinks_is_refused(storage: Storage, outside: Path) -> None:
    """DELETE of a link to an outside file and of a file below a link to an outside directory
    is refused; the outside file survives."""
    modify = storage.token("modifier", "storage.modify:/up storage.read:/")
    requests = [("DELETE", p, modify, b"") for p in ("/up/out-file", "/up/out-dir/secret")]
    statuses = _requests(storage, requests)
    assert all(s in (403, 404) for s in statuses), statuses
    assert (outside / "secret").read_bytes() == SECRET


def test_listing_skips_symlinks(storage: Storage, outside: Path) -> None:
    """The server's namespace never lists a symlinked file (the store's view)."""
    from scitokens_batch.live._store import FileTree

    names = set(FileTree(storage.tree()))
    assert "/data/0" in names
    assert not any("out-" in n or "in-link" in n for n in names)
