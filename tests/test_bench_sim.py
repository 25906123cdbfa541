"""The simulator benchmark section (benchmarks/sim.py), scaled down to a smoke test."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
from rich.console import Console

from benchmarks import sim
from benchmarks._report import machine_info
from benchmarks._simrun import RunningPeak
from scitokens_batch.metrics import Event
from scitokens_batch.scenario import load_scenario


def _ev(kind: str, job: str) -> Event:
    return Event(t=0.0, seq=0, actor="qm", kind=kind, fields={"job": job})


def test_running_peak_counts_jobs_on_slots() -> None:
    """The observer's peak is the most jobs between execute and their end, not a running sum."""
    peak = RunningPeak()
    for kind, job in [
        ("execute", "a"),
        ("execute", "b"),
        ("evicted", "a"),
        ("terminated", "zz"),  # never ran: must not lower the count
        ("execute", "a"),
        ("execute", "c"),
        ("terminated", "a"),
        ("held", "b"),
        ("terminated", "c"),
    ]:
        peak(_ev(kind, job))
    assert peak.peak == 3
    assert not peak.running
    assert peak.events == 9


def test_floor_does_exactly_the_sleeps_asked() -> None:
    """sleep_plans shares the sleeps over the tasks; each floor program does all of them."""
    plans = sim.sleep_plans(7, 100)
    assert len(plans) == 7 and sum(map(len, plans)) == 100
    assert max(map(len, plans)) - min(map(len, plans)) <= 1
    stock = sim.trio_floor(plans)
    project = sim.trio_floor(plans, project=True)
    assert (stock.tasks, stock.sleeps) == (project.tasks, project.sleeps) == (7, 100)
    assert "trio.sleep (stock)" in stock.engine and "_vtime" in project.engine
    pytest.importorskip("simpy")
    ref = sim.simpy_reference(plans)
    assert ref is not None and (ref.tasks, ref.sleeps) == (7, 100)


def test_quick_scaling_keeps_each_days_host_ratio() -> None:
    """Scaled down 10×, day-100k keeps its own hosts per job and the overrides load."""
    for name, path in sim.DAYS.items():
        full = load_scenario(path)
        overrides = sim.scaled_overrides(full, 10)
        small = load_scenario(path, overrides=overrides)
        jobs = sum(w.jobs for w in small.workloads)
        hosts = sum(h.count for h in small.execute_hosts)
        full_jobs = sum(w.jobs for w in full.workloads)
        full_hosts = sum(h.count for h in full.execute_hosts)
        assert jobs == full_jobs // 10, name
        assert math.isclose(hosts / jobs, full_hosts / full_jobs), name


def test_section_end_to_end_scaled_down() -> None:
    """Both days run in child processes and every figure, target and rendering is filled in."""
    err = Console(file=io.StringIO())
    r = sim.measure(quick=False, breakdown=False, out=None, err=err, scale=1000)
    assert not r.failures, r.failures
    d10, d100 = r.day10, r.day100
    assert d10 is not None and d100 is not None
    for d in (d10, d100):
        assert 0 < d.accesses <= 100 * d.jobs  # a job still running at the end did fewer
        assert 0 < d.peak_running <= d.doc["slots"]
        assert d.doc["events_observed"] == d.events
        assert d.rss_gib > 0 and d.wall > 0
        if sys.platform == "linux":  # the child's own high-water mark, not the parent's
            assert d.doc["rss_source"] == "VmHWM"
    assert r.floor is not None and r.floor_project is not None
    assert r.floor.tasks == d10.peak_running
    assert r.floor.sleeps == d10.accesses + d10.renewals
    assert [t[0] for t in r.targets()] == [
        "day-10k wall / trio floor",
        "day-100k wall / day-10k wall",
        "day-100k peak RSS (its own process)",
    ]
    assert r.targets()[0][3] == (d10.wall / r.floor.seconds <= sim.FLOOR_FACTOR)
    md = sim.markdown_section(r, machine_info())
    assert md.startswith("<!-- bench:sim:start -->") and md.endswith("<!-- bench:sim:end -->")
    assert ("Where the remaining time goes" in md) == (not all(t[3] for t in r.targets()))
    json.dumps(sim.to_json(r))
    sim.print_result(Console(file=io.StringIO(), width=150), r, machine_info())
