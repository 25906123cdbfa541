"""Small pieces every actor uses: clocks, ids, the logger type."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

__all__ = ["Clock", "HostClock", "Logger", "new_jti", "new_secret"]

#: A clock: absolute unix seconds (virtual or wall). Actors never read time any other way.
Clock: TypeAlias = Callable[[], float]
#: A structlog bound logger (typed loosely: structlog's own protocol is not exported for mypy).
Logger: TypeAlias = Any


@attrs.define
class HostClock:
    """A host's clock: true time plus a skew that a ``clock_step`` fault can change.

    Attributes:
        true_now: the world's true clock.
        skew: this host's clock minus true time, in seconds (may be negative).
    """

    true_now: Clock
    skew: float = 0.0

    def __call__(self) -> float:
        return self.true_now() + self.skew


def new_jti(rng: random.Random) -> str:
    """A UUID4-shaped ``jti`` drawn from ``rng`` (A5: unique within the issuer; reproducible)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def new_secret(rng: random.Random, prefix: str) -> str:
    """An opaque secret such as a refresh token, drawn from ``rng``."""
    return f"{prefix}{rng.getrandbits(192):048x}"
