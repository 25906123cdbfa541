"""Run a study: validate every point, execute the runs, write the results as they arrive.

Theory of operation:

1. Every point of the design is loaded as a scenario (the study's ``set``, then the point's
   overrides) and checked by wiring it once, before any run starts: a typo fails in a second,
   naming the study file, the key path and the point.
2. Each (point, seed) becomes a :class:`~scitokens_batch.study._task.RunTask` keyed by a hash of
   the resolved scenario, the seed and the package version. Its result is written atomically to
   ``points/<key>.json`` the moment it arrives, so an interrupted or killed study loses no
   finished run, and ``--resume`` runs only the keys that have no ``ok`` result yet.
3. A search evaluates its probes for every seed together, then bisects every seed's bracket
   together, round after round.
4. The tables, the aggregates, ``search.json``, ``study.json`` and ``report.html`` are written
   last, each atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import attrs

from .. import _files
from .._version import __version__
from ..errors import LocalInputError, ScenarioError, StudyError
from ..scenario import OVERRIDE_FILE, evaluate, parse_scenario
from ..scenario._run import check_scenario, with_seed
from ._design import Point, expand, search_point
from ._execute import DaskExecutor, default_workers
from ._results import aggregate, result_rows, write_aggregate, write_results
from ._search import Bisection, NotMonotone
from ._spec import ParamKind, StudySpec
from ._task import RunTask, run_key

__all__ = ["StudyOutcome", "run_study"]

#: Files a study writes in --out (a reused --out must hold only these, or --resume).
OUTPUTS: Final = (
    "study.json",
    "results.csv",
    "results.parquet",
    "aggregate.csv",
    "search.json",
    "report.html",
)
_DEPENDENCIES: Final = ("trio", "cryptography", "attrs", "dask", "distributed", "pyarrow", "scipy")

Progress = Callable[[dict[str, Any], int, int], None]


@attrs.frozen(kw_only=True)
class StudyOutcome:
    """What a study produced.

    Attributes:
        runs: results received (resumed ones included).
        failed: runs whose status is not ``ok``.
        search_error: why the search refused (not monotone, no change in the bracket).
        out: the output folder.
        manifest: study.json's content.
    """

    runs: int
    failed: int
    search_error: str | None
    out: Path
    manifest: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Every run completed and the search, if any, found its boundary."""
        return self.failed == 0 and self.search_error is None


@attrs.define
class _Plan:
    study: StudySpec
    out: Path
    keep_runs: bool
    results: dict[tuple[int, int], dict[str, Any]] = attrs.field(factory=dict)
    done: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # key -> result on disk
    points: list[Point] = attrs.field(factory=list)

    def task(self, point: Point) -> list[RunTask]:
        """The tasks of ``point``, one per seed (validated: raises StudyError)."""
        overrides = (*self.study.fixed, *point.overrides)
        spec = _load_point(self.study, point)
        tasks = []
        for seed in self.study.seeds:
            key = run_key(repr(with_seed(spec, seed)), seed)
            keep = (
                str(self.out / "runs" / f"point-{point.index}-seed-{seed}")
                if self.keep_runs
                else None
            )
            tasks.append(
                RunTask(
                    key=key,
                    point=point.index,
                    seed=seed,
                    scenario_text=self.study.scenario_text,
                    scenario_file=self.study.scenario_file,
                    overrides=overrides,
                    keep_dir=keep,
                    label=point.label,
                    events=self.study.events,
                )
            )
        return tasks

    def record(self, result: dict[str, Any]) -> None:
        self.results[(result["point"], result["seed"])] = result
        _files.write_public(
            self.out / "points" / f"{result['key']}.json", json.dumps(result, sort_keys=True) + "\n"
        )


def _key_of(study: StudySpec, point: Point) -> dict[str, str]:
    """Scenario key path (index form) -> the study key path that set it."""
    where: dict[str, str] = {}
    for k, _ in point.params:
        design = (
            "search"
            if study.search
            else "sample.ranges"
            if study.sample
            else ("grid" if any(k == g for g, _ in study.grid) else "zip")
        )
        where[k] = (
            f"study.{design}.{json.dumps(k)}" if design != "search" else "study.search.parameter"
        )
    return where


def _load_point(study: StudySpec, point: Point) -> Any:
    """The scenario of ``point``, loaded and wired once; raises StudyError naming the point.

    An error caused by an override names the study file and the study key that set it; an
    error in the scenario itself names the scenario file and its key path.
    """
    overrides = (*study.fixed, *point.overrides)
    try:
        spec = parse_scenario(study.scenario_text, file=study.scenario_file, overrides=overrides)
        check_scenario(spec, source=study.scenario_file)
    except ScenarioError as exc:
        if exc.file != OVERRIDE_FILE:
            raise StudyError(exc.file, exc.key_path, exc.message, point=point.label) from None
        key_of = _key_of(study, point)
        hit = [v for k, v in key_of.items() if exc.key_path == k or exc.key_path.startswith(k)]
        key_path = hit[0] if hit else "study.set"
        raise StudyError(
            study.file, key_path, f"{exc.key_path}: {exc.message}", point=point.label
        ) from None
    except LocalInputError as exc:
        raise StudyError(study.scenario_file, "", str(exc), point=point.label) from None
    return spec


def _prepare_out(out: Path, *, resume: bool) -> dict[str, dict[str, Any]]:
    """Create ``out`` (or check it may be reused) and read finished runs for --resume."""
    if out.exists() and not out.is_dir():
        raise StudyError("--out", str(out), "expected a folder, received an existing file")
    done: dict[str, dict[str, Any]] = {}
    if out.exists():
        ours = [p for p in out.iterdir() if p.name in OUTPUTS or p.name in ("points", "runs")]
        if ours and not resume:
            raise StudyError(
                "--out",
                str(out),
                "expected a new or empty folder, received one with a study's outputs "
                "(give --resume to continue it, or another --out)",
            )
        points = out / "points"
        if resume and points.is_dir():
            for f in sorted(points.glob("*.json")):
                try:
                    r = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue  # a torn file cannot exist (atomic writes), but never trust one
                if isinstance(r, dict) and r.get("status") == "ok" and f.stem == r.get("key"):
                    done[r["key"]] = r
    try:
        (out / "points").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(
            "--out", str(out), f"expected a writable folder, received {exc.strerror}"
        ) from None
    return done


def _versions() -> dict[str, str]:
    found = {"scitokens-batch": __version__, "python": platform.python_version()}
    for name in _DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run_tasks(
    plan: _Plan,
    executor: DaskExecutor,
    tasks: Sequence[RunTask],
    progress: Progress | None,
    total: int,
) -> None:
    todo = []
    for task in tasks:
        prior = plan.done.get(task.key)
        if prior is not None:
            plan.results[(task.point, task.seed)] = prior | {"point": task.point, "seed": task.seed}
        else:
            todo.append(task)

    def on_result(result: dict[str, Any]) -> None:
        plan.record(result)
        if progress is not None:
            progress(result, len(plan.results), total)

    if todo:
        executor.run(todo, on_result)


def _search(plan: _Plan, executor: DaskExecutor, progress: Progress | None) -> dict[str, Any]:
    study = plan.study
    s = study.search
    assert s is not None
    integer = s.kind == ParamKind.SIZE
    searches = {
        seed: Bisection(
            low=s.low, high=s.high, tolerance=s.tolerance, probes=s.probes, integer=integer
        )
        for seed in study.seeds
    }
    by_x: dict[float, Point] = {}
    error: str | None = None
    # For the progress bar: the probes, then one run per seed per halving of the bracket.
    spacing = (s.high - s.low) / (s.probes - 1)
    rounds = max(0, math.ceil(math.log2(spacing / s.tolerance)))
    expected = len(study.seeds) * (s.probes + rounds)
    while error is None:
        wanted = {seed: b.wanted() for seed, b in searches.items()}
        if not any(wanted.values()):
            break
        tasks: list[RunTask] = []
        for seed, xs in wanted.items():
            for x in xs:
                point = by_x.get(x)
                if point is None:
                    point = by_x[x] = search_point(study, len(by_x), x)
                    plan.points.append(point)
                tasks.extend(t for t in plan.task(point) if t.seed == seed)
        _run_tasks(plan, executor, tasks, progress, max(expected, len(plan.results) + len(tasks)))
        for seed, xs in wanted.items():
            for x in xs:
                point = by_x[x]
                r = plan.results[(point.index, seed)]
                if r["status"] != "ok":
                    error = f"{point.label}, seed {seed}: the run failed ({r['error']})"
                    break
                verdict = evaluate([s.condition], r["summary"])[0]
                if verdict.error is not None:
                    error = f"{point.label}, seed {seed}: {verdict.error}"
                    break
                try:
                    searches[seed].tell(x, verdict.passed)
                except NotMonotone as exc:
                    error = f"seed {seed}: {exc}"
                    break
            if error is not None:
                break
    per_seed = {str(seed): b.boundary for seed, b in searches.items() if b.done}
    values = list(per_seed.values())
    unit = {"duration": "s", "size": "B"}.get(s.kind, "")
    return {
        "parameter": s.parameter,
        "kind": s.kind,
        "unit": unit,
        "condition": s.condition.line,
        "low": s.low,
        "high": s.high,
        "tolerance": s.tolerance,
        "error": error,
        "per_seed": per_seed if error is None else {},
        "boundary": (
            {"min": min(values), "median": statistics.median(values), "max": max(values)}
            if values and error is None
            else None
        ),
        "history": {
            str(seed): [{"holds": g, "fails": b} for g, b in bis.history]
            for seed, bis in searches.items()
        },
        "evaluated": [
            {
                "point": point.index,
                "value": x,
                "seed": seed,
                "holds": bis.results[x],
            }
            for x, point in sorted(by_x.items())
            for seed, bis in searches.items()
            if x in bis.results
        ],
    }


def run_study(
    study: StudySpec,
    *,
    out: Path,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    keep_runs: bool = False,
    progress: Progress | None = None,
    report: bool = True,
) -> StudyOutcome:
    """Run every point of ``study`` for every seed and write the outputs to ``out``.

    Raises:
        StudyError: a point does not load, or ``out`` cannot be used; raised before any run.
    """
    t0 = time.perf_counter()
    plan = _Plan(study=study, out=out, keep_runs=keep_runs)
    tasks: list[RunTask] = []
    if study.search is None:
        plan.points = expand(study) or [Point(index=0, params=())]
        for point in plan.points:
            tasks.extend(plan.task(point))  # validates every point before anything runs
    else:
        # A search's points depend on its results: validate the bracket's ends up front.
        for x in (study.search.low, study.search.high):
            _load_point(study, search_point(study, 0, x))
    plan.done = _prepare_out(out, resume=resume)
    search: dict[str, Any] | None = None
    with DaskExecutor(workers=workers or default_workers(), scheduler=scheduler) as executor:
        if study.search is None:
            _run_tasks(plan, executor, tasks, progress, len(tasks))
        else:
            search = _search(plan, executor, progress)
        described = executor.description

    rows = result_rows(plan.points, study.seeds, plan.results)
    write_results(out, rows)
    aggregates = aggregate(plan.points, study.seeds, study.metrics, plan.results)
    write_aggregate(out, aggregates)
    if search is not None:
        _files.write_public(out / "search.json", json.dumps(search, indent=2) + "\n")
    failures = [
        {"point": r["point"], "seed": r["seed"], "status": r["status"], "error": r["error"]}
        for r in rows
        if r["status"] != "ok"
    ]
    manifest: dict[str, Any] = {
        "study": study.name,
        "file": study.file,
        "study_sha256": _digest(Path(study.file).read_text(encoding="utf-8"))
        if Path(study.file).is_file()
        else None,
        "scenario": study.scenario_file,
        "scenario_sha256": _digest(study.scenario_text),
        "design": _design(study),
        "fixed": list(study.fixed),
        "seeds": list(study.seeds),
        "metrics": list(study.metrics),
        "points": len(plan.points),
        "runs": len(rows),
        "resumed": sum(1 for r in rows if r["key"] in plan.done),
        "failed": len(failures),
        "failures": failures,
        "versions": _versions(),
        "executor": described,
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "search_error": search["error"] if search else None,
    }
    if report:
        from ._report import write_report

        write_report(out, study, plan.points, rows, aggregates, search)
    _files.write_public(out / "study.json", json.dumps(manifest, indent=2) + "\n")
    return StudyOutcome(
        runs=len(rows),
        failed=len(failures),
        search_error=search["error"] if search else None,
        out=out,
        manifest=manifest,
    )


def _design(study: StudySpec) -> dict[str, Any]:
    if study.search is not None:
        s = study.search
        return {
            "search": {
                "parameter": s.parameter,
                "low": s.low,
                "high": s.high,
                "tolerance": s.tolerance,
                "condition": s.condition.line,
                "probes": s.probes,
            }
        }
    if study.sample:
        return {
            "sample": {
                "n": study.sample_n,
                "seed": study.sample_seed,
                "ranges": {r.key: [r.low, r.high] for r in study.sample},
            }
        }
    design: dict[str, Any] = {}
    if study.grid:
        design["grid"] = {k: list(v) for k, v in study.grid}
    if study.zip:
        design["zip"] = {k: list(v) for k, v in study.zip}
    return design


def describe_result(result: Mapping[str, Any]) -> str:
    """One line for a finished run (progress without a terminal)."""
    label = result.get("label") or f"point {result['point']}"
    wall = result.get("wall_seconds")
    took = f" in {wall:.1f} s" if isinstance(wall, int | float) else ""
    if result["status"] == "ok":
        return f"{label}, seed {result['seed']}: ok{took}"
    return f"{label}, seed {result['seed']}: {result['status']}: {result['error']}"


def describe_executor(executor: Mapping[str, Any]) -> str:
    """``2 local workers`` or ``the scheduler at tcp://...  (8 workers)``."""
    if executor.get("kind") == "scheduler":
        n = executor.get("workers")
        return f"the scheduler at {executor['address']}" + (f" ({n} workers)" if n else "")
    n = executor.get("workers")
    return f"{n} local worker{'s' if n != 1 else ''}"
