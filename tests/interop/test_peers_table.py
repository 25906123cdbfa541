"""Every row of the peers.md "Generated interop table", replayed against OUR verifier.

Pure Python (no peer runs here, so no ``interop`` marker): the ``peers`` column is copied from
peers.md (measured 2026-11-21 against python scitokens 1.9.7, scitokens-cpp 0.7.3 and XRootD
5.5.3), and the test encodes the rule our verdict follows rather than only expected values:

* every peer accepts  ->  we accept;
* any peer rejects (or crashes), and that rejection is not a known peer limitation listed in
  ``wrong``  ->  we reject;
* ``expected`` is ``accept`` or ``reject``  ->  we agree; the ``accept?``/``reject?`` rows say
  in ``why`` which way we chose.

The configuration mirrors the table's validators: one trusted issuer with ``base_path="/"``,
audience ``https://harness.example``, zero leeway, and a JWKS that holds two keys (our ES256 and
RS256 keys, so the "no kid header" row meets two keys as in peers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from scitokens_batch.tokens import (
    Algorithm,
    Operation,
    Profile,
    Reason,
    Rejection,
    SigningKey,
    TrustedIssuer,
    VerifiedToken,
    Verifier,
    encode,
)

from .peers import AUDIENCE, our_claims, pyjwt_token

#: The table's issuer (peers.md: https://127.0.0.1:<port>/vo) and a rogue one on the same host.
ISSUER = "https://127.0.0.1:8443/vo"
ROGUE_ISSUER = "https://127.0.0.1:8443/rogue"
#: A fixed instant: the table replay needs no wall clock.
NOW = 1_795_300_000.0
#: peers.md column order.
PEER_COLUMNS = ("py-deser", "py-enf", "cpp-verify", "cpp-access", "xrootd")

#: Our ES256 and RS256 keys (both published), and a rogue issuer's key.
ES = SigningKey.generate(Algorithm.ES256, kid="vo-es256")
RS = SigningKey.generate(Algorithm.RS256, kid="vo-rs256")
ROGUE = SigningKey.generate(Algorithm.ES256, kid="rogue-es256")

Build = Callable[[], str]


def signed(key: SigningKey = ES, *, at: float = NOW, **claims: Any) -> Build:
    """A row token: our claims for ``ISSUER`` issued ``at``, overridden by ``claims``, signed by ``key``."""
    claims.setdefault("issuer", ISSUER)
    return lambda: encode(our_claims(now=at, **claims), key)


def no_kid() -> str:
    """Valid claims, signed by our ES256 key, header without ``kid`` (peers.md rule 2)."""
    return pyjwt_token(our_claims(now=NOW, issuer=ISSUER), ES, {"typ": "JWT"})


def alg_none() -> str:
    """Valid claims, ``alg: none``, empty signature (peers.md rule 3)."""
    return pyjwt_token(our_claims(now=NOW, issuer=ISSUER), None, {"kid": ES.kid, "typ": "JWT"})


def forged() -> str:
    """``iss`` ours, ``kid`` ours, signed by the rogue key (peers.md rule 3)."""
    impostor = SigningKey.from_key(ROGUE.key, kid=ES.kid)
    return signed(impostor)()


@attrs.frozen
class Row:
    """One peers.md row and our verdict on it."""

    case: str
    request: str  # peers.md "token / request"
    expected: str  # peers.md "expected"
    peers: str  # peers.md verdicts, in PEER_COLUMNS order, "|"-separated
    ours: str  # "accept" or "reject"
    reason: Reason | None  # our Rejection reason when we reject
    token: Build
    op: Operation
    path: str
    why: str  # rule ids; for accept?/reject? rows, why we chose this side
    wrong: tuple[str, ...] = ()  # peer columns whose rejection is a known peer limitation

    def peer_verdicts(self) -> dict[str, str]:
        """The ``peers`` column as a mapping column -> verdict."""
        verdicts = [v.strip() for v in self.peers.split("|")]
        assert len(verdicts) == len(PEER_COLUMNS), self.peers
        return dict(zip(PEER_COLUMNS, verdicts, strict=True))


R, W = Operation.READ, Operation.CREATE
FILE = "/dir/file.txt"
ALL_ACCEPT = "accept | accept | accept | accept | accept"
ALL_REJECT = "reject | reject | reject | reject | reject"

# fmt: off
TABLE: list[Row] = [
    # case, request, expected, peers (py-deser | py-enf | cpp-verify | cpp-access | xrootd),
    # ours, reason, token, op, path, why
    Row("valid read ES256", "scope read:/dir; read /dir/file.txt", "accept", ALL_ACCEPT,
        "accept", None, signed(ES), R, FILE, "baseline; D1"),
    Row("valid read RS256", "scope read:/dir; read /dir/file.txt", "accept", ALL_ACCEPT,
        "accept", None, signed(RS), R, FILE, "baseline; D1"),
    Row("valid write", "scope write:/dir, PUT; write /dir/new.txt", "accept", ALL_ACCEPT,
        "accept", None, signed(scopes="write:/dir"), W, "/dir/new.txt", "A15"),
    Row("read scope used for write", "scope read:/dir, PUT; write /dir/new2.txt", "reject",
        "accept | reject | accept | reject | reject",
        "reject", Reason.INSUFFICIENT_SCOPE, signed(), W, "/dir/new2.txt",
        "peers.md rule 6: a read scope never allows a PUT"),
    Row("expired", "exp = now-600; read /dir/file.txt", "reject", ALL_REJECT,
        "reject", Reason.EXPIRED, signed(at=NOW - 1200), R, FILE, "E1"),
    Row("not yet valid", "iat = nbf = now+600; read /dir/file.txt", "reject", ALL_REJECT,
        "reject", Reason.NOT_YET_VALID, signed(at=NOW + 600), R, FILE, "E1, G2, H6"),
    Row("clock skew: iat/nbf 5 s ahead", "issuer clock 5 s fast; read /dir/file.txt", "accept?",
        ALL_REJECT,
        "reject", Reason.NOT_YET_VALID, signed(at=NOW + 5), R, FILE,
        "peers.md rule 5: every peer has zero leeway, so do we by default; a configured "
        "leeway (test_leeway_is_opt_in) accepts it"),
    Row("exp 5 s ago", "leeway probe; read /dir/file.txt", "reject?", ALL_REJECT,
        "reject", Reason.EXPIRED, signed(at=NOW - 605), R, FILE,
        "peers.md rule 5, E1: never accept on or after exp with zero leeway"),
    Row("wrong audience", "aud https://other.example; read /dir/file.txt", "reject",
        "accept | reject | accept | reject | reject",
        "reject", Reason.WRONG_AUDIENCE, signed(audience="https://other.example"), R, FILE,
        "C2, C4"),
    Row("aud list incl. ours", "aud [other, ours]; read /dir/file.txt", "accept", ALL_ACCEPT,
        "accept", None, signed(audience=["https://other.example", AUDIENCE]), R, FILE,
        "C1: one match is enough"),
    Row("aud ANY", "scitoken:2.0 wildcard audience; read /dir/file.txt", "accept?", ALL_ACCEPT,
        "accept", None, signed(audience="ANY"), R, FILE,
        "C5, G7, H8, peers.md rule 4: every enforcer accepts ANY in a SciTokens 2.0 token"),
    Row("missing aud (ver scitoken:2.0)", "2.0 requires aud; read /dir/file.txt", "reject",
        "accept | reject | reject | reject | reject",
        "reject", Reason.MALFORMED, signed(aud=None), R, FILE, "A14, peers.md rule 4"),
    Row("no ver, no aud (SciTokens 1.0)", "legacy profile; read /dir/file.txt", "accept?",
        "accept | accept | accept | reject | reject",
        "reject", Reason.MALFORMED, signed(ver=None, aud=None), R, FILE,
        "peers.md rule 4: cpp-access and XRootD refuse it, so the strictest peer decides; "
        "we require ver or wlcg.ver (A4, A14) and aud"),
    Row("wrong issuer (rogue, self-consistent)",
        "iss=rogue issuer, signed by rogue's key; read /dir/file.txt", "reject",
        "accept | reject | accept | reject | reject",
        "reject", Reason.UNTRUSTED_ISSUER, signed(ROGUE, issuer=ROGUE_ISSUER), R, FILE, "M1"),
    Row("forged: iss=ours, rogue key", "same kid, other key; read /dir/file.txt", "reject",
        ALL_REJECT,
        "reject", Reason.BAD_SIGNATURE, forged, R, FILE, "peers.md rule 3"),
    Row("iss with trailing slash", "iss string != configured; read /dir/file.txt", "reject",
        "accept | reject | reject | reject | reject",
        "reject", Reason.UNTRUSTED_ISSUER, signed(iss=ISSUER + "/"), R, FILE,
        "peers.md rule 1: byte-for-byte iss"),
    Row("alg none", "unsigned; read /dir/file.txt", "reject", ALL_REJECT,
        "reject", Reason.BAD_SIGNATURE, alg_none, R, FILE, "D1, peers.md rule 3"),
    Row("no kid header", "JWKS holds 2 keys; read /dir/file.txt", "accept?", ALL_REJECT,
        "reject", Reason.UNKNOWN_KEY, no_kid, R, FILE,
        "peers.md rule 2: with several keys and no kid every validator refuses; so do we"),
    Row("unknown claim, ver 2.0", "extra claim foo; read /dir/file.txt", "accept", ALL_ACCEPT,
        "accept", None, signed(foo="bar"), R, FILE, "A11, A14: 2.0 ignores unknown claims"),
    Row("unknown claim, no ver", "extra claim foo, SciTokens 1.0; read /dir/file.txt", "accept?",
        "accept | reject | accept | reject | reject",
        "reject", Reason.MALFORMED, signed(ver=None, foo="bar"), R, FILE,
        "A14, peers.md rule 4: 1.0 refuses unknown claims; we refuse every version-less token"),
    Row("WLCG profile storage.read", "wlcg.ver 1.0; read /dir/file.txt", "accept?",
        "accept | reject | accept | accept | accept",
        "accept", None, signed(profile=Profile.WLCG, scopes="storage.read:/dir"), R, FILE,
        "A1, B1, peers.md rule 6: cpp and XRootD accept it; the python Enforcer 1.9.7 does "
        "not implement WLCG scopes (G8, G10), a limitation, not a verdict on the token",
        wrong=("py-enf",)),
    Row("prefix confusion /dir vs /dirty", "scope read:/dir; read /dirty/file.txt", "reject",
        "accept | reject | accept | accept | accept",
        "reject", Reason.INSUFFICIENT_SCOPE, signed(), R, "/dirty/file.txt",
        "B4, H10: whole-component match; cpp 0.7.3 and XRootD wrongly accept (prefix match)"),
    Row("request path traversal", "scope read:/dir; read /dir/../etc/passwd", "reject",
        "accept | reject | accept | reject | reject",
        "reject", Reason.INSUFFICIENT_SCOPE, signed(), R, "/dir/../etc/passwd",
        "M, peers.md table: XRootD answers 403 to '..' in a request path"),
    Row("scope with .. inside base", "scope read:/dir/../etc; read /etc/passwd", "reject",
        "accept | reject | accept | accept | accept",
        "reject", Reason.MALFORMED, signed(scope="read:/dir/../etc"), R, "/etc/passwd",
        "B5, G10, peers.md rule 7: python refuses the token; cpp and XRootD wrongly "
        "normalise it and grant /etc"),
    Row("scope with .. above root", "scope read:/../etc (run last: may crash); read /etc/passwd",
        "reject", "accept | reject | accept | CRASH | CRASH",
        "reject", Reason.MALFORMED, signed(scope="read:/../etc"), R, "/etc/passwd",
        "B5, peers.md rule 7: undefined behaviour in cpp 0.7.3 (crash); we refuse the token"),
]
# fmt: on


def _verifier(*, leeway: float = 0.0) -> Verifier:
    """The table's validator: one issuer at base path ``/``, our audience, both our keys."""
    v = Verifier(
        issuers=[TrustedIssuer(ISSUER, base_path="/")], audiences={AUDIENCE}, leeway=leeway
    )
    v.keys_fetched(ISSUER, [ES.public, RS.public], now=NOW)
    return v


def _verdict(result: object) -> str:
    assert isinstance(result, VerifiedToken | Rejection), result
    return "accept" if isinstance(result, VerifiedToken) else "reject"


def test_table_mirrors_peers_md() -> None:
    """The table holds every peers.md row once, in order, with only known verdict words."""
    assert len(TABLE) == 25
    assert len({row.case for row in TABLE}) == len(TABLE)
    for row in TABLE:
        assert row.expected in {"accept", "reject", "accept?", "reject?"}, row.case
        assert set(row.peer_verdicts().values()) <= {"accept", "reject", "CRASH"}, row.case
        assert set(row.wrong) <= set(PEER_COLUMNS), row.case
        assert (row.ours == "reject") == (row.reason is not None), row.case


@pytest.mark.parametrize("row", TABLE, ids=[row.case for row in TABLE])
def test_our_verdict_follows_the_peers_rule(row: Row) -> None:
    """Ours accepts where all peers accept and rejects where any peer rightly rejects (peers.md rules 1-7)."""
    peers = row.peer_verdicts()
    right_rejections = [c for c, v in peers.items() if v != "accept" and c not in row.wrong]
    if all(v == "accept" for v in peers.values()):
        assert row.ours == "accept", f"{row.case}: every peer accepts"
    if right_rejections:
        assert row.ours == "reject", f"{row.case}: {right_rejections} rightly reject"
    if row.expected in {"accept", "reject"}:
        assert row.ours == row.expected, f"{row.case}: peers.md expects {row.expected}"
    else:
        assert row.why, f"{row.case}: an {row.expected} row must say why we chose {row.ours}"

    result = _verifier().authorize(row.token(), now=NOW, op=row.op, path=row.path)
    assert _verdict(result) == row.ours, f"{row.case}: {result}"
    if isinstance(result, Rejection):
        assert result.reason is row.reason, f"{row.case}: {result}"


def test_leeway_is_opt_in() -> None:
    """The 5 s clock-skew token is rejected with leeway 0 (every peer, G2, H6) and accepted with leeway 10 (E1)."""
    token = signed(at=NOW + 5)()
    strict = _verifier().authorize(token, now=NOW, op=R, path=FILE)
    assert isinstance(strict, Rejection)
    assert strict.reason is Reason.NOT_YET_VALID
    lenient = _verifier(leeway=10).authorize(token, now=NOW, op=R, path=FILE)
    assert isinstance(lenient, VerifiedToken), lenient
    # The leeway is symmetric: exp 5 s ago is accepted with leeway 10 too, never beyond it.
    late = signed(at=NOW - 605)()
    assert isinstance(_verifier(leeway=10).check(late, now=NOW), VerifiedToken)
    gone = _verifier(leeway=10).check(late, now=NOW + 5)
    assert isinstance(gone, Rejection)
    assert gone.reason is Reason.EXPIRED
