"""Issue 15, the report: fault windows, attempts on a down issuer, fixed buckets, the headroom
distribution, and a title from the run's own parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitokens_batch.metrics import SummaryBuilder
from scitokens_batch.metrics._report import BUCKET_LADDER, ReportBuilder, fixed_bucket_s
from scitokens_batch.scenario import load_scenario, run_virtual
from scitokens_batch.scenario._run import fault_windows

from .conftest import SCRIPT, record

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = {
    "user": "alice",
    "service": "ligo",
    "error": "issuer unreachable (down)",
    "attempt": 1,
    "retry_in_s": 30.0,
}


def test_attempts_on_a_down_issuer_are_counted() -> None:
    """Refreshes that got no answer count as issuer attempts beside the answered requests."""
    script = [*SCRIPT, (700, "tm", "refresh_failed", UNREACHABLE)]
    events = record(script)
    figures = SummaryBuilder().feed(events).figures()["issuer"]
    assert figures["unreachable"] == 1
    assert figures["attempts"] == figures["requests"] + 1
    series = ReportBuilder(1500.0, buckets=300).feed(events).series()
    assert sum(series.issuer_unreachable) == 1 and series.issuer_unreachable[700 // 5] == 1


@pytest.mark.parametrize(
    ("duration", "width"), [(60, 1.0), (3600, 10.0), (8 * 3600, 60.0), (86400, 300.0)]
)
def test_fixed_round_buckets(duration: float, width: float) -> None:
    """The bucket width is the smallest round width giving at most 500 buckets."""
    assert fixed_bucket_s(duration) == width and width in BUCKET_LADDER
    builder = ReportBuilder(duration, bucket_s=width)
    assert builder.series().bucket_s == width


def test_fault_windows_are_kept_and_drawn(tmp_path: Path) -> None:
    """A real run's report carries the scenario's fault windows, labelled by kind and target."""
    spec = load_scenario(ROOT / "scenarios" / "issuer-outage.toml")
    out = tmp_path / "out"
    result = run_virtual(spec, out=out, overrides=())
    assert result.passed
    names = {p.name for p in out.iterdir()}
    assert {"headroom-cdf.png", "issuer.png", "report.html"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["issuer"]["attempts"] > summary["issuer"]["requests"]
    windows = fault_windows(spec)
    assert windows and all(end >= start for start, end, _ in windows)
    assert any(label.startswith("issuer_outage ") for _, _, label in windows)
    page = (out / "report.html").read_text()
    assert "counts per fixed 30 s bucket" in page


def test_title_comes_from_the_overrides(tmp_path: Path) -> None:
    """With --set the title names the overrides instead of the scenario's own prose."""
    spec = load_scenario(ROOT / "scenarios" / "reference.toml", overrides=["workloads[0].jobs=3"])
    out = tmp_path / "out"
    run_virtual(spec, out=out, overrides=["workloads[0].jobs=3"])
    page = (out / "report.html").read_text()
    title = page.split("<h1>")[1].split("</h1>")[0]
    assert title == f"reference (seed {spec.meta.seed}; --set workloads[0].jobs=3)"


def test_timeline_samples_jobs_spread_over_the_run() -> None:
    """The timeline follows at most TIMELINE_JOBS jobs, ids 1, 1 + k, ... with their marks."""
    from scitokens_batch.metrics._report import TIMELINE_JOBS

    spec = load_scenario(ROOT / "scenarios" / "issuer-outage.toml")
    result = run_virtual(spec, keep_events=True)
    builder = ReportBuilder(spec.meta.duration, jobs_total=40).feed(result.summary["_events"])
    lanes = builder.series().job_lanes
    assert 0 < len(lanes) <= TIMELINE_JOBS
    assert all((lane.job - 1) % (40 // TIMELINE_JOBS) == 0 for lane in lanes)
    assert any(lane.denials for lane in lanes) and all(lane.runs for lane in lanes)
    assert all(end > start for lane in lanes for start, end in lane.tokens)
