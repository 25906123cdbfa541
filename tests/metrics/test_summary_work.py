"""summary.json's data.signature_checks and data.signature_memo_hits: the verifiers' own work."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.metrics import Event, SummaryBuilder
from scitokens_batch.scenario import load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]


def test_null_until_reported() -> None:
    """A summary built from events alone (live mode, XRootD) says the work is unknown (null),
    and reports the counters once the run hands them over."""
    builder = SummaryBuilder()
    builder(Event(0.0, 0, "se", "use", {"headroom_s": 10.0, "cached": False}))
    data = builder.figures()["data"]
    assert (data["signature_checks"], data["signature_memo_hits"]) == (None, None)
    builder.verifier_work(3, 40)
    data = builder.figures()["data"]
    assert (data["signature_checks"], data["signature_memo_hits"]) == (3, 40)


def test_virtual_run_reports_the_data_servers_work() -> None:
    """A virtual run reports the signatures its data servers computed and the memo hits apart
    from the modelled token cache: each granted access was a cache hit or a signature that
    verified (computed or memoised), and a signature is computed at most once per token and
    server (one key per issuer in the reference scenario)."""
    spec = load_scenario(
        ROOT / "scenarios" / "reference.toml", overrides=['data_servers[0].token_cache="0s"']
    )
    result = run_virtual(spec, keep_events=True)
    data = result.summary["data"]
    events: list[Event] = result.summary["_events"]
    seen = {(e.actor, e.fields["jti"]) for e in events if e.kind in ("use", "reject")}
    assert data["cache_hits"] == 0
    assert 0 < data["signature_checks"] <= len(seen)
    assert data["signature_memo_hits"] > 0
    assert data["signature_checks"] + data["signature_memo_hits"] >= data["granted"]


@given(
    st.lists(
        st.sampled_from([-0.0, 0.0, 1.5, -2.25, 3e-6, 86400.0]) | st.floats(-1e6, 1e6), max_size=300
    )
)
def test_headroom_figures_match_a_plain_sort(values: list[float]) -> None:
    """The in-place sort of the headroom array gives the figures a plain sorted() gives, to the
    bit (signed zeros included: the ordering is stable, as sorted()'s)."""
    builder = SummaryBuilder()
    for v in values:
        builder(Event(0.0, 0, "se", "use", {"headroom_s": v}))
    got = builder.figures()["headroom"]
    ordered = sorted(values)

    def rank(q: float) -> float | None:
        return None if not ordered else round(ordered[max(1, math.ceil(q * len(ordered))) - 1], 6)

    expected = {
        "count": len(values),
        "min_s": round(ordered[0], 6) if ordered else None,
        "p01_s": rank(0.01),
        "p50_s": rank(0.50),
        "max_s": round(ordered[-1], 6) if ordered else None,
    }
    assert json.dumps(got) == json.dumps(expected)
    builder(Event(0.0, 0, "se", "use", {"headroom_s": 1.0}))  # the array can still grow
    assert builder.figures()["headroom"]["count"] == len(values) + 1
