"""Hostile scenario input: deep nesting and values out of their finite range are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from scitokens_batch.errors import ScenarioError
from scitokens_batch.scenario import load_scenario, parse_scenario
from scitokens_batch.scenario._units import LIMITS, MAX_DEPTH

REFERENCE = Path(__file__).resolve().parents[2] / "scenarios" / "reference.toml"
DIGITS_400 = "9" * 400


def _refused(*overrides: str, text: str | None = None) -> ScenarioError:
    if text is None:
        with pytest.raises(ScenarioError) as info:
            load_scenario(REFERENCE, overrides=overrides)
    else:
        with pytest.raises(ScenarioError) as info:
            parse_scenario(text, file="deep.toml", overrides=overrides)
    return info.value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 400, 1500])
def test_deep_arrays_in_the_file_are_refused(depth: int) -> None:
    """A document nesting arrays deeper than MAX_DEPTH gets one ScenarioError, no RecursionError."""
    text = REFERENCE.read_text() + f"\nextra = {'[' * depth}{']' * depth}\n"
    error = _refused(text=text)
    assert f"nested at most {MAX_DEPTH} deep" in error.message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 1500])
def test_deep_inline_tables_in_the_file_are_refused(depth: int) -> None:
    """Deeply nested inline tables are refused the same way."""
    text = f"a = {'{b=' * depth}1{'}' * depth}\n"
    error = _refused(text=text)
    assert f"nested at most {MAX_DEPTH} deep" in error.message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 1500])
def test_deep_override_value_is_refused(depth: int) -> None:
    """A --set value nesting 1,500 arrays deep is refused naming --set and its key path."""
    error = _refused(f"scenario.seed={'[' * depth}{']' * depth}")
    assert (error.file, error.key_path) == ("--set", "scenario.seed")
    assert "nested at most" in error.message


@pytest.mark.parametrize(
    ("override", "key_path", "fragment"),
    [
        (f'scenario.duration="{DIGITS_400}s"', "scenario.duration", "duration from -3650d"),
        ('scenario.duration="3651d"', "scenario.duration", "duration from -3650d"),
        (
            f'token_manager.retry_backoff_max="{DIGITS_400}h"',
            "token_manager.retry_backoff_max",
            "duration from",
        ),
        (
            f'issuers[0].access_token_lifetime="{DIGITS_400}m"',
            "issuers[0].access_token_lifetime",
            "duration from",
        ),
        ('issuers[0].access_token_lifetime="500ms"', "issuers[0].access_token_lifetime", ">= 1s"),
        (
            f'workloads[0].steps[0].size="{DIGITS_400}GB"',
            "workloads[0].steps[0].size",
            "size from 0B",
        ),
        (f'data_servers[0].bandwidth="{DIGITS_400}GB/s"', "data_servers[0].bandwidth", "rate"),
        ("workloads[0].jobs=100000000", "workloads[0].jobs", "count from 0 to 10000000"),
        ("execute_hosts[0].count=1000000000", "execute_hosts[0].count", "count from 0"),
        ("execute_hosts[0].slots=1000000000", "execute_hosts[0].slots", "count from 0"),
        (f"scenario.seed={DIGITS_400}", "scenario.seed", "integer from -2**63"),
        (f"token_manager.renew_fraction={DIGITS_400}", "token_manager.renew_fraction", "finite"),
        ("token_manager.renew_fraction=nan", "token_manager.renew_fraction", "finite"),
        ("token_manager.renew_fraction=inf", "token_manager.renew_fraction", "finite"),
    ],
)
def test_values_outside_their_range_are_refused(
    override: str, key_path: str, fragment: str
) -> None:
    """Each kind of value has a finite range checked at load; the error names key and range."""
    error = _refused(override)
    assert error.key_path == key_path
    assert fragment in error.message
    assert len(str(error)) < 400  # a 400-digit value is shortened, not echoed whole


def test_limits_are_finite() -> None:
    """Every documented range is finite (the point of the table)."""
    for limit in LIMITS.values():
        assert float("-inf") < limit.low <= limit.high < float("inf")


def test_integer_beyond_python_digit_limit_is_refused() -> None:
    """A 5,000-digit integer (beyond int()'s 4,300-digit limit) is a ScenarioError, in a file
    and in a --set value."""
    error = _refused(text=f"b = {'9' * 5000}\n")
    assert "sensible size" in error.message
    error = _refused(f"scenario.seed={'9' * 5000}")
    assert (error.file, error.key_path) == ("--set", "scenario.seed")


def test_deep_dotted_keys_are_refused() -> None:
    """1,500 dotted key parts (tomllib builds them without recursing) are refused by depth."""
    error = _refused(text="x." + ".".join(["a"] * 1500) + " = 1\n")
    assert "nested at most" in error.message
