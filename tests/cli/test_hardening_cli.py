"""Issue 15 at the command line: every input or environment failure is one line and an exit code.

Each test runs the real command (a subprocess, or main() in process where a fault must be
injected) and checks the exit code, that stderr is one line without a traceback, and what was
or was not written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scitokens_batch import cli
from scitokens_batch.scenario import DEFAULT_EVENT_LIMIT
from tests.signals import default_sigint

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "scenarios" / "reference.toml"
ISSUER = "https://issuer.example/vo"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "scitokens_batch", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


class TestTopLevelHandler:
    def test_our_bug_exits_70_with_crash_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unexpected exception exits 70 with one line naming --out/crash.txt, which holds it."""

        def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("simulated bug")

        monkeypatch.setattr(cli, "run_virtual", boom)
        out = tmp_path / "out"
        out.mkdir()
        assert cli.main(["run", str(REFERENCE), "--out", str(out)]) == cli.EXIT_SOFTWARE
        line = _one_line(capsys.readouterr().err)
        assert "internal error: RuntimeError: simulated bug" in line and "crash.txt" in line
        crash = (out / "crash.txt").read_text()
        assert "Traceback" in crash and "simulated bug" in crash

    def test_our_bug_without_out_names_a_temp_file(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --out the traceback goes to a temporary file whose name the line gives."""

        def boom(*args: object, **kwargs: object) -> None:
            raise ZeroDivisionError("x")

        monkeypatch.setattr(cli, "run_virtual", boom)
        assert cli.main(["run", str(REFERENCE)]) == 70
        line = _one_line(capsys.readouterr().err)
        path = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
        try:
            assert "ZeroDivisionError" in path.read_text()
        finally:
            path.unlink()

    def test_interrupt_inside_exception_group_exits_130(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A KeyboardInterrupt wrapped in a BaseExceptionGroup (as trio raises it) exits 130."""

        def interrupted(*args: object, **kwargs: object) -> None:
            raise BaseExceptionGroup("trio", [KeyboardInterrupt()])

        monkeypatch.setattr(cli, "run_virtual", interrupted)
        assert cli.main(["run", str(REFERENCE)]) == 130
        assert _one_line(capsys.readouterr().err) == "scitokens-batch: interrupted"

    def test_ctrl_c_during_a_real_run_exits_130(self) -> None:
        """SIGINT to a running `run` process: exit 130 and one line, not a group traceback."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "scitokens_batch", "run", str(ROOT / "scenarios/ligo-day.toml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=default_sigint,  # as from a terminal, however pytest was started
        )
        try:
            time.sleep(3.0)  # past imports and into the run (ligo-day takes ~8 s)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "scitokens-batch: interrupted"
        assert "Traceback" not in err


class TestEnvironment:
    def test_out_names_an_existing_file(self, tmp_path: Path) -> None:
        """--out naming a file: exit 2, one line, the file untouched."""
        target = tmp_path / "file"
        target.write_text("keep")
        r = _cli("run", str(REFERENCE), "--out", str(target))
        assert r.returncode == 2
        assert "expected a directory" in _one_line(r.stderr)
        assert target.read_text() == "keep"

    def test_out_under_a_file(self) -> None:
        """--out in a place that cannot be created (below /dev/null): exit 2, one line."""
        r = _cli("run", str(REFERENCE), "--out", "/dev/null/out")
        assert r.returncode == 2 and "--out /dev/null/out" in _one_line(r.stderr)

    def test_ascii_output_encoding(self, tmp_path: Path) -> None:
        """PYTHONIOENCODING=ascii: the summary still prints (non-ASCII escaped), no traceback."""
        r = _cli("check", str(REFERENCE), env={"PYTHONIOENCODING": "ascii"})
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and "ok" in r.stdout
        r = _cli("run", str(REFERENCE), env={"PYTHONIOENCODING": "ascii"})
        assert r.returncode == 0 and "Traceback" not in r.stderr


class TestSize:
    def test_check_of_a_huge_pool_is_fast(self) -> None:
        """check of 10 million hosts, jobs and files takes seconds, not minutes or gigabytes."""
        start = time.monotonic()
        r = _cli(
            "check",
            str(REFERENCE),
            "--set",
            "execute_hosts[0].count=10000000",
            "--set",
            "execute_hosts[0].slots=10000000",
            "--set",
            "workloads[0].jobs=10000000",
            "--set",
            "workloads[0].steps[0].repeat=10000000",
            "--set",
            "data_servers[0].files[0].count=10000000",
        )
        elapsed = time.monotonic() - start
        assert r.returncode == 0, r.stderr
        assert "10000000 execute host(s)" in r.stdout
        assert elapsed < 30, elapsed

    def test_run_beyond_the_estimate_limit_is_refused(self, tmp_path: Path) -> None:
        """A run estimated beyond the limit exits 2 with the estimate in the message."""
        out = tmp_path / "out"
        r = _cli("run", str(REFERENCE), "--out", str(out), "--set", "workloads[0].jobs=2000000")
        assert r.returncode == 2
        line = _one_line(r.stderr)
        assert "estimated at" in line and f"{DEFAULT_EVENT_LIMIT:,}" in line and "--force" in line
        assert not out.exists()

    def test_millisecond_interval_is_refused(self) -> None:
        """A 1 ms scan interval over 8 hours is refused up front instead of hanging."""
        r = _cli("run", str(REFERENCE), "--set", "token_manager.scan_interval=1ms")
        assert r.returncode == 2 and "estimated at" in _one_line(r.stderr)


class TestOutputs:
    def test_reused_out_is_replaced_as_a_set(self, tmp_path: Path) -> None:
        """A second run into the same --out removes the first run's files it does not write."""
        out = tmp_path / "out"
        assert _cli("run", str(REFERENCE), "--out", str(out)).returncode == 0
        assert (out / "denials.png").exists() and (out / "report.html").exists()
        (out / "mine.txt").write_text("not ours")
        r = _cli("run", str(REFERENCE), "--out", str(out), "--no-plots")
        assert r.returncode == 0, r.stderr
        names = sorted(p.name for p in out.iterdir())
        assert names == [
            "events.jsonl",
            "jobs.csv",
            "jobs.log",
            "mine.txt",
            "run.json",
            "summary.json",
            "tokens.csv",
        ]

    def test_progress_lines_when_not_a_terminal(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The non-terminal progress callback writes one stderr line per interval."""
        progress = cli._progress_lines("ref", lambda d, t: f"{d:g}/{t:g}", every=0.0)
        progress(1.0, 4.0)
        progress(2.0, 4.0)
        lines = capsys.readouterr().err.splitlines()
        assert lines[0].startswith("scitokens-batch: ref: 1/4 (25%)") and len(lines) == 2


class TestTokenInput:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("--lifetime", "inf"),
            ("--lifetime", "nan"),
            ("--lifetime", "1e300"),
            ("--lifetime", "0.5"),
            ("--nbf-backdate", "inf"),
            ("--scope", ""),
            ("--scope", "  "),
        ],
    )
    def test_mint_refuses(self, tmp_path: Path, option: str, value: str) -> None:
        """Non-finite, huge or sub-second times and empty scopes: exit 2 naming the option."""
        keys = tmp_path / "keys"
        assert _cli("token", "keygen", "--out", str(keys)).returncode == 0
        args = ["--key", str(keys / "private.pem"), "--issuer", ISSUER, "--aud", "a"]
        args += ["--scope", "read:/a"] if option != "--scope" else []
        r = _cli("token", "mint", *args, f"{option}={value}")
        assert r.returncode == 2 and option in r.stderr and "Traceback" not in r.stderr
        assert r.stdout == ""

    def test_keygen_refuses_empty_kid(self, tmp_path: Path) -> None:
        """An empty kid is refused and no key is written."""
        r = _cli("token", "keygen", "--out", str(tmp_path / "k"), "--kid=")
        assert r.returncode == 2 and "--kid" in r.stderr
        assert not (tmp_path / "k").exists()

    @pytest.mark.parametrize("now", ["nan", "inf", "-inf", "1e300"])
    def test_verify_refuses_non_finite_now(self, tmp_path: Path, now: str) -> None:
        """verify --now nan never accepts an expired token: exit 2, not 0, no AssertionError."""
        keys = tmp_path / "keys"
        assert _cli("token", "keygen", "--out", str(keys)).returncode == 0
        minted = _cli(
            "token", "mint", "--key", str(keys / "private.pem"), "--issuer", ISSUER,
            "--aud", "a", "--scope", "read:/a", "--lifetime", "1",
        )  # fmt: skip
        token = minted.stdout.strip()
        r = _cli(
            "token", "verify", token, "--jwks", str(keys / "jwks.json"), "--issuer", ISSUER,
            "--aud", "a", f"--now={now}",
        )  # fmt: skip
        assert r.returncode == 2 and "--now" in r.stderr and "accepted" not in r.stdout


@pytest.mark.parametrize("leeway", ["inf", "nan", "-1"])
def test_verify_refuses_non_finite_leeway(leeway: str) -> None:
    """--leeway inf would accept any expired token: refused by argparse, exit 2."""
    r = _cli("token", "verify", "x.y.z", "--jwks", "j", "--issuer", ISSUER, "--aud", "a",
             f"--leeway={leeway}")  # fmt: skip
    assert r.returncode == 2 and "--leeway" in r.stderr and "Traceback" not in r.stderr


def test_help_shows_exit_codes_and_examples() -> None:
    """Every command's --help has examples and the exit-code table; no RST backticks."""
    for command in (["run"], ["check"], ["demo"], ["serve"], ["token"], []):
        r = _cli(*command, "--help")
        assert r.returncode == 0
        assert "examples:" in r.stdout and "70   internal error" in r.stdout
        assert "``" not in r.stdout
