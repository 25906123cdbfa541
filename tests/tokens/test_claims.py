"""Claims of both profiles: what we emit and what we refuse (A1-A15, E1)."""

from __future__ import annotations

from typing import Any

import pytest

from scitokens_batch.errors import LocalInputError, ScopeError
from scitokens_batch.tokens import (
    Profile,
    Reason,
    Rejection,
    build_claims,
    check_claims,
    check_issuer_url,
    check_times,
)

from .helpers import AUDIENCE, ISSUER, T0, claims


def _wlcg(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "profile": Profile.WLCG,
        "issuer": ISSUER,
        "subject": "a1b2c3",
        "audience": AUDIENCE,
        "scopes": ["storage.read:/data", "storage.create:/results/"],
        "issued_at": T0 + 0.9,
        "lifetime": 1200,
        "jti": "j",
    }
    args.update(kw)
    return build_claims(**args)


class TestBuild:
    def test_scitokens_profile(self) -> None:
        """A1/A14: a SciTokens 2.0 token carries ver and every required claim, integer times."""
        c = claims()
        assert c["ver"] == "scitoken:2.0"
        assert {"sub", "iss", "aud", "iat", "nbf", "exp", "jti", "scope"} <= set(c)
        assert (c["iat"], c["nbf"], c["exp"]) == (int(T0), int(T0), int(T0) + 600)

    def test_wlcg_profile(self) -> None:
        """A4/A7: WLCG tokens say wlcg.ver "1.0" (never 1.1+) and may carry wlcg.groups."""
        c = _wlcg(groups=["/vo", "/vo/prod"])
        assert c["wlcg.ver"] == "1.0" and "ver" not in c
        assert c["wlcg.groups"] == ["/vo", "/vo/prod"]
        assert c["scope"] == "storage.read:/data storage.create:/results/"

    def test_iat_never_ahead_of_issuer_clock(self) -> None:
        """peers.md rule 5: iat is the floor of the issuer's clock, never rounded up."""
        c = _wlcg()
        assert c["iat"] == int(T0) and c["iat"] <= T0 + 0.9

    def test_nbf_backdate(self) -> None:
        """E1: nbf may be back-dated below iat to absorb validator clocks that lag."""
        c = _wlcg(nbf_backdate=60)
        assert c["nbf"] == c["iat"] - 60

    def test_single_audience_list_collapses(self) -> None:
        """C1: a one-element audience list is emitted as a string; several stay a list."""
        assert _wlcg(audience=["a"])["aud"] == "a"
        assert _wlcg(audience=["a", "b"])["aud"] == ["a", "b"]

    @pytest.mark.parametrize(
        ("kw", "message"),
        [
            ({"issuer": "https://i.example/vo/"}, "must not end with '/'"),
            ({"issuer": "http://i.example/vo"}, "https://"),
            ({"audience": []}, "audience must not be empty"),
            ({"lifetime": 0}, "lifetime: expected 1 to"),
            ({"subject": ""}, "sub must be"),
            ({"subject": "x" * 256}, "sub must be"),
            ({"groups": ["vo"]}, "wlcg.groups entry"),
            ({"groups": ["/vo", "/vo"]}, "must not repeat"),
            ({"nbf_backdate": -1}, "nbf_backdate"),
        ],
    )
    def test_refuses_what_a_peer_would_reject(self, kw: dict[str, Any], message: str) -> None:
        """peers.md rules 1, 4; A2, A7: arguments that would make a bad token are refused."""
        with pytest.raises(LocalInputError, match=message):
            _wlcg(**kw)

    @pytest.mark.parametrize("scope", ["read:/a/../b", "read:relative", "storage.read"])
    def test_bad_scopes_refused(self, scope: str) -> None:
        """B2, B5, peers.md rule 7: scopes with traversal, relative or no path are refused."""
        with pytest.raises(ScopeError):
            _wlcg(scopes=[scope])

    def test_extra_cannot_override(self) -> None:
        """Extra claims cannot silently replace a required one."""
        with pytest.raises(LocalInputError, match="override"):
            _wlcg(extra={"iss": "https://other"})

    def test_issuer_url_check(self) -> None:
        """A3 / peers.md rule 1: https, no trailing slash, no whitespace."""
        assert check_issuer_url(ISSUER) == ISSUER
        with pytest.raises(LocalInputError):
            check_issuer_url("https://")


class TestCheck:
    def test_valid_profiles(self) -> None:
        """A valid SciTokens and a valid WLCG token are recognised by profile."""
        assert check_claims(claims()) is Profile.SCITOKENS
        assert check_claims(_wlcg()) is Profile.WLCG

    @pytest.mark.parametrize(
        ("over", "fragment"),
        [
            ({"ver": "scitokens:2.0"}, "unsupported ver"),  # G9, P3
            ({"ver": "scitoken:1.0"}, "unsupported ver"),
            ({"ver": None}, "neither 'ver' nor 'wlcg.ver'"),  # SciTokens 1.0 refused
            ({"aud": None}, "missing required claims: aud"),  # peers.md rule 4
            ({"nbf": None}, "missing required claims: nbf"),
            ({"jti": None}, "missing required claims: jti"),
            ({"sub": None}, "missing required claims: sub"),
            ({"exp": "soon"}, "'exp' must be a number"),
            ({"iat": True}, "'iat' must be a number"),
            ({"iss": ""}, "'iss' must be a non-empty string"),
            ({"aud": []}, "'aud' must be a non-empty list"),
            ({"aud": 3}, "'aud' must be a string"),
            ({"scope": None}, "requires a 'scope'"),  # A14
            ({"scope": ["read:/a"]}, "space-separated string"),  # A6
            ({"sub": "é"}, "ASCII"),  # A2
        ],
    )
    def test_malformed_scitokens(self, over: dict[str, Any], fragment: str) -> None:
        """A1, A2, A6, A14: each broken claim is malformed, and the detail names it."""
        verdict = check_claims(claims(**over))
        assert isinstance(verdict, Rejection) and verdict.reason is Reason.MALFORMED
        assert fragment in verdict.detail

    @pytest.mark.parametrize(
        ("wver", "ok"),
        [("1.0", True), ("1.3", True), ("1.10", True), ("2.0", False), ("1", False), (1.0, False)],
    )
    def test_wlcg_ver_major(self, wver: object, ok: bool) -> None:
        """A12: a newer minor of major 1 is accepted; another major or a bad form is refused."""
        c = _wlcg()
        c["wlcg.ver"] = wver
        assert (check_claims(c) is Profile.WLCG) == ok

    def test_wlcg_groups_grammar(self) -> None:
        """A7: wlcg.groups must be a list of /group paths without repeats."""
        for bad in (["vo"], "/vo", ["/vo", "/vo"], ["/-x"]):
            c = _wlcg()
            c["wlcg.groups"] = bad
            assert isinstance(check_claims(c), Rejection)

    def test_wlcg_scope_optional(self) -> None:
        """A6: a WLCG token may carry groups instead of scopes."""
        c = _wlcg(groups=["/vo"])
        del c["scope"]
        assert check_claims(c) is Profile.WLCG


class TestTimes:
    @pytest.mark.parametrize(
        ("now", "leeway", "reason"),
        [
            (T0, 0, None),
            (T0 + 599.999, 0, None),
            (T0 + 600, 0, Reason.EXPIRED),  # E1: MUST NOT accept on exp
            (T0 + 605, 0, Reason.EXPIRED),
            (T0 + 605, 10, None),
            (T0 - 0.001, 0, Reason.NOT_YET_VALID),  # G2, H6: zero leeway
            (T0 - 5, 10, None),
        ],
    )
    def test_time_window(self, now: float, leeway: float, reason: Reason | None) -> None:
        """E1, G2, H6: [nbf, exp) with an explicit leeway, zero by default."""
        verdict = check_times(claims(), now=now, leeway=leeway)
        assert (None if verdict is None else verdict.reason) is reason

    def test_future_iat_refused(self) -> None:
        """peers.md rule 5: a future iat is refused even when nbf has passed."""
        verdict = check_times(claims(nbf=int(T0) - 100), now=T0 - 1)
        assert verdict is not None and "iat" in verdict.detail
