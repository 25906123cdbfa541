"""The scenario loader: the reference file, defaults, host expansion and --set overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from scitokens_batch.errors import ScenarioError
from scitokens_batch.scenario import (
    DEFAULT_EPOCH,
    BurstArrival,
    ComputeStep,
    EveryArrival,
    FixedCompute,
    IssuerOutage,
    KeyRotation,
    LognormalCompute,
    PoissonArrival,
    ReadStep,
    Scenario,
    StepTarget,
    TokenUse,
    UniformCompute,
    WriteStep,
    load_scenario,
    parse_scenario,
)
from scitokens_batch.tokens import Algorithm, Profile

REPO = Path(__file__).resolve().parents[2]
SHARED_REFERENCE = REPO / ".." / "shared" / "scenario-format.toml"
REFERENCE = REPO / "scenarios" / "reference.toml"

MINIMAL = """
[scenario]
name = "minimal"
duration = "1h"

[[issuers]]
name = "vo"
url = "https://issuer.example/vo"

[[issuers.users]]
name = "alice"

[[execute_hosts]]
name = "node"

[[data_servers]]
name = "store"
audience = "https://store.example"

[[workloads]]
name = "jobs"
user = "alice"
issuer = "vo"
jobs = 1
arrival = { kind = "every", interval = "10s" }
token = { service = "vo", scopes = ["read:/data"], audience = "https://store.example" }
steps = [{ compute = { kind = "uniform", low = "1m", high = "2m" } }]
"""


def _reference_paths() -> list[Any]:
    shared = pytest.param(
        SHARED_REFERENCE,
        id="shared",
        marks=pytest.mark.skipif(
            not SHARED_REFERENCE.exists(),
            reason="shared/scenario-format.toml is not beside the repo",
        ),
    )
    return [shared, pytest.param(REFERENCE, id="bundled")]


@pytest.fixture(name="reference")
def _reference() -> Scenario:
    return load_scenario(REFERENCE)


class TestReferenceFile:
    """The reference scenario loads unchanged and means exactly what it says."""

    @pytest.mark.parametrize("path", _reference_paths())
    def test_loads(self, path: Path) -> None:
        """Both copies of the reference file load into the same Scenario."""
        assert load_scenario(path) == load_scenario(REFERENCE)

    @pytest.mark.skipif(not SHARED_REFERENCE.exists(), reason="shared/ is not beside the repo")
    def test_bundled_copy_is_byte_identical(self) -> None:
        """scenarios/reference.toml is a byte-for-byte copy of shared/scenario-format.toml."""
        assert REFERENCE.read_bytes() == SHARED_REFERENCE.read_bytes()

    def test_meta(self, reference: Scenario) -> None:
        """The [scenario] table: name, duration in seconds, seed, epoch in unix seconds."""
        assert reference.meta.name == "reference"
        assert reference.meta.duration == 8 * 3600.0
        assert reference.meta.seed == 7
        assert reference.meta.epoch == 1767225600.0
        assert reference.meta.description.startswith("LIGO-like analysis")

    def test_issuer(self, reference: Scenario) -> None:
        """The issuer's URL, profile, lifetimes, latency, rate limit and users are as written."""
        (ligo,) = reference.issuers
        assert ligo.name == "ligo"
        assert ligo.url == "https://issuer.ligo.example/ligo"
        assert ligo.profile is Profile.SCITOKENS
        assert ligo.algorithm is Algorithm.ES256
        assert ligo.access_token_lifetime == 1200.0
        assert ligo.refresh_token_lifetime == 30 * 86400.0
        assert ligo.nbf_backdate == 0.0
        assert ligo.latency == 0.04
        assert ligo.max_requests_per_second == 50.0
        assert [user.name for user in ligo.users] == ["alice", "bob"]
        assert ligo.users[0].groups == ("/ligo", "/ligo/analysis")
        assert ligo.users[0].scopes == ("read:/frames", "write:/results/alice")
        assert ligo.user("bob") == ligo.users[1]
        assert ligo.user("carol") is None

    def test_services(self, reference: Scenario) -> None:
        """Token manager and queue manager settings are read in seconds."""
        assert reference.token_manager.renew_fraction == 0.5
        assert reference.token_manager.scan_interval == 60.0
        assert reference.token_manager.retry_backoff == 30.0
        assert reference.token_manager.retry_backoff_max == 600.0
        assert reference.queue_manager.negotiation_interval == 20.0
        assert reference.queue_manager.credential_wait == 20.0
        assert reference.queue_manager.release_held_after == 600.0

    def test_hosts_expand(self, reference: Scenario) -> None:
        """The host group "node" with count 40 stands for node-0 .. node-39, 4 slots each."""
        (group,) = reference.execute_hosts
        assert group.slots == 4
        assert group.sandbox_refresh == 300.0
        assert group.clock_skew == 0.0
        assert group.host_names == tuple(f"node-{i}" for i in range(40))
        assert reference.host_names == group.host_names
        assert reference.resolve_hosts("node") == group.host_names
        assert reference.resolve_hosts("node-39") == ("node-39",)
        assert reference.resolve_hosts("node-40") == ()

    def test_data_server(self, reference: Scenario) -> None:
        """The data server's rate, key cache, token cache, base path map and files are as written."""
        frames = reference.data_server("frames")
        assert frames.audience == "https://frames.ligo.example"
        assert frames.bandwidth == 200e6
        assert frames.leeway == 0.0
        assert frames.key_refresh == 600.0
        assert frames.key_expiry == 4 * 86400.0
        assert frames.unknown_kid_refetch == 60.0
        assert frames.token_cache == 60.0
        assert dict(frames.issuers) == {"ligo": "/ligo"}
        (files,) = frames.files
        assert (files.path, files.count, files.size) == ("/ligo/frames", 1000, 400_000_000)
        assert files.file_paths[:2] == ("/ligo/frames/0", "/ligo/frames/1")

    def test_workloads(self, reference: Scenario) -> None:
        """Arrivals, token requests, token_use and steps (paths split into server and path)."""
        analysis, overreach = reference.workloads
        assert (analysis.user, analysis.issuer, analysis.jobs) == ("alice", "ligo", 300)
        assert analysis.arrival == PoissonArrival(mean_interval=30.0)
        assert analysis.token.service == "ligo"
        assert analysis.token.scopes == ("read:/frames", "write:/results/alice")
        assert analysis.token.audience == "https://frames.ligo.example"
        assert analysis.token_use is TokenUse.REREAD
        assert analysis.steps == (
            ReadStep(
                target=StepTarget(server="frames", path="/frames/{random_file}"),
                size=400_000_000,
            ),
            ComputeStep(compute=LognormalCompute(median=5400.0, sigma=0.4)),
            ReadStep(
                target=StepTarget(server="frames", path="/frames/{random_file}"),
                size=400_000_000,
            ),
            WriteStep(
                target=StepTarget(server="frames", path="/results/alice/{job}.h5"),
                size=20_000_000,
            ),
        )
        step = analysis.steps[3]
        assert isinstance(step, WriteStep)
        assert (step.server, step.path, str(step.target)) == (
            "frames",
            "/results/alice/{job}.h5",
            "frames:/results/alice/{job}.h5",
        )
        assert overreach.arrival == BurstArrival(at=3600.0)
        assert overreach.jobs == 5

    def test_faults(self, reference: Scenario) -> None:
        """Faults come in file order as their tagged classes."""
        assert reference.faults == (
            IssuerOutage(issuer="ligo", at=3 * 3600.0, duration=900.0),
            KeyRotation(issuer="ligo", at=5 * 3600.0, publish_ahead=0.0),
        )
        assert [fault.kind for fault in reference.faults] == ["issuer_outage", "key_rotation"]

    def test_checks(self, reference: Scenario) -> None:
        """Expectation lines are parsed into path, operator and number."""
        checks = reference.expect.checks
        assert [check.line for check in checks] == [
            "jobs.submitted == 305",
            "jobs.failed >= 5",
            "data.denied.insufficient_scope == 5",
            "data.accepted_after_exp == 0",
        ]
        assert (checks[1].path, checks[1].op, checks[1].value) == ("jobs.failed", ">=", 5)


class TestDefaults:
    """Keys a file leaves out take the documented defaults."""

    def test_defaults(self) -> None:
        """A minimal file gets the credmon, schedd, issuer, host and data server defaults."""
        scenario = parse_scenario(MINIMAL, file="minimal.toml")
        assert scenario.meta.seed == 0
        assert scenario.meta.epoch == DEFAULT_EPOCH
        assert scenario.meta.description == ""
        tm = scenario.token_manager
        assert (tm.renew_fraction, tm.scan_interval, tm.retry_backoff, tm.retry_backoff_max) == (
            0.5,
            60.0,
            30.0,
            600.0,
        )
        qm = scenario.queue_manager
        assert (qm.negotiation_interval, qm.credential_wait, qm.release_held_after) == (
            20.0,
            20.0,
            600.0,
        )
        (issuer,) = scenario.issuers
        assert issuer.profile is Profile.SCITOKENS
        assert issuer.algorithm is Algorithm.ES256
        assert issuer.access_token_lifetime == 1200.0
        assert issuer.refresh_token_lifetime == 30 * 86400.0
        assert (issuer.nbf_backdate, issuer.latency) == (0.0, 0.0)
        assert issuer.max_requests_per_second is None
        assert issuer.users[0].groups == ()
        assert issuer.users[0].scopes == ()
        (group,) = scenario.execute_hosts
        assert (group.count, group.slots, group.sandbox_refresh, group.clock_skew) == (
            1,
            1,
            300.0,
            0.0,
        )
        assert group.host_names == ("node-0",)
        (server,) = scenario.data_servers
        assert server.bandwidth == 1e9
        assert (server.leeway, server.key_refresh, server.key_expiry) == (0.0, 600.0, 345600.0)
        assert server.unknown_kid_refetch is None
        assert (server.token_cache, server.clock_skew) == (0.0, 0.0)
        assert dict(server.issuers) == {}
        assert server.files == ()
        (workload,) = scenario.workloads
        assert workload.token_use is TokenUse.REREAD
        assert workload.arrival == EveryArrival(interval=10.0)
        assert workload.steps == (ComputeStep(compute=UniformCompute(low=60.0, high=120.0)),)
        assert scenario.faults == ()
        assert scenario.expect.checks == ()

    def test_only_required_keys(self) -> None:
        """A scenario name, a duration and one issuer are all a file needs."""
        scenario = parse_scenario(
            '[scenario]\nname = "x"\nduration = "1s"\n'
            '[[issuers]]\nname = "i"\nurl = "https://i.example"\n',
            file="x.toml",
        )
        assert scenario.workloads == ()
        assert scenario.data_servers == ()
        assert scenario.execute_hosts == ()

    def test_never_and_toml_datetime(self) -> None:
        """unknown_kid_refetch "never" is None, and an unquoted TOML date-time is an epoch."""
        text = MINIMAL.replace(
            'duration = "1h"', 'duration = "1h"\nepoch = 2026-01-01T01:00:00+01:00'
        ).replace(
            'audience = "https://store.example"\n',
            'audience = "https://store.example"\nunknown_kid_refetch = "never"\n',
        )
        scenario = parse_scenario(text, file="x.toml")
        assert scenario.meta.epoch == DEFAULT_EPOCH
        assert scenario.data_servers[0].unknown_kid_refetch is None

    def test_negative_skew_allowed(self) -> None:
        """clock_skew may be negative, and a fixed compute time of "0s" is fine."""
        text = MINIMAL.replace(
            'name = "node"', 'name = "node"\ncount = 3\nclock_skew = "-2s"'
        ).replace(
            '{ kind = "uniform", low = "1m", high = "2m" }', '{ kind = "fixed", duration = "0s" }'
        )
        scenario = parse_scenario(text, file="x.toml")
        assert scenario.execute_hosts[0].clock_skew == -2.0
        assert scenario.workloads[0].steps == (ComputeStep(compute=FixedCompute(duration=0.0)),)


class TestOverrides:
    """--set key.path=value overrides, applied before validation."""

    def test_by_index(self) -> None:
        """Paths with [i] indexes set scalars at any depth, and values are read as TOML."""
        scenario = load_scenario(
            REFERENCE,
            overrides=[
                "scenario.seed=3",
                "token_manager.renew_fraction=0.3",
                "issuers[0].access_token_lifetime=10m",
                "workloads[1].jobs=10",
                "workloads[0].steps[1].compute.median=1h",
                'issuers[0].users[1].scopes=["read:/frames", "write:/results/bob"]',
                "expect.checks[0]=jobs.submitted == 310",
            ],
        )
        assert scenario.meta.seed == 3
        assert scenario.token_manager.renew_fraction == 0.3
        assert scenario.issuers[0].access_token_lifetime == 600.0
        assert scenario.workloads[1].jobs == 10
        assert scenario.workloads[0].steps[1] == ComputeStep(
            compute=LognormalCompute(median=3600.0, sigma=0.4)
        )
        assert scenario.issuers[0].users[1].scopes == ("read:/frames", "write:/results/bob")
        assert scenario.expect.checks[0].value == 310

    def test_by_name(self) -> None:
        """List items may be addressed by their name, and mapping keys set directly."""
        scenario = load_scenario(
            REFERENCE,
            overrides=[
                "issuers.ligo.access_token_lifetime=10m",
                "data_servers.frames.token_cache=0s",
                "data_servers.frames.unknown_kid_refetch=never",
                "data_servers.frames.issuers.ligo=/igwn",
                "execute_hosts.node.count=2",
                "issuers.ligo.users.bob.groups=[]",
                "workloads.overreach.token_use=copy-at-start",
            ],
        )
        assert scenario.issuers[0].access_token_lifetime == 600.0
        assert scenario.data_servers[0].token_cache == 0.0
        assert scenario.data_servers[0].unknown_kid_refetch is None
        assert dict(scenario.data_servers[0].issuers) == {"ligo": "/igwn"}
        assert scenario.host_names == ("node-0", "node-1")
        assert scenario.issuers[0].users[1].groups == ()
        assert scenario.workloads[1].token_use is TokenUse.COPY_AT_START

    def test_absent_table_is_created(self) -> None:
        """A key the file leaves out, in a table it leaves out, can still be set."""
        scenario = parse_scenario(
            MINIMAL,
            file="minimal.toml",
            overrides=["token_manager.scan_interval=30s", "issuers.vo.max_requests_per_second=5"],
        )
        assert scenario.token_manager.scan_interval == 30.0
        assert scenario.issuers[0].max_requests_per_second == 5.0

    def test_later_override_wins(self) -> None:
        """Overrides apply in order."""
        scenario = load_scenario(REFERENCE, overrides=["scenario.seed=1", "scenario.seed=2"])
        assert scenario.meta.seed == 2

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ("token_manager.renew_fractoin=0.3", "unknown key 'renew_fractoin'"),
            ("issuers.cms.url=https://x", "received 'cms'"),
            ("issuers[3].url=https://x", "expected an index below 1"),
            ("token_manager=3", "received a path to a table"),
            ("issuers=[]", "received a path to an array of tables"),
            ("scenario.name.x=1", "expected a path ending at scenario.name"),
            ("scenario.seed", "expected key.path=value"),
            ("scenario..seed=1", "expected a key path"),
            ("token_manager.renew_fraction={ a = 1 }", "expected a scalar or an array of scalars"),
        ],
    )
    def test_bad_path(self, override: str, message: str) -> None:
        """An override naming no valid key path is an error from "--set" naming the path."""
        with pytest.raises(ScenarioError) as info:
            load_scenario(REFERENCE, overrides=[override])
        assert info.value.file == "--set"
        assert info.value.key_path == override.partition("=")[0].strip()
        assert message in info.value.message

    @pytest.mark.parametrize(
        ("override", "key_path", "message"),
        [
            ("token_manager.renew_fraction=1.5", "token_manager.renew_fraction", "received 1.5"),
            ("issuers.ligo.latency=40", "issuers[0].latency", "received 40 (an integer)"),
            ("workloads[0].user=carol", "workloads[0].user", "received 'carol'"),
        ],
    )
    def test_overridden_value_is_validated(
        self, override: str, key_path: str, message: str
    ) -> None:
        """Every check applies to an overridden value; the error names --set and the index path."""
        with pytest.raises(ScenarioError) as info:
            load_scenario(REFERENCE, overrides=[override])
        assert (info.value.file, info.value.key_path) == ("--set", key_path)
        assert message in info.value.message


def _leaf_paths(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        out: list[str] = []
        for key, value in node.items():
            out += _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        return [path for i, item in enumerate(node) for path in _leaf_paths(item, f"{prefix}[{i}]")]
    return [prefix]


@pytest.mark.parametrize("junk", ["true", "-1", "0", "1e400", '"x"', '["x", 1]', "[]", "10m"])
def test_no_leaks(junk: str) -> None:
    """Setting any key of the reference file to junk gives a valid scenario or a ScenarioError."""
    raw = tomllib.loads(REFERENCE.read_text())
    paths = _leaf_paths(raw)
    assert len(paths) > 50
    unplaced: list[str] = []
    for path in paths:
        try:
            load_scenario(REFERENCE, overrides=[f"{path}={junk}"])
        except ScenarioError as exc:
            if not exc.key_path:
                unplaced.append(path)
    assert unplaced == []


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file or one that is not UTF-8 is a ScenarioError naming the file."""
    with pytest.raises(ScenarioError, match="expected a readable scenario file") as info:
        load_scenario(tmp_path / "missing.toml")
    assert info.value.file == str(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[scenario]\nname = "caf\xe9"\n')
    with pytest.raises(ScenarioError, match="expected UTF-8 text, received byte 0xe9"):
        load_scenario(latin)
