"""oidc-agent 4.2.6 (Debian ``oidc-agent-cli``) against our live issuer on 127.0.0.1: the device
flow with ``--aud``, then access and ID tokens through ``oidc-token``.

Every oidc-agent process is a real one: the agent runs in the foreground (``oidc-agent -d``)
with its socket in this test's temporary directory and is stopped by its PID; ``oidc-gen`` and
``oidc-token`` run with a private ``HOME``/``OIDC_CONFIG_DIR`` and a timeout. The user's
approval at the verification page is made by the test (the user), with alice's password.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run
from scitokens_batch.tokens import peek

from .conftest import peer_missing

pytestmark = pytest.mark.live

AUDIENCE = "https://store.oidc.example"
CLIENT = "oidc-agent"
CLIENT_SECRET = "cs-oidc-agent-test-secret"  # test value: this scenario's registered client
PASSWORD = "alice-oidc-test-password"  # test value: the scenario's user password
#: Every oidc-agent command is bounded (a device login here takes a few seconds).
TIMEOUT = 60.0


def _free_port() -> int:
    """A loopback port free now for oidc-agent's redirect web server, which takes only
    1024-49151 (the kernel's ephemeral ports are often above)."""
    rng = random.Random()
    for _ in range(200):  # bounded
        port = rng.randrange(20000, 49152)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-49151 after 200 tries")


#: The redirect URI registered for the code flow (oidc-agent listens there).
REDIRECT_PORT = _free_port()
REDIRECT = f"http://localhost:{REDIRECT_PORT}"

SCENARIO = f"""
[scenario]
name = "live-oidc-agent"
duration = "1h"
seed = 11

[[issuers]]
name = "vo"
url = "https://issuer.oidc.example/vo"
access_token_lifetime = "10m"

[[issuers.users]]
name = "alice"
password = "{PASSWORD}"
scopes = ["read:/data", "write:/results/alice"]

[[issuers.clients]]
name = "{CLIENT}"
secret = "{CLIENT_SECRET}"
grants = ["device_code", "refresh_token", "authorization_code"]
audiences = ["{AUDIENCE}", "https://other.oidc.example"]
redirect_uris = ["{REDIRECT}"]

[issuers.registration]
scopes = ["read:/data"]

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"

[data_servers.issuers]
vo = "/vo"

[[workloads]]
name = "a"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[_Run]:
    """Our issuer as a real process (``serve issuer``), stopped by PID on the way out."""
    if shutil.which("oidc-gen") is None:
        peer_missing("oidc-agent not installed (apt-get install oidc-agent-cli)")
    with deployment(SCENARIO, ("vo",), prefix="stb-oidc-agent-test-") as run:
        yield run


class Agent:
    """One oidc-agent in the foreground, and the environment its tools need."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "OIDC_CONFIG_DIR": str(home / "oidc-agent"),
            "OIDC_SOCK": str(home / "sock" / "oidc-agent.sock"),
            "OIDC_ENCRYPTION_PW": "test-encryption-password",  # test value
            "TMPDIR": str(home),
        }
        (home / "sock").mkdir(mode=0o700)
        (home / "oidc-agent").mkdir(mode=0o700)
        self.proc = subprocess.Popen(
            # --always-allow-idtoken: the agent would ask the user (a GUI prompt) before
            # handing out an ID token; the test is the user here.
            [
                "oidc-agent",
                "-d",
                "--quiet",
                "--always-allow-idtoken",
                "--socket-path",
                self.env["OIDC_SOCK"],
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not Path(self.env["OIDC_SOCK"]).exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("oidc-agent did not create its socket within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the agent by its PID: SIGTERM, then SIGKILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An oidc-agent tool with the agent's environment, bounded."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A fresh oidc-agent with a private home and socket."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    running = Agent(home)
    try:
        yield running
    finally:
        running.stop()


def _tls(run: _Run) -> ssl.SSLContext:
    """A TLS context trusting the run's CA."""
    return ssl.create_default_context(cafile=str(run.tls.ca))


def _approve(run: _Run, user_code: str) -> None:
    """alice at the verification page: user code, user name, password, approve."""
    with httpx.Client(verify=_tls(run), timeout=30.0) as client:
        reply = client.post(
            run.issuer_urls["vo"] + "/device",
            data={"user_code": user_code, "user": "alice", "password": PASSWORD, "approve": "yes"},
        )
    assert reply.status_code == 200, reply.text


def _device_gen(
    run: _Run, agent: Agent, account: str, *extra: str, register: bool = False
) -> tuple[int, str]:
    """``oidc-gen --flow=device`` as a new user would run it; the test approves the user code
    it prints. Returns oidc-gen's exit status and its output."""
    cmd = [
        # oidc-gen prints the user code and then polls: line-buffer its stdout so the code
        # reaches the test before the poll ends (a pipe is block-buffered otherwise).
        "stdbuf",
        "-oL",
        "-eL",
        "oidc-gen",
        f"--iss={run.issuer_urls['vo']}",
        *([] if register else [f"--client-id={CLIENT}", f"--client-secret={CLIENT_SECRET}"]),
        "--flow=device",
        f"--cp={run.tls.ca}",
        "--pw-env",
        "--confirm-default",
        "--prompt=none",
        *extra,
        account,
    ]
    proc = subprocess.Popen(
        cmd,
        env=agent.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        approved = False
        for line in proc.stdout:
            output.append(line)
            match = re.search(r"\b([B-Z]{4}-[B-Z]{4})\b", line)
            if match and not approved:
                _approve(run, match.group(1))
                approved = True
            if time.monotonic() > deadline:
                break
        status = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return status, "".join(output)


def _claims(token: str) -> dict[str, Any]:
    return dict(peek(token)[1])


def test_device_flow_with_aud(issuer: _Run, agent: Agent) -> None:
    """oidc-gen's device flow with --aud succeeds (exit 0) and the first access token already
    has aud = the requested audience, sub alice and exactly the scopes asked; refreshes keep it."""
    status, output = _device_gen(
        issuer,
        agent,
        "vo-dev",
        "--scope=openid offline_access read:/data",
        f"--aud={AUDIENCE}",
    )
    assert status == 0, output
    got = agent.run("oidc-token", "vo-dev")
    assert got.returncode == 0, got.stderr
    claims = _claims(got.stdout.strip())
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "alice" and claims["iss"] == issuer.issuer_urls["vo"]
    assert claims["scope"].split() == ["read:/data", "offline_access", "openid"]
    # A fresh token (forced refresh: minimum lifetime above the token's) keeps the audience.
    again = agent.run("oidc-token", "--time=3600", "vo-dev")
    assert again.returncode == 0, again.stderr
    assert _claims(again.stdout.strip())["aud"] == AUDIENCE


def test_id_token(issuer: _Run, agent: Agent) -> None:
    """oidc-token --id-token returns an ID token signed by the issuer for the client:
    iss, sub alice, aud = the client id, iat < exp."""
    status, output = _device_gen(issuer, agent, "vo-id", "--scope=openid read:/data")
    assert status == 0, output
    got = agent.run("oidc-token", "--id-token", "vo-id")
    assert got.returncode == 0, got.stderr
    id_token = got.stdout.strip()
    header, claims = peek(id_token)[:2]
    with httpx.Client(verify=_tls(issuer), timeout=30.0) as client:
        jwks = client.get(issuer.issuer_urls["vo"] + "/jwks").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    verified = jwt.decode(
        id_token,
        key=jwt.PyJWK(key).key,
        algorithms=[header["alg"]],
        audience=CLIENT,
        issuer=issuer.issuer_urls["vo"],
    )
    assert verified["sub"] == "alice" and verified["iat"] < verified["exp"]
    assert claims == verified


def test_openid_alone_has_no_capability(issuer: _Run, agent: Agent) -> None:
    """A login asking for openid only gets an access token whose scope is exactly openid
    (no storage capability), and userinfo answers for it."""
    status, output = _device_gen(issuer, agent, "vo-oidc", "--scope=openid offline_access")
    assert status == 0, output
    got = agent.run("oidc-token", "vo-oidc")
    assert got.returncode == 0, got.stderr
    token = got.stdout.strip()
    assert _claims(token)["scope"].split() == ["offline_access", "openid"]
    with httpx.Client(verify=_tls(issuer), timeout=30.0) as client:
        info = client.get(
            issuer.issuer_urls["vo"] + "/userinfo", headers={"authorization": f"Bearer {token}"}
        )
    assert info.status_code == 200 and info.json()["sub"] == "alice"


def test_refused_audience_fails_the_login(issuer: _Run, agent: Agent) -> None:
    """oidc-gen --aud with an audience the client may not ask for fails (non-zero exit) and
    saves no account."""
    status, output = _device_gen(
        issuer, agent, "vo-bad", "--scope=read:/data", "--aud=https://evil.example"
    )
    assert status != 0, output
    assert "invalid_target" in output or "evil.example" in output
    assert not (agent.home / "oidc-agent" / "vo-bad").exists()


def _code_gen(run: _Run, agent: Agent, account: str, *extra: str) -> tuple[int, str]:
    """``oidc-gen --flow=code`` as a user without a browser runs it (``--no-url-call``): the
    test is the browser: it opens the URL oidc-gen prints, logs alice in at the consent page,
    approves, and follows the redirect to oidc-agent's web server on ``REDIRECT``."""
    cmd = [
        "stdbuf",
        "-oL",
        "-eL",
        "oidc-gen",
        f"--iss={run.issuer_urls['vo']}",
        f"--client-id={CLIENT}",
        f"--client-secret={CLIENT_SECRET}",
        "--flow=code",
        f"--redirect-uri={REDIRECT}",
        "--no-url-call",
        f"--cp={run.tls.ca}",
        "--pw-env",
        "--confirm-default",
        "--prompt=none",
        *extra,
        account,
    ]
    proc = subprocess.Popen(
        cmd,
        env=agent.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    authorize = run.issuer_urls["vo"] + "/authorize"
    try:
        assert proc.stdout is not None
        browsed = False
        for line in proc.stdout:
            output.append(line)
            match = re.search(re.escape(authorize) + r"\?\S+", line)
            if match and not browsed:
                browsed = True
                _browse(run, match.group(0))
        status = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return status, "".join(output)


def _browse(run: _Run, url: str) -> None:
    """The user's browser: the consent page, alice's login and approval, the redirect."""
    with httpx.Client(verify=_tls(run), timeout=30.0) as client:
        page = client.get(url)
        assert page.status_code == 200, page.text
        assert "type=password name=password" in page.text
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        consent = client.post(
            url.split("?", 1)[0],
            data={**params, "user": "alice", "password": PASSWORD, "approve": "yes"},
        )
        assert consent.status_code == 302, consent.text
        location = consent.headers["location"]
        assert location.startswith(REDIRECT)
        assert "code=" in location and f"state={urllib.parse.quote(params['state'])}" in location
    # oidc-agent's own web server (plain http on loopback) takes the code and redeems it.
    with httpx.Client(timeout=30.0) as local:
        local.get(location)


def test_code_flow_with_aud_and_id_token(issuer: _Run, agent: Agent) -> None:
    """oidc-gen's authorization code flow (PKCE S256) with --aud succeeds (exit 0): the access
    token has the requested audience and sub alice, and oidc-token --id-token gives an ID
    token for the client."""
    status, output = _code_gen(
        issuer,
        agent,
        "vo-code",
        "--scope=openid offline_access read:/data",
        f"--aud={AUDIENCE}",
    )
    assert status == 0, output
    got = agent.run("oidc-token", "vo-code")
    assert got.returncode == 0, got.stderr
    claims = _claims(got.stdout.strip())
    assert (claims["aud"], claims["sub"]) == (AUDIENCE, "alice")
    assert claims["scope"].split() == ["read:/data", "offline_access", "openid"]
    id_token = agent.run("oidc-token", "--id-token", "vo-code")
    assert id_token.returncode == 0, id_token.stderr
    id_claims = _claims(id_token.stdout.strip())
    assert (id_claims["aud"], id_claims["sub"]) == (CLIENT, "alice")


def test_dynamic_registration_then_device_flow(issuer: _Run, agent: Agent) -> None:
    """oidc-gen without a client id registers a client (RFC 7591) and logs in with the
    device flow (exit 0); the token holds at most the registration policy's scopes although
    alice may also write."""
    status, output = _device_gen(
        issuer,
        agent,
        "vo-dcr",
        "--scope=openid offline_access read:/data write:/results/alice",
        register=True,
    )
    assert status == 0, output
    got = agent.run("oidc-token", "vo-dcr")
    assert got.returncode == 0, got.stderr
    claims = _claims(got.stdout.strip())
    assert claims["sub"] == "alice"
    assert claims["scope"].split() == ["read:/data", "offline_access", "openid"]
