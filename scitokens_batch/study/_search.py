"""Threshold search: the boundary of a condition along one parameter, per seed, by bisection.

Sans-IO: a :class:`Bisection` says which values it wants evaluated (:meth:`Bisection.wanted`) and
is told whether the condition held there (:meth:`Bisection.tell`); the study runner evaluates
the wanted values of every seed together, so all cores stay busy.

First the ``probes`` evenly spaced values of ``[low, high]`` (ends included) are evaluated. The
condition must change exactly once along them (holds ... holds, fails ... fails, or the
reverse): otherwise there is no boundary in the bracket, or the condition is not monotone and
a bisection would find one of several boundaries by chance, and the search refuses, naming the
point. Then the bracket around the change is halved until it is at most ``tolerance`` wide. The
boundary reported is the value on the holding side (e.g. the longest outage tolerated).
"""

from __future__ import annotations

import attrs

__all__ = ["Bisection", "NotMonotone"]


class NotMonotone(Exception):
    """The condition does not change exactly once along the probed values."""


@attrs.define
class Bisection:
    """The search for one seed.

    Attributes:
        low: the bracket's low end.
        high: the bracket's high end.
        tolerance: stop when the bracket is at most this wide.
        probes: how many evenly spaced values are evaluated first.
        integer: values must be whole numbers (sizes in bytes).
    """

    low: float
    high: float
    tolerance: float
    probes: int = 5
    integer: bool = False
    results: dict[float, bool] = attrs.field(factory=dict)
    history: list[tuple[float, float]] = attrs.field(factory=list)
    #: (holding side, failing side) once the probes have been judged.
    bracket: tuple[float, float] | None = None

    def _grid(self) -> list[float]:
        step = (self.high - self.low) / (self.probes - 1)
        xs = [self.low + i * step for i in range(self.probes - 1)] + [self.high]
        return [float(round(x)) if self.integer else x for x in xs]

    def wanted(self) -> list[float]:
        """The values to evaluate next; empty when the search is done."""
        if self.bracket is None:
            return [x for x in self._grid() if x not in self.results]
        good, bad = self.bracket
        if abs(bad - good) <= self.tolerance:
            return []
        mid = (good + bad) / 2
        if self.integer:
            mid = float(round(mid))
        if mid in (good, bad):
            return []
        return [mid]

    def tell(self, x: float, holds: bool) -> None:
        """Record the condition's verdict at ``x``.

        Raises:
            NotMonotone: the probes do not show exactly one change (its message names the
                value where the pattern breaks).
        """
        self.results[x] = holds
        if self.bracket is None:
            grid = self._grid()
            if all(g in self.results for g in grid):
                self.bracket = self._judge_probes(grid)
                self.history.append(self.bracket)
            return
        good, bad = self.bracket
        self.bracket = (x, bad) if holds else (good, x)
        self.history.append(self.bracket)

    def _judge_probes(self, grid: list[float]) -> tuple[float, float]:
        verdicts = [self.results[x] for x in grid]
        changes = [i for i in range(1, len(grid)) if verdicts[i] != verdicts[i - 1]]
        if not changes:
            state = "holds" if verdicts[0] else "fails"
            raise NotMonotone(
                f"the condition {state} at every probed value from {grid[0]:g} to {grid[-1]:g}: "
                "expected it to change once in [low, high] (widen the bracket)"
            )
        if len(changes) > 1:
            probed = ", ".join(
                f"{x:g} {'holds' if v else 'fails'}" for x, v in zip(grid, verdicts, strict=True)
            )
            raise NotMonotone(
                f"the condition is not monotone: it changes at {grid[changes[0]]:g} and again "
                f"at {grid[changes[1]]:g} (probed: {probed})"
            )
        i = changes[0]
        return (grid[i - 1], grid[i]) if verdicts[i - 1] else (grid[i], grid[i - 1])

    @property
    def done(self) -> bool:
        """The bracket is judged and narrow enough."""
        return self.bracket is not None and not self.wanted()

    @property
    def boundary(self) -> float:
        """The last value (on the holding side) where the condition held."""
        assert self.bracket is not None
        return self.bracket[0]
