"""Attacks on the live RPC between the batch-system actors, against real services on 127.0.0.1.

Each test performs the reported attack (anonymous, forged, replayed or wrong-role calls) and
checks it is refused with 401/403 and that nothing was handed out, written or run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scitokens_batch.protocol import (
    ComputeStep,
    CredentialRequest,
    CredentialResponse,
    CredentialUpdate,
    ExecStep,
    JobProgram,
    StartJob,
    rpcauth,
)
from scitokens_batch.protocol import wire as w
from scitokens_batch.tokens import Algorithm, SigningKey, peek

from .deploy import Deployment, ack

pytestmark = pytest.mark.live


def _credential(live: Deployment, user: str) -> CredentialResponse:
    """What the (genuine) queue manager gets for ``user``."""
    qm = live.token("queue_manager", "queue-manager", "token_manager")
    reply = live.post_rpc("token_manager", CredentialRequest(user=user, service="vo"), qm)
    assert reply.status_code == 200, reply.text
    answer = w.decode_rpc(reply.content)
    assert isinstance(answer, CredentialResponse)
    return answer


def _start_job(job: int, marker: Path, *, service: str = "vo") -> StartJob:
    """A StartJob whose exec step would create ``marker`` if it ever ran."""
    return StartJob(
        job=job,
        slot=0,
        user="alice",
        service=service,
        token="not-a-real-token",
        jti="j",
        exp=time.time() + 600,
        program=JobProgram(steps=(ExecStep(argv=("touch", str(marker)), timeout=10),)),
    )


def test_anonymous_credential_request_is_401(live: Deployment) -> None:
    """A CredentialRequest without a service token gets 401 and no token of alice's."""
    genuine = _credential(live, "alice")
    assert genuine.token is not None
    reply = live.post_rpc("token_manager", CredentialRequest(user="alice", service="vo"), None)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert genuine.token not in reply.text and "eyJ" not in reply.text


def test_forged_service_token_is_401(live: Deployment) -> None:
    """A queue-manager token signed by a key other than the pool's is refused (401)."""
    forged_key = SigningKey.generate(Algorithm.ES256, kid=rpcauth.POOL_KID)
    forged = rpcauth.mint_service_token(
        forged_key,
        name="queue_manager",
        role="queue-manager",
        audience="token_manager",
        now=time.time(),
        lifetime=600,
        jti="forged",
    )
    reply = live.post_rpc("token_manager", CredentialRequest(user="alice", service="vo"), forged)
    assert reply.status_code == 401
    assert "eyJ" not in reply.text


def test_user_access_token_is_not_a_service_token(live: Deployment) -> None:
    """alice's own VO access token, presented as a service token, is refused (401)."""
    access = _credential(live, "alice").token
    assert access is not None
    reply = live.post_rpc("token_manager", CredentialRequest(user="bob", service="vo"), access)
    assert reply.status_code == 401


def test_token_for_another_service_is_401(live: Deployment) -> None:
    """The queue manager's token for node-0, replayed to node-1 by a bad node-0, is refused."""
    stolen = live.token("queue_manager", "queue-manager", "node-0")
    marker = live.workdir / "replayed-start-ran"
    reply = live.post_rpc("node-1", _start_job(801, marker), stolen)
    assert reply.status_code == 401
    time.sleep(1.0)
    assert not marker.exists()


def test_wrong_role_credential_request_is_403(live: Deployment) -> None:
    """An execute host (a genuine service token, the wrong role) may not ask for tokens: 403."""
    host = live.token("node-0", "execute-host", "token_manager")
    reply = live.post_rpc("token_manager", CredentialRequest(user="alice", service="vo"), host)
    assert reply.status_code == 403
    assert "eyJ" not in reply.text


@pytest.mark.parametrize("who", [None, ("queue_manager", "queue-manager")])
def test_store_credential_outside_the_login_path_is_refused(
    live: Deployment, who: tuple[str, str] | None
) -> None:
    """StoreCredential from no one (401) or from the queue manager (403) overwrites nothing."""
    before = _credential(live, "alice")
    bob = live.login("bob")
    assert bob.refresh_token is not None
    token = None if who is None else live.token(who[0], who[1], "token_manager")
    reply = live.store("alice", bob.refresh_token, token)
    assert reply.status_code == (401 if who is None else 403)
    after = _credential(live, "alice")
    assert after.token is not None and peek(after.token)[1]["sub"] == "alice"
    assert after.jti == before.jti


def test_login_path_cannot_store_another_users_refresh_token(live: Deployment) -> None:
    """Through the login path, bob's refresh token stored as alice's is refused (issuer check)."""
    bob = live.login("bob")
    assert bob.refresh_token is not None
    reply = live.store("alice", bob.refresh_token, live.login_token())
    assert reply.status_code == 200
    refused = ack(reply)
    assert not refused.ok and "not alice's" in refused.detail
    after = _credential(live, "alice")
    assert after.token is not None and peek(after.token)[1]["sub"] == "alice"


def test_login_path_stores_the_users_own_credential(live: Deployment) -> None:
    """The control case: the login path storing alice's own new refresh token is taken."""
    alice = live.login("alice")
    assert alice.refresh_token is not None
    assert ack(live.store("alice", alice.refresh_token, live.login_token())).ok
    assert peek(_credential(live, "alice").token or "")[1]["sub"] == "alice"


@pytest.mark.parametrize(
    "who",
    [None, ("token_manager", "token-manager"), ("node-1", "execute-host"), ("runner", "login")],
)
def test_start_job_only_from_the_queue_manager(
    live: Deployment, who: tuple[str, str] | None
) -> None:
    """A StartJob with an exec step from anyone but the queue manager is refused; nothing runs."""
    marker = live.workdir / f"exec-ran-{who[1] if who else 'anonymous'}"
    token = None if who is None else live.token(who[0], who[1], "node-0")
    reply = live.post_rpc("node-0", _start_job(802, marker), token)
    assert reply.status_code == (401 if who is None else 403)
    time.sleep(1.0)
    assert not marker.exists()
    assert not (live.workdir / "services" / "node-0" / "sandboxes" / "job-802").exists()


def test_start_job_from_the_queue_manager_runs(live: Deployment) -> None:
    """The control case: the queue manager's own StartJob is taken and its step runs."""
    marker = live.workdir / "exec-ran-queue-manager"
    token = live.token("queue_manager", "queue-manager", "node-0")
    assert ack(live.post_rpc("node-0", _start_job(803, marker), token)).ok
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists()


def test_credential_update_only_from_the_queue_manager(live: Deployment) -> None:
    """A CredentialUpdate pushed to a host by the token manager or no one is refused."""
    update = CredentialUpdate(
        user="alice", service="vo", token="attacker-token", jti="evil", exp=time.time() + 9e6
    )
    assert live.post_rpc("node-0", update, None).status_code == 401
    tm = live.token("token_manager", "token-manager", "node-0")
    assert live.post_rpc("node-0", update, tm).status_code == 403
    # A job started now gets the queue manager's token, not the attacker's.
    token = live.token("queue_manager", "queue-manager", "node-0")
    job = StartJob(
        job=804,
        slot=1,
        user="alice",
        service="vo",
        token="the-genuine-token",
        jti="genuine",
        exp=time.time() + 600,
        program=JobProgram(steps=(ComputeStep(seconds=3),)),
    )
    assert ack(live.post_rpc("node-0", job, token)).ok
    deadline = time.monotonic() + 20
    staged = []
    while not staged and time.monotonic() < deadline:
        staged = [e for e in live.events("node-0") if e["kind"] == "stage" and e["job"] == 804]
        time.sleep(0.1)
    assert staged and staged[0]["jti"] == "genuine"


def test_unknown_message_type_for_a_role_is_403(live: Deployment) -> None:
    """Deny by default: a message type the token manager accepts from no one (JobFinished)."""
    from scitokens_batch.protocol import JobFinished

    host = live.token("node-0", "execute-host", "token_manager")
    done = JobFinished(job=1, host="node-0", exit_code=0)
    assert live.post_rpc("token_manager", done, host).status_code == 403
