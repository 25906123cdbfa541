"""Redaction: one place that every log line, event field and error description goes through.

A token can turn up where no token belongs: a client puts a JWT in ``client_id`` or ``scope``,
a refresh token in ``audience``, and a server that echoes the value back ("unknown client
'eyJ...'") or records it would leak it, unbounded, into answers, logs and event files. So
values are cleaned by *shape*, whatever field they came in:

- a JWT-shaped run (``eyJ...`` header, or any three long base64url segments) becomes
  ``<jwt sha256:0123456789ab>`` (the short hash that logs use to name a token);
- our opaque secrets (refresh tokens ``rt-``, device codes ``dc-``, client secrets ``cs-``)
  become ``<secret sha256:...>``;
- control characters are escaped (no forged log lines, no terminal escapes);
- :func:`bound` also cuts the value to a short prefix and says how much was left out.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any, Final

from ._util import short_hash

__all__ = [
    "ECHO_LIMIT",
    "EVENT_LIMIT",
    "LOG_LIMIT",
    "bound",
    "bound_fields",
    "redact",
    "redact_event_dict",
]

#: How much of a value an error description echoes.
ECHO_LIMIT: Final = 64
#: How long a string in an event record may be.
EVENT_LIMIT: Final = 512
#: How long a string value in a log line may be.
LOG_LIMIT: Final = 256

_JWT: Final = re.compile(
    # a JWS/JWE: a base64url JSON header ("ey" is '{"' or '{ '), then dot-separated parts
    r"ey[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]*){2,}"
    r"|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
    # base64url JSON cut short (no dots left after truncation): still part of a token
    r"|ey[A-Za-z0-9_-]{30,}"
)
_SECRET: Final = re.compile(r"\b(?:rt|dc|cs)-[A-Za-z0-9_-]{16,}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Shorter than any JWT or secret we know of, and printable: nothing to do (the fast path).
_SHORTEST_SECRET: Final = 19


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def redact(text: str) -> str:
    """``text`` with every JWT-shaped run and opaque secret replaced by a hash marker, and
    control characters escaped."""
    if len(text) < _SHORTEST_SECRET and text.isprintable():
        return text
    text = _JWT.sub(lambda m: f"<jwt sha256:{short_hash(m.group())}>", text)
    text = _SECRET.sub(lambda m: f"<secret sha256:{short_hash(m.group())}>", text)
    return _CONTROL.sub(_escape, text)


def bound(text: str, limit: int = ECHO_LIMIT) -> str:
    """:func:`redact` ``text``, then keep at most ``limit`` characters of it, saying how many
    were left out (``abc…(+900000 chars)``)."""
    if len(text) <= limit and (len(text) < _SHORTEST_SECRET and text.isprintable()):
        return text
    # Cut before redacting too: a 900 kB value is not worth scanning whole.
    head = text[: limit * 4]
    clean = redact(head)
    if len(clean) <= limit and len(head) == len(text):
        return clean
    return f"{clean[:limit]}…(+{len(text) - min(len(text), limit)} chars)"


def _clean(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return bound(value, limit)
    if isinstance(value, list):
        return [_clean(v, limit) for v in value]
    if isinstance(value, tuple):
        return tuple(_clean(v, limit) for v in value)
    if isinstance(value, dict):
        return {bound(str(k), limit): _clean(v, limit) for k, v in value.items()}
    return value


def redact_event_dict(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: every string in the log line bounded and redacted."""
    for key, value in list(event.items()):
        event[key] = _clean(value, LOG_LIMIT)
    return event


#: Event strings already cleaned (at :data:`EVENT_LIMIT`): the same ``jti`` or path is recorded
#: by every access of a token's life, and its regular-expression scan is the dearest part of
#: recording an event. Bounded; emptied when full (the strings still in use come back at once).
_CLEANED: dict[str, str] = {}
_CLEANED_MAX: Final = 1 << 16


def bound_fields(fields: MutableMapping[str, Any], limit: int = EVENT_LIMIT) -> None:
    """Bound and redact every string of an event's fields, in place."""
    for key, value in fields.items():
        if isinstance(value, str):
            if len(value) >= _SHORTEST_SECRET or not value.isprintable():
                if limit != EVENT_LIMIT or len(value) > EVENT_LIMIT:
                    fields[key] = bound(value, limit)
                    continue
                clean = _CLEANED.get(value)
                if clean is None:
                    if len(_CLEANED) >= _CLEANED_MAX:
                        _CLEANED.clear()
                    clean = _CLEANED[value] = bound(value, limit)
                fields[key] = clean
        elif isinstance(value, list | tuple | dict):
            fields[key] = _clean(value, limit)
