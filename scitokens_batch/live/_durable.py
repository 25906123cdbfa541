"""Durable key -> JSON-row tables for live services: SQLite in WAL mode, ``synchronous=FULL``.

The issuer's refresh-token table and the token manager's credential store change a few rows per
request, and a client must never hold a refresh token that a crash (``kill -9``) could undo. So
every change is one small transaction, committed (and fsynced: ``synchronous=FULL``) before the
answer leaves, instead of the whole table rewritten every second on the event loop:

- WAL mode appends the changed pages to the ``-wal`` file and fsyncs it; a process killed at any
  instant leaves the last committed transaction readable at the next open (SQLite's recovery),
  and never a torn or partial copy, nor a temporary file holding secrets.
- The commit runs in a worker thread (``trio.to_thread.run_sync``) under a lock, so the event
  loop keeps serving while the disk syncs, and concurrent requests share commits (a request
  whose rows another request committed waits for that commit only).

The database file is created 0600 before SQLite opens it (SQLite gives its ``-wal`` and ``-shm``
files the database's permissions), in the service's 0700 work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

__all__ = ["DurableTable", "remove_temp_copies"]


class DurableTable:
    """One table of JSON rows by key, in its own SQLite database file.

    Args:
        path: the database file (created 0600 when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        # check_same_thread=False: commits run in trio's worker threads, one at a time (lock).
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, doc TEXT NOT NULL)"
        )
        self._lock = trio.Lock()

    def load(self) -> dict[str, dict[str, Any]]:
        """Every row, by key."""
        return {key: json.loads(doc) for key, doc in self._db.execute("SELECT key, doc FROM rows")}

    def apply(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Write ``changes`` (key -> row; None deletes) as one durable transaction."""
        upserts = [(k, json.dumps(v)) for k, v in changes.items() if v is not None]
        deletes = [(k,) for k, v in changes.items() if v is None]
        with self._db:  # BEGIN ... COMMIT, or ROLLBACK on an error
            self._db.execute("BEGIN")
            if upserts:
                self._db.executemany(
                    "INSERT OR REPLACE INTO rows (key, doc) VALUES (?, ?)", upserts
                )
            if deletes:
                self._db.executemany("DELETE FROM rows WHERE key = ?", deletes)

    async def apply_async(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """:meth:`apply` in a worker thread; returns once the transaction is durable."""
        async with self._lock:
            # Not cancellable half-way: a commit the caller stopped waiting for still completes.
            await trio.to_thread.run_sync(self.apply, dict(changes))

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close it."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


def remove_temp_copies(directory: Path) -> int:
    """Remove the temporary files an atomic write (``_files.write_private``: ``.<name>.tmp-*``)
    left behind when the process was killed between creating and renaming them: each may hold
    a partial copy of a secret. Returns how many were removed."""
    n = 0
    for temp in directory.glob(".*.tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            n += 1
    return n
