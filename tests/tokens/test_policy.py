"""The renewal policy (I4, I5, L7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.tokens import RenewalPolicy


def test_credmon_default() -> None:
    """I5: a 20-minute token with fraction 0.5 is due strictly after 600 s."""
    p = RenewalPolicy(fraction=0.5)
    assert p.due_at(0, 1200) == 600
    assert not p.is_due(0, 1200, 600)
    assert p.is_due(0, 1200, 600.001)


def test_first_scan_after() -> None:
    """I4 + I5: with 60 s scans from 0, that token is renewed at exactly the scan at 660 s."""
    assert RenewalPolicy(fraction=0.5).first_scan_due(0, 1200, scan_start=0, interval=60) == 660


def test_margin_wins_when_earlier() -> None:
    """L7: a margin of 300 s before exp wins over a late fraction."""
    assert RenewalPolicy(fraction=0.95, margin=300).due_at(0, 3600) == 3300
    assert RenewalPolicy(fraction=0.5, margin=300).due_at(0, 3600) == 1800


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_bad_fraction(fraction: float) -> None:
    """The fraction must lie in (0, 1]."""
    with pytest.raises(ValueError, match="fraction"):
        RenewalPolicy(fraction=fraction)


@given(
    iat=st.floats(0, 1e9),
    life=st.floats(1, 1e6),
    fraction=st.floats(0.01, 1.0),
    start=st.floats(-1e4, 1e4),
    interval=st.floats(0.5, 3600),
)
def test_first_scan_is_first_due_scan(
    iat: float, life: float, fraction: float, start: float, interval: float
) -> None:
    """Property: the scan returned is due, lies on the scan grid, and the scan before it is not due."""
    p = RenewalPolicy(fraction=fraction)
    t = p.first_scan_due(iat, iat + life, scan_start=start, interval=interval)
    assert p.is_due(iat, iat + life, t)
    k = round((t - start) / interval)
    assert abs(start + k * interval - t) < 1e-6 * max(1.0, abs(t))
    if k > 0:
        assert not p.is_due(iat, iat + life, start + (k - 1) * interval)
