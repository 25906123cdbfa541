"""``scitokens-batch run`` and ``check`` as a user runs them: exit codes, no traceback, no
half-written output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "scenarios" / "broken"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "scitokens_batch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "broken", sorted(p.name for p in BROKEN.glob("*.toml") if not p.name.startswith("_"))[:12]
)
def test_bad_scenario_exits_2_and_writes_nothing(broken: str, tmp_path: Path) -> None:
    """A broken scenario: exit 2, one line naming the file and key path, no traceback, no output."""
    out = tmp_path / "out"
    r = _cli("run", str(BROKEN / broken), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("scitokens-batch: error: ") and broken in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists()


def test_dangling_random_file_is_bad_input(tmp_path: Path) -> None:
    """An error only wiring can find ({random_file} with no files there) is exit 2 too, before
    anything is written."""
    text = (
        (ROOT / "scenarios" / "reference.toml")
        .read_text()
        .replace('path = "/ligo/frames"', 'path = "/ligo/elsewhere"')
    )
    scenario = tmp_path / "s.toml"
    scenario.write_text(text)
    out = tmp_path / "out"
    r = _cli("run", str(scenario), "--out", str(out))
    assert r.returncode == 2
    assert "workloads[0].steps[0]" in r.stderr and "{random_file}" in r.stderr
    assert not out.exists()
    assert _cli("check", str(scenario)).returncode == 2


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing scenario file is named in the error, exit 2."""
    r = _cli("run", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "nope.toml" in r.stderr and "Traceback" not in r.stderr


def test_bad_override(tmp_path: Path) -> None:
    """A --set with an unknown key path is exit 2 naming --set and the path."""
    r = _cli("check", str(ROOT / "scenarios" / "reference.toml"), "--set", "token_manager.renwe=1")
    assert r.returncode == 2 and "--set" in r.stderr and "renwe" in r.stderr


def test_not_a_terminal_prints_only_the_summary(tmp_path: Path) -> None:
    """Without a terminal: no progress bar, just the summary table; exit 0 when checks hold."""
    r = _cli("run", str(ROOT / "scenarios" / "reference.toml"))
    assert r.returncode == 0, r.stderr
    assert "check: jobs.submitted == 305" in r.stdout and "pass" in r.stdout
    assert "\x1b[" not in r.stdout  # no escape sequences: rich knows it is not a terminal
    # stderr holds at most progress lines (one every few seconds on a slow machine)
    assert all(line.startswith("scitokens-batch: reference") for line in r.stderr.splitlines())


def test_demo_runs_the_reference_scenario() -> None:
    """`demo` (what `make demo` runs) prints the reference scenario's summary, exit 0."""
    r = _cli("demo")
    assert r.returncode == 0, r.stderr
    assert "scenario 'reference'" in r.stdout and "accepted after exp" in r.stdout
