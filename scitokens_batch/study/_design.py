"""A study's points: the grid, zip and Latin hypercube designs expanded into parameter sets.

Pure: no I/O. A point is a tuple of ``(key path, value)`` pairs that becomes ``--set`` overrides
of the scenario; its ``label`` names it in errors, tables and plots.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence

import attrs
from scipy.stats import qmc

from ._spec import ParamKind, SampleRange, Scalar, StudySpec

__all__ = ["Point", "expand", "search_point", "toml_literal"]


def toml_literal(value: Scalar) -> str:
    """Write a value as TOML, so that the scenario loader reads back exactly this value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    # A JSON string is a TOML basic string once DEL, which TOML forbids raw, is escaped too
    # (JSON already escapes the other control characters).
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


@attrs.frozen(kw_only=True)
class Point:
    """One parameter set of a study.

    Attributes:
        index: its position in the design (results are ordered by it).
        params: ``(key path, value)`` pairs, in the design's key order.
    """

    index: int
    params: tuple[tuple[str, Scalar], ...]

    @property
    def overrides(self) -> tuple[str, ...]:
        """The ``--set`` strings of this point."""
        return tuple(f"{k}={toml_literal(v)}" for k, v in self.params)

    @property
    def label(self) -> str:
        """``point 3 (token_manager.renew_fraction=0.5, token_manager.scan_interval="5m")``."""
        inner = ", ".join(self.overrides)
        return f"point {self.index}" + (f" ({inner})" if inner else "")


def _lhs_values(ranges: Sequence[SampleRange], n: int, seed: int) -> list[list[Scalar]]:
    """``n`` rows of a Latin hypercube over ``ranges`` (scipy.stats.qmc), written back as the
    parameters' own kind: numbers, ``"<seconds>s"`` durations or ``"<bytes>B"`` sizes."""
    unit = qmc.LatinHypercube(d=len(ranges), seed=seed).random(n)
    scaled = qmc.scale(unit, [r.low for r in ranges], [r.high for r in ranges])
    rows: list[list[Scalar]] = []
    for row in scaled:
        values: list[Scalar] = []
        for r, x in zip(ranges, row, strict=True):
            values.append(_as_kind(float(x), r.kind, integer=r.integer))
        rows.append(values)
    return rows


def _as_kind(x: float, kind: str, *, integer: bool) -> Scalar:
    if kind == ParamKind.SIZE:
        return f"{round(x)}B"
    # Twelve significant digits keep durations and fractions readable and exact on reload.
    number: float = float(f"{x:.12g}")
    if integer:
        return round(x) if kind == ParamKind.NUMBER else f"{round(x)}s"
    return f"{number!r}s" if kind == ParamKind.DURATION else number


def search_point(study: StudySpec, index: int, x: float) -> Point:
    """The point of a search at ``x`` (seconds for a duration, bytes for a size)."""
    assert study.search is not None
    s = study.search
    value = _as_kind(x, s.kind, integer=s.kind == ParamKind.SIZE)
    return Point(index=index, params=((s.parameter, value),))


def expand(study: StudySpec) -> list[Point]:
    """Every point of a grid/zip or sample design, in a fixed order (a search has none up
    front: its points depend on its results).

    The grid varies its last key fastest; a zip adds its lists, row by row, as the slowest
    varying part. A study with no design has one point: the scenario as it is.
    """
    if study.search is not None:
        return []
    if study.sample:
        rows = _lhs_values(study.sample, study.sample_n, study.sample_seed)
        keys = [r.key for r in study.sample]
        return [
            Point(index=i, params=tuple(zip(keys, row, strict=True))) for i, row in enumerate(rows)
        ]
    zip_keys = [k for k, _ in study.zip]
    zip_rows: list[tuple[Scalar, ...]] = (
        list(zip(*(v for _, v in study.zip), strict=True)) if study.zip else [()]
    )
    grid_keys = [k for k, _ in study.grid]
    points: list[Point] = []
    for zrow in zip_rows:
        for grow in itertools.product(*(v for _, v in study.grid)):
            params = tuple(zip(grid_keys, grow, strict=True)) + tuple(
                zip(zip_keys, zrow, strict=True)
            )
            points.append(Point(index=len(points), params=params))
    return points
