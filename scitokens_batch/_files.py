"""Real file-system and process-environment helpers: the only module that touches them.

The layers (``tokens``, ``protocol``, ...) stay pure and take these as injected callables or
values: :func:`read_file` fits ``scitokens_batch.tokens._discovery.discover(read_file=...)``,
:func:`os_environ_snapshot` and :func:`current_euid` give its ``env`` and ``euid``.

Writes are atomic (conformance I3): a reader of a credential file sees either the old content
or the new one, never a partial file, and a private file is never readable by others, not even
for the instant between creating and renaming the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

__all__ = [
    "current_euid",
    "cut_torn_tail",
    "os_environ_snapshot",
    "read_file",
    "write_private",
    "write_public",
]

#: F5: HTCondor's token file limit.  Kept here too (not imported from ``tokens``) so that this
#: I/O module does not depend on the token layer; ``discover`` refuses content this long.
_TOKEN_FILE_LIMIT = 16384

#: How many random temporary names to try before giving up; a collision of 64 random bits is
#: already only possible if something else is creating files with our exact naming scheme.
_TEMP_NAME_ATTEMPTS = 8


def read_file(path: str, *, max_bytes: int = _TOKEN_FILE_LIMIT + 1) -> bytes:
    """Read at most ``max_bytes`` bytes of a regular file.

    The default reads one byte past HTCondor's 16384-byte limit, so that
    :func:`~scitokens_batch.tokens._discovery.discover` can tell an oversized file (F5) without
    this function reading a huge file whole.

    The file is opened with ``O_NONBLOCK`` and must be a regular file: a FIFO or a device named
    by ``BEARER_TOKEN_FILE`` would otherwise hang or stream forever.

    Args:
        path: the file to read; symbolic links are followed.
        max_bytes: stop after this many bytes.

    Returns:
        The first ``max_bytes`` bytes of the file (all of it if shorter).

    Raises:
        FileNotFoundError: the file does not exist (discovery falls through, F5).
        IsADirectoryError: ``path`` is a directory.
        OSError: any other failure, with ``errno.EINVAL`` for a file that is not a regular file.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0 (got {max_bytes})")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        remaining = max_bytes
        # os.read may return fewer bytes than asked even before end of file; loop like
        # HTCondor's full_read until EOF or the limit.
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_private(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600) -> None:
    """Atomically replace ``path`` with ``data``, readable only as ``mode`` allows (I3).

    Steps, each for a reason:

    1. Create a temporary file in the same directory (``rename(2)`` is only atomic within one
       file system) with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never reuse or follow something
       planted there) and ``mode`` from the start, so the token is never world-readable.  The
       umask can only remove bits, so ``fchmod`` then sets ``mode`` exactly.
    2. Write everything (looping over short writes) and ``fsync`` it, so that after a crash
       the renamed file cannot be empty or partial.  No user-space buffer is involved
       (``os.write``), so there is nothing else to flush.
    3. ``os.replace`` onto the target: readers see the old file or the new one, never a mix.
    4. ``fsync`` the directory so that the rename itself survives a crash.  File systems that
       cannot ``fsync`` a directory (``EINVAL``/``ENOTSUP``) are tolerated.

    On any failure before step 3 the temporary file is removed and the target is untouched.
    A failure in step 4 is raised, but the new content is already in place by then.

    Args:
        path: the file to write; its directory must exist.
        data: the content; ``str`` is encoded as UTF-8.
        mode: the permission bits of the new file.

    Raises:
        OSError: the file could not be written; the target is unchanged unless the error
            came from the final directory ``fsync``.
        ValueError: ``mode`` has bits outside ``0o7777``.
    """
    if mode & ~0o7777:
        raise ValueError(f"mode must be permission bits within 0o7777 (got {mode:#o})")
    target = os.fspath(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory, name = os.path.split(target)
    directory = directory or "."

    fd, temp_path = _create_temp(directory, name, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, target)
    except BaseException:
        # Also on KeyboardInterrupt / trio.Cancelled: never leave a stray copy of a token.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def write_public(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Atomically replace ``path`` with ``data``, world-readable (``0o644``).

    For public material only (JWKS, discovery documents, reports); see :func:`write_private`
    for the steps and the guarantees.

    Args:
        path: the file to write; its directory must exist.
        data: the content; ``str`` is encoded as UTF-8.

    Raises:
        OSError: the file could not be written; the target is unchanged.
    """
    write_private(path, data, mode=0o644)


def cut_torn_tail(path: str | os.PathLike[str], *, chunk: int = 1 << 16) -> int:
    """Cut what follows the last newline of the file at ``path``: the half line a writer
    killed mid-write left, which a new writer appending to the file would otherwise glue to
    its own first line. Returns how many bytes were cut (0 for a missing or whole file).
    """
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below; a missing file has nothing to cut
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        keep, pos = 0, end
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        if keep < end:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return end - keep


def os_environ_snapshot() -> dict[str, str]:
    """Return a copy of the process environment, to pass to pure code as ``env``.

    Returns:
        A new ``dict``; later changes to ``os.environ`` do not show through it.
    """
    return dict(os.environ)


def current_euid() -> int:
    """Return the effective user id of this process (``$ID`` in bearer token discovery, F1).

    Returns:
        ``os.geteuid()``.
    """
    return os.geteuid()


def _create_temp(directory: str, name: str, mode: int) -> tuple[int, str]:
    """Create and open a fresh temporary file next to the target; return ``(fd, path)``.

    The name starts with a dot so that directory scans (credmon, ``ls``) skip it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_NAME_ATTEMPTS):
        temp_path = os.path.join(directory, f".{name}.tmp-{secrets.token_hex(8)}")
        try:
            return os.open(temp_path, flags, mode), temp_path
        except FileExistsError:
            continue
    raise FileExistsError(
        errno.EEXIST,
        f"could not create a unique temporary file after {_TEMP_NAME_ATTEMPTS} attempts",
        directory,
    )


def _fsync_directory(directory: str) -> None:
    """``fsync`` a directory so that a rename in it is durable (I3)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (and some FUSE or network mounts) refuse fsync on a directory;
        # the rename is done and there is nothing better to do there.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)
