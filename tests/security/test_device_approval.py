"""The device approval page must log the user in, live secrets must not be derivable from the
scenario, and every file holding a secret must be private (against real services on
127.0.0.1)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from scitokens_batch.actors.issuer import MAX_APPROVAL_FAILURES
from scitokens_batch.live import AuthFiles, ServiceConfig
from scitokens_batch.protocol import GRANT_DEVICE_CODE
from scitokens_batch.scenario._world import client_secret
from scitokens_batch.tokens import peek

from .deploy import AUDIENCE, Deployment

pytestmark = pytest.mark.live


def _client(live: Deployment) -> httpx.Client:
    return httpx.Client(verify=live.ssl(), timeout=30.0)


def _tm_secret(live: Deployment) -> str:
    return live.run.client_secrets["vo"]["token_manager"]


def _start(live: Deployment, secret: str | None = None) -> httpx.Response:
    """RFC 8628 §3.1 as the token manager's client."""
    with _client(live) as client:
        return client.post(
            live.url("vo") + "/device_authorization",
            data={"scope": "read:/data offline_access", "audience": AUDIENCE},
            auth=("token_manager", secret or _tm_secret(live)),
        )


def _approve(live: Deployment, user_code: str, user: str, password: str | None) -> int:
    form = {"user_code": user_code, "user": user, "approve": "yes"}
    if password is not None:
        form["password"] = password
    with _client(live) as client:
        return client.post(live.url("vo") + "/device", data=form).status_code


def _poll(live: Deployment, device_code: str) -> dict[str, Any]:
    with _client(live) as client:
        reply = client.post(
            live.url("vo") + "/token",
            data={"grant_type": GRANT_DEVICE_CODE, "device_code": device_code},
            auth=("token_manager", _tm_secret(live)),
        )
        doc: dict[str, Any] = reply.json()
        return doc


def test_the_page_asks_for_a_password(live: Deployment) -> None:
    """The verification page has a password field."""
    with _client(live) as client:
        page = client.get(live.url("vo") + "/device").text
    assert "type=password name=password" in page


@pytest.mark.parametrize("password", [None, "", "guess", "bob-scenario-passwor"])
def test_approval_without_the_right_password_is_refused(
    live: Deployment, password: str | None
) -> None:
    """Approving as bob without bob's password is 403 and the code stays pending."""
    start = _start(live).json()
    assert _approve(live, start["user_code"], "bob", password) == 403
    answer = _poll(live, start["device_code"])
    assert answer.get("error") == "authorization_pending"
    assert "access_token" not in answer and "refresh_token" not in answer


def test_approval_with_the_password_gives_the_users_tokens(live: Deployment) -> None:
    """The control case: bob's own password approves, the poll returns bob's tokens."""
    start = _start(live).json()
    assert _approve(live, start["user_code"], "bob", "bob-scenario-password") == 200
    answer = _poll(live, start["device_code"])
    assert peek(answer["access_token"])[1]["sub"] == "bob"


def test_generated_password_works_and_is_not_the_scenarios(live: Deployment) -> None:
    """alice has no password in the scenario: the run drew one, and only it approves."""
    password = live.run.passwords["vo"]["alice"]
    assert len(password) >= 20
    start = _start(live).json()
    assert _approve(live, start["user_code"], "alice", "alice") == 403
    assert _approve(live, start["user_code"], "alice", password) == 200


def test_guessing_is_bounded_per_code(live: Deployment) -> None:
    """After the allowed wrong passwords the code is denied, even for the right password."""
    start = _start(live).json()
    for _ in range(MAX_APPROVAL_FAILURES):
        assert _approve(live, start["user_code"], "bob", "wrong") == 403
    assert _approve(live, start["user_code"], "bob", "bob-scenario-password") != 200
    assert _poll(live, start["device_code"]).get("error") == "access_denied"


def test_seed_derived_client_secret_is_refused(live: Deployment) -> None:
    """The secret anyone can recompute from the scenario and its seed is not the live one."""
    derived = client_secret(live.run.spec, live.run.seed, "vo", "token_manager")
    assert derived is not None and derived != _tm_secret(live)
    reply = _start(live, derived)
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"


def _secrets_of(live: Deployment) -> list[str]:
    run = live.run
    found = [s for table in run.client_secrets.values() for s in table.values()]
    found += [p for table in run.passwords.values() for p in table.values()]
    return [*found, run.login_token]


def test_secret_files_are_private(live: Deployment) -> None:
    """Configurations, credentials files and the scenario copy are 0600 in 0700 directories."""
    config = live.workdir / "config"
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    files = list(config.iterdir())
    assert any(f.name.endswith(".secrets.json") for f in files)
    assert any(f.name == "scenario.toml" for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert not (live.workdir / "scenario.toml").exists()
    for name in ("vo", "token_manager", "node-0"):
        assert stat.S_IMODE((live.workdir / "services" / name).stat().st_mode) == 0o700


def test_no_secret_in_logs_or_events(live: Deployment) -> None:
    """No client secret, password or service token appears in any log or event file."""
    texts = [p.read_text() for d in ("logs", "events") for p in (live.workdir / d).iterdir()]
    for secret in _secrets_of(live):
        assert not any(secret in t for t in texts)


def _serve(config: ServiceConfig, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(config.to_toml())
    return subprocess.run(
        [sys.executable, "-m", "scitokens_batch", "serve", config.role, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rpc_service_without_auth_refuses_to_start(live: Deployment, tmp_path: Path) -> None:
    """An execute host configured without [auth] exits 2 with a one-line reason."""
    config = ServiceConfig(
        role="execute-host",
        name="node-0",
        scenario=live.workdir / "config" / "scenario.toml",
        workdir=tmp_path / "w",
        listen="127.0.0.1:0",
    )
    done = _serve(config, tmp_path / "node.toml")
    assert done.returncode == 2, done.stderr
    assert "auth" in done.stderr and "Traceback" not in done.stderr


def test_off_loopback_without_auth_refuses_to_start(live: Deployment, tmp_path: Path) -> None:
    """A data server asked to listen off loopback without [auth] refuses before binding."""
    config = ServiceConfig(
        role="data-server",
        name="store",
        scenario=live.workdir / "config" / "scenario.toml",
        workdir=tmp_path / "w",
        listen="192.0.2.1:9",  # TEST-NET-1: not an address of this machine anyway
    )
    done = _serve(config, tmp_path / "store.toml")
    assert done.returncode == 2, done.stderr
    assert "not loopback" in done.stderr and "Traceback" not in done.stderr


def test_readable_credentials_file_is_refused(live: Deployment, tmp_path: Path) -> None:
    """A credentials file others can read is refused (the service does not start)."""
    creds = tmp_path / "node.secrets.json"
    creds.write_text("{}")
    creds.chmod(0o644)
    config = ServiceConfig(
        role="execute-host",
        name="node-0",
        scenario=live.workdir / "config" / "scenario.toml",
        workdir=tmp_path / "w",
        listen="127.0.0.1:0",
        auth=AuthFiles(pool_key=live.run.pool_key_path, credentials=creds),
    )
    done = _serve(config, tmp_path / "node.toml")
    assert done.returncode == 2, done.stderr
    assert "0600" in done.stderr and "Traceback" not in done.stderr
