"""A study's results: one row per run, aggregates per point and metric, and their files.

Rows are ordered by (point, seed position), never by completion order, so the tables do not
depend on the executor. Aggregates use the runs that completed: n, mean, sample standard
deviation, a 95 % confidence interval of the mean (Student's t), min and max.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from .. import _files
from ..scenario import ZERO_WHEN_MISSING, lookup_figure
from ._design import Point

__all__ = [
    "AGGREGATE_COLUMNS",
    "Aggregate",
    "aggregate",
    "flatten",
    "metric_value",
    "result_rows",
    "write_aggregate",
    "write_results",
]

#: Columns every results row has before the summary's own (``param.<key>`` follow ``point``).
LEAD_COLUMNS: Final = ("point", "seed", "status", "error", "key", "wall_seconds")
AGGREGATE_COLUMNS: Final = ("metric", "n", "mean", "std", "ci95_low", "ci95_high", "min", "max")
#: Summary keys that are not figures of the run (or are wall-clock facts).
_SKIP: Final = frozenset({"expectations", "wall_seconds", "overrides", "_events"})


def flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested summary.json -> ``{"jobs.completed": 12, ...}`` (lists of scalars kept as text)."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if not prefix and key in _SKIP:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, list):
            flat[path] = " ".join(map(str, value))
        else:
            flat[path] = value
    if not prefix and "expectations" in summary:
        flat["expectations.failed"] = sum(not e["passed"] for e in summary["expectations"])
    return flat


def metric_value(summary: Mapping[str, Any] | None, metric: str) -> float | None:
    """A metric's value in one run: None when the run failed or the figure is null/NaN; a
    counter keyed by reason or hold code that never occurred counts as 0."""
    if summary is None:
        return None
    value = lookup_figure(summary, metric)
    if value is None and metric.startswith(ZERO_WHEN_MISSING):
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def result_rows(
    points: Sequence[Point],
    seeds: Sequence[int],
    results: Mapping[tuple[int, int], Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per (point, seed) that has a result, in design order."""
    rows: list[dict[str, Any]] = []
    for point in points:
        for seed in seeds:
            r = results.get((point.index, seed))
            if r is None:
                continue
            row: dict[str, Any] = {"point": point.index, "seed": seed}
            for k, v in point.params:
                row[f"param.{k}"] = v
            row.update(
                status=r["status"],
                error=r.get("error"),
                key=r["key"],
                wall_seconds=r["wall_seconds"],
            )
            if r.get("summary") is not None:
                row.update(flatten(r["summary"]))
            rows.append(row)
    return rows


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    lead = [c for c in ("point", "seed") if c in seen]
    params = [c for c in seen if c.startswith("param.")]
    rest = [c for c in LEAD_COLUMNS if c in seen and c not in lead]
    figures = sorted(c for c in seen if c not in lead and c not in params and c not in rest)
    return lead + params + rest + figures


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_results(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """results.csv and results.parquet, each written atomically."""
    columns = _columns(rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    _files.write_public(out / "results.csv", text.getvalue())

    arrays = {}
    for c in columns:
        values = [row.get(c) for row in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds and not kinds <= {int, float} and kinds != {bool} and kinds != {str}:
            values = [None if v is None else str(v) for v in values]  # mixed: keep as text
        arrays[c] = pa.array(values) if kinds else pa.array(values, type=pa.null())
    table = pa.table(arrays)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    _files.write_public(out / "results.parquet", buffer.getvalue().to_pybytes())


class Aggregate(dict[str, Any]):
    """One aggregate row: the point's parameters, then :data:`AGGREGATE_COLUMNS`."""


def _summarise(values: Sequence[float]) -> dict[str, float | int | None]:
    n = len(values)
    if n == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "ci95_low": None,
            "ci95_high": None,
            "min": None,
            "max": None,
        }
    mean = math.fsum(values) / n
    if n > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        std, low, high = None, None, None
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci95_low": low,
        "ci95_high": high,
        "min": min(values),
        "max": max(values),
    }


def aggregate(
    points: Sequence[Point],
    seeds: Sequence[int],
    metrics: Sequence[str],
    results: Mapping[tuple[int, int], Mapping[str, Any]],
) -> list[Aggregate]:
    """Per point and metric: n, mean, std, 95 % CI, min, max over the runs that completed."""
    out: list[Aggregate] = []
    for point in points:
        for metric in metrics:
            values: list[float] = []
            for seed in seeds:
                r = results.get((point.index, seed))
                if r is None or r["status"] != "ok":
                    continue
                value = metric_value(r["summary"], metric)
                if value is not None:
                    values.append(value)
            row = Aggregate(point=point.index)
            for k, v in point.params:
                row[f"param.{k}"] = v
            row["metric"] = metric
            row.update(_summarise(values))
            out.append(row)
    return out


def write_aggregate(out: Path, rows: Sequence[Aggregate]) -> None:
    """aggregate.csv, atomically."""
    columns = _columns(rows)
    columns = [c for c in columns if c not in AGGREGATE_COLUMNS] + list(AGGREGATE_COLUMNS)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                _csv_cell(round(v, 9) if isinstance(v, float) else v)
                for v in (row.get(c) for c in columns)
            ]
        )
    _files.write_public(out / "aggregate.csv", text.getvalue())
