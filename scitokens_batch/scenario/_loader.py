"""Read a scenario file into a :class:`~scitokens_batch.scenario._spec.Scenario`.

Theory of operation:

1. The TOML text is decoded with :mod:`tomllib` (syntax errors give line and column).
2. ``--set key.path=value`` overrides are applied to the raw dict. Each path is checked
   against the spec classes (not against the file), so a key the file leaves out can be set,
   and a key no spec class has is refused.
3. A :class:`cattrs.Converter` structures the raw dict into the frozen spec classes. Its hooks
   are ours and strict: no silent ``int("3")``; units are parsed from strings; unknown keys,
   wrong types and failed field checks raise :class:`_Problem` carrying the path relative to
   the value being structured. Each enclosing hook prepends its own key or index, so the error
   names the exact key path (``issuers[0].users[1].grups``), in file order.
4. Cross-references are checked on the structured spec (dangling and duplicate names, scopes).

Every failure is a :class:`~scitokens_batch.errors.ScenarioError`; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs
import cattrs

from scitokens_batch.errors import ScenarioError, ScopeError
from scitokens_batch.scenario import _spec
from scitokens_batch.scenario._expect import Check, parse_check
from scitokens_batch.scenario._spec import (
    CHECK,
    ITEM_CHECK,
    NEGATIVE,
    PARTITION_SERVICES,
    TOML_KEY,
    UNIT,
    ClockStep,
    DataServerRestart,
    ExecuteHostCrash,
    IssuerOutage,
    KeyRotation,
    Partition,
    RefreshTokenRevoked,
    Scenario,
    StepTarget,
    TransferServiceStateLoss,
    UniformCompute,
)
from scitokens_batch.scenario._submit import apply_submit_files, check_credentials
from scitokens_batch.scenario._units import (
    LIMITS,
    MAX_DEPTH,
    check_range,
    describe,
    format_duration,
    parse_duration,
    parse_epoch,
    parse_rate,
    parse_size,
)
from scitokens_batch.tokens._profiles import Profile
from scitokens_batch.tokens._scopes import parse_scope

__all__ = ["OVERRIDE_FILE", "load_scenario", "parse_scenario"]

#: The ``file`` of a ScenarioError caused by a command-line override.
OVERRIDE_FILE: Final = "--set"

PathPart = str | int

_TAG: Final = "kind"
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION_RE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_EOF_RE: Final = re.compile(r"\s*\(at end of document\)$")
_PLACEHOLDER_RE: Final = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS: Final = ("job", "random_file")


class _Problem(Exception):
    """A problem at ``path`` (relative to the value being structured)."""

    def __init__(self, message: str, path: Sequence[PathPart] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[PathPart] = list(path)


def format_key_path(path: Sequence[PathPart]) -> str:
    """Write a key path the way errors show it: ``issuers[0].users[1].grups``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part)
            out += f".{key}" if out else key
    return out


# --------------------------------------------------------------------------------------------
# Public entry points


def load_scenario(path: str | os.PathLike[str], *, overrides: Sequence[str] = ()) -> Scenario:
    """Load and validate a scenario file.

    Args:
        path: the TOML file.
        overrides: ``key.path=value`` strings (``--set``), applied in order before
            validation: ``scenario.seed=3``, ``issuers[0].access_token_lifetime=10m``,
            ``issuers.ligo.access_token_lifetime=10m`` (list items by name). The value is read
            as a TOML value when it parses as one, else as a bare string.

    Returns:
        The validated scenario.

    Raises:
        ScenarioError: the file cannot be read, is not TOML, or breaks the spec; or an
            override is malformed (``file`` is ``"--set"``). The error names the key path.
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise ScenarioError(
            file, "", f"expected a readable scenario file, received an error: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            file,
            "",
            f"expected UTF-8 text, received byte {data[exc.start]:#04x} at offset {exc.start}",
        ) from None
    return parse_scenario(text, file=file, overrides=overrides)


def parse_scenario(text: str, *, file: str, overrides: Sequence[str] = ()) -> Scenario:
    """Validate a scenario given as TOML text.

    Args:
        text: the TOML document.
        file: the name errors show for it.
        overrides: ``key.path=value`` strings, as for :func:`load_scenario`.

    Returns:
        The validated scenario.

    Raises:
        ScenarioError: as for :func:`load_scenario`.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(file, "", _toml_error_message(exc)) from None
    except RecursionError:  # tomllib recurses once per nesting level, a few hundred deep
        raise ScenarioError(file, "", _too_deep()) from None
    except ValueError as exc:  # int() refuses integers of more than 4300 digits
        raise ScenarioError(file, "", f"expected a TOML number of sensible size ({exc})") from None
    deep = _too_deep_at(raw)
    if deep is not None:
        raise ScenarioError(file, format_key_path(deep), _too_deep()) from None
    # A scenario may carry its own [study] table (scitokens_batch.study reads it): not ours.
    raw.pop("study", None)
    overridden = [_apply_override(raw, item) for item in overrides]

    def error(problem: _Problem) -> ScenarioError:
        key_path = format_key_path(problem.path)
        from_override = any(
            key_path == done or key_path.startswith((done + ".", done + "[")) for done in overridden
        )
        return ScenarioError(OVERRIDE_FILE if from_override else file, key_path, problem.message)

    # HTCondor submit descriptions fill their workloads' jobs and token (issue 13).
    descriptions = apply_submit_files(raw, scenario_file=file)
    try:
        scenario = _make_converter().structure(raw, Scenario)
        if descriptions:
            workloads = list(scenario.workloads)
            for i, desc in descriptions.items():
                workloads[i] = attrs.evolve(workloads[i], submitted=desc.jobs)
            scenario = attrs.evolve(scenario, workloads=tuple(workloads))
            check_credentials(scenario, scenario_file=file)
        _check_references(scenario)
    except _Problem as problem:
        raise error(problem) from None
    return scenario


def _too_deep() -> str:
    return f"expected arrays and tables nested at most {MAX_DEPTH} deep, received deeper nesting"


def _too_deep_at(value: object) -> list[PathPart] | None:
    """The path of the first value nested deeper than MAX_DEPTH, or None.

    Iterative (an explicit stack), so that the check itself cannot overflow: every later step
    (overrides, structuring, error messages) recurses over the document and relies on this.
    """
    stack: list[tuple[object, list[PathPart]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return path
        if isinstance(node, dict):
            stack.extend((item, [*path, key]) for key, item in node.items())
        elif isinstance(node, list):
            stack.extend((item, [*path, index]) for index, item in enumerate(node))
    return None


def _toml_error_message(exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    where = _TOML_POSITION_RE.search(message)
    if where is not None:
        message = message[: where.start()]
        return f"TOML syntax error at line {where[1]}, column {where[2]}: {message}"
    if _TOML_EOF_RE.search(message):
        message = _TOML_EOF_RE.sub("", message)
        return f"TOML syntax error at the end of the file: {message}"
    return f"TOML syntax error: {message}"


# --------------------------------------------------------------------------------------------
# Type introspection shared by the structuring hooks and the override walker


def _union_members(tp: object) -> tuple[object, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _optional_inner(tp: object) -> object | None:
    """``X`` for ``X | None``, else None."""
    members = _union_members(tp)
    if members is not None and type(None) in members:
        rest = [member for member in members if member is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return None


def _tagged_members(tp: object) -> dict[str, type[Any]] | None:
    """``{kind: class}`` when ``tp`` is a union of attrs classes tagged by ``kind``."""
    members = _union_members(tp)
    if not members or not all(isinstance(m, type) and attrs.has(m) for m in members):
        return None
    tags = {getattr(m, _TAG, None): m for m in members if isinstance(m, type)}
    return tags if all(isinstance(tag, str) for tag in tags) else None  # type: ignore[return-value]


def _keyed_members(tp: object) -> dict[str, type[Any]] | None:
    """``{step key: class}`` when ``tp`` is a union told apart by which key is present."""
    members = _union_members(tp)
    if not members or not all(isinstance(m, type) and attrs.has(m) for m in members):
        return None
    keys = {getattr(m, "key", None): m for m in members if isinstance(m, type)}
    return keys if all(isinstance(key, str) for key in keys) else None  # type: ignore[return-value]


def _homogeneous_tuple_item(tp: object) -> object | None:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        item: object = args[0]
        return item
    return None


def _fixed_tuple_items(tp: object) -> tuple[object, ...] | None:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args and Ellipsis not in args:
        return args
    return None


def _is_mapping(tp: object) -> bool:
    return typing.get_origin(tp) in (Mapping, dict, typing.Mapping)


def _fields_by_key(cls: type[Any]) -> dict[str, attrs.Attribute[Any]]:
    """The TOML key of each field of a spec class."""
    attrs.resolve_types(cls, globalns=vars(_spec))
    return {
        field.metadata.get(TOML_KEY, field.name): field
        for field in attrs.fields(cls)
        if not field.metadata.get(_spec.INTERNAL)
    }


def _allowed_keys(cls: type[Any]) -> list[str]:
    keys = list(_fields_by_key(cls))
    return [_TAG, *keys] if isinstance(getattr(cls, _TAG, None), str) else keys


def _describe_expected(field: attrs.Attribute[Any]) -> str:
    unit = field.metadata.get(UNIT)
    if unit is not None:
        return {
            "duration": 'a duration such as "90m"',
            "duration_or_never": 'a duration such as "1m", or "never"',
            "size": 'a size such as "400MB"',
            "rate": 'a rate such as "200MB/s"',
            "epoch": 'an RFC 3339 date-time such as "2026-01-01T00:00:00Z"',
            "target": 'a step target such as "frames:/frames/{random_file}"',
        }[unit]
    return _describe_type(field.type)


def _describe_type(tp: object) -> str:
    inner = _optional_inner(tp)
    if inner is not None:
        return _describe_type(inner)
    simple = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    if isinstance(tp, type) and tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in tp)
    if tp is Check:
        return 'a check such as "jobs.failed >= 5"'
    item = _homogeneous_tuple_item(tp)
    if item is not None:
        if _is_table_type(item):
            return "an array of tables"
        if item is Check:
            return 'an array of checks such as "jobs.failed >= 5"'
        return f"an array of {_plural(_describe_type(item))}"
    fixed = _fixed_tuple_items(tp)
    if fixed is not None:
        return f"an array of {len(fixed)} {_plural(_describe_type(fixed[0]))}"
    if _tagged_members(tp) is not None:
        kinds = ", ".join(repr(kind) for kind in _tagged_members(tp) or {})
        return f"a table with kind one of {kinds}"
    if _keyed_members(tp) is not None:
        return "a table with one of the keys " + ", ".join(_keyed_members(tp) or {})
    return "a table"


def _plural(description: str) -> str:
    for article in ("an ", "a "):
        if description.startswith(article):
            return description[len(article) :] + "s"
    return description


def _is_table_type(tp: object) -> bool:
    inner = _optional_inner(tp)
    if inner is not None:
        return _is_table_type(inner)
    return (
        (isinstance(tp, type) and attrs.has(tp) and tp is not Check)  # a check is a string
        or _tagged_members(tp) is not None
        or _keyed_members(tp) is not None
        or _is_mapping(tp)
    )


# --------------------------------------------------------------------------------------------
# Structuring: a cattrs Converter whose hooks are strict and track key paths


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()

    def structure(value: object, tp: object) -> Any:
        return typing.cast("Any", converter).structure(value, tp)

    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Check, _structure_check)
    converter.register_structure_hook_func(
        lambda tp: isinstance(tp, type) and issubclass(tp, enum.Enum), _structure_enum
    )
    converter.register_structure_hook_func(
        lambda tp: _optional_inner(tp) is not None,
        lambda value, tp: structure(value, _optional_inner(tp)),
    )
    converter.register_structure_hook_func(
        lambda tp: _homogeneous_tuple_item(tp) is not None,
        lambda value, tp: _structure_array(value, tp, structure),
    )
    converter.register_structure_hook_func(
        lambda tp: _fixed_tuple_items(tp) is not None,
        lambda value, tp: _structure_fixed_array(value, tp, structure),
    )
    converter.register_structure_hook_func(
        _is_mapping, lambda value, tp: _structure_mapping(value, tp, structure)
    )
    converter.register_structure_hook_func(
        lambda tp: _tagged_members(tp) is not None,
        lambda value, tp: _structure_tagged(value, tp, structure),
    )
    converter.register_structure_hook_func(
        lambda tp: _keyed_members(tp) is not None,
        lambda value, tp: _structure_keyed(value, tp, structure),
    )
    converter.register_structure_hook_func(
        lambda tp: isinstance(tp, type) and attrs.has(tp),
        lambda value, cls: _structure_class(value, cls, structure),
    )
    converter.register_structure_hook_func(
        lambda tp: tp == (str | int | float | bool), _structure_scalar
    )
    return converter


def _structure_scalar(value: object, _tp: object) -> object:
    """A ClassAd attribute value (``machine_ad``): any TOML string, number or boolean."""
    if isinstance(value, str | int | float | bool):
        return value
    raise _Problem(f"expected a string, number or boolean, received {describe(value)}")


Structure = Callable[[object, object], Any]


def _structure_str(value: object, _tp: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"expected a string, received {describe(value)}")
    return value


def _structure_int(value: object, _tp: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"expected an integer, received {describe(value)}")
    try:
        check_range("integer", value, value)
    except ValueError as exc:
        raise _Problem(str(exc)) from None
    return value


def _structure_float(value: object, _tp: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"expected a number, received {describe(value)}")
    try:
        result = float(value)  # an integer of 400 digits overflows
        check_range("number", result, value)
    except (OverflowError, ValueError):
        raise _Problem(
            f"expected a finite number {LIMITS['number'].shown}, received {describe(value)}"
        ) from None
    return result


def _structure_bool(value: object, _tp: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"expected a boolean (true or false), received {describe(value)}")
    return value


def _structure_check(value: object, _tp: object) -> Check:
    if not isinstance(value, str):
        raise _Problem(f'expected a check such as "jobs.failed >= 5", received {describe(value)}')
    try:
        return parse_check(value)
    except ValueError as exc:
        raise _Problem(str(exc)) from None


def _structure_enum(value: object, tp: type[enum.Enum]) -> enum.Enum:
    allowed = [member.value for member in tp]
    if isinstance(value, str) and value in allowed:
        return tp(value)
    raise _Problem(
        f"expected one of {', '.join(repr(a) for a in allowed)}, received {describe(value)}"
    )


def _table(value: object, what: str = "a table") -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Problem(f"expected {what}, received {describe(value)}")
    return value


def _array(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise _Problem(f"expected {what}, received {describe(value)}")
    return value


@contextlib.contextmanager
def _inside(part: PathPart) -> Iterator[None]:
    """Prefix the path of a problem raised in the block with ``part``."""
    try:
        yield
    except _Problem as problem:
        problem.path.insert(0, part)
        raise


def _run_check(check: object, value: object, raw: object) -> None:
    if check is None:
        return
    expected = typing.cast("Callable[[object], str | None]", check)(value)
    if expected is not None:
        raise _Problem(f"expected {expected}, received {describe(raw)}")


def _structure_array(value: object, tp: object, structure: Structure) -> tuple[Any, ...]:
    item_type = _homogeneous_tuple_item(tp)
    out: list[Any] = []
    for index, item in enumerate(_array(value, _describe_type(tp))):
        with _inside(index):
            out.append(structure(item, item_type))
    return tuple(out)


def _structure_fixed_array(value: object, tp: object, structure: Structure) -> tuple[Any, ...]:
    item_types = _fixed_tuple_items(tp) or ()
    items = _array(value, _describe_type(tp))
    if len(items) != len(item_types):
        raise _Problem(f"expected {_describe_type(tp)}, received {describe(value)}")
    out: list[Any] = []
    for index, (item, item_type) in enumerate(zip(items, item_types, strict=True)):
        with _inside(index):
            out.append(structure(item, item_type))
    return tuple(out)


def _structure_mapping(value: object, tp: object, structure: Structure) -> dict[str, Any]:
    _key_type, value_type = typing.get_args(tp)
    out: dict[str, Any] = {}
    for key, item in _table(value).items():
        with _inside(key):
            out[key] = structure(item, value_type)
    return out


def _unknown_key(key: str, allowed: Sequence[str]) -> _Problem:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return _Problem(
        f"unknown key{hint}: expected one of {', '.join(allowed)}, received {key!r}", [key]
    )


def _structure_tagged(value: object, tp: object, structure: Structure) -> Any:
    members = _tagged_members(tp) or {}
    if tp == _spec.Compute and isinstance(value, str):
        # `compute = "1h"`, the spelling a new user tries first: a fixed duration.
        value = {_TAG: _spec.FixedCompute.kind, "duration": value}
    table = _table(value, _describe_type(tp))
    if _TAG not in table:
        raise _Problem(
            f"required key is missing: expected {_TAG} = one of "
            f"{', '.join(repr(k) for k in members)}",
            [_TAG],
        )
    kind = table[_TAG]
    if not isinstance(kind, str) or kind not in members:
        raise _Problem(
            f"expected one of {', '.join(repr(k) for k in members)}, received {describe(kind)}",
            [_TAG],
        )
    return structure(table, members[kind])


def _structure_keyed(value: object, tp: object, structure: Structure) -> Any:
    members = _keyed_members(tp) or {}
    table = _table(value, _describe_type(tp))
    present = [key for key in table if key in members]
    if len(present) != 1:
        received = f"keys {', '.join(table)}" if table else "an empty table"
        if present:
            received = f"keys {', '.join(present)} together"
        raise _Problem(
            f"expected a table with exactly one of the keys {', '.join(members)}, "
            f"received {received}"
        )
    return structure(table, members[present[0]])


def _structure_class(value: object, cls: type[Any], structure: Structure) -> Any:
    table = _table(value)
    fields = _fields_by_key(cls)
    allowed = _allowed_keys(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in table.items():
        if key == _TAG and key in allowed:
            continue  # checked by the union hook that chose this class
        field = fields.get(key)
        if field is None:
            raise _unknown_key(key, allowed)
        with _inside(key):
            kwargs[field.alias or field.name] = _field(field, raw, structure)
    for key, field in fields.items():
        if key not in table and field.default is attrs.NOTHING:
            raise _Problem(
                f"required key is missing: expected {_describe_expected(field)}, received nothing",
                [key],
            )
    return cls(**kwargs)


def _field(field: attrs.Attribute[Any], raw: object, structure: Structure) -> Any:
    unit = field.metadata.get(UNIT)
    try:
        if unit is None:
            value = structure(raw, field.type)
        elif unit == "duration":
            value = parse_duration(raw, allow_negative=bool(field.metadata.get(NEGATIVE)))
        elif unit == "duration_or_never":
            value = None if raw == "never" else parse_duration(raw)
        elif unit == "size":
            value = parse_size(raw)
        elif unit == "rate":
            value = parse_rate(raw)
        elif unit == "epoch":
            value = parse_epoch(raw)
        elif unit == "target":
            value = _parse_target(raw)
        else:  # pragma: no cover - a spec class names a unit this loader does not know
            raise AssertionError(f"unknown unit {unit!r} on {field.name}")
    except ValueError as exc:
        if unit == "duration_or_never":
            raise _Problem(
                f'expected a duration such as "1m", or "never", received {describe(raw)}'
            ) from None
        raise _Problem(str(exc)) from None
    _run_check(field.metadata.get(CHECK), value, raw)
    item_check = field.metadata.get(ITEM_CHECK)
    if item_check is not None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        raw_items: Any = raw
        for part, item in items:
            with _inside(part):
                _run_check(item_check, item, raw_items[part])
    return value


def _parse_target(raw: object) -> StepTarget:
    expected = 'a step target "<data server>:<absolute path>", such as "frames:/frames/{job}"'
    if not isinstance(raw, str):
        raise ValueError(f"expected {expected}, received {describe(raw)}")
    server, sep, path = raw.partition(":")
    if not sep or not server:
        raise ValueError(f"expected {expected}, received {raw!r}")
    if not path.startswith("/"):
        raise ValueError(f"expected an absolute path after {server + ':'!r}, received {raw!r}")
    for name in _PLACEHOLDER_RE.findall(path):
        if name not in _PLACEHOLDERS:
            raise ValueError(
                f"expected placeholders {{job}} or {{random_file}} only, received {{{name}}} "
                f"in {raw!r}"
            )
    return StepTarget(server=server, path=path)


# --------------------------------------------------------------------------------------------
# Cross-references, on the structured spec


def _check_references(scenario: Scenario) -> None:
    _check_names(scenario)
    issuers = {issuer.name: issuer for issuer in scenario.issuers}
    servers = {server.name for server in scenario.data_servers}
    groups = {group.name for group in scenario.execute_hosts}
    # Host names are never listed one by one: a group of a million hosts is one line of the
    # file, and checking it must cost as much as that line (issue 15).
    hosts = _HostNames(scenario.execute_hosts)

    tm = scenario.token_manager
    if tm.retry_backoff_max < tm.retry_backoff:
        raise _Problem(
            f"expected a duration >= retry_backoff ({format_duration(tm.retry_backoff)}), "
            f"received {format_duration(tm.retry_backoff_max)!r}",
            ["token_manager", "retry_backoff_max"],
        )

    for i, issuer in enumerate(scenario.issuers):
        for j, user in enumerate(issuer.users):
            for k, scope in enumerate(user.scopes):
                _check_scope(scope, ["issuers", i, "users", j, "scopes", k])
        for j, client in enumerate(issuer.clients):
            for k, scope in enumerate(client.scopes):
                _check_scope(scope, ["issuers", i, "clients", j, "scopes", k])

    for i, server in enumerate(scenario.data_servers):
        for name in server.issuers:
            _check_name_in(name, issuers, "an issuer", ["data_servers", i, "issuers", name])

    _check_transfers(scenario)

    for i, workload in enumerate(scenario.workloads):
        here: list[PathPart] = ["workloads", i]
        _check_name_in(workload.issuer, issuers, "an issuer", [*here, "issuer"])
        issuer = issuers[workload.issuer]
        _check_name_in(
            workload.user,
            [user.name for user in issuer.users],
            f"a user of issuer {issuer.name!r}",
            [*here, "user"],
        )
        for k, scope in enumerate(workload.token.scopes):
            _check_scope(scope, [*here, "token", "scopes", k])
        for j, step in enumerate(workload.steps):
            if isinstance(step, _spec.ReadStep | _spec.WriteStep):
                if step.server not in servers:
                    raise _Problem(
                        f"expected a data server ({_names(servers)}) before ':', "
                        f"received {str(step.target)!r}",
                        [*here, "steps", j, step.key],
                    )
            elif (
                isinstance(step, _spec.ComputeStep)
                and isinstance(step.compute, UniformCompute)
                and step.compute.high < step.compute.low
            ):
                raise _Problem(
                    f"expected a duration >= low ({format_duration(step.compute.low)}), "
                    f"received {format_duration(step.compute.high)!r}",
                    [*here, "steps", j, "compute", "high"],
                )

    host_names = hosts.with_names(groups)
    services = set(PARTITION_SERVICES)
    for table in (scenario.transfer_service, scenario.data_manager):
        if table is not None:
            services.add(table.name)
    actors = hosts.with_names(set(issuers) | servers | groups | services)
    for i, fault in enumerate(scenario.faults):
        here = ["faults", i]
        if isinstance(fault, IssuerOutage | KeyRotation):
            _check_name_in(fault.issuer, issuers, "an issuer", [*here, "issuer"])
        elif isinstance(fault, ClockStep):
            _check_name_in(
                fault.host,
                hosts.with_names(groups | servers),
                "an execute host, host group or data server",
                [*here, "host"],
            )
        elif isinstance(fault, ExecuteHostCrash):
            _check_name_in(fault.host, host_names, "an execute host or host group", [*here, "host"])
        elif isinstance(fault, DataServerRestart):
            _check_name_in(fault.server, servers, "a data server", [*here, "server"])
        elif isinstance(fault, Partition):
            for j, actor in enumerate(fault.between):
                _check_name_in(actor, actors, "an actor", [*here, "between", j])
            if fault.between[0] == fault.between[1]:
                raise _Problem(
                    f"expected two different actors, received {list(fault.between)!r}",
                    [*here, "between"],
                )
        elif isinstance(fault, RefreshTokenRevoked):
            if fault.issuer is not None:
                _check_name_in(fault.issuer, issuers, "an issuer", [*here, "issuer"])
                known = [user.name for user in issuers[fault.issuer].users]
                what = f"a user of issuer {fault.issuer!r}"
            else:
                known = [user.name for issuer in scenario.issuers for user in issuer.users]
                what = "a user of some issuer"
            _check_name_in(fault.user, known, what, [*here, "user"])
        elif isinstance(fault, TransferServiceStateLoss) and scenario.transfer_service is None:
            raise _Problem(
                "expected a [transfer_service] table for this fault, received none", [*here, "kind"]
            )


def _check_transfers(scenario: Scenario) -> None:
    """Rucio -> FTS -> storage: the tables, datasets and rules refer to what exists (L1-L7)."""
    issuers = {issuer.name: issuer for issuer in scenario.issuers}
    servers = {server.name: server for server in scenario.data_servers}
    ts, dm = scenario.transfer_service, scenario.data_manager

    if ts is not None:
        _check_name_in(ts.issuer, issuers, "an issuer", ["transfer_service", "issuer"])
        issuer = issuers[ts.issuer]
        client = _check_client(
            issuer,
            ts.client,
            ("token_exchange", "refresh_token"),
            "the transfer service exchanges and refreshes storage tokens (K5, L6, L7)",
            ["transfer_service", "client"],
        )
        _check_backoff(ts.retry_backoff, ts.retry_backoff_max, ["transfer_service"])
        lifetime = client.access_token_lifetime or issuer.access_token_lifetime
        if ts.refresh_margin >= lifetime:
            raise _Problem(
                f"expected a duration below the lifetime of client {ts.client!r}'s access tokens "
                f"({format_duration(lifetime)}: exchanged and refreshed tokens get it, P13), "
                f"received {format_duration(ts.refresh_margin)!r}",
                ["transfer_service", "refresh_margin"],
            )

    if dm is not None:
        _check_name_in(dm.issuer, issuers, "an issuer", ["data_manager", "issuer"])
        if ts is not None and dm.issuer != ts.issuer:
            raise _Problem(
                f"expected the transfer service's issuer {ts.issuer!r} (it verifies the data "
                f"manager's FTS token and exchanges its storage tokens), received {dm.issuer!r}",
                ["data_manager", "issuer"],
            )
        issuer = issuers[dm.issuer]
        if issuer.profile is not Profile.WLCG:
            i = scenario.issuers.index(issuer)
            raise _Problem(
                f"expected profile = 'wlcg' for the data manager's issuer {dm.issuer!r} (it asks "
                f"for storage.* scopes, L2), received {issuer.profile.value!r}",
                ["issuers", i, "profile"],
            )
        _check_client(
            issuer,
            dm.client,
            ("client_credentials",),
            "the data manager gets its tokens by client credentials (K3, L3)",
            ["data_manager", "client"],
        )
        _check_backoff(dm.retry_backoff, dm.retry_backoff_max, ["data_manager"])

    if scenario.datasets and dm is None:
        raise _Problem(
            "expected a [data_manager] table: datasets belong to it, received none", ["datasets"]
        )
    _check_unique([dataset.name for dataset in scenario.datasets], ["datasets"])
    for i, dataset in enumerate(scenario.datasets):
        assert dm is not None
        _check_trusting_server(dataset.server, servers, dm.issuer, ["datasets", i, "server"])

    if scenario.rules and (ts is None or dm is None):
        missing = "[transfer_service]" if ts is None else "[data_manager]"
        raise _Problem(f"expected a {missing} table: rules need one, received none", ["rules"])
    datasets = {dataset.name: dataset for dataset in scenario.datasets}
    _check_unique([rule.rule_name(i) for i, rule in enumerate(scenario.rules)], ["rules"])
    for i, rule in enumerate(scenario.rules):
        assert dm is not None
        here: list[PathPart] = ["rules", i]
        _check_name_in(rule.dataset, datasets, "a dataset", [*here, "dataset"])
        _check_trusting_server(rule.destination, servers, dm.issuer, [*here, "destination"])
        if rule.destination == datasets[rule.dataset].server:
            raise _Problem(
                f"expected a data server other than the dataset's own "
                f"({datasets[rule.dataset].server!r}), received {rule.destination!r}",
                [*here, "destination"],
            )


def _check_client(
    issuer: _spec.IssuerSpec,
    name: str,
    grants: Sequence[str],
    why: str,
    path: list[PathPart],
) -> _spec.ClientSpec:
    """``name`` is a client of ``issuer`` with ``grants``; returns it."""
    client = issuer.client(name)
    _check_name_in(
        name, [c.name for c in issuer.clients], f"a client of issuer {issuer.name!r}", path
    )
    assert client is not None
    held = {grant.value for grant in client.grants}
    lacking = [grant for grant in grants if grant not in held]
    if lacking:
        raise _Problem(
            f"expected a client with the {' and '.join(grants)} grants ({why}), received "
            f"{name!r} without {', '.join(lacking)}",
            path,
        )
    return client


def _check_backoff(first: float, maximum: float, table: list[PathPart]) -> None:
    if maximum < first:
        raise _Problem(
            f"expected a duration >= retry_backoff ({format_duration(first)}), "
            f"received {format_duration(maximum)!r}",
            [*table, "retry_backoff_max"],
        )


def _check_trusting_server(
    name: str, servers: Mapping[str, _spec.DataServerSpec], issuer: str, path: list[PathPart]
) -> None:
    """``name`` is a data server that trusts ``issuer`` (its tokens are the data manager's)."""
    _check_name_in(name, servers, "a data server", path)
    if issuer not in servers[name].issuers:
        raise _Problem(
            f"expected a data server that trusts the data manager's issuer {issuer!r} (in its "
            f"issuers table), received {name!r}",
            path,
        )


def _check_names(scenario: Scenario) -> None:
    """Names are unique: actor names across all kinds (partitions and events name actors)."""
    seen: dict[str, str] = {service: service for service in PARTITION_SERVICES}
    host_groups: list[tuple[str, int, str]] = []

    def claim(name: str, path: list[PathPart]) -> None:
        where = format_key_path(path)
        if name in seen:
            raise _Problem(
                f"expected a unique name, received {name!r}, already used by {seen[name]}", path
            )
        for group, count, group_where in host_groups:
            if _host_index(name, group, count) is not None:
                raise _Problem(
                    f"expected a unique name, received {name!r}, already used by {group_where}",
                    path,
                )
        seen[name] = where

    for i, issuer in enumerate(scenario.issuers):
        claim(issuer.name, ["issuers", i, "name"])
    for i, server in enumerate(scenario.data_servers):
        claim(server.name, ["data_servers", i, "name"])
    for i, group in enumerate(scenario.execute_hosts):
        claim(group.name, ["execute_hosts", i, "name"])
        # Its hosts group.name-0 .. -(count-1), without listing them: a name claimed earlier
        # that has this form is a clash, and later names are checked against every group.
        for name, where in seen.items():
            if _host_index(name, group.name, group.count) is not None:
                raise _Problem(
                    f"expected a unique name, received {name!r}, already used by {where}",
                    ["execute_hosts", i, "name"],
                )
        host_groups.append((group.name, group.count, format_key_path(["execute_hosts", i, "name"])))
    if scenario.transfer_service is not None:
        claim(scenario.transfer_service.name, ["transfer_service", "name"])
    if scenario.data_manager is not None:
        claim(scenario.data_manager.name, ["data_manager", "name"])

    urls: dict[str, int] = {}
    for i, issuer in enumerate(scenario.issuers):
        if issuer.url in urls:
            raise _Problem(
                f"expected a unique issuer URL, received {issuer.url!r}, already used by "
                f"issuers[{urls[issuer.url]}]",
                ["issuers", i, "url"],
            )
        urls[issuer.url] = i
        _check_unique([user.name for user in issuer.users], ["issuers", i, "users"])
        _check_unique([client.name for client in issuer.clients], ["issuers", i, "clients"])
    _check_unique([workload.name for workload in scenario.workloads], ["workloads"])


def _host_index(name: str, group: str, count: int) -> int | None:
    """``i`` when ``name`` is ``group-i`` with ``0 <= i < count`` (a host of the group)."""
    prefix = group + "-"
    if not name.startswith(prefix):
        return None
    digits = name[len(prefix) :]
    if not digits.isdigit() or not digits.isascii() or (digits != "0" and digits[0] == "0"):
        return None
    index = int(digits)
    return index if index < count else None


class _HostNames(Collection[str]):
    """The host names of the execute-host groups plus some other names, never materialised.

    Membership costs O(groups); iterating (only for an error message) lists every host of a
    small pool and ``group-0 .. group-(n-1)`` for a large one.
    """

    _LISTED: Final = 20

    def __init__(
        self, groups: Sequence[_spec.ExecuteHostSpec], others: Collection[str] = ()
    ) -> None:
        self._groups = [(group.name, group.count) for group in groups]
        self._others = set(others)

    def with_names(self, others: Collection[str]) -> _HostNames:
        """These hosts and ``others``."""
        copy = _HostNames((), self._others | set(others))
        copy._groups = self._groups
        return copy

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._others:
            return True
        return any(_host_index(name, group, count) is not None for group, count in self._groups)

    def __len__(self) -> int:
        return len(self._others) + sum(count for _, count in self._groups)

    def __iter__(self) -> Iterator[str]:
        yield from self._others
        small = sum(count for _, count in self._groups) <= self._LISTED
        for group, count in self._groups:
            if small:
                yield from (f"{group}-{i}" for i in range(count))
            elif count:
                yield f"{group}-0 .. {group}-{count - 1}"


def _check_unique(names: Sequence[str], array: list[PathPart]) -> None:
    """The ``name`` of each item of the array at ``array`` is unique within it."""
    first: dict[str, int] = {}
    for j, name in enumerate(names):
        if name in first:
            raise _Problem(
                f"expected a unique name, received {name!r}, already used by "
                f"{format_key_path([*array, first[name]])}",
                [*array, j, "name"],
            )
        first[name] = j


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "none defined"


def _check_name_in(name: str, known: Collection[str], what: str, path: list[PathPart]) -> None:
    if name not in known:
        raise _Problem(f"expected the name of {what} ({_names(known)}), received {name!r}", path)


def _check_scope(scope: str, path: list[PathPart]) -> None:
    try:
        parse_scope(scope)
    except ScopeError as exc:
        raise _Problem(f"expected a valid scope, received {scope!r} ({exc})", path) from None


# --------------------------------------------------------------------------------------------
# --set overrides


_SEGMENT_RE: Final = re.compile(r"(?P<key>[^.\[\]]+)?(?P<indexes>(?:\[\d+\])*)")


def _parse_override_path(text: str) -> list[PathPart]:
    parts: list[PathPart] = []
    for segment in text.split("."):
        match = _SEGMENT_RE.fullmatch(segment.strip())
        if match is None or (match["key"] is None and not (parts and match["indexes"])):
            raise ScenarioError(
                OVERRIDE_FILE,
                text,
                'expected a key path such as "issuers[0].access_token_lifetime" or '
                f'"issuers.ligo.access_token_lifetime", received {text!r}',
            )
        if match["key"] is not None:
            parts.append(match["key"])
        parts.extend(int(index) for index in re.findall(r"\[(\d+)\]", match["indexes"]))
    return parts


def _parse_override_value(text: str, path_text: str) -> object:
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text.strip()
    except RecursionError:
        raise ScenarioError(OVERRIDE_FILE, path_text, _too_deep()) from None
    except ValueError as exc:  # int() refuses integers of more than 4300 digits
        raise ScenarioError(
            OVERRIDE_FILE, path_text, f"expected a TOML number of sensible size ({exc})"
        ) from None
    if _too_deep_at(value) is not None:
        raise ScenarioError(OVERRIDE_FILE, path_text, _too_deep())
    return value


def _is_scalar(value: object) -> bool:
    return not isinstance(value, dict | list)


def _apply_override(raw: dict[str, Any], item: str) -> str:
    """Apply one ``key.path=value`` to the raw document; returns the path in index form."""
    path_text, sep, value_text = item.partition("=")
    if not sep or not path_text.strip():
        raise ScenarioError(
            OVERRIDE_FILE,
            item,
            f'expected key.path=value, such as "token_manager.renew_fraction=0.3", '
            f"received {item!r}",
        )
    path_text = path_text.strip()
    parts = _parse_override_path(path_text)
    value = _parse_override_value(value_text, path_text)
    if not (_is_scalar(value) or (isinstance(value, list) and all(map(_is_scalar, value)))):
        raise ScenarioError(
            OVERRIDE_FILE,
            path_text,
            f"expected a scalar or an array of scalars, received {describe(value)}",
        )

    def fail(message: str) -> ScenarioError:
        return ScenarioError(OVERRIDE_FILE, path_text, message)

    node: Any = raw
    tp: object = Scenario
    done: list[PathPart] = []
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        tp = _optional_inner(tp) or tp
        item_type = _homogeneous_tuple_item(tp)
        if item_type is not None:
            # An array: tables are addressed by index or by `name`, scalars by index.
            if not isinstance(node, list):
                raise fail(f"expected an array at {format_key_path(done)}, received none")
            index = _array_index(node, part, item_type, done, fail)
            done.append(index)
            if _is_table_type(item_type):
                if last:
                    raise fail("expected a path to a value, received a path to a table")
                node, tp = node[index], item_type
                continue
            if not last:
                raise fail(f"expected a path ending at {format_key_path(done)}, a value")
            if not _is_scalar(value):
                raise fail(f"expected a scalar, received {describe(value)}")
            node[index] = value
            break
        if isinstance(part, int):
            raise fail(
                f"expected a key after {format_key_path(done) or 'the top level'}, "
                f"received the index [{part}]"
            )
        if _is_mapping(tp):
            child_type: object = typing.get_args(tp)[1]
        else:
            child_type = _child_type(tp, part, done, fail)
        if not isinstance(node, dict):
            raise fail(f"expected a table at {format_key_path(done)}, received {describe(node)}")
        done.append(part)
        if last:
            child_item = _homogeneous_tuple_item(child_type)
            if _is_table_type(child_type) or (
                child_item is not None and _is_table_type(child_item)
            ):
                raise fail(
                    f"expected a path to a value, received a path to {_describe_type(child_type)}"
                )
            node[part] = value
        else:
            if part not in node:
                if not _is_table_type(child_type):
                    raise fail(
                        f"expected an array at {format_key_path(done)}, received none"
                        if _homogeneous_tuple_item(child_type) is not None
                        else f"expected a path ending at {format_key_path(done)}, a value"
                    )
                node[part] = {}
            node, tp = node[part], child_type
    return format_key_path(done)


def _array_index(
    node: list[Any],
    part: PathPart,
    item_type: object,
    done: list[PathPart],
    fail: Callable[[str], ScenarioError],
) -> int:
    """The index ``part`` means in the array ``node``: an index, or an item's ``name``."""
    if isinstance(part, int):
        if part >= len(node):
            raise fail(
                f"expected an index below {len(node)} for {format_key_path(done)}, received {part}"
            )
        return part
    if not _is_table_type(item_type):
        raise fail(f"expected an index [i] after {format_key_path(done)}, received {part!r}")
    names = {
        entry["name"]: index
        for index, entry in enumerate(node)
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    }
    if part not in names:
        listed = ", ".join(names) or "its items have no names"
        raise fail(
            f"expected the name of an item of {format_key_path(done)} ({listed}), received {part!r}"
        )
    return names[part]


def _child_type(
    tp: object, key: str, done: list[PathPart], fail: Callable[[str], ScenarioError]
) -> object:
    """The type of ``key`` inside a table of type ``tp`` (any member, for unions)."""
    members: Sequence[object]
    tagged = _tagged_members(tp)
    keyed = _keyed_members(tp)
    if tagged is not None:
        members = list(tagged.values())
    elif keyed is not None:
        members = list(keyed.values())
    elif isinstance(tp, type) and attrs.has(tp):
        members = [tp]
    else:
        raise fail(f"expected a path ending at {format_key_path(done)}, a value")
    allowed: list[str] = []
    for member in members:
        assert isinstance(member, type)
        for allowed_key in _allowed_keys(member):
            if allowed_key not in allowed:
                allowed.append(allowed_key)
        if key == _TAG and _TAG in _allowed_keys(member):
            return str
        field = _fields_by_key(member).get(key)
        if field is not None:
            return str if field.metadata.get(UNIT) else field.type
    where = format_key_path(done) or "the top level"
    raise fail(f"unknown key {key!r} in {where}: expected one of {', '.join(allowed)}")
