"""When an access token is due for renewal: pure arithmetic, time passed in.

HTCondor's OAuth credmon renews when ``now > ctime(.use) + expires_in * 0.5`` (I5), checked on
every scan (60 s, I4); the margin adds the FTS-style rule "refresh at exp - 300 s" (L7).
"""

from __future__ import annotations

import math

import attrs

__all__ = ["RenewalPolicy"]


@attrs.frozen(kw_only=True)
class RenewalPolicy:
    """Renew once ``fraction`` of a token's life has passed, or ``margin`` before ``exp``.

    Attributes:
        fraction: in (0, 1]; 0.5 is the credmon default (I5).
        margin: renew no later than this many seconds before ``exp`` (0: no such rule).
    """

    fraction: float = 0.5
    margin: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1] (got {self.fraction})")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 seconds (got {self.margin})")

    def due_at(self, issued: float, expires: float) -> float:
        """The instant after which the token is due: ``min(iat + f * life, exp - margin)``."""
        by_fraction = issued + self.fraction * (expires - issued)
        return min(by_fraction, expires - self.margin) if self.margin else by_fraction

    def is_due(self, issued: float, expires: float, now: float) -> bool:
        """Strictly after :meth:`due_at`, as the credmon's ``>`` (I5)."""
        return now > self.due_at(issued, expires)

    def first_scan_due(
        self, issued: float, expires: float, *, scan_start: float, interval: float
    ) -> float:
        """The first scan instant ``scan_start + k * interval`` at which the token is due.

        A 20-minute token issued at 0 with fraction 0.5 and 60 s scans from 0 is due at the
        first scan strictly after 600 s: 660 s.
        """
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds (got {interval})")
        due = self.due_at(issued, expires)
        k = max(0, math.floor((due - scan_start) / interval) + 1)
        # The division above can land one step off at an exact boundary (float rounding), so
        # settle k against is_due itself at the real grid instants; each loop runs at most twice.
        while k > 0 and self.is_due(issued, expires, scan_start + (k - 1) * interval):
            k -= 1
        while not self.is_due(issued, expires, scan_start + k * interval):
            k += 1
        return scan_start + k * interval
