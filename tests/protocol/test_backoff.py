"""Tests for Backoff: capped exponential retry delays with optional seeded jitter."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.protocol._backoff import Backoff


@st.composite
def backoffs(draw: st.DrawFn, *, jitter: bool = False) -> Backoff:
    """Any valid Backoff; with ``jitter=False`` its jitter is 0."""
    first = draw(st.floats(1e-3, 1e6))
    maximum = first * draw(st.floats(1.0, 1e4))
    factor = draw(st.floats(1.0, 10.0))
    j = draw(st.floats(0.0, 0.99)) if jitter else 0.0
    return Backoff(first=first, maximum=maximum, factor=factor, jitter=j)


attempts = st.integers(0, 3000)


class TestSchedule:
    """Exact delays without jitter."""

    def test_token_manager_schedule(self) -> None:
        """retry_backoff 30 s doubling up to retry_backoff_max 10 min gives 30..480 then 600."""
        b = Backoff(first=30, maximum=600)
        assert [b.delay(a) for a in range(8)] == [30, 60, 120, 240, 480, 600, 600, 600]

    def test_returns_floats(self) -> None:
        """Delays are floats even when the fields were given as ints."""
        b = Backoff(first=30, maximum=600)
        assert all(type(b.delay(a)) is float for a in (0, 1, 10))

    def test_other_factor(self) -> None:
        """factor=3 triples each time."""
        b = Backoff(first=1, maximum=100, factor=3)
        assert [b.delay(a) for a in range(6)] == [1, 3, 9, 27, 81, 100]

    def test_factor_one_is_constant(self) -> None:
        """factor=1 retries at a fixed interval."""
        b = Backoff(first=5, maximum=60, factor=1)
        assert {b.delay(a) for a in range(50)} == {5.0}

    def test_first_equals_maximum(self) -> None:
        """first == maximum retries at a fixed interval."""
        b = Backoff(first=7, maximum=7)
        assert [b.delay(a) for a in range(3)] == [7, 7, 7]

    def test_huge_attempt_does_not_overflow(self) -> None:
        """An attempt count whose power overflows a float still gives the maximum."""
        assert Backoff(first=30, maximum=600).delay(10**6) == 600.0


class TestValidation:
    """Bad parameters and attempts are refused with a message naming them."""

    @pytest.mark.parametrize(
        ("kwargs", "exc", "match"),
        [
            ({"first": 0, "maximum": 1}, ValueError, "'first' must be > 0"),
            ({"first": -1, "maximum": 1}, ValueError, "'first' must be > 0"),
            ({"first": 5, "maximum": 1}, ValueError, "'maximum' must be >= first=5"),
            ({"first": 1, "maximum": 2, "factor": 0.5}, ValueError, "'factor' must be >= 1"),
            ({"first": 1, "maximum": 2, "jitter": -0.1}, ValueError, "'jitter' must be >= 0"),
            ({"first": 1, "maximum": 2, "jitter": 1}, ValueError, "'jitter' must be < 1"),
            ({"first": math.nan, "maximum": 2}, ValueError, "'first' must be finite"),
            ({"first": 1, "maximum": math.inf}, ValueError, "'maximum' must be finite"),
            ({"first": "1", "maximum": 2}, TypeError, "'first' must be an int or a float"),
            ({"first": 1, "maximum": True}, TypeError, "'maximum' must be an int or a float"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
        """Each invalid field raises on construction, naming the field."""
        with pytest.raises(exc, match=match):
            Backoff(**kwargs)

    def test_negative_attempt(self) -> None:
        """Attempts count from 0."""
        with pytest.raises(ValueError, match="attempt must be >= 0"):
            Backoff(first=1, maximum=2).delay(-1)

    @pytest.mark.parametrize("attempt", [1.0, True, "1"])
    def test_attempt_must_be_int(self, attempt: Any) -> None:
        """A non-int attempt (bool included) is a TypeError."""
        with pytest.raises(TypeError, match="attempt must be an int"):
            Backoff(first=1, maximum=2).delay(attempt)

    def test_keyword_only_and_frozen(self) -> None:
        """Backoff takes keywords only and cannot be changed."""
        with pytest.raises(TypeError):
            Backoff(1, 2)  # type: ignore[call-arg]
        b = Backoff(first=1, maximum=2)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            b.first = 3  # type: ignore[misc]


class TestJitter:
    """Jitter draws from the caller's Random, and only when asked to."""

    def test_jitter_needs_rng(self) -> None:
        """A jittered Backoff refuses to guess a random source."""
        with pytest.raises(ValueError, match="needs a random source"):
            Backoff(first=1, maximum=2, jitter=0.1).delay(0)

    def test_no_jitter_never_draws(self) -> None:
        """Without jitter the rng passed in is left untouched."""
        rng = random.Random(7)
        before = rng.getstate()
        Backoff(first=1, maximum=2).delay(3, rng=rng)
        assert rng.getstate() == before

    def test_same_seed_same_delays(self) -> None:
        """Two generators with the same seed give the same jittered schedule."""
        b = Backoff(first=30, maximum=600, jitter=0.2)
        r1, r2 = random.Random(42), random.Random(42)
        assert [b.delay(a, rng=r1) for a in range(10)] == [b.delay(a, rng=r2) for a in range(10)]

    def test_draws_one_number_a_call(self) -> None:
        """Each jittered delay consumes exactly one rng.random()."""
        rng, twin = random.Random(3), random.Random(3)
        Backoff(first=30, maximum=600, jitter=0.5).delay(2, rng=rng)
        twin.random()
        assert rng.getstate() == twin.getstate()

    @given(b=backoffs(jitter=True), attempt=attempts, seed=st.integers(0, 2**32))
    def test_jitter_bounds(self, b: Backoff, attempt: int, seed: int) -> None:
        """A jittered delay lies in ((1 - jitter) * d, d] and never above maximum."""
        d = b.delay(attempt, rng=random.Random(seed))
        plain = attrs.evolve(b, jitter=0.0).delay(attempt)
        assert (1 - b.jitter) * plain <= d <= plain <= b.maximum


class TestProperties:
    """Properties of the un-jittered schedule for any valid parameters."""

    @given(b=backoffs())
    def test_attempt_zero_is_first(self, b: Backoff) -> None:
        """Attempt 0 waits exactly ``first``."""
        assert b.delay(0) == b.first

    @given(b=backoffs(), attempt=attempts)
    def test_monotone(self, b: Backoff, attempt: int) -> None:
        """A later attempt never waits less than an earlier one."""
        assert b.delay(attempt) <= b.delay(attempt + 1)

    @given(b=backoffs(), attempt=attempts)
    def test_never_above_maximum(self, b: Backoff, attempt: int) -> None:
        """No delay exceeds ``maximum``, and every delay is at least ``first``."""
        assert b.first <= b.delay(attempt) <= b.maximum

    @given(b=backoffs(), attempt=attempts)
    def test_exponential_below_the_cap(self, b: Backoff, attempt: int) -> None:
        """Below the cap a delay is ``first * factor**attempt``."""
        try:
            grown = b.first * b.factor**attempt
        except OverflowError:
            grown = math.inf
        assert b.delay(attempt) == min(grown, b.maximum)
