"""Live mode runs on the wall clock (design.md: "the system clock in live mode").

A live ``clock_step`` fault steps one service's clock, not the machine's: each execute host
and data server of ours follows an offset file (:data:`OFFSET_FILE` in its work directory)
that the runner rewrites at the fault's time, and adds it to the skew of its
:class:`~scitokens_batch.actors.HostClock`, the same ``now`` virtual time steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .. import _files

__all__ = ["OFFSET_FILE", "follow_offset", "read_offset", "wall_now", "write_offset"]

#: The file (in a service's work directory) holding its clock offset in seconds.
OFFSET_FILE = "clock-offset"
#: How often a service looks at its offset file (a step takes effect within this).
FOLLOW_INTERVAL = 0.1


def wall_now() -> float:
    """Seconds since the Unix epoch, from the system clock."""
    return time.time()  # noqa: TID251 - the one clock of live mode


def write_offset(workdir: Path, offset: float) -> None:
    """Set a service's clock offset (atomically: it never reads half a number)."""
    _files.write_private(workdir / OFFSET_FILE, f"{offset!r}\n")


def read_offset(workdir: Path) -> float | None:
    """The offset in the file, or None when there is none or it is not a finite number."""
    try:
        value = float((workdir / OFFSET_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return value if math.isfinite(value) else None


async def follow_offset(
    workdir: Path, apply: Callable[[float], None], log: Any, *, interval: float = FOLLOW_INTERVAL
) -> None:
    """Call ``apply(offset)`` whenever the offset file changes (0 when it is removed); runs
    until cancelled. A tiny file read every ``interval`` is simpler and more portable than
    inotify, and a clock step is a rare event."""
    current = 0.0
    while True:
        offset = read_offset(workdir)
        if offset is None:  # removed: back to 0; not a finite number: ignored
            offset = current if (workdir / OFFSET_FILE).exists() else 0.0
        if offset != current:
            log.info("clock_step", offset=offset, step=offset - current)
            current = offset
            apply(offset)
        await trio.sleep(interval)
