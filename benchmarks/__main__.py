"""``python -m benchmarks [--quick] [--json FILE] [--markdown FILE]``: the performance report.

Runs each section with the interleaved-rounds harness (the token core), then the live section
(``live``: real HTTPS services on 127.0.0.1 under a concurrency of 64, our token endpoint and
our data server next to XRootD, see :mod:`benchmarks.live`), then the simulator section
(``sim``: ``benchmarks/day-10k.toml`` and ``benchmarks/day-100k.toml``, each once in a process of
its own, against the trio floor timed in the same run and a SimPy reference, see
:mod:`benchmarks.sim`), then the study section (``sweep``: a 16-run study on 1 and 2 Dask
workers, see :mod:`benchmarks.sweep`), prints the rich tables with PASS/MISS per target, and
optionally writes JSON and splices each markdown section into a document
(``--markdown docs/performance.md``). The exit status is 0 whether or not the targets are met:
this is a report, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from . import live, sim, sweep, tokens
from ._report import (
    CpuCounters,
    MachineLoad,
    SectionResult,
    machine_info,
    markdown_section,
    print_section,
    splice_markdown,
    to_json,
)
from ._timing import Section, SectionOptions, Settings, evaluate_all, run_interleaved

#: Every section, in run order: name -> factory.
SECTIONS: dict[str, Callable[[SectionOptions], Section]] = {
    "tokens": tokens.section,
}

#: ~45 s of timing for the token section: many short rounds pair the ratios closely in time.
FULL = Settings(rounds=21, seconds=0.12)
QUICK = Settings(rounds=5, seconds=0.04, calibration_floor=0.01)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure ops/s and paired ratios on this machine; print PASS/MISS per target.",
    )
    p.add_argument("--quick", action="store_true", help="short run (a smoke test, noisy)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    p.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="splice each section between its <!-- bench:NAME:start/end --> markers in FILE",
    )
    p.add_argument(
        "--section",
        action="append",
        choices=sorted([*SECTIONS, live.NAME, sim.NAME, sweep.NAME]),
        help="run only this section (repeatable; default: all)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the steps of our verify and mint one by one, and profile a scaled-down "
        "simulator run (where the time goes)",
    )
    p.add_argument(
        "--sim-out",
        type=Path,
        metavar="DIR",
        help="sim section: write each day's outputs (events.jsonl, summary.json...) to DIR/DAY "
        "(slower: the wall time then includes writing them)",
    )
    p.add_argument(
        "--sim-scale",
        type=int,
        metavar="N",
        help="sim section: run both days scaled down N times (default 1; 10 with --quick)",
    )
    p.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    p.add_argument("--seconds", type=float, help="override the seconds per benchmark per round")
    return p


def run_section(
    factory: Callable[[SectionOptions], Section],
    options: SectionOptions,
    settings: Settings,
    err: Console,
) -> SectionResult:
    """Build one section, time it, evaluate its ratios and release its resources."""
    start = time.perf_counter()
    counters = CpuCounters.read()
    section = factory(options)
    try:
        err.print(
            f"[dim]{section.title}: {len(section.benchmarks)} benchmarks, "
            f"setup {time.perf_counter() - start:.1f} s[/dim]"
        )
        measurements = run_interleaved(
            section.benchmarks,
            settings,
            order=section.run_order,
            progress=lambda msg: err.print(f"[dim]  {section.name}: {msg}[/dim]"),
        )
        problems = section.postcheck() if section.postcheck else []
    finally:
        if section.close:
            section.close()
    return SectionResult(
        section=section,
        measurements=measurements,
        ratios=evaluate_all(section.ratios, measurements),
        problems=problems,
        elapsed=time.perf_counter() - start,
        load=MachineLoad.between(counters, CpuCounters.read()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 even when a target is missed)."""
    args = _parser().parse_args(argv)
    base = QUICK if args.quick else FULL
    settings = Settings(
        rounds=args.rounds if args.rounds is not None else base.rounds,
        seconds=args.seconds if args.seconds is not None else base.seconds,
        calibration_floor=base.calibration_floor,
    )
    options = SectionOptions(quick=args.quick, breakdown=args.breakdown)
    # Piped or redirected (make bench | tee), rich would wrap the tables at 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=150)
    err = Console(stderr=True)
    info = machine_info()
    results: list[SectionResult] = []
    sim_result: sim.SimResult | None = None
    live_result: live.LiveResult | None = None
    sweep_result: sweep.SweepResult | None = None
    for name in args.section or [*SECTIONS, live.NAME, sim.NAME, sweep.NAME]:
        if name == sweep.NAME:
            sweep_result = sweep.measure(quick=args.quick, err=err)
            sweep.print_result(out, sweep_result, info)
            if args.markdown:
                splice_markdown(args.markdown, name, sweep.markdown_section(sweep_result, info))
            continue
        if name == live.NAME:
            try:
                live_result = live.measure(quick=args.quick, err=err)
            except Exception:
                # A report, not a test: a deployment that cannot start here (no free port, a
                # missing binary) is said, and the other sections still run.
                err.print(f"[bold red]live section failed:[/bold red]\n{traceback.format_exc()}")
                continue
            live.print_result(out, live_result, info)
            if args.markdown:
                splice_markdown(args.markdown, name, live.markdown_section(live_result, info))
            continue
        if name == sim.NAME:
            sim_result = sim.measure(
                quick=args.quick,
                breakdown=args.breakdown,
                out=args.sim_out,
                err=err,
                scale=args.sim_scale,
            )
            sim.print_result(out, sim_result, info)
            if args.markdown:
                splice_markdown(args.markdown, name, sim.markdown_section(sim_result, info))
            continue
        result = run_section(SECTIONS[name], options, settings, err)
        results.append(result)
        print_section(out, result, info, settings)
        if args.markdown:
            splice_markdown(args.markdown, name, markdown_section(result, info, settings))
    if args.markdown:
        err.print(f"[dim]wrote {args.markdown}[/dim]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = to_json(results, info, settings)
        if live_result is not None:
            doc["sections"][live.NAME] = live.to_json(live_result)
        if sim_result is not None:
            doc["sections"][sim.NAME] = sim.to_json(sim_result)
        if sweep_result is not None:
            doc["sections"][sweep.NAME] = sweep.to_json(sweep_result)
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        err.print(f"[dim]wrote {args.json}[/dim]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
