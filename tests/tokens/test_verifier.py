"""The data server's verifier: every rejection reason, key traffic and the token cache."""

from __future__ import annotations

import pytest

from scitokens_batch.errors import LocalInputError
from scitokens_batch.tokens import (
    KeyCachePolicy,
    NeedKeys,
    Operation,
    Reason,
    Rejection,
    SigningKey,
    TrustedIssuer,
    VerifiedToken,
    Verifier,
    verifier_for,
)

from .helpers import AUDIENCE, ISSUER, T0, claims, encode_with_header, token


def _verifier(key: SigningKey, **kw: object) -> Verifier:
    kw.setdefault("key_policy", KeyCachePolicy(refresh=86400))  # no refresh inside these tests
    v = Verifier(issuers=[TrustedIssuer(ISSUER, "/vo")], audiences=[AUDIENCE], **kw)  # type: ignore[arg-type]
    v.keys_fetched(ISSUER, [key.public], now=T0)
    return v


def _reason(verdict: object) -> Reason:
    assert isinstance(verdict, Rejection), verdict
    return verdict.reason


class TestVerdicts:
    def test_accepts_and_authorizes(self, es256_key: SigningKey) -> None:
        """A valid token is accepted and may read under its scope below the base path (B6)."""
        v = _verifier(es256_key)
        verdict = v.authorize(token(es256_key), now=T0 + 1, op=Operation.READ, path="/vo/frames/f")
        assert isinstance(verdict, VerifiedToken)
        assert (verdict.issuer, verdict.subject, verdict.jti) == (ISSUER, "alice", "jti-1")

    @pytest.mark.parametrize(
        ("tok_over", "now", "reason"),
        [
            ({}, T0 + 600, Reason.EXPIRED),
            ({}, T0 - 1, Reason.NOT_YET_VALID),
            ({"iss": "https://rogue.example/vo"}, T0, Reason.UNTRUSTED_ISSUER),
            ({"iss": ISSUER + "/"}, T0, Reason.UNTRUSTED_ISSUER),  # peers.md rule 1
            ({"aud": "https://other.example"}, T0, Reason.WRONG_AUDIENCE),
            ({"aud": "https://wlcg.cern.ch/jwt/v1/any"}, T0, Reason.WRONG_AUDIENCE),  # C5: not ours
            ({"scope": "read:/a/../etc"}, T0, Reason.MALFORMED),  # peers.md rule 7
            ({"ver": None}, T0, Reason.MALFORMED),
        ],
    )
    def test_rejections(
        self, es256_key: SigningKey, tok_over: dict[str, object], now: float, reason: Reason
    ) -> None:
        """E1, C1-C5, M1, A14: each broken token gets its own reason."""
        assert _reason(_verifier(es256_key).check(token(es256_key, **tok_over), now=now)) is reason

    def test_any_audience_for_scitokens(self, es256_key: SigningKey) -> None:
        """C5 / H8: aud ANY matches any server for a SciTokens 2.0 token."""
        assert isinstance(
            _verifier(es256_key).check(token(es256_key, aud="ANY"), now=T0), VerifiedToken
        )

    def test_bad_signature(self, es256_key: SigningKey) -> None:
        """A token signed by another key under our kid is a bad signature (peers.md 'forged')."""
        rogue = SigningKey.generate(kid=es256_key.kid)
        assert _reason(_verifier(es256_key).check(token(rogue), now=T0)) is Reason.BAD_SIGNATURE

    def test_missing_token(self, es256_key: SigningKey) -> None:
        """No token at all is missing_token, status 401 without an OAuth error code."""
        verdict = _verifier(es256_key).check(None, now=T0)
        assert _reason(verdict) is Reason.MISSING_TOKEN
        assert Reason.MISSING_TOKEN.status == 401 and Reason.MISSING_TOKEN.oauth_error is None

    def test_insufficient_scope_is_403(self, es256_key: SigningKey) -> None:
        """M3: a read token used for an upload is refused with 403 insufficient_scope."""
        verdict = _verifier(es256_key).authorize(
            token(es256_key), now=T0, op=Operation.CREATE, path="/vo/frames/new"
        )
        assert _reason(verdict) is Reason.INSUFFICIENT_SCOPE
        assert isinstance(verdict, Rejection) and verdict.status == 403

    def test_leeway(self, es256_key: SigningKey) -> None:
        """E1: with leeway 10 s a token 5 s past exp is accepted; with 0 it is not."""
        tok = token(es256_key)
        assert isinstance(_verifier(es256_key, leeway=10).check(tok, now=T0 + 605), VerifiedToken)
        assert _reason(_verifier(es256_key).check(tok, now=T0 + 605)) is Reason.EXPIRED

    def test_server_audience_any_refused(self) -> None:
        """C5 / G7: a server whose audience is ANY is a configuration error."""
        with pytest.raises(LocalInputError, match="ANY"):
            Verifier(issuers=[TrustedIssuer(ISSUER)], audiences=["ANY"])


class TestKeys:
    def test_first_use_needs_keys(self, es256_key: SigningKey) -> None:
        """D2: with no cached keys the verifier asks for the JWKS (a cold cache, not an unknown kid)."""
        v = Verifier(issuers=[TrustedIssuer(ISSUER)], audiences=[AUDIENCE])
        tok = token(es256_key)
        assert v.check(tok, now=T0) == NeedKeys(issuer=ISSUER, unknown_kid=False)
        v.keys_fetched(ISSUER, [es256_key.public], now=T0)
        assert isinstance(v.check(tok, now=T0), VerifiedToken)

    def test_untrusted_issuer_never_fetches(self, es256_key: SigningKey) -> None:
        """M1: an untrusted issuer is refused before any key fetch."""
        v = Verifier(issuers=[TrustedIssuer(ISSUER)], audiences=[AUDIENCE])
        assert (
            _reason(v.check(token(es256_key, iss="https://evil.example"), now=T0))
            is Reason.UNTRUSTED_ISSUER
        )

    def test_unknown_kid_never_refetched_like_cpp(self, es256_key: SigningKey) -> None:
        """H4 / P9: with unknown_kid_refetch=None an unknown kid waits for the refresh time."""
        new = SigningKey.generate()
        v = _verifier(es256_key, key_policy=KeyCachePolicy(refresh=600, unknown_kid_refetch=None))
        assert _reason(v.check(token(new), now=T0 + 10)) is Reason.UNKNOWN_KEY
        assert v.check(
            token(new, iat=int(T0) + 600, nbf=int(T0) + 600, exp=int(T0) + 1200), now=T0 + 600
        ) == NeedKeys(issuer=ISSUER, unknown_kid=True)

    def test_unknown_kid_refetch_rate_limited(self, es256_key: SigningKey) -> None:
        """G4: an unknown kid triggers a refetch, at most once per unknown_kid_refetch."""
        new = SigningKey.generate()
        v = _verifier(es256_key, key_policy=KeyCachePolicy(unknown_kid_refetch=60))
        assert isinstance(v.check(token(new), now=T0 + 60), NeedKeys)
        v.keys_fetched(ISSUER, [es256_key.public], now=T0 + 60, unknown_kid=True)  # still old JWKS
        assert _reason(v.check(token(new), now=T0 + 90)) is Reason.UNKNOWN_KEY
        assert isinstance(v.check(token(new), now=T0 + 120), NeedKeys)
        assert v.keys.statistics().unknown_kid_fetches == 1

    def test_stale_keys_used_when_refresh_fails(self, es256_key: SigningKey) -> None:
        """H3: a failed refresh keeps the old keys until they expire."""
        v = _verifier(
            es256_key, key_policy=KeyCachePolicy(refresh=600, expiry=3600, retry_after_failure=300)
        )
        late = token(es256_key, iat=int(T0) + 700, nbf=int(T0) + 700, exp=int(T0) + 9000)
        assert isinstance(v.check(late, now=T0 + 700), NeedKeys)
        v.keys_failed(ISSUER, now=T0 + 700)
        assert isinstance(v.check(late, now=T0 + 700), VerifiedToken)
        assert isinstance(v.check(late, now=T0 + 1000), NeedKeys)  # retry after 300 s
        v.keys_failed(ISSUER, now=T0 + 1000)
        assert isinstance(v.check(late, now=T0 + 3600), NeedKeys)  # keys expired: must fetch
        v.keys_failed(ISSUER, now=T0 + 3600)  # G5: now negatively cached
        assert _reason(v.check(late, now=T0 + 3600)) is Reason.UNKNOWN_KEY

    def test_missing_kid(self, es256_key: SigningKey) -> None:
        """peers.md rule 2: no kid is accepted with one published key, refused with two."""
        no_kid = encode_with_header({"alg": "ES256", "typ": "JWT"}, claims(), es256_key)
        assert isinstance(_verifier(es256_key).check(no_kid, now=T0), VerifiedToken)
        two = _verifier(es256_key)
        two.keys_fetched(ISSUER, [es256_key.public, SigningKey.generate().public], now=T0)
        assert _reason(two.check(no_kid, now=T0)) is Reason.UNKNOWN_KEY


class TestTokenCache:
    def test_hit_skips_signature(self, es256_key: SigningKey) -> None:
        """A cached accepted token is not verified again."""
        v = _verifier(es256_key, token_cache=60)
        tok = token(es256_key)
        for t in range(5):
            assert isinstance(v.check(tok, now=T0 + t), VerifiedToken)
        stats = v.statistics()
        assert (stats.checks, stats.signature_checks, stats.cache_hits) == (5, 1, 4)

    def test_never_past_exp(self, es256_key: SigningKey) -> None:
        """Unlike XRootD 5.5.3 (peers.md), a cached token is never accepted at or after exp."""
        v = _verifier(es256_key, token_cache=3600)
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 590), VerifiedToken)
        assert _reason(v.check(tok, now=T0 + 600)) is Reason.EXPIRED

    def test_clock_going_back_rechecks_nbf(self, es256_key: SigningKey) -> None:
        """After a backwards clock step a cached token is not accepted before its nbf."""
        v = _verifier(es256_key, token_cache=60)
        tok = token(es256_key)
        assert isinstance(v.check(tok, now=T0 + 1), VerifiedToken)
        assert _reason(v.check(tok, now=T0 - 30)) is Reason.NOT_YET_VALID

    def test_cache_still_authorizes_per_path(self, es256_key: SigningKey) -> None:
        """A cache hit still checks the scope for each path."""
        v = _verifier(es256_key, token_cache=60)
        tok = token(es256_key)
        ok = v.authorize(tok, now=T0, op=Operation.READ, path="/vo/frames/a")
        assert isinstance(ok, VerifiedToken)
        sibling = v.authorize(tok, now=T0, op=Operation.READ, path="/vo/framesets/a")
        assert _reason(sibling) is Reason.INSUFFICIENT_SCOPE


def test_verifier_for_preloads(es256_key: SigningKey) -> None:
    """verifier_for trusts one issuer whose keys never need fetching."""
    v = verifier_for(ISSUER, [AUDIENCE], [es256_key.public], now=T0)
    assert isinstance(v.check(token(es256_key), now=T0 + 1), VerifiedToken)


def _verdict_key(verdict: object) -> object:
    if isinstance(verdict, Rejection):
        return ("reject", verdict.reason, verdict.detail)
    if isinstance(verdict, VerifiedToken):
        return ("ok", verdict.jti, verdict.scopes)
    return verdict


def test_parse_memo_never_changes_a_verdict(es256_key: SigningKey) -> None:
    """The per-token memo is invisible: the same checks with it on and off give the same verdicts
    (expiry, key rotation, bad signature, audience and scope problems included)."""
    rogue = SigningKey.generate(kid=es256_key.kid)
    tokens = [
        token(es256_key),
        token(es256_key, aud="https://other.example"),
        token(es256_key, scope="read:/a/../b"),
        token(rogue),
        "not-a-token",
    ]
    results = []
    for memo in (0, 100):
        v = _verifier(es256_key, parse_memo=memo)
        seq = []
        for now in (T0 + 1, T0 + 300, T0 + 600, T0 + 1):
            for tok in tokens * 2:
                seq.append(_verdict_key(v.check(tok, now=now)))
        v.keys_fetched(ISSUER, [SigningKey.generate().public], now=T0)  # our key withdrawn
        seq += [_verdict_key(v.check(tok, now=T0 + 2)) for tok in tokens]
        results.append(seq)
    assert results[0] == results[1]
    assert ("reject", Reason.EXPIRED, "expired 0.000 s ago (leeway 0 s)") in results[0]


def test_no_audience_check_only_when_asked(es256_key: SigningKey) -> None:
    """audiences=None (an issuer judging its own tokens) skips C2; every other check stays."""
    own = verifier_for(ISSUER, None, [es256_key.public], now=T0)
    assert isinstance(
        own.check(token(es256_key, aud="https://anyone.example"), now=T0), VerifiedToken
    )
    assert _reason(own.check(token(es256_key), now=T0 + 600)) is Reason.EXPIRED
    assert (
        _reason(own.check(token(SigningKey.generate(kid=es256_key.kid)), now=T0))
        is Reason.BAD_SIGNATURE
    )
    assert _reason(
        _verifier(es256_key).check(token(es256_key, aud="https://anyone.example"), now=T0)
    ) is (Reason.WRONG_AUDIENCE)
