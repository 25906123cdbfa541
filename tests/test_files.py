"""Tests for the real file helpers: bounded reads (F5) and atomic private writes (I3)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch._files import (
    current_euid,
    cut_torn_tail,
    os_environ_snapshot,
    read_file,
    write_private,
    write_public,
)
from scitokens_batch.tokens._discovery import (
    MAX_TOKEN_FILE_SIZE,
    Discovered,
    DiscoveryError,
    TokenSource,
    discover,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

IS_ROOT = os.geteuid() == 0


def mode_of(path: Path) -> int:
    """Return the permission bits of ``path``."""
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(name="umask")
def _umask() -> Iterator[None]:
    """Restore the process umask after a test that changes it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


class TestReadFile:
    """read_file is the real ``read_file`` for discovery (F5)."""

    def test_reads_small_file(self, tmp_path: Path) -> None:
        """A short file is returned whole (F5)."""
        (tmp_path / "t").write_bytes(b"token\n")
        assert read_file(str(tmp_path / "t")) == b"token\n"

    def test_large_file_is_cut_one_past_the_limit(self, tmp_path: Path) -> None:
        """A huge file yields only 16384 + 1 bytes, enough to detect it (F5)."""
        (tmp_path / "big").write_bytes(b"a" * (1 << 20))
        assert len(read_file(str(tmp_path / "big"))) == MAX_TOKEN_FILE_SIZE + 1

    def test_max_bytes_is_honoured(self, tmp_path: Path) -> None:
        """max_bytes bounds the read, and 0 reads nothing (F5)."""
        (tmp_path / "t").write_bytes(b"0123456789")
        assert read_file(str(tmp_path / "t"), max_bytes=4) == b"0123"
        assert read_file(str(tmp_path / "t"), max_bytes=0) == b""

    def test_missing_file_raises_file_not_found(self, tmp_path: Path) -> None:
        """A missing file raises FileNotFoundError, which discovery treats as ENOENT (F5)."""
        with pytest.raises(FileNotFoundError):
            read_file(str(tmp_path / "absent"))

    def test_directory_raises_is_a_directory(self, tmp_path: Path) -> None:
        """A directory raises IsADirectoryError, which stops discovery (F5)."""
        with pytest.raises(IsADirectoryError):
            read_file(str(tmp_path))

    def test_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """A FIFO is not a regular file: OSError(EINVAL) at once instead of hanging (F5, F6)."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(OSError, match="not a regular file") as info:
            read_file(str(fifo))
        assert info.value.errno == errno.EINVAL

    @pytest.mark.skipif(IS_ROOT, reason="root bypasses file permissions")
    def test_unreadable_file_raises_permission_error(self, tmp_path: Path) -> None:
        """A file without read permission raises PermissionError (F5)."""
        path = tmp_path / "t"
        path.write_bytes(b"token")
        path.chmod(0)
        with pytest.raises(PermissionError):
            read_file(str(path))


class TestDiscoveryOnRealFiles:
    """discover() wired to the real read_file (F1, F5)."""

    def test_finds_token_written_by_write_private(self, tmp_path: Path) -> None:
        """A token written with write_private is found through BEARER_TOKEN_FILE (F1, I3)."""
        path = tmp_path / "bt"
        write_private(path, "tok.en\n")
        env = {"BEARER_TOKEN_FILE": str(path)}
        result = discover(env, euid=current_euid(), read_file=read_file)
        assert result == Discovered("tok.en", TokenSource.BEARER_TOKEN_FILE, str(path))

    def test_missing_runtime_file_falls_through(self, tmp_path: Path) -> None:
        """A missing $XDG_RUNTIME_DIR file falls through to the /tmp step (F1, F5)."""
        seen: list[str] = []

        def reader(path: str) -> bytes:
            seen.append(path)
            if path == "/tmp/bt_u4242":  # never touch the real /tmp token of anyone
                return b"tmp-token"
            return read_file(path)

        result = discover({"XDG_RUNTIME_DIR": str(tmp_path)}, euid=4242, read_file=reader)
        assert result == Discovered("tmp-token", TokenSource.TMP, "/tmp/bt_u4242")
        assert seen == [str(tmp_path / "bt_u4242"), "/tmp/bt_u4242"]

    def test_oversized_and_directory_files_stop(self, tmp_path: Path) -> None:
        """A 16384-byte file or a directory named by BEARER_TOKEN_FILE stops discovery (F5)."""
        big = tmp_path / "big"
        big.write_bytes(b"a" * MAX_TOKEN_FILE_SIZE)
        for target in (big, tmp_path):
            env = {"BEARER_TOKEN_FILE": str(target)}
            result = discover(env, euid=current_euid(), read_file=read_file)
            assert isinstance(result, DiscoveryError)
            assert result.path == str(target)


class TestWritePrivate:
    """write_private: atomic, private from the start (I3)."""

    def test_creates_file_with_mode_0600(self, tmp_path: Path) -> None:
        """A new file has mode 0600 and the given bytes (I3)."""
        path = tmp_path / "alice" / "svc.use"
        path.parent.mkdir()
        write_private(path, b'{"access_token": "x"}\n')
        assert path.read_bytes() == b'{"access_token": "x"}\n'
        assert mode_of(path) == 0o600
        assert os.listdir(path.parent) == ["svc.use"]

    def test_str_is_utf8_and_str_path_works(self, tmp_path: Path) -> None:
        """A str payload is written as UTF-8, to a str path (I3)."""
        path = tmp_path / "note"
        write_private(str(path), "héllo")
        assert path.read_bytes() == "héllo".encode()

    def test_relative_path_in_current_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bare file name writes into the current directory, fsyncing '.' (I3)."""
        monkeypatch.chdir(tmp_path)
        write_private("svc.top", b"refresh")
        assert (tmp_path / "svc.top").read_bytes() == b"refresh"

    def test_mode_is_exact_whatever_the_umask(self, tmp_path: Path, umask: None) -> None:
        """The final mode is exactly the one asked for, with a permissive or strict umask (I3)."""
        os.umask(0)
        write_private(tmp_path / "p", b"x")
        os.umask(0o077)
        write_public(tmp_path / "q", b"x")
        assert mode_of(tmp_path / "p") == 0o600
        assert mode_of(tmp_path / "q") == 0o644

    def test_temp_file_is_private_while_being_written(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: None
    ) -> None:
        """The temp file is already 0600 when the token bytes go in (I3: never world-readable)."""
        os.umask(0)
        real_write = os.write
        modes: list[int] = []

        def spy_write(fd: int, data: bytes) -> int:
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", spy_write)
        write_private(tmp_path / "t", b"secret")
        assert modes == [0o600]

    def test_replaces_existing_file_and_its_mode(self, tmp_path: Path) -> None:
        """Replacing a world-readable file gives the new content with mode 0600 (I3)."""
        path = tmp_path / "svc.use"
        path.write_bytes(b"old")
        path.chmod(0o644)
        write_private(path, b"new")
        assert path.read_bytes() == b"new"
        assert mode_of(path) == 0o600
        assert os.listdir(tmp_path) == ["svc.use"]

    def test_short_writes_are_completed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """os.write writing one byte at a time still yields the whole content (I3)."""
        real_write = os.write
        monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:1])))
        write_private(tmp_path / "t", b"0123456789")
        assert (tmp_path / "t").read_bytes() == b"0123456789"

    def test_failure_mid_write_keeps_old_content(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write failing after a partial write leaves the old file whole and no temp file (I3)."""
        path = tmp_path / "svc.use"
        path.write_bytes(b"old token")
        real_write = os.write
        calls: list[int] = []

        def failing_write(fd: int, data: bytes) -> int:
            calls.append(fd)
            if len(calls) == 1:
                return real_write(fd, bytes(data[:3]))  # a partial write first...
            raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

        monkeypatch.setattr(os, "write", failing_write)
        with pytest.raises(OSError, match="No space left") as info:
            write_private(path, b"a much longer new token")
        assert info.value.errno == errno.ENOSPC
        assert len(calls) == 2
        assert path.read_bytes() == b"old token"
        assert os.listdir(tmp_path) == ["svc.use"]

    def test_failure_in_fsync_keeps_old_content(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An fsync failure of the data leaves the old file whole and no temp file (I3)."""
        path = tmp_path / "svc.use"
        path.write_bytes(b"old token")

        def failing_fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="Input/output"):
            write_private(path, b"new token")
        assert path.read_bytes() == b"old token"
        assert os.listdir(tmp_path) == ["svc.use"]

    def test_failure_in_replace_removes_temp(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failed rename leaves the old file whole and no temp file (I3)."""
        path = tmp_path / "svc.use"
        path.write_bytes(b"old token")

        def failing_replace(src: str, dst: str) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(OSError, match="cross-device"):
            write_private(path, b"new token")
        assert path.read_bytes() == b"old token"
        assert os.listdir(tmp_path) == ["svc.use"]

    def test_interrupt_removes_temp(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A KeyboardInterrupt mid-write (or a cancellation) leaves no copy of the token (I3)."""

        def interrupted_write(fd: int, data: bytes) -> int:
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "write", interrupted_write)
        with pytest.raises(KeyboardInterrupt):
            write_private(tmp_path / "t", b"token")
        assert os.listdir(tmp_path) == []

    def test_directory_fsync_einval_is_tolerated(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file system refusing fsync on a directory (EINVAL) does not fail the write (I3)."""
        real_fsync = os.fsync
        dir_fsyncs: list[int] = []

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                dir_fsyncs.append(fd)
                raise OSError(errno.EINVAL, "Invalid argument")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        write_private(tmp_path / "t", b"token")
        assert len(dir_fsyncs) == 1
        assert (tmp_path / "t").read_bytes() == b"token"

    def test_directory_fsync_eio_is_raised_after_rename(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real directory fsync error is raised; the new content is already in place (I3)."""
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(OSError, match="Input/output"):
            write_private(tmp_path / "t", b"token")
        assert (tmp_path / "t").read_bytes() == b"token"
        assert os.listdir(tmp_path) == ["t"]

    def test_missing_directory_raises(self, tmp_path: Path) -> None:
        """A target in a missing directory raises FileNotFoundError and creates nothing (I3)."""
        with pytest.raises(FileNotFoundError):
            write_private(tmp_path / "absent" / "t", b"token")
        assert os.listdir(tmp_path) == []

    def test_temp_name_collision_is_retried(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An existing file with the temp name is never reused or overwritten (I3, O_EXCL)."""
        names = iter(["0" * 16, "0" * 16, "1" * 16])
        monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
        squatter = tmp_path / f".t.tmp-{'0' * 16}"
        squatter.write_bytes(b"planted")
        write_private(tmp_path / "t", b"token")
        assert squatter.read_bytes() == b"planted"
        assert sorted(os.listdir(tmp_path)) == sorted([squatter.name, "t"])

    def test_bad_mode_is_refused(self, tmp_path: Path) -> None:
        """A mode with bits beyond 0o7777 is a caller bug and raises ValueError (I3)."""
        with pytest.raises(ValueError, match="mode"):
            write_private(tmp_path / "t", b"x", mode=0o100600)

    def test_write_public_is_0644(self, tmp_path: Path) -> None:
        """write_public writes atomically with mode 0644 (I3)."""
        write_public(tmp_path / "jwks.json", '{"keys": []}')
        assert (tmp_path / "jwks.json").read_text() == '{"keys": []}'
        assert mode_of(tmp_path / "jwks.json") == 0o644


class TestProcessState:
    """The environment and euid helpers that feed discover() (F1)."""

    def test_environ_snapshot_is_a_copy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The snapshot holds the current environment and is detached from os.environ (F1)."""
        monkeypatch.setenv("BEARER_TOKEN", "abc")
        snapshot = os_environ_snapshot()
        assert snapshot["BEARER_TOKEN"] == "abc"
        monkeypatch.setenv("BEARER_TOKEN", "changed")
        snapshot["XDG_RUNTIME_DIR"] = "/nowhere"
        assert snapshot["BEARER_TOKEN"] == "abc"
        assert os.environ.get("XDG_RUNTIME_DIR") != "/nowhere"

    def test_current_euid(self) -> None:
        """current_euid is the process's effective uid ($ID in F1)."""
        assert current_euid() == os.geteuid()


class TestCutTornTail:
    """cut_torn_tail: a half line left by a killed writer is cut before anyone appends."""

    def test_half_line_is_cut(self, tmp_path: Path) -> None:
        """Bytes after the last newline go; whole lines stay, and the count cut is returned."""
        path = tmp_path / "events.jsonl"
        path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')
        assert cut_torn_tail(path) == 6
        assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'

    def test_whole_missing_and_empty_files_are_untouched(self, tmp_path: Path) -> None:
        """A file ending in a newline, an empty file and a missing one: nothing to cut."""
        whole = tmp_path / "whole"
        whole.write_bytes(b"x\ny\n")
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        assert cut_torn_tail(whole) == 0
        assert cut_torn_tail(empty) == 0
        assert cut_torn_tail(tmp_path / "missing") == 0
        assert whole.read_bytes() == b"x\ny\n"
        assert not (tmp_path / "missing").exists()

    @given(
        lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
        tail=st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
        chunk=st.integers(1, 64),
    )
    def test_keeps_exactly_the_whole_lines(
        self, tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], tail: bytes, chunk: int
    ) -> None:
        """Whatever the lines, the fragment and the read chunk (lines longer than a chunk
        too), what remains is the whole lines, byte for byte."""
        path = tmp_path_factory.mktemp("torn") / "f"
        whole = b"".join(line + b"\n" for line in lines)
        path.write_bytes(whole + tail)
        assert cut_torn_tail(path, chunk=chunk) == len(tail)
        assert path.read_bytes() == whole
