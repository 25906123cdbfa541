"""Tests for JobTable and TokenTable: one CSV row a job / a token, folded from the events."""

from __future__ import annotations

import csv
import io
import os
import tracemalloc
from pathlib import Path

from scitokens_batch.metrics import Event
from scitokens_batch.metrics._tables import JOB_COLUMNS, TOKEN_COLUMNS, JobTable, TokenTable

from .conftest import EXCHANGE, SCRIPT, record

JOBS_CSV = """\
job,workload,user,submitted_t,first_start_t,last_start_t,end_t,status,exit_code,host,starts,holds,last_hold_code,evictions,cpu_s,lost_cpu_s,reason
1,analysis,alice,0.0,10.0,60.0,1300.0,completed,0,exec2,2,0,,1,140.0,40.0,exited normally
2,analysis,bob,1.0,20.0,20.0,,held,,exec1,1,1,13,0,,0.0,token expired
3,skim,alice,2.0,30.0,55.0,1400.0,failed,1,exec3,2,1,4,0,12.5,0.0,exited with status 1
"""

TOKENS_CSV = f"""\
jti,token_sha,sub,client,grant,scope,aud,iat,exp,lifetime_s,minted_t,staged,uses,rejects,first_use_t,last_use_t,min_headroom_s
a,aaaaaaaaaaaa,alice,tm,refresh_token,storage.read:/data storage.create:/out,https://se1.example https://se2.example,0,1200,1200,0.0,2,3,0,100.0,1250.0,-50.0
b,bbbbbbbbbbbb,bob,tm,refresh_token,storage.read:/data,https://se1.example,5,905,900,5.0,1,0,1,,,
c,cccccccccccc,alice,fts,{EXCHANGE},storage.read:/data,https://se2.example,300,600,300,300.0,0,1,1,400.0,400.0,200.0
d,dddddddddddd,alice,tm,refresh_token,storage.read:/data storage.create:/out,https://se1.example https://se2.example,700,1900,1200,700.0,1,0,1,,,
"""


def _row(table: JobTable | TokenTable, key: object) -> dict[str, object]:
    columns = JOB_COLUMNS if isinstance(table, JobTable) else TOKEN_COLUMNS
    rows = [dict(zip(columns, r, strict=True)) for r in table.rows()]
    return next(r for r in rows if r[columns[0]] == key)


class TestJobTable:
    def test_csv_rows(self, events: list[Event], tmp_path: Path) -> None:
        """jobs.csv has the header and one exact row a job, sorted by job id."""
        table = JobTable().feed(events)
        table.write_csv(tmp_path / "jobs.csv")
        assert (tmp_path / "jobs.csv").read_text() == JOBS_CSV
        assert len(table) == 3

    def test_evicted_then_completed(self, events: list[Event]) -> None:
        """A job evicted and restarted elsewhere ends completed, with both starts, the eviction and its lost CPU."""
        row = _row(JobTable().feed(events), 1)
        assert row["status"] == "completed"
        assert (row["starts"], row["evictions"], row["lost_cpu_s"]) == (2, 1, 40.0)
        assert (row["first_start_t"], row["last_start_t"], row["host"]) == (10.0, 60.0, "exec2")

    def test_observer_matches_replay(self) -> None:
        """Observing while recording gives the same rows as replaying the events.jsonl lines."""
        live = JobTable()
        recorded = record(SCRIPT, observers=[live])
        replayed = JobTable().feed(Event.from_json(ev.to_json()) for ev in recorded)
        assert live.rows() == replayed.rows()
        assert len(live) == 3

    def test_job_without_submit(self) -> None:
        """A job whose submit is not in the events (a truncated file) still gets a row, submit columns empty."""
        table = JobTable().feed(
            record([(7, "queue_manager", "execute", {"job": 9, "host": "h", "slot": 1})])
        )
        assert table.rows() == [
            (
                9,
                None,
                None,
                None,
                7.0,
                7.0,
                None,
                "running",
                None,
                "h",
                1,
                0,
                None,
                0,
                None,
                0.0,
                None,
            )
        ]

    def test_rows_sorted_by_numeric_job_id(self) -> None:
        """Job 10 sorts after job 9 (numerically, not as text)."""
        script = [
            (float(j), "queue_manager", "submit", {"job": j, "workload": "w", "user": "u"})
            for j in (10, 9, 100)
        ]
        assert [r[0] for r in JobTable().feed(record(script)).rows()] == [9, 10, 100]

    def test_write_replaces_atomically(self, events: list[Event], tmp_path: Path) -> None:
        """Writing over an existing file replaces it whole and leaves no temporary file behind."""
        path = tmp_path / "jobs.csv"
        path.write_text("old\n")
        JobTable().feed(events).write_csv(path)
        assert path.read_text() == JOBS_CSV
        assert os.listdir(tmp_path) == ["jobs.csv"]

    def test_pandas_shape(self, events: list[Event], tmp_path: Path) -> None:
        """Every row has as many cells as the header (what pandas.read_csv needs)."""
        JobTable().feed(events).write_csv(tmp_path / "jobs.csv")
        rows = list(csv.reader(io.StringIO((tmp_path / "jobs.csv").read_text())))
        assert rows[0] == list(JOB_COLUMNS)
        assert {len(r) for r in rows} == {len(JOB_COLUMNS)}


class TestTokenTable:
    def test_csv_rows(self, events: list[Event], tmp_path: Path) -> None:
        """tokens.csv has one exact row a minted jti, in mint order; unknown and null jti are not rows."""
        table = TokenTable().feed(events)
        table.write_csv(tmp_path / "tokens.csv")
        assert (tmp_path / "tokens.csv").read_text() == TOKENS_CSV
        assert len(table) == 4

    def test_used_after_exp(self, events: list[Event]) -> None:
        """A token accepted after its exp has a negative min_headroom_s and its last use after exp."""
        row = _row(TokenTable().feed(events), "a")
        assert row["min_headroom_s"] == -50.0
        assert isinstance(row["last_use_t"], float) and isinstance(row["exp"], int)
        assert row["last_use_t"] > row["exp"]

    def test_replay_from_json_matches(self, events: list[Event]) -> None:
        """Replaying events.jsonl lines (aud lists decoded from JSON) gives the same rows."""
        replayed = TokenTable().feed(Event.from_json(ev.to_json()) for ev in events)
        assert replayed.rows() == TokenTable().feed(events).rows()

    def test_memory_does_not_grow_with_uses(self) -> None:
        """Use events only update counters: 200k of them over 1,000 tokens add next to no memory."""
        table = TokenTable()
        mints = [
            (0.0, "issuer", "mint", {"jti": f"t{k}", "aud": ["x"], "iat": 0, "exp": 600})
            for k in range(1000)
        ]
        table.feed(record(mints))
        uses = [{"jti": f"t{k}", "headroom_s": 600.0 - k} for k in range(1000)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(200_000):
                table(Event(n * 0.001, n, "se", "use", uses[n % 1000]))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 200_000
        assert _row(table, "t0")["uses"] == 200
