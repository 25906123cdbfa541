"""``run --events all|none|errors``: what events.jsonl holds, and nothing else changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scitokens_batch.metrics import Event, is_error

ROOT = Path(__file__).resolve().parents[2]
#: An outage run: refused accesses, failed refreshes, holds, faults and plenty of normal events.
SCENARIO = ROOT / "scenarios" / "issuer-outage.toml"
SAME = ("summary.json", "jobs.csv", "tokens.csv", "jobs.log", "report.html")


def _run(out: Path, events: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scitokens_batch",
            "run",
            str(SCENARIO),
            "--out",
            str(out),
            "--events",
            events,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module", name="runs")
def _runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("events")
    found: dict[str, Path] = {}
    for choice in ("all", "none", "errors"):
        r = _run(base / choice, choice)
        assert r.returncode in (0, 1), r.stderr
        found[choice] = base / choice
    return found


def test_outputs_identical_whatever_the_choice(runs: dict[str, Path]) -> None:
    """summary.json, jobs.csv, tokens.csv, jobs.log and report.html are byte for byte the same
    with all, none and errors: they are built from every event, whatever is written."""
    for name in SAME:
        reference = (runs["all"] / name).read_bytes()
        for choice in ("none", "errors"):
            assert (runs[choice] / name).read_bytes() == reference, (choice, name)


def test_none_writes_no_events(runs: dict[str, Path]) -> None:
    """--events none writes no events.jsonl (and no temporary one)."""
    assert not (runs["none"] / "events.jsonl").exists()
    assert not any(p.name.startswith(".events") for p in runs["none"].iterdir())


def test_errors_is_the_filtered_subset(runs: dict[str, Path]) -> None:
    """--events errors writes exactly the lines of the full stream whose events signal a
    problem, with their seq numbers from the full stream; the run has some of each kind."""
    full = (runs["all"] / "events.jsonl").read_text().splitlines()
    kept = (runs["errors"] / "events.jsonl").read_text().splitlines()
    assert kept == [line for line in full if is_error(Event.from_json(line))]
    kinds = {Event.from_json(line).kind for line in kept}
    assert {"reject", "refresh_failed", "fault"} <= kinds
    assert "mint" not in kinds and 0 < len(kept) < len(full)
    summary = json.loads((runs["errors"] / "summary.json").read_text())
    assert summary["events"] == len(full)  # the summary counts every event, written or not


def test_none_removes_an_earlier_events_file(tmp_path: Path) -> None:
    """A run with --events none into the --out of an earlier full run leaves no stale
    events.jsonl beside its own outputs (the run's outputs are one set)."""
    out = tmp_path / "out"
    assert _run(out, "all").returncode in (0, 1)
    assert (out / "events.jsonl").exists()
    r = _run(out, "none")
    assert r.returncode in (0, 1), r.stderr
    assert not (out / "events.jsonl").exists()
    assert (out / "summary.json").exists()
    assert "events.jsonl" not in r.stdout


def test_bad_choice_is_exit_2(tmp_path: Path) -> None:
    """An unknown --events value is bad input: exit 2 naming the option, nothing written."""
    r = _run(tmp_path / "out", "some")
    assert r.returncode == 2
    assert "--events" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


class TestStudyEvents:
    def _parse(self, tmp_path: Path, **extra: object) -> object:
        from scitokens_batch.study._spec import parse_study

        raw = {"scenario": str(SCENARIO), "grid": {"token_manager.renew_fraction": [0.5]}}
        return parse_study({**raw, **extra}, file=str(tmp_path / "s.toml"), base=tmp_path)

    def test_default_none(self, tmp_path: Path) -> None:
        """A study's kept runs write no events.jsonl unless the study file asks."""
        assert self._parse(tmp_path).events == "none"  # type: ignore[attr-defined]

    def test_asked(self, tmp_path: Path) -> None:
        """[study] events = "errors" is passed on to every run."""
        assert self._parse(tmp_path, events="errors").events == "errors"  # type: ignore[attr-defined]

    def test_bad_value_names_the_key(self, tmp_path: Path) -> None:
        """An unknown [study] events value is a StudyError naming the key and the choices."""
        from scitokens_batch.errors import StudyError

        with pytest.raises(StudyError, match=r"events.*all, none, errors"):
            self._parse(tmp_path, events="some")
