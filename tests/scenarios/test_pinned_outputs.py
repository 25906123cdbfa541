"""Pinned outputs: speed work (issue 10) must not change any observable outcome.

The SHA-256 of each bundled virtual scenario's events.jsonl, jobs.csv, tokens.csv, jobs.log and
summary.json (its ``version`` and the verifier's own work counters left out: those describe how
the simulator computed the outcome, not the outcome) were recorded before the signature memo
and the scheduling changes. A change that moves one event, one digit or one byte fails here.
Regenerate only for a deliberate change of behaviour:
``python -m tests.scenarios.test_pinned_outputs`` rewrites ``pins/outputs.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from scitokens_batch.scenario import load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]
PINS = Path(__file__).with_name("pins") / "outputs.json"
#: ligo-day takes 11 s and the live-only scenarios do not run in virtual time.
SCENARIOS = (
    "reference",
    "key-rotation",
    "clock-skew",
    "rucio-fts",
    "credmon-crash",
    "issuer-outage",
    "long-transfer",
    "copy-once-antipattern",
    "day-1/100",
)
#: The benchmark day (token cache off: every access verifies) scaled down 100 times.
DAY = ROOT / "benchmarks" / "day-10k.toml"
DAY_OVERRIDES = (
    *(f"workloads[{i}].jobs=25" for i in range(4)),
    *(f'workloads[{i}].arrival.mean_interval="3456s"' for i in range(4)),
    "execute_hosts[0].count=2",
    'expect.checks=["jobs.submitted == 100", "data.expired_at_use == 0"]',
)
FILES = ("events.jsonl", "jobs.csv", "tokens.csv", "jobs.log")
#: Summary keys that count the simulator's own work (how often a signature was computed,
#: how often a memo answered), not what happened in the simulated world.
WORK_COUNTERS = ("signature_checks", "signature_memo_hits")


def _summary_digest(path: Path) -> str:
    summary: dict[str, Any] = json.loads(path.read_text())
    summary.pop("version", None)
    for key in WORK_COUNTERS:
        summary.get("data", {}).pop(key, None)
    text = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def digests(name: str, out: Path) -> dict[str, str]:
    """Run bundled scenario ``name`` into ``out`` and hash what it wrote."""
    if name == "day-1/100":
        spec = load_scenario(DAY, overrides=DAY_OVERRIDES)
    else:
        spec = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    run_virtual(spec, out=out, plots=False)
    found = {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in FILES}
    found["summary.json"] = _summary_digest(out / "summary.json")
    return found


@pytest.mark.parametrize("name", SCENARIOS)
def test_outputs_match_the_pins(name: str, tmp_path: Path) -> None:
    """A bundled scenario writes exactly the events, tables, log and summary pinned for it."""
    pinned = json.loads(PINS.read_text())[name]
    assert digests(name, tmp_path) == pinned


if __name__ == "__main__":  # pragma: no cover - regenerates the pins by hand
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        table = {n: digests(n, Path(tmp) / n.replace("/", "_")) for n in SCENARIOS}
    PINS.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {PINS}\n")
