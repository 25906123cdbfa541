"""The data server's verifier: signature, issuer, audience, time and scope, as a value.

:meth:`Verifier.check` answers one of three things:

* :class:`VerifiedToken` — the token is good at ``now``;
* :class:`~._reasons.Rejection` — it is not, and why (with the HTTP status hint);
* :class:`NeedKeys` — the verdict depends on keys the cache does not have: fetch the issuer's
  JWKS, report it with :meth:`Verifier.keys_fetched` or :meth:`Verifier.keys_failed`, and ask
  again. This keeps the verifier sans-IO (style.md practice 7), so virtual-time and live data
  servers share it.

Order of checks, cheapest and safest first: format, profile and claim shapes, issuer trust
(M1: untrusted issuers are refused before any key fetch), key, signature, time, audience, scopes.

Two memos make a token presented a hundred times cheap without skipping any check (neither is
the accepted-token cache, ``token_cache``, which models a server that *skips* verification):
the parse memo keeps what a token string says whatever the keys and the time, and the
signature memo keeps whether its signature verifies under a given key, named by the key's
algorithm and RFC 7638 thumbprint (so a refetched JWKS that builds new key objects for the same
keys still hits, and a new key reusing an old ``kid`` is verified afresh). The key lookup,
times, audience and scopes are judged on every call.

Where we are stricter than some peer, and why, is in docs/tokens.md.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from ..errors import LocalInputError, ScopeError
from ._claims import check_claims, check_times
from ._codec import ParsedToken, parse, signature_valid
from ._keycache import KeyCache, KeyCachePolicy
from ._keys import PublicKey
from ._profiles import Algorithm, Profile
from ._reasons import Reason, Rejection
from ._scopes import Operation, Scope, audience_matches, authorize, parse_scopes

__all__ = ["NeedKeys", "TrustedIssuer", "VerifiedToken", "Verifier", "VerifierStatistics"]


@attrs.frozen(slots=True)
class TrustedIssuer:
    """An issuer this server trusts, and where its token paths live (B6, M1).

    Attributes:
        issuer: the exact ``iss`` string (peers.md rule 1: byte for byte).
        base_path: server path that the token path ``/`` stands for.
    """

    issuer: str
    base_path: str = "/"


@attrs.frozen(slots=True)
class VerifiedToken:
    """A token that passed every check at some ``now``.

    Attributes:
        claims: the payload (treat as read-only).
        profile: SciTokens 2.0 or WLCG 1.0.
        scopes: the parsed ``scope`` claim.
        base_path: the server's base path for this token's issuer.
    """

    claims: Mapping[str, Any] = attrs.field(repr=False)
    profile: Profile
    scopes: tuple[Scope, ...]
    base_path: str

    @property
    def issuer(self) -> str:
        """``iss``."""
        return str(self.claims["iss"])

    @property
    def jti(self) -> str:
        """``jti``: what logs and events name a token by."""
        return str(self.claims["jti"])

    @property
    def exp(self) -> float:
        """``exp`` in unix seconds."""
        return float(self.claims["exp"])

    @property
    def subject(self) -> str:
        """``sub``."""
        return str(self.claims["sub"])


@attrs.frozen(slots=True)
class NeedKeys:
    """The verdict needs ``issuer``'s JWKS; fetch it and ask again."""

    issuer: str
    #: the fetch is because the token's ``kid`` is not among the issuer's cached keys (not a
    #: periodic refresh, and not a cold cache)
    unknown_kid: bool


@attrs.frozen
class VerifierStatistics:
    """Counters of a verifier since creation."""

    checks: int
    """Calls of :meth:`Verifier.check` (and so of :meth:`Verifier.authorize`)."""
    signature_checks: int
    """Signatures actually verified (the expensive part)."""
    cache_hits: int
    """Checks answered from the accepted-token cache."""
    signature_memo_hits: int = 0
    """Signatures not computed because the signature memo knew the answer for that token and
    key (the check itself still ran: key lookup, times, audience, scopes)."""


def _issuer_tuple(issuers: Iterable[TrustedIssuer]) -> tuple[TrustedIssuer, ...]:
    return tuple(issuers)


def _str_set(items: Iterable[str] | None) -> frozenset[str] | None:
    return None if items is None else frozenset(items)


@attrs.frozen(slots=True)
class _Static:
    """What a token string says for one server, whatever the keys and the time.

    Attributes:
        early: a verdict due before any key is looked at (format, profile, untrusted issuer).
        parsed: the parsed token when there is no early verdict.
        verified: what the token is once signature and times hold (when ``late`` is None).
        late: a verdict due after signature and time checks (audience, scopes), keeping the
            order in which reasons are reported.
    """

    early: Rejection | None = None
    parsed: ParsedToken | None = None
    verified: VerifiedToken | None = None
    late: Rejection | None = None


@attrs.define
class _Cached:
    verified: VerifiedToken
    until: float


@attrs.define(on_setattr=attrs.setters.NO_OP)  # no __setattr__ hook: counters are hot
class Verifier:
    """Checks tokens for one server (one audience set, one set of trusted issuers).

    Args:
        issuers: the issuers this server trusts, with their base paths.
        audiences: the server's own audiences (C2: exact, case-sensitive); never ``ANY``.
            None checks no audience: only for an issuer judging its own tokens (token
            exchange), which is their authority whoever they were meant for.
        leeway: seconds of clock tolerance for ``exp``/``nbf``/``iat`` (default 0, like every
            peer: E1, G2, H6).
        key_policy: key cache timing.
        token_cache: seconds an accepted token is remembered (0 disables); an entry is never
            used at or after the token's ``exp`` (unlike XRootD 5.5.3, peers.md table), and the
            time claims are checked again on every hit.
        max_cached_tokens: bound on the accepted-token cache.
        parse_memo: how many token strings to remember the time- and key-independent part of
            the verdict for (parse, claim shapes, issuer trust, audience, scopes); 0 disables.
            Signature and times are checked on every call whatever this is.
        signature_memo: how many token strings to remember the signature verdict for, under
            the last key (algorithm and thumbprint) that judged it; 0 disables (every call
            computes the signature). A full memo is emptied and refills with the tokens still
            in use. The key must still be in the cache and trusted on every call: the memo
            answers only "does this signature verify under this key".
    """

    issuers: tuple[TrustedIssuer, ...] = attrs.field(converter=_issuer_tuple)
    audiences: frozenset[str] | None = attrs.field(converter=_str_set)
    leeway: float = 0.0
    key_policy: KeyCachePolicy = attrs.field(factory=KeyCachePolicy)
    token_cache: float = 0.0
    max_cached_tokens: int = 100_000
    parse_memo: int = 100_000
    signature_memo: int = 100_000
    keys: KeyCache = attrs.field(init=False)
    _by_issuer: dict[str, TrustedIssuer] = attrs.field(init=False, alias="_by_issuer")
    _cache: dict[str, _Cached] = attrs.field(init=False, factory=dict, alias="_cache")
    _checks: int = attrs.field(init=False, default=0, alias="_checks")
    _sig_checks: int = attrs.field(init=False, default=0, alias="_sig_checks")
    _hits: int = attrs.field(init=False, default=0, alias="_hits")
    _sig_memo_hits: int = attrs.field(init=False, default=0, alias="_sig_memo_hits")
    #: token string -> (key algorithm, key thumbprint, signature verifies): one entry a token,
    #: so a token judged under a new key (rotation with kid reuse) replaces its entry
    _sig_memo: dict[str, tuple[Algorithm, str, bool]] = attrs.field(
        init=False, factory=dict, alias="_sig_memo"
    )
    #: parsed ``scope`` claims by their text: tokens of one user and service share one
    _scope_memo: dict[str, tuple[Scope, ...] | ScopeError] = attrs.field(
        init=False, factory=dict, alias="_scope_memo"
    )
    _static: dict[str, _Static] = attrs.field(init=False, factory=dict, alias="_static")

    def __attrs_post_init__(self) -> None:
        if self.audiences is not None and "ANY" in self.audiences:
            raise LocalInputError("a server's audience must not be 'ANY' (C5, G7)")
        # "not (valid)" so that NaN is refused as well.
        if not (0 <= self.leeway < math.inf and 0 <= self.token_cache < math.inf):
            raise LocalInputError("leeway and token_cache must be >= 0 seconds")
        if self.parse_memo < 0 or self.signature_memo < 0:
            raise LocalInputError("parse_memo and signature_memo must be >= 0 entries")
        self.keys = KeyCache(self.key_policy)
        self._by_issuer = {t.issuer: t for t in self.issuers}

    # -- key traffic ---------------------------------------------------------------------
    def keys_fetched(
        self, issuer: str, keys: Iterable[PublicKey], *, now: float, unknown_kid: bool = False
    ) -> None:
        """Report a successful JWKS fetch for ``issuer``."""
        self.keys.store(issuer, keys, now=now, unknown_kid=unknown_kid)

    def keys_failed(self, issuer: str, *, now: float, unknown_kid: bool = False) -> None:
        """Report a failed JWKS fetch for ``issuer`` (stale keys stay usable until expiry)."""
        self.keys.fetch_failed(issuer, now=now, unknown_kid=unknown_kid)

    def forget(self) -> None:
        """Drop every cached key and accepted token (a restart without persistent caches)."""
        self.keys.drop()
        self._cache.clear()
        self._static.clear()
        self._sig_memo.clear()

    # -- verdicts ------------------------------------------------------------------------
    def check(self, token: str | None, *, now: float) -> VerifiedToken | Rejection | NeedKeys:
        """Is ``token`` valid at ``now`` for this server? (No path or operation yet.)"""
        self._checks += 1
        # A NaN or infinite `now` would make the time checks meaningless: refuse the call
        # itself (check_times also refuses it, so a NaN could never grant even without this).
        if not math.isfinite(now):
            raise LocalInputError(f"now: expected finite unix seconds, received {now!r}")
        if not token:
            return Rejection(Reason.MISSING_TOKEN, "no bearer token was presented")
        if self.token_cache:
            hit = self._cache.get(token)
            if hit is not None:
                if now < hit.until:
                    late = check_times(hit.verified.claims, now=now, leeway=self.leeway)
                    if late is None:
                        self._hits += 1
                        return hit.verified
                    return late
                del self._cache[token]

        static = self._static.get(token)
        if static is None:
            static = self._analyse(token)
            if self.parse_memo:
                if len(self._static) >= self.parse_memo:
                    self._static.clear()  # bounded; rebuilt from the tokens still in use
                self._static[token] = static
        if static.early is not None:
            return static.early
        parsed = static.parsed
        assert parsed is not None and static.verified is not None
        iss: str = parsed.claims["iss"]

        kid = parsed.kid
        key = self.keys.lookup(iss, kid, now=now)
        if self.keys.fetch_due(iss, kid, now=now):
            unknown = key is None and kid is not None and self.keys.has_keys(iss, now=now)
            return NeedKeys(issuer=iss, unknown_kid=unknown)
        if key is None:
            if kid is None:
                return Rejection(
                    Reason.UNKNOWN_KEY, "token has no kid and the issuer has several keys"
                )
            return Rejection(Reason.UNKNOWN_KEY, f"kid {kid!r} is not published by {iss!r}")
        # Every check from here depends on the keys or on the time: done on every access. The
        # signature of this token under this key material never changes, so it is computed
        # once (the key lookup above still decides, on every access, which key that is).
        if self.signature_memo:
            seen = self._sig_memo.get(token)
            if seen is not None and seen[1] == key.fingerprint and seen[0] is key.alg:
                self._sig_memo_hits += 1
                valid = seen[2]
            else:
                self._sig_checks += 1
                valid = signature_valid(parsed, key)
                if len(self._sig_memo) >= self.signature_memo:
                    self._sig_memo.clear()  # bounded; refills with the tokens still in use
                self._sig_memo[token] = (key.alg, key.fingerprint, valid)
        else:
            self._sig_checks += 1
            valid = signature_valid(parsed, key)
        if not valid:
            return Rejection(
                Reason.BAD_SIGNATURE, f"signature does not verify with key {key.kid!r}"
            )
        late = check_times(parsed.claims, now=now, leeway=self.leeway)
        if late is not None:
            return late
        if static.late is not None:
            return static.late
        verified = static.verified
        if self.token_cache:
            if len(self._cache) >= self.max_cached_tokens:
                self._evict(now)
            # Never past exp (the XRootD 5.5.3 flaw in peers.md is exactly the opposite).
            self._cache[token] = _Cached(verified, min(now + self.token_cache, verified.exp))
        return verified

    def _analyse(self, token: str) -> _Static:
        """Everything about ``token`` that depends on its text and this server's configuration
        only, not on keys or time: parse, profile and claim shapes, issuer trust, audience,
        scopes. Kept per token string, so that a token presented a hundred times is parsed
        once; its signature and times are still checked on every access."""
        parsed = parse(token)
        if isinstance(parsed, Rejection):
            return _Static(early=parsed)
        claims = parsed.claims
        profile = check_claims(claims)
        if isinstance(profile, Rejection):
            return _Static(early=profile)
        trusted = self._by_issuer.get(claims["iss"])
        if trusted is None:
            return _Static(
                early=Rejection(
                    Reason.UNTRUSTED_ISSUER, f"issuer {claims['iss']!r} is not trusted here"
                )
            )
        late: Rejection | None = None
        scopes: tuple[Scope, ...] = ()
        if self.audiences is not None and not audience_matches(
            claims["aud"], self.audiences, profile
        ):
            late = Rejection(
                Reason.WRONG_AUDIENCE,
                f"aud {claims['aud']!r} does not name this server ({sorted(self.audiences)})",
            )
        else:
            found = self._scopes(claims.get("scope", ""))
            if isinstance(found, ScopeError):
                # A15/G10: the python library refuses the whole token for a traversal in a
                # scope; scitokens-cpp normalises it and can grant outside the directory.
                late = Rejection(Reason.MALFORMED, f"bad scope claim: {found}")
            else:
                scopes = found
        verified = VerifiedToken(
            claims=claims, profile=profile, scopes=scopes, base_path=trusted.base_path
        )
        return _Static(parsed=parsed, verified=verified, late=late)

    def authorize(
        self, token: str | None, *, now: float, op: Operation, path: str
    ) -> VerifiedToken | Rejection | NeedKeys:
        """:meth:`check`, then may the token do ``op`` on server path ``path``?"""
        verdict = self.check(token, now=now)
        if not isinstance(verdict, VerifiedToken):
            return verdict
        denied = authorize(verdict.scopes, op, path, base_path=verdict.base_path)
        return verdict if denied is None else denied

    def trusts(self, issuer: str) -> bool:
        """Whether ``issuer`` is one of this server's trusted issuers."""
        return issuer in self._by_issuer

    @property
    def cache_hits(self) -> int:
        """Checks answered from the accepted-token cache so far (cheap; for per-access use)."""
        return self._hits

    def statistics(self) -> VerifierStatistics:
        """Counters since creation."""
        return VerifierStatistics(
            checks=self._checks,
            signature_checks=self._sig_checks,
            cache_hits=self._hits,
            signature_memo_hits=self._sig_memo_hits,
        )

    def _scopes(self, text: str) -> tuple[Scope, ...] | ScopeError:
        memo = self._scope_memo
        found = memo.get(text)
        if found is None:
            try:
                found = parse_scopes(text)
            except ScopeError as exc:
                found = exc
            if len(memo) >= 4096:  # bounded: distinct scope strings are few in practice
                memo.clear()
            memo[text] = found
        return found

    def _evict(self, now: float) -> None:
        stale = [t for t, c in self._cache.items() if c.until <= now]
        for t in stale:
            del self._cache[t]
        if len(self._cache) >= self.max_cached_tokens:
            self._cache.clear()


def verifier_for(
    issuer: str,
    audiences: Collection[str] | None,
    keys: Iterable[PublicKey],
    *,
    now: float,
    base_path: str = "/",
    leeway: float = 0.0,
) -> Verifier:
    """A verifier trusting one issuer whose keys are already known (for the CLI and tests)."""
    if not math.isfinite(now):
        raise LocalInputError(f"now: expected finite unix seconds, received {now!r}")
    v = Verifier(
        issuers=[TrustedIssuer(issuer, base_path)],
        audiences=audiences,
        leeway=leeway,
        key_policy=KeyCachePolicy(refresh=float("inf"), expiry=float("inf")),
    )
    v.keys_fetched(issuer, keys, now=now)
    return v
