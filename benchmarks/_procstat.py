"""CPU time of processes and of the machine, from ``/proc`` (Linux; None elsewhere)."""

from __future__ import annotations

import os

__all__ = ["busy_and_steal", "machine_counters", "proc_cpu"]


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name may hold spaces: skip past it
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_counters() -> list[int] | None:
    """user nice system idle iowait irq softirq steal of ``/proc/stat`` (jiffies), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def busy_and_steal(before: list[int] | None, after: list[int] | None) -> tuple[float, float]:
    """Machine-wide busy and steal shares between two :func:`machine_counters`; nan if unknown."""
    if before is None or after is None:
        return float("nan"), float("nan")
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    return 1 - (delta[3] + delta[4]) / total, delta[7] / total
