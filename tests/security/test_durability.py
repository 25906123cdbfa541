"""kill -9 against the live issuer and token manager: no rotation, no stored credential, no
renewal is lost, and nothing secret is left behind on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest
import trio

from scitokens_batch.protocol import (
    Ack,
    CredentialRequest,
    CredentialResponse,
    StoreCredential,
)

from .helpers import AUDIENCE, SCOPES, Live, live

pytestmark = pytest.mark.live

ROUNDS = 30


def _rows(db: Path) -> dict[str, dict[str, object]]:
    """The rows of a service's durable table, read as another process would after a crash."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {k: json.loads(d) for k, d in conn.execute("SELECT key, doc FROM rows")}


def test_issuer_killed_around_rotations_loses_none() -> None:
    """30 rotations, each followed by SIGKILL of the issuer at a random moment (in flight, or
    0-500 ms after the answer): after each restart the refresh token the client holds (the new
    one when an answer arrived, else the old one) still refreshes."""
    rng = random.Random(14)
    with _one(("vo",)) as svc:
        held = svc.login()
        refused: list[str] = []
        answered_then_killed = 0
        for i in range(ROUNDS):
            in_flight = i % 2 == 1
            delay = rng.uniform(0.0, 0.03) if in_flight else rng.uniform(0.0, 0.5)
            pid = svc.run.services["vo"].pid
            assert pid is not None
            new = trio.run(_refresh_then_kill, svc, held, pid, delay, in_flight)
            svc.kill9("vo")
            svc.restart("vo")
            if new is not None:
                answered_then_killed += 1
                held = new
            answer = trio.run(_refresh_once, svc, held)
            if answer.status_code != 200:
                refused.append(f"round {i}: {answer.status_code} {answer.text}")
                break
            held = answer.json()["refresh_token"]
        assert refused == []
        assert answered_then_killed >= ROUNDS // 2
        assert not list(svc.workdir("vo").glob(".*tmp*"))


async def _refresh_once(svc: Live, rt: str) -> httpx.Response:
    async with svc.client() as client:
        return await svc.refresh(client, rt)


async def _refresh_then_kill(
    svc: Live, rt: str, pid: int, delay: float, in_flight: bool
) -> str | None:
    """Refresh, and SIGKILL the issuer ``delay`` after sending (in flight) or after the
    answer; the new refresh token when an answer arrived."""
    got: str | None = None
    async with svc.client() as client:
        if not in_flight:
            answer = await svc.refresh(client, rt)
            assert answer.status_code == 200, answer.text
            await trio.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            return str(answer.json()["refresh_token"])

        async def ask() -> None:
            nonlocal got
            try:
                answer = await svc.refresh(client, rt)
            except httpx.TransportError:
                return
            if answer.status_code == 200:
                got = answer.json()["refresh_token"]

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await trio.sleep(delay)
                os.kill(pid, signal.SIGKILL)
    return got


def test_token_manager_killed_after_store_and_renewal_loses_none() -> None:
    """30 credentials, each stored (StoreCredential acknowledged, then renewed at once: a
    rotation) and followed by SIGKILL of the token manager 0-300 ms later: after the restarts
    every credential yields an access token, and every refresh token on its disk is the
    issuer's current one (not rotated away, not revoked)."""
    rng = random.Random(15)
    with _one(("vo", "token_manager")) as svc:
        for i in range(ROUNDS):
            rt = svc.login()
            answer = trio.run(_store, svc, f"svc{i}", rt)
            assert isinstance(answer, Ack) and answer.ok, answer
            trio.run(trio.sleep, rng.uniform(0.0, 0.3))
            svc.kill9("token_manager")
            svc.restart("token_manager")
        tokens = trio.run(_ask_all, svc)
        assert [t is not None for t in tokens] == [True] * ROUNDS
        stored = _rows(svc.workdir("token_manager") / "credentials.db")
        assert len(stored) == ROUNDS
        grants = _rows(svc.workdir("vo") / "grants.db")
        for row in stored.values():
            digest = hashlib.sha256(str(row["refresh_token"]).encode()).hexdigest()
            grant = grants[digest]
            assert grant.get("rotated_at") is None and not grant.get("revoked"), grant
        assert not list(svc.workdir("token_manager").glob(".*tmp*"))


async def _store(svc: Live, service: str, rt: str) -> object:
    transport = svc.run.transport()
    try:
        return await transport.request(
            "test",
            "token_manager",
            StoreCredential(
                user="alice",
                service=service,
                issuer="vo",
                scopes=" ".join(SCOPES),
                audience=AUDIENCE,
                refresh_token=rt,
            ),
        )
    finally:
        await transport.aclose()


async def _ask_all(svc: Live) -> list[str | None]:
    # Only the queue manager may ask for credentials: call as the queue manager.
    transport = svc.run.transport()
    transport.rpc_tokens = {
        "token_manager": svc.run._service_token("queue_manager", "queue-manager", "token_manager")
    }
    tokens: list[str | None] = []
    try:
        for i in range(ROUNDS):
            answer = await transport.request(
                "test", "token_manager", CredentialRequest(user="alice", service=f"svc{i}", wait=20)
            )
            assert isinstance(answer, CredentialResponse)
            tokens.append(answer.token)
    finally:
        await transport.aclose()
    return tokens


def test_leftovers_of_killed_processes_are_removed_at_start() -> None:
    """Partial temporary copies of a store (a write cut by kill -9) and a killed execute host's
    job sandboxes with their tokens are removed when the service starts again."""
    with _one(("vo", "token_manager")) as svc:
        host = next(n for n, s in svc.run.services.items() if s.role == "execute-host")
        svc.kill9("token_manager")
        tm_dir = svc.workdir("token_manager")
        for k in range(32):
            (tm_dir / f".credentials.json.tmp-{k:016x}").write_text('[{"refresh_token": "rt-')
        svc.restart("token_manager")
        assert not list(tm_dir.glob(".*tmp*"))
        sandboxes = svc.workdir(host) / "sandboxes"
        for job in range(5):
            creds = sandboxes / f"job-{job}" / ".condor_creds"
            creds.mkdir(parents=True)
            (creds / "vo.use").write_text('{"access_token": "eyJ..."}')
        svc.run.start(host)
        trio.run(svc.run.wait_healthy, [host])
        assert not list(sandboxes.glob("job-*"))


def _one(names: tuple[str, ...]) -> contextlib.AbstractContextManager[Live]:
    return contextlib.contextmanager(lambda: live(names))()
