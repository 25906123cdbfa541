"""The services' event files (one per service, appended across restarts) and their merge into
one stream by the live runner; no process is started here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scitokens_batch.live._runner import merged_events
from scitokens_batch.live._serve import AppendSink
from scitokens_batch.metrics import Event

if TYPE_CHECKING:
    from pathlib import Path


def test_restarted_service_appends_after_a_torn_line(tmp_path: Path) -> None:
    """A service killed mid-line leaves half a line; its restart cuts it, so the merged stream
    holds every whole event of both lives and no glued line."""
    path = tmp_path / "store.jsonl"
    first = AppendSink(path)
    first.write(Event(t=1.0, seq=0, actor="store", kind="served", fields={"job": 1}))
    first.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"t": 2.0, "seq": 1, "actor": "sto')  # SIGKILL here
    again = AppendSink(path)
    again.write(Event(t=3.0, seq=0, actor="store", kind="served", fields={"job": 2}))
    again.close()
    merged = list(merged_events(tmp_path, ["store"]))
    assert [(e.t, e.seq, e.fields["job"]) for e in merged] == [(1.0, 0, 1), (3.0, 1, 2)]
