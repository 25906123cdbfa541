"""The transfer service's durable hooks (``persist``, ``rows``, ``restore_rows``) in virtual
time: what the live store (``live/_fts_store.py``) commits, and when (docs/transfers.md, "The
FTS state store"). The real store and a real ``kill -9``: tests/live/test_fts_store.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from scitokens_batch.actors import TransferService

from .transfer_helpers import build, dataset, of, rule, transfer_scenario


class _Store:
    """An in-memory table that notes, for each commit, how many events were recorded before."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self.rows: dict[str, dict[str, Any]] = {}
        self.commits: list[tuple[int, dict[str, Any]]] = []

    async def apply(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        await trio.lowlevel.checkpoint()  # a commit yields, as the live one does (a worker thread)
        # a JSON round trip: what the SQLite table stores is what a restart reads
        copy = json.loads(json.dumps(dict(changes)))
        self.commits.append((len(self.events.events), copy))
        for key, row in copy.items():
            if row is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = row


async def _run(until: float) -> tuple[TransferService, _Store, list[Any]]:
    spec = transfer_scenario(dataset(1, "1000GB") + rule(), grace="0s")
    world, sink = build(spec)
    fts = world.transfer_service
    assert fts is not None
    store = _Store(sink)
    fts.persist = store.apply
    async with trio.open_nursery() as nursery:
        await world.start(nursery)
        await trio.sleep(until)
        nursery.cancel_scope.cancel()
    return fts, store, sink.events


def _committed_before(store: _Store, index: int, key: str) -> list[dict[str, Any]]:
    """The rows of ``key`` committed before event ``index`` was recorded, in order."""
    return [rows[key] for n, rows in store.commits if n <= index and key in rows]


async def test_each_step_is_committed_before_it_is_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The job and its file are committed before Rucio records the acceptance; each exchanged
    or refreshed token (its rotated refresh token) before its event; the file as active before
    the destination sees the copy, and as done before transfer_done."""
    _, store, events = await _run(12000)
    index = {id(e): i for i, e in enumerate(events)}
    submitted = of(events, "rule_submitted")[0]
    job = submitted.fields["job"]
    assert _committed_before(store, index[id(submitted)], f"job:{job}")
    assert _committed_before(store, index[id(submitted)], f"file:{job}/0")
    renewals = [e for e in events if e.actor == "fts" and e.kind in ("exchange", "refresh")]
    assert len(renewals) == 2 + 2 * 3  # two tokens, exchanged at 0, refreshed 3 times
    for e in renewals:
        rows = [
            row
            for key in store.rows
            if key.startswith("token:")
            for row in _committed_before(store, index[id(e)], key)
            if row["id"] == e.fields["token"]
        ]
        assert rows and rows[-1]["jti"] == e.fields["jti"] and rows[-1]["refresh_token"]
    states = [row["state"] for row in _committed_before(store, len(events), f"file:{job}/0")]
    first_use = next(i for i, e in enumerate(events) if e.kind == "use" and e.actor == "bnl")
    assert "active" in [r["state"] for r in _committed_before(store, first_use, f"file:{job}/0")]
    done = of(events, "transfer_done")[0]
    assert _committed_before(store, index[id(done)], f"file:{job}/0")[-1]["state"] == "done"
    assert states[-1] == "done"


async def test_rows_round_trip_and_a_running_copy_is_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The committed table equals the service's own rows; a new service loaded from it holds
    the same rows, and resumes the job whose copy was running (as submitted again)."""
    fts, store, _ = await _run(5000)
    assert store.rows == json.loads(json.dumps(fts.rows()))
    spec = transfer_scenario(dataset(1, "1000GB") + rule(), grace="0s")
    world, sink = build(spec)
    again = world.transfer_service
    assert again is not None
    again.restore_rows(store.rows)
    assert json.loads(json.dumps(again.rows())) == store.rows
    tokens = [r for k, r in store.rows.items() if k.startswith("token:")]
    assert len(tokens) == 2 and all(t["refresh_token"] != t["backup_refresh_token"] for t in tokens)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    resumed = [
        e.fields
        for e in sink.events
        if e.kind == "transfer_state" and e.fields["state"] == "submitted"
    ]
    assert resumed and resumed[0]["reason"] == "the transfer service restarted during the copy"
