"""Read a study file (a ``[study]`` table) into a :class:`StudySpec`, and validate every point.

A study names a scenario, the seeds, the summary figures to aggregate, and one design: a grid
(cartesian product), a zip (lists varied together; may be combined with a grid), a Latin
hypercube sample, or a threshold search. Every failure is a
:class:`~scitokens_batch.errors.StudyError` naming the study file, the key path and, for a point
whose scenario does not load, the point.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from ..errors import StudyError
from ..metrics import EVENT_OUTPUTS, SummaryBuilder
from ..scenario import ZERO_WHEN_MISSING, Check, parse_check
from ..scenario._loader import format_key_path
from ..scenario._units import describe, parse_duration, parse_size

__all__ = [
    "MAX_RUNS",
    "ParamKind",
    "SampleRange",
    "SearchSpec",
    "StudySpec",
    "load_study",
    "parse_study",
    "quick_study",
    "to_number",
]

#: A study of more runs than this is refused before anything starts (a typo such as
#: ``seeds = 10000`` should not queue ten thousand runs).
MAX_RUNS: Final = 100_000
#: Default figures of a quick sweep (``sweep SCENARIO --grid ...``) with no ``--metric``.
DEFAULT_METRICS: Final = (
    "data.expired_at_use",
    "headroom.min_s",
    "jobs.completed",
    "jobs.holds_by_code.4",
    "issuer.peak_rps",
)
_KNOWN_KEYS: Final = (
    "name",
    "scenario",
    "seeds",
    "metrics",
    "set",
    "grid",
    "zip",
    "sample",
    "search",
    "events",
)

Scalar = bool | int | float | str


class ParamKind:
    """How a parameter's values are numbers (for plots, samples and the search)."""

    NUMBER: Final = "number"
    DURATION: Final = "duration"  # seconds
    SIZE: Final = "size"  # bytes
    CATEGORY: Final = "category"  # no number (e.g. "never", true)


def to_number(value: object) -> tuple[float, str] | None:
    """The number a parameter value stands for, and its kind; None for a category.

    ``0.3`` is a number, ``"5m"`` a duration in seconds (300.0), ``"4GB"`` a size in bytes.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value), ParamKind.NUMBER
    if isinstance(value, str):
        for parse, kind in ((parse_duration, ParamKind.DURATION), (parse_size, ParamKind.SIZE)):
            try:
                return float(parse(value)), kind
            except ValueError:
                continue
    return None


@attrs.frozen(kw_only=True)
class SampleRange:
    """One ``[study.sample.ranges]`` entry: ``key = [low, high]``."""

    key: str
    low: float
    high: float
    kind: str
    integer: bool


@attrs.frozen(kw_only=True)
class SearchSpec:
    """The ``[study.search]`` table.

    Attributes:
        parameter: the ``--set`` key path searched along.
        low: the bracket's low end (seconds for durations, bytes for sizes).
        high: the bracket's high end.
        tolerance: stop once the bracket is this narrow.
        kind: the parameter's kind (:class:`ParamKind`).
        condition: the expectation whose boundary is searched, e.g. ``data.expired_at_use == 0``.
        probes: evenly spaced points (ends included) evaluated first, to find the bracket and
            check that the condition is monotone on them.
    """

    parameter: str
    low: float
    high: float
    tolerance: float
    kind: str
    condition: Check
    probes: int = 5


@attrs.frozen(kw_only=True)
class StudySpec:
    """A whole study.

    Attributes:
        name: the study's name (default: the file's stem).
        file: the study file (errors name it).
        scenario_file: the scenario, resolved against the study file's folder.
        scenario_text: the scenario's TOML, read once: every run gets this text.
        seeds: the seeds every point runs with.
        metrics: summary.json paths aggregated and plotted.
        fixed: ``--set`` overrides applied to every run (``set = [...]``).
        grid: key path -> values, crossed.
        zip: key path -> values, varied together (crossed with the grid).
        sample: Latin hypercube ranges; ``sample_n`` points, drawn with ``sample_seed``.
        search: a threshold search, or None.
        events: what events.jsonl holds in each kept run (``--keep-runs``): ``none`` by
            default (a study reads summaries), ``errors`` or ``all`` when the file asks.
    """

    name: str
    file: str
    scenario_file: str
    scenario_text: str
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]
    fixed: tuple[str, ...] = ()
    grid: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()
    zip: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()
    sample: tuple[SampleRange, ...] = ()
    sample_n: int = 0
    sample_seed: int = 0
    search: SearchSpec | None = None
    events: str = "none"

    @property
    def varied(self) -> tuple[str, ...]:
        """The key paths the design varies, in file order."""
        if self.search is not None:
            return (self.search.parameter,)
        if self.sample:
            return tuple(r.key for r in self.sample)
        return tuple(k for k, _ in self.grid) + tuple(k for k, _ in self.zip)


def _fail(file: str, path: Sequence[str | int], message: str) -> StudyError:
    return StudyError(file, format_key_path(["study", *path]), message)


def _known_metric_paths() -> frozenset[str]:
    """Every figure path an empty run's summary.json has (counters keyed by code aside)."""
    paths: set[str] = set()

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, path + ".")
            else:
                paths.add(path)

    walk(SummaryBuilder().figures(), "")
    paths.update({"events", "duration_s"})
    return frozenset(paths)


def check_metric(file: str, path: Sequence[str | int], metric: object) -> str:
    """A metric must be a summary.json figure (``jobs.holds_by_code.<code>`` included)."""
    if not isinstance(metric, str):
        raise _fail(file, path, f"expected a summary.json path string, received {describe(metric)}")
    try:
        parse_check(f"{metric} >= 0")
    except ValueError as exc:
        raise _fail(file, path, str(exc).replace(" >= 0", "")) from None
    if metric in _known_metric_paths() or metric.startswith(ZERO_WHEN_MISSING):
        return metric
    raise _fail(
        file,
        path,
        f"expected a summary.json figure such as 'data.expired_at_use' or "
        f"'jobs.holds_by_code.4', received {metric!r}",
    )


def _table(file: str, path: Sequence[str | int], value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(file, path, f"expected a table, received {describe(value)}")
    return value


def _is_scalar(value: object) -> bool:
    return isinstance(value, bool | int | float | str) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _values(file: str, path: Sequence[str | int], value: object) -> tuple[Scalar, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(file, path, f"expected a non-empty array of values, received {describe(value)}")
    for i, item in enumerate(value):
        if not _is_scalar(item):
            raise _fail(
                file, [*path, i], f"expected a finite number, string or boolean, received {item!r}"
            )
    if len(set(map(json.dumps, value))) != len(value):
        raise _fail(file, path, f"expected distinct values, received {value!r}")
    return tuple(value)


def _key_path(file: str, path: Sequence[str | int], key: str) -> str:
    if not key.strip() or "=" in key:
        raise _fail(
            file,
            path,
            f'expected a key path such as "token_manager.scan_interval", received {key!r}',
        )
    return key.strip()


def _seeds(file: str, value: object) -> tuple[int, ...]:
    if isinstance(value, bool) or value is None:
        raise _fail(
            file, ["seeds"], f"expected a count or an array of seeds, received {describe(value)}"
        )
    if isinstance(value, int):
        if not 1 <= value <= 10_000:
            raise _fail(file, ["seeds"], f"expected a count from 1 to 10000, received {value}")
        return tuple(range(1, value + 1))
    if isinstance(value, list) and value:
        for i, s in enumerate(value):
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
                raise _fail(
                    file, ["seeds", i], f"expected a seed (an integer >= 0), received {s!r}"
                )
        if len(set(value)) != len(value):
            raise _fail(file, ["seeds"], f"expected distinct seeds, received {value!r}")
        return tuple(value)
    raise _fail(
        file, ["seeds"], f"expected a count or an array of seeds, received {describe(value)}"
    )


def _number(file: str, path: Sequence[str | int], value: object) -> tuple[float, str]:
    got = to_number(value) if _is_scalar(value) else None
    if got is None:
        raise _fail(
            file,
            path,
            f'expected a number, a duration such as "5m" or a size such as "4GB", '
            f"received {value!r}",
        )
    return got


def _sample(file: str, raw: dict[str, Any]) -> tuple[tuple[SampleRange, ...], int, int]:
    allowed = {"n", "seed", "ranges"}
    for key in raw:
        if key not in allowed:
            raise _fail(
                file, ["sample", key], f"expected one of {sorted(allowed)}, received {key!r}"
            )
    n = raw.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RUNS:
        raise _fail(
            file,
            ["sample", "n"],
            f"expected a number of points from 1 to {MAX_RUNS}, received {n!r}",
        )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(file, ["sample", "seed"], f"expected an integer >= 0, received {seed!r}")
    ranges = _table(file, ["sample", "ranges"], raw.get("ranges"))
    if not ranges:
        raise _fail(
            file, ["sample", "ranges"], "expected at least one key = [low, high], received none"
        )
    out: list[SampleRange] = []
    for key, bounds in ranges.items():
        where: list[str | int] = ["sample", "ranges", key]
        _key_path(file, where, key)
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise _fail(file, where, f"expected [low, high], received {bounds!r}")
        (low, kind_low), (high, kind_high) = (
            _number(file, [*where, i], b) for i, b in enumerate(bounds)
        )
        if kind_low != kind_high:
            raise _fail(
                file,
                where,
                f"expected low and high of one kind, received {kind_low} and {kind_high}",
            )
        if not low < high:
            raise _fail(file, where, f"expected low < high, received {bounds!r}")
        integer = kind_low == ParamKind.SIZE or all(
            isinstance(b, int) and not isinstance(b, bool) for b in bounds
        )
        out.append(SampleRange(key=key.strip(), low=low, high=high, kind=kind_low, integer=integer))
    return tuple(out), n, seed


def _search(file: str, raw: dict[str, Any]) -> SearchSpec:
    allowed = {"parameter", "low", "high", "tolerance", "condition", "probes"}
    for key in raw:
        if key not in allowed:
            raise _fail(
                file, ["search", key], f"expected one of {sorted(allowed)}, received {key!r}"
            )
    for key in ("parameter", "low", "high", "tolerance", "condition"):
        if key not in raw:
            raise _fail(file, ["search", key], "expected this key, received none")
    parameter = raw["parameter"]
    if not isinstance(parameter, str):
        raise _fail(
            file,
            ["search", "parameter"],
            f"expected a key path string, received {describe(parameter)}",
        )
    parameter = _key_path(file, ["search", "parameter"], parameter)
    low, kind = _number(file, ["search", "low"], raw["low"])
    high, kind_high = _number(file, ["search", "high"], raw["high"])
    tolerance, kind_tol = _number(file, ["search", "tolerance"], raw["tolerance"])
    if kind_high != kind or kind_tol != kind:
        raise _fail(
            file,
            ["search"],
            f"expected low, high and tolerance of one kind ({kind}), "
            f"received {kind}, {kind_high} and {kind_tol}",
        )
    if not low < high:
        raise _fail(
            file,
            ["search", "high"],
            f"expected high > low ({raw['low']!r}), received {raw['high']!r}",
        )
    if not 0 < tolerance < high - low:
        raise _fail(
            file,
            ["search", "tolerance"],
            f"expected 0 < tolerance < high - low, received {raw['tolerance']!r}",
        )
    condition = raw["condition"]
    if not isinstance(condition, str):
        raise _fail(
            file,
            ["search", "condition"],
            f"expected a check such as 'data.expired_at_use == 0', received {describe(condition)}",
        )
    try:
        check = parse_check(condition)
    except ValueError as exc:
        raise _fail(file, ["search", "condition"], str(exc)) from None
    check_metric(file, ["search", "condition"], check.path)
    probes = raw.get("probes", 5)
    if isinstance(probes, bool) or not isinstance(probes, int) or not 2 <= probes <= 100:
        raise _fail(
            file, ["search", "probes"], f"expected an integer from 2 to 100, received {probes!r}"
        )
    return SearchSpec(
        parameter=parameter,
        low=low,
        high=high,
        tolerance=tolerance,
        kind=kind,
        condition=check,
        probes=probes,
    )


def parse_study(
    raw: Mapping[str, Any], *, file: str, base: Path, scenario_text: str | None = None
) -> StudySpec:
    """Validate a decoded ``[study]`` table.

    Args:
        raw: the ``study`` table.
        file: the study file (errors name it).
        base: the folder ``scenario`` is relative to.
        scenario_text: the scenario's text when the study sits in the scenario file itself.

    Raises:
        StudyError: naming the key path.
    """
    study = _table(file, [], raw)
    for key in study:
        if key not in _KNOWN_KEYS:
            raise _fail(file, [key], f"expected one of {', '.join(_KNOWN_KEYS)}, received {key!r}")
    name = study.get("name", Path(file).stem)
    if not isinstance(name, str) or not name.strip():
        raise _fail(file, ["name"], f"expected a non-empty string, received {name!r}")
    if "scenario" in study:
        scen = study["scenario"]
        if not isinstance(scen, str) or not scen:
            raise _fail(
                file, ["scenario"], f"expected a path relative to the study file, received {scen!r}"
            )
        scenario_file = os.path.normpath(base / scen)
        try:
            scenario_text = Path(scenario_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise _fail(
                file,
                ["scenario"],
                f"expected a readable scenario file, received {scenario_file} ({reason})",
            ) from None
    elif scenario_text is not None:
        scenario_file = file
    else:
        raise _fail(file, ["scenario"], "expected the scenario file this study runs, received none")
    seeds = _seeds(file, study.get("seeds", 1))
    metrics_raw = study.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise _fail(
            file,
            ["metrics"],
            f"expected a non-empty array of summary.json paths, received {describe(metrics_raw)}",
        )
    metrics = tuple(check_metric(file, ["metrics", i], m) for i, m in enumerate(metrics_raw))
    if len(set(metrics)) != len(metrics):
        raise _fail(file, ["metrics"], f"expected distinct metrics, received {metrics_raw!r}")
    fixed_raw = study.get("set", [])
    if not isinstance(fixed_raw, list) or not all(
        isinstance(s, str) and "=" in s for s in fixed_raw
    ):
        raise _fail(
            file, ["set"], f'expected an array of "key.path=value" strings, received {fixed_raw!r}'
        )

    grid = tuple(
        (_key_path(file, ["grid", k], k), _values(file, ["grid", k], v))
        for k, v in _table(file, ["grid"], study.get("grid", {})).items()
    )
    zipped = tuple(
        (_key_path(file, ["zip", k], k), _values(file, ["zip", k], v))
        for k, v in _table(file, ["zip"], study.get("zip", {})).items()
    )
    lengths = {len(v) for _, v in zipped}
    if len(lengths) > 1:
        raise _fail(
            file,
            ["zip"],
            f"expected lists of one length (varied together), received lengths "
            f"{', '.join(f'{k}: {len(v)}' for k, v in zipped)}",
        )
    sample: tuple[SampleRange, ...] = ()
    sample_n = sample_seed = 0
    if "sample" in study:
        sample, sample_n, sample_seed = _sample(file, _table(file, ["sample"], study["sample"]))
    search = _search(file, _table(file, ["search"], study["search"])) if "search" in study else None
    designs = [k for k in ("grid", "zip", "sample", "search") if k in study]
    if ("sample" in designs or "search" in designs) and len(designs) > 1:
        raise _fail(
            file,
            [designs[-1]],
            f"expected one design (grid and zip may be combined; sample and search stand alone), "
            f"received {', '.join(designs)}",
        )
    keys = [k for k, _ in grid] + [k for k, _ in zipped] + [r.key for r in sample]
    if search is not None:
        keys.append(search.parameter)
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise _fail(file, [], f"expected each key path varied once, received {sorted(dup)} twice")
    events = study.get("events", "none")
    if events not in EVENT_OUTPUTS:
        raise _fail(
            file, ["events"], f"expected one of {', '.join(EVENT_OUTPUTS)}, received {events!r}"
        )
    spec = StudySpec(
        name=name.strip(),
        file=file,
        scenario_file=scenario_file,
        scenario_text=scenario_text,
        seeds=seeds,
        metrics=metrics,
        fixed=tuple(fixed_raw),
        grid=grid,
        zip=zipped,
        sample=sample,
        sample_n=sample_n,
        sample_seed=sample_seed,
        search=search,
        events=events,
    )
    points = math.prod(len(v) for _, v in grid) * (next(iter(lengths)) if lengths else 1)
    if sample:
        points = sample_n
    if points * len(seeds) > MAX_RUNS:
        raise _fail(
            file,
            [],
            f"expected at most {MAX_RUNS} runs, received {points} points x "
            f"{len(seeds)} seeds = {points * len(seeds)}",
        )
    return spec


def _read_toml(file: str) -> dict[str, Any]:
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise StudyError(
            file, "", f"expected a readable study file, received an error: {exc.strerror or exc}"
        ) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StudyError(
            file,
            "",
            f"expected UTF-8 text, received byte {data[exc.start]:#04x} at offset {exc.start}",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(file, "", f"expected TOML, received a syntax error: {exc}") from None
    except RecursionError:
        raise StudyError(
            file, "", "expected TOML nested less deeply, received a document too deep to read"
        ) from None


def load_study(path: str | os.PathLike[str]) -> StudySpec:
    """Load a study file: a TOML file with a ``[study]`` table (which may be a scenario file
    itself, in which case the study runs that scenario unless it names another).

    Raises:
        StudyError: the file cannot be read, or the table is invalid.
    """
    file = os.fspath(path)
    raw = _read_toml(file)
    if "study" not in raw:
        raise StudyError(
            file,
            "study",
            "expected a [study] table, received none "
            "(for a plain scenario, give --grid or --seeds)",
        )
    text = None
    if "scenario" in raw and "scenario" not in _table(file, [], raw["study"]):
        text = Path(file).read_text(encoding="utf-8")
    return parse_study(
        raw["study"], file=file, base=Path(file).resolve().parent, scenario_text=text
    )


def is_study_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a ``[study]`` table (else it is taken as a plain scenario)."""
    return "study" in _read_toml(os.fspath(path))


def quick_study(
    scenario: str | os.PathLike[str],
    *,
    grid: Sequence[str] = (),
    seeds: int = 1,
    metrics: Sequence[str] = (),
    fixed: Sequence[str] = (),
) -> StudySpec:
    """The study of ``sweep SCENARIO --grid KEY=V1,V2 --seeds N``.

    Args:
        grid: ``KEY=V1,V2,...`` strings; each value is read as a TOML value when it parses as
            one (``0.3``, ``true``, ``"a,b"``), else as a bare string (``5m``).
    """
    file = os.fspath(scenario)
    raw_grid: dict[str, list[object]] = {}
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise StudyError(
                "--grid",
                item,
                'expected KEY=V1,V2,..., such as "token_manager.scan_interval=1m,5m"',
            )
        raw_grid[key.strip()] = [_cli_value(v) for v in values.split(",")]
    raw: dict[str, Any] = {
        "name": Path(file).stem,
        "scenario": os.path.basename(file),
        "seeds": seeds,
        "grid": raw_grid,
        "set": list(fixed),
    }
    if metrics:
        raw["metrics"] = list(metrics)
    try:
        return parse_study(raw, file=file, base=Path(file).resolve().parent)
    except StudyError as exc:
        raise StudyError(
            "--grid" if exc.key_path.startswith("study.grid") else file,
            exc.key_path,
            exc.message,
            point=exc.point,
        ) from None


def _cli_value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()
