"""The bundled scenarios in scenarios/: each runs, its [expect] checks hold, and the per-actor and
per-workload claims that docs/scenarios.md makes (which summary.json cannot show) hold in the
events."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

from scitokens_batch.metrics import Event
from scitokens_batch.scenario import RunResult, check_scenario, load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
DOCS = ROOT / "docs" / "scenarios.md"
BUNDLED = sorted(p.name for p in SCENARIOS.glob("*.toml"))
#: Scenarios that only run live (real commands): tests/live runs them.
LIVE_ONLY = {"live-smoke.toml"}
VIRTUAL = [n for n in BUNDLED if n not in LIVE_ONLY]


@functools.cache
def _run(name: str, *overrides: str) -> RunResult:
    """Run a bundled scenario once per (name, overrides) for the whole module, keeping events."""
    return run_virtual(load_scenario(SCENARIOS / name, overrides=overrides), keep_events=True)


def _events(result: RunResult) -> list[Event]:
    return result.summary["_events"]  # type: ignore[no-any-return]


def _workloads(events: Iterable[Event]) -> dict[int, str]:
    """job id -> workload name, from the submit events."""
    return {e.fields["job"]: e.fields["workload"] for e in events if e.kind == "submit"}


def _epoch(name: str) -> float:
    return load_scenario(SCENARIOS / name).meta.epoch


def _failed_lines(result: RunResult) -> set[str]:
    return {c.line for c in result.checks if not c.passed}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scitokens_batch", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


# -- every bundled scenario -------------------------------------------------------------------


def test_the_bundled_set() -> None:
    """The scenarios of docs/scenarios.md and the reference file are all there."""
    assert set(BUNDLED) >= {
        "reference.toml",
        "ligo-day.toml",
        "issuer-outage.toml",
        "key-rotation.toml",
        "clock-skew.toml",
        "credmon-crash.toml",
        "long-transfer.toml",
        "copy-once-antipattern.toml",
        "live-smoke.toml",
        "rucio-fts.toml",
    }


@pytest.mark.parametrize("name", sorted(LIVE_ONLY))
def test_live_only_scenarios_refuse_virtual_time(name: str) -> None:
    """A scenario with exec steps names the step and asks for --live in virtual time (exit 2)."""
    proc = _cli("run", str(SCENARIOS / name))
    assert proc.returncode == 2
    assert "steps[1].exec" in proc.stderr and "--live" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", VIRTUAL)
def test_expectations_hold(name: str) -> None:
    """Every [expect] check of every bundled scenario holds in a virtual-time run."""
    result = _run(name)
    failed = [f"{c.line} (actual {c.actual}, {c.error})" for c in result.checks if not c.passed]
    assert result.checks, f"{name} has no [expect] checks"
    assert result.passed, f"{name}: {failed}"


@pytest.mark.parametrize("name", BUNDLED)
def test_check_scenario_is_clean(name: str) -> None:
    """The wiring-level validation (what `scitokens-batch check` runs) accepts every scenario."""
    check_scenario(load_scenario(SCENARIOS / name))


@pytest.mark.parametrize("name", [n for n in BUNDLED if n != "reference.toml"])
def test_documented(name: str) -> None:
    """Each bundled scenario has its own section in docs/scenarios.md."""
    assert f"## `{name}`" in DOCS.read_text(encoding="utf-8")


# -- ligo-day ---------------------------------------------------------------------------------


class TestLigoDay:
    """A day of the pool: both users' jobs finish, both endpoints serve, the outage is absorbed."""

    def test_both_users_complete_and_write(self) -> None:
        """Every job of both workloads completes or is still running, and both write results."""
        ev = _events(_run("ligo-day.toml"))
        wl = _workloads(ev)
        ends = Counter(
            (wl[e.fields["job"]], e.fields["status"]) for e in ev if e.kind == "terminated"
        )
        assert ends[("cbc-search", "failed")] == ends[("burst-search", "failed")] == 0
        assert ends[("burst-search", "completed")] > 1000
        assert ends[("cbc-search", "completed")] > 2000
        writes = {
            e.fields["path"].split("/")[3] for e in ev if e.kind == "use" and e.actor == "results"
        }
        assert writes == {"alice", "bob"}
        assert {e.actor for e in ev if e.kind == "use"} == {"frames", "results"}

    def test_refresh_failures_only_during_the_outage(self) -> None:
        """The four failed refreshes fall inside the 13:00-13:02 outage; renewal resumes after."""
        ev = _events(_run("ligo-day.toml"))
        failed = [e.t for e in ev if e.kind == "refresh_failed"]
        assert len(failed) == 4 and all(46800 <= t < 46920 for t in failed)
        assert any(e.kind == "refresh" and 46920 <= e.t < 47000 for e in ev)


# -- issuer-outage ----------------------------------------------------------------------------


class TestIssuerOutage:
    """Two VOs: the short outage is tolerated, the long one expires every job's token."""

    def test_only_the_long_vo_suffers(self) -> None:
        """Every refusal is se-long's, for an expired token of a job of the "long" workload."""
        ev = _events(_run("issuer-outage.toml"))
        wl = _workloads(ev)
        rejects = [e for e in ev if e.kind == "reject"]
        assert len(rejects) == 8
        assert {(e.actor, e.fields["reason"], wl[e.fields["job"]]) for e in rejects} == {
            ("se-long", "expired", "long")
        }
        assert all(e.fields["headroom_s"] <= 0 for e in rejects)
        failed = {
            wl[e.fields["job"]]
            for e in ev
            if e.kind == "terminated" and e.fields["status"] == "failed"
        }
        assert failed == {"long"}

    def test_retry_schedule(self) -> None:
        """The refresh succeeds on the retry 210 s (short) and 930 s (long) after the failed scan."""
        ev = _events(_run("issuer-outage.toml"))
        renewed: dict[str, float] = {}
        for e in ev:
            if e.kind == "refresh" and not e.fields["initial"] and e.t > 3960:
                renewed.setdefault(e.fields["service"], e.t)
        assert renewed["short"] == pytest.approx(3960 + 210, abs=0.1)
        assert renewed["long"] == pytest.approx(3960 + 930, abs=0.1)

    def test_short_vo_margin(self) -> None:
        """vo-short's least headroom respects the bound 540 - 210 - 300 = 30 s of the docs."""
        ev = _events(_run("issuer-outage.toml"))
        short = [e.fields["headroom_s"] for e in ev if e.kind == "use" and e.actor == "se-short"]
        assert min(short) >= 30 - 0.1

    @pytest.mark.parametrize(
        ("duration", "long_failed"),
        [("211s", 0), ("452s", 8)],
    )
    def test_tolerance_boundary(self, duration: str, long_failed: int) -> None:
        """The derived edges: 211 s is still tolerated, 452 s fails every job of the VO."""
        result = _run("issuer-outage.toml", f"faults[1].duration={duration}")
        ev = _events(result)
        wl = _workloads(ev)
        failed = Counter(
            wl[e.fields["job"]]
            for e in ev
            if e.kind == "terminated" and e.fields["status"] == "failed"
        )
        assert failed["long"] == long_failed
        assert failed["short"] == 0


# -- key-rotation -----------------------------------------------------------------------------


class TestKeyRotation:
    """Only (no publish ahead, no refetch on unknown kid) refuses tokens; the others use the new key."""

    def test_unknown_key_only_for_now_never(self) -> None:
        """Every unknown_key refusal is the "never" server's, for a vo-now token of now-never."""
        ev = _events(_run("key-rotation.toml"))
        wl = _workloads(ev)
        rejects = [e for e in ev if e.kind == "reject"]
        assert len(rejects) == 6
        assert {(e.actor, e.fields["reason"], wl[e.fields["job"]]) for e in rejects} == {
            ("never", "unknown_key", "now-never")
        }

    def test_other_combinations_accept_the_new_key(self) -> None:
        """The three other combinations each accept tokens signed with their issuer's new key."""
        ev = _events(_run("key-rotation.toml"))
        wl = _workloads(ev)
        kid = {e.fields["jti"]: e.fields["kid"] for e in ev if e.kind == "mint"}
        new_key_uses = Counter(
            (wl[e.fields["job"]], e.actor)
            for e in ev
            if e.kind == "use" and kid[e.fields["jti"]].endswith("-2")
        )
        assert new_key_uses[("now-refetch", "refetch")] > 0
        assert new_key_uses[("ahead-never", "never")] > 0
        assert new_key_uses[("ahead-refetch", "refetch")] > 0
        assert new_key_uses[("now-never", "never")] == 0

    def test_refetch_on_unknown_kid(self) -> None:
        """After the rotation only "refetch" fetches because of an unknown kid, and only for vo-now."""
        ev = _events(_run("key-rotation.toml"))
        unknown = {
            (e.actor, e.fields["issuer"])
            for e in ev
            if e.kind == "jwks_fetch" and e.t > 1979 and e.fields["unknown_kid"]
        }
        assert unknown == {("refetch", "https://issuer.now.example/vo")}


# -- clock-skew -------------------------------------------------------------------------------


class TestClockSkew:
    """Skewed servers refuse valid tokens without leeway; with leeway a slow one accepts late ones."""

    def test_refusals_by_server(self) -> None:
        """Server "ahead" refuses only valid tokens (as expired), "behind" only fresh ones, the others none."""
        ev = _events(_run("clock-skew.toml"))
        by_server: defaultdict[str, list[Event]] = defaultdict(list)
        for e in ev:
            if e.kind == "reject":
                by_server[e.actor].append(e)
        assert set(by_server) == {"ahead", "behind"}
        assert all(
            e.fields["reason"] == "expired" and 0 < e.fields["headroom_s"] < 360
            for e in by_server["ahead"]
        )
        assert all(e.fields["reason"] == "not_yet_valid" for e in by_server["behind"])
        assert len(by_server["ahead"]) == 4 and len(by_server["behind"]) == 6

    def test_late_acceptance_is_bounded_by_leeway_minus_skew(self) -> None:
        """Every expired token accepted is stale's, at behind-leeway, less than 180 + 120 s late."""
        ev = _events(_run("clock-skew.toml"))
        wl = _workloads(ev)
        late = [e for e in ev if e.kind == "use" and e.fields["headroom_s"] <= 0]
        assert len(late) == 3
        assert {(e.actor, wl[e.fields["job"]]) for e in late} == {("behind-leeway", "stale")}
        assert all(-300 < e.fields["headroom_s"] <= 0 for e in late)

    def test_nbf_backdate_does_not_rescue_a_slow_server(self) -> None:
        """Back-dating nbf by 10 min changes nothing: iat, not back-dated, is in the future too."""
        result = _run("clock-skew.toml", "issuers.ligo.nbf_backdate=10m")
        assert result.summary["data"]["denied"]["not_yet_valid"] == 6
        details = {
            e.fields["detail"].split(" ")[0]
            for e in _events(result)
            if e.kind == "reject" and e.actor == "behind"
        }
        assert details == {"iat"}


# -- credmon-crash ----------------------------------------------------------------------------


class TestCredmonCrash:
    """A crash with the store kept is absorbed; with the store lost it is fatal."""

    def test_holds_only_during_the_crash_and_prompt_renewal(self) -> None:
        """Holds (code 4) come only while the credmon is down; it renews as soon as it is back."""
        ev = _events(_run("credmon-crash.toml"))
        holds = [e for e in ev if e.kind == "held"]
        assert holds and all(e.fields["code"] == 4 and 3959 <= e.t <= 4139 + 20 for e in holds)
        renewals = [e.t for e in ev if e.kind == "refresh" and not e.fields["initial"]]
        assert any(4139 <= t < 4140 for t in renewals)

    def test_lost_state_is_fatal(self) -> None:
        """With lose_state=true no token is renewed after the crash, and jobs fail or stay held."""
        result = _run("credmon-crash.toml", "faults[0].lose_state=true")
        ev = _events(result)
        assert not result.passed
        assert _failed_lines(result) == {
            "jobs.completed == 120",
            "jobs.failed == 0",
            "data.expired_at_use == 0",
            "jobs.held == 0",
        }
        assert not any(e.kind == "refresh" and e.t > 3959 for e in ev)
        rejects = [e for e in ev if e.kind == "reject"]
        assert rejects and all(
            e.fields["reason"] == "expired" and e.fields["headroom_s"] <= 0 for e in rejects
        )
        assert result.summary["data"]["expired_at_use"] == result.summary["jobs"]["failed"] > 0
        assert result.summary["jobs"]["held"] > 0


# -- long-transfer ----------------------------------------------------------------------------


class TestLongTransfer:
    """Authorization happens once, at the start of a transfer."""

    def test_transfers_outlive_their_tokens(self) -> None:
        """Each bulk read ends after the exp of the token it was authorized with, and the job completes."""
        ev = _events(_run("long-transfer.toml"))
        epoch = _epoch("long-transfer.toml")
        reads = {e.fields["job"]: e for e in ev if e.kind == "use" and e.fields["op"] == "read"}
        writes = {e.fields["job"]: e for e in ev if e.kind == "use" and e.fields["op"] == "create"}
        assert len(reads) == len(writes) == 6
        for job, read in reads.items():
            read_end = writes[job].t - 600  # then 10 minutes of compute, then the write
            assert read_end - read.t >= 1500
            assert epoch + read_end > read.fields["exp"] + 600

    def test_rechecking_mid_transfer_would_fail(self) -> None:
        """The counterfactual (the same volume re-checked against the start token) fails every such job."""
        result = _run("long-transfer.toml", "workloads.rechecked.jobs=3")
        ev = _events(result)
        wl = _workloads(ev)
        ends = Counter(
            (wl[e.fields["job"]], e.fields["status"]) for e in ev if e.kind == "terminated"
        )
        assert ends == Counter({("bulk", "completed"): 6, ("rechecked", "failed"): 3})
        assert result.summary["data"]["denied"]["expired"] == 3


# -- copy-once-antipattern --------------------------------------------------------------------


class TestCopyOnce:
    """Copy-at-start fails long jobs only; reread never presents an expired token."""

    def test_expired_only_for_copy_at_start_long_jobs(self) -> None:
        """Every refusal is a naive-long job presenting its expired start token, once per job."""
        ev = _events(_run("copy-once-antipattern.toml"))
        wl = _workloads(ev)
        rejects = [e for e in ev if e.kind == "reject"]
        assert Counter(wl[e.fields["job"]] for e in rejects) == Counter({"naive-long": 16})
        assert len({e.fields["job"] for e in rejects}) == 16
        assert all(e.fields["reason"] == "expired" and e.fields["headroom_s"] <= 0 for e in rejects)

    def test_reread_headroom_bound(self) -> None:
        """Reread jobs never present less than L(1-f) - scan - sandbox_refresh = 240 s (less latency)."""
        ev = _events(_run("copy-once-antipattern.toml"))
        wl = _workloads(ev)
        careful = [
            e.fields["headroom_s"]
            for e in ev
            if e.kind == "use" and wl[e.fields["job"]] == "careful"
        ]
        assert min(careful) >= 240 - 0.1


# -- rucio-fts ----------------------------------------------------------------------------------


def _fts(events: Iterable[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind and e.actor == "fts"]


class TestRucioFts:
    """The dataset copy outlives its 1-hour tokens; the outage delays, the lost single-use refresh
    token fails the files not yet started (L3, L6, L7, P12, P13)."""

    def test_refresh_schedule(self) -> None:
        """L6/L7: both tokens are exchanged at 0 s, fail to refresh at 3300, 3330 and 3390 s (issuer
        down), refresh at 3510 and 6810 s, and are refused (invalid_grant) at 10110 s."""
        ev = _events(_run("rucio-fts.toml"))
        per_token: defaultdict[str, list[tuple[float, str]]] = defaultdict(list)
        for e in ev:
            if e.actor == "fts" and e.kind in ("exchange", "refresh", "refresh_failed"):
                per_token[e.fields["token"]].append((e.t, e.kind))
        assert len(per_token) == 2
        expected = [
            (0.0, "exchange"),
            (3300.0, "refresh_failed"),
            (3330.0, "refresh_failed"),
            (3390.0, "refresh_failed"),
            (3510.0, "refresh"),
            (6810.0, "refresh"),
            (10110.0, "refresh_failed"),
        ]
        assert all(times == expected for times in per_token.values())
        final = [e for e in _fts(ev, "refresh_failed") if e.fields["retry_in_s"] is None]
        assert all("invalid_grant" in e.fields["error"] for e in final)

    def test_copies_in_rounds(self) -> None:
        """Ten copies of 500 s at a time: rounds start every 500 s, the one due at 3500 s waits for
        the refreshed tokens (3510 s); the 90 files not started by 10110 s fail then, saying
        that the refresh token is gone (P12); the round started at 10010 s completes."""
        ev = _events(_run("rucio-fts.toml"))
        starts = Counter(e.t for e in _fts(ev, "transfer_state") if e.fields["state"] == "active")
        rounds = [500.0 * k for k in range(7)] + [3510.0 + 500.0 * k for k in range(14)]
        assert starts == Counter(dict.fromkeys(rounds, 10))
        failed = _fts(ev, "transfer_failed")
        assert {e.t for e in failed} == {10110.0} and len(failed) == 90
        assert all("the refresh token is gone" in e.fields["reason"] for e in failed)
        assert all(e.fields["attempts"] == 0 for e in failed)
        assert max(e.t for e in _fts(ev, "transfer_done")) == 10510.0

    def test_one_token_pair_for_the_dataset(self) -> None:
        """L3: Rucio asks for 3 tokens (fts, read, modify+read) for 3 jobs of 100 files; every
        copy presents one of the 2 tokens FTS holds at that moment (the exchanged or a refreshed
        one, each for its own server's audience, P13: FTS's 1-hour lifetime)."""
        ev = _events(_run("rucio-fts.toml"))
        minted = {e.fields["jti"]: e.fields for e in ev if e.kind == "mint"}
        rucio = [f for f in minted.values() if f["client"] == "rucio"]
        assert sorted(f["scope"] for f in rucio) == [
            "fts",
            "storage.modify:/datadisk/data24/raw storage.read:/datadisk/data24/raw",
            "storage.read:/datadisk/data24/raw",
        ]
        assert [e.fields["files"] for e in ev if e.kind == "rule_submitted"] == [100, 100, 100]
        used = {e.fields["jti"] for e in ev if e.kind == "use"}
        assert {minted[j]["client"] for j in used} == {"fts"}
        assert {minted[j]["exp"] - minted[j]["iat"] for j in used} == {3600}
        by_server = {(e.actor, minted[e.fields["jti"]]["aud"]) for e in ev if e.kind == "use"}
        assert by_server == {
            ("cern", "https://eosatlas.cern.example"),
            ("bnl", "https://dcache.bnl.example"),
        }

    def test_grace_saves_the_dataset(self) -> None:
        """P12's advice (E4 grace): with a one-day grace the replayed refresh token is accepted,
        all 300 files arrive by 15010 s and the tokens are renewed 4 times each."""
        result = _run("rucio-fts.toml", "issuers.wlcg.refresh_token_grace=1d")
        figures = result.summary
        assert figures["transfers"] == {"done": 300, "failed": 0}
        assert figures["tokens"]["renewed"] == 8 and figures["tokens"]["refresh_failures"] == 6
        assert max(e.t for e in _fts(_events(result), "transfer_done")) == 15010.0

    def test_tokens_lost_altogether(self) -> None:
        """P12: with nothing restored (restore = "none") the same 90 files fail at 10110 s without
        a request to the issuer."""
        result = _run("rucio-fts.toml", "faults[1].restore=none")
        assert _failed_lines(result) == {"issuer.errors == 2"}
        reasons = {e.fields["reason"] for e in _fts(_events(result), "transfer_failed")}
        assert all("refresh token lost" in r for r in reasons)


# -- the command line -------------------------------------------------------------------------


def test_cli_run_writes_summary(tmp_path: Path) -> None:
    """`scitokens-batch run --out DIR` exits 0 and writes summary.json for a passing scenario."""
    out = tmp_path / "out"
    proc = _cli("run", str(SCENARIOS / "long-transfer.toml"), "--out", str(out))
    if (
        proc.returncode != 0
        and "ImportError" in proc.stderr
        and ("JobTable" in proc.stderr or "ReportBuilder" in proc.stderr)
    ):
        pytest.skip("--out needs metrics.JobTable/ReportBuilder, not there yet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["scenario"] == "long-transfer"
    assert all(x["passed"] for x in summary["expectations"])


def test_cli_failing_check_exits_1() -> None:
    """A scenario whose check fails (here via --set) exits 1 and names the failing line."""
    proc = _cli("run", str(SCENARIOS / "long-transfer.toml"), "--set", "workloads.rechecked.jobs=3")
    assert proc.returncode == 1, proc.stderr
    assert "FAILED: jobs.failed == 0 (actual 3)" in proc.stdout


def test_cli_check_is_clean() -> None:
    """`scitokens-batch check` accepts a bundled scenario with exit code 0."""
    proc = _cli("check", str(SCENARIOS / "issuer-outage.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_cli_check_counts_rules() -> None:
    """`scitokens-batch check` names the replication rules and their files (L5) when there are some."""
    proc = _cli("check", str(SCENARIOS / "rucio-fts.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "1 rule(s) (300 file(s))" in proc.stdout
