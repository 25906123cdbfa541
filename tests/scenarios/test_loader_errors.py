"""Broken scenario files: each is the valid base plus one defect, and the error names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scitokens_batch.errors import ScenarioError
from scitokens_batch.scenario import load_scenario, parse_scenario

BROKEN = Path(__file__).resolve().parent / "broken"
BASE = BROKEN / "_valid_base.toml"

# file stem -> (key path the error names, fragments its message must contain)
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "unknown_top_level_key": (
        "extras",
        ("unknown key", "expected one of scenario, issuers", "received 'extras'"),
    ),
    "unknown_nested_key": (
        "issuers[0].users[0].grups",
        ("did you mean 'groups'?", "expected one of name, groups, scopes", "received 'grups'"),
    ),
    "wrong_type_jobs": ("workloads[0].jobs", ("expected an integer, received '3' (a string)",)),
    "wrong_type_seed_bool": ("scenario.seed", ("expected an integer, received true (a boolean)",)),
    "bad_duration_unit": (
        "scenario.duration",
        ('expected a duration string with a unit, such as "90m"', "received '1y'"),
    ),
    "duration_without_unit": (
        "issuers[0].access_token_lifetime",
        ('such as "90m"', "received 1200 (an integer)"),
    ),
    "negative_duration": ("issuers[0].latency", ("expected a duration >= 0s, received '-1s'",)),
    "bad_size": (
        "workloads[0].steps[0].size",
        ('expected a size string with a unit, such as "400MB"', "received '1MiB'"),
    ),
    "bad_rate": (
        "data_servers[0].bandwidth",
        ('expected a rate string, such as "200MB/s"', "received '200MB'"),
    ),
    "bad_epoch": (
        "scenario.epoch",
        ("expected an RFC 3339 date-time with a time zone", "received '2026-01-01T00:00:00'"),
    ),
    "issuer_not_https": (
        "issuers[0].url",
        ("expected an https URL", "received 'http://issuer.example/vo'"),
    ),
    "issuer_trailing_slash": (
        "issuers[0].url",
        ("without a trailing '/'", "received 'https://issuer.example/vo/'"),
    ),
    "audience_any": ("data_servers[0].audience", ("not a wildcard", "received 'ANY'")),
    "audience_wlcg_any": (
        "data_servers[0].audience",
        ("not a wildcard", "received 'https://wlcg.cern.ch/jwt/v1/any'"),
    ),
    "renew_fraction_too_big": (
        "token_manager.renew_fraction",
        ("expected a number strictly between 0 and 1, received 1.5",),
    ),
    "retry_backoff_max_too_small": (
        "token_manager.retry_backoff_max",
        ("expected a duration >= retry_backoff (5m), received '1m'",),
    ),
    "unknown_profile": (
        "issuers[0].profile",
        ("expected one of 'scitokens', 'wlcg', received 'oidc'",),
    ),
    "unknown_algorithm": (
        "issuers[0].algorithm",
        ("expected one of 'ES256', 'RS256', received 'HS256'",),
    ),
    "slots_zero": ("execute_hosts[0].slots", ("expected an integer >= 1, received 0",)),
    "count_negative": ("execute_hosts[0].count", ("expected an integer >= 0, received -1",)),
    "workload_user_dangling": (
        "workloads[0].user",
        ("expected the name of a user of issuer 'vo' (alice)", "received 'mallory'"),
    ),
    "workload_issuer_dangling": (
        "workloads[0].issuer",
        ("expected the name of an issuer (vo)", "received 'cms'"),
    ),
    "step_server_dangling": (
        "workloads[0].steps[0].read",
        ("expected a data server (store)", "received 'tape:/data/f'"),
    ),
    "step_path_relative": (
        "workloads[0].steps[0].read",
        ("expected an absolute path after 'store:'", "received 'store:data/f'"),
    ),
    "step_bad_placeholder": (
        "workloads[0].steps[0].read",
        ("expected placeholders {job} or {random_file}", "received {jobid}"),
    ),
    "step_two_kinds": (
        "workloads[0].steps[0]",
        (
            "expected a table with exactly one of the keys read, write, compute",
            "received keys read, write together",
        ),
    ),
    "steps_empty": ("workloads[0].steps", ("expected at least one step, received []",)),
    "compute_uniform_reversed": (
        "workloads[0].steps[1].compute.high",
        ("expected a duration >= low (10m), received '5m'",),
    ),
    "compute_lognormal_no_sigma": (
        "workloads[0].steps[1].compute.sigma",
        ("required key is missing", "expected a number, received nothing"),
    ),
    "arrival_without_kind": (
        "workloads[0].arrival.kind",
        ("required key is missing", "'poisson', 'burst', 'every'"),
    ),
    "bad_token_use": (
        "workloads[0].token_use",
        ("expected one of 'reread', 'copy-at-start', received 'copy'",),
    ),
    "data_server_issuer_unknown": (
        "data_servers[0].issuers.cms",
        ("expected the name of an issuer (vo)", "received 'cms'"),
    ),
    "data_server_base_path_relative": (
        "data_servers[0].issuers.vo",
        ("expected an absolute, normalised path", "received 'vo'"),
    ),
    "unknown_kid_refetch_bad": (
        "data_servers[0].unknown_kid_refetch",
        ('or "never"', "received 'sometimes'"),
    ),
    "fault_kind_unknown": (
        "faults[0].kind",
        ("expected one of 'issuer_outage', 'key_rotation'", "received 'meteor'"),
    ),
    "fault_unknown_key": (
        "faults[0].host",
        ("expected one of kind, issuer, at, duration", "received 'host'"),
    ),
    "fault_issuer_dangling": (
        "faults[0].issuer",
        ("expected the name of an issuer (vo)", "received 'cms'"),
    ),
    "fault_host_dangling": (
        "faults[1].host",
        (
            "expected the name of an execute host, host group or data server (node, node-0, node-1, store)",
            "received 'node-2'",
        ),
    ),
    "fault_server_dangling": (
        "faults[1].server",
        ("expected the name of a data server (store)", "received 'tape'"),
    ),
    "fault_user_dangling": (
        "faults[1].user",
        ("expected the name of a user of some issuer (alice)", "received 'bob'"),
    ),
    "partition_unknown_actor": (
        "faults[1].between[1]",
        ("expected the name of an actor", "token_manager", "received 'nowhere'"),
    ),
    "partition_same_actor": (
        "faults[1].between",
        ("expected two different actors, received ['store', 'store']",),
    ),
    "duplicate_issuer_name": (
        "issuers[1].name",
        ("expected a unique name, received 'vo', already used by issuers[0].name",),
    ),
    "duplicate_actor_name": (
        "execute_hosts[0].name",
        ("expected a unique name, received 'vo', already used by issuers[0].name",),
    ),
    "bad_scope": (
        "issuers[0].users[0].scopes[1]",
        ("expected a valid scope, received 'read:../x'",),
    ),
    "bad_token_scope": (
        "workloads[0].token.scopes[0]",
        ("expected a valid scope, received 'read'",),
    ),
    "bad_check_syntax": (
        "expect.checks[2]",
        (
            'expected a check "<summary.json path> <op> <number>"',
            "received 'data.denied.insufficient_scope = 0'",
        ),
    ),
    "bad_check_reason": (
        "expect.checks[2]",
        (
            "expected data.denied.<reason> with reason one of expired",
            "received 'data.denied.insufficent_scope'",
        ),
    ),
    "toml_syntax_error": ("", ("TOML syntax error at line 3, column 16",)),
    "missing_required_key": (
        "scenario.duration",
        ("required key is missing", 'expected a duration such as "90m", received nothing'),
    ),
    "missing_issuers": (
        "issuers",
        ("required key is missing", "expected an array of tables, received nothing"),
    ),
}


def test_base_is_valid() -> None:
    """The base every broken file varies loads without error, so each failure is its defect."""
    scenario = load_scenario(BASE)
    assert scenario.meta.name == "minimal"


def test_every_broken_file_has_a_case() -> None:
    """Each file in broken/ is listed here, and each listed case has its file."""
    files = {path.stem for path in BROKEN.glob("*.toml")} - {BASE.stem}
    assert files == set(CASES)
    assert len(files) >= 25


@pytest.mark.parametrize("stem", sorted(CASES))
def test_broken(stem: str) -> None:
    """The broken file raises a ScenarioError naming the file, the key path and the defect."""
    key_path, fragments = CASES[stem]
    path = BROKEN / f"{stem}.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    error = info.value
    assert (error.file, error.key_path) == (str(path), key_path)
    for fragment in fragments:
        assert fragment in error.message
    assert str(error).startswith(f"{path}: {key_path}: " if key_path else f"{path}: ")


@pytest.mark.parametrize("stem", sorted(CASES))
def test_broken_text_gives_same_error(stem: str) -> None:
    """parse_scenario on the file's text reports the same key path under the given name."""
    path = BROKEN / f"{stem}.toml"
    with pytest.raises(ScenarioError) as info:
        parse_scenario(path.read_text(), file="inline")
    assert (info.value.file, info.value.key_path) == ("inline", CASES[stem][0])
