"""The Rucio -> FTS -> storage flow live (issue 5: "works unchanged with --live, including an
XRootD server as the source"): client-credentials tokens, token exchange and HTTP-TPC pull
copies between real storage services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitokens_batch.live import run_live, xrootd_missing
from scitokens_batch.scenario import load_scenario

from ..interop.conftest import peer_missing

pytestmark = [pytest.mark.live, pytest.mark.slow]

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "rucio-fts-live.toml"


@pytest.mark.parametrize("source", ["builtin", "xrootd"])
def test_rucio_fts_live(tmp_path: Path, source: str) -> None:
    """L2/L3/L6 live: Rucio's client-credentials tokens are exchanged by FTS and every file is
    pulled by the destination from the source (ours or XRootD) with the source token; the
    copies hold the source's bytes."""
    if source == "xrootd" and (why := xrootd_missing()) is not None:
        peer_missing(f"XRootD: {why}")
    overrides = [f"data_servers.src.backend={source}"]
    spec = load_scenario(SCENARIO, overrides=overrides)
    out = tmp_path / "out"
    result = run_live(spec, SCENARIO, overrides=overrides, out=out, log_level="info")
    failed = [f"{c.line} (actual {c.actual})" for c in result.checks if not c.passed]
    assert result.passed, failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transfers"] == {"done": 12, "failed": 0}
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    done = [e for e in events if e["kind"] == "transfer_done"]
    assert len(done) == 12
    # The exchange happened at the issuer, for FTS's client, with storage scopes only (L6),
    # plus the offline_access FTS asked for (granted scopes are listed, as INDIGO IAM does).
    exchanges = [e for e in events if e["kind"] == "mint" and "token-exchange" in e["grant"]]
    assert exchanges and all(e["client"] == "fts" for e in exchanges)
    scopes = [s for e in exchanges for s in e["scope"].split() if s != "offline_access"]
    assert scopes and all(s.startswith("storage.") for s in scopes)
