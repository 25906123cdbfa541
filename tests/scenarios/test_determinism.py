"""Same scenario + seed + version => byte-identical outputs, token bytes included (design.md)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from scitokens_batch.scenario import load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]
#: Every output a run writes except run.json (wall-clock facts) and report.html with its plots
#: (matplotlib stamps its own version and fonts; the plotted numbers come from the same events).
_COMPARED = ("events.jsonl", "summary.json", "jobs.csv", "tokens.csv", "jobs.log")


@pytest.mark.parametrize("name", ["reference", "key-rotation", "credmon-crash", "rucio-fts"])
def test_two_runs_same_bytes(name: str, tmp_path: Path) -> None:
    """Two runs of one scenario and seed write byte-identical events, summary, CSVs and log."""
    spec = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    a, b = tmp_path / "a", tmp_path / "b"
    run_virtual(spec, out=a, plots=False)
    run_virtual(spec, out=b, plots=False)
    assert (a / "events.jsonl").stat().st_size > 10_000
    match, mismatch, errors = filecmp.cmpfiles(a, b, _COMPARED, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert sorted(match) == sorted(_COMPARED)
    # The token bytes really are in what we compared: token_sha is a hash of them.
    assert '"token_sha":"' in (a / "events.jsonl").read_text()
    assert "wall_seconds" not in json.loads((a / "summary.json").read_text())
    assert json.loads((a / "run.json").read_text())["wall_seconds"] >= 0


def test_another_seed_differs(tmp_path: Path) -> None:
    """A different seed gives a different run (the seed really drives the randomness)."""
    spec = load_scenario(ROOT / "scenarios" / "reference.toml")
    run_virtual(spec, out=tmp_path / "a", plots=False)
    run_virtual(spec, out=tmp_path / "b", seed=8, plots=False)
    assert (tmp_path / "a" / "events.jsonl").read_bytes() != (
        tmp_path / "b" / "events.jsonl"
    ).read_bytes()


def test_events_are_ordered_and_hold_no_token(tmp_path: Path) -> None:
    """events.jsonl is ordered by (t, seq) and contains no token, refresh token or key."""
    spec = load_scenario(ROOT / "scenarios" / "reference.toml")
    run_virtual(spec, out=tmp_path)
    keys: list[tuple[float, int]] = []
    for line in (tmp_path / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        keys.append((event["t"], event["seq"]))
        # A compact JWS starts with a base64url JSON header: "eyJ"; refresh tokens with "rt-".
        assert "eyJ" not in line and '"rt-' not in line and "PRIVATE KEY" not in line
    assert keys == sorted(keys)
    for name in ("summary.json", "run.json", "jobs.csv", "tokens.csv", "jobs.log", "report.html"):
        text = (tmp_path / name).read_text()
        assert "eyJ" not in text and "rt-" not in text, name


def test_rs256_runs_same_bytes(tmp_path: Path) -> None:
    """With RS256 issuers (seed-derived RSA keys, a rotation included) two runs are identical too."""
    spec = load_scenario(
        ROOT / "scenarios" / "key-rotation.toml", overrides=["issuers[0].algorithm=RS256"]
    )
    a, b = tmp_path / "a", tmp_path / "b"
    run_virtual(spec, out=a, plots=False)
    run_virtual(spec, out=b, plots=False)
    _, mismatch, errors = filecmp.cmpfiles(a, b, _COMPARED, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert '"kid":"' in (a / "events.jsonl").read_text()
