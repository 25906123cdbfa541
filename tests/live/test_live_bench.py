"""The live benchmark section end to end, scaled down to a smoke test (a few seconds)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from benchmarks import live
from benchmarks._curlload import curl_missing
from scitokens_batch.live import xrootd_missing

from ..interop.conftest import peer_missing

pytestmark = [pytest.mark.live]

TINY = live.Settings(
    concurrency=8,
    token_count=40,
    token_warmup=16,
    token_seconds=10.0,
    get_count=24,
    get_warmup=16,
    get_seconds=10.0,
    rounds=2,
    warmup_seconds=10.0,
)


def test_round_order_rotates_and_reverses() -> None:
    servers = ["a", "b", "c"]
    assert live.round_order(servers, 0) == ["a", "b", "c"]
    assert live.round_order(servers, 1) == ["a", "c", "b"]
    assert live.round_order(servers, 2) == ["c", "a", "b"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert live.percentile(values, 50) == 50.0
    assert live.percentile(values, 99) == 99.0
    assert live.percentile(values, 100) == 100.0
    assert live.percentile([], 50) != live.percentile([], 50)  # nan


def test_live_section_smoke() -> None:
    """Every measurement runs without a failed request, and the outputs render."""
    for why in (xrootd_missing(), curl_missing()):
        if why is not None:
            peer_missing(why)
    result = live.measure(quick=True, err=Console(stderr=True, quiet=True), settings=TINY)
    # Failed requests are problems; a busy machine (other tests running) is not this test's.
    assert [p for p in result.problems if "failed" in p] == []
    assert all(m.errors == 0 for m in result.cold.values())
    assert result.token is not None
    assert result.token.ok == TINY.token_count
    assert [row.target for row in result.data] == list(live.SERVERS)
    for row in result.data:
        assert row.ok == TINY.get_count
        assert row.mb_per_s > 0
    assert set(result.cold) == set(live.SERVERS)
    assert len(result.ratios) == 4
    assert len(result.token_blocks) == live.TOKEN_BLOCKS
    assert result.save is not None and result.save.commit_ms > 0 and result.save.grants > 0
    assert all(len(x.per_round) == TINY.rounds for x in result.ratios)
    info = dict.fromkeys(("cpu", "cores", "usable_cores", "python", "cryptography"), "x")
    info |= dict.fromkeys(("openssl", "pyjwt", "scitokens", "platform", "date"), "x")
    info["load_at_start"] = "0"
    block = live.markdown_section(result, info)
    assert block.startswith("<!-- bench:live:start -->")
    assert block.endswith("<!-- bench:live:end -->")
    json.dumps(live.to_json(result))
