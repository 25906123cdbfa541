"""HTCondor submit descriptions as workloads (issue 13), parsed by HTCondor's own ``htcondor2``.

A ``[[workloads]]`` entry may name a submit description: ``submit = "analysis.sub"`` (relative
to the scenario file). ``htcondor2.Submit`` reads it (its macro language, ``queue N`` and the
``queue ... in/from/matching`` item data); each proc is expanded with its item and
``$(Process)``, and gives one :class:`~scitokens_batch.scenario._spec.SubmitJob`: resources,
``requirements``/``rank``, ``+``-attributes, ``executable``/``arguments`` and the OAuth
credentials (``use_oauth_services``, ``<svc>_oauth_permissions[_<handle>]``,
``<svc>_oauth_resource[_<handle>]``). The steps stay in the scenario's TOML.

The workload's ``jobs`` (the number of procs) and ``token`` (the credential the steps use) are
filled from the description when the TOML does not give them; when it does, they must agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

import classad2
import htcondor2

from ..errors import ScenarioError, ScopeError
from ..tokens import parse_scope
from ._spec import OAuthToken, Scenario, SubmitJob

__all__ = ["SubmitDescription", "apply_submit_files", "check_credentials", "parse_submit"]

#: request_memory units (HTCondor: a bare number is MB; K, M, G, T with an optional B).
_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", re.IGNORECASE)
_MB_PER = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024.0}
_QUEUE_LINE = re.compile(r"^\s*queue\b", re.IGNORECASE | re.MULTILINE)
#: ``queue [N] [vars] from <file>`` (not an inline ``from (...)`` list).
_QUEUE_FROM_FILE = re.compile(
    r"^(\s*queue\b[^\n]*?\bfrom\s+)([^\s(][^\n]*?)\s*$", re.IGNORECASE | re.MULTILINE
)
#: Keys our jobs use; any other key an HTCondor submit file may hold is accepted and ignored.
_ATTRIBUTE = re.compile(r"^(?:\+|MY\.)([A-Za-z_][A-Za-z0-9_]*)$")


class SubmitDescription:
    """A parsed submit description: its file name and its procs."""

    __slots__ = ("file", "jobs")

    def __init__(self, file: str, jobs: tuple[SubmitJob, ...]) -> None:
        self.file = file
        self.jobs = jobs


def _fail(file: str, key: str, message: str) -> ScenarioError:
    return ScenarioError(file, key, message)


def _line_of(text: str, key: str) -> str:
    """``line N (key)`` for the first line that sets ``key`` (as the file spells it), else the
    key itself. htcondor2 stores ``+Name`` as ``MY.Name``; ``queue`` has no ``=``."""
    if key.lower() == "queue":
        pattern = _QUEUE_LINE
    elif key.upper().startswith("MY."):
        name = re.escape(key[3:])
        pattern = re.compile(rf"^\s*(?:\+\s*{name}|MY\.{name})\s*=", re.IGNORECASE)
    else:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=", re.IGNORECASE)
    for n, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            spelled = line.split("=", 1)[0].strip() if key.lower() != "queue" else "queue"
            return f"line {n} ({spelled})"
    return key


def _memory_mb(file: str, where: str, value: str) -> int:
    m = _MEMORY.fullmatch(value)
    if m is None:
        raise _fail(
            file, where, f'expected a memory size such as "2048" (MB) or "4 GB", received {value!r}'
        )
    return max(1, round(float(m.group(1)) * _MB_PER[m.group(2).upper()]))


def _positive_int(file: str, where: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if number < 1:
        raise _fail(file, where, f"expected a positive whole number, received {value!r}")
    return number


def _expression(file: str, where: str, value: str) -> str:
    """``value`` if it parses as a ClassAd expression (what the negotiator will evaluate)."""
    try:
        classad2.ExprTree(value)
    except Exception:  # classad2 raises its own ClassAdException, not exported
        raise _fail(file, where, f"expected a ClassAd expression, received {value!r}") from None
    return value


def _split_scopes(value: str) -> tuple[str, ...]:
    # HTCondor separates permissions with spaces or commas.
    return tuple(s for s in re.split(r"[\s,]+", value.strip()) if s)


def _tokens(sub: Any, keys: list[str], file: str, text: str) -> tuple[OAuthToken, ...]:
    has_services = "use_oauth_services" in keys
    services = _split_scopes(sub.expand("use_oauth_services")) if has_services else ()
    found: list[OAuthToken] = []
    for service in services:
        prefix = f"{service}_oauth_permissions"
        handles = sorted(
            {k[len(prefix) + 1 :] for k in keys if k.lower().startswith(prefix.lower() + "_")}
            | ({""} if any(k.lower() == prefix.lower() for k in keys) else set())
        )
        if not handles:
            raise _fail(
                file,
                _line_of(text, "use_oauth_services"),
                f"expected {prefix} (the scopes) for service {service!r}, received none",
            )
        for handle in handles:
            suffix = f"_{handle}" if handle else ""
            perm_key, res_key = f"{prefix}{suffix}", f"{service}_oauth_resource{suffix}"
            perm_key = next(k for k in keys if k.lower() == perm_key.lower())
            res = next((k for k in keys if k.lower() == res_key.lower()), None)
            if res is None:
                raise _fail(
                    file,
                    res_key,
                    f"expected {res_key} (the token audience) next to {perm_key}, received none",
                )
            scopes = _split_scopes(sub.expand(perm_key))
            if not scopes:
                raise _fail(file, _line_of(text, perm_key), "expected scopes, received nothing")
            for scope in scopes:
                try:
                    parse_scope(scope)
                except ScopeError as exc:
                    raise _fail(
                        file,
                        _line_of(text, perm_key),
                        f"expected a valid scope, received {scope!r} ({exc})",
                    ) from None
            found.append(
                OAuthToken(
                    service=service,
                    handle=handle,
                    scopes=scopes,
                    audience=sub.expand(res).strip(),
                )
            )
    return tuple(found)


def _queue_count(qargs: str) -> int:
    head = qargs.strip().split(None, 1)[0] if qargs.strip() else "1"
    if not head.isdigit():
        return 1  # `queue item in (...)`: one proc per item
    return int(head)


#: Statements and macros refused before htcondor2 sees the text: ``include`` reads another file
#: or, with ``|``, runs a command at parse time (htcondor2.Submit does run it); a queue item
#: list ending in ``|`` is a command too. ``$ENV()`` copies the environment of whoever loads the
#: scenario into scopes and audiences (outputs); ``$RANDOM_*()`` breaks byte-identical reruns.
_UNSAFE: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^\s*include\b", re.IGNORECASE),
        "include statements (they run commands or read other files at load time)",
    ),
    (
        re.compile(r"^\s*queue\b.*\|\s*$", re.IGNORECASE),
        "queue item data from a command (it would run at load time)",
    ),
    (
        re.compile(r"\$ENV\s*\(", re.IGNORECASE),
        "$ENV() (it copies the environment into the run's outputs)",
    ),
    (
        re.compile(r"\$RANDOM_(?:INTEGER|CHOICE)\s*\(", re.IGNORECASE),
        "$RANDOM_INTEGER()/$RANDOM_CHOICE() (reruns must be byte-identical)",
    ),
)


def _refuse_unsafe(text: str, file: str) -> None:
    """Refuse what would run a command, read the environment or draw randomness at load time.

    Continuation lines (a trailing backslash) are joined first, as HTCondor joins them, so a
    statement split over lines is still seen; the error gives the line it starts on.
    """
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        start, logical = n + 1, lines[n]
        while logical.rstrip().endswith("\\") and n + 1 < len(lines):
            n += 1
            logical = logical.rstrip()[:-1] + lines[n]
        n += 1
        for pattern, what in _UNSAFE:
            if pattern.search(logical):
                raise _fail(
                    file,
                    f"line {start}",
                    f"expected no {what}, received {logical.strip()[:80]!r}",
                )


def _from_relative_to(text: str, base: str) -> str:
    """``queue ... from <file>`` with a relative file made relative to ``base`` (the submit
    file's directory, as condor_submit run there reads it), not to our current directory."""

    def absolute(m: re.Match[str]) -> str:
        name = m.group(2)
        return m.group(1) + (name if os.path.isabs(name) else os.path.join(base, name))

    return _QUEUE_FROM_FILE.sub(absolute, text)


def parse_submit(text: str, *, file: str, base: str | None = None) -> SubmitDescription:
    """Parse a submit description into its procs.

    Args:
        text: the submit description.
        file: its name, for errors.
        base: the directory relative paths are read from (``queue ... from <file>``, a local
            ``executable``); by default the current directory.

    Raises:
        ScenarioError: the description is malformed, names the line or key, expected and
            received.
    """
    _refuse_unsafe(text, file)
    if base is not None:
        text = _from_relative_to(text, base)
    queues = _QUEUE_LINE.findall(text)
    if len(queues) != 1:
        raise _fail(
            file,
            "queue",
            f"expected exactly one queue statement, received {len(queues)}",
        )
    try:
        sub = htcondor2.Submit(text)
        qargs = sub.getQArgs()
        listed = sub.itemdata()  # None without item data, and also for an empty item list
        has_items = re.search(r"\b(?:in|from|matching)\b", qargs, re.IGNORECASE) is not None
        items: list[dict[str, str]] = list(listed or ()) if has_items else [{}]
    except (ValueError, RuntimeError, htcondor2.HTCondorException) as exc:
        raise _fail(file, _line_of(text, "queue"), f"HTCondor refused it: {exc}") from None
    count = _queue_count(qargs)
    if count < 1 or not items:
        raise _fail(
            file,
            _line_of(text, "queue"),
            f"expected at least one job (a positive count and at least one item), "
            f"received 'queue {qargs}' with {len(items)} items",
        )
    keys = list(sub.keys())
    plain = {k.lower(): k for k in keys}
    jobs: list[SubmitJob] = []
    for proc_items in [it for it in items for _ in range(count)]:
        proc = len(jobs)
        one = htcondor2.Submit(text)
        for name, value in proc_items.items():
            one[name] = value
        one["Process"] = one["ProcId"] = str(proc)
        one["Cluster"] = one["ClusterId"] = "1"
        jobs.append(_job(one, keys, plain, proc, file, text, base))
    _check_same_permissions(jobs, file)
    return SubmitDescription(file, tuple(jobs))


def _job(
    sub: Any,
    keys: list[str],
    plain: Mapping[str, str],
    proc: int,
    file: str,
    text: str,
    base: str | None,
) -> SubmitJob:
    def get(key: str, default: str) -> str:
        real = plain.get(key)
        return sub.expand(real).strip() if real is not None else default

    attributes: list[tuple[str, str]] = []
    for key in keys:
        m = _ATTRIBUTE.match(key)
        if m is not None:
            attributes.append((m.group(1), _expression(file, _line_of(text, key), sub.expand(key))))
    executable = get("executable", "")
    if executable and base is not None and not os.path.isabs(executable):
        local = os.path.join(base, executable)
        # condor_submit transfers a local executable; a bare name not found here is a command
        # of the execute host (transfer_executable = false), looked up in its PATH.
        executable = local if os.path.exists(local) else executable
    argv = (executable, *get("arguments", "").split()) if executable else ()
    return SubmitJob(
        proc=proc,
        request_cpus=_positive_int(file, _line_of(text, "request_cpus"), get("request_cpus", "1")),
        request_memory=_memory_mb(
            file, _line_of(text, "request_memory"), get("request_memory", "1")
        ),
        requirements=_expression(file, _line_of(text, "requirements"), get("requirements", "true")),
        rank=_expression(file, _line_of(text, "rank"), get("rank", "0")),
        attributes=tuple(sorted(attributes)),
        argv=argv,
        tokens=_tokens(sub, keys, file, text),
    )


def _check_same_permissions(jobs: list[SubmitJob], file: str) -> None:
    """HTCondor's rule: one user's jobs may not ask for different permissions for the same
    service and handle (they share one credential file); refused at submission."""
    first: dict[str, tuple[int, OAuthToken]] = {}
    for job in jobs:
        for token in job.tokens:
            seen = first.setdefault(token.name, (job.proc, token))
            if (seen[1].scopes, seen[1].audience) != (token.scopes, token.audience):
                raise _fail(
                    file,
                    f"{token.service}_oauth_permissions",
                    f"jobs 1.{seen[0]} and 1.{job.proc} ask for different permissions or "
                    f"resource for {token.name!r}: expected the same for one user's jobs, "
                    f"received {' '.join(seen[1].scopes)!r} ({seen[1].audience}) and "
                    f"{' '.join(token.scopes)!r} ({token.audience})",
                )


def apply_submit_files(
    raw: MutableMapping[str, Any], *, scenario_file: str
) -> dict[int, SubmitDescription]:
    """Read each workload's submit description and fill ``jobs`` and ``token`` from it.

    Mutates ``raw`` (the TOML document): a workload's ``jobs`` and ``token`` come from its
    description unless the TOML gives them; when it does, they must agree.

    Returns:
        workload index -> its parsed description.
    """
    found: dict[int, SubmitDescription] = {}
    workloads = raw.get("workloads")
    if not isinstance(workloads, list):
        return found
    base = os.path.dirname(os.path.abspath(scenario_file)) if scenario_file else os.getcwd()
    for i, w in enumerate(workloads):
        if not isinstance(w, dict) or "submit" not in w:
            continue
        where = f"workloads[{i}].submit"
        name = w["submit"]
        if not isinstance(name, str) or not name:
            raise ScenarioError(
                scenario_file,
                where,
                f"expected the path of a submit description, received {name!r}",
            )
        path = os.path.join(base, name)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(
                scenario_file, where, f"expected a readable submit description, received {exc}"
            ) from None
        desc = parse_submit(text, file=path, base=os.path.dirname(path))
        found[i] = desc
        _fill(w, desc, scenario_file, i)
    return found


def _fill(w: dict[str, Any], desc: SubmitDescription, scenario_file: str, i: int) -> None:
    n = len(desc.jobs)
    if "jobs" not in w:
        w["jobs"] = n
    elif w["jobs"] != n:
        raise ScenarioError(
            scenario_file,
            f"workloads[{i}].jobs",
            f"expected {n} (the procs {desc.file} queues) or no jobs key, received {w['jobs']!r}",
        )
    tokens = desc.jobs[0].tokens
    if not tokens:
        if "token" not in w:
            raise ScenarioError(
                desc.file,
                "use_oauth_services",
                "expected a token service (use_oauth_services and its permissions), received none",
            )
        return
    wanted = w.get("token", {}).get("service") if isinstance(w.get("token"), dict) else None
    if wanted is None and len(tokens) > 1:
        raise ScenarioError(
            scenario_file,
            f"workloads[{i}].token.service",
            "expected the credential the steps use (the job stages one), one of "
            f"{', '.join(t.name for t in tokens)}; received none",
        )
    chosen = next((t for t in tokens if t.name == wanted), tokens[0] if wanted is None else None)
    if chosen is None:
        raise ScenarioError(
            scenario_file,
            f"workloads[{i}].token.service",
            f"expected one of {desc.file}'s credentials "
            f"({', '.join(t.name for t in tokens)}), received {wanted!r}",
        )
    token = {"service": chosen.name, "scopes": list(chosen.scopes), "audience": chosen.audience}
    given = w.get("token")
    if isinstance(given, dict) and set(given) != {"service"}:
        for key, value in token.items():
            if key in given and given[key] != value:
                raise ScenarioError(
                    scenario_file,
                    f"workloads[{i}].token.{key}",
                    f"expected {value!r} (from {desc.file}) or no such key, "
                    f"received {given[key]!r}",
                )
    w["token"] = token


def check_credentials(scenario: Scenario, *, scenario_file: str) -> None:
    """HTCondor's rule across workloads: one user's jobs (of any submit description) ask for
    the same permissions and resource for one service and handle, or are refused."""
    first: dict[tuple[str, str], tuple[str, OAuthToken]] = {}
    for i, w in enumerate(scenario.workloads):
        if not w.submitted:
            continue
        for job in w.submitted:
            for token in job.tokens:
                where = f"workloads[{i}] ({w.submit} job {i + 1}.{job.proc})"
                seen = first.setdefault((w.user, token.name), (where, token))
                if (seen[1].scopes, seen[1].audience) != (token.scopes, token.audience):
                    raise ScenarioError(
                        scenario_file,
                        f"workloads[{i}].submit",
                        f"user {w.user!r}: {seen[0]} and {where} ask for different permissions "
                        f"or resource for {token.name!r}: expected the same, received "
                        f"{' '.join(seen[1].scopes)!r} ({seen[1].audience}) and "
                        f"{' '.join(token.scopes)!r} ({token.audience})",
                    )
