"""Tests for ReportBuilder: bounded per-bucket series, and report.html with its PNG plots."""

from __future__ import annotations

import math
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from scitokens_batch.metrics import Event, SummaryBuilder
from scitokens_batch.metrics._report import (
    JOB_STATES,
    SAMPLES_PER_BUCKET,
    ReportBuilder,
)

from .conftest import SCRIPT, record

PLOTS = (
    "headroom.png",
    "headroom-cdf.png",
    "timeline.png",
    "issuer.png",
    "servers.png",
    "jobs.png",
    "denials.png",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TITLE = "Run <script>alert(1)</script> & co"

#: Duration 1500 s in 300 buckets of 5 s.
DURATION = 1500.0
BUCKETS = 300


def _summary(events: list[Event]) -> dict[str, Any]:
    return SummaryBuilder().feed(events).figures() | {
        "scenario": "hand-written",
        "seed": 7,
        "expectations": [
            {"check": "jobs.failed >= 1", "passed": True, "actual": 1},
            {"check": "data.denied.expired < 1", "passed": False, "actual": 1},
        ],
    }


def _write(events: list[Event], out: Path) -> list[str]:
    out.mkdir(exist_ok=True)
    builder = ReportBuilder(DURATION, buckets=BUCKETS).feed(events)
    return builder.write(out, title=TITLE, summary=_summary(events))


@pytest.fixture(name="report", scope="module")
def _report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report written once from the shared script (drawing takes a fraction of a second)."""
    out = tmp_path_factory.mktemp("report")
    _write(record(SCRIPT), out)
    return out


class TestWrite:
    def test_writes_every_plot(self, report: Path) -> None:
        """Every plot is a PNG file, with nothing else (no temporary files) in the directory."""
        assert sorted(os.listdir(report)) == sorted([*PLOTS, "report.html"])
        for name in PLOTS:
            assert (report / name).read_bytes().startswith(PNG_SIGNATURE)

    def test_html_names_and_captions_each_plot(self, report: Path) -> None:
        """report.html shows each plot by relative file name with a caption."""
        page = (report / "report.html").read_text()
        for name in PLOTS:
            assert f'<img src="{name}" alt="{name}">' in page
        assert page.count("<figcaption>") == len(PLOTS)

    def test_html_escapes_title(self, report: Path) -> None:
        """The title is escaped wherever it appears, and the page has no script or external resource."""
        page = (report / "report.html").read_text()
        assert "<script" not in page
        assert page.count("Run &lt;script&gt;alert(1)&lt;/script&gt; &amp; co") == 2
        assert "http://" not in page and "https://" not in page

    def test_html_headline_figures(self, report: Path) -> None:
        """The summary's sections, every denial reason and the run's values are tables in the page."""
        page = (report / "report.html").read_text()
        for section in ("jobs", "tokens", "data", "headroom", "issuer"):
            assert f"<caption>{section}</caption>" in page
        assert "<tr><th>denied.insufficient_scope</th><td class=n>1</td></tr>" in page
        assert "<tr><th>denied.missing_token</th><td class=n>0</td></tr>" in page
        assert "<tr><th>min_s</th><td class=n>-50.0</td></tr>" in page
        assert "<tr><th>scenario</th><td>hand-written</td></tr>" in page

    def test_html_expectations(self, report: Path) -> None:
        """Each expectation is a row with its check (escaped), its result and the actual figure."""
        page = (report / "report.html").read_text()
        assert "1 of 2 expectations hold." in page
        assert "<td>jobs.failed &gt;= 1</td><td class=pass>holds</td><td class=n>1</td>" in page
        assert "<td>data.denied.expired &lt; 1</td><td class=fail>FAILS</td>" in page

    def test_rerun_is_byte_identical(self, report: Path, tmp_path: Path) -> None:
        """Writing the same events and summary again, twice, gives byte-identical files."""
        events = record(SCRIPT)
        _write(events, tmp_path)
        first = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
        _write(events, tmp_path)
        assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == first
        assert first == {name: (report / name).read_bytes() for name in os.listdir(report)}

    def test_no_denials_no_plot(self, tmp_path: Path) -> None:
        """Without rejected accesses there is no denials.png, and the page says why."""
        written = _write(record([s for s in SCRIPT if s[2] != "reject"]), tmp_path)
        assert [os.path.basename(p) for p in written] == [*PLOTS[:6], "report.html"]
        page = (tmp_path / "report.html").read_text()
        assert "denials.png" not in page
        assert "No data access was rejected in this run, so there is no denials plot." in page

    def test_without_matplotlib(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without matplotlib a warning says so and report.html is written alone, saying why."""
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
        with pytest.warns(RuntimeWarning, match="matplotlib is not installed"):
            written = _write(record(SCRIPT), tmp_path)
        assert os.listdir(tmp_path) == ["report.html"]
        assert written == [str(tmp_path / "report.html")]
        page = (tmp_path / "report.html").read_text()
        assert "matplotlib is not installed" in page
        assert "<img" not in page


class TestSeries:
    def test_agrees_with_summary(self) -> None:
        """Summed over the buckets, the series give the summary's figures."""
        events = record(SCRIPT)
        figures = SummaryBuilder().feed(events).figures()
        series = ReportBuilder(DURATION, buckets=BUCKETS).feed(events).series()
        assert sum(series.expired_at_use) == figures["data"]["expired_at_use"] == 2
        assert sum(series.issuer_requests) == figures["issuer"]["requests"] == 4
        assert sum(series.issuer_errors) == figures["issuer"]["errors"] == 1
        assert sum(series.renewals) == figures["tokens"]["renewed"] == 1
        assert sum(series.refresh_failures) == figures["tokens"]["refresh_failures"] == 1
        assert {r: sum(c) for r, c in series.denied.items()} == {
            r: n for r, n in figures["data"]["denied"].items() if n
        }
        assert (
            min(m for m in series.headroom_min_s if m is not None) == figures["headroom"]["min_s"]
        )
        assert sum(series.headroom_count) == figures["headroom"]["count"]
        assert {s: c[-1] for s, c in series.job_states.items()} == {
            s: figures["jobs"][s] for s in JOB_STATES
        }

    def test_job_states_at_bucket_ends(self) -> None:
        """Each bucket holds the job counts as they are at its end; the rest of the run keeps the last counts."""
        series = ReportBuilder(DURATION, buckets=BUCKETS).feed(record(SCRIPT)).series()
        at = {
            s: (c[0], c[2], c[8], c[9], c[10], c[100], c[280], c[-1])
            for s, c in series.job_states.items()
        }
        # Buckets are 5 s: bucket 0 ends at 5 s, 2 at 15 s, 8 at 45 s (job 3 held at 40 s), 9 at
        # 50 s (released at 45 s), 10 at 55 s (job 1 evicted at 50 s), 100 at 505 s, 280 at 1405 s.
        assert at == {
            "idle": (3, 2, 0, 1, 2, 0, 0, 0),
            "running": (0, 1, 2, 2, 1, 2, 0, 0),
            "held": (0, 0, 1, 0, 0, 1, 1, 1),
            "completed": (0, 0, 0, 0, 0, 0, 1, 1),
            "failed": (0, 0, 0, 0, 0, 0, 1, 1),
        }

    def test_headroom_per_bucket(self) -> None:
        """A bucket's least and median headroom come from its accepted accesses only; empty buckets are None."""
        series = ReportBuilder(DURATION, buckets=BUCKETS).feed(record(SCRIPT)).series()
        assert (series.headroom_min_s[20], series.headroom_p50_s[20]) == (1100.0, 1100.0)
        assert (series.headroom_min_s[250], series.headroom_count[250]) == (-50.0, 1)
        assert series.headroom_min_s[130] is None  # t=650: only the rejected access
        assert series.expired_at_use[130] == 1
        assert series.headroom_p50_s[1] is None

    def test_events_outside_the_run_are_clamped(self) -> None:
        """Events before 0 count in the first bucket, events after the duration in the last."""
        builder = ReportBuilder(10.0, buckets=5)
        builder(Event(-1.0, 0, "issuer", "request", {"status": 200}))
        builder(Event(99.0, 1, "issuer", "request", {"status": 500}))
        series = builder.series()
        assert series.issuer_requests == (1, 0, 0, 0, 1)
        assert series.issuer_errors == (0, 0, 0, 0, 1)

    def test_median_from_bounded_sample(self) -> None:
        """The median of 10,000 values in one bucket comes from at most SAMPLES_PER_BUCKET kept values."""
        builder = ReportBuilder(100.0, buckets=1)
        for n in range(10_000):
            builder(Event(n * 0.01, n, "se", "use", {"headroom_s": float(n)}))
        series = builder.series()
        assert series.headroom_min_s == (0.0,)
        p50 = series.headroom_p50_s[0]
        assert p50 is not None and abs(p50 - 5000) <= 200
        assert series.headroom_count == (10_000,)

    def test_memory_stays_bounded(self) -> None:
        """200k use events keep every series at one value a bucket and the samples bounded, in well under 2 MB."""
        buckets = 400
        builder = ReportBuilder(3600.0, buckets=buckets)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(200_000):
                t = n * 0.018
                builder(Event(t, n, "se", "use", {"jti": "a", "headroom_s": 1200.0 - (t % 1300)}))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 2_000_000
        series = builder.series()
        for name in (
            "headroom_min_s",
            "headroom_p50_s",
            "headroom_count",
            "expired_at_use",
            "issuer_requests",
        ):
            assert len(getattr(series, name)) == buckets
        assert all(len(states) == buckets for states in series.job_states.values())
        assert max(len(s) for s in builder._samples) < SAMPLES_PER_BUCKET
        assert sum(series.headroom_count) == 200_000

    @pytest.mark.parametrize(
        ("duration", "buckets"),
        [(0.0, 10), (-1.0, 10), (math.inf, 10), (math.nan, 10), (10.0, 0), (10.0, True)],
    )
    def test_bad_arguments(self, duration: float, buckets: int) -> None:
        """A duration that is not positive and finite, or fewer than one bucket, is refused."""
        with pytest.raises(ValueError, match="must be"):
            ReportBuilder(duration, buckets=buckets)
