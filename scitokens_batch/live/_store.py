"""A data server's namespace on disk: the files under one root directory.

:class:`FileTree` is both the actor's namespace (a mapping of server path -> size, what
:meth:`~scitokens_batch.actors.DataServer.admit` consults to tell create from overwrite, M4) and
the byte store the HTTP front end streams from and to
(:class:`~scitokens_batch.transport.http.DataStore`). Uploads are written to a temporary file
and renamed, so a reader never sees half a file and an interrupted upload leaves nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path

import attrs
import trio

from ..transport.http import CHUNK

__all__ = ["FileTree", "populate"]


@attrs.define
class FileTree(MutableMapping[str, int]):
    """Server paths (``/ligo/frames/3``) as files under ``root``."""

    root: Path

    def local(self, path: str) -> Path:
        """The file for a server path; refuses anything that would leave the root.

        Raises:
            ValueError: a ``.`` or ``..`` component, or a path that is not absolute.
        """
        parts = path.split("/")
        if not path.startswith("/") or any(p in (".", "..") for p in parts):
            raise ValueError(f"server path {path!r}: expected an absolute path without . or ..")
        return self.root.joinpath(*[p for p in parts if p])

    # -- the namespace (MutableMapping) -------------------------------------------------------

    def __getitem__(self, path: str) -> int:
        size = self.size(path)
        if size is None:
            raise KeyError(path)
        return size

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.size(path) is not None

    def __setitem__(self, path: str, size: int) -> None:
        # Bytes arrive through write(); the virtual-time bookkeeping has nothing to do here.
        pass

    def __delitem__(self, path: str) -> None:
        if not self.delete(path):
            raise KeyError(path)

    def __iter__(self) -> Iterator[str]:
        for directory, _, files in os.walk(self.root):
            rel = Path(directory).relative_to(self.root)
            for name in files:
                if not name.startswith(".upload-"):
                    yield "/" + str(rel / name).removeprefix("./")

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- the byte store (DataStore) -----------------------------------------------------------

    def size(self, path: str) -> int | None:
        """Size of the regular file at ``path``, None when there is none."""
        try:
            st = self.local(path).stat()
        except (OSError, ValueError):
            return None
        return st.st_size if os.path.isfile(self.local(path)) else None

    def is_dir(self, path: str) -> bool:
        """A directory exists at ``path``."""
        try:
            return self.local(path).is_dir()
        except ValueError:
            return False

    async def read(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes in chunks of :data:`CHUNK` (read in a worker thread)."""
        async with await trio.open_file(self.local(path), "rb") as f:
            while chunk := await f.read(CHUNK):
                yield chunk

    async def write(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        """Write ``chunks`` to a temporary file beside ``path``, then rename it into place."""
        target = self.local(path)
        await trio.to_thread.run_sync(lambda: target.parent.mkdir(parents=True, exist_ok=True))
        temp = target.parent / f".upload-{secrets.token_hex(8)}"
        written = 0
        try:
            async with await trio.open_file(temp, "xb") as f:
                async for chunk in chunks:
                    await f.write(chunk)
                    written += len(chunk)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return written

    def delete(self, path: str) -> bool:
        """Remove the file at ``path``; False when there was no file."""
        try:
            self.local(path).unlink()
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return False
        return True

    def mkdir(self, path: str) -> bool:
        """Create a directory and its parents (B7); False when it already existed."""
        target = self.local(path)
        if target.exists():
            return False
        target.mkdir(parents=True)
        return True


def populate(tree: FileTree, files: list[tuple[str, int, int]]) -> int:
    """Create the pre-populated files: for each ``(directory, count, size)`` files
    ``0 .. count-1`` of ``size`` bytes (sparse where the file system allows). Returns bytes."""
    total = 0
    for directory, count, size in files:
        base = tree.local(directory.rstrip("/") or "/")
        base.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            with open(base / str(i), "wb") as f:
                f.truncate(size)
            total += size
    return total
