"""Rendering of benchmark results: the machine line, rich tables, markdown and JSON.

The markdown of a section is spliced into a document between ``<!-- bench:NAME:start -->`` and
``<!-- bench:NAME:end -->``; everything outside the markers is left as it is, so hand-written
text and other sections (the simulator benchmarks) can live in the same file.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._timing import Measurement, RatioResult, Section, Settings

__all__ = [
    "CpuCounters",
    "MachineLoad",
    "SectionResult",
    "cpu_share",
    "load_line",
    "machine_info",
    "machine_line",
    "markdown_section",
    "print_section",
    "splice_markdown",
    "to_json",
]


@dataclass(frozen=True, slots=True)
class CpuCounters:
    """The machine-wide ``cpu`` line of ``/proc/stat`` (jiffies summed over all CPUs)."""

    total: int
    idle: int
    steal: int

    @classmethod
    def read(cls) -> CpuCounters | None:
        """The current counters, or None where ``/proc/stat`` does not exist."""
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
        steal = fields[7] if len(fields) > 7 else 0
        return cls(total=sum(fields[:8]), idle=fields[3] + fields[4], steal=steal)


@dataclass(frozen=True, slots=True)
class MachineLoad:
    """How busy the whole machine was while a section ran (from two :class:`CpuCounters`).

    Attributes:
        busy: fraction of all CPUs' time that was not idle (this benchmark included: one
            process on one core is ``1 / cores``).
        steal: fraction of all CPUs' time the hypervisor gave to other guests.
    """

    busy: float
    steal: float

    @classmethod
    def between(cls, before: CpuCounters | None, after: CpuCounters | None) -> MachineLoad | None:
        """The load between two samples, or None when unknown."""
        if before is None or after is None or after.total <= before.total:
            return None
        total = after.total - before.total
        idle = after.idle - before.idle
        return cls(busy=1 - idle / total, steal=(after.steal - before.steal) / total)


@dataclass(frozen=True, slots=True)
class SectionResult:
    """Everything measured for one section."""

    section: Section
    measurements: Mapping[str, Measurement]
    ratios: Sequence[RatioResult]
    problems: Sequence[str]
    elapsed: float
    load: MachineLoad | None = None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, str]:
    """CPU, cores, Python and library versions, date and load: what the numbers depend on."""
    try:
        from cryptography.hazmat.backends.openssl import backend

        openssl = str(backend.openssl_version_text())
    except Exception:  # a report line must not crash the report
        openssl = "n/a"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "usable_cores": str(usable),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": _version("cryptography"),
        "openssl": openssl,
        "pyjwt": _version("PyJWT"),
        "scitokens": _version("scitokens"),
        "platform": platform.platform(terse=True),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": " ".join(f"{x:.2f}" for x in load),
    }


def machine_line(info: Mapping[str, str]) -> str:
    """One line naming the machine and versions, for the table caption and the docs."""
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable) · "
        f"{info['python']} · cryptography {info['cryptography']} ({info['openssl']}) · "
        f"PyJWT {info['pyjwt']} · scitokens {info['scitokens']} · {info['platform']} · "
        f"{info['date']} · load avg at start {info['load_at_start']}"
    )


def method_line(settings: Settings) -> str:
    """How the figures were obtained, in one line."""
    return (
        f"{settings.rounds} interleaved rounds × ~{settings.seconds:g} s per benchmark; "
        "medians over rounds; ratios paired per round (median of per-round ratios); "
        "GC off while timing; one core."
    )


def cpu_share(result: SectionResult) -> tuple[float, float]:
    """Median and minimum CPU share over every timed run of the section."""
    shares = [x for m in result.measurements.values() for x in m.cpu_share]
    return statistics.median(shares), min(shares)


def load_line(result: SectionResult) -> str:
    """How busy the machine was: our CPU share, all CPUs' busy time and hypervisor steal.

    The CPU share (thread CPU time / wall time) only sees contention inside this OS; a shared
    host (steal, a busy SMT sibling, clock changes) slows the benchmark without lowering it,
    which is why the spread column is the better warning sign.
    """
    med, low = cpu_share(result)
    text = f"CPU share of the timed runs: median {med:.0%}, lowest {low:.0%}"
    cores = os.cpu_count() or 1
    if result.load is not None:
        text += (
            f"; all {cores} CPUs {result.load.busy:.0%} busy during the section "
            f"(this process alone ≈ {1 / cores:.0%}), steal {result.load.steal:.1%}"
        )
    if med < 0.9 or (result.load is not None and result.load.busy > 1.3 / cores):
        text += "; machine shared: absolute figures are pessimistic, paired ratios more robust"
    return text + "."


def _ops(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e4:
        return f"{value / 1e3:.1f} k"
    if value >= 1e3:
        return f"{value / 1e3:.2f} k"
    return f"{value:.0f}"


def _us(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_value(result: RatioResult) -> str:
    """The figure in its unit: ``0.82×``, ``612 k/s`` or ``+14.3 µs``."""
    kind, v = result.ratio.kind, result.value
    if kind == "throughput":
        return f"{_ops(v)}/s"
    if kind == "extra_us":
        return f"{v:+.1f} µs"
    return f"{v:.2f}×"


def format_target(result: RatioResult) -> str:
    """The target as text, or an em dash for informative figures."""
    minimum = result.ratio.minimum
    if minimum is None:
        return "—"
    if result.ratio.kind == "throughput":
        return f">= {_ops(minimum)}/s"
    if result.ratio.kind == "extra_us":
        return f">= {minimum:+.1f} µs"
    return f">= {minimum:.2f}×"


def verdict(result: RatioResult) -> str:
    """``PASS``, ``MISS`` or ``info``."""
    passed = result.passed
    return "info" if passed is None else ("PASS" if passed else "MISS")


def _groups(measurements: Mapping[str, Measurement]) -> dict[str, list[Measurement]]:
    groups: dict[str, list[Measurement]] = {}
    for m in measurements.values():
        groups.setdefault(m.benchmark.group, []).append(m)
    return groups


def print_section(
    console: Console, result: SectionResult, info: Mapping[str, str], settings: Settings
) -> None:
    """The benchmark table and the ratio table of one section, with the machine line."""
    table = Table(
        title=f"{result.section.title} — benchmarks",
        caption=machine_line(info),
        caption_justify="left",
    )
    table.add_column("benchmark")
    table.add_column("ops/s", justify="right")
    table.add_column("µs/op", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("what one op is", style="dim")
    for i, (group, ms) in enumerate(_groups(result.measurements).items()):
        if i:
            table.add_section()
        table.add_row(f"[bold]{group}[/bold]", "", "", "", "")
        for m in ms:
            table.add_row(
                f"  {m.benchmark.label}",
                _ops(m.median_ops),
                _us(m.median_us),
                f"{m.spread:.0%}",
                m.benchmark.note,
            )
    console.print(table)

    ratios = Table(title=f"{result.section.title} — targets and ratios (paired per round)")
    ratios.add_column("figure")
    ratios.add_column("value", justify="right")
    ratios.add_column("range over rounds", justify="right", style="dim")
    ratios.add_column("target", justify="right")
    ratios.add_column("result", justify="center")
    styles = {"PASS": "[bold green]PASS[/]", "MISS": "[bold red]MISS[/]", "info": "[dim]info[/]"}
    for r in result.ratios:
        lo, hi = min(r.per_round), max(r.per_round)
        span = (
            f"{_ops(lo)}–{_ops(hi)}"
            if r.ratio.kind == "throughput"
            else f"{lo:.1f}–{hi:.1f}"
            if r.ratio.kind == "extra_us"
            else f"{lo:.2f}–{hi:.2f}"
        )
        ratios.add_row(r.ratio.label, format_value(r), span, format_target(r), styles[verdict(r)])
    console.print(ratios)
    console.print(
        f"[dim]{method_line(settings)} Section took {result.elapsed:.0f} s. "
        f"{load_line(result)}[/dim]"
    )
    for p in result.problems:
        console.print(f"[bold red]PROBLEM:[/bold red] {p}")
    missed = [r for r in result.ratios if r.passed is False]
    if missed:
        console.print(
            f"[bold red]MISS: {len(missed)} target(s) not met:[/bold red] "
            + "; ".join(f"{r.ratio.label} = {format_value(r)}" for r in missed)
        )
    elif any(r.passed for r in result.ratios):
        console.print("[bold green]All targets met.[/bold green]")


def markdown_section(result: SectionResult, info: Mapping[str, str], settings: Settings) -> str:
    """The markdown block of one section, markers included."""
    name = result.section.name
    lines = [
        f"<!-- bench:{name}:start -->",
        f"## {result.section.title}",
        "",
        f"_Generated by `python -m benchmarks --markdown docs/performance.md` (`make bench`); "
        f"the text between the `bench:{name}` markers is replaced on every run._",
        "",
        f"**Machine:** {machine_line(info)}",
        "",
        f"**Method:** {method_line(settings)} Section took {result.elapsed:.0f} s. "
        f"{load_line(result)}",
        "",
    ]
    lines += [f"- {note}" for note in result.section.notes]
    lines += [
        "",
        "| benchmark | ops/s | µs/op | spread | what one op is |",
        "|---|---:|---:|---:|---|",
    ]
    for group, ms in _groups(result.measurements).items():
        lines.append(f"| **{group}** | | | | |")
        for m in ms:
            lines.append(
                f"| {m.benchmark.label} | {_ops(m.median_ops)} | {_us(m.median_us)} "
                f"| {m.spread:.0%} | {m.benchmark.note} |"
            )
    lines += [
        "",
        "| figure (paired per round) | value | target | result |",
        "|---|---:|---:|:---:|",
    ]
    for r in result.ratios:
        mark = {"PASS": "**PASS**", "MISS": "**MISS**", "info": "info"}[verdict(r)]
        lines.append(f"| {r.ratio.label} | {format_value(r)} | {format_target(r)} | {mark} |")
    if result.problems:
        lines += ["", *(f"- **Problem:** {p}" for p in result.problems)]
    lines += ["", f"<!-- bench:{name}:end -->"]
    return "\n".join(lines)


def splice_markdown(path: Path, name: str, block: str) -> None:
    """Replace the ``bench:NAME`` block of ``path`` in place (append it when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->",
        re.DOTALL,
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def to_json(
    results: Sequence[SectionResult], info: Mapping[str, str], settings: Settings
) -> dict[str, Any]:
    """A JSON-able document with every per-round figure (for comparing runs later)."""
    sections: dict[str, Any] = {}
    for res in results:
        sections[res.section.name] = {
            "title": res.section.title,
            "notes": list(res.section.notes),
            "elapsed_s": res.elapsed,
            "machine_busy": res.load.busy if res.load else None,
            "machine_steal": res.load.steal if res.load else None,
            "problems": list(res.problems),
            "benchmarks": {
                key: {
                    "label": m.benchmark.label,
                    "group": m.benchmark.group,
                    "note": m.benchmark.note,
                    "ops_per_round": m.ops,
                    "median_ops_per_s": m.median_ops,
                    "median_us_per_op": m.median_us,
                    "spread": m.spread,
                    "us_per_op": m.us_per_op,
                    "cpu_share": m.cpu_share,
                }
                for key, m in res.measurements.items()
            },
            "ratios": {
                r.ratio.key: {
                    "label": r.ratio.label,
                    "kind": r.ratio.kind,
                    "numerator": r.ratio.numerator,
                    "denominator": r.ratio.denominator,
                    "value": r.value,
                    "per_round": list(r.per_round),
                    "minimum": r.ratio.minimum,
                    "result": verdict(r),
                }
                for r in res.ratios
            },
        }
    return {
        "machine": dict(info),
        "settings": {"rounds": settings.rounds, "seconds": settings.seconds},
        "sections": sections,
    }
