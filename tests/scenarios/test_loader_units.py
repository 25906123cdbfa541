"""Units in scenario files: durations, sizes, rates and the RFC 3339 epoch."""

from __future__ import annotations

import datetime as dt

import pytest

from scitokens_batch.scenario import (
    format_duration,
    parse_duration,
    parse_epoch,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("40ms", 0.04),
        ("90m", 5400.0),
        ("1.5h", 5400.0),
        ("30d", 2592000.0),
        (".5s", 0.5),
        ("-0s", 0.0),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    """Durations with a unit become float seconds."""
    assert parse_duration(text) == seconds


def test_negative_duration_only_when_allowed() -> None:
    """A negative duration is refused unless the field allows it."""
    assert parse_duration("-2s", allow_negative=True) == -2.0
    with pytest.raises(ValueError, match=r"expected a duration >= 0s, received '-2s'"):
        parse_duration("-2s")


@pytest.mark.parametrize(
    ("value", "received"),
    [
        (90, "received 90 (an integer)"),
        ("90", "received '90'"),
        ("1y", "received '1y'"),
        ("1 h", "received '1 h'"),
        ("1h30m", "received '1h30m'"),
        (True, "received true (a boolean)"),
    ],
)
def test_bad_duration(value: object, received: str) -> None:
    """A duration without a known unit is refused with an example and the received value."""
    with pytest.raises(
        ValueError, match=r'expected a duration string with a unit, such as "90m"'
    ) as info:
        parse_duration(value)
    assert received in str(info.value)


@pytest.mark.parametrize("seconds", [0.0, 0.04, 1.0, 59.0, 60.0, 5400.0, 86400.0, -2.0])
def test_format_duration_round_trips(seconds: float) -> None:
    """format_duration writes a string that parses back to the same seconds."""
    assert parse_duration(format_duration(seconds), allow_negative=True) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("0B", 0), ("1B", 1), ("1kB", 1000), ("400MB", 400_000_000), ("1.5GB", 1_500_000_000)],
)
def test_size(text: str, size: int) -> None:
    """Sizes use powers of 1000 and give int bytes."""
    assert parse_size(text) == size
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize("value", ["1MiB", "400", "1.5B", "-1MB", 400, "1 MB", "1mb"])
def test_bad_size(value: object) -> None:
    """A size without a known unit, or not a whole number of bytes, is refused."""
    with pytest.raises(ValueError, match=r"expected a (size string|whole number of bytes)"):
        parse_size(value)


def test_rate() -> None:
    """Rates are a size per second, as float bytes per second."""
    assert parse_rate("200MB/s") == 200e6
    assert parse_rate("1.5kB/s") == 1500.0
    for bad in ("200MB", "200MB/h", 200, "200 MB/s"):
        with pytest.raises(ValueError, match=r'expected a rate string, such as "200MB/s"'):
            parse_rate(bad)


def test_epoch() -> None:
    """RFC 3339 date-times with a time zone become unix seconds; local ones are refused."""
    assert parse_epoch("2026-01-01T00:00:00Z") == 1767225600.0
    assert parse_epoch("2026-01-01T01:00:00+01:00") == 1767225600.0
    assert parse_epoch("2026-01-01t00:00:00.5z") == 1767225600.5
    assert parse_epoch(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == 1767225600.0
    for bad in ("2026-01-01T00:00:00", "2026-01-01", "2026-13-01T00:00:00Z", "tomorrow", 0):
        with pytest.raises(ValueError, match=r"expected an RFC 3339 date-time with a time zone"):
            parse_epoch(bad)
    with pytest.raises(ValueError, match=r"\(no time zone\)"):
        parse_epoch(dt.datetime(2026, 1, 1))  # a local time: the point of the test
