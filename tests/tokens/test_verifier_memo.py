"""The verifier's signature memo: computed once per (token, key), every other check every time.

Issue 10: a signature is checked once per distinct token string and key material; the key
lookup (still known, not retired), the times against the server's clock and leeway, issuer,
audience and scopes are judged on every access, so every rejection reason still fires through
the memo, and a memoising verifier gives exactly the verdicts of one without it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scitokens_batch.errors import LocalInputError
from scitokens_batch.tokens import (
    KeyCachePolicy,
    NeedKeys,
    Operation,
    PublicKey,
    Reason,
    Rejection,
    SigningKey,
    TrustedIssuer,
    VerifiedToken,
    Verifier,
)

from .helpers import AUDIENCE, ISSUER, T0, token


def _verifier(key: SigningKey | None, **kw: Any) -> Verifier:
    kw.setdefault("key_policy", KeyCachePolicy(refresh=86400))  # no refresh unless asked
    v = Verifier(issuers=[TrustedIssuer(ISSUER, "/vo")], audiences=[AUDIENCE], **kw)
    if key is not None:
        v.keys_fetched(ISSUER, [key.public], now=T0)
    return v


def _reason(verdict: object) -> Reason:
    assert isinstance(verdict, Rejection), verdict
    return verdict.reason


def _counts(v: Verifier) -> tuple[int, int]:
    stats = v.statistics()
    return stats.signature_checks, stats.signature_memo_hits


def _fresh(key: SigningKey) -> PublicKey:
    """A new key object for the same key (what a refetched JWKS builds)."""
    return PublicKey.from_jwk(key.public.to_jwk())


class TestRejectionsThroughTheMemo:
    def test_bad_signature_first_and_later_sights(self, es256_key: SigningKey) -> None:
        """A forged token is refused on first sight, and on every later sight from the memo
        (the signature computed once, not accepted because it was seen before)."""
        forged = token(SigningKey.generate(kid=es256_key.kid))
        v = _verifier(es256_key)
        for _ in range(4):
            assert _reason(v.check(forged, now=T0 + 1)) is Reason.BAD_SIGNATURE
        assert _counts(v) == (1, 3)

    def test_key_removed_from_the_cache(self, es256_key: SigningKey) -> None:
        """A memoised good token is refused once the issuer's JWKS no longer holds its key
        (unknown_key), and needs a fetch once the cache dropped the issuer's keys."""
        v = _verifier(es256_key)
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        assert isinstance(v.check(tok, now=T0 + 2), VerifiedToken)
        v.keys_fetched(ISSUER, [SigningKey.generate().public], now=T0 + 3)
        assert _reason(v.check(tok, now=T0 + 4)) is Reason.UNKNOWN_KEY
        v.keys.drop(ISSUER)
        assert v.check(tok, now=T0 + 5) == NeedKeys(issuer=ISSUER, unknown_kid=False)

    def test_rotated_out_key(self, es256_key: SigningKey) -> None:
        """After a rotation that withdraws the old key, a token signed by it is refused
        (unknown_key) though its signature was memoised as good; the new key's tokens pass."""
        new = SigningKey.generate()
        v = _verifier(es256_key)
        old_tok = token(es256_key)
        assert isinstance(v.check(old_tok, now=T0 + 1), VerifiedToken)
        v.keys_fetched(ISSUER, [new.public], now=T0 + 2)
        assert _reason(v.check(old_tok, now=T0 + 3)) is Reason.UNKNOWN_KEY
        assert isinstance(v.check(token(new, jti="jti-new"), now=T0 + 3), VerifiedToken)

    def test_retired_key_after_expiry_of_the_cache(self, es256_key: SigningKey) -> None:
        """A key the cache no longer trusts (key_expiry passed, the refetch failed) refuses a
        memoised token: the memo never stands in for the key cache."""
        v = _verifier(es256_key, key_policy=KeyCachePolicy(refresh=60, expiry=120))
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        assert v.check(tok, now=T0 + 130) == NeedKeys(issuer=ISSUER, unknown_kid=False)
        v.keys_failed(ISSUER, now=T0 + 130)
        assert _reason(v.check(tok, now=T0 + 131)) is Reason.UNKNOWN_KEY

    def test_kid_reuse_recomputes(self, es256_key: SigningKey) -> None:
        """A different key published under the same kid is judged afresh: the old token's
        memoised 'good' does not carry over (bad_signature), and the count shows a new check."""
        v = _verifier(es256_key)
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        impostor = SigningKey.generate(kid=es256_key.kid)
        v.keys_fetched(ISSUER, [impostor.public], now=T0 + 2)
        assert _reason(v.check(tok, now=T0 + 3)) is Reason.BAD_SIGNATURE
        assert _counts(v) == (2, 0)
        v.keys_fetched(ISSUER, [_fresh(es256_key)], now=T0 + 4)  # the real key is back
        assert isinstance(v.check(tok, now=T0 + 5), VerifiedToken)
        assert _counts(v) == (3, 0)

    def test_refetched_jwks_keeps_the_memo(self, es256_key: SigningKey) -> None:
        """A refetch that builds new key objects for unchanged keys still hits the memo (it is
        keyed by the key's thumbprint, not by the object)."""
        v = _verifier(es256_key)
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        for i in range(3):
            v.keys_fetched(ISSUER, [_fresh(es256_key)], now=T0 + 2 + i)
            assert isinstance(v.check(tok, now=T0 + 2 + i), VerifiedToken)
        assert _counts(v) == (1, 3)

    def test_expiry_after_a_memo_hit(self, es256_key: SigningKey) -> None:
        """A token accepted from the memo is refused as expired at its exp (zero leeway), and
        accepted up to exp + leeway when the server has leeway."""
        tok = token(es256_key)
        v = _verifier(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        assert isinstance(v.check(tok, now=T0 + 599), VerifiedToken)
        assert _reason(v.check(tok, now=T0 + 600)) is Reason.EXPIRED
        assert _counts(v) == (1, 2)
        lenient = _verifier(es256_key, leeway=30)
        assert isinstance(lenient.check(tok, now=T0 + 1), VerifiedToken)
        assert isinstance(lenient.check(tok, now=T0 + 629), VerifiedToken)
        assert _reason(lenient.check(tok, now=T0 + 630)) is Reason.EXPIRED

    def test_not_yet_valid_after_a_memo_hit(self, es256_key: SigningKey) -> None:
        """A memoised token is refused before its nbf (a server clock stepping back)."""
        tok = token(es256_key)
        v = _verifier(es256_key)
        assert isinstance(v.check(tok, now=T0 + 10), VerifiedToken)
        assert _reason(v.check(tok, now=T0 - 5)) is Reason.NOT_YET_VALID
        assert _counts(v) == (1, 1)

    def test_wrong_audience_every_time(self, es256_key: SigningKey) -> None:
        """A genuine token for another audience is refused on every sight, its signature
        computed once (C2)."""
        tok = token(es256_key, aud="https://other.example")
        v = _verifier(es256_key)
        for t in range(3):
            assert _reason(v.check(tok, now=T0 + t)) is Reason.WRONG_AUDIENCE
        assert _counts(v) == (1, 2)

    def test_insufficient_scope_after_a_memo_hit(self, es256_key: SigningKey) -> None:
        """A memoised token still may only do what its scopes grant, path by path (B6)."""
        tok = token(es256_key)
        v = _verifier(es256_key)
        ok = v.authorize(tok, now=T0, op=Operation.READ, path="/vo/frames/a")
        assert isinstance(ok, VerifiedToken)
        assert (
            _reason(v.authorize(tok, now=T0, op=Operation.READ, path="/vo/framesets/a"))
            is Reason.INSUFFICIENT_SCOPE
        )
        assert (
            _reason(v.authorize(tok, now=T0, op=Operation.CREATE, path="/vo/frames/b"))
            is Reason.INSUFFICIENT_SCOPE
        )
        assert _counts(v) == (1, 2)


class TestMemoBounds:
    def test_bounded_with_eviction(self, es256_key: SigningKey) -> None:
        """The memo never holds more than signature_memo tokens; an evicted token is verified
        again on its next sight, with the same verdict."""
        v = _verifier(es256_key, signature_memo=3)
        toks = [token(es256_key, jti=f"jti-{i}") for i in range(5)]
        for tok in toks:
            assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
            assert len(v._sig_memo) <= 3
        assert _counts(v) == (5, 0)
        assert isinstance(v.check(toks[0], now=T0 + 2), VerifiedToken)  # evicted: computed
        assert isinstance(v.check(toks[4], now=T0 + 2), VerifiedToken)  # still there: a hit
        assert _counts(v) == (6, 1)

    def test_off_computes_every_time(self, es256_key: SigningKey) -> None:
        """signature_memo=0 computes the signature on every check (the behaviour before it)."""
        v = _verifier(es256_key, signature_memo=0)
        tok = token(es256_key)
        for t in range(4):
            assert isinstance(v.check(tok, now=T0 + t), VerifiedToken)
        assert _counts(v) == (4, 0)

    def test_token_cache_is_counted_apart(self, es256_key: SigningKey) -> None:
        """An accepted-token cache hit is not a memo hit: the two counters stay distinct."""
        v = _verifier(es256_key, token_cache=60)
        tok = token(es256_key)
        for t in range(3):
            assert isinstance(v.check(tok, now=T0 + t), VerifiedToken)
        stats = v.statistics()
        assert (stats.cache_hits, stats.signature_checks, stats.signature_memo_hits) == (2, 1, 0)

    def test_forget_empties_the_memo(self, es256_key: SigningKey) -> None:
        """A restart (forget) drops the memo with the other in-memory caches."""
        v = _verifier(es256_key)
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        v.forget()
        v.keys_fetched(ISSUER, [es256_key.public], now=T0 + 2)
        assert isinstance(v.check(tok, now=T0 + 3), VerifiedToken)
        assert _counts(v) == (2, 0)

    def test_negative_size_refused(self) -> None:
        """A negative memo size is bad input, not a silently disabled memo."""
        with pytest.raises(LocalInputError, match="signature_memo"):
            _verifier(None, signature_memo=-1)


# -- the property: the memo is invisible --------------------------------------------------

_K1 = SigningKey.generate(kid="k1")
_K1_REUSED = SigningKey.generate(kid="k1")  # another key under the same kid
_K2 = SigningKey.generate(kid="k2")
_KEYS = (_K1, _K1_REUSED, _K2)
_TOKENS = (
    token(_K1),
    token(_K1, jti="jti-2", iat=T0 + 200, nbf=T0 + 200, exp=T0 + 800),
    token(_K1_REUSED, jti="jti-3"),
    token(_K2, jti="jti-4"),
    token(_K2, jti="jti-5", aud="https://other.example"),
    token(SigningKey.generate(kid="k2"), jti="jti-6"),  # forged under k2
    token(_K1, jti="jti-7", scope="read:/frames/a"),
)
_PATHS = (
    (Operation.READ, "/vo/frames/a/x"),
    (Operation.READ, "/vo/frames/b"),
    (Operation.CREATE, "/vo/results/alice/out"),
)

_checks = st.tuples(
    st.just("check"),
    st.integers(0, len(_TOKENS) - 1),
    st.integers(-20, 700),
    st.integers(0, len(_PATHS) - 1),
)
# A JWKS: for each kid, none, the first key, or the reused-kid key; fresh objects or the same.
_fetches = st.tuples(
    st.just("fetch"),
    st.sampled_from([(), (0,), (1,), (2,), (0, 2), (1, 2)]),
    st.booleans(),
    st.integers(-20, 700),
)
_others = st.tuples(st.sampled_from(["fail", "drop", "forget"]), st.integers(-20, 700))
_ops = st.lists(st.one_of(_checks, _checks, _checks, _fetches, _others), max_size=40)


def _verdict(verdict: object) -> object:
    if isinstance(verdict, VerifiedToken):
        return ("ok", verdict.jti, verdict.scopes, verdict.base_path)
    if isinstance(verdict, Rejection):
        return ("reject", verdict.reason, verdict.detail, verdict.status)
    return verdict


def _replay(ops: list[tuple[Any, ...]], memo: int, token_cache: float) -> list[object]:
    v = Verifier(
        issuers=[TrustedIssuer(ISSUER, "/vo")],
        audiences=[AUDIENCE],
        key_policy=KeyCachePolicy(refresh=300, expiry=600, unknown_kid_refetch=30),
        token_cache=token_cache,
        signature_memo=memo,
    )
    out: list[object] = []
    for op in ops:
        if op[0] == "check":
            _, i, dt, p = op
            kind, path = _PATHS[p]
            out.append(_verdict(v.authorize(_TOKENS[i], now=T0 + dt, op=kind, path=path)))
        elif op[0] == "fetch":
            _, which, fresh, dt = op
            keys = [_fresh(_KEYS[k]) if fresh else _KEYS[k].public for k in which]
            v.keys_fetched(ISSUER, keys, now=T0 + dt)
        elif op[0] == "fail":
            v.keys_failed(ISSUER, now=T0 + op[1])
        elif op[0] == "drop":
            v.keys.drop(ISSUER)
        else:
            v.forget()
    return out


@settings(max_examples=300)
# Always tried, whatever the random draws: kid reuse after a memoised good verdict, a forged
# token seen twice, and a refetch with new objects for unchanged keys.
@example(
    first=("fetch", (0, 2), False, 0),
    ops=[
        ("check", 0, 1, 0),
        ("check", 5, 1, 0),
        ("fetch", (1, 2), True, 2),
        ("check", 0, 3, 0),
        ("check", 5, 3, 0),
        ("fetch", (0, 2), True, 4),
        ("check", 0, 5, 0),
    ],
    memo=2,
    token_cache=0.0,
)
@given(first=_fetches, ops=_ops, memo=st.integers(1, 4), token_cache=st.sampled_from([0.0, 60.0]))
def test_memo_never_changes_a_verdict(
    first: tuple[Any, ...], ops: list[tuple[Any, ...]], memo: int, token_cache: float
) -> None:
    """For any sequence of accesses, JWKS changes (rotation, kid reuse, refetched objects,
    failures, drops, restarts) and times, a memoising verifier (any size) gives exactly the
    verdicts of one that computes every signature."""
    ops = [first, *ops]  # start from some JWKS, so that most checks reach the signature
    assert _replay(ops, memo, token_cache) == _replay(ops, 0, token_cache)
