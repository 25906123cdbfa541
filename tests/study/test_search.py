"""The threshold search's bisection (sans-IO), against conditions with known boundaries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.study import Bisection, NotMonotone


def _drive(search: Bisection, holds: Callable[[float], bool], limit: int = 200) -> list[float]:
    asked: list[float] = []
    for _ in range(limit):  # bounded: a search never needs this many rounds
        wanted = search.wanted()
        if not wanted:
            return asked
        for x in wanted:
            asked.append(x)
            search.tell(x, holds(x))
    raise AssertionError("the search did not finish")


@given(st.floats(min_value=1.0, max_value=599.0))
def test_boundary_is_on_the_holding_side_within_tolerance(threshold: float) -> None:
    """For `holds iff x <= threshold`, the boundary is <= threshold and within tolerance of it."""
    search = Bisection(low=0.0, high=600.0, tolerance=5.0)
    _drive(search, lambda x: x <= threshold)
    assert search.done
    assert threshold - 5.0 <= search.boundary <= threshold
    good, bad = search.bracket  # type: ignore[misc]
    assert abs(bad - good) <= 5.0


def test_reverse_direction() -> None:
    """A condition that holds above a threshold gives the lowest holding value."""
    search = Bisection(low=0.0, high=100.0, tolerance=1.0)
    _drive(search, lambda x: x >= 37.0)
    assert 37.0 <= search.boundary <= 38.0


def test_probes_first_then_one_midpoint_per_round() -> None:
    """The first round asks for the evenly spaced probes, each later round for one midpoint."""
    search = Bisection(low=0.0, high=400.0, tolerance=10.0, probes=5)
    assert search.wanted() == [0.0, 100.0, 200.0, 300.0, 400.0]
    for x in search.wanted():
        search.tell(x, x < 150)
    assert search.bracket == (100.0, 200.0)
    assert search.wanted() == [150.0]


def test_integer_values_for_sizes() -> None:
    """A size search asks for whole bytes only."""
    search = Bisection(low=0.0, high=1000.0, tolerance=1.0, integer=True)
    asked = _drive(search, lambda x: x <= 333)
    assert all(x == int(x) for x in asked)
    assert search.boundary == 333.0


def test_refuses_a_condition_that_never_changes() -> None:
    """No change along the probes: there is no boundary in the bracket."""
    search = Bisection(low=0.0, high=10.0, tolerance=1.0)
    with pytest.raises(NotMonotone, match="holds at every probed value"):
        _drive(search, lambda x: True)


def test_refuses_a_non_monotone_condition_naming_the_value() -> None:
    """Holds, fails, holds along the probes: refused, naming where it changes again."""
    search = Bisection(low=0.0, high=400.0, tolerance=1.0, probes=5)
    with pytest.raises(NotMonotone, match="changes at 100 and again at 300"):
        _drive(search, lambda x: not 100 <= x < 300)
