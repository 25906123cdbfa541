"""Expectations: ``[expect] checks`` lines, parsed at load time and judged against summary.json.

A check line is ``<summary.json path> <op> <number>``, for example ``"jobs.failed >= 5"`` or
``"data.denied.insufficient_scope == 5"``; ``op`` is one of ``== != >= <= > <``. The path is
looked up in the nested summary mapping one dotted component at a time
(``jobs.holds_by_code.4`` is ``summary["jobs"]["holds_by_code"]["4"]``).

Missing figures: the counters under ``data.denied.<reason>`` and ``jobs.holds_by_code.<code>``
are only written when they are non-zero, so a missing one counts as ``0``. To keep a typo from
silently reading as zero, the reason must be one of :class:`~scitokens_batch.tokens._reasons.Reason`
and the code an integer, which is checked when the line is parsed. Any other missing path fails
the check with ``"<path> is no figure of summary.json"``, or with
``"<path> has no value in this run (null)"`` when the figure exists but is null.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal

import attrs

from scitokens_batch.tokens._reasons import Reason

__all__ = [
    "ZERO_WHEN_MISSING",
    "Check",
    "CheckResult",
    "evaluate",
    "lookup_figure",
    "parse_check",
]

Operator = Literal["==", "!=", ">=", "<=", ">", "<"]

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}

#: Path prefixes whose missing figures count as 0: a denial reason or hold code that a release
#: adds later, or one a summary from another tool leaves out, reads as "none happened".
ZERO_WHEN_MISSING: Final[tuple[str, ...]] = ("data.denied.", "jobs.holds_by_code.")

_CHECK_RE: Final = re.compile(
    r"\s*(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)"
    r"\s*(?P<op>==|!=|>=|<=|>|<)"
    r"\s*(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)
_EXPECTED: Final = (
    'a check "<summary.json path> <op> <number>" with op one of == != >= <= > <, '
    'such as "jobs.failed >= 5"'
)
_REASONS: Final = tuple(reason.value for reason in Reason)


@attrs.frozen(kw_only=True)
class Check:
    """One expectation line, parsed.

    Attributes:
        line: the line as written in the scenario file.
        path: the dotted summary.json path on the left, e.g. ``"jobs.failed"``.
        op: the comparison operator.
        value: the number on the right.
    """

    line: str
    path: str
    op: Operator
    value: float

    def holds(self, actual: float) -> bool:
        """Whether ``actual <op> value`` is true.

        Args:
            actual: the figure read from summary.json.

        Returns:
            True when the expectation holds.
        """
        return _OPERATORS[self.op](actual, self.value)


@attrs.frozen(kw_only=True)
class CheckResult:
    """The outcome of one check against one summary.

    Attributes:
        line: the check line as written in the scenario file.
        passed: whether it held.
        actual: the figure found in the summary (``0`` for a missing counter that counts as
            zero), or None when there was no usable figure.
        error: why the check could not be judged (e.g. ``"jobs.faild is no figure of
            summary.json"``), or None.
    """

    line: str
    passed: bool
    actual: float | None
    error: str | None = None


def parse_check(line: str) -> Check:
    """Parse one ``[expect] checks`` line.

    Args:
        line: e.g. ``"jobs.failed >= 5"``.

    Returns:
        The parsed check.

    Raises:
        ValueError: the line does not follow the grammar, names an unknown denial reason, or
            a hold code that is not an integer. The message shows what was expected.
    """
    match = _CHECK_RE.fullmatch(line)
    if match is None:
        raise ValueError(f"expected {_EXPECTED}, received {line!r}")
    path = match["path"]
    parts = path.split(".")
    if path.startswith(ZERO_WHEN_MISSING[0]):
        if len(parts) != 3 or parts[2] not in _REASONS:
            raise ValueError(
                f"expected data.denied.<reason> with reason one of {', '.join(_REASONS)}, "
                f"received {path!r}"
            )
    elif path.startswith(ZERO_WHEN_MISSING[1]) and (len(parts) != 3 or not parts[2].isdigit()):
        raise ValueError(
            f"expected jobs.holds_by_code.<code> with an integer hold code, received {path!r}"
        )
    text = match["value"]
    value = float(text)
    op: Operator = match["op"]  # type: ignore[assignment]  # the regex allows only these
    return Check(line=line, path=path, op=op, value=int(value) if value.is_integer() else value)


def lookup_figure(summary: Mapping[str, object], path: str) -> object:
    """Find a dotted path in a nested summary mapping.

    Args:
        summary: the summary.json content (nested mappings).
        path: e.g. ``"jobs.holds_by_code.4"``.

    Returns:
        The value found, or None when some component is missing.
    """
    node: object = summary
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def evaluate(checks: Iterable[Check], summary: Mapping[str, object]) -> list[CheckResult]:
    """Judge each check against a run's summary.

    A missing figure under ``data.denied.`` or ``jobs.holds_by_code.`` counts as 0; any other
    missing figure, or one that is not a number, fails the check with an ``error``.

    Args:
        checks: the parsed checks, usually ``scenario.expect.checks``.
        summary: the summary.json content.

    Returns:
        One result per check, in order.
    """
    results: list[CheckResult] = []
    for check in checks:
        figure = lookup_figure(summary, check.path)
        if figure is None and check.path.startswith(ZERO_WHEN_MISSING):
            figure = 0
        if figure is None:
            # A present key with a null value (headroom of a run that granted nothing) is not
            # the same as a typo in the path; say which.
            parent, _, leaf = check.path.rpartition(".")
            holder = lookup_figure(summary, parent) if parent else summary
            exists = isinstance(holder, Mapping) and leaf in holder
            why = "has no value in this run (null)" if exists else "is no figure of summary.json"
            results.append(
                CheckResult(line=check.line, passed=False, actual=None, error=f"{check.path} {why}")
            )
        elif isinstance(figure, bool) or not isinstance(figure, int | float):
            results.append(
                CheckResult(
                    line=check.line,
                    passed=False,
                    actual=None,
                    error=(
                        f"expected a number at {check.path} in summary.json, received {figure!r}"
                    ),
                )
            )
        elif isinstance(figure, float) and math.isnan(figure):
            # NaN (e.g. a percentile of no samples) is not a figure any check can hold for.
            results.append(
                CheckResult(
                    line=check.line,
                    passed=False,
                    actual=figure,
                    error=f"{check.path} in summary.json is NaN (no samples)",
                )
            )
        else:
            results.append(CheckResult(line=check.line, passed=check.holds(figure), actual=figure))
    return results
