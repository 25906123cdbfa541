"""The human summary printed after a run (a rich table; plain text when not a terminal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

__all__ = ["summary_table"]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _exact(v: Any) -> str:
    """A check's actual value with every digit it has: ``0.0004`` must not print as ``0.0``
    beside ``headroom.min_s > 0 | pass`` (repr is the shortest text that reads back exactly)."""
    if isinstance(v, float):
        return repr(v)
    return _fmt(v)


def _attempts(issuer: Mapping[str, Any]) -> str:
    attempts = issuer.get("attempts")
    if attempts is None:  # a summary.json written before issuer.attempts existed
        return "-"
    return f"{attempts:,} ({issuer.get('unreachable', 0):,})"


def summary_table(summary: Mapping[str, Any], *, wall_seconds: float | None = None) -> Table:
    """The headline figures of a summary.json, and each expectation with its verdict.

    Args:
        summary: the summary.json document.
        wall_seconds: the run's duration (run.json; summary.json holds no wall-clock fact).
    """
    wall = "" if wall_seconds is None else f", {wall_seconds:.1f} s wall"
    table = Table(
        title=f"scenario {summary.get('scenario')!r}, seed {summary.get('seed')} "
        f"({summary.get('events', 0):,} events{wall})",
        show_header=True,
        header_style="bold",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    jobs, tokens, data = summary["jobs"], summary["tokens"], summary["data"]
    head, issuer = summary["headroom"], summary["issuer"]
    rows: list[tuple[str, Any]] = [
        (
            "jobs submitted / completed / failed",
            f"{jobs['submitted']:,} / {jobs['completed']:,} / {jobs['failed']:,}",
        ),
        (
            "jobs running / idle / held at end",
            f"{jobs['running']} / {jobs['idle']} / {jobs['held']}",
        ),
        ("holds by code", ", ".join(f"{k}: {v}" for k, v in jobs["holds_by_code"].items()) or "-"),
        (
            "tokens minted / renewed / refresh failures",
            f"{tokens['minted']:,} / {tokens['renewed']:,} / {tokens['refresh_failures']:,}",
        ),
        ("data accesses / granted", f"{data['accesses']:,} / {data['granted']:,}"),
    ]
    rows += [(f"  denied: {r}", n) for r, n in data["denied"].items() if n]
    rows += [
        ("expired at use", data["expired_at_use"]),
        ("accepted after exp (must be 0)", data["accepted_after_exp"]),
        (
            "headroom at use min / p01 / p50 (s)",
            f"{_fmt(head['min_s'])} / {_fmt(head['p01_s'])} / {_fmt(head['p50_s'])}",
        ),
        (
            "issuer requests / peak rps / errors",
            f"{issuer['requests']:,} / {issuer['peak_rps']} / {_fmt(issuer['errors'])}",
        ),
        # Beside requests: attempts include those a down issuer never saw (a retry storm).
        ("issuer attempts (unanswered)", _attempts(issuer)),
    ]
    if summary.get("transfers", {}).get("done") or summary.get("transfers", {}).get("failed"):
        rows.append(
            (
                "transfers done / failed",
                f"{summary['transfers']['done']} / {summary['transfers']['failed']}",
            )
        )
    for name, value in rows:
        table.add_row(name, _fmt(value))
    for exp in summary.get("expectations", []):
        verdict = "[green]pass[/green]" if exp["passed"] else "[bold red]FAIL[/bold red]"
        table.add_row(f"check: {exp['check']}", f"{verdict} ({_exact(exp.get('actual'))})")
    return table
