"""Why a token was refused: a value, never ``False`` (design.md, "A rejection is a value")."""

from __future__ import annotations

import enum

import attrs

__all__ = ["Reason", "Rejection"]


class Reason(enum.Enum):
    """The reasons a data server refuses an access; the names are summary.json paths."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    UNTRUSTED_ISSUER = "untrusted_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    MALFORMED = "malformed"
    MISSING_TOKEN = "missing_token"

    @property
    def status(self) -> int:
        """The HTTP status a server should answer (RFC 6750 §3.1).

        ``insufficient_scope`` is 403; every other reason makes the token unusable, which is
        ``invalid_token`` (or no token at all) and 401 (conformance C4, strict column).
        """
        return 403 if self is Reason.INSUFFICIENT_SCOPE else 401

    @property
    def oauth_error(self) -> str | None:
        """The ``error`` attribute of ``WWW-Authenticate`` (RFC 6750 §3.1), or None."""
        if self is Reason.MISSING_TOKEN:
            return None  # RFC 6750 §3.1: no error code when the request had no token
        if self is Reason.INSUFFICIENT_SCOPE:
            return "insufficient_scope"
        return "invalid_token"


@attrs.frozen(slots=True)
class Rejection:
    """A refused token or access.

    Attributes:
        reason: the machine-readable reason.
        detail: one human-readable sentence; never contains the token itself.
    """

    reason: Reason
    detail: str

    @property
    def status(self) -> int:
        """HTTP status hint: 401 or 403."""
        return self.reason.status

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"
