"""The ``sweep`` section: a 16-run study on 1 and on 2 Dask workers, in one benchmark run.

The study is ``scenarios/issuer-outage.toml`` over 8 points (scan interval x vo-long's outage
length) and 2 seeds. For each worker count a fresh ``LocalCluster`` is started (its start-up is
timed apart), the 16 tasks are submitted at once, and the time from the first submission to the
last result is the study's wall time. From it:

* runs per minute, and the speed-up of 2 workers over 1 (target >= 1.7x on 2 cores);
* the per-run dispatch overhead with 1 worker: (wall - sum of the runs' own wall times) / runs,
  i.e. what Dask adds around each run (serialising the task and the summary, scheduling), as a
  share of a 10 s run (target <= 5 %).

The runs are the real ones (scenario text, overrides and seed sent to the worker, the summary
returned), with no outputs written, as in a study.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
from rich.console import Console
from rich.table import Table

from benchmarks._report import machine_line
from scitokens_batch.study import DaskExecutor, load_study
from scitokens_batch.study._design import expand
from scitokens_batch.study._runner import _Plan

NAME: Final = "sweep"
ROOT: Final = Path(__file__).resolve().parents[1]
SPEEDUP_TARGET: Final = 1.7
OVERHEAD_TARGET: Final = 0.05  # of a 10 s run
REFERENCE_RUN_S: Final = 10.0

STUDY: Final = """
[study]
name = "bench-sweep"
scenario = "{scenario}"
seeds = {seeds}
metrics = ["data.expired_at_use", "headroom.min_s"]

[study.grid]
"token_manager.scan_interval" = {intervals}
"faults[1].duration" = ["1m", "5m", "8m", "10m"]
"""


@attrs.frozen
class Round:
    """One worker count's measurement."""

    workers: int
    startup_s: float
    wall_s: float
    runs: int
    run_seconds: float  # the sum of the runs' own wall times
    failed: int

    @property
    def runs_per_minute(self) -> float:
        return 60.0 * self.runs / self.wall_s

    @property
    def overhead_s(self) -> float:
        """Per run: what the executor added around the runs (meaningful with 1 worker)."""
        return max(0.0, (self.wall_s * self.workers - self.run_seconds) / self.runs)


@attrs.frozen
class SweepResult:
    rounds: tuple[Round, ...]

    @property
    def speedup(self) -> float:
        one, two = self.rounds
        return two.runs_per_minute / one.runs_per_minute

    @property
    def overhead_share(self) -> float:
        return self.rounds[0].overhead_s / REFERENCE_RUN_S


def _tasks(tmp: Path, quick: bool) -> list[Any]:
    study_file = tmp / "bench-sweep.toml"
    study_file.write_text(
        STUDY.format(
            scenario=ROOT / "scenarios" / "issuer-outage.toml",
            seeds=1 if quick else 2,
            intervals='["60s"]' if quick else '["30s", "60s"]',
        )
    )
    study = load_study(study_file)
    plan = _Plan(study=study, out=tmp, keep_runs=False)
    return [t for point in expand(study) for t in plan.task(point)]


def measure(*, quick: bool, err: Console) -> SweepResult:
    """Run the study on 1 worker, then on 2."""
    import tempfile

    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = _tasks(Path(tmp), quick)
        for workers in (1, 2):
            t0 = time.perf_counter()
            with DaskExecutor(workers=workers) as executor:
                startup = time.perf_counter() - t0
                results: list[dict[str, Any]] = []
                t1 = time.perf_counter()
                executor.run(tasks, results.append)
                wall = time.perf_counter() - t1
            rounds.append(
                Round(
                    workers=workers,
                    startup_s=startup,
                    wall_s=wall,
                    runs=len(results),
                    run_seconds=sum(r["wall_seconds"] or 0.0 for r in results),
                    failed=sum(r["status"] != "ok" for r in results),
                )
            )
            err.print(
                f"[dim]  sweep: {workers} worker(s): {len(results)} runs in {wall:.1f} s "
                f"(cluster start {startup:.1f} s)[/dim]"
            )
    return SweepResult(rounds=tuple(rounds))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _rows(r: SweepResult) -> list[tuple[str, ...]]:
    rows = []
    for rd in r.rounds:
        rows.append(
            (
                f"{rd.workers} worker{'s' if rd.workers > 1 else ''}",
                f"{rd.runs}",
                f"{rd.wall_s:.1f}",
                f"{rd.runs_per_minute:.1f}",
                f"{rd.run_seconds / rd.runs:.2f}",
                f"{rd.startup_s:.1f}",
                f"{rd.failed}",
            )
        )
    return rows


_HEADERS: Final = (
    "executor",
    "runs",
    "wall s",
    "runs/min",
    "s per run (in worker)",
    "cluster start s",
    "failed",
)


def _targets(r: SweepResult) -> list[tuple[str, str, str]]:
    return [
        (
            f"speed-up 2 workers / 1 >= {SPEEDUP_TARGET}x",
            f"{r.speedup:.2f}x",
            _verdict(r.speedup >= SPEEDUP_TARGET),
        ),
        (
            f"dispatch overhead per run <= {OVERHEAD_TARGET:.0%} of a {REFERENCE_RUN_S:.0f} s run",
            f"{r.rounds[0].overhead_s * 1000:.0f} ms = {r.overhead_share:.1%}",
            _verdict(r.overhead_share <= OVERHEAD_TARGET),
        ),
    ]


def print_result(console: Console, r: SweepResult, info: Mapping[str, str]) -> None:
    table = Table(title="sweep: a 16-run study (issuer-outage.toml, 8 points x 2 seeds) on Dask")
    for h in _HEADERS:
        table.add_column(h, justify="right")
    for row in _rows(r):
        table.add_row(*row)
    console.print(table)
    targets = Table(title="sweep targets")
    for h in ("target", "measured", "verdict"):
        targets.add_column(h)
    for row in _targets(r):
        targets.add_row(*row)
    console.print(targets)


def markdown_section(r: SweepResult, info: Mapping[str, str]) -> str:
    lines = [
        f"<!-- bench:{NAME}:start -->",
        "## Studies: a 16-run sweep on 1 and 2 Dask workers",
        "",
        "_Generated by `python -m benchmarks --section sweep --markdown docs/performance.md` "
        "(`make bench` runs it too); the text between the `bench:sweep` markers is replaced on "
        "every run._",
        "",
        f"**Machine:** {machine_line(info)}",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "---:|" * len(_HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(r)]
    lines += ["", "| target | measured | verdict |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _targets(r)]
    lines += [
        "",
        "Each worker is one process with one thread (a run is one CPU-bound trio loop); the "
        "overhead is the 1-worker wall time minus the runs' own time, per run: what Dask adds "
        "around a run (sending the task with the scenario text, returning the summary, "
        "scheduling).",
        f"<!-- bench:{NAME}:end -->",
    ]
    return "\n".join(lines)


def to_json(r: SweepResult) -> dict[str, Any]:
    return {
        "rounds": [attrs.asdict(rd) | {"runs_per_minute": rd.runs_per_minute} for rd in r.rounds],
        "speedup": r.speedup,
        "overhead_s_per_run": r.rounds[0].overhead_s,
        "overhead_share_of_10s_run": r.overhead_share,
    }
