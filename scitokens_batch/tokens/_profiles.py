"""Token profiles and signing algorithms (conformance A1-A15, D1)."""

from __future__ import annotations

import enum

__all__ = [
    "SCITOKENS_ANY_AUDIENCE",
    "SCITOKENS_VER",
    "WLCG_ANY_AUDIENCE",
    "WLCG_VER",
    "Algorithm",
    "Profile",
]

#: A14: the SciTokens 2.0 version string, singular ("scitokens:2.0" is rejected by python, G9).
SCITOKENS_VER = "scitoken:2.0"
#: A4: issuers keep emitting "1.0" until every consumer is upgraded (scitokens-cpp rejects 1.1, H7).
WLCG_VER = "1.0"
#: C5: the SciTokens 2.0 wildcard audience (valid in a token, never as a server's audience).
SCITOKENS_ANY_AUDIENCE = "ANY"
#: C1: the WLCG wildcard audience.
WLCG_ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"


class Profile(enum.Enum):
    """Which token profile a token follows."""

    SCITOKENS = "scitokens"  #: ``ver: "scitoken:2.0"``, ``read:``/``write:`` scopes
    WLCG = "wlcg"  #: ``wlcg.ver: "1.0"``, ``storage.*`` / ``compute.*`` scopes

    @property
    def any_audience(self) -> str:
        """The wildcard audience this profile defines (C1, C5)."""
        return WLCG_ANY_AUDIENCE if self is Profile.WLCG else SCITOKENS_ANY_AUDIENCE


class Algorithm(enum.Enum):
    """The only signing algorithms any peer accepts (D1, peers.md rule 3)."""

    ES256 = "ES256"
    RS256 = "RS256"
