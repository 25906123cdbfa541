"""The transfer service's state store: FTS's database, as one durable table in its state
directory (docs/security.md, "FTS state store").

What FTS keeps in its database (``t_job``, ``t_file``, ``t_token``) is the live service's too,
as the rows :meth:`~scitokens_batch.actors.TransferService.rows` writes: each accepted job,
each file's state and attempts, and each managed token (its current access token, its refresh
token, the refresh token before the last rotation, its ``exp`` and whether it died). They live
in ``transfers.db`` (:class:`~scitokens_batch.live._durable.DurableTable`: SQLite in WAL mode,
``synchronous=FULL``, 0600 in the service's 0700 work directory) and every change is committed
before the answer or the step that depends on it: a ``kill -9`` at any instant loses nothing
the service acknowledged (an accepted job, a rotated refresh token it received, a copy it
reported).

:func:`stale_copy` is the ``transfer_service_state_loss`` fault's state directory (P12): what
a restore from a backup taken before each token's last rotation gives (``restore = "backup"``),
or the database with its refresh tokens gone (``restore = "none"``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..actors import TransferService
from ..scenario import RefreshTokenRestore
from ._durable import DurableTable

__all__ = ["STATE_DB", "durable_transfer_service", "replace_with_stale_copy", "stale_copy"]

#: The transfer service's database, in its work directory.
STATE_DB = "transfers.db"


def durable_transfer_service(fts: TransferService, workdir: Path) -> DurableTable:
    """Open (or create) the store in ``workdir``, load what a previous life committed into
    ``fts`` (resumed when it runs), and make every change durable through it."""
    table = DurableTable(workdir / STATE_DB)
    fts.restore_rows(table.load())
    fts.persist = table.apply_async
    return table


def stale_copy(state_dir: Path, restore: RefreshTokenRestore) -> int:
    """Turn the store in ``state_dir`` (a copy of a stopped service's directory) into the stale
    one the fault describes: each refresh token as it was before its last rotation (one the
    issuer already rotated away, ``BACKUP``), or none at all (``NONE``). Returns how many
    managed tokens it changed."""
    table = DurableTable(state_dir / STATE_DB)
    try:
        changes = {}
        for key, row in table.load().items():
            if not key.startswith("token:"):
                continue
            new = dict(row)
            if restore is RefreshTokenRestore.BACKUP:
                new["refresh_token"] = row["backup_refresh_token"]
            else:
                new["refresh_token"] = new["backup_refresh_token"] = None
            changes[key] = new
        table.apply(changes)
    finally:
        table.close()
    return len(changes)


def replace_with_stale_copy(state_dir: Path, restore: RefreshTokenRestore) -> int:
    """Replace a stopped transfer service's state directory with its :func:`stale_copy` (the
    copy is made beside it, then renamed over it). Returns how many tokens it changed."""
    stale = state_dir.with_name(f".{state_dir.name}.stale")
    shutil.rmtree(stale, ignore_errors=True)
    try:
        shutil.copytree(state_dir, stale)  # modes kept: 0700 directory, 0600 database
        changed = stale_copy(stale, restore)
        shutil.rmtree(state_dir)
        stale.rename(state_dir)
    finally:
        shutil.rmtree(stale, ignore_errors=True)
    return changed
