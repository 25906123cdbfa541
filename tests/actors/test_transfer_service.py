"""The transfer service (FTS) in virtual time: token exchange, refresh, copies (L5-L7, P12, P13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from scitokens_batch.actors import ManagedToken
from scitokens_batch.metrics import ListSink
from scitokens_batch.protocol import (
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_REFRESH,
    TransferAccepted,
    TransferFile,
    TransferRefused,
    TransferSubmit,
)
from scitokens_batch.scenario import World
from scitokens_batch.tokens import build_claims, encode

from .helpers import simulate
from .transfer_helpers import (
    BNL,
    CERN,
    EPOCH,
    FTS_AUD,
    build,
    dataset,
    mint,
    of,
    rule,
    transfer_scenario,
)

READ = "storage.read:/data/raw"
WRITE = "storage.modify:/data/copy storage.read:/data/copy"


def times(events: list[Any], kind: str, **match: Any) -> list[float]:
    """The times of the events of ``kind`` matching ``match``."""
    return [e.t for e in of(events, kind, **match)]


def by_token(events: list[Any], kind: str) -> dict[str, list[float]]:
    """token -> times of its ``kind`` events (exchange, refresh, refresh_failed)."""
    out: dict[str, list[float]] = {}
    for e in of(events, kind):
        if e.actor == "fts":
            out.setdefault(e.fields["token"], []).append(e.t)
    return out


# -- exchange and refresh -------------------------------------------------------------------------


async def test_exchange_then_refresh_at_exp_minus_margin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L6/L7: each storage token is exchanged at submission, then refreshed at exp - 300 s, again
    and again (3300, 6600, 9900 s) while its 10000 s copy runs; with single-use refresh tokens
    (grace 0 s) every refresh presents the rotated one (E4), and refreshing stops with the copy."""
    spec = transfer_scenario(dataset(1, "1000GB") + rule(), grace="0s")
    world, events = await simulate(spec, until=20000)
    exchanges = by_token(events, "exchange")
    assert sorted(exchanges.values()) == [[0.0], [0.0]]
    assert sorted(by_token(events, "refresh").values()) == [[3300.0, 6600.0, 9900.0]] * 2
    assert not of(events, "refresh_failed")
    assert times(events, "transfer_done") == [10000.0]
    # P13: the exchanged tokens live as long as the *FTS client's* tokens (1 h).
    fts_mints = [e for e in of(events, "mint") if e.fields["client"] == "fts"]
    assert {e.fields["exp"] - e.fields["iat"] for e in fts_mints} == {3600}
    assert [e.fields["grant"] for e in fts_mints].count(GRANT_TOKEN_EXCHANGE) == 2
    # Same scope and audience as the submitted tokens (L6).
    submitted = {
        (e.fields["scope"], e.fields["aud"])
        for e in of(events, "mint")
        if e.fields["client"] == "rucio" and e.fields["scope"] != "fts"
    }
    # The exchange asks for offline_access, which the issuer grants and lists (as INDIGO IAM
    # does); the refreshes ask for the capabilities only.
    assert all(
        e.fields["scope"].endswith(" offline_access")
        for e in fts_mints
        if e.fields["grant"] == GRANT_TOKEN_EXCHANGE
    )
    fts_scopes = {
        (e.fields["scope"].removesuffix(" offline_access"), e.fields["aud"]) for e in fts_mints
    }
    assert fts_scopes == submitted
    assert world.transfer_service is not None
    assert all(m.dead is None for m in world.transfer_service.managed())


def test_exchange_and_refresh_requests() -> None:
    """L6: the exchange asks for a refresh token with the token's scope + offline_access and its
    audience, as the FTS client with client_secret_basic; L7: the refresh repeats scope and
    audience."""
    spec = transfer_scenario()
    world_fts = _service(spec)
    m = ManagedToken(
        id="j",
        issuer="wlcg",
        scope=READ,
        audience=CERN,
        subject_token="eyJ.subject.token",
        refresh_token="rt-current",
    )
    exchange = world_fts._exchange_request(m)
    assert (exchange.grant_type, exchange.subject_token_type, exchange.requested_token_type) == (
        GRANT_TOKEN_EXCHANGE,
        TOKEN_TYPE_ACCESS,
        TOKEN_TYPE_REFRESH,
    )
    assert (exchange.scope, exchange.audience) == (f"{READ} offline_access", CERN)
    assert (exchange.client_id, exchange.client_secret, exchange.client_auth) == (
        "fts",
        "cs-fts",
        "client_secret_basic",
    )
    assert exchange.subject_token == "eyJ.subject.token"
    refresh = world_fts._refresh_request(m)
    assert (refresh.grant_type, refresh.refresh_token, refresh.scope, refresh.audience) == (
        "refresh_token",
        "rt-current",
        READ,
        CERN,
    )


def _service(spec: Any) -> Any:
    """The transfer service of ``spec``'s world (built outside trio: no task is started)."""

    async def get() -> Any:
        world, _ = build(spec)
        return world.transfer_service

    return trio.run(get)


async def test_many_files_share_one_managed_token(autojump_clock: trio.testing.MockClock) -> None:
    """L3/L6: 30 files in 3 jobs carry Rucio's one cached source and one destination token, and
    FTS exchanges each once: tokens.exchanged is 2, not 60."""
    spec = transfer_scenario(dataset(30, "5GB") + rule(), bulk=10)
    world, events = await simulate(spec, until=5000)
    assert [e.fields["job"] for e in of(events, "transfer_submitted")] == [
        "rule-0-1",
        "rule-0-2",
        "rule-0-3",
    ]
    assert len(of(events, "exchange")) == 2
    assert len([e for e in of(events, "mint") if e.fields["client"] == "rucio"]) == 3
    assert len(of(events, "transfer_done")) == 30
    assert world.transfer_service is not None and len(world.transfer_service.managed()) == 2


# -- outages and lost refresh tokens -------------------------------------------------------------


async def test_issuer_outage_delays_refresh_and_copies_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """K4/L7 with an outage (P10): the refresh due at 3300 s fails while the issuer is down
    (3200-3500 s) and is retried after 30, 60 and 120 s; the copy due at 3500 s waits for the
    refreshed token (3510 s), and every file completes."""
    body = (
        dataset(10, "50GB")
        + rule()
        + """
[[faults]]
kind = "issuer_outage"
issuer = "wlcg"
at = "3200s"
duration = "5m"
"""
    )
    _, events = await simulate(transfer_scenario(body, concurrency=1), until=20000)
    assert sorted(by_token(events, "refresh_failed").values()) == [[3300.0, 3330.0, 3390.0]] * 2
    assert sorted(by_token(events, "refresh").values()) == [[3510.0]] * 2
    starts = {e.fields["file"]: e.t for e in of(events, "transfer_state", state="active")}
    assert starts == {k: 500.0 * k for k in range(7)} | {7: 3510.0, 8: 4010.0, 9: 4510.0}
    assert len(of(events, "transfer_done")) == 10 and not of(events, "transfer_failed")
    assert min(e.fields["headroom_s"] for e in of(events, "use")) > 300


def state_loss(at: str, restore: str) -> str:
    """The transfer service loses its refresh tokens at ``at``."""
    return f"""
[[faults]]
kind = "transfer_service_state_loss"
at = "{at}"
restore = "{restore}"
"""


async def test_lost_refresh_tokens_fail_the_waiting_files(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """P12: with its stored refresh tokens gone (state loss at 1000 s) FTS cannot refresh at
    3300 s: the file still waiting fails then, saying so; the running copy completes."""
    body = dataset(3, "200GB") + rule() + state_loss("1000s", "none")
    _, events = await simulate(transfer_scenario(body, concurrency=1), until=20000)
    (failed,) = of(events, "transfer_failed")
    assert (failed.t, failed.fields["file"], failed.fields["attempts"]) == (3300.0, 2, 0)
    assert "refresh token lost" in failed.fields["reason"]
    assert "P12" in failed.fields["reason"]
    assert times(events, "transfer_done") == [2000.0, 4000.0]
    assert not of(events, "refresh")


async def test_replayed_rotated_refresh_token_is_refused_with_single_use_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """P12/E4: restored from a backup older than the 3300 s rotation, FTS presents a refresh
    token already used; with refresh_token_grace = 0 s the issuer answers invalid_grant at
    6600 s and the file not yet started fails with that reason (no hang)."""
    body = dataset(5, "200GB") + rule() + state_loss("3400s", "backup")
    _, events = await simulate(transfer_scenario(body, concurrency=1, grace="0s"), until=20000)
    assert sorted(by_token(events, "refresh").values()) == [[3300.0]] * 2
    (failed,) = of(events, "transfer_failed")
    assert (failed.t, failed.fields["file"]) == (6600.0, 4)
    assert "invalid_grant" in failed.fields["reason"]
    assert "rotated" in failed.fields["reason"]
    assert times(events, "transfer_done") == [2000.0, 4000.0, 6000.0, 8000.0]
    final = [e for e in of(events, "refresh_failed") if e.fields["retry_in_s"] is None]
    assert {e.t for e in final} == {6600.0}


async def test_grace_absorbs_the_replayed_refresh_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """P12's advice: with the issuer's default one-day grace (E4) the same replay is accepted
    and every file completes."""
    body = dataset(5, "200GB") + rule() + state_loss("3400s", "backup")
    _, events = await simulate(transfer_scenario(body, concurrency=1, grace="1d"), until=20000)
    assert sorted(by_token(events, "refresh").values()) == [[3300.0, 6600.0, 9900.0]] * 2
    assert len(of(events, "transfer_done")) == 5 and not of(events, "transfer_failed")


async def test_revoked_refresh_token_fails_the_files(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """E4/RFC 7009: a refresh token revoked at the issuer (here: every token of the subject,
    Rucio's client, by the VO admin) is invalid_grant at the next refresh; files fail with it."""
    spec = transfer_scenario(dataset(3, "200GB") + rule(), concurrency=1)
    world, sink = build(spec)
    async with trio.open_nursery() as nursery:
        await world.start(nursery)
        await trio.sleep(1000)
        assert world.issuers["wlcg"].revoke_user("rucio") == 2  # FTS's two refresh tokens
        await trio.sleep(19000)
        nursery.cancel_scope.cancel()
    (failed,) = of(sink.events, "transfer_failed")
    assert failed.t == 3300.0 and "invalid_grant" in failed.fields["reason"]
    assert "revoked" in failed.fields["reason"]


# -- copies ---------------------------------------------------------------------------------------


async def test_concurrency_is_respected(autojump_clock: trio.testing.MockClock) -> None:
    """FTS copies the files of its L5 jobs at most `concurrency` (3) at a time; 7 files of 10 GB sharing 100 MB/s links
    end at 300, 300, 300, 600, 600, 600 and 700 s."""
    _, events = await simulate(
        transfer_scenario(dataset(7, "10GB") + rule(), concurrency=3), until=2000
    )
    running, peak = 0, 0
    for e in events:
        if e.kind == "transfer_state" and e.fields["state"] == "active":
            running += 1
            peak = max(peak, running)
        elif e.kind in ("transfer_done", "transfer_failed"):
            running -= 1
    assert peak == 3
    assert times(events, "transfer_done") == [300.0] * 3 + [600.0] * 3 + [700.0]


PARTITION = """
[[faults]]
kind = "partition"
between = ["fts", "bnl"]
at = "0s"
duration = "{duration}"
"""


async def test_unreachable_destination_is_retried_then_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A copy whose destination cannot be reached is retried (with the current tokens, L7) after
    30 and 60 s (max_retries 2), then the file fails with the reason."""
    body = dataset(1, "1GB") + rule() + PARTITION.format(duration="1h")
    _, events = await simulate(transfer_scenario(body, max_retries=2), until=2000)
    assert times(events, "transfer_state", state="active") == [0.0, 30.0, 90.0]
    (failed,) = of(events, "transfer_failed")
    assert failed.t == 90.0 and failed.fields["attempts"] == 3
    assert failed.fields["reason"] == "destination bnl unreachable (partition)"


async def test_retry_after_a_partition_heals(autojump_clock: trio.testing.MockClock) -> None:
    """The same copy with a 50 s partition succeeds on its third attempt, at 90 s, its tokens
    still fresh (L7)."""
    body = dataset(1, "1GB") + rule() + PARTITION.format(duration="50s")
    _, events = await simulate(transfer_scenario(body, max_retries=2), until=2000)
    (done,) = of(events, "transfer_done")
    assert (done.t, done.fields["attempts"]) == (100.0, 3)
    retried = of(events, "transfer_state", state="submitted")[1:]
    assert [e.fields["retry_in_s"] for e in retried] == [30.0, 60.0]


async def test_refused_copy_names_the_end(autojump_clock: trio.testing.MockClock) -> None:
    """M3: a copy of a file missing at the source is the source's 404, retried, then failed saying
    which end refused."""
    body = dataset(1, "1GB") + rule()
    spec = transfer_scenario(body, max_retries=1)
    world, sink = build(spec)
    del world.data_servers["cern"].files["/vo/data/raw/0"]
    async with trio.open_nursery() as nursery:
        await world.start(nursery)
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    (failed,) = of(sink.events, "transfer_failed")
    assert failed.fields["reason"] == "source refused: 404 (no such file)"
    assert failed.fields["attempts"] == 2


# -- submission checks (L1, L5) -------------------------------------------------------------------


@asynccontextmanager
async def running(spec: Any) -> AsyncIterator[World]:
    """The world of ``spec`` with its actors started (no rules), cancelled on exit."""
    world, _ = build(spec)
    async with trio.open_nursery() as nursery:
        await world.start(nursery)
        yield world
        nursery.cancel_scope.cancel()


def refusals(world: World) -> list[int]:
    """The statuses of the transfer service's refusals so far."""
    sink = world.recorder.sink
    assert isinstance(sink, ListSink)
    return [e.fields["status"] for e in of(sink.events, "transfer_refused")]


def files(n: int) -> tuple[TransferFile, ...]:
    """``n`` files of raw to copy."""
    return tuple(
        TransferFile(
            source="cern",
            source_path=f"/vo/data/raw/{i}",
            destination="bnl",
            destination_path=f"/vo/data/copy/{i}",
            size=1_000_000_000,
        )
        for i in range(n)
    )


def signed(
    world: World,
    *,
    drop: str | None = None,
    subject: str = "rucio",
    scope: str = READ,
    audience: str = CERN,
) -> str:
    """A token signed by the issuer's key, for ``subject``, without claim ``drop``."""
    issuer = world.issuers["wlcg"]
    claims = build_claims(
        profile=issuer.profile,
        issuer=issuer.url,
        subject=subject,
        audience=audience,
        scopes=scope,
        issued_at=EPOCH,
        lifetime=3600,
        jti="forged-1",
    )
    if drop is not None:
        del claims[drop]
    return encode(claims, issuer.keys.signing_key(EPOCH))


async def submit(world: World, **kw: Any) -> Any:
    assert world.transfer_service is not None
    return await world.transfer_service.handle(TransferSubmit(**kw))


async def test_l5_refuses_a_token_without_aud_or_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L5: each storage token must carry iss, exp, scope and aud: a source token without aud, or a
    destination token without scope, is refused with 400 naming the token and the claim."""
    async with running(transfer_scenario(dataset(2, "1GB"))) as world:
        fts = await mint(world, "fts", FTS_AUD)
        src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
        answer = await submit(
            world,
            job="j1",
            files=files(2),
            source_tokens=(src, signed(world, drop="aud")),
            destination_tokens=(dst, dst),
            fts_token=fts,
        )
        assert isinstance(answer, TransferRefused) and answer.status == 400
        assert answer.reason.startswith("source_tokens[1]: ") and "'aud'" in answer.reason
        answer = await submit(
            world,
            job="j2",
            files=files(1),
            source_tokens=(src,),
            destination_tokens=(signed(world, drop="scope", audience=BNL),),
            fts_token=fts,
        )
        assert isinstance(answer, TransferRefused) and answer.status == 400
        assert answer.reason.startswith("destination_tokens[0]: ") and "'scope'" in answer.reason
        assert src not in answer.reason and dst not in answer.reason
        accepted = await submit(
            world,
            job="j3",
            files=files(1),
            source_tokens=(src,),
            destination_tokens=(dst,),
            fts_token=fts,
        )
        assert accepted == TransferAccepted(job="j3", files=1)


async def test_l5_one_token_per_file_both_or_neither(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L5: source and destination tokens come one per file, both or neither."""
    async with running(transfer_scenario(dataset(2, "1GB"))) as world:
        fts = await mint(world, "fts", FTS_AUD)
        src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
        answer = await submit(
            world,
            job="j1",
            files=files(2),
            source_tokens=(src, src),
            destination_tokens=(dst,),
            fts_token=fts,
        )
        assert isinstance(answer, TransferRefused)
        assert answer.reason.startswith("destination_tokens: expected one token per file (2)")
        answer = await submit(
            world, job="j2", files=files(2), source_tokens=(src, src), fts_token=fts
        )
        assert isinstance(answer, TransferRefused) and answer.status == 400
        answer = await submit(world, job="j3", files=(), fts_token=fts)
        assert isinstance(answer, TransferRefused) and answer.status == 400


async def test_fts_token_checks(autojump_clock: trio.testing.MockClock) -> None:
    """L1: the FTS token must be for the service's audience (401 wrong_audience otherwise) and
    hold the fts scope (403); a job id taken by other files is refused (409)."""
    async with running(transfer_scenario(dataset(1, "1GB"))) as world:
        src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
        job = {"files": files(1), "source_tokens": (src,), "destination_tokens": (dst,)}
        wrong_aud = await mint(world, "fts", CERN)
        answer = await submit(world, job="a", fts_token=wrong_aud, **job)
        assert isinstance(answer, TransferRefused)
        assert answer.status == 401 and "wrong_audience" in answer.reason
        no_fts = await mint(world, READ, FTS_AUD)
        answer = await submit(world, job="b", fts_token=no_fts, **job)
        assert isinstance(answer, TransferRefused)
        assert answer.status == 403 and "lacks 'fts'" in answer.reason
        fts = await mint(world, "fts", FTS_AUD)
        assert isinstance(await submit(world, job="c", fts_token=fts, **job), TransferAccepted)
        other = {**job, "files": files(2)[1:]}
        answer = await submit(world, job="c", fts_token=fts, **other)
        assert isinstance(answer, TransferRefused) and "already submitted" in answer.reason
        assert refusals(world) == [401, 403, 409]


async def test_same_submission_again_is_accepted_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A retry of an accepted submission (its answer lost) is accepted again with a
    transfer_resubmitted event, and its file is still copied once; other files, another
    submitter or a token that does not verify under the taken id are refused, and an
    unauthenticated caller learns nothing of the job (401, not 409)."""
    async with running(transfer_scenario(dataset(1, "1GB"))) as world:
        src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
        job = {"files": files(1), "source_tokens": (src,), "destination_tokens": (dst,)}
        fts = await mint(world, "fts", FTS_AUD)
        first = await submit(world, job="j", fts_token=fts, **job)
        again = await submit(world, job="j", fts_token=await mint(world, "fts", FTS_AUD), **job)
        assert first == again == TransferAccepted(job="j", files=1)
        stranger = signed(world, subject="mallory", scope="fts", audience=FTS_AUD)
        answer = await submit(world, job="j", fts_token=stranger, **job)
        assert isinstance(answer, TransferRefused) and answer.status == 409
        wrong_aud = await mint(world, "fts", CERN)
        answer = await submit(world, job="j", fts_token=wrong_aud, **job)
        assert isinstance(answer, TransferRefused) and answer.status == 401
        await trio.sleep(3600)
        sink = world.recorder.sink
        assert isinstance(sink, ListSink)
        assert [e.fields for e in of(sink.events, "transfer_resubmitted")] == [
            {"job": "j", "files": 1}
        ]
        assert len(of(sink.events, "transfer_submitted")) == 1
        assert len(of(sink.events, "transfer_done")) == 1
        assert refusals(world) == [409, 401]


async def test_resubmission_waits_for_the_first_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Durability: a retry arriving while the first submission is being committed is answered
    only once that commit returned, never before the job is durable."""
    async with running(transfer_scenario(dataset(1, "1GB"))) as world:
        service = world.transfer_service
        assert service is not None
        committed: list[float] = []

        async def slow_persist(rows: Any) -> None:
            await trio.sleep(5)
            committed.append(trio.current_time())

        service.persist = slow_persist
        src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
        fts = await mint(world, "fts", FTS_AUD)
        request = TransferSubmit(
            job="j", files=files(1), source_tokens=(src,), destination_tokens=(dst,), fts_token=fts
        )
        answered: list[float] = []

        async def ask() -> None:
            assert isinstance(await service.handle(request), TransferAccepted)
            answered.append(trio.current_time())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(1)
            nursery.start_soon(ask)
        assert committed and committed[0] == start + 5
        assert answered == [start + 5, start + 5]


def test_restored_service_knows_its_jobs_and_their_submitters() -> None:
    """Durability: a job's submitter and files are stored with it, so a service restarted from
    its rows accepts the same submission again and refuses other files (409); a row written
    without a fingerprint (an older store) matches no submission."""
    spec = transfer_scenario(dataset(1, "1GB"))

    async def main() -> None:
        async with running(spec) as world:
            service = world.transfer_service
            assert service is not None
            rows: dict[str, Any] = {}

            async def persist(changes: Any) -> None:
                rows.update(changes)

            service.persist = persist
            src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
            fts = await mint(world, "fts", FTS_AUD)
            job = {"files": files(1), "source_tokens": (src,), "destination_tokens": (dst,)}
            assert isinstance(await submit(world, job="j", fts_token=fts, **job), TransferAccepted)
            assert rows["job:j"]["fingerprint"]
            for stored, wanted in (
                (rows, {"files": files(1), "answer": TransferAccepted}),
                (rows, {"files": files(2)[1:], "answer": TransferRefused}),
                (
                    {**rows, "job:j": {"job": "j", "files": 1}},
                    {"files": files(1), "answer": TransferRefused},
                ),
            ):
                world2, _ = build(spec)
                fresh = world2.transfer_service
                assert fresh is not None
                fresh.restore_rows({k: v for k, v in stored.items() if v is not None})
                async with trio.open_nursery() as nursery:
                    await world2.start(nursery)
                    answer = await fresh.handle(
                        TransferSubmit(job="j", fts_token=fts, **{**job, "files": wanted["files"]})
                    )
                    nursery.cancel_scope.cancel()
                assert isinstance(answer, wanted["answer"]), answer
                if isinstance(answer, TransferRefused):
                    assert answer.status == 409

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_fts_keys_unavailable_is_503(autojump_clock: trio.testing.MockClock) -> None:
    """P10: with the issuer down at submission, FTS cannot fetch its keys: 503, try again."""
    async with running(transfer_scenario(dataset(1, "1GB"))) as world:
        fts = await mint(world, "fts", FTS_AUD)
        src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
        world.network.set_down("wlcg", True)
        answer = await submit(
            world,
            job="a",
            files=files(1),
            source_tokens=(src,),
            destination_tokens=(dst,),
            fts_token=fts,
        )
        assert isinstance(answer, TransferRefused) and answer.status == 503


async def test_a_dead_token_frees_a_worker_waiting_on_the_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """P12, never a hang: a worker waiting for a file's source token to be refreshed is freed at
    once when the file's destination token dies (the file fails), even if the source token is
    never refreshed."""
    from scitokens_batch.actors.transfer_service import FileState, _File

    async with running(transfer_scenario(dataset(1, "1GB"))) as world:
        fts = world.transfer_service
        assert fts is not None
        now = fts.now()
        stale = ManagedToken(id="s", issuer="wlcg", scope=READ, audience=CERN, ready=True, exp=now)
        fresh = ManagedToken(
            id="d", issuer="wlcg", scope=WRITE, audience=BNL, ready=True, exp=now + 3600
        )
        f = _File(job="j", index=0, spec=files(1)[0], source=stale, destination=fresh)
        stale.users.add(f)
        fresh.users.add(f)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fts._copy, f)
                await trio.sleep(1)
                assert f.state is FileState.SUBMITTED  # waiting for the source token
                fts._die(fresh, "refresh", "refresh refused: 400 invalid_grant")
        assert f.state is FileState.FAILED and f.attempts == 0


async def test_l5_neither_is_accepted_and_refused_by_the_storage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """L5 allows a job without storage tokens (FTS would use X.509, not modelled): it is accepted,
    nothing is exchanged, and the destination refuses the token-less copy (401 missing_token)."""
    spec = transfer_scenario(dataset(1, "1GB"), max_retries=0)
    world, sink = build(spec)
    async with trio.open_nursery() as nursery:
        await world.start(nursery)
        fts = await mint(world, "fts", FTS_AUD)
        answer = await submit(world, job="x509", files=files(1), fts_token=fts)
        assert answer == TransferAccepted(job="x509", files=1)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    (failed,) = of(sink.events, "transfer_failed")
    assert failed.fields["reason"].startswith("destination refused: 401 missing_token")
    assert not of(sink.events, "exchange")


async def test_push_mode_gives_the_same_copies(autojump_clock: trio.testing.MockClock) -> None:
    """``tpc_mode = "push"`` sends each copy to the source; the files arrive at the same virtual
    times as with the default pull (the slower link decides), and the source records the read."""
    body = dataset(4, "10GB") + rule()
    pull_world, pull_events = await simulate(transfer_scenario(body, concurrency=2), until=2000)
    push_world, push_events = await simulate(
        transfer_scenario(body, concurrency=2, overrides=("transfer_service.tpc_mode=push",)),
        until=2000,
    )
    assert push_world.transfer_service is not None and push_world.transfer_service.push
    assert times(push_events, "transfer_done") == times(pull_events, "transfer_done")
    assert len(times(push_events, "transfer_done")) == 4
    assert push_world.data_servers["bnl"].files == pull_world.data_servers["bnl"].files
    reads = [e for e in push_events if e.kind == "use" and e.actor == "cern"]
    assert len(reads) == 4
