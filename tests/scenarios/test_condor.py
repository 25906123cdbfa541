"""HTCondor-native workloads: submit descriptions in (htcondor2), ClassAd matchmaking out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scitokens_batch.errors import ScenarioError
from scitokens_batch.scenario import load_scenario, run_virtual
from scitokens_batch.scenario._submit import parse_submit

ROOT = Path(__file__).resolve().parents[2]
CONDOR = Path(__file__).resolve().parent / "condor"
POOL = CONDOR / "pool.toml"

_TOKEN = (
    "use_oauth_services = ligo\n"
    "ligo_oauth_permissions = read:/frames\n"
    "ligo_oauth_resource = https://frames.ligo.example\n"
)


def _pool(tmp_path: Path, submit: str, **replace: str) -> Path:
    """A copy of pool.toml whose submit description is ``submit``."""
    (tmp_path / "analysis.sub").write_text(submit)
    text = POOL.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "pool.toml").write_text(text)
    return tmp_path / "pool.toml"


class TestSubmitDescription:
    def test_procs_items_and_macros(self) -> None:
        """`queue 2 frame in (H1, L1, V1)` gives 6 procs, item and $(Process) expanded."""
        spec = load_scenario(POOL)
        w = spec.workloads[0]
        assert w.jobs == 6 and len(w.submitted) == 6
        assert [j.argv[2] for j in w.submitted] == ["H1", "H1", "L1", "L1", "V1", "V1"]
        assert w.submitted[5].argv == ("analyze.sh", "--frame", "V1", "--proc", "5")
        job = w.submitted[0]
        assert (job.request_cpus, job.request_memory) == (1, 2048)
        assert job.rank == "Memory" and "HasSciTokens" in job.requirements
        assert job.attributes == (("ProjectName", '"ligo-o4"'),)
        assert w.token.service == "ligo"
        assert w.token.scopes == ("read:/frames", "write:/results/alice")
        assert w.token.audience == "https://frames.ligo.example"

    def test_handles_name_the_sandbox_file(self) -> None:
        """A handle makes the credential `<svc>_<handle>` (the sandbox file `<svc>_<handle>.use`)."""
        desc = parse_submit(
            "use_oauth_services = ligo\n"
            "ligo_oauth_permissions_reader = read:/frames\n"
            "ligo_oauth_resource_reader = https://a.example\n"
            "ligo_oauth_permissions_writer = write:/out, read:/out\n"
            "ligo_oauth_resource_writer = https://b.example\n"
            "queue 3\n",
            file="x.sub",
        )
        tokens = desc.jobs[2].tokens
        assert [t.name for t in tokens] == ["ligo_reader", "ligo_writer"]
        assert tokens[1].scopes == ("write:/out", "read:/out")
        assert tokens[1].audience == "https://b.example"

    def test_queue_from_inline_items(self) -> None:
        """`queue a,b from (...)` reads multi-column item data into macros."""
        desc = parse_submit(
            "executable = run\narguments = $(a)-$(b)\n"
            + _TOKEN
            + "queue a,b from (\n x 1\n y 2\n)\n",
            file="x.sub",
        )
        assert [j.argv for j in desc.jobs] == [("run", "x-1"), ("run", "y-2")]

    def test_memory_units(self) -> None:
        """request_memory takes HTCondor units: a bare number is MB, and K/M/G/T with optional B."""
        for text, mb in (("512", 512), ("4 GB", 4096), ("2G", 2048), ("1T", 1048576)):
            desc = parse_submit(f"request_memory = {text}\n" + _TOKEN + "queue\n", file="x.sub")
            assert desc.jobs[0].request_memory == mb

    def test_different_permissions_for_one_handle_refused(self) -> None:
        """HTCondor's rule: one user's jobs asking different permissions for one service and
        handle are refused at submission, naming both jobs."""
        with pytest.raises(ScenarioError) as err:
            parse_submit(
                "use_oauth_services = ligo\n"
                "ligo_oauth_permissions = read:/frames/$(item)\n"
                "ligo_oauth_resource = https://a.example\n"
                "queue item in (H1, L1)\n",
                file="x.sub",
            )
        assert "jobs 1.0 and 1.1" in str(err.value) and "read:/frames/H1" in str(err.value)
        assert "read:/frames/L1" in str(err.value)

    @pytest.mark.parametrize(
        ("text", "where", "fragment"),
        [
            ("queue 2\nqueue 3\n", "queue", "exactly one queue statement, received 2"),
            ("foo = 1\n", "queue", "exactly one queue statement, received 0"),
            ("queue foo in\n", "line 1 (queue)", "HTCondor refused it"),
            ("queue 0\n", "line 1 (queue)", "expected at least one job"),
            (
                "use_oauth_services = ligo\nligo_oauth_permissions = read:frames\n"
                "ligo_oauth_resource = https://a.example\nqueue\n",
                "line 2 (ligo_oauth_permissions)",
                "expected a valid scope, received 'read:frames'",
            ),
            ("queue x in ()\n", "line 1 (queue)", "with 0 items"),
            (
                "request_cpus = two\n" + _TOKEN + "queue\n",
                "line 1 (request_cpus)",
                "received 'two'",
            ),
            ("request_memory = lots\n" + _TOKEN + "queue\n", "line 1 (request_memory)", "'lots'"),
            ("requirements = (a && \n" + _TOKEN + "queue\n", "line 1 (requirements)", "ClassAd"),
            ("+Foo = )(\n" + _TOKEN + "queue\n", "line 1 (+Foo)", "ClassAd expression"),
            (
                "use_oauth_services = ligo\nqueue\n",
                "line 1 (use_oauth_services)",
                "expected ligo_oauth_permissions",
            ),
            (
                "use_oauth_services = ligo\nligo_oauth_permissions = read:/x\nqueue\n",
                "ligo_oauth_resource",
                "the token audience",
            ),
        ],
    )
    def test_bad_descriptions(self, text: str, where: str, fragment: str) -> None:
        """A bad submit description: the error names the file, the line or key, and what was
        expected and received."""
        with pytest.raises(ScenarioError) as err:
            parse_submit(text, file="bad.sub")
        assert err.value.file == "bad.sub" and err.value.key_path == where
        assert fragment in err.value.message

    def test_toml_jobs_must_agree(self, tmp_path: Path) -> None:
        """A TOML `jobs` that differs from the procs the description queues is refused."""
        path = _pool(
            tmp_path,
            (CONDOR / "analysis.sub").read_text(),
            **{'submit = "analysis.sub"': 'submit = "analysis.sub"\njobs = 5'},
        )
        with pytest.raises(ScenarioError, match=r"expected 6 \(the procs"):
            load_scenario(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A submit description that is not there is named, with the key that names it."""
        path = _pool(tmp_path, "", **{'submit = "analysis.sub"': 'submit = "nope.sub"'})
        with pytest.raises(ScenarioError) as err:
            load_scenario(path)
        assert err.value.key_path == "workloads[0].submit" and "nope.sub" in err.value.message

    def test_cli_exit_2_one_line(self, tmp_path: Path) -> None:
        """`run` on a scenario whose submit file is bad exits 2 with one line, no traceback."""
        path = _pool(tmp_path, "request_cpus = two\n" + _TOKEN + "queue\n")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "scitokens_batch",
                "run",
                str(path),
                "--out",
                str(tmp_path / "o"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert "analysis.sub: line 1 (request_cpus)" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()


class TestMatchmaking:
    def test_requirements_and_rank(self, tmp_path: Path) -> None:
        """Jobs run only where requirements match, best rank (most Memory) first."""
        result = run_virtual(load_scenario(POOL), out=tmp_path, plots=False)
        assert result.summary["jobs"]["completed"] == 6
        assert result.summary["jobs"]["unmatched"] == 0
        hosts = [
            json.loads(line)["host"]
            for line in (tmp_path / "events.jsonl").read_text().splitlines()
            if '"kind":"execute"' in line
        ]
        assert not any(h.startswith("el7") for h in hosts)  # HasSciTokens false there
        assert sorted(hosts).count("big-0") == 4  # rank = Memory: the 64 GB host fills first
        assert len(hosts) == 6

    def test_never_matching_jobs_stay_idle(self, tmp_path: Path) -> None:
        """Jobs no machine ad can match stay idle and are counted as jobs.unmatched."""
        sub = (
            (CONDOR / "analysis.sub")
            .read_text()
            .replace('OpSysAndVer == "AlmaLinux9"', 'OpSysAndVer == "Solaris"')
        )
        result = run_virtual(load_scenario(_pool(tmp_path, sub)), plots=False)
        jobs = result.summary["jobs"]
        assert (jobs["unmatched"], jobs["idle"], jobs["completed"]) == (6, 6, 0)

    def test_resources_are_matched(self, tmp_path: Path) -> None:
        """request_memory above every host's Memory matches nothing; within one host's, only it."""
        sub = (CONDOR / "analysis.sub").read_text().replace("2 GB", "32 GB")
        result = run_virtual(load_scenario(_pool(tmp_path, sub)), out=tmp_path / "o", plots=False)
        assert result.summary["jobs"]["completed"] == 6
        hosts = {
            json.loads(line)["host"]
            for line in (tmp_path / "o" / "events.jsonl").read_text().splitlines()
            if '"kind":"execute"' in line
        }
        assert hosts == {"big-0"}
        sub = sub.replace("32 GB", "128 GB")
        result = run_virtual(load_scenario(_pool(tmp_path, sub)), plots=False)
        assert result.summary["jobs"]["unmatched"] == 6

    def test_machine_start_expression(self, tmp_path: Path) -> None:
        """A machine's own START expression is evaluated against the job (symmetric match)."""
        path = _pool(
            tmp_path,
            (CONDOR / "analysis.sub").read_text(),
            **{
                "Memory = 65536 }": 'Memory = 65536, START = "TARGET.ProjectName =!= \\"ligo-o4\\"" }'
            },
        )
        result = run_virtual(load_scenario(path), out=tmp_path / "o", plots=False)
        text = (tmp_path / "o" / "events.jsonl").read_text()
        assert result.summary["jobs"]["completed"] == 6 and "big-0" not in text

    def test_autoclusters_evaluate_once(self, tmp_path: Path) -> None:
        """Identical job ads share one autocluster: 6 procs cost one evaluation per host."""
        from scitokens_batch.actors import queue_manager as qm

        calls: list[str] = []
        real = qm._match_rank

        def counting(job: object, machine: object) -> float | None:
            calls.append("x")
            return real(job, machine)  # type: ignore[arg-type]

        qm._match_rank = counting  # type: ignore[assignment]
        try:
            run_virtual(load_scenario(POOL), plots=False)
        finally:
            qm._match_rank = real  # type: ignore[assignment]
        assert len(calls) == 5  # 5 hosts x 1 autocluster (the 6 procs differ only in argv)


def test_compute_shorthand() -> None:
    """`compute = "1h"` is read as `{ kind = "fixed", duration = "1h" }`."""
    step = load_scenario(POOL).workloads[0].steps[1]
    assert step.compute.duration == 3600.0  # type: ignore[union-attr]


def test_two_workloads_one_handle_different_permissions(tmp_path: Path) -> None:
    """Two submit descriptions of one user asking different permissions for one service and
    handle are refused, naming both jobs."""
    path = _pool(tmp_path, (CONDOR / "analysis.sub").read_text())
    (tmp_path / "other.sub").write_text(
        "use_oauth_services = ligo\n"
        "ligo_oauth_permissions = read:/frames\n"
        "ligo_oauth_resource = https://frames.ligo.example\n"
        "queue\n"
    )
    text = path.read_text()
    second = text[text.index("[[workloads]]") :].replace('"analysis"', '"other"')
    path.write_text(text + "\n" + second.replace("analysis.sub", "other.sub"))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert "workloads[0] (analysis.sub job 1.0)" in message
    assert "workloads[1] (other.sub job 2.0)" in message and "'ligo'" in message


class TestLoadTimeAttacks:
    """A scenario from someone else is loaded (`check`, `run`, a study worker): its submit
    description must not run commands, read the environment or draw randomness."""

    @pytest.mark.parametrize(
        "line",
        [
            "include : touch {marker} |",
            "INCLUDE : touch {marker} |",
            "include \\\n  : touch {marker} |",
            "include command : touch {marker}",
        ],
    )
    def test_include_command_never_runs(self, tmp_path: Path, line: str) -> None:
        """`include : cmd |` (htcondor2.Submit runs it while parsing) is refused before
        parsing: `check` exits 2 naming the line, and the command's file never appears."""
        marker = tmp_path / "pwned"
        path = _pool(tmp_path, line.format(marker=marker) + "\n" + _TOKEN + "queue\n")
        r = subprocess.run(
            [sys.executable, "-m", "scitokens_batch", "check", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert "analysis.sub: line 1: expected no include statements" in r.stderr
        assert "Traceback" not in r.stderr
        assert not marker.exists()

    def test_queue_from_command_never_runs(self, tmp_path: Path) -> None:
        """`queue x from cmd |` is refused and the command never runs."""
        marker = tmp_path / "pwned"
        with pytest.raises(ScenarioError, match="queue item data from a command"):
            parse_submit(_TOKEN + f"queue x from touch {marker} |\n", file="x.sub")
        assert not marker.exists()

    def test_env_never_reaches_outputs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`$ENV(NAME)` is refused: the value of an environment variable never becomes a scope
        or audience (outputs), nor appears in the error."""
        monkeypatch.setenv("CONDOR_TEST_SECRET", "s3cr3t-value")
        with pytest.raises(ScenarioError) as err:
            parse_submit(
                "use_oauth_services = ligo\n"
                "ligo_oauth_permissions = read:/frames\n"
                "ligo_oauth_resource = https://$ENV(CONDOR_TEST_SECRET).example\n"
                "queue\n",
                file="x.sub",
            )
        assert err.value.key_path == "line 3" and "$ENV()" in err.value.message
        assert "s3cr3t-value" not in str(err.value)

    def test_random_macros_refused(self) -> None:
        """$RANDOM_INTEGER() would make two runs of one seed differ: refused."""
        with pytest.raises(ScenarioError, match="byte-identical"):
            parse_submit("arguments = $RANDOM_INTEGER(1, 9)\n" + _TOKEN + "queue\n", file="x.sub")


def test_queue_from_file_relative_to_the_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`queue frame from frames.txt` reads the file next to the submit description, whatever
    the current directory, as condor_submit run there would."""
    (tmp_path / "frames.txt").write_text("H1\nL1\n")
    sub = (
        (CONDOR / "analysis.sub")
        .read_text()
        .replace("queue 2 frame in (H1, L1, V1)", "queue frame from frames.txt")
    )
    path = _pool(tmp_path, sub)
    monkeypatch.chdir(ROOT)
    w = load_scenario(path).workloads[0]
    assert [j.argv[2] for j in w.submitted] == ["H1", "L1"] and w.jobs == 2


def test_live_runs_the_executable_in_place_of_compute(tmp_path: Path) -> None:
    """In live mode the executable (resolved next to the submit file when it is there) is the
    job's exec step in place of its compute step; virtual time keeps the compute step."""
    from scitokens_batch.protocol import ComputeStep, ExecStep
    from scitokens_batch.scenario._world import submissions

    path = _pool(tmp_path, (CONDOR / "analysis.sub").read_text())
    (tmp_path / "analyze.sh").write_text("#!/bin/sh\nexit 0\n")
    spec = load_scenario(path)
    live = submissions(spec, seed=1, live=True)
    virtual = submissions(spec, seed=1)
    kinds = [type(s).__name__ for s in live[0].program.steps]
    assert kinds == ["AccessStep", "ExecStep", "AccessStep"]
    run = live[0].program.steps[1]
    assert isinstance(run, ExecStep)
    assert run.argv[0] == str(tmp_path / "analyze.sh") and run.argv[1:3] == ("--frame", "H1")
    assert isinstance(virtual[0].program.steps[1], ComputeStep)
    assert all(s.ad is not None and s.ad.rank == "Memory" for s in live)
