"""The interleaved-rounds timing harness shared by every benchmark section.

Machines here are shared and noisy (perf-notes.md), so one long run per benchmark would mostly
measure *when* it ran. Instead:

1. every benchmark is calibrated once (this also warms it up) to an operation count ``n`` that
   takes about ``seconds`` of wall time;
2. the benchmarks then run in ``rounds`` rounds; each round runs *every* benchmark once for its
   ``n`` operations, in an order rotated by one position per round so that no benchmark always
   runs first or right after the same neighbour;
3. a benchmark's figure is the median over rounds of its µs/op (and ops/s);
4. a ratio between two benchmarks is computed *paired*: the ratio in each round, then the median
   of those per-round ratios. Both sides of a pair ran seconds apart, under the same load, so
   the machine's drift cancels out of the ratio much better than out of the absolute figures.

The cyclic garbage collector is collected before and disabled during each timed run
(``time.perf_counter`` around ``run(n)``; the fixtures are ``gc.freeze``-d first so that the
collections between runs stay cheap); nothing else runs in the process meanwhile (progress is
printed between runs, never from a thread).

The thread's CPU time is recorded next to the wall time: their quotient, the *CPU share*, tells
how much of the wall time the benchmark actually ran. Well below 100 % the machine is busy and
the absolute figures are pessimistic; the paired ratios suffer much less (see above).

A benchmark is a :class:`Benchmark` whose ``run(n)`` performs ``n`` operations. The Python loop
that drives them is part of what is timed (about 20-40 ns per operation, which matters only for
sub-microsecond operations such as a cache hit; a real caller pays a loop and a call too).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Benchmark",
    "Measurement",
    "Ratio",
    "RatioKind",
    "RatioResult",
    "Section",
    "SectionOptions",
    "Settings",
    "calibrate",
    "evaluate",
    "evaluate_all",
    "run_interleaved",
    "time_run",
]


@dataclass(frozen=True, slots=True)
class Benchmark:
    """One thing to time.

    Attributes:
        key: stable identifier, used by ratios and in the JSON output (``raw.es256.verify``).
        label: what the table shows.
        run: performs ``n`` operations; its return value is ignored.
        group: table group heading (``raw cryptography``, ``ours``, ``reference``...).
        note: a short remark for the table (what exactly one operation is).
    """

    key: str
    label: str
    run: Callable[[int], object]
    group: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    """How long to measure.

    Attributes:
        rounds: interleaved rounds; the medians are over these.
        seconds: target wall time of one benchmark in one round.
        calibration_floor: calibration doubles ``n`` until one run takes at least this long.
    """

    rounds: int = 7
    seconds: float = 0.2
    calibration_floor: float = 0.02

    def __post_init__(self) -> None:
        if self.rounds < 1 or not self.seconds > 0 or not self.calibration_floor > 0:
            raise ValueError(f"invalid settings {self!r}")


@dataclass(slots=True)
class Measurement:
    """The timings of one benchmark: ``ops`` operations per round, ``seconds`` per round."""

    benchmark: Benchmark
    ops: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def cpu_share(self) -> list[float]:
        """Thread CPU time / wall time, one value per round (1.0 = never descheduled)."""
        return [c / s for c, s in zip(self.cpu_seconds, self.seconds, strict=True)]

    @property
    def us_per_op(self) -> list[float]:
        """µs per operation, one value per round."""
        return [s / self.ops * 1e6 for s in self.seconds]

    @property
    def ops_per_s(self) -> list[float]:
        """Operations per second, one value per round."""
        return [self.ops / s for s in self.seconds]

    @property
    def median_us(self) -> float:
        """Median µs/op over the rounds."""
        return statistics.median(self.us_per_op)

    @property
    def median_ops(self) -> float:
        """Median ops/s over the rounds (the reciprocal of :attr:`median_us` for odd rounds)."""
        return statistics.median(self.ops_per_s)

    @property
    def spread(self) -> float:
        """Relative spread of µs/op over the rounds: ``(max - min) / median`` (0 for one round)."""
        us = self.us_per_op
        return (max(us) - min(us)) / statistics.median(us) if len(us) > 1 else 0.0


RatioKind = Literal["ratio", "throughput", "extra_us"]


@dataclass(frozen=True, slots=True)
class Ratio:
    """A figure derived from the measurements, optionally with a target.

    Kinds:

    * ``ratio``: the paired median of ``ops/s(numerator) / ops/s(denominator)``; higher means
      the numerator is faster (1.0 = as fast, 0.75 = 75 % of the denominator's throughput).
    * ``throughput``: the median ops/s of ``numerator`` itself (no denominator).
    * ``extra_us``: the paired median of ``µs/op(numerator) - µs/op(denominator)``: what the
      numerator costs on top of the denominator (e.g. our layer above the raw crypto).

    Attributes:
        key: stable identifier for JSON.
        label: what the table shows.
        numerator: benchmark key.
        denominator: benchmark key; None exactly for ``throughput``.
        minimum: the target (the value must be >= it), or None for an informative figure.
        kind: see above.
    """

    key: str
    label: str
    numerator: str
    denominator: str | None = None
    minimum: float | None = None
    kind: RatioKind = "ratio"

    def __post_init__(self) -> None:
        if (self.kind == "throughput") != (self.denominator is None):
            raise ValueError(f"{self.key}: a denominator is needed exactly when kind != throughput")


@dataclass(frozen=True, slots=True)
class RatioResult:
    """A :class:`Ratio` evaluated: the per-round values and their median."""

    ratio: Ratio
    per_round: tuple[float, ...]
    value: float

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None for an informative figure."""
        if self.ratio.minimum is None:
            return None
        return self.value >= self.ratio.minimum


@dataclass(frozen=True, slots=True)
class Section:
    """A named group of benchmarks with its ratios, as ``__main__`` runs and reports it.

    Attributes:
        name: marker id in docs (``<!-- bench:{name}:start -->``) and JSON key.
        title: the markdown heading (``Token core``).
        benchmarks: what to time.
        ratios: targets and informative ratios.
        notes: lines about the fixtures (token size, pool size...) for the report.
        run_order: benchmark keys in run order (see :func:`run_interleaved`); default: as listed.
        postcheck: called after timing; returns problems found (e.g. tokens that expired
            during the run, which would make the verify figures meaningless).
        close: releases resources (temporary directories).
    """

    name: str
    title: str
    benchmarks: Sequence[Benchmark]
    ratios: Sequence[Ratio] = ()
    notes: Sequence[str] = ()
    run_order: Sequence[str] = ()
    postcheck: Callable[[], list[str]] | None = None
    close: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class SectionOptions:
    """What the command line asks of every section.

    Attributes:
        quick: smaller fixtures (the whole run must stay short).
        breakdown: also time the stages of the composite operations (where the time goes).
    """

    quick: bool = False
    breakdown: bool = False


def time_run(run: Callable[[int], object], n: int) -> tuple[float, float]:
    """Wall and thread-CPU seconds of ``run(n)``; the cyclic GC is collected, then disabled."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        cpu = time.thread_time()
        start = time.perf_counter()
        run(n)
        wall = time.perf_counter() - start
        return wall, time.thread_time() - cpu
    finally:
        if was_enabled:
            gc.enable()


def calibrate(bench: Benchmark, settings: Settings) -> int:
    """The operation count for which ``bench`` takes about ``settings.seconds`` (warms it up)."""
    n = 1
    while True:
        elapsed, _cpu = time_run(bench.run, n)
        if elapsed >= settings.calibration_floor:
            break
        # Aim 1.5x past the floor, at least doubling and at most 100x per step.
        aim = math.ceil(n * 1.5 * settings.calibration_floor / max(elapsed, 1e-9))
        n = min(n * 100, max(n * 2, aim))
    return max(1, round(n * settings.seconds / elapsed))


def run_interleaved(
    benchmarks: Sequence[Benchmark],
    settings: Settings,
    *,
    order: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Measurement]:
    """Calibrate, then time every benchmark once per round, rotating the order each round.

    Args:
        benchmarks: what to time.
        settings: rounds and seconds.
        order: benchmark keys in the order to run them (default: as given). Put the two sides
            of a paired ratio next to each other: they then run a fraction of a second apart.
        progress: receives one line per round (called between timed runs only).

    Returns:
        Measurements by benchmark key, in the order of ``benchmarks``.
    """
    by_key = {b.key: b for b in benchmarks}
    if len(by_key) != len(benchmarks):
        raise ValueError(f"duplicate benchmark keys in {[b.key for b in benchmarks]}")
    keys = list(order) if order else list(by_key)
    if sorted(keys) != sorted(by_key):
        raise ValueError(f"order {keys} is not a permutation of the benchmark keys")
    say = progress or (lambda _msg: None)
    # Fixtures live for the whole run: move them out of the collector's sight so that the
    # gc.collect() before each timed run costs microseconds, not milliseconds.
    gc.collect()
    gc.freeze()
    try:
        results = {b.key: Measurement(b, calibrate(b, settings)) for b in benchmarks}
        say(f"calibrated {len(benchmarks)} benchmarks")
        for r in range(settings.rounds):
            start = time.perf_counter()
            # Rotate by one each round, and run every other round backwards, so that no
            # benchmark is always first or always right after the same neighbour.
            shift = r % len(keys)
            sequence = [*keys[shift:], *keys[:shift]]
            for key in reversed(sequence) if r % 2 else sequence:
                m = results[key]
                wall, cpu = time_run(m.benchmark.run, m.ops)
                m.seconds.append(wall)
                m.cpu_seconds.append(cpu)
            say(f"round {r + 1}/{settings.rounds} ({time.perf_counter() - start:.1f} s)")
    finally:
        gc.unfreeze()
    return results


def evaluate(ratio: Ratio, measurements: Mapping[str, Measurement]) -> RatioResult:
    """The paired median of ``ratio`` over the rounds (see the module docstring)."""
    num = measurements[ratio.numerator]
    if ratio.denominator is None:
        per_round = num.ops_per_s
    else:
        den = measurements[ratio.denominator]
        if ratio.kind == "extra_us":
            pairs = zip(num.us_per_op, den.us_per_op, strict=True)
            per_round = [a - b for a, b in pairs]
        else:
            pairs = zip(num.ops_per_s, den.ops_per_s, strict=True)
            per_round = [a / b for a, b in pairs]
    return RatioResult(ratio, tuple(per_round), statistics.median(per_round))


def evaluate_all(
    ratios: Iterable[Ratio], measurements: Mapping[str, Measurement]
) -> list[RatioResult]:
    """:func:`evaluate` for each ratio whose benchmarks were measured."""
    return [
        evaluate(r, measurements)
        for r in ratios
        if r.numerator in measurements and (r.denominator is None or r.denominator in measurements)
    ]
