"""Token claims for the SciTokens 2.0 and WLCG 1.0 profiles (conformance A1-A15, E1).

:func:`build_claims` makes what every real validator accepts (design.md, "Token semantics"):
``sub iss aud iat nbf exp jti`` always, ``ver: "scitoken:2.0"`` or ``wlcg.ver: "1.0"``, an
``iss`` without a trailing slash, and scopes with absolute, normalised paths.

:func:`check_claims` is the validator's side: it returns a :class:`~._reasons.Rejection` for any
token that the strictest peer would rightly refuse, and the token's :class:`Profile` otherwise.
Time is *not* checked here; :func:`check_times` does that against a ``now`` passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import LocalInputError
from ._profiles import SCITOKENS_VER, WLCG_VER, Profile
from ._reasons import Reason, Rejection
from ._scopes import Scope, format_scopes, parse_scope

__all__ = [
    "MAX_LIFETIME",
    "MAX_TIME",
    "MIN_LIFETIME",
    "REQUIRED_CLAIMS",
    "build_claims",
    "check_claims",
    "check_issuer_url",
    "check_times",
]

#: A1 + A14 + design.md: we require these of every token, whatever its profile.
REQUIRED_CLAIMS: tuple[str, ...] = ("sub", "iss", "aud", "iat", "nbf", "exp", "jti")

#: Shortest token lifetime we mint: ``exp = iat + int(lifetime)`` must be later than ``iat``.
MIN_LIFETIME = 1.0
#: Longest token lifetime (and nbf backdate) we mint: ten years, far beyond any real policy.
MAX_LIFETIME = 10 * 365 * 86400.0
#: Latest ``iat`` we mint: 9999-12-31T23:59:59Z + 1 s (RFC 3339 years have four digits).
MAX_TIME = 253402300800.0

#: A4: `wlcg.ver` matches [0-9]+\.[0-9]+.
_WLCG_VER_RE = re.compile(r"\A([0-9]+)\.([0-9]+)\Z")
#: A7: group ::= '/' groupname | group '/' groupname; groupname ::= [a-zA-Z0-9][a-zA-Z0-9_.-]*
_GROUP_RE = re.compile(r"\A(/[a-zA-Z0-9][a-zA-Z0-9_.-]*)+\Z")
#: A2: `sub` is ASCII and at most 255 characters.
_MAX_SUB = 255


def check_issuer_url(url: str) -> str:
    """Refuse an issuer URL that some validator would not match or not fetch keys for.

    peers.md rule 1: ``iss`` is compared byte for byte, and scitokens-cpp builds the discovery URL
    by plain concatenation, so a trailing ``/`` breaks it. A3 / G3 / H2: it must be https.

    Raises:
        LocalInputError: naming the URL and the rule.
    """
    if not url.startswith("https://") or len(url) <= len("https://"):
        raise LocalInputError(f"issuer URL must start with https:// (got {url!r})")
    if url.endswith("/"):
        raise LocalInputError(f"issuer URL must not end with '/' (got {url!r})")
    if any(c.isspace() for c in url):
        raise LocalInputError(f"issuer URL must not contain whitespace (got {url!r})")
    return url


def build_claims(
    *,
    profile: Profile,
    issuer: str,
    subject: str,
    audience: str | Sequence[str],
    scopes: Sequence[Scope | str] | str,
    issued_at: float,
    lifetime: float,
    jti: str,
    nbf_backdate: float = 0.0,
    groups: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of a token that every peer accepts.

    Args:
        profile: SciTokens 2.0 or WLCG 1.0.
        issuer: the ``iss``; https, no trailing slash.
        subject: the ``sub``.
        audience: one audience or several (C1); never empty.
        scopes: scope strings or parsed scopes; paths are normalised and ``..`` refused.
        issued_at: unix seconds (the issuer's clock); ``iat`` is its floor, never ahead of it
            (peers.md rule 5: a future ``iat`` is rejected by every peer).
        lifetime: seconds until ``exp``.
        jti: unique id (A5); the caller draws it from its own seeded RNG.
        nbf_backdate: ``nbf = iat - nbf_backdate`` (E1). This helps only validators that check
            ``nbf`` and not ``iat``: every peer in peers.md (and our verifier) also refuses a
            future ``iat``, so against them only leeway absorbs a lagging validator clock.
        groups: ``wlcg.groups`` (WLCG profile only, A7).
        extra: additional claims (ignored by 2.0 validators, A14).

    Raises:
        LocalInputError: when an argument would make a token some peer rejects.
    """
    check_issuer_url(issuer)
    # Written as "not (the valid range)" so that NaN is refused too; exp = iat + int(lifetime)
    # must be later than iat (a lifetime below 1 s gives exp == iat: dead on arrival).
    if not (MIN_LIFETIME <= lifetime <= MAX_LIFETIME):
        raise LocalInputError(
            f"lifetime: expected {MIN_LIFETIME:g} to {MAX_LIFETIME:g} seconds, "
            f"received {lifetime!r}"
        )
    if not (0 <= nbf_backdate <= MAX_LIFETIME):
        raise LocalInputError(
            f"nbf_backdate: expected 0 to {MAX_LIFETIME:g} seconds, received {nbf_backdate!r}"
        )
    if not (math.isfinite(issued_at) and 0 <= issued_at < MAX_TIME):
        raise LocalInputError(
            f"issued_at: expected unix seconds from 0 to {MAX_TIME:g}, received {issued_at!r}"
        )
    if not subject or len(subject) > _MAX_SUB or not subject.isascii():
        raise LocalInputError(f"sub must be 1-{_MAX_SUB} ASCII characters (got {subject!r})")
    aud: str | list[str]
    if isinstance(audience, str):
        aud = audience
    else:
        aud = list(audience)
        if len(aud) == 1:
            aud = aud[0]
    if not aud:
        raise LocalInputError("audience must not be empty (A1, C1; peers.md rule 4)")
    if isinstance(scopes, str):
        scope_text = format_scopes(parse_scope(s) for s in scopes.split())
    else:
        scope_text = format_scopes(s if isinstance(s, Scope) else parse_scope(s) for s in scopes)
    iat = int(issued_at)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": aud,
        "iat": iat,
        "nbf": iat - int(nbf_backdate),
        "exp": iat + int(lifetime),
        "jti": jti,
        "scope": scope_text,
    }
    if profile is Profile.SCITOKENS:
        claims["ver"] = SCITOKENS_VER
    else:
        claims["wlcg.ver"] = WLCG_VER
        if groups:
            for g in groups:
                if not _GROUP_RE.match(g):
                    raise LocalInputError(
                        f"wlcg.groups entry must match /name[/name...] (got {g!r})"
                    )
            if len(set(groups)) != len(groups):
                raise LocalInputError(f"wlcg.groups must not repeat a group (got {list(groups)!r})")
            claims["wlcg.groups"] = list(groups)
    if extra:
        clash = sorted(set(extra) & set(claims))
        if clash:
            raise LocalInputError(f"extra claims must not override {clash}")
        claims.update(extra)
    return claims


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_claims(claims: Mapping[str, Any]) -> Profile | Rejection:
    """Profile detection and claim shape checks; no time, issuer trust or audience here.

    Returns:
        The token's profile, or a ``malformed`` rejection naming the claim.
    """
    # Profile detection follows scitokens-cpp (H7): `ver` first, then `wlcg.ver`.
    profile: Profile
    ver = claims.get("ver")
    if ver is not None:
        if ver != SCITOKENS_VER:
            # G9: python accepts only "scitoken:2.0"; the plural (P3) and 1.0 are refused.
            return Rejection(
                Reason.MALFORMED, f"unsupported ver {ver!r} (expected {SCITOKENS_VER!r})"
            )
        profile = Profile.SCITOKENS
    elif "wlcg.ver" in claims:
        wver = claims["wlcg.ver"]
        m = _WLCG_VER_RE.match(wver) if isinstance(wver, str) else None
        if m is None:
            return Rejection(Reason.MALFORMED, f"wlcg.ver must look like '1.0' (got {wver!r})")
        if m.group(1) != "1":
            # A12: an unsupported MAJOR version MUST be rejected; newer minors of 1 are accepted.
            return Rejection(Reason.MALFORMED, f"unsupported wlcg.ver major version (got {wver!r})")
        profile = Profile.WLCG
    else:
        # SciTokens 1.0 (no version claim): scitokens-cpp's enforcer and XRootD refuse any claim
        # they do not know and require aud (peers.md table, "no ver" rows); we refuse them all.
        return Rejection(Reason.MALFORMED, "token has neither 'ver' nor 'wlcg.ver' (A4, A14)")

    missing = [c for c in REQUIRED_CLAIMS if c not in claims]
    if missing:
        return Rejection(Reason.MALFORMED, f"missing required claims: {', '.join(missing)}")
    for name in ("iat", "nbf", "exp"):
        if not _is_number(claims[name]):
            return Rejection(Reason.MALFORMED, f"claim {name!r} must be a number")
        # JSON 1e999 decodes to inf: an `exp` of inf would never expire, so refuse it here.
        if not math.isfinite(claims[name]):
            return Rejection(Reason.MALFORMED, f"claim {name!r} must be a finite number")
    for name in ("iss", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            return Rejection(Reason.MALFORMED, f"claim {name!r} must be a non-empty string")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub or len(sub) > _MAX_SUB or not sub.isascii():
        return Rejection(
            Reason.MALFORMED, f"claim 'sub' must be 1-{_MAX_SUB} ASCII characters (A2)"
        )
    aud = claims["aud"]
    if isinstance(aud, list):
        if not aud or not all(isinstance(a, str) and a for a in aud):
            return Rejection(
                Reason.MALFORMED, "claim 'aud' must be a non-empty list of strings (C1)"
            )
    elif not isinstance(aud, str) or not aud:
        return Rejection(Reason.MALFORMED, "claim 'aud' must be a string or a list of strings (C1)")
    scope = claims.get("scope")
    if scope is None:
        if profile is Profile.SCITOKENS:
            return Rejection(Reason.MALFORMED, "SciTokens 2.0 requires a 'scope' claim (A14)")
    elif not isinstance(scope, str):
        return Rejection(Reason.MALFORMED, "claim 'scope' must be a space-separated string (A6)")
    if profile is Profile.WLCG and "wlcg.groups" in claims:
        groups = claims["wlcg.groups"]
        if (
            not isinstance(groups, list)
            or not all(isinstance(g, str) and _GROUP_RE.match(g) for g in groups)
            or len(set(groups)) != len(groups)
        ):
            return Rejection(Reason.MALFORMED, "claim 'wlcg.groups' breaks the A7 grammar")
    return profile


def check_times(claims: Mapping[str, Any], *, now: float, leeway: float = 0.0) -> Rejection | None:
    """``exp``, ``nbf`` and ``iat`` against ``now`` with ``leeway`` seconds of tolerance.

    E1: never accept on or after ``exp``. G2/H6: every peer uses zero leeway and refuses a future
    ``nbf`` or ``iat``; so do we unless a leeway is configured.
    """
    # Each test is written as "not (the granting condition)": a NaN anywhere makes every
    # comparison false, so a NaN can only ever refuse, never grant.
    if not (math.isfinite(now) and math.isfinite(leeway)):
        return Rejection(Reason.EXPIRED, f"cannot judge times at now={now!r}, leeway={leeway!r}")
    exp = claims["exp"]
    if not (now < exp + leeway):
        return Rejection(Reason.EXPIRED, f"expired {now - exp:.3f} s ago (leeway {leeway:g} s)")
    nbf = claims["nbf"]
    if not (now >= nbf - leeway):
        return Rejection(
            Reason.NOT_YET_VALID, f"nbf is {nbf - now:.3f} s in the future (leeway {leeway:g} s)"
        )
    iat = claims["iat"]
    if not (now >= iat - leeway):
        return Rejection(
            Reason.NOT_YET_VALID, f"iat is {iat - now:.3f} s in the future (leeway {leeway:g} s)"
        )
    return None
