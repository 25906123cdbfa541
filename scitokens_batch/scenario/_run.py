"""Run a scenario in virtual time and write its outputs.

The scenario epoch is mapped onto trio's :class:`~trio.testing.MockClock` (autojump: the clock
jumps to the next deadline whenever every task is blocked), trio's scheduler is seeded, and each
actor has its own seeded RNG, the issuers' keys derive from the seed and ES256 signatures are
deterministic (RFC 6979): the same scenario, seed and version give byte-identical events.jsonl,
summary.json, CSVs and jobs.log. Wall-clock facts (the run's duration) go to run.json only.

Outputs go to ``--out`` through temporary names and appear only when the run completed: a failed
run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio
import trio.testing

from .. import _files
from .._version import __version__
from .._vtime import virtual_clock
from ..errors import LocalInputError, ScenarioError
from ..metrics import (
    EVENT_OUTPUTS,
    PLOT_FILES,
    ErrorsOnlySink,
    Event,
    JobEventLogWriter,
    JobTable,
    JsonlSink,
    ListSink,
    Recorder,
    ReportBuilder,
    SummaryBuilder,
    TokenTable,
    events_file_sink,
    fixed_bucket_s,
)
from ._determinism import seeded_trio_scheduler
from ._estimate import miniature
from ._expect import CheckResult, evaluate
from ._faults import begin_fault, run_fault
from ._spec import DataBackend, ExecStep, Scenario
from ._world import World, structured_logger

__all__ = [
    "RunResult",
    "check_scenario",
    "drive",
    "result_from_events",
    "run_virtual",
    "with_seed",
]


@attrs.frozen
class RunResult:
    """What a run produced.

    Attributes:
        summary: the summary.json document.
        checks: each expectation's result.
        out: the output directory, or None.
        run: wall-clock facts of this execution (``wall_seconds``), written to run.json: they
            differ between two identical runs, so summary.json does not hold them.
    """

    summary: dict[str, Any]
    checks: tuple[CheckResult, ...]
    out: Path | None
    run: dict[str, Any] = attrs.field(factory=dict)

    @property
    def passed(self) -> bool:
        """Every expectation held."""
        return all(c.passed for c in self.checks)


@attrs.define
class _CountingSink:
    """Keeps nothing (no --out): the summary is built by the observer."""

    n: int = 0

    def write(self, event: Event) -> None:
        self.n += 1

    def close(self) -> None:
        pass


def with_seed(spec: Scenario, seed: int) -> Scenario:
    """``spec`` with ``scenario.seed`` set to ``seed`` (the same object when it already is)."""
    if spec.meta.seed == seed:
        return spec
    return attrs.evolve(spec, meta=attrs.evolve(spec.meta, seed=seed))


def check_scenario(spec: Scenario, *, source: str | None = None) -> None:
    """Validate what only wiring can tell (dangling ``{random_file}``, I15 conflicts, scopes no
    user may have) by building the world once; raises :class:`ScenarioError`.

    The world is built from :func:`miniature` (every count cut to one), so that checking costs
    O(size of the file), not O(simulated pool)."""
    rec = Recorder(clock=lambda: 0.0, sink=_CountingSink())
    World.build(
        miniature(spec),
        seed=spec.meta.seed,
        recorder=rec,
        true_now=lambda: spec.meta.epoch,
        log=structured_logger("error", lambda: 0.0),
        source=source or f"scenario {spec.meta.name!r}",
    )


def run_virtual(
    spec: Scenario,
    *,
    seed: int | None = None,
    out: Path | None = None,
    log_level: str = "warning",
    observers: Sequence[Callable[[Event], None]] = (),
    progress: Callable[[float, float], None] | None = None,
    keep_events: bool = False,
    source: str | None = None,
    overrides: Sequence[str] = (),
    plots: bool = True,
    events: str = "all",
) -> RunResult:
    """Run ``spec`` in virtual time.

    Args:
        seed: overrides ``scenario.seed``.
        out: where to write the outputs (created); None writes nothing.
        log_level: structlog level for the actors' logs (stderr).
        observers: more callables to see every event as it is recorded.
        progress: called with (virtual seconds done, duration) about 200 times per run.
        keep_events: keep events in memory (``summary`` gets them under ``"_events"``; tests).
        source: the scenario file, for error messages.
        overrides: the ``--set`` strings ``spec`` was loaded with, recorded in summary.json
            (``overrides``) so that the run can be repeated by hand.
        plots: with ``out``, also write report.html and its plots (a study skips them).
        events: with ``out``, what events.jsonl holds: ``all``, ``errors`` (only the events
            that signal a problem, :func:`~scitokens_batch.metrics.is_error`) or ``none`` (no
            file; one left in ``out`` by an earlier run is removed). Every other output is the
            same whatever this is: it is built from every event as it is recorded.

    Raises:
        LocalInputError: bad input found by the wiring or by an actor during the run, never
            wrapped in an exception group (the command line turns it into exit code 2).
    """
    _check_events(events)
    the_seed = spec.meta.seed if seed is None else seed
    # One seed for everything: whichever way it was given, the spec carries the seed the
    # summary reports, so no stream can fall back to the file's `[scenario] seed`.
    spec = with_seed(spec, the_seed)
    check_scenario(spec, source=source)  # before anything is written
    _refuse_live_only(spec, source or f"scenario {spec.meta.name!r}")

    builder = SummaryBuilder()
    tables: list[Any] = []
    report: Any = None
    sink: Any
    file_sink: JsonlSink | ErrorsOnlySink | None = None
    created_out = False
    if out is not None:
        created_out = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        file_sink = events_file_sink(str(out / "events.jsonl"), events)
        sink = file_sink if file_sink is not None else _CountingSink()
        tables = [JobTable(), TokenTable(), _job_log(spec)]
        report = (
            ReportBuilder(
                duration_s=spec.meta.duration,
                faults=fault_windows(spec),
                bucket_s=fixed_bucket_s(spec.meta.duration),
                jobs_total=sum(w.jobs for w in spec.workloads),
            )
            if plots
            else None
        )
    elif keep_events:
        sink = ListSink()
    else:
        sink = _CountingSink()
    all_observers: list[Callable[[Event], None]] = [builder, *tables, *observers]
    if report is not None:
        all_observers.append(report)

    wall0 = time.perf_counter()
    try:
        with seeded_trio_scheduler(the_seed), _gc_tuned():
            world = trio.run(
                functools.partial(
                    drive,
                    spec,
                    seed=the_seed,
                    sink=sink,
                    observers=all_observers,
                    log_level=log_level,
                    progress=progress,
                ),
                clock=virtual_clock(),
            )
    except BaseException as exc:
        if file_sink is not None:
            file_sink.discard()
        if created_out and out is not None and not any(out.iterdir()):
            out.rmdir()  # we made it for this run: leave no trace of a failed one
        # trio raises what a task raised inside an exception group; bad input must reach the
        # command line as itself (exit 2 and one line), not as a traceback of the group.
        if isinstance(exc, BaseExceptionGroup):
            group, _ = exc.split(LocalInputError)
            found: BaseException | None = group
            while isinstance(found, BaseExceptionGroup):
                found = found.exceptions[0]
            if found is not None:
                raise found from None
        raise
    wall = time.perf_counter() - wall0
    builder.verifier_work(*verifier_work(world))
    del world  # the actors, their caches and memos: freed before the outputs are built

    summary: dict[str, Any] = {
        "scenario": spec.meta.name,
        "seed": the_seed,
        "overrides": list(overrides),
        "version": __version__,
        "mode": "virtual",
        "duration_s": spec.meta.duration,
        "events": builder.event_count,
        **builder.figures(),
    }
    run_info = {"mode": "virtual", "wall_seconds": round(wall, 3)}
    checks = tuple(evaluate(spec.expect.checks, summary))
    summary["expectations"] = [
        {
            "check": c.line,
            "passed": c.passed,
            "actual": c.actual,
            **({"error": c.error} if c.error else {}),
        }
        for c in checks
    ]
    if out is not None:
        try:
            written = _write_outputs(out, summary, tables, report, spec, run_info)
        except BaseException:
            if file_sink is not None:
                file_sink.discard()
            raise
        if file_sink is not None:
            file_sink.commit()
        else:
            written.discard("events.jsonl")  # and an earlier run's goes with the stale files
        _remove_stale(out, written)
    if keep_events and isinstance(sink, ListSink):
        summary["_events"] = sink.events
    return RunResult(summary=summary, checks=checks, out=out, run=run_info)


def result_from_events(
    spec: Scenario,
    events: Iterable[Event],
    *,
    seed: int,
    out: Path | None,
    mode: str,
    wall: float,
    extra: Mapping[str, Any] | None = None,
    epoch: float | None = None,
    work: tuple[int, int] | None = None,
    events_out: str = "all",
) -> RunResult:
    """Summary, checks and (with ``out``) every output file, from a finished run's events.

    The live runner calls this with the merged events of all its services; outputs appear
    only once all of them are written (events.jsonl last, through a temporary name).
    ``epoch`` is the Unix time of ``t = 0`` for jobs.log (live: the run's wall-clock start;
    by default the scenario epoch). ``work`` is the data servers' (signatures computed,
    signature memo hits) when known (``data.signature_checks``, ``data.signature_memo_hits``;
    null otherwise). ``events_out`` chooses what events.jsonl holds, as ``--events`` does
    (see :func:`run_virtual`).
    """
    _check_events(events_out)
    builder = SummaryBuilder()
    if work is not None:
        builder.verifier_work(*work)
    created_out = out is not None and not out.exists()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    tables: list[Any] = [JobTable(), TokenTable(), _job_log(spec, epoch)] if out else []
    report = (
        ReportBuilder(
            duration_s=spec.meta.duration,
            faults=fault_windows(spec),
            bucket_s=fixed_bucket_s(spec.meta.duration),
            jobs_total=sum(w.jobs for w in spec.workloads),
        )
        if out is not None
        else None
    )
    sink = events_file_sink(str(out / "events.jsonl"), events_out) if out is not None else None
    try:
        for ev in events:
            builder(ev)
            for table in tables:
                table(ev)
            if report is not None:
                report(ev)
            if sink is not None:
                sink.write(ev)
        summary: dict[str, Any] = {
            "scenario": spec.meta.name,
            "seed": seed,
            "version": __version__,
            "mode": mode,
            "duration_s": spec.meta.duration,
            "events": builder.event_count,
            **(extra or {}),
            **builder.figures(),
        }
        run_info = {"mode": mode, "wall_seconds": round(wall, 3)}
        checks = tuple(evaluate(spec.expect.checks, summary))
        summary["expectations"] = [
            {
                "check": c.line,
                "passed": c.passed,
                "actual": c.actual,
                **({"error": c.error} if c.error else {}),
            }
            for c in checks
        ]
        written: set[str] = set()
        if out is not None:
            written = _write_outputs(out, summary, tables, report, spec, run_info)
    except BaseException:
        if sink is not None:
            sink.discard()
        if created_out and out is not None and not any(out.iterdir()):
            out.rmdir()
        raise
    if sink is not None:
        sink.commit()
    else:
        written.discard("events.jsonl")
    if out is not None:
        _remove_stale(out, written)
    return RunResult(summary=summary, checks=checks, out=out, run=run_info)


def _check_events(events: str) -> None:
    if events not in EVENT_OUTPUTS:
        raise LocalInputError(
            f"events: expected one of {', '.join(EVENT_OUTPUTS)}, received {events!r}"
        )


def verifier_work(world: World) -> tuple[int, int]:
    """Signatures computed and signature memo hits, summed over the world's data servers."""
    checks = hits = 0
    for server in world.data_servers.values():
        stats = server.verifier.statistics()
        checks += stats.signature_checks
        hits += stats.signature_memo_hits
    return checks, hits


def _job_log(spec: Scenario, epoch: float | None = None) -> JobEventLogWriter:
    """jobs.log's writer: one cluster per workload, numbered from 1 in scenario order."""
    return JobEventLogWriter(
        epoch=spec.meta.epoch if epoch is None else epoch,
        clusters={w.name: i + 1 for i, w in enumerate(spec.workloads)},
    )


def _refuse_live_only(spec: Scenario, source: str) -> None:
    """Real commands and real XRootD cannot run in virtual time: say so, naming the key."""
    for i, ds in enumerate(spec.data_servers):
        if ds.backend is not DataBackend.BUILTIN:
            raise ScenarioError(
                source,
                f"data_servers[{i}].backend",
                f"{ds.backend.value!r} is a real server: expected a live run (--live), "
                "received a virtual-time run",
            )
    for i, w in enumerate(spec.workloads):
        for j, step in enumerate(w.steps):
            if isinstance(step, ExecStep):
                raise ScenarioError(
                    source,
                    f"workloads[{i}].steps[{j}].exec",
                    "exec steps run real commands: expected a live run (--live), "
                    "received a virtual-time run",
                )


#: Every file a run may write into --out. After a run, those of them it did not write this time
#: are removed, so that --out holds one run's outputs as a set (no denials.png of an earlier
#: run beside a summary without denials). Nothing else in --out is touched.
RUN_OUTPUTS: Final = frozenset(
    {
        "summary.json",
        "run.json",
        "jobs.log",
        "events.jsonl",
        "jobs.csv",
        "tokens.csv",
        "report.html",
        "crash.txt",
        *PLOT_FILES,
    }
)


def _write_outputs(
    out: Path,
    summary: dict[str, Any],
    tables: list[Any],
    report: Any,
    spec: Scenario,
    run_info: Mapping[str, Any],
) -> set[str]:
    """Write the outputs but events.jsonl; returns the names written (events.jsonl included)."""
    _files.write_public(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _files.write_public(out / "run.json", json.dumps(run_info, indent=2, sort_keys=True) + "\n")
    jobs, tokens, job_log = tables
    jobs.write_csv(out / "jobs.csv")
    tokens.write_csv(out / "tokens.csv")
    job_log.write_log(out / "jobs.log")
    written = {"summary.json", "run.json", "events.jsonl", "jobs.csv", "tokens.csv", "jobs.log"}
    if report is not None:
        paths = report.write(out, title=report_title(spec, summary), summary=summary)
        written.update(Path(path).name for path in paths)
    return written


def _remove_stale(out: Path, written: set[str]) -> None:
    """Remove the outputs of an earlier run that this run did not write (RUN_OUTPUTS only)."""
    for name in sorted(RUN_OUTPUTS - written):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def fault_windows(spec: Scenario) -> list[tuple[float, float, str]]:
    """Each fault as (start, end, "kind target") for the report's shading; end == start for
    an instantaneous one."""
    windows: list[tuple[float, float, str]] = []
    for fault in spec.faults:
        length = 0.0
        for name in ("duration", "downtime", "restart_after"):
            value = getattr(fault, name, None)
            if isinstance(value, int | float):
                length = float(value)
                break
        target = ""
        for name in ("issuer", "host", "server", "user"):
            value = getattr(fault, name, None)
            if isinstance(value, str):
                target = value
                break
        between = getattr(fault, "between", None)
        if between:
            target = "-".join(between)
        label = f"{fault.kind} {target}".strip()
        windows.append((fault.at, fault.at + length, label))
    return windows


def report_title(spec: Scenario, summary: Mapping[str, Any]) -> str:
    """The report's title, from the run's own parameters.

    The scenario's prose describes the file as written; once ``--set`` changed it, the title
    says so and lists the overrides instead of repeating a description that may be false.
    """
    overrides = list(summary.get("overrides") or ())
    seed = summary.get("seed", spec.meta.seed)
    if overrides:
        return f"{spec.meta.name} (seed {seed}; --set {', '.join(overrides)})"
    return f"{spec.meta.name}: {spec.meta.description}".rstrip(": ") + f" (seed {seed})"


@contextlib.contextmanager
def _gc_tuned() -> Iterator[None]:
    """perf-notes.md: full collections of a large live heap cut throughput 4x; freeze the setup
    and raise the thresholds for the run, then restore."""
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


async def drive(
    spec: Scenario,
    *,
    seed: int,
    sink: Any,
    observers: Sequence[Callable[[Event], None]] = (),
    log_level: str = "warning",
    progress: Callable[[float, float], None] | None = None,
    until: float | None = None,
) -> World:
    """Build the world and run it for the scenario's duration (or ``until`` seconds).

    Must run inside trio with a clock that jumps (MockClock autojump, as pytest-trio's
    ``autojump_clock`` fixture gives); returns the world for inspection.
    """
    # The clock's own bound method: trio.current_time() is three calls deep, and the actors
    # read the time several times per data access.
    now = trio.lowlevel.current_clock().current_time
    t0 = now()
    epoch = spec.meta.epoch

    def since_start() -> float:
        return now() - t0

    def true_now() -> float:
        return epoch + (now() - t0)

    recorder = Recorder(clock=since_start, sink=sink, observers=list(observers))
    world = World.build(
        spec,
        seed=seed,
        recorder=recorder,
        true_now=true_now,
        log=structured_logger(log_level, since_start),
    )
    async with trio.open_nursery() as nursery:
        # Faults at t=0 are in effect before any actor acts (the first request sees them).
        for fault in spec.faults:
            if fault.at <= 0:
                lasting = begin_fault(world, fault)
                if lasting is not None:
                    nursery.start_soon(
                        functools.partial(run_fault, world, fault, nursery, t0, begun=lasting)
                    )
        await world.start(nursery)
        for fault in spec.faults:
            if fault.at > 0:
                nursery.start_soon(run_fault, world, fault, nursery, t0)
        # Always started, even with nobody watching: an extra task changes trio's (seeded)
        # shuffle of tasks woken together, and a run must not depend on having a terminal.
        nursery.start_soon(_progress, progress or _no_progress, t0, spec.meta.duration)
        await trio.sleep_until(t0 + (spec.meta.duration if until is None else until))
        nursery.cancel_scope.cancel()
    return world


def _no_progress(done: float, total: float) -> None:
    pass


async def _progress(report: Callable[[float, float], None], t0: float, duration: float) -> None:
    step = duration / 200
    k = 1
    while True:
        await trio.sleep_until(t0 + k * step)
        report(min(k * step, duration), duration)
        k += 1
