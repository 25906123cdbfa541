"""Third-party copies at the destination data server (WebDAV HTTP-TPC pull; L2, M1-M5)."""

from __future__ import annotations

import trio
import trio.testing

from scitokens_batch.protocol import DataResponse, ThirdPartyCopy
from scitokens_batch.tokens import Reason
from scitokens_batch.transport import Unreachable

from .transfer_helpers import BNL, CERN, build, dataset, mint, of, transfer_scenario

READ = "storage.read:/data/raw"
WRITE = "storage.modify:/data/copy storage.read:/data/copy"


def copy(source_token: str | None, destination_token: str | None, **kw: object) -> ThirdPartyCopy:
    """A copy of raw/0 (1 GB) from cern to bnl."""
    fields: dict[str, object] = {
        "source": "cern",
        "source_path": "/vo/data/raw/0",
        "destination_path": "/vo/data/copy/0",
        "size": 1_000_000_000,
        "transfer": "t-1/0",
    }
    fields.update(kw)
    return ThirdPartyCopy(
        source_token=source_token,
        destination_token=destination_token,
        **fields,  # type: ignore[arg-type]
    )


async def test_copy_takes_the_slower_link(autojump_clock: trio.testing.MockClock) -> None:
    """L2 tokens: the destination checks its write token, the source its read token, both record
    the use (tagged with the transfer), and 1 GB takes 20 s, the slower (50 MB/s) link's time."""
    world, sink = build(transfer_scenario(dataset(2, "1GB"), cern_bw="50MB/s"))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    start = trio.current_time()
    answer = await world.data_servers["bnl"].handle(copy(src, dst))
    assert answer == DataResponse(status=201, size=1_000_000_000)
    assert trio.current_time() - start == 20.0
    assert world.data_servers["bnl"].files["/vo/data/copy/0"] == 1_000_000_000
    uses = {
        (e.actor, e.fields["op"], e.fields["path"], e.fields["transfer"])
        for e in of(sink.events, "use")
    }
    assert uses == {
        ("bnl", "create", "/vo/data/copy/0", "t-1/0"),
        ("cern", "read", "/vo/data/raw/0", "t-1/0"),
    }


async def test_copy_over_an_existing_file_is_a_modify(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B8/M4: copying onto an existing file needs (and, with storage.modify, has) overwrite rights: 200."""
    world, sink = build(transfer_scenario(dataset(2, "1GB")))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    assert (await world.data_servers["bnl"].handle(copy(src, dst))).status == 201
    assert (await world.data_servers["bnl"].handle(copy(src, dst))).status == 200
    assert [e.fields["op"] for e in of(sink.events, "use") if e.actor == "bnl"] == [
        "create",
        "modify",
    ]


async def test_refused_at_the_destination(autojump_clock: trio.testing.MockClock) -> None:
    """B9/M4: a read-only destination token cannot write: 403 from the destination, and the
    source is never asked."""
    world, sink = build(transfer_scenario(dataset(2, "1GB")))
    src = await mint(world, READ, CERN)
    read_only = await mint(world, "storage.read:/data/copy", BNL)
    answer = await world.data_servers["bnl"].handle(copy(src, read_only))
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.reason, answer.side) == (
        403,
        Reason.INSUFFICIENT_SCOPE,
        "destination",
    )
    assert not of(sink.events, "use") and [e.actor for e in of(sink.events, "reject")] == ["bnl"]
    assert "/vo/data/copy/0" not in world.data_servers["bnl"].files


async def test_refused_at_the_source(autojump_clock: trio.testing.MockClock) -> None:
    """C4: a source token for another audience is refused by the source (401 wrong_audience, side
    source); no bytes move and no file appears at the destination."""
    world, sink = build(transfer_scenario(dataset(2, "1GB")))
    wrong = await mint(world, READ, BNL)
    dst = await mint(world, WRITE, BNL)
    start = trio.current_time()
    answer = await world.data_servers["bnl"].handle(copy(wrong, dst))
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.reason, answer.side) == (401, Reason.WRONG_AUDIENCE, "source")
    assert trio.current_time() == start
    assert [(e.actor, e.fields["reason"]) for e in of(sink.events, "reject")] == [
        ("cern", "wrong_audience")
    ]
    assert "/vo/data/copy/0" not in world.data_servers["bnl"].files


async def test_missing_source_file(autojump_clock: trio.testing.MockClock) -> None:
    """M3: an authorized read of a missing file is the source's 404."""
    world, _ = build(transfer_scenario(dataset(2, "1GB")))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    answer = await world.data_servers["bnl"].handle(copy(src, dst, source_path="/vo/data/raw/9"))
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.side) == (404, "source")


async def test_unreachable_source(autojump_clock: trio.testing.MockClock) -> None:
    """M1: a source that is down never judges the token; the destination answers 502, naming it."""
    world, _ = build(transfer_scenario(dataset(2, "1GB")))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    world.network.set_down("cern", True)
    answer = await world.data_servers["bnl"].handle(copy(src, dst))
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.side) == (502, "source")
    assert "cern unreachable (down)" in answer.detail


async def test_destination_restart_breaks_the_copy(autojump_clock: trio.testing.MockClock) -> None:
    """M4: a destination restart mid-copy breaks the connection (Unreachable) and writes no file,
    as for a plain PUT."""
    world, _ = build(transfer_scenario(dataset(2, "1GB")))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    caught: list[Unreachable] = []

    async def run_copy() -> None:
        try:
            await world.data_servers["bnl"].handle(copy(src, dst))
        except Unreachable as exc:
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_copy)
        await trio.sleep(5)
        world.data_servers["bnl"].restart()
    assert [c.dest for c in caught] == ["bnl"]
    assert "/vo/data/copy/0" not in world.data_servers["bnl"].files
    assert world.data_servers["cern"].link.active == 0


async def test_copy_outlives_its_tokens(autojump_clock: trio.testing.MockClock) -> None:
    """E1 is judged when the copy starts only (as long-transfer.toml shows for plain
    transfers): a 2-hour copy on 1-hour tokens completes."""
    world, sink = build(transfer_scenario(dataset(1, "720GB"), cern_bw="100MB/s"))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    answer = await world.data_servers["bnl"].handle(copy(src, dst, size=720_000_000_000))
    assert isinstance(answer, DataResponse) and answer.status == 201
    assert trio.current_time() == 7200.0
    assert all(e.fields["headroom_s"] == 3600.0 for e in of(sink.events, "use"))


async def test_push_from_the_source(autojump_clock: trio.testing.MockClock) -> None:
    """HTTP-TPC push: sent to the source, which checks its read token and writes to the
    destination with the destination token; both record the use, the file arrives, and 1 GB
    takes the slower link's time as for a pull."""
    world, sink = build(transfer_scenario(dataset(2, "1GB"), cern_bw="50MB/s"))
    src, dst = await mint(world, READ, CERN), await mint(world, WRITE, BNL)
    start = trio.current_time()
    answer = await world.data_servers["cern"].handle(copy(src, dst, destination="bnl"))
    assert answer == DataResponse(status=201, size=1_000_000_000)
    assert trio.current_time() - start == 20.0
    assert world.data_servers["bnl"].files["/vo/data/copy/0"] == 1_000_000_000
    uses = {(e.actor, e.fields["op"], e.fields["transfer"]) for e in of(sink.events, "use")}
    assert uses == {("bnl", "create", "t-1/0"), ("cern", "read", "t-1/0")}


async def test_push_refused_at_the_destination(autojump_clock: trio.testing.MockClock) -> None:
    """A push whose destination token may not write comes back 403 with side 'destination' and nothing is written."""
    world, _ = build(transfer_scenario(dataset(2, "1GB")))
    src = await mint(world, READ, CERN)
    read_only = await mint(world, "storage.read:/data/copy", BNL)
    answer = await world.data_servers["cern"].handle(copy(src, read_only, destination="bnl"))
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.side) == (403, "destination")
    assert "/vo/data/copy/0" not in world.data_servers["bnl"].files


async def test_push_refused_at_the_source(autojump_clock: trio.testing.MockClock) -> None:
    """A push whose source token is for another server is 401 with side 'source' and the destination is never asked."""
    world, sink = build(transfer_scenario(dataset(2, "1GB")))
    dst = await mint(world, WRITE, BNL)
    wrong = await mint(world, READ, BNL)  # audience: the destination, not the source
    answer = await world.data_servers["cern"].handle(copy(wrong, dst, destination="bnl"))
    assert isinstance(answer, DataResponse)
    assert (answer.status, answer.side) == (401, "source")
    assert not [e for e in of(sink.events, "use") if e.actor == "bnl"]
