"""The transfer service's state store (docs/security.md, "FTS state store"), attacked the way a
careful site admin would: ``kill -9`` of the live FTS in the middle of its copies, then a
restart. What it acknowledged survives (the accepted jobs, the files it reported done, the
rotated refresh tokens) and it resumes: the unfinished files are copied, and its stored refresh
tokens still refresh (refresh_token_grace = 0: a stale one would be invalid_grant, P12)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._durable import DurableTable
from scitokens_batch.live._fts_store import STATE_DB, replace_with_stale_copy, stale_copy
from scitokens_batch.scenario import RefreshTokenRestore

FILES = 16
SCENARIO = f"""
[scenario]
name = "fts-kill"
duration = "2m"
seed = 5

[[issuers]]
name = "wlcg"
url = "https://iam.vo.example/wlcg"
profile = "wlcg"
access_token_lifetime = "60s"
refresh_token_grace = "0s"

[[issuers.clients]]
name = "rucio"
secret = "rucio-client-secret"
grants = ["client_credentials"]
scopes = ["fts", "storage.read:/datadisk", "storage.modify:/datadisk"]
audiences = ["https://fts.vo.example", "https://src.vo.example", "https://dst.vo.example"]

[[issuers.clients]]
name = "fts"
secret = "fts-client-secret"
grants = ["token_exchange", "refresh_token"]
access_token_lifetime = "20s"

[[data_servers]]
name = "src"
audience = "https://src.vo.example"
[data_servers.issuers]
wlcg = "/store"

[[data_servers]]
name = "dst"
audience = "https://dst.vo.example"
[data_servers.issuers]
wlcg = "/pnfs"

[transfer_service]
name = "fts"
issuer = "wlcg"
client = "fts"
audience = "https://fts.vo.example"
concurrency = 1
refresh_margin = "14s"
retry_backoff = "1s"
retry_backoff_max = "2s"
max_retries = 2

[data_manager]
name = "rucio"
issuer = "wlcg"
client = "rucio"
token_min_lifetime = "20s"
bulk = 4

[[datasets]]
name = "raw"
server = "src"
path = "/datadisk/raw"
files = {FILES}
size = "8MB"

[[rules]]
name = "first"
dataset = "raw"
destination = "dst"
path = "/datadisk/copy1"
at = "2s"

[[rules]]
name = "second"
dataset = "raw"
destination = "dst"
path = "/datadisk/copy2"
at = "30s"
"""


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _wait(what: str, ready: Any, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.live
@pytest.mark.slow
def test_kill_9_mid_transfer_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    """SIGKILL of the FTS process while its copies run: the store (0600 in a 0700 directory)
    holds every job Rucio was told was accepted, every file FTS reported done as done, and each
    managed token with the last refresh token the issuer gave it; restarted, FTS copies the rest
    of the first rule and serves the second rule with the same managed tokens, refreshed with
    the stored refresh tokens (no invalid_grant; no stored token exchanged again: only the
    second rule's new destination token is), every file done once."""
    with deployment(SCENARIO, ("wlcg", "src", "dst", "fts", "rucio"), prefix="stb-ftskill-") as run:
        events = run.workdir / "events"
        fts_events = events / "fts.jsonl"
        state = run.workdir / "services" / "fts"

        def copying() -> bool:
            return any(
                e["kind"] == "transfer_state" and e["state"] == "active"
                for e in _events(fts_events)
            )

        _wait("the first copy", copying, 60)
        pid = run.services["fts"].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert run.services["fts"].stop() == -signal.SIGKILL  # reaped
        before = _events(fts_events)
        done_before = {(e["job"], e["file"]) for e in before if e["kind"] == "transfer_done"}
        assert len(done_before) < FILES, "every copy ended before the kill: nothing was cut"
        accepted = {
            e["job"] for e in _events(events / "rucio.jsonl") if e["kind"] == "rule_submitted"
        }
        assert accepted

        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / STATE_DB).stat().st_mode) == 0o600
        table = DurableTable(state / STATE_DB)  # SQLite's recovery replays the WAL
        try:
            rows = table.load()
        finally:
            table.close()
        jobs = {r["job"] for k, r in rows.items() if k.startswith("job:")}
        assert accepted <= jobs
        files = {
            (r["job"], r["index"]): r["state"] for k, r in rows.items() if k.startswith("file:")
        }
        assert all(files[key] == "done" for key in done_before)
        tokens = [r for k, r in rows.items() if k.startswith("token:")]
        assert tokens and all(t["dead"] is None for t in tokens)
        last_jti = {}
        for e in before:
            if e["kind"] in ("exchange", "refresh"):
                last_jti[e["token"]] = e["jti"]
        assert last_jti  # a copy was running: its tokens were exchanged
        minted = [e["jti"] for e in _events(events / "wlcg.jsonl") if e["kind"] == "mint"]
        for t in tokens:
            if not t["ready"]:  # accepted, its exchange not committed yet: done again
                assert t["id"] not in last_jti and t["subject_token"] and not t["refresh_token"]
                continue
            # committed before it was reported: the last reported access token, or one the
            # issuer minted after it (committed, the kill came before its event)
            assert t["refresh_token"] and t["jti"] in minted
            if t["id"] in last_jti:
                assert minted.index(t["jti"]) >= minted.index(last_jti[t["id"]])

        restart = time.monotonic()
        run.start("fts")
        import trio

        trio.run(run.wait_healthy, ["fts"])

        def finished() -> bool:
            ends = [
                e for e in _events(fts_events) if e["kind"] in ("transfer_done", "transfer_failed")
            ]
            return len({(e["job"], e["file"]) for e in ends}) >= 2 * FILES

        _wait("every file of both rules", finished, 90)
        after = _events(fts_events)
        assert not [e for e in after if e["kind"] == "transfer_failed"]
        done = [(e["job"], e["file"]) for e in after if e["kind"] == "transfer_done"]
        assert len(set(done)) == 2 * FILES
        refreshes = [e for e in after if e["kind"] == "refresh"]
        refailed = [e for e in after if e["kind"] == "refresh_failed"]
        assert refreshes and not refailed, refailed
        exchanged = [e["token"] for e in after if e["kind"] == "exchange"]
        assert len(exchanged) == len(set(exchanged))  # no token exchanged twice
        ready = {t["id"] for t in tokens if t["ready"]}
        again = {e["token"] for e in after[len(before) :] if e["kind"] == "exchange"}
        assert ready and not ready & again  # the stored ones were used, not exchanged again
        assert time.monotonic() - restart < 120


def test_stale_copy_rolls_back_or_drops_the_refresh_tokens(tmp_path: Path) -> None:
    """The fault's stale copy of the store: ``backup`` puts back each token's refresh token
    from before its last rotation, ``none`` removes them all; jobs and files are unchanged."""
    rows = {
        "job:r/0": {"job": "r/0", "files": 1},
        "file:r/0/0": {"job": "r/0", "index": 0, "state": "active"},
        "token:0": {"id": "a", "refresh_token": "rt-2", "backup_refresh_token": "rt-1"},
    }
    for restore, expected in (
        (RefreshTokenRestore.BACKUP, ("rt-1", "rt-1")),
        (RefreshTokenRestore.NONE, (None, None)),
    ):
        state = tmp_path / restore.value
        state.mkdir(mode=0o700)
        table = DurableTable(state / STATE_DB)
        table.apply(rows)
        table.close()
        assert stale_copy(state, restore) == 1
        table = DurableTable(state / STATE_DB)
        got = table.load()
        table.close()
        token = got.pop("token:0")
        assert (token["refresh_token"], token["backup_refresh_token"]) == expected
        assert got == {k: v for k, v in rows.items() if k != "token:0"}


def test_failed_stale_copy_leaves_the_state_directory_and_no_copy(tmp_path: Path) -> None:
    """When the stale copy cannot be made (the store is not a database), the error surfaces,
    the service's state directory is left as it was and no ``.<name>.stale`` copy of its
    secrets stays behind."""
    import sqlite3

    state = tmp_path / "fts"
    state.mkdir(mode=0o700)
    (state / STATE_DB).write_bytes(b"not a database" * 100)
    before = (state / STATE_DB).read_bytes()
    with pytest.raises(sqlite3.DatabaseError):
        replace_with_stale_copy(state, RefreshTokenRestore.BACKUP)
    assert (state / STATE_DB).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fts"]
