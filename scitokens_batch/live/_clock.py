"""Live mode runs on the wall clock (design.md: "the system clock in live mode")."""

from __future__ import annotations

import time

__all__ = ["wall_now"]


def wall_now() -> float:
    """Seconds since the Unix epoch, from the system clock."""
    return time.time()  # noqa: TID251 - the one clock of live mode
