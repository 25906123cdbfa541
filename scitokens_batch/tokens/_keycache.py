"""A validator's cache of issuer keys, with the peers' timing rules as parameters.

Sans-IO: the cache never fetches. It answers *whether* a fetch is due (:meth:`KeyCache.fetch_due`)
and is told what happened (:meth:`KeyCache.store`, :meth:`KeyCache.fetch_failed`), so the same
logic serves the virtual-time data server, the live HTTP data server and the tests.

The times, as real validators use them:

=====================  ===========================  ==============================
parameter              scitokens-cpp 0.7.3 (H2-H4)  scitokens-py 1.9.7 (G5)
=====================  ===========================  ==============================
``refresh``            600 s                        3600 s
``expiry``             4 d                          max(max-age, 4 d)
``retry_after_fail``   300 s                        (keeps the stale key)
``negative``           n/a                          300 s
``unknown_kid_refetch`` never before next_update     at once (keyed by kid)
=====================  ===========================  ==============================
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._keys import PublicKey

__all__ = ["KeyCache", "KeyCachePolicy", "KeyCacheStatistics"]


@attrs.frozen(kw_only=True)
class KeyCachePolicy:
    """How long keys are trusted and when they are fetched again.

    Attributes:
        refresh: after a successful fetch, fetch again once this many seconds have passed
            (H2 ``next_update``; the scenario's ``key_refresh``).
        expiry: stop trusting keys this long after the last successful fetch (H3, G5;
            the scenario's ``key_expiry``).
        retry_after_failure: after a failed fetch, wait this long before trying again while
            stale keys are still trusted (H3: cpp pushes ``next_update`` by 300 s).
        negative: after a failed fetch with *no* usable keys, do not try again for this long
            (G5 negative cache).
        unknown_kid_refetch: seconds between fetches triggered by a token whose ``kid`` is not in
            the cache; ``None`` means never before ``refresh`` is due (H4, P9: scitokens-cpp).
    """

    refresh: float = 600.0
    expiry: float = 4 * 86400.0
    retry_after_failure: float = 300.0
    negative: float = 300.0
    unknown_kid_refetch: float | None = None

    def __attrs_post_init__(self) -> None:
        # refresh == 0 would make every check ask for a fetch, and a caller loop forever.
        if not self.refresh > 0:
            raise ValueError(f"refresh must be > 0 seconds (got {self.refresh})")
        for name in ("expiry", "retry_after_failure", "negative"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds (got {getattr(self, name)})")
        if self.unknown_kid_refetch is not None and self.unknown_kid_refetch < 0:
            raise ValueError(
                f"unknown_kid_refetch must be >= 0 or None (got {self.unknown_kid_refetch})"
            )


@attrs.frozen
class KeyCacheStatistics:
    """A snapshot of a key cache's counters."""

    fetches: int
    """Fetches reported, successful or not."""
    failures: int
    """Fetches that failed."""
    unknown_kid_fetches: int
    """Fetches made because a token named a ``kid`` the cache did not hold."""


@attrs.define
class _IssuerEntry:
    keys: dict[str, PublicKey]
    next_update: float
    expires: float
    last_attempt: float
    #: no fetch before this time (negative cache / retry delay); -inf when none
    blocked_until: float = float("-inf")


@attrs.define(on_setattr=attrs.setters.NO_OP)
class KeyCache:
    """Per-issuer keys with refresh, expiry, negative caching and rate-limited refetch."""

    policy: KeyCachePolicy = attrs.field(factory=KeyCachePolicy)
    _entries: dict[str, _IssuerEntry] = attrs.field(factory=dict, alias="_entries")
    _fetches: int = attrs.field(default=0, alias="_fetches")
    _failures: int = attrs.field(default=0, alias="_failures")
    _unknown_kid_fetches: int = attrs.field(default=0, alias="_unknown_kid_fetches")

    def lookup(self, issuer: str, kid: str | None, *, now: float) -> PublicKey | None:
        """The trusted key ``kid`` of ``issuer`` at ``now``, or None.

        With ``kid`` None, the issuer's only key if it publishes exactly one (peers.md rule 2:
        with several keys and no ``kid`` every validator refuses).
        """
        entry = self._entries.get(issuer)
        if entry is None or now >= entry.expires:
            return None
        if kid is None:
            if len(entry.keys) == 1:
                return next(iter(entry.keys.values()))
            return None
        return entry.keys.get(kid)

    def has_keys(self, issuer: str, *, now: float) -> bool:
        """Whether unexpired keys of ``issuer`` are cached (a cold cache is not an unknown kid)."""
        entry = self._entries.get(issuer)
        return entry is not None and bool(entry.keys) and now < entry.expires

    def fetch_due(self, issuer: str, kid: str | None, *, now: float) -> bool:
        """Should the caller fetch ``issuer``'s JWKS before deciding on a token with ``kid``?

        True when nothing usable is cached, when ``refresh`` has passed, or when ``kid`` is
        unknown and the unknown-kid refetch is allowed and not rate-limited.
        """
        entry = self._entries.get(issuer)
        if entry is None:
            return True
        if now < entry.blocked_until:
            return False
        if now >= entry.expires or now >= entry.next_update:
            return True
        if kid is not None and kid not in entry.keys:
            limit = self.policy.unknown_kid_refetch
            return limit is not None and now - entry.last_attempt >= limit
        return False

    def store(
        self, issuer: str, keys: Iterable[PublicKey], *, now: float, unknown_kid: bool = False
    ) -> None:
        """Record a successful fetch of ``issuer``'s keys at ``now``.

        Args:
            unknown_kid: the fetch was triggered by an unknown ``kid`` (counted separately).
        """
        self._fetches += 1
        self._unknown_kid_fetches += unknown_kid
        p = self.policy
        self._entries[issuer] = _IssuerEntry(
            keys={k.kid: k for k in keys},
            next_update=now + p.refresh,
            expires=now + p.expiry,
            last_attempt=now,
        )

    def fetch_failed(self, issuer: str, *, now: float, unknown_kid: bool = False) -> None:
        """Record a failed fetch: keep stale keys (until they expire) and back off."""
        self._fetches += 1
        self._failures += 1
        self._unknown_kid_fetches += unknown_kid
        p = self.policy
        entry = self._entries.get(issuer)
        if entry is None or now >= entry.expires:
            # Nothing usable: negative-cache the issuer (G5).
            self._entries[issuer] = _IssuerEntry(
                keys={},
                next_update=now + p.negative,
                expires=now,
                last_attempt=now,
                blocked_until=now + p.negative,
            )
            return
        # H3: keep the old keys and retry after a delay, never past their expiry.
        entry.last_attempt = now
        entry.next_update = now + p.retry_after_failure
        entry.blocked_until = now + p.retry_after_failure

    def drop(self, issuer: str | None = None) -> None:
        """Forget one issuer's keys, or all (a data server restart without a persistent cache)."""
        if issuer is None:
            self._entries.clear()
        else:
            self._entries.pop(issuer, None)

    def statistics(self) -> KeyCacheStatistics:
        """Counters since creation."""
        return KeyCacheStatistics(
            fetches=self._fetches,
            failures=self._failures,
            unknown_kid_fetches=self._unknown_kid_fetches,
        )
