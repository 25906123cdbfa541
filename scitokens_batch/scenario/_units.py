"""Units in scenario files: durations, sizes, rates and the RFC 3339 epoch.

Every value with a unit is a string in the scenario file (``"90m"``, ``"400MB"``,
``"200MB/s"``); a bare number is refused because ``90`` could mean seconds or minutes.
Sizes use powers of 1000, as storage vendors and the reference file do.

Each parser raises :class:`ValueError` whose message says what was expected and what was
received; the loader adds the file and the key path
(:class:`~scitokens_batch.errors.ScenarioError`).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Final

import attrs

__all__ = [
    "DURATION_UNITS",
    "LIMITS",
    "MAX_DEPTH",
    "SIZE_UNITS",
    "Limit",
    "check_range",
    "describe",
    "format_duration",
    "parse_duration",
    "parse_epoch",
    "parse_rate",
    "parse_size",
    "toml_type_name",
]

#: Seconds per duration unit.
DURATION_UNITS: Final[dict[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

#: Bytes per size unit (powers of 1000).
SIZE_UNITS: Final[dict[str, int]] = {
    "B": 1,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}


@attrs.frozen
class Limit:
    """The finite range every value of one kind must fall in (docs/scenario-reference.md).

    Attributes:
        low: the smallest value allowed (a field's own check may ask for more, e.g. > 0).
        high: the largest value allowed.
        shown: how error messages write the range, in the file's units.
    """

    low: float
    high: float
    shown: str


#: One finite range per kind of value. Anything outside is refused at load with the range in
#: the message: a 400-digit duration is not infinity, it is an error. The bounds are far
#: beyond any real pool or policy and small enough that arithmetic on them stays exact
#: (sums of durations stay below 2**53 ms, products of counts stay far below 2**63).
LIMITS: Final[dict[str, Limit]] = {
    "duration": Limit(-3650 * 86400.0, 3650 * 86400.0, "from -3650d to 3650d"),
    "size": Limit(0, 10**15, "from 0B to 1000000GB (1 PB)"),
    "rate": Limit(0, 10**12, "from 0B/s to 1000GB/s"),
    "count": Limit(0, 10_000_000, "from 0 to 10000000"),
    "number": Limit(-1e15, 1e15, "from -1e15 to 1e15"),
    "integer": Limit(-(2**63), 2**63 - 1, "from -2**63 to 2**63-1"),
}

#: How deeply arrays and tables may nest in a scenario file or a ``--set`` value. The spec
#: needs 5; deeper input is refused before anything recurses over it.
MAX_DEPTH: Final = 32


def check_range(kind: str, value: float, raw: object) -> None:
    """Refuse ``value`` (read from ``raw``) when it is outside the range of its kind.

    Written as "not (inside)" so that NaN is refused as well.

    Raises:
        ValueError: naming the kind, its range and what was received.
    """
    limit = LIMITS[kind]
    if not (limit.low <= value <= limit.high):
        raise ValueError(f"expected a {kind} {limit.shown}, received {_short(raw)}")


def _short(raw: object) -> str:
    shown = repr(raw)
    return shown if len(shown) <= 40 else f"{shown[:20]}...{shown[-8:]} ({len(shown)} characters)"


_NUMBER = r"(?P<number>\d+(?:\.\d+)?|\.\d+)"
_DURATION_RE: Final = re.compile(rf"(?P<sign>[-+]?){_NUMBER}(?P<unit>ms|s|m|h|d)")
_SIZE_RE: Final = re.compile(rf"{_NUMBER}(?P<unit>B|kB|MB|GB)")
_RATE_RE: Final = re.compile(rf"{_NUMBER}(?P<unit>B|kB|MB|GB)/s")
# RFC 3339 section 5.6 date-time: full-date "T" full-time, where full-time needs an offset.
_EPOCH_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"
)

_DURATION_EXPECTED: Final = (
    'a duration string with a unit, such as "90m" or "1.5h" (units: ms, s, m, h, d)'
)
_SIZE_EXPECTED: Final = 'a size string with a unit, such as "400MB" (units: B, kB, MB, GB)'
_RATE_EXPECTED: Final = 'a rate string, such as "200MB/s" (units: B/s, kB/s, MB/s, GB/s)'
_EPOCH_EXPECTED: Final = 'an RFC 3339 date-time with a time zone, such as "2026-01-01T00:00:00Z"'


def describe(value: object) -> str:
    """Show a received value the way error messages do: its repr and its TOML type.

    Args:
        value: a value read from a TOML document (or given on the command line).

    Returns:
        For example ``"'90' (a string)"`` or ``"90 (an integer)"``.
    """
    if isinstance(value, bool):
        shown = "true" if value else "false"
    else:
        # Shortened: a received value may be a 400-digit number or a huge array (the loader
        # has bounded its nesting depth before anything is described).
        shown = _short(value)
    return f"{shown} ({toml_type_name(value)})"


def toml_type_name(value: object) -> str:
    """Name the TOML type of a value decoded by :mod:`tomllib`, with an article.

    Args:
        value: a decoded TOML value.

    Returns:
        ``"a string"``, ``"an integer"``, ``"a table"``, ...
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, _dt.datetime):
        return "a date-time"
    if isinstance(value, _dt.date):
        return "a date"
    if isinstance(value, _dt.time):
        return "a time"
    return f"a {type(value).__name__}"


def parse_duration(value: object, *, allow_negative: bool = False) -> float:
    """Parse a duration such as ``"90m"``, ``"1.5h"``, ``"40ms"`` or ``"0s"`` into seconds.

    Args:
        value: the value from the scenario file; must be a string.
        allow_negative: accept a leading ``-`` (only fields that say so, e.g. ``clock_skew``).

    Returns:
        The duration in seconds.

    Raises:
        ValueError: the value is not a string, has no unit or an unknown one, or is
            negative where that is not allowed. The message shows an example.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected {_DURATION_EXPECTED}, received {describe(value)}")
    match = _DURATION_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected {_DURATION_EXPECTED}, received {_short(value)}")
    seconds = float(match["number"]) * DURATION_UNITS[match["unit"]]
    if match["sign"] == "-":
        if not allow_negative and seconds != 0.0:
            raise ValueError(f"expected a duration >= 0s, received {_short(value)}")
        seconds = -seconds
    check_range("duration", seconds, value)
    return seconds + 0.0  # normalise -0.0 to 0.0


def format_duration(seconds: float) -> str:
    """Write seconds back as the shortest exact duration string (``600.0`` -> ``"10m"``).

    Args:
        seconds: a duration in seconds.

    Returns:
        A string that :func:`parse_duration` turns back into ``seconds``.
    """
    for unit in ("d", "h", "m", "s"):
        scale = DURATION_UNITS[unit]
        count = seconds / scale
        if count == int(count) and abs(count) >= 1:
            return f"{int(count)}{unit}"
    if seconds == 0:
        return "0s"
    return f"{seconds:g}s"


def parse_size(value: object) -> int:
    """Parse a size such as ``"400MB"`` or ``"1.5GB"`` into bytes (powers of 1000).

    Args:
        value: the value from the scenario file; must be a string.

    Returns:
        The size in bytes.

    Raises:
        ValueError: the value is not a size string, or is not a whole number of bytes.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected {_SIZE_EXPECTED}, received {describe(value)}")
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected {_SIZE_EXPECTED}, received {_short(value)}")
    number = float(match["number"]) * SIZE_UNITS[match["unit"]]
    check_range("size", number, value)
    if not number.is_integer():
        raise ValueError(f"expected a whole number of bytes, received {_short(value)}")
    return int(number)


def parse_rate(value: object) -> float:
    """Parse a rate such as ``"200MB/s"`` into bytes per second.

    Args:
        value: the value from the scenario file; must be a string.

    Returns:
        The rate in bytes per second.

    Raises:
        ValueError: the value is not a rate string.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected {_RATE_EXPECTED}, received {describe(value)}")
    match = _RATE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected {_RATE_EXPECTED}, received {_short(value)}")
    rate = float(match["number"]) * SIZE_UNITS[match["unit"]]
    check_range("rate", rate, value)
    return rate


def parse_epoch(value: object) -> float:
    """Parse an RFC 3339 date-time with a time zone into Unix seconds.

    A TOML offset date-time (written without quotes) is accepted as well as a string; a
    local date-time (no ``Z`` or offset) is refused, because its meaning depends on the
    machine's time zone.

    Args:
        value: ``"2026-01-01T00:00:00Z"``, ``"2026-01-01T01:00:00+01:00"`` or a
            time-zone-aware :class:`datetime.datetime`.

    Returns:
        Seconds since 1970-01-01T00:00:00Z.

    Raises:
        ValueError: the value is not an RFC 3339 date-time with a time zone.
    """
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"expected {_EPOCH_EXPECTED}, received {value.isoformat()!r} (no time zone)"
            )
        return value.timestamp()
    if not isinstance(value, str):
        raise ValueError(f"expected {_EPOCH_EXPECTED}, received {describe(value)}")
    if _EPOCH_RE.fullmatch(value) is None:
        raise ValueError(f"expected {_EPOCH_EXPECTED}, received {_short(value)}")
    try:
        parsed = _dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # e.g. month 13: the shape is right but the date is not
        raise ValueError(f"expected {_EPOCH_EXPECTED}, received {_short(value)}") from None
    return parsed.timestamp()
