"""The simulator section (issue 10): a day of 10,000 and a day of 100,000 jobs against the trio
floor.

What is measured, in this order, in one bench run:

1. ``benchmarks/day-10k.toml`` in a child process of its own (``python -m benchmarks._simrun``,
   so that its peak RSS is its own): ``load_scenario`` + ``run_virtual(spec)`` once, no outputs
   unless ``--sim-out DIR``. Wall = ``perf_counter`` around ``run_virtual`` (world build and
   summary included, scenario parsing not); CPU seconds of the child over the same span; peak
   RSS = ``VmHWM`` of the child (``ru_maxrss`` would carry the parent's RSS over fork and
   exec); events, accesses, tokens minted and renewals from the summary; signature checks and
   memo hits from the summary (``data.signature_checks``, ``data.signature_memo_hits``;
   counted by wrapping ``signature_valid`` in the child where the summary does not have them,
   and said so); the peak number of jobs running at once from an observer counting
   ``execute`` against ``terminated`` / ``evicted`` / ``held`` / ``removed`` events.
2. The **trio floor**, in this process, right after: a bare trio program under
   ``trio.testing.MockClock(autojump_threshold=0)`` with stock ``trio.sleep``, as many tasks
   sleeping at once as day-10k's peak of running jobs, doing one sleep (exponential, mean 1 s)
   per access and per renewal of the day-10k run. The same sleeps are then timed with the
   project's own primitives (``_vtime.virtual_clock()`` + ``_vtime.sleep``) for information,
   and as a SimPy program (same processes, same timeouts) for context. The target uses the
   stock trio floor, as the issue defines it.
3. ``benchmarks/day-100k.toml`` in a child process of its own, as in 1.
4. With ``--breakdown``: day-10k scaled down under cProfile in this process; self times by
   component (stdlib and builtin calls charged to their callers), shared out over day-10k's
   wall per access.

Targets: day-10k wall <= 1.5 × the trio floor; day-100k wall <= 12 × day-10k wall (same run);
day-100k peak RSS <= 4 GiB.

``--quick`` runs both days scaled down 10× (jobs and execute hosts divided, Poisson arrivals
spread so that they still cover the day; each day keeps its own ratio of hosts to jobs); the
floor follows the scaled day-10k. Its figures say so.
"""

from __future__ import annotations

import cProfile
import gc
import json
import math
import os
import pstats
import random
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scitokens_batch import _vtime
from scitokens_batch.errors import LocalInputError
from scitokens_batch.scenario import Scenario, load_scenario, run_virtual

from ._report import CpuCounters, MachineLoad, machine_line

__all__ = [
    "DAYS",
    "NAME",
    "DayRun",
    "SimResult",
    "SleepFloor",
    "markdown_section",
    "measure",
    "print_result",
    "scaled_overrides",
    "simpy_reference",
    "sleep_plans",
    "trio_floor",
]

NAME = "sim"
TITLE = "Simulator: a day of 10,000 and of 100,000 jobs"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DAY_10K = "day-10k"
DAY_100K = "day-100k"
#: The two days, in run order (the floor is timed between them).
DAYS: dict[str, Path] = {DAY_10K: HERE / "day-10k.toml", DAY_100K: HERE / "day-100k.toml"}

#: Targets of issue 10.
FLOOR_FACTOR = 1.5
GROWTH_LIMIT = 12.0
RSS_LIMIT_GIB = 4.0

#: ``--quick`` divides the jobs (and the hosts) by this and spreads arrivals by it.
QUICK_SCALE = 10
#: The ``--breakdown`` profile runs day-10k scaled down by this (1/40 with ``--quick``).
PROFILE_SCALE = 10
PROFILE_SCALE_QUICK = 40
#: Seed of the floor's sleep durations.
FLOOR_SEED = 20261204

Say = Callable[[str], None]
_GIB = 1 << 30


# -- the scenarios and their scaling ------------------------------------------------------------


def scaled_overrides(spec: Scenario, scale: int) -> list[str]:
    """``--set`` overrides running ``spec`` scaled down ``scale`` times.

    Jobs per workload and execute hosts are divided by ``scale`` and the Poisson arrivals
    spread by it, so that the arrivals still cover the day and the pool is as loaded as in the
    full run (the ratio of hosts to jobs is the day's own); ``jobs.submitted`` is expected to be
    the scaled count, less a Poisson tail past the 26 h (2 %, or 3 standard deviations of a
    small count).
    """
    if scale == 1:
        return []
    out: list[str] = []
    total = 0
    for i, w in enumerate(spec.workloads):
        jobs = max(1, w.jobs // scale)
        total += jobs
        mean = getattr(w.arrival, "mean_interval", None)
        out.append(f"workloads[{i}].jobs={jobs}")
        if mean is not None:
            out.append(f'workloads[{i}].arrival.mean_interval="{mean * scale:g}s"')
    for i, h in enumerate(spec.execute_hosts):
        out.append(f"execute_hosts[{i}].count={max(1, h.count // scale)}")
    out.append(
        'expect.checks=["jobs.submitted >= '
        f'{math.floor(min(total * 0.98, total - 3 * math.sqrt(total)))}", '
        '"data.accepted_after_exp == 0", '
        '"data.expired_at_use == 0"]'
    )
    return out


def code_revision() -> str:
    """``git`` HEAD of the checkout, and whether the package has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "scitokens_batch")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes in scitokens_batch/" if dirty else "")


# -- one day in a child process -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayRun:
    """One day as its child process reported it (the JSON line of :mod:`benchmarks._simrun`)."""

    name: str
    scale: int
    doc: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        """The run's summary.json figures."""
        return self.doc["summary"]  # type: ignore[no-any-return]

    @property
    def label(self) -> str:
        """``day-10k``, or ``day-10k (1/10)`` scaled down."""
        return self.name if self.scale == 1 else f"{self.name} (1/{self.scale})"

    @property
    def wall(self) -> float:
        """Seconds of ``run_virtual``."""
        return float(self.doc["wall_s"])

    @property
    def cpu(self) -> float:
        """CPU seconds of the child over the same span."""
        return float(self.doc["cpu_s"])

    @property
    def rss_gib(self) -> float:
        """Peak RSS of the child (interpreter and libraries included)."""
        return int(self.doc["peak_rss_bytes"]) / _GIB

    @property
    def jobs(self) -> int:
        """Jobs submitted."""
        return int(self.summary["jobs"]["submitted"])

    @property
    def accesses(self) -> int:
        """Data accesses."""
        return int(self.summary["data"]["accesses"])

    @property
    def events(self) -> int:
        """Events recorded."""
        return int(self.summary["events"])

    @property
    def minted(self) -> int:
        """Tokens minted."""
        return int(self.summary["tokens"]["minted"])

    @property
    def renewals(self) -> int:
        """Token renewals (refreshes that were not the first)."""
        return int(self.summary["tokens"]["renewed"])

    @property
    def peak_running(self) -> int:
        """Most jobs running at once."""
        return int(self.doc["peak_running"])

    @property
    def checks_passed(self) -> bool:
        """Whether every ``[expect]`` check passed."""
        return all(c["passed"] for c in self.doc["checks"])

    def signature_text(self) -> tuple[str, str]:
        """(signature checks, memo hits) as printed, saying where they come from."""
        source = self.doc["signature_source"]
        checks, hits = self.doc["signature_checks"], self.doc["signature_memo_hits"]
        if source == "summary":
            return f"{checks:,}", f"{hits:,}" if hits is not None else "n/a (not reported)"
        if source == "wrapped":
            return (
                f"{checks:,} (counted by wrapping signature_valid: not in the summary)",
                "n/a (not reported)",
            )
        return "n/a (not reported)", "n/a (not reported)"


class DayFailed(RuntimeError):
    """A day's child process did not report (crashed, killed, bad input)."""


def run_day(
    name: str, path: Path, overrides: Sequence[str], scale: int, out: Path | None, say: Say
) -> DayRun:
    """Run one day in a child process (its progress and errors relayed through ``say``)."""
    cmd = [sys.executable, "-m", "benchmarks._simrun", str(path), "--progress", name]
    for o in overrides:
        cmd += ["--set", o]
    if out is not None:
        cmd += ["--out", str(out / name)]
    env = dict(os.environ)
    # The child imports this checkout's package and benchmarks, as this process does.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        tail: list[str] = []
        for line in child.stderr:  # ends when the child exits: the JSON line fits the pipe
            line = line.rstrip()
            say(escape(line.strip()))
            tail = [*tail[-4:], line]
        stdout = child.stdout.read()
        status = child.wait()
    lines = stdout.strip().splitlines()
    if status != 0 or not lines:
        why = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        raise DayFailed(f"{name}: child {why}" + (f": {tail[-1]}" if tail else ""))
    return DayRun(name=name, scale=scale, doc=json.loads(lines[-1]))


# -- the floors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SleepFloor:
    """A bare program doing the floor's sleeps: ``tasks`` at once, ``sleeps`` in all."""

    engine: str
    tasks: int
    sleeps: int
    seconds: float

    @property
    def us_per_sleep(self) -> float:
        """Wall µs per sleep."""
        return self.seconds / max(1, self.sleeps) * 1e6


def sleep_plans(tasks: int, sleeps: int, seed: int = FLOOR_SEED) -> list[list[float]]:
    """``sleeps`` exponential durations (mean 1 s) shared out as evenly as possible over
    ``tasks`` tasks (the first ``sleeps % tasks`` get one more)."""
    rng = random.Random(seed)
    tasks = max(1, tasks)
    base, extra = divmod(sleeps, tasks)
    expo = rng.expovariate
    return [[expo(1.0) for _ in range(base + (i < extra))] for i in range(tasks)]


def trio_floor(plans: Sequence[Sequence[float]], *, project: bool = False) -> SleepFloor:
    """Time the sleeps of ``plans`` under trio, one task per plan, all started at once.

    ``project=False``: stock ``trio.sleep`` under ``MockClock(autojump_threshold=0)`` (the
    floor of issue 10); ``True``: ``_vtime.sleep`` under ``_vtime.virtual_clock()``.
    """
    sleep = _vtime.sleep if project else trio.sleep
    clock = _vtime.virtual_clock() if project else trio.testing.MockClock(autojump_threshold=0)

    async def sleeper(durations: Sequence[float]) -> None:
        for d in durations:
            await sleep(d)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for durations in plans:
                nursery.start_soon(sleeper, durations)

    gc.collect()
    start = time.perf_counter()
    trio.run(main, clock=clock)
    seconds = time.perf_counter() - start
    return SleepFloor(
        engine=(
            "trio: _vtime.virtual_clock() + _vtime.sleep (the project's)"
            if project
            else "trio: MockClock(autojump_threshold=0) + trio.sleep (stock)"
        ),
        tasks=len(plans),
        sleeps=sum(len(p) for p in plans),
        seconds=seconds,
    )


def simpy_reference(plans: Sequence[Sequence[float]]) -> SleepFloor | None:
    """The same sleeps as SimPy timeouts, one process per plan; None without simpy."""
    try:
        import simpy
    except ImportError:
        return None
    env = simpy.Environment()

    def sleeper(durations: Sequence[float]) -> Any:
        timeout = env.timeout
        for d in durations:
            yield timeout(d)

    for durations in plans:
        env.process(sleeper(durations))
    gc.collect()
    start = time.perf_counter()
    env.run()
    return SleepFloor(
        engine=f"SimPy {_simpy_version()}: Environment + timeout",
        tasks=len(plans),
        sleeps=sum(len(p) for p in plans),
        seconds=time.perf_counter() - start,
    )


def _simpy_version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("simpy")
    except Exception:  # a report line must not crash the report
        return "?"


# -- where the time goes (--breakdown) ----------------------------------------------------------

#: Components, in display order.
COMPONENTS: dict[str, str] = {
    "engine": "trio/engine: run loop, cancel scopes, MockClock, outcome, _vtime",
    "signature": "signature check: raw ES256 verify (cryptography)",
    "verify": "rest of our verify: memo, parse, claims, times, audience, scopes, keys",
    "link": "shared-bandwidth link (_bandwidth.py)",
    "actors": "data server, execute host, in-memory transport, messages",
    "metrics": "recorder + summary observer (metrics/)",
    "others": "queue manager, token manager, issuer (incl. signs), world",
    "bench": "benchmark probes",
    "other": "other (unattributed)",
}

_PATH_RULES: tuple[tuple[str, str], ...] = (
    ("/trio/", "engine"),
    ("/outcome/", "engine"),
    ("/sniffio/", "engine"),
    ("scitokens_batch/_vtime", "engine"),
    ("scitokens_batch/tokens/", "verify"),
    ("scitokens_batch/actors/_bandwidth", "link"),
    ("scitokens_batch/actors/data_server", "actors"),
    ("scitokens_batch/actors/execute_host", "actors"),
    ("scitokens_batch/transport/", "actors"),
    ("scitokens_batch/protocol/", "actors"),
    ("scitokens_batch/metrics/", "metrics"),
    ("scitokens_batch/actors/", "others"),
    ("scitokens_batch/scenario/", "others"),
    ("benchmarks/", "bench"),
)

_Func = tuple[str, int, str]


def _own_component(func: _Func) -> str | None:
    """The component a profiled function belongs to, or None when its time goes to callers."""
    filename, _line, name = func
    if filename == "~":
        if "ECPublicKey" in name and "verify" in name:
            return "signature"
        if "ECPrivateKey" in name and "sign" in name:
            return "others"  # the issuer's signs (few)
        return None
    if filename.startswith("<attrs generated"):
        # "<attrs generated methods scitokens_batch.metrics._events.Event>": by its module
        filename = "/" + filename.rsplit(" ", 1)[-1].rstrip(">").replace(".", "/")
        if filename.startswith(("/trio/", "/outcome/")):
            return "engine"
    for needle, component in _PATH_RULES:
        if needle in filename:
            return component
    return None


def profile_components(stats: Mapping[_Func, Any]) -> dict[str, float]:
    """Self time by component; stdlib and builtin functions are charged to their callers, in
    proportion to the time each caller spent in them."""
    memo: dict[_Func, dict[str, float]] = {}

    def shares(func: _Func, depth: int = 0) -> dict[str, float]:
        own = _own_component(func)
        if own is not None:
            return {own: 1.0}
        if func in memo:
            return memo[func]
        callers = stats[func][4] if func in stats else {}
        total = sum(edge[2] for edge in callers.values())
        if depth > 30 or not callers or total <= 0:
            return {"other": 1.0}
        memo[func] = {"other": 1.0}  # a cycle lands here
        out: dict[str, float] = {}
        for caller, edge in callers.items():
            for comp, w in shares(caller, depth + 1).items():
                out[comp] = out.get(comp, 0.0) + w * edge[2] / total
        memo[func] = out
        return out

    seconds: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
    for func, (_cc, _nc, tt, _ct, _callers) in stats.items():
        for comp, w in shares(func).items():
            seconds[comp] += tt * w
    return seconds


def _calls(stats: Mapping[_Func, Any], file_part: str, name: str) -> int:
    return sum(v[1] for k, v in stats.items() if file_part in k[0] and k[2] == name)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Where the time goes: day-10k scaled down, profiled."""

    scale: int
    accesses: int
    profiled_wall: float
    profiled_seconds: dict[str, float]
    wakeups_per_access: float
    cancel_scopes_per_access: float
    run_loop_passes_per_access: float


def profile_breakdown(scale: int, say: Say) -> Breakdown:
    """Run day-10k scaled down ``scale`` times under cProfile, in this process."""
    full = load_scenario(DAYS[DAY_10K])
    spec = load_scenario(DAYS[DAY_10K], overrides=scaled_overrides(full, scale))
    say(f"profiling {DAY_10K} scaled down 1/{scale} under cProfile")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        result = run_virtual(spec)
    finally:
        profiler.disable()
    wall = time.perf_counter() - start
    stats: Mapping[_Func, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    accesses = int(result.summary["data"]["accesses"]) or 1
    return Breakdown(
        scale=scale,
        accesses=accesses,
        profiled_wall=wall,
        profiled_seconds=profile_components(stats),
        wakeups_per_access=_calls(stats, "trio/_core/_run.py", "reschedule") / accesses,
        cancel_scopes_per_access=_calls(stats, "trio/_core/_run.py", "__enter__") / accesses,
        run_loop_passes_per_access=_calls(stats, "trio/_core/_io_", "get_events") / accesses,
    )


# -- the section ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimResult:
    """Everything the simulator section measured."""

    quick: bool
    scale: int
    revision: str
    out: Path | None
    days: dict[str, DayRun]
    overrides: dict[str, tuple[str, ...]]
    failures: dict[str, str]
    floor: SleepFloor | None
    floor_project: SleepFloor | None
    simpy: SleepFloor | None
    floor_load: MachineLoad | None
    breakdown: Breakdown | None
    notes: list[str] = field(default_factory=list)

    @property
    def day10(self) -> DayRun | None:
        """The day-10k run, if it reported."""
        return self.days.get(DAY_10K)

    @property
    def day100(self) -> DayRun | None:
        """The day-100k run, if it reported."""
        return self.days.get(DAY_100K)

    @property
    def floor_ratio(self) -> float | None:
        """day-10k wall / stock trio floor."""
        if self.day10 is None or self.floor is None or self.floor.seconds <= 0:
            return None
        return self.day10.wall / self.floor.seconds

    @property
    def growth(self) -> float | None:
        """day-100k wall / day-10k wall."""
        if self.day10 is None or self.day100 is None:
            return None
        return self.day100.wall / self.day10.wall

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(figure, value, target, passed); a figure that could not be measured misses."""
        ratio, growth, d100 = self.floor_ratio, self.growth, self.day100
        return [
            (
                f"{DAY_10K} wall / trio floor",
                f"{ratio:.2f}×" if ratio is not None else "n/a (not measured)",
                f"<= {FLOOR_FACTOR:g}×",
                ratio is not None and ratio <= FLOOR_FACTOR,
            ),
            (
                f"{DAY_100K} wall / {DAY_10K} wall",
                f"{growth:.2f}×" if growth is not None else "n/a (not measured)",
                f"<= {GROWTH_LIMIT:g}×",
                growth is not None and growth <= GROWTH_LIMIT,
            ),
            (
                f"{DAY_100K} peak RSS (its own process)",
                f"{d100.rss_gib:.2f} GiB" if d100 is not None else "n/a (not measured)",
                f"<= {RSS_LIMIT_GIB:g} GiB",
                d100 is not None and d100.rss_gib <= RSS_LIMIT_GIB,
            ),
        ]

    @property
    def problems(self) -> list[str]:
        """Things that make the figures suspect."""
        out = [f"{name} did not report: {why}" for name, why in self.failures.items()]
        for d in self.days.values():
            if d.doc["events_observed"] != d.events:
                out.append(
                    f"{d.label}: the observer saw {d.doc['events_observed']:,} events, "
                    f"the summary {d.events:,}"
                )
            if d.summary["data"]["cache_hits"]:
                out.append(f"{d.label}: the accepted-token cache answered accesses")
            out += [
                f"{d.label}: expectation failed: {c['check']} (actual {c['actual']})"
                for c in d.doc["checks"]
                if not c["passed"]
            ]
        return out

    def day_rows(self) -> list[tuple[str, list[str], str]]:
        """(figure, [value per day], how) for the figures table."""
        days = [self.days.get(n) for n in DAYS]

        def each(fn: Callable[[DayRun], str]) -> list[str]:
            return [fn(d) if d is not None else "n/a" for d in days]

        def per_s(n: int, d: DayRun) -> str:
            return f"{n / d.wall:,.0f}"

        return [
            (
                "scenario",
                each(
                    lambda d: (
                        f"{d.jobs:,} jobs, {d.doc['slots']:,} slots, "
                        f"{float(d.summary['duration_s']) / 3600:g} h virtual"
                    )
                ),
                (f"scaled down 1/{self.scale}" + " (--quick)" * self.quick)
                if self.scale > 1
                else "the TOML as is",
            ),
            ("wall time", each(lambda d: f"{d.wall:,.1f} s"), "perf_counter around run_virtual"),
            (
                "CPU time",
                each(lambda d: f"{d.cpu:,.1f} s ({d.cpu / d.wall:.0%})"),
                "the child's, same span (share of wall)",
            ),
            (
                "peak RSS",
                each(lambda d: f"{d.rss_gib:.2f} GiB"),
                "VmHWM of the day's own process",
            ),
            ("accesses", each(lambda d: f"{d.accesses:,}"), "data.accesses"),
            ("events", each(lambda d: f"{d.events:,}"), "summary events"),
            ("accesses / s", each(lambda d: per_s(d.accesses, d)), "of wall"),
            ("events / s", each(lambda d: per_s(d.events, d)), "of wall"),
            (
                "wall per access",
                each(lambda d: f"{d.wall / max(1, d.accesses) * 1e6:.1f} µs"),
                "everything included",
            ),
            (
                "signature checks",
                each(lambda d: d.signature_text()[0]),
                "data.signature_checks: signatures computed",
            ),
            (
                "signature memo hits",
                each(lambda d: d.signature_text()[1]),
                "data.signature_memo_hits",
            ),
            ("tokens minted", each(lambda d: f"{d.minted:,}"), "tokens.minted"),
            ("renewals", each(lambda d: f"{d.renewals:,}"), "tokens.renewed"),
            (
                "peak running jobs",
                each(lambda d: f"{d.peak_running:,}"),
                "observer: execute vs terminated/evicted/held/removed",
            ),
            (
                "expect checks",
                each(
                    lambda d: (
                        f"{'all passed' if d.checks_passed else 'FAILED'} "
                        f"({d.summary['jobs']['completed']:,} completed, "
                        f"{d.summary['jobs']['failed']:,} failed)"
                    )
                ),
                "the scenario's own checks",
            ),
            (
                "machine busy / steal",
                each(
                    lambda d: (
                        f"{d.doc['machine_busy']:.0%} / {d.doc['machine_steal']:.1%}"
                        if d.doc["machine_busy"] is not None
                        else "n/a"
                    )
                ),
                f"all {os.cpu_count()} CPUs during the run (this day alone ≈ "
                f"{1 / (os.cpu_count() or 1):.0%})",
            ),
        ]

    def floor_rows(self) -> list[tuple[str, str, str, str, str]]:
        """(program, tasks, sleeps, seconds, µs per sleep / day-10k wall ratio)."""
        rows = []
        d10 = self.day10
        for f, role in (
            (self.floor, "the target's floor"),
            (self.floor_project, "information"),
            (self.simpy, "context"),
        ):
            if f is None:
                continue
            ratio = f"{d10.wall / f.seconds:.2f}×" if d10 is not None and f.seconds else "n/a"
            rows.append(
                (
                    f"{f.engine} ({role})",
                    f"{f.tasks:,}",
                    f"{f.sleeps:,}",
                    f"{f.seconds:,.1f} s ({f.us_per_sleep:.1f} µs/sleep)",
                    ratio,
                )
            )
        return rows

    def split(self) -> list[tuple[str, float, float]]:
        """(component, µs per access of day-10k, profiled µs per access): the profile's
        shares applied to day-10k's wall per access."""
        b, d10 = self.breakdown, self.day10
        if b is None or d10 is None:
            return []
        wall_us = d10.wall / max(1, d10.accesses) * 1e6
        prof = {k: v / b.accesses * 1e6 for k, v in b.profiled_seconds.items()}
        total = sum(prof.values()) or 1.0
        return [(k, wall_us * v / total, v) for k, v in prof.items() if v >= 0.05]


def measure(
    *,
    quick: bool,
    breakdown: bool,
    out: Path | None,
    err: Console,
    scale: int | None = None,
) -> SimResult:
    """Run the section (see the module docstring); ``scale`` overrides the --quick scale."""

    def say(msg: str) -> None:
        err.print(f"[dim]  {NAME}: {msg}[/dim]", highlight=False)

    scale = scale if scale is not None else (QUICK_SCALE if quick else 1)
    revision = code_revision()  # before the runs: the code they import
    days: dict[str, DayRun] = {}
    failures: dict[str, str] = {}
    overrides: dict[str, tuple[str, ...]] = {}
    floor = floor_project = simpy = None
    floor_load = None
    notes: list[str] = []
    for name, path in DAYS.items():
        try:
            overrides[name] = tuple(scaled_overrides(load_scenario(path), scale))
        except LocalInputError as exc:  # a report: the other day still runs
            failures[name] = str(exc)
            say(f"[bold red]{escape(str(exc))}[/bold red]")
            continue
        say(
            f"running {path.name}"
            + (f" scaled down 1/{scale}" if scale > 1 else "")
            + " in a child process"
        )
        try:
            days[name] = run_day(name, path, overrides[name], scale, out, say)
        except DayFailed as exc:
            failures[name] = str(exc)
            say(f"[bold red]{escape(str(exc))}[/bold red]")
            continue
        say(f"{name}: {days[name].wall:.1f} s wall")
        if name != DAY_10K:
            continue
        d10 = days[name]
        tasks, sleeps = max(1, d10.peak_running), d10.accesses + d10.renewals
        say(f"floor: {tasks:,} tasks, {sleeps:,} sleeps (accesses + renewals of {d10.label})")
        plans = sleep_plans(tasks, sleeps)
        counters = CpuCounters.read()
        floor = trio_floor(plans)
        floor_load = MachineLoad.between(counters, CpuCounters.read())
        say(f"trio floor (stock): {floor.seconds:.1f} s; the same with the project's sleeps")
        floor_project = trio_floor(plans, project=True)
        say(f"project's sleeps: {floor_project.seconds:.1f} s; SimPy reference")
        simpy = simpy_reference(plans)
        if simpy is None:
            notes.append(
                "SimPy reference not measured: simpy is not installed (pip install -e '.[bench]')."
            )
        del plans
    bd = None
    if breakdown:
        bd = profile_breakdown(PROFILE_SCALE_QUICK if quick else PROFILE_SCALE, say)
    return SimResult(
        quick=quick,
        scale=scale,
        revision=revision,
        out=out,
        days=days,
        overrides=overrides,
        failures=failures,
        floor=floor,
        floor_project=floor_project,
        simpy=simpy,
        floor_load=floor_load,
        breakdown=bd,
        notes=notes,
    )


# -- rendering ------------------------------------------------------------------------------------


def method_text(r: SimResult) -> str:
    """The method paragraph (markdown)."""
    f = r.floor
    shape = (
        f"{f.tasks:,} tasks sleeping at once (day-10k's peak of running jobs), "
        f"{f.sleeps:,} sleeps in all (day-10k's accesses + renewals)"
        if f is not None
        else "day-10k's peak of running jobs as tasks, its accesses + renewals as sleeps"
    )
    text = (
        "Each day runs in a child process of its own (`python -m benchmarks._simrun FILE`): "
        "`load_scenario` + `run_virtual(spec)` once, no outputs; wall = `perf_counter` around "
        "`run_virtual`, CPU = the child's process time over the same span, peak RSS = "
        "`VmHWM` of the child's `/proc/self/status` (interpreter and libraries included; not "
        "`ru_maxrss`, which Linux carries over fork and exec from the parent). Signature "
        "checks and memo hits come from summary.json (`data.signature_checks`, "
        "`data.signature_memo_hits`); the peak of running jobs from an observer counting "
        "`execute` against `terminated`/`evicted`/`held`/`removed` events. The **trio floor** "
        "is timed in the parent right after day-10k: a bare trio program under "
        "`trio.testing.MockClock(autojump_threshold=0)` with stock `trio.sleep`, "
        f"{shape}, exponential durations (mean 1 s). The target uses this stock floor; the "
        "same sleeps with the project's own primitives (`_vtime.virtual_clock()` + "
        "`_vtime.sleep`) and as SimPy timeouts (same processes, same timeouts) are shown for "
        f"information and context. Code: `{r.revision}`."
    )
    if r.out is not None:
        text += (
            f" Outputs were written to `{r.out}/DAY` (`--sim-out`): the walls include writing "
            "events.jsonl and the rest."
        )
    load = r.floor_load
    if load is not None:
        text += (
            f" During the stock floor all CPUs were {load.busy:.0%} busy, steal {load.steal:.1%}."
        )
    if any(d.doc["signature_source"] == "wrapped" for d in r.days.values()):
        text += (
            " This checkout's summary.json has no `data.signature_checks`: the signature "
            "checks were counted by wrapping `tokens._verifier.signature_valid` in the child."
        )
    return text


def remaining_text(r: SimResult) -> list[str]:
    """Where the remaining time goes, from the figures, for each target missed."""
    out: list[str] = []
    t = r.targets()
    d10, d100, f = r.day10, r.day100, r.floor
    if not t[0][3] and d10 is not None and f is not None:
        acc = max(1, d10.accesses)
        wall_us = d10.wall / acc * 1e6
        floor_us = f.seconds / acc * 1e6
        rest = wall_us - floor_us
        budget = FLOOR_FACTOR * floor_us
        need = wall_us - budget
        text = (
            f"**{d10.label} against the floor:** per access, {wall_us:.1f} µs of wall; the "
            f"floor's {f.sleeps / acc:.3f} stock `trio.sleep` per access cost {floor_us:.1f} µs "
            f"({f.us_per_sleep:.1f} µs each); the rest, {rest:.1f} µs ({rest / wall_us:.0%} of "
            f"the wall), is the simulator's own work around its sleeps. The target allows "
            f"{budget:.1f} µs per access: {need:.1f} µs to cut, {need / rest:.0%} of that rest."
            if rest > 0
            else f"**{d10.label}:** below its floor per access ({wall_us:.1f} µs against "
            f"{floor_us:.1f} µs)."
        )
        if r.floor_project is not None:
            p_us = r.floor_project.seconds / acc * 1e6
            text += (
                f" The project's own sleeps cost {p_us:.1f} µs per access for the same sleeps "
                f"({abs(floor_us - p_us):.1f} µs {'less' if p_us <= floor_us else 'more'} "
                "than stock trio)"
                + (f", SimPy {r.simpy.seconds / acc * 1e6:.1f} µs" if r.simpy else "")
                + "."
            )
        split = {k: us for k, us, _p in r.split()}
        if split:
            top = sorted(((us, k) for k, us in split.items() if k != "engine"), reverse=True)[:3]
            engine = split.get("engine", 0.0)
            b = r.breakdown
            if b is not None:
                text += (
                    f" The simulator makes {b.wakeups_per_access:.2f} task wake-ups and "
                    f"{b.run_loop_passes_per_access:.2f} run-loop passes per access (profile) "
                    f"where the floor makes {f.sleeps / acc:.3f} sleeps."
                )
            text += (
                f" The profile (1/{b.scale if b else '?'} day) puts "
                f"{engine:.1f} µs per access in trio and the sleep primitives and "
                + ", ".join(f"{us:.1f} µs in {COMPONENTS[k]}" for us, k in top)
                + "."
            )
            if engine > budget:
                text += (
                    f" The engine alone exceeds the budget ({engine:.1f} > {budget:.1f} µs): "
                    "only fewer wake-ups per access"
                    + (f" ({b.wakeups_per_access:.2f} now)" if b is not None else "")
                    + " or a scheduler cheaper per wake-up than trio's closes it."
                )
            else:
                text += (
                    f" The engine fits in the budget ({engine:.1f} <= {budget:.1f} µs): the "
                    f"{need:.1f} µs to cut are in the Python around each access, first in "
                    f"{COMPONENTS[top[0][1]] if top else 'the actors'}."
                )
        else:
            text += " Run with `--breakdown` for the split by component."
        out.append(text)
    if not t[1][3] and d10 is not None and d100 is not None:
        a10 = d10.wall / max(1, d10.accesses) * 1e6
        a100 = d100.wall / max(1, d100.accesses) * 1e6
        out.append(
            f"**{d100.label} against {d10.label}:** {d100.wall / d10.wall:.2f}× the wall for "
            f"{d100.accesses / max(1, d10.accesses):.2f}× the accesses and "
            f"{d100.events / max(1, d10.events):.2f}× the events: {a100:.1f} µs per access "
            f"against {a10:.1f} µs ({a100 / a10:.2f}×, {a100 - a10:+.1f} µs), with "
            f"{d100.peak_running:,} jobs running at once against {d10.peak_running:,}. Linear "
            f"growth would be {GROWTH_LIMIT:g}× at most; the per-access excess is work that grows "
            "with the size of the pool (queues, heaps, sets scanned per step), "
            f"{(a100 - a10) * d100.accesses / 1e6:.0f} s of this run."
        )
    if not t[2][3] and d100 is not None:
        out.append(
            f"**{d100.label} memory:** {d100.rss_gib:.2f} GiB peak, "
            f"{d100.rss_gib * _GIB / max(1, d100.jobs) / 1024:.1f} KiB per job and "
            f"{d100.rss_gib * _GIB / max(1, d100.accesses):.0f} B per access "
            f"({d10.rss_gib if d10 else float('nan'):.2f} GiB for {d10.label if d10 else DAY_10K})."
        )
    return out


def _breakdown_text(r: SimResult) -> list[str]:
    b, d10 = r.breakdown, r.day10
    if b is None or d10 is None:
        return []
    sleep_us = r.floor.us_per_sleep if r.floor else None
    return [
        f"- trio does {b.wakeups_per_access:.2f} task wake-ups, enters "
        f"{b.cancel_scopes_per_access:.2f} cancel scopes and makes "
        f"{b.run_loop_passes_per_access:.2f} run-loop passes per access (profile)"
        + (
            f"; one stock `trio.sleep` of the floor costs {sleep_us:.1f} µs here."
            if sleep_us is not None
            else "."
        ),
        f"- Profile: {DAY_10K} scaled down 1/{b.scale} ({b.accesses:,} accesses) ran "
        f"{b.profiled_wall:.0f} s under cProfile; stdlib and builtin calls are charged to their "
        f"callers; each component's share is applied to {d10.label}'s wall per access "
        "(cProfile inflates Python-heavy code, so read them as ±20 %).",
    ]


def _verdict(ok: bool, md: bool) -> str:
    if md:
        return "**PASS**" if ok else "**MISS**"
    return "[bold green]PASS[/]" if ok else "[bold red]MISS[/]"


def print_result(console: Console, r: SimResult, info: Mapping[str, str]) -> None:
    """The rich tables of the section."""
    names = [d.label if (d := r.days.get(n)) else n for n in DAYS]
    table = Table(
        title=f"{TITLE} — one run each", caption=machine_line(info), caption_justify="left"
    )
    table.add_column("figure")
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("how", style="dim")
    for figure, values, how in r.day_rows():
        table.add_row(figure, *values, how)
    console.print(table)

    floors = Table(title=f"{TITLE} — floor and reference (same sleeps)")
    for col in ("program", "tasks", "sleeps", "wall", f"{DAY_10K} wall / it"):
        floors.add_column(col, justify="left" if col == "program" else "right")
    for row in r.floor_rows():
        floors.add_row(*row)
    console.print(floors)

    targets = Table(title=f"{TITLE} — targets")
    targets.add_column("figure")
    targets.add_column("value", justify="right")
    targets.add_column("target", justify="right")
    targets.add_column("result", justify="center")
    for figure, value, target, ok in r.targets():
        targets.add_row(figure, value, target, _verdict(ok, md=False))
    console.print(targets)

    if r.breakdown is not None:
        split = Table(title=f"{TITLE} — where the time goes ({DAY_10K}, µs per access)")
        split.add_column("component")
        split.add_column("µs/access", justify="right")
        split.add_column("share", justify="right")
        split.add_column("profiled µs/access", justify="right", style="dim")
        total = sum(us for _k, us, _p in r.split()) or 1.0
        for key, us, prof in r.split():
            split.add_row(COMPONENTS[key], f"{us:.1f}", f"{us / total:.0%}", f"{prof:.1f}")
        console.print(split)
        for line in _breakdown_text(r):
            console.print(line.replace("`", ""))
    for line in remaining_text(r):
        console.print(line.replace("**", "").replace("`", ""))
    for line in r.notes:
        console.print(f"[yellow]{line}[/yellow]")
    for p in r.problems:
        console.print(f"[bold red]PROBLEM:[/bold red] {p}")
    missed = [t for t in r.targets() if not t[3]]
    if missed:
        console.print(
            f"[bold red]MISS: {len(missed)} target(s) not met:[/bold red] "
            + "; ".join(f"{t[0]} = {t[1]}" for t in missed)
        )
    else:
        console.print("[bold green]All targets met.[/bold green]")


def markdown_section(r: SimResult, info: Mapping[str, str]) -> str:
    """The markdown block of the section, markers included."""
    names = [d.label if (d := r.days.get(n)) else n for n in DAYS]
    lines = [
        f"<!-- bench:{NAME}:start -->",
        f"## {TITLE} ({', '.join(f'{p.name}' for p in DAYS.values())})",
        "",
        "_Generated by `python -m benchmarks --section sim --markdown docs/performance.md` "
        "(`make bench` runs it too; `--breakdown` adds the profile); the text between the "
        f"`bench:{NAME}` markers is replaced on every run._",
        "",
        f"**Machine:** {machine_line(info)}",
        "",
        f"**Method:** {method_text(r)}",
        "",
    ]
    if r.scale > 1:
        lines.append(
            f"**Scaled down 1/{r.scale}**{' (`--quick`)' * r.quick}: both days, `--set` overrides:"
        )
        lines += [f"- {n}: `{'`, `'.join(o)}`" for n, o in r.overrides.items()]
        lines.append("")
    lines += [
        f"| figure | {' | '.join(names)} | how |",
        f"|---|{'---:|' * len(names)}---|",
    ]
    lines += [f"| {f} | {' | '.join(v)} | {h} |" for f, v, h in r.day_rows()]
    lines += [
        "",
        f"| program (same sleeps) | tasks | sleeps | wall | {DAY_10K} wall / it |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in r.floor_rows()]
    if r.notes:
        lines += ["", *r.notes]
    lines += ["", "| target | value | limit | result |", "|---|---:|---:|:---:|"]
    for figure, value, target, ok in r.targets():
        lines.append(f"| {figure} | {value} | {target} | {_verdict(ok, md=True)} |")
    remaining = remaining_text(r)
    if remaining:
        lines += ["", "### Where the remaining time goes", ""]
        for para in remaining:
            lines += [para, ""]
        lines.pop()
    if r.breakdown is not None:
        total = sum(us for _k, us, _p in r.split()) or 1.0
        lines += [
            "",
            f"### Where the time goes ({DAY_10K}, profile)",
            "",
            "| component | µs per access | share | profiled µs per access |",
            "|---|---:|---:|---:|",
        ]
        for key, us, prof in r.split():
            lines.append(f"| {COMPONENTS[key]} | {us:.1f} | {us / total:.0%} | {prof:.1f} |")
        lines += ["", *_breakdown_text(r)]
    if r.problems:
        lines += ["", *(f"- **Problem:** {p}" for p in r.problems)]
    lines += ["", f"<!-- bench:{NAME}:end -->"]
    return "\n".join(lines)


def _floor_json(f: SleepFloor | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "engine": f.engine,
        "tasks": f.tasks,
        "sleeps": f.sleeps,
        "seconds": f.seconds,
        "us_per_sleep": f.us_per_sleep,
    }


def to_json(r: SimResult) -> dict[str, Any]:
    """Every figure of the section, JSON-able."""
    doc: dict[str, Any] = {
        "title": TITLE,
        "scale": r.scale,
        "revision": r.revision,
        "days": {
            name: {
                **{k: v for k, v in d.doc.items() if k != "summary"},
                "label": d.label,
                "accesses_per_s": d.accesses / d.wall,
                "events_per_s": d.events / d.wall,
                "rss_peak_gib": d.rss_gib,
                "summary": d.summary,
            }
            for name, d in r.days.items()
        },
        "overrides": {k: list(v) for k, v in r.overrides.items()},
        "failures": r.failures,
        "floor": _floor_json(r.floor),
        "floor_project": _floor_json(r.floor_project),
        "simpy": _floor_json(r.simpy),
        "floor_machine_busy": r.floor_load.busy if r.floor_load else None,
        "floor_ratio": r.floor_ratio,
        "growth": r.growth,
        "targets": {t[0]: {"value": t[1], "target": t[2], "passed": t[3]} for t in r.targets()},
        "remaining": remaining_text(r),
        "notes": r.notes,
        "problems": r.problems,
    }
    if r.breakdown is not None:
        b = r.breakdown
        doc["breakdown"] = {
            "scale": b.scale,
            "accesses": b.accesses,
            "profiled_wall_s": b.profiled_wall,
            "profiled_s": b.profiled_seconds,
            "us_per_access": {k: us for k, us, _p in r.split()},
            "wakeups_per_access": b.wakeups_per_access,
            "cancel_scopes_per_access": b.cancel_scopes_per_access,
            "run_loop_passes_per_access": b.run_loop_passes_per_access,
        }
    return doc
