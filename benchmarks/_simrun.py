"""``python -m benchmarks._simrun FILE [--set K=V ...] [--out DIR] [--progress LABEL]``.

One simulator day in a process of its own, so that its peak RSS is its own (``VmHWM``, see
:func:`peak_rss_bytes`):
``load_scenario(FILE, overrides)`` then ``run_virtual(spec)`` once, no outputs unless ``--out``.
Prints one JSON line on stdout with what :mod:`benchmarks.sim` reports (wall and CPU seconds of
``run_virtual``, peak RSS, the summary, the ``[expect]`` results, the peak number of
concurrently running jobs, the signature checks and memo hits); progress goes to stderr.

Signature checks and memo hits are read from the summary (``data.signature_checks`` and
``data.signature_memo_hits``). Where the summary does not have those keys at all (a checkout
from before the verifier's memo), the signatures are counted by wrapping
``tokens._verifier.signature_valid`` for the run, and the output says so
(``signature_source``); a key that is present but null is reported as not reported.

Exit status: 0 (the run's own ``[expect]`` results are in the JSON line, not the status), 2 on
bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scitokens_batch.errors import LocalInputError
from scitokens_batch.metrics import Event, SummaryBuilder
from scitokens_batch.scenario import load_scenario, run_virtual
from scitokens_batch.tokens import _verifier as verifier_module

from ._report import CpuCounters, MachineLoad

__all__ = ["RunningPeak", "main", "peak_rss_bytes", "summary_reports_signatures"]

#: Events after which a job no longer runs on a slot.
_STOPS = frozenset({"terminated", "evicted", "held", "removed"})


class RunningPeak:
    """A recorder observer: the peak number of jobs running at once.

    ``execute`` starts a job on a slot; ``terminated``, ``evicted``, ``held`` or ``removed``
    ends it there. A set of job ids (not a counter) so that a stop of a job that was not
    running cannot drive the count down.
    """

    __slots__ = ("events", "peak", "running")

    def __init__(self) -> None:
        self.running: set[Any] = set()
        self.peak = 0
        self.events = 0

    def __call__(self, ev: Event) -> None:
        """See one event."""
        self.events += 1
        kind = ev.kind
        if kind == "execute":
            running = self.running
            running.add(ev.fields["job"])
            if len(running) > self.peak:
                self.peak = len(running)
        elif kind in _STOPS:
            self.running.discard(ev.fields.get("job"))


def peak_rss_bytes() -> tuple[int, str]:
    """This process's peak RSS in bytes, and where it was read.

    ``VmHWM`` of ``/proc/self/status`` where it exists: Linux carries ``ru_maxrss`` over
    ``fork`` and ``execve``, so a child's ``ru_maxrss`` is at least its parent's RSS at the fork
    (the benchmark's parent holds the floor's sleep plans), while ``VmHWM`` is the high-water
    mark of the child's own address space. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on
    macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (int(peak) if sys.platform == "darwin" else int(peak) * 1024), "ru_maxrss"


def summary_reports_signatures() -> bool:
    """Whether summary.json has ``data.signature_checks`` (the verifier's memo is merged)."""
    return "signature_checks" in SummaryBuilder().figures()["data"]


#: The module-level name ``Verifier.check`` calls; wrapped for the run only (fallback).
_SIGNATURE_VALID = "signature_valid"


class _SignatureCounter:
    """Counts calls of ``tokens._verifier.signature_valid`` while installed (fallback only)."""

    def __init__(self) -> None:
        self.calls = 0
        self._original: Callable[[Any, Any], bool] = getattr(verifier_module, _SIGNATURE_VALID)

    def __enter__(self) -> _SignatureCounter:
        original = self._original

        def signature_valid(token: Any, key: Any) -> bool:
            self.calls += 1
            return original(token, key)

        setattr(verifier_module, _SIGNATURE_VALID, signature_valid)
        return self

    def __exit__(self, *_exc: object) -> None:
        setattr(verifier_module, _SIGNATURE_VALID, self._original)


def _progress(label: str) -> Callable[[float, float], None]:
    start = time.perf_counter()
    marks = iter(range(10, 101, 10))
    state = [next(marks)]

    def progress(done: float, total: float) -> None:
        pct = 100 * done / total
        if state[0] and pct >= state[0]:
            print(
                f"{label} {pct:3.0f} % of virtual time after "
                f"{time.perf_counter() - start:.0f} s wall",
                file=sys.stderr,
                flush=True,
            )
            state[0] = next(marks, 0)

    return progress


def measure(
    file: Path, overrides: Sequence[str], out: Path | None, label: str | None
) -> dict[str, Any]:
    """Run the day once and return the JSON document (see the module docstring)."""
    spec = load_scenario(file, overrides=list(overrides)) if overrides else load_scenario(file)
    peak = RunningPeak()
    from_summary = summary_reports_signatures()
    counter = _SignatureCounter()
    rss_before, _ = peak_rss_bytes()
    counters = CpuCounters.read()
    cpu0 = time.process_time()
    start = time.perf_counter()
    if from_summary:
        result = run_virtual(
            spec, out=out, observers=[peak], progress=_progress(label) if label else None
        )
    else:
        with counter:
            result = run_virtual(
                spec, out=out, observers=[peak], progress=_progress(label) if label else None
            )
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    load = MachineLoad.between(counters, CpuCounters.read())
    rss_peak, rss_source = peak_rss_bytes()
    summary = {k: v for k, v in result.summary.items() if not k.startswith("_")}
    data = summary.get("data", {})
    if from_summary:
        checks, hits = data.get("signature_checks"), data.get("signature_memo_hits")
        source = "summary" if checks is not None else "unreported"
    else:
        checks, hits, source = counter.calls, None, "wrapped"
    return {
        "file": str(file),
        "scenario": spec.meta.name,
        "overrides": list(overrides),
        "out": str(out) if out is not None else None,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": rss_peak,
        "rss_source": rss_source,
        "machine_busy": load.busy if load else None,
        "machine_steal": load.steal if load else None,
        "cores": os.cpu_count(),
        "hosts": sum(h.count for h in spec.execute_hosts),
        "slots": sum(h.count * h.slots for h in spec.execute_hosts),
        "peak_running": peak.peak,
        "events_observed": peak.events,
        "signature_source": source,
        "signature_checks": checks,
        "signature_memo_hits": hits,
        "checks": [
            {"check": c.line, "passed": c.passed, "actual": c.actual} for c in result.checks
        ],
        "summary": summary,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks._simrun", description=__doc__)
    p.add_argument("file", type=Path, help="the scenario TOML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    p.add_argument("--out", type=Path, metavar="DIR", help="write the run's outputs to DIR")
    p.add_argument("--progress", metavar="LABEL", help="say the progress on stderr")
    args = p.parse_args(argv)
    try:
        doc = measure(args.file, args.overrides, args.out, args.progress)
    except LocalInputError as exc:
        print(f"benchmarks._simrun: {args.file}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
