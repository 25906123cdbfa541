"""Capped exponential backoff for retries, with optional deterministic jitter.

Pure: no clock and no module-level random.  The caller keeps the attempt count and sleeps; a
jittered delay draws from the ``random.Random`` the caller passes in (one per actor, seeded
from the scenario, design.md "Determinism"), so a run replays exactly.

The token manager retries a failed refresh with ``Backoff(first=30, maximum=600)``: 30 s,
60 s, 120 s, 240 s, 480 s, then 600 s for every later attempt.
"""

from __future__ import annotations

import math
import random
from typing import Any, final

import attrs
from attrs import validators as _v

__all__ = ["Backoff"]


def _finite_number(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    """Accept a finite int or float; refuse anything else (``bool``, ``str``, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"'{attribute.name}' must be an int or a float "
            f"(got {value!r} that is a {type(value)!r})."
        )
    if not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be finite (got {value!r}).")


def _at_least_first(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    """Reject a maximum smaller than the first delay."""
    if value < instance.first:
        raise ValueError(f"'{attribute.name}' must be >= first={instance.first!r} (got {value!r}).")


@final
@attrs.frozen(kw_only=True, slots=True)
class Backoff:
    """Delays before retry ``attempt`` 0, 1, 2, ...: ``first * factor**attempt``, capped.

    Attributes:
        first: the delay before the first retry (attempt 0), seconds, > 0.
        maximum: the cap, seconds, >= ``first``.
        factor: growth per attempt, >= 1; 2 doubles.
        jitter: fraction of each delay that may be randomly taken off, in [0, 1).  With
            ``jitter=0.1`` a delay ``d`` becomes a uniform draw in ``(0.9 d, d]``, so jitter
            never exceeds ``maximum`` and spreads clients that failed together.
    """

    first: float = attrs.field(validator=_v.and_(_finite_number, _v.gt(0.0)))
    maximum: float = attrs.field(validator=_v.and_(_finite_number, _at_least_first))
    factor: float = attrs.field(default=2.0, validator=_v.and_(_finite_number, _v.ge(1.0)))
    jitter: float = attrs.field(
        default=0.0, validator=_v.and_(_finite_number, _v.ge(0.0), _v.lt(1.0))
    )

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Return the delay in seconds before retry number ``attempt``.

        Without jitter the result is exact: ``attempt`` 0 gives ``first``, each next attempt
        multiplies by ``factor``, and nothing exceeds ``maximum``; the sequence never
        decreases.

        Args:
            attempt: how many retries came before this one; 0 for the first retry.
            rng: the caller's seeded generator.  Required when ``jitter`` > 0 (exactly one
                number is drawn a call); never used when ``jitter`` is 0.

        Returns:
            The delay, in ``((1 - jitter) * d, d]`` where ``d`` is the capped exponential.

        Raises:
            TypeError: ``attempt`` is not an int.
            ValueError: ``attempt`` is negative, or ``jitter`` > 0 and no ``rng`` was given.
        """
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            raise TypeError(f"attempt must be an int (got {attempt!r})")
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0 (got {attempt})")
        try:
            grown = self.first * self.factor**attempt
        except OverflowError:  # float ** huge int; the cap applies anyway
            grown = math.inf
        base = float(min(grown, self.maximum))
        if self.jitter == 0:
            return base
        if rng is None:
            raise ValueError(
                f"jitter={self.jitter!r} needs a random source: pass rng=<the actor's "
                "random.Random>"
            )
        return base * (1.0 - self.jitter * rng.random())
