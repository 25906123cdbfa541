"""Aggregates (n, mean, std, 95 % CI, min, max) against hand-computed values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from scitokens_batch.study import Point
from scitokens_batch.study._results import aggregate, flatten, metric_value, result_rows


def _result(point: int, seed: int, expired: int | None, status: str = "ok") -> dict[str, Any]:
    summary = None
    if status == "ok":
        summary = {"data": {"expired_at_use": expired}, "jobs": {"holds_by_code": {}}}
    return {
        "key": f"k{point}{seed}",
        "point": point,
        "seed": seed,
        "status": status,
        "error": None if status == "ok" else "boom",
        "summary": summary,
        "wall_seconds": 1.0,
    }


def test_mean_std_and_t_interval_by_hand() -> None:
    """Values 1, 2, 3, 4: mean 2.5, s = 1.2909944, half-width t(0.975, 3) = 3.1824463 x s / 2 = 2.0542603."""
    points = [Point(index=0, params=(("a", 1),))]
    results = {(0, s): _result(0, s, v) for s, v in zip((1, 2, 3, 4), (1, 2, 3, 4), strict=True)}
    (row,) = aggregate(points, [1, 2, 3, 4], ["data.expired_at_use"], results)
    assert row["n"] == 4 and row["mean"] == 2.5
    assert row["std"] == pytest.approx(1.2909944487, abs=1e-9)
    assert row["ci95_low"] == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert row["ci95_high"] == pytest.approx(2.5 + 2.0542603, abs=1e-6)
    assert (row["min"], row["max"], row["param.a"]) == (1.0, 4.0, 1)


def test_failed_runs_and_nulls_are_left_out_and_missing_counters_are_zero() -> None:
    """A failed run and a null figure do not count; a hold code that never occurred is 0."""
    points = [Point(index=0, params=())]
    results = {
        (0, 1): _result(0, 1, 5),
        (0, 2): _result(0, 2, None),
        (0, 3): _result(0, 3, 0, status="error"),
    }
    expired, holds = aggregate(
        points, [1, 2, 3], ["data.expired_at_use", "jobs.holds_by_code.4"], results
    )
    assert (expired["n"], expired["mean"], expired["std"], expired["ci95_low"]) == (
        1,
        5.0,
        None,
        None,
    )
    assert (holds["n"], holds["mean"]) == (2, 0.0)
    assert metric_value(None, "data.expired_at_use") is None
    assert metric_value({"headroom": {"min_s": math.nan}}, "headroom.min_s") is None


def test_rows_follow_design_order_not_arrival_order() -> None:
    """Result rows are ordered by point, then by the study's seed order."""
    points = [Point(index=0, params=(("a", 1),)), Point(index=1, params=(("a", 2),))]
    results = {(1, 7): _result(1, 7, 1), (0, 9): _result(0, 9, 2), (0, 7): _result(0, 7, 3)}
    rows = result_rows(points, [7, 9], results)
    assert [(r["point"], r["seed"]) for r in rows] == [(0, 7), (0, 9), (1, 7)]
    assert rows[0]["param.a"] == 1 and rows[0]["data.expired_at_use"] == 3


def test_flatten_keeps_figures_and_counts_failed_expectations() -> None:
    """Nested figures become dotted columns; wall time and overrides are left out."""
    flat = flatten(
        {
            "scenario": "x",
            "wall_seconds": 3.2,
            "overrides": ["a=1"],
            "jobs": {"holds_by_code": {"4": 2}},
            "expectations": [{"passed": True}, {"passed": False}],
        }
    )
    assert flat == {"scenario": "x", "jobs.holds_by_code.4": 2, "expectations.failed": 1}
