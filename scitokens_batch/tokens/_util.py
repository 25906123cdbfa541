"""Small helpers shared by the token core."""

from __future__ import annotations

import hashlib

__all__ = ["short_hash"]


def short_hash(token: str) -> str:
    """A 12-hex-digit SHA-256 prefix: how logs and outputs name a token without showing it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:12]
