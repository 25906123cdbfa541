"""A data server's namespace on disk: the files under one root directory.

:class:`FileTree` is both the actor's namespace (a mapping of server path -> size, what
:meth:`~scitokens_batch.actors.DataServer.admit` consults to tell create from overwrite, M4) and
the byte store the HTTP front end streams from and to
(:class:`~scitokens_batch.transport.http.DataStore`).

How it stays inside its root and keeps its promises (docs/security.md, "Storage"):

- Every path is opened component by component from a descriptor of the root, each directory
  with ``O_DIRECTORY | O_NOFOLLOW`` and the last component with ``O_NOFOLLOW`` (the effect of
  ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``, which Python does not wrap). A symbolic
  link anywhere in the tree is never followed, wherever it points: reading, writing or deleting
  through it is refused (:class:`Escapes`), and it is not listed.
- Uploads are written to a temporary file in a *staging* directory beside the root (same file
  system, never served), then committed: a writer that may only create links the file into
  place (``linkat``, which fails if the name appeared meanwhile: the create-vs-overwrite
  decision is atomic at commit time), a writer that may overwrite renames it over the old one.
  A reader never sees half a file, and partial uploads left by a crash are removed by
  :meth:`FileTree.clean_staging` when the server starts.
- An upload that would take the tree past its ``quota`` (bytes allocated on disk, ``du``), or
  leave less than ``free_margin`` free on the file system, is refused with
  :class:`InsufficientStorage` before its first byte when its size is announced, else as soon
  as it crosses the limit (the partial file is discarded).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Final

import attrs
import trio

from ..transport.http import CHUNK, Escapes, InsufficientStorage

__all__ = ["DEFAULT_FREE_MARGIN", "Escapes", "FileTree", "InsufficientStorage", "populate"]

#: Bytes kept free on the file system whatever the quota says (1 GB).
DEFAULT_FREE_MARGIN: Final = 1_000_000_000
#: Prefix of the temporary files in the staging directory.
_TEMP: Final = "upload-"
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _staging_of(root: Path) -> Path:
    return root.with_name(root.name + ".staging")


@attrs.define
class FileTree(MutableMapping[str, int]):
    """Server paths (``/ligo/frames/3``) as files under ``root``.

    Args:
        root: the served directory.
        staging: where uploads are written before they are committed; by default the
            sibling ``<root>.staging`` (it must be on the same file system as ``root``).
        quota: the most bytes the tree may occupy on disk (None: no quota).
        free_margin: bytes an upload must leave free on the file system.
    """

    root: Path
    staging: Path = attrs.field(
        default=attrs.Factory(lambda self: _staging_of(self.root), takes_self=True)
    )
    quota: int | None = None
    free_margin: int = DEFAULT_FREE_MARGIN
    #: bytes on disk under the root, counted once on first need, then kept up to date
    _used: int | None = attrs.field(default=None, init=False)
    #: bytes announced by uploads in flight (their Content-Length), not yet on disk
    _reserved: int = attrs.field(default=0, init=False)

    def local(self, path: str) -> Path:
        """The file for a server path (no symlink check: see :meth:`_parent`).

        Raises:
            ValueError: a ``.`` or ``..`` component, or a path that is not absolute.
        """
        return self.root.joinpath(*self._parts(path))

    @staticmethod
    def _parts(path: str) -> list[str]:
        parts = path.split("/")
        if not path.startswith("/") or any(p in (".", "..") for p in parts) or "\x00" in path:
            raise ValueError(f"server path {path!r}: expected an absolute path without . or ..")
        return [p for p in parts if p]

    def clean_staging(self) -> int:
        """Create the root and the staging directory, and remove every partial upload left
        in staging (a crash or SIGKILL during uploads). Returns how many were removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(self.staging):
            if entry.name.startswith(_TEMP) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    # -- resolving under the root -------------------------------------------------------------

    def _parent(self, path: str, *, create: bool = False) -> tuple[int, str]:
        """A descriptor of the directory holding ``path``'s last component, and that name.

        Each directory is opened relative to the previous one without following symlinks,
        so nothing reached this way is outside the root.

        Raises:
            ValueError: ``path`` is not a clean absolute path, or names the root itself.
            Escapes: a component is a symbolic link.
            NotADirectoryError: a component is a file.
            FileNotFoundError: a directory is missing (and ``create`` is False).
        """
        parts = self._parts(path)
        if not parts:
            raise ValueError(f"server path {path!r}: expected a path below the root")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    # O_NOFOLLOW on a link gives ELOOP, or ENOTDIR along with O_DIRECTORY.
                    if exc.errno == errno.ELOOP or (
                        exc.errno == errno.ENOTDIR
                        and stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
                    ):
                        why = f"server path {path!r}: {name!r} is a symbolic link"
                        raise Escapes(why) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _lstat(self, path: str) -> os.stat_result | None:
        """``lstat`` of ``path`` resolved under the root; None when it is not there."""
        try:
            fd, name = self._parent(path)
        except (OSError, ValueError):
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)

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
        # os.walk does not descend into symlinked directories; symlinked files are skipped.
        for directory, _, files in os.walk(self.root):
            rel = Path(directory).relative_to(self.root)
            for name in files:
                if not os.path.islink(os.path.join(directory, name)):
                    yield "/" + str(rel / name).removeprefix("./")

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- the byte store (DataStore) -----------------------------------------------------------

    def size(self, path: str) -> int | None:
        """Size of the regular file at ``path``, None when there is none (or a symlink)."""
        st = self._lstat(path)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def is_dir(self, path: str) -> bool:
        """A directory (not a symlink to one) exists at ``path``."""
        if not self._parts(path):
            return True
        st = self._lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def stat(self, path: str) -> os.stat_result | None:
        """``lstat`` of a regular file or directory at ``path`` (the root for ``/``); None
        for nothing there or a symbolic link (never followed, never described)."""
        if not self._parts(path):
            return os.stat(self.root)
        st = self._lstat(path)
        if st is None or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return None
        return st

    def listdir(self, path: str, limit: int) -> list[tuple[str, os.stat_result]]:
        """The regular files and directories in the directory ``path`` with their ``lstat``,
        by name, at most ``limit`` of them (symbolic links are left out, as everywhere).

        Raises:
            Escapes: a component of ``path`` is a symbolic link.
            NotADirectoryError, FileNotFoundError: ``path`` is not a directory.
        """
        if self._parts(path):
            parent, name = self._parent(path)
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
        else:
            fd = os.open(self.root, _DIR_FLAGS)
        found: list[tuple[str, os.stat_result]] = []
        try:
            for name in sorted(os.listdir(fd)):
                if len(found) >= limit:
                    break
                with contextlib.suppress(OSError):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                        found.append((name, st))
        finally:
            os.close(fd)
        return found

    def rmdir(self, path: str) -> bool:
        """Remove the empty directory at ``path``; False when there is no directory there.

        Raises:
            Escapes: ``path`` or one of its components is a symbolic link.
            OSError: ``ENOTEMPTY`` for a directory that holds anything, ``EBUSY`` for the root.
        """
        if not self._parts(path):
            raise OSError(errno.EBUSY, "the root of the data tree is not removed")
        # ENOTEMPTY from os.rmdir when anything is inside
        return self._remove(path, stat.S_ISDIR, os.rmdir) is not None

    def _open_read(self, path: str) -> int:
        fd, name = self._parent(path)
        try:
            try:
                file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise Escapes(f"server path {path!r} is a symbolic link") from None
                raise
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            os.close(file_fd)
            raise IsADirectoryError(f"server path {path!r} is not a file")
        return file_fd

    async def read(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes in chunks of :data:`CHUNK` (read in a worker thread).

        Raises:
            Escapes: a component of ``path`` is a symbolic link.
        """
        file_fd = self._open_read(path)
        async with trio.wrap_file(os.fdopen(file_fd, "rb")) as f:
            while chunk := await f.read(CHUNK):
                yield chunk

    def used(self) -> int:
        """Bytes the tree occupies on disk (allocated blocks, as ``du`` counts them)."""
        if self._used is None:
            total = 0
            for directory, _, files in os.walk(self.root):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            self._used = total
        return self._used

    def check_space(self, incoming: int) -> None:
        """Raise :class:`InsufficientStorage` if ``incoming`` more bytes do not fit now (a
        third-party copy asks before it answers 202)."""
        self._check_space(incoming)

    def _check_space(self, incoming: int) -> None:
        """Raise :class:`InsufficientStorage` if ``incoming`` more bytes do not fit."""
        if self.quota is not None and self.used() + self._reserved + incoming > self.quota:
            raise InsufficientStorage(
                f"quota of {self.quota} bytes: {self.used() + self._reserved} in use or "
                f"announced, {incoming} more do not fit"
            )
        fs = os.statvfs(self.staging)
        free = fs.f_bavail * fs.f_frsize
        if free - self._reserved - incoming < self.free_margin:
            raise InsufficientStorage(
                f"{free} bytes free on the file system, {self.free_margin} kept free: "
                f"{incoming} more do not fit"
            )

    async def write(
        self,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        overwrite: Callable[[], bool],
        expected: int | None = None,
    ) -> bool:
        """Store ``chunks`` at ``path``: staged, then committed atomically.

        Args:
            path: the server path.
            chunks: the body.
            overwrite: asked at commit time, only when a file holds the name: may the writer
                replace it (``storage.modify``)? If not the commit fails, nothing written.
            expected: the size announced (Content-Length), checked against the quota and the
                free space before the first byte is read; None for a body of unknown length.

        Returns:
            True when the file is new, False when it replaced one.

        Raises:
            InsufficientStorage: the quota or the free-space margin would be exceeded.
            FileExistsError: a file is at ``path`` at commit time and ``overwrite()`` is False.
            Escapes: a component of ``path`` is a symbolic link.
            NotADirectoryError, IsADirectoryError: a file or a directory is in the way.
        """
        self._parts(path)  # a bad path is refused before anything is read
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        announced = expected or 0
        self._check_space(announced)
        self._reserved += announced
        temp = self.staging / f"{_TEMP}{secrets.token_hex(8)}"
        written = 0
        try:
            async with await trio.open_file(temp, "xb") as f:
                async for chunk in chunks:
                    if written + len(chunk) > announced:
                        # Beyond what was announced (a chunked body): check each chunk.
                        self._check_space(written + len(chunk) - announced)
                    await f.write(chunk)
                    written += len(chunk)
            allocated = os.stat(temp).st_blocks * 512
            # In the event loop's thread: a few system calls, and `overwrite` may consult the
            # server's verifier, which is not thread-safe.
            created, freed = self._commit(temp, path, overwrite)
            self._used = self.used() + allocated - freed
            return created
        finally:
            self._reserved -= announced
            temp.unlink(missing_ok=True)

    def _commit(self, temp: Path, path: str, overwrite: Callable[[], bool]) -> tuple[bool, int]:
        """Put the staged file in place; (created, bytes freed by the file it replaced)."""
        fd, name = self._parent(path, create=True)
        try:
            try:
                # linkat(2) fails with EEXIST if anything holds the name: a create-only writer
                # never replaces a file that appeared while its bytes were coming in.
                os.link(temp, name, dst_dir_fd=fd, follow_symlinks=False)
                return True, 0
            except FileExistsError:
                if not overwrite():
                    raise
            old = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(old.st_mode):
                raise IsADirectoryError(f"server path {path!r} is a directory")
            if not stat.S_ISREG(old.st_mode):
                raise Escapes(f"server path {path!r} is a symbolic link")
            os.replace(temp, name, dst_dir_fd=fd)
            return False, old.st_blocks * 512
        finally:
            os.close(fd)

    def delete(self, path: str) -> bool:
        """Remove the regular file at ``path``; False when there is none (a symlink is not
        removed: :class:`Escapes`).

        Raises:
            Escapes: ``path`` or one of its components is a symbolic link.
        """
        st = self._remove(path, stat.S_ISREG, os.unlink)
        if st is None:
            return False
        if self._used is not None:
            self._used -= st.st_blocks * 512
        return True

    def _remove(
        self,
        path: str,
        is_kind: Callable[[int], bool],
        remove: Callable[..., None],
    ) -> os.stat_result | None:
        """Remove what ``path`` names when ``is_kind(st_mode)``, never following a symbolic
        link; its stat before removal, or None when there is nothing of that kind there.

        Raises:
            Escapes: ``path`` or one of its components is a symbolic link.
        """
        try:
            fd, name = self._parent(path)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(st.st_mode):
                raise Escapes(f"server path {path!r} is a symbolic link")
            if not is_kind(st.st_mode):
                return None
            remove(name, dir_fd=fd)
        finally:
            os.close(fd)
        return st

    def mkdir(self, path: str) -> bool:
        """Create a directory and its parents (B7); False when it already existed.

        Raises:
            Escapes: a component of ``path`` is a symbolic link.
            NotADirectoryError: a file is in the way.
            FileExistsError: something other than a directory holds the name.
        """
        if not self._parts(path):
            return False
        fd, name = self._parent(path, create=True)
        try:
            os.mkdir(name, 0o755, dir_fd=fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise Escapes(f"server path {path!r} is a symbolic link") from None
            if stat.S_ISDIR(st.st_mode):
                return False
            raise
        finally:
            os.close(fd)
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
