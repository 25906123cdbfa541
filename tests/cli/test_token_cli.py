"""The ``scitokens-batch token`` commands, run as a user would (in-process and as a process)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scitokens_batch.cli import main

ISSUER = "https://issuer.example/vo"
AUD = "https://storage.example"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keydir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "keys"
    code, _, _ = _run(capsys, "token", "keygen", "--alg", "ES256", "--out", str(d))
    assert code == 0
    return d


def _mint(capsys: pytest.CaptureFixture[str], keydir: Path, *extra: str) -> str:
    code, out, err = _run(
        capsys,
        "token",
        "mint",
        "--key",
        str(keydir / "private.pem"),
        "--issuer",
        ISSUER,
        "--aud",
        AUD,
        "--scope",
        "read:/frames write:/results/alice",
        "--sub",
        "alice",
        *extra,
    )
    assert code == 0, err
    return out.strip()


class TestKeygen:
    def test_files_and_modes(self, keydir: Path) -> None:
        """keygen writes private.pem 0600, public.pem and a JWKS with a kid."""
        assert stat.S_IMODE(os.stat(keydir / "private.pem").st_mode) == 0o600
        assert (keydir / "public.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
        jwks = json.loads((keydir / "jwks.json").read_text())
        assert jwks["keys"][0]["kid"] and jwks["keys"][0]["alg"] == "ES256"

    def test_rs256(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """keygen --alg RS256 --json reports the kid and algorithm."""
        code, out, _ = _run(
            capsys, "token", "keygen", "--alg", "RS256", "--out", str(tmp_path), "--json"
        )
        assert code == 0 and json.loads(out)["alg"] == "RS256"


class TestMintVerify:
    def test_round_trip(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A minted token verifies: exit 0 and 'accepted'."""
        tok = _mint(capsys, keydir)
        code, out, _ = _run(
            capsys,
            "token",
            "verify",
            tok,
            "--jwks",
            str(keydir / "jwks.json"),
            "--issuer",
            ISSUER,
            "--aud",
            AUD,
        )
        assert (code, out) == (0, "accepted\n")

    def test_op_and_path(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """B4/P1: --op read on a sibling-prefix path is rejected with insufficient_scope, exit 1."""
        tok = _mint(capsys, keydir)
        base = [
            "token",
            "verify",
            tok,
            "--jwks",
            str(keydir / "jwks.json"),
            "--issuer",
            ISSUER,
            "--aud",
            AUD,
            "--base-path",
            "/vo",
        ]
        assert _run(capsys, *base, "--op", "read", "--path", "/vo/frames/x")[:2] == (
            0,
            "accepted\n",
        )
        code, out, _ = _run(capsys, *base, "--op", "read", "--path", "/vo/framesets/x")
        assert code == 1 and out.startswith("rejected: insufficient_scope: ")

    def test_expired_json(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--json gives the reason and HTTP status of a rejection (E1: expired is 401)."""
        tok = _mint(capsys, keydir, "--lifetime", "60")
        code, out, _ = _run(
            capsys,
            "token",
            "verify",
            tok,
            "--jwks",
            str(keydir / "jwks.json"),
            "--issuer",
            ISSUER,
            "--aud",
            AUD,
            "--now",
            str(time.time() + 61),
            "--json",
        )
        doc = json.loads(out)
        assert code == 1 and doc["reason"] == "expired" and doc["status"] == 401

    def test_wrong_audience(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """C2: another audience is rejected as wrong_audience."""
        tok = _mint(capsys, keydir)
        code, out, _ = _run(
            capsys,
            "token",
            "verify",
            tok,
            "--jwks",
            str(keydir / "jwks.json"),
            "--issuer",
            ISSUER,
            "--aud",
            "https://other.example",
        )
        assert code == 1 and out.startswith("rejected: wrong_audience: ")

    def test_token_from_file_and_stdin(self, keydir: Path, tmp_path: Path) -> None:
        """A TOKEN may be a file (raw or HTCondor JSON) or - for stdin, as a real process."""
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        cmd = [sys.executable, "-m", "scitokens_batch", "token"]
        tok = subprocess.run(
            [
                *cmd,
                "mint",
                "--key",
                str(keydir / "private.pem"),
                "--issuer",
                ISSUER,
                "--aud",
                AUD,
                "--scope",
                "read:/a",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        ).stdout.strip()
        (tmp_path / "raw").write_text(tok + "\n")
        (tmp_path / "ligo.use").write_text(json.dumps({"access_token": tok, "expires_in": 600}))
        verify = ["verify", "--jwks", str(keydir / "jwks.json"), "--issuer", ISSUER, "--aud", AUD]
        for arg, stdin in (
            (str(tmp_path / "raw"), None),
            (str(tmp_path / "ligo.use"), None),
            ("-", tok),
        ):
            r = subprocess.run(
                [*cmd, verify[0], arg, *verify[1:]],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert (r.returncode, r.stdout) == (0, "accepted\n"), (arg, r.stderr)

    def test_wlcg_profile(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--profile wlcg mints wlcg.ver 1.0 with storage scopes and groups."""
        _, out, _ = _run(
            capsys,
            "token",
            "mint",
            "--key",
            str(keydir / "private.pem"),
            "--issuer",
            ISSUER,
            "--aud",
            AUD,
            "--scope",
            "storage.read:/data",
            "--profile",
            "wlcg",
            "--group",
            "/vo",
            "--json",
        )
        tok = json.loads(out)["token"]
        _, out, _ = _run(capsys, "token", "inspect", tok, "--json")
        claims = json.loads(out)["claims"]
        assert (
            claims["wlcg.ver"] == "1.0" and claims["wlcg.groups"] == ["/vo"] and "ver" not in claims
        )


class TestInspect:
    def test_never_verifies(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """inspect shows an expired token's claims and exits 0 without verifying."""
        tok = _mint(capsys, keydir, "--lifetime", "1")
        code, out, _ = _run(capsys, "token", "inspect", tok)
        assert code == 0 and "NOT verified" in out and "exp" in out


class TestBadInput:
    @pytest.mark.parametrize(
        ("argv", "fragment"),
        [
            (["token", "inspect", "no-such-file"], "neither a token nor an existing file"),
            (["token", "inspect", "a.b"], "neither a token nor an existing file"),
            (
                [
                    "token",
                    "mint",
                    "--key",
                    "/nonexistent/private.pem",
                    "--issuer",
                    ISSUER,
                    "--aud",
                    AUD,
                    "--scope",
                    "read:/a",
                ],
                "--key /nonexistent/private.pem: cannot read",
            ),
        ],
    )
    def test_clear_errors(
        self, argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Bad input exits 2 with a message naming the argument, never a traceback."""
        code, _, err = _run(capsys, *argv)
        assert code == 2 and fragment in err and "Traceback" not in err

    def test_bad_issuer_and_scope(self, keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A trailing-slash issuer and a traversal scope are refused at mint, exit 2."""
        key = str(keydir / "private.pem")
        code, _, err = _run(
            capsys,
            "token",
            "mint",
            "--key",
            key,
            "--issuer",
            ISSUER + "/",
            "--aud",
            AUD,
            "--scope",
            "read:/a",
        )
        assert code == 2 and "must not end with '/'" in err
        code, _, err = _run(
            capsys,
            "token",
            "mint",
            "--key",
            key,
            "--issuer",
            ISSUER,
            "--aud",
            AUD,
            "--scope",
            "read:/a/../b",
        )
        assert code == 2 and ".." in err

    def test_missing_jwks_beside_key(
        self, keydir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """mint explains that the kid comes from jwks.json beside the key."""
        (keydir / "jwks.json").unlink()
        code, _, err = _run(
            capsys,
            "token",
            "mint",
            "--key",
            str(keydir / "private.pem"),
            "--issuer",
            ISSUER,
            "--aud",
            AUD,
            "--scope",
            "read:/a",
        )
        assert code == 2 and "jwks.json" in err

    def test_argparse_errors_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing required option exits 2 with usage."""
        with pytest.raises(SystemExit) as exc:
            main(["token", "mint"])
        assert exc.value.code == 2


class TestDiscover:
    def test_reports_source_not_token(
        self,
        keydir: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """F1: BEARER_TOKEN_FILE is found; the token is shown only with --show."""
        tok = _mint(capsys, keydir)
        f = tmp_path / "tok"
        f.write_text(tok + "\n")
        monkeypatch.delenv("BEARER_TOKEN", raising=False)
        monkeypatch.setenv("BEARER_TOKEN_FILE", str(f))
        code, out, _ = _run(capsys, "token", "discover", "--json")
        doc = json.loads(out)
        assert (
            code == 0
            and doc["source"] == "BEARER_TOKEN_FILE"
            and "token" not in doc
            and tok not in out
        )
        code, out, _ = _run(capsys, "token", "discover", "--show")
        assert code == 0 and tok in out


def test_token_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """token demo mints, verifies, and shows two accepted and three rejected accesses."""
    code, out, _ = _run(capsys, "token", "demo")
    assert code == 0
    assert out.count("accepted") == 2 and "insufficient_scope" in out and "expired" in out
