"""Rucio -> FTS -> storage in a scenario file: [transfer_service], [data_manager], [[datasets]],
[[rules]] and the transfer_service_state_loss fault (L1-L7, P12), errors naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from scitokens_batch.errors import ScenarioError
from scitokens_batch.scenario import (
    DataManagerSpec,
    DatasetSpec,
    RefreshTokenRestore,
    RuleSpec,
    Scenario,
    TransferServiceSpec,
    TransferServiceStateLoss,
    check_scenario,
    load_scenario,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[scenario]
name = "transfers"
duration = "1h"

[[issuers]]
name = "wlcg"
url = "https://wlcg.example/vo"
profile = "{profile}"

[[issuers.clients]]
name = "rucio"
secret = "cs-rucio"
grants = {rucio_grants}
scopes = ["fts", "storage.read:/", "storage.modify:/"]

[[issuers.clients]]
name = "fts"
secret = "cs-fts"
grants = {fts_grants}
access_token_lifetime = "1h"

[[data_servers]]
name = "cern"
audience = "https://cern.example"

[data_servers.issuers]
wlcg = "/vo"

[[data_servers]]
name = "bnl"
audience = "https://bnl.example"

[data_servers.issuers]
{bnl_issuers}
{rest}
"""

SERVICES = """
[transfer_service]
issuer = "wlcg"
client = "fts"
audience = "https://fts.example"

[data_manager]
issuer = "wlcg"
client = "rucio"
"""

DATASET = """
[[datasets]]
name = "raw"
server = "cern"
path = "/data/raw"
files = 3
size = "1GB"
"""

RULE = """
[[rules]]
dataset = "raw"
destination = "bnl"
path = "/data/copy"
"""


def text(
    rest: str = SERVICES + DATASET + RULE,
    *,
    profile: str = "wlcg",
    rucio_grants: str = '["client_credentials"]',
    fts_grants: str = '["token_exchange", "refresh_token"]',
    bnl_issuers: str = 'wlcg = "/vo"',
) -> str:
    """The base file with ``rest`` appended."""
    return BASE.format(
        profile=profile,
        rucio_grants=rucio_grants,
        fts_grants=fts_grants,
        bnl_issuers=bnl_issuers,
        rest=rest,
    )


def parse(source: str, overrides: tuple[str, ...] = ()) -> Scenario:
    return parse_scenario(source, file="transfers.toml", overrides=overrides)


def error(source: str, overrides: tuple[str, ...] = ()) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(source, overrides)
    return info.value


def test_defaults() -> None:
    """The tables with their defaults: FTS "fts", 10 copies at once, 300 s refresh margin (L7),
    3 retries; Rucio "rucio", 300 s token_min_lifetime (L3), 100 files a job; a rule named by
    its index, at 0 s."""
    scenario = parse(text())
    assert scenario.transfer_service == TransferServiceSpec(
        issuer="wlcg", client="fts", audience="https://fts.example"
    )
    ts = scenario.transfer_service
    assert (ts.name, ts.concurrency, ts.refresh_margin, ts.max_retries) == ("fts", 10, 300.0, 3)
    assert (ts.retry_backoff, ts.retry_backoff_max) == (30.0, 600.0)
    assert scenario.data_manager == DataManagerSpec(issuer="wlcg", client="rucio")
    dm = scenario.data_manager
    assert (dm.name, dm.token_min_lifetime, dm.bulk) == ("rucio", 300.0, 100)
    assert scenario.datasets == (
        DatasetSpec(name="raw", server="cern", path="/data/raw", files=3, size=1_000_000_000),
    )
    assert scenario.rules == (RuleSpec(dataset="raw", destination="bnl", path="/data/copy"),)
    assert scenario.rules[0].rule_name(0) == "rule-0"


def test_every_key() -> None:
    """Every key (L3 token_min_lifetime, L7 refresh_margin, ...) is read in its unit; the fault's restore is "none" unless it says "backup"."""
    rest = (
        SERVICES.replace(
            'audience = "https://fts.example"',
            'audience = "https://fts.example"\nname = "fts3"\nconcurrency = 4\n'
            'refresh_margin = "10m"\nretry_backoff = "1m"\nretry_backoff_max = "1h"\n'
            "max_retries = 0",
        ).replace(
            'client = "rucio"',
            'client = "rucio"\nname = "rucio-1"\ntoken_min_lifetime = "5m"\nbulk = 7\n'
            'retry_backoff = "10s"\nretry_backoff_max = "20s"',
        )
        + DATASET
        + RULE.replace('path = "/data/copy"', 'path = "/data/copy"\nname = "r1"\nat = "2h"')
        + """
[[faults]]
kind = "transfer_service_state_loss"
at = "30m"

[[faults]]
kind = "transfer_service_state_loss"
at = "40m"
restore = "backup"
"""
    )
    scenario = parse(text(rest))
    ts, dm = scenario.transfer_service, scenario.data_manager
    assert ts is not None and dm is not None
    assert (ts.name, ts.concurrency, ts.refresh_margin, ts.retry_backoff) == (
        "fts3",
        4,
        600.0,
        60.0,
    )
    assert (ts.retry_backoff_max, ts.max_retries) == (3600.0, 0)
    assert (dm.name, dm.token_min_lifetime, dm.bulk, dm.retry_backoff) == (
        "rucio-1",
        300.0,
        7,
        10.0,
    )
    assert scenario.rules[0].rule_name(0) == "r1" and scenario.rules[0].at == 7200.0
    assert scenario.faults == (
        TransferServiceStateLoss(at=1800.0),
        TransferServiceStateLoss(at=2400.0, restore=RefreshTokenRestore.BACKUP),
    )
    # the named services are actors: a partition may name them
    parse(
        text(
            rest + '\n[[faults]]\nkind = "partition"\nbetween = ["fts3", "rucio-1"]\nat = "0s"\n'
            'duration = "1m"\n'
        )
    )


def test_without_any_of_it() -> None:
    """L1-L7 are opt-in: a scenario without the tables has neither service (the existing scenarios are unchanged)."""
    scenario = parse(text(""))
    assert (scenario.transfer_service, scenario.data_manager) == (None, None)
    assert (scenario.datasets, scenario.rules) == ((), ())


def test_override() -> None:
    """--set reaches the new tables (L5 concurrency, rule times) (and a table the file leaves out)."""
    scenario = parse(text(), ("transfer_service.concurrency=2", "rules[0].at=1m"))
    assert scenario.transfer_service is not None
    assert scenario.transfer_service.concurrency == 2 and scenario.rules[0].at == 60.0


@pytest.mark.parametrize(
    ("source", "key_path", "fragments"),
    [
        (
            text(
                SERVICES.replace(
                    'audience = "https://fts.example"',
                    'audience = "https://fts.example"\nconcurrenci = 3',
                )
            ),
            "transfer_service.concurrenci",
            ("unknown key (did you mean 'concurrency'?)",),
        ),
        (
            text(
                SERVICES.replace(
                    'audience = "https://fts.example"',
                    'audience = "https://fts.example"\nconcurrency = 0',
                )
            ),
            "transfer_service.concurrency",
            ("an integer >= 1", "received 0"),
        ),
        (
            text(SERVICES.replace('audience = "https://fts.example"', 'audience = "ANY"')),
            "transfer_service.audience",
            ("not a wildcard",),
        ),
        (
            text(
                SERVICES.replace('issuer = "wlcg"\nclient = "fts"', 'issuer = "vo"\nclient = "fts"')
            ),
            "transfer_service.issuer",
            ("expected the name of an issuer (wlcg), received 'vo'",),
        ),
        (
            text(SERVICES.replace('client = "fts"', 'client = "ftx"')),
            "transfer_service.client",
            ("a client of issuer 'wlcg' (fts, rucio)", "received 'ftx'"),
        ),
        (
            text(fts_grants='["token_exchange"]'),
            "transfer_service.client",
            ("token_exchange and refresh_token grants", "without refresh_token", "K5"),
        ),
        (
            text(rucio_grants='["refresh_token"]'),
            "data_manager.client",
            ("client_credentials grants", "without client_credentials"),
        ),
        (
            text(
                SERVICES.replace(
                    'audience = "https://fts.example"',
                    'audience = "https://fts.example"\nrefresh_margin = "1h"',
                )
            ),
            "transfer_service.refresh_margin",
            ("below the lifetime of client 'fts'", "(1h", "P13", "received '1h'"),
        ),
        (
            text(
                SERVICES.replace(
                    'audience = "https://fts.example"',
                    'audience = "https://fts.example"\nretry_backoff_max = "1s"',
                )
            ),
            "transfer_service.retry_backoff_max",
            ("expected a duration >= retry_backoff (30s)",),
        ),
        (
            text(profile="scitokens"),
            "issuers[0].profile",
            ("expected profile = 'wlcg'", "L2", "received 'scitokens'"),
        ),
        (
            text(DATASET),
            "datasets",
            ("expected a [data_manager] table",),
        ),
        (
            text(SERVICES.split("[data_manager]")[0] + DATASET + RULE),
            "datasets",
            ("expected a [data_manager] table",),
        ),
        (
            text('[data_manager]\nissuer = "wlcg"\nclient = "rucio"\n' + DATASET + RULE),
            "rules",
            ("expected a [transfer_service] table: rules need one",),
        ),
        (
            text(SERVICES + DATASET + DATASET),
            "datasets[1].name",
            ("expected a unique name, received 'raw', already used by datasets[0]",),
        ),
        (
            text(SERVICES + DATASET.replace('server = "cern"', 'server = "ral"')),
            "datasets[0].server",
            ("expected the name of a data server (bnl, cern), received 'ral'",),
        ),
        (
            text(SERVICES + DATASET + RULE, bnl_issuers=""),
            "rules[0].destination",
            ("a data server that trusts the data manager's issuer 'wlcg'", "received 'bnl'"),
        ),
        (
            text(SERVICES + DATASET + RULE.replace('dataset = "raw"', 'dataset = "rav"')),
            "rules[0].dataset",
            ("expected the name of a dataset (raw), received 'rav'",),
        ),
        (
            text(SERVICES + DATASET + RULE.replace('destination = "bnl"', 'destination = "cern"')),
            "rules[0].destination",
            ("other than the dataset's own ('cern')",),
        ),
        (
            text(SERVICES + DATASET + RULE.replace('path = "/data/copy"', 'path = "data/copy"')),
            "rules[0].path",
            ("an absolute, normalised path",),
        ),
        (
            text(
                SERVICES + DATASET + RULE + RULE.replace("[[rules]]", '[[rules]]\nname = "rule-0"')
            ),
            "rules[1].name",
            ("expected a unique name, received 'rule-0', already used by rules[0]",),
        ),
        (
            text(SERVICES + DATASET.replace("files = 3", "files = -1")),
            "datasets[0].files",
            ("an integer >= 0",),
        ),
        (
            text(SERVICES + DATASET.replace('size = "1GB"', "size = 1000")),
            "datasets[0].size",
            ("a size string with a unit",),
        ),
        (
            text(
                SERVICES.replace(
                    'audience = "https://fts.example"',
                    'audience = "https://fts.example"\nname = "cern"',
                )
            ),
            "transfer_service.name",
            ("expected a unique name, received 'cern', already used by data_servers[0].name",),
        ),
        (
            text('\n[[faults]]\nkind = "transfer_service_state_loss"\nat = "1m"\n'),
            "faults[0].kind",
            ("expected a [transfer_service] table for this fault",),
        ),
        (
            text(
                SERVICES
                + '\n[[faults]]\nkind = "transfer_service_state_loss"\nat = "1m"\nrestore = "all"\n'
            ),
            "faults[0].restore",
            ("expected one of 'none', 'backup', received 'all'",),
        ),
        (
            text(
                SERVICES
                + '\n[[faults]]\nkind = "partition"\nbetween = ["fts", "rucioo"]\nat = "0s"\nduration = "1m"\n'
            ),
            "faults[0].between[1]",
            ("expected the name of an actor", "fts", "rucio", "received 'rucioo'"),
        ),
    ],
)
def test_errors(source: str, key_path: str, fragments: tuple[str, ...]) -> None:
    """A bad value or a dangling reference (K3/K5 grants, L1 audience, L2 wlcg profile, P13
    lifetime) is refused, naming the key path and what was expected."""
    err = error(source)
    assert err.key_path == key_path, err
    for fragment in fragments:
        assert fragment in err.message, err


def test_issuers_must_agree() -> None:
    """L1/L6: the data manager's issuer is the transfer service's (FTS verifies Rucio's FTS token and
    exchanges its storage tokens there)."""
    rest = SERVICES.replace('[data_manager]\nissuer = "wlcg"', '[data_manager]\nissuer = "other"')
    source = text(rest) + (
        '\n[[issuers]]\nname = "other"\nurl = "https://other.example/vo"\nprofile = "wlcg"\n'
    )
    err = error(source)
    assert err.key_path == "data_manager.issuer"
    assert "expected the transfer service's issuer 'wlcg'" in err.message


def test_reference_file_still_loads() -> None:
    """The format's reference file (shared/scenario-format.toml) loads unchanged, with neither
    service."""
    reference = Path("/work/shared/scenario-format.toml")
    if not reference.exists():
        reference = ROOT / "scenarios" / "reference.toml"
    scenario = load_scenario(reference)
    assert scenario.transfer_service is None and scenario.rules == ()
    check_scenario(scenario)


def test_live_runs_accept_transfers_and_the_state_loss_fault() -> None:
    """A live run takes the transfer tables (FTS and Rucio become services) and the
    transfer_service_state_loss fault (the FTS process killed, its state directory replaced by
    the stale copy: tests/live/test_fts_store.py)."""
    from scitokens_batch.live._runner import check_live

    check_live(parse(text()), "transfers.toml")
    lossy = parse(text() + '\n[[faults]]\nkind = "transfer_service_state_loss"\nat = "1h"\n')
    check_live(lossy, "transfers.toml")
