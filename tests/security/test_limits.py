"""Request limits of the live issuer: oversized forms (413), oversized headers (431), echoed
values bounded in answers and events, and a token bucket per client address (429)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
import trio

from scitokens_batch.protocol import wire as w

from .helpers import Live, live

pytestmark = pytest.mark.live


@pytest.fixture(name="svc", scope="module")
def _svc() -> Iterator[Live]:
    yield from live(("vo",))


def test_huge_grant_type_is_refused_and_records_nothing(svc: Live) -> None:
    """The reported amplification: 20 unauthenticated token requests with a 900 kB grant_type
    are each refused with 413, and the issuer's event file grows by less than 1 kB."""
    before = svc.events("vo").stat().st_size if svc.events("vo").exists() else 0

    async def attack() -> list[int]:
        async with svc.client() as client:
            return [
                (
                    await client.post(
                        svc.token_url, content=b"grant_type=" + b"g" * 900_000 + b"&client_id=x"
                    )
                ).status_code
                for _ in range(20)
            ]

    assert trio.run(attack) == [413] * 20
    after = svc.events("vo").stat().st_size if svc.events("vo").exists() else 0
    assert after - before < 1024


def test_echoed_values_are_bounded_in_answers_and_events(svc: Live) -> None:
    """A 60 kB grant_type under the form limit, from an authenticated client: the answer's
    error_description and the recorded event hold a short prefix only (20 requests add < 40 kB
    of events, against 1.2 MB sent)."""
    before = svc.events("vo").stat().st_size if svc.events("vo").exists() else 0
    auth = {"Authorization": w.basic_header("token_manager", svc.tm_secret)}

    async def attack() -> list[httpx.Response]:
        async with svc.client() as client:
            return [
                await client.post(svc.token_url, data={"grant_type": "g" * 60_000}, headers=auth)
                for _ in range(20)
            ]

    answers = trio.run(attack)
    assert {a.status_code for a in answers} == {400}
    for answer in answers:
        assert answer.json()["error"] == "unsupported_grant_type"
        assert len(answer.json()["error_description"]) <= 250
    after = svc.events("vo").stat().st_size
    assert after - before < 40_000


def test_huge_header_is_refused(svc: Live) -> None:
    """A 70 kB header is refused with 431 before anything is read."""

    async def attack() -> int:
        async with svc.client() as client:
            return (await client.post(svc.token_url, headers={"X-Big": "h" * 70_000})).status_code

    assert trio.run(attack) == 431


def test_per_address_rate_limit_answers_429_with_retry_after() -> None:
    """With max_requests_per_second_per_address = 20, a burst of 100 token requests from one
    address gets 429 with Retry-After beyond the bucket; after that wait, requests pass again."""
    with _limited() as svc:

        async def burst() -> list[httpx.Response]:
            answers: list[httpx.Response] = []
            async with svc.client() as client:

                async def one() -> None:
                    answers.append(await client.post(svc.token_url, data={"client_id": "x"}))

                with trio.fail_after(60):
                    async with trio.open_nursery() as nursery:
                        for _ in range(100):
                            nursery.start_soon(one)
            return answers

        answers = trio.run(burst)
        limited = [a for a in answers if a.status_code == 429]
        assert len(limited) >= 50
        assert all(int(a.headers["retry-after"]) >= 1 for a in limited)
        assert limited[0].json()["error"] == "temporarily_unavailable"
        passed = [a for a in answers if a.status_code != 429]
        assert passed and all(a.status_code == 400 for a in passed)  # no grant_type

        async def later() -> int:
            await trio.sleep(int(limited[0].headers["retry-after"]))
            async with svc.client() as client:
                return (await client.post(svc.token_url, data={"client_id": "x"})).status_code

        assert trio.run(later) == 400


def _limited() -> contextlib.AbstractContextManager[Live]:
    keys = "max_requests_per_second_per_address = 20"
    return contextlib.contextmanager(lambda: live(("vo",), issuer_keys=keys))()
