"""RFC 9700 §4.14.2 against the live issuer: one rotation per refresh token, reuse revokes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import trio

from .helpers import Live, live

pytestmark = pytest.mark.live


@pytest.fixture(name="svc", scope="module")
def _svc() -> Iterator[Live]:
    yield from live(("vo",))


def test_fifty_parallel_refreshes_make_one_successor(svc: Live) -> None:
    """50 concurrent refreshes with one token over HTTPS all carry the same successor (one
    rotation, no new branch); once the successor is used, the old token is reuse: refused, and
    the successor's successor dies with the family."""
    rt = svc.login()

    async def attack() -> list[httpx.Response]:
        answers: list[httpx.Response] = []
        async with svc.client() as client:

            async def one() -> None:
                answers.append(await svc.refresh(client, rt))

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        nursery.start_soon(one)
        return answers

    answers = trio.run(attack)
    assert [a.status_code for a in answers] == [200] * 50
    successors = {a.json()["refresh_token"] for a in answers}
    access = {a.json()["access_token"] for a in answers}
    assert len(successors) == 1 and len(access) == 50
    (successor,) = successors

    async def after() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with svc.client() as client:
            nxt = await svc.refresh(client, successor)
            replay = await svc.refresh(client, rt)
            newest = await svc.refresh(client, nxt.json()["refresh_token"])
            return nxt, replay, newest

    nxt, replay, newest = trio.run(after)
    assert nxt.status_code == 200
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert "family is revoked" in replay.json()["error_description"]
    assert (newest.status_code, newest.json()["error"]) == (400, "invalid_grant")
    assert newest.json()["error_description"] == "refresh token revoked"
    reuse = [ln for ln in svc.events("vo").read_text().splitlines() if '"refresh_reuse"' in ln]
    assert len(reuse) == 1


def test_retry_within_grace_is_idempotent(svc: Live) -> None:
    """A client that lost the answer retries with the same token and gets the same successor,
    which keeps working (nobody is locked out)."""
    rt = svc.login()

    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with svc.client() as client:
            first = await svc.refresh(client, rt)
            retry = await svc.refresh(client, rt)
            used = await svc.refresh(client, retry.json()["refresh_token"])
            return first, retry, used

    first, retry, used = trio.run(go)
    assert first.status_code == retry.status_code == used.status_code == 200
    assert first.json()["refresh_token"] == retry.json()["refresh_token"]
