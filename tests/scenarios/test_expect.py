"""Expectation checks: parsing "<path> <op> <number>" lines and judging them against a summary."""

from __future__ import annotations

import math

import pytest

from scitokens_batch.scenario import Check, CheckResult, evaluate, lookup_figure, parse_check

SUMMARY: dict[str, object] = {
    "jobs": {"submitted": 305, "failed": 5, "holds_by_code": {"4": 2}},
    "data": {"denied": {"insufficient_scope": 5}, "accepted_after_exp": 0},
    "headroom": {"min_s": 123.5, "p01_s": math.nan},
    "scenario": "reference",
}


class TestParse:
    """parse_check turns a line into path, operator and number, or refuses it."""

    @pytest.mark.parametrize(
        ("line", "path", "op", "value"),
        [
            ("jobs.failed >= 5", "jobs.failed", ">=", 5),
            ("jobs.submitted==305", "jobs.submitted", "==", 305),
            ("  headroom.min_s > 60.5 ", "headroom.min_s", ">", 60.5),
            ("issuer.peak_rps <= 5e1", "issuer.peak_rps", "<=", 50),
            ("headroom.p01_s != -1", "headroom.p01_s", "!=", -1),
            ("jobs.holds_by_code.4 < 1", "jobs.holds_by_code.4", "<", 1),
            ("data.denied.expired == 0", "data.denied.expired", "==", 0),
        ],
    )
    def test_parses(self, line: str, path: str, op: str, value: float) -> None:
        """Valid lines keep the original text and split into their three parts."""
        check = parse_check(line)
        assert check == Check(line=line, path=path, op=op, value=value)  # type: ignore[arg-type]

    def test_whole_numbers_are_ints(self) -> None:
        """A whole number on the right is an int, so results read "5", not "5.0"."""
        assert isinstance(parse_check("jobs.failed >= 5.0").value, int)
        assert isinstance(parse_check("headroom.min_s >= 0.5").value, float)

    @pytest.mark.parametrize(
        "line",
        [
            "jobs.failed = 5",
            "jobs.failed => 5",
            "jobs.failed >= five",
            "5 <= jobs.failed",
            "jobs.failed >= 5 # comment",
            "jobs..failed >= 5",
            "jobs.failed >= 5 and jobs.completed > 1",
            "",
        ],
    )
    def test_bad_syntax(self, line: str) -> None:
        """Lines outside the grammar are refused, showing the grammar and the line."""
        with pytest.raises(ValueError, match=r'expected a check "<summary.json path> <op>') as info:
            parse_check(line)
        assert f"received {line!r}" in str(info.value)

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("data.denied.insufficent_scope == 0", "expected data.denied.<reason>"),
            ("data.denied.expired.x == 0", "expected data.denied.<reason>"),
            ("jobs.holds_by_code.four == 0", "expected jobs.holds_by_code.<code>"),
        ],
    )
    def test_zero_default_paths_are_checked(self, line: str, message: str) -> None:
        """A typo under a path that defaults to 0 is refused at parse time, not read as 0."""
        with pytest.raises(ValueError, match=message):
            parse_check(line)


class TestEvaluate:
    """evaluate judges each check against a nested summary mapping."""

    @pytest.mark.parametrize(
        ("line", "passed", "actual"),
        [
            ("jobs.submitted == 305", True, 305),
            ("jobs.submitted != 305", False, 305),
            ("jobs.failed >= 5", True, 5),
            ("jobs.failed > 5", False, 5),
            ("jobs.failed <= 4", False, 5),
            ("jobs.failed < 6", True, 5),
            ("headroom.min_s > 60", True, 123.5),
            ("jobs.holds_by_code.4 == 2", True, 2),
            ("data.denied.insufficient_scope == 5", True, 5),
        ],
    )
    def test_operators(self, line: str, passed: bool, actual: float) -> None:
        """Each operator compares the figure found at the dotted path with the number."""
        assert evaluate([parse_check(line)], SUMMARY) == [
            CheckResult(line=line, passed=passed, actual=actual)
        ]

    def test_missing_counters_are_zero(self) -> None:
        """A missing data.denied.<reason> or jobs.holds_by_code.<code> counts as 0."""
        lines = [
            "data.denied.expired == 0",
            "jobs.holds_by_code.12 == 0",
            "data.denied.malformed > 0",
        ]
        results = evaluate([parse_check(line) for line in lines], SUMMARY)
        assert [(r.passed, r.actual, r.error) for r in results] == [
            (True, 0, None),
            (True, 0, None),
            (False, 0, None),
        ]

    def test_missing_counters_are_zero_without_parent(self) -> None:
        """The zero default holds even when the summary has no data or jobs table at all."""
        (result,) = evaluate([parse_check("data.denied.expired == 0")], {})
        assert result.passed

    def test_missing_figure_fails(self) -> None:
        """Any other missing path fails the check and says which figure is missing."""
        (result,) = evaluate([parse_check("jobs.faild == 0")], SUMMARY)
        assert result == CheckResult(
            line="jobs.faild == 0",
            passed=False,
            actual=None,
            error="jobs.faild is no figure of summary.json",
        )

    def test_null_figure_is_told_apart_from_a_typo(self) -> None:
        """A figure that exists but is null (no data in this run) says so, not 'no such figure'."""
        summary = {"headroom": {"min_s": None}}
        (result,) = evaluate([parse_check("headroom.min_s > 0")], summary)
        assert (result.passed, result.error) == (
            False,
            "headroom.min_s has no value in this run (null)",
        )

    def test_not_a_number_fails(self) -> None:
        """A path that leads to a table, a string or NaN fails instead of comparing."""
        lines = ["jobs.holds_by_code == 0", "scenario == 0", "headroom.p01_s != 0"]
        results = evaluate([parse_check(line) for line in lines], SUMMARY)
        assert [r.passed for r in results] == [False, False, False]
        assert results[0].error == (
            "expected a number at jobs.holds_by_code in summary.json, received {'4': 2}"
        )
        assert results[1].error is not None
        assert "received 'reference'" in results[1].error
        assert results[2].error == "headroom.p01_s in summary.json is NaN (no samples)"

    def test_booleans_are_not_numbers(self) -> None:
        """A boolean figure is not compared as 0 or 1."""
        (result,) = evaluate([parse_check("flag == 1")], {"flag": True})
        assert not result.passed
        assert result.error is not None

    def test_order_kept(self) -> None:
        """Results come one per check, in the checks' order."""
        lines = ["jobs.failed >= 5", "jobs.faild >= 5", "jobs.submitted == 1"]
        results = evaluate([parse_check(line) for line in lines], SUMMARY)
        assert [r.line for r in results] == lines
        assert [r.passed for r in results] == [True, False, False]

    def test_lookup_figure(self) -> None:
        """lookup_figure walks nested mappings and gives None for a missing component."""
        assert lookup_figure(SUMMARY, "jobs.holds_by_code.4") == 2
        assert lookup_figure(SUMMARY, "jobs.failed.x") is None
        assert lookup_figure(SUMMARY, "nothing") is None
