"""Names that become file names: path traversal through a message, and a staging failure that
must fail one job, never the execute host (against real services on 127.0.0.1, and the wire
and sandbox checks on their own)."""

from __future__ import annotations

import errno
import json
import random
import time
from pathlib import Path

import pytest
import trio

from scitokens_batch.actors import ExecuteHost
from scitokens_batch.actors.execute_host import MemorySandbox
from scitokens_batch.live._sandbox import directory_sandboxes
from scitokens_batch.metrics import ListSink, Recorder
from scitokens_batch.protocol import (
    Ack,
    ComputeStep,
    CredentialUpdate,
    JobFinished,
    JobProgram,
    Message,
    StartJob,
)
from scitokens_batch.protocol import wire as w

from .deploy import Deployment, ack

TRAVERSALS = ["../../../tmp/x", "..", ".", "a/b", "/etc/passwd", "x\x00y", " ", ""]


def _envelope(service: str, job: int = 7) -> bytes:
    body = {
        "job": job,
        "slot": 0,
        "user": "alice",
        "service": service,
        "token": "t",
        "jti": "j",
        "exp": 1.0,
        "program": {"steps": []},
    }
    return json.dumps({"type": "StartJob", "body": body}).encode()


@pytest.mark.parametrize("service", TRAVERSALS)
def test_wire_refuses_a_service_that_is_not_a_plain_name(service: str) -> None:
    """decode_rpc refuses a StartJob whose service could leave the sandbox, naming the field."""
    with pytest.raises(w.WireError) as caught:
        w.decode_rpc(_envelope(service))
    assert "service must match" in str(caught.value)
    assert "tmp" not in str(caught.value)  # the value is never echoed


def test_wire_refuses_a_negative_job_id() -> None:
    """A negative job id (which would name a sandbox 'job--1') is refused at the wire."""
    with pytest.raises(w.WireError):
        w.decode_rpc(_envelope("vo", job=-1))


@pytest.mark.parametrize("service", TRAVERSALS)
def test_sandbox_factory_refuses_a_bad_service(tmp_path: Path, service: str) -> None:
    """The live sandbox factory re-checks the name and makes nothing for a bad one."""
    make = directory_sandboxes(tmp_path / "sandboxes", time.time, {})
    with pytest.raises(ValueError):
        make(1, "alice", service)
    assert not (tmp_path / "sandboxes" / "job-1").exists()


def test_sandbox_refuses_a_symlink_out(tmp_path: Path) -> None:
    """A token file name that is a symbolic link leading out of the sandbox is not written."""
    make = directory_sandboxes(tmp_path / "sandboxes", time.time, {})
    box = make(2, "alice", "vo")
    box.creds.mkdir(mode=0o700)
    outside = tmp_path / "outside.use"
    (box.creds / "vo.use").symlink_to(outside)
    with pytest.raises(ValueError):
        box.stage("tok", jti="j", exp=time.time() + 60)
    assert not outside.exists()


@pytest.mark.live
def test_traversal_in_start_job_writes_nothing_outside(live: Deployment) -> None:
    """The reported attack, with a genuine queue-manager token: 400, no file outside."""
    target = Path("/tmp/x.use")
    existed = target.exists()
    qm = live.token("queue_manager", "queue-manager", "node-0")
    reply = live.post_rpc("node-0", _envelope("../../../tmp/x", job=901), qm)
    assert reply.status_code == 400
    assert "service must match" in reply.text
    time.sleep(0.5)
    assert target.exists() == existed
    assert live.run.services["node-0"].exited() is None


@pytest.mark.live
def test_staging_failure_fails_the_job_not_the_host(live: Deployment) -> None:
    """A file in the way of one job's sandbox fails that job; the host keeps running others."""
    root = live.workdir / "services" / "node-1" / "sandboxes"
    root.mkdir(parents=True, exist_ok=True)
    (root / "job-910").write_text("in the way")
    qm = live.token("queue_manager", "queue-manager", "node-1")

    def start(job: int) -> StartJob:
        return StartJob(
            job=job,
            slot=0,
            user="alice",
            service="vo",
            token="tok",
            jti=f"jti-{job}",
            exp=time.time() + 600,
            program=JobProgram(steps=(ComputeStep(seconds=1),)),
        )

    assert ack(live.post_rpc("node-1", start(910), qm)).ok
    time.sleep(1.0)
    assert live.run.services["node-1"].exited() is None
    assert ack(live.post_rpc("node-1", start(911), qm)).ok
    deadline = time.monotonic() + 20
    staged: list[dict[str, object]] = []
    while not staged and time.monotonic() < deadline:
        staged = [e for e in live.events("node-1") if e["kind"] == "stage" and e["job"] == 911]
        time.sleep(0.1)
    assert staged, "the host stopped serving after one job's staging failed"
    assert not [e for e in live.events("node-1") if e["kind"] == "stage" and e["job"] == 910]
    log = (live.workdir / "logs" / "node-1.log").read_text()
    assert "credential staging failed" in log and "File exists" in log
    assert live.run.services["node-1"].exited() is None


class _Log:
    """A logger that keeps the warnings."""

    def __init__(self) -> None:
        self.warnings: list[dict[str, object]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.warnings.append({"event": event, **kw})

    def info(self, event: str, **kw: object) -> None:
        pass


async def test_restaging_failure_fails_only_that_job(autojump_clock: object) -> None:
    """A re-staging that fails (ENOSPC) for one job ends that job with the reason; the other
    job on the host runs to its end and the host keeps serving (virtual time, no process)."""
    finished: list[JobFinished] = []

    class Net:
        async def request(self, src: str, dest: str, message: Message) -> Message:
            if isinstance(message, JobFinished):
                finished.append(message)
            return Ack()

    class FullDisk(MemorySandbox):
        staged = 0

        def stage(self, token: str, *, jti: str, exp: float) -> None:
            self.staged += 1
            if self.job == 1 and self.staged > 1:
                raise OSError(errno.ENOSPC, "No space left on device", "vo.use")
            super().stage(token, jti=jti, exp=exp)

    sink = ListSink()
    host = ExecuteHost(
        name="node-0",
        slots=2,
        sandbox_refresh=10.0,
        transport=Net(),  # type: ignore[arg-type]
        clock=trio.current_time,
        rng=random.Random(1),
        recorder=Recorder(clock=trio.current_time, sink=sink),
        log=_Log(),
        sandboxes=lambda job, user, service: FullDisk(job),
    )
    program = JobProgram(steps=(ComputeStep(seconds=60),))

    def start(job: int) -> StartJob:
        return StartJob(
            job=job, slot=job, user=f"u{job}", service="vo", token="t0", jti=f"a{job}", exp=100.0,
            program=program,
        )  # fmt: skip

    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        assert await host.handle(start(1)) == Ack()
        assert await host.handle(start(2)) == Ack()
        for user in ("u1", "u2"):
            update = CredentialUpdate(user=user, service="vo", token="t1", jti="b", exp=200.0)
            assert await host.handle(update) == Ack()
        await trio.sleep(100)
        assert await host.handle(start(3)) == Ack()  # still serving
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    by_job = {f.job: f for f in finished}
    assert by_job[1].exit_code == 1 and "No space left on device" in by_job[1].reason
    assert by_job[1].reason.startswith("staging the vo credential failed")
    assert by_job[2].exit_code == 0 and by_job[3].exit_code == 0
