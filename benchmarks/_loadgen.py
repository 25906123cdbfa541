"""The live section's token load: ``python -m benchmarks._loadgen`` (JSON in, JSON out).

Runs in its own process (started by :mod:`benchmarks.live`), so the issuer and the client do
not share one interpreter's GIL. It reads one job from stdin, runs it, and writes one JSON
document to stdout.

The requests: ``POST <url>`` refresh grants (RFC 6749 §6) as the token manager sends them
(``client_secret_basic``, the grant's scope and audience, the form made by
``protocol.wire.token_request_form``). Worker ``i`` owns refresh token ``i`` and chains its
rotations: every answer's new refresh token is its next request's (the credmon pattern). An
answer counts as good when it decodes (``wire.decode_token_response``) as a token response
with an access token and a new refresh token.

``concurrency`` workers on trio, each with its own httpx client holding one HTTP/1.1 keep-alive
connection (see :func:`run` for why not one shared pool). A warm-up phase of ``warmup``
requests (capped at ``warmup_seconds``) opens the connections and warms the issuer; it is not
counted. The measured phase then stops at ``count`` requests or after ``seconds``, whichever
comes first (requests in flight at the cap finish and are counted). Each request is timed with
``time.perf_counter`` from before the request is sent to after the answer is read.

Around the measured phase it samples its own CPU time, the CPU time of each of ``pids`` (the
issuer, from ``/proc/<pid>/stat``) and the machine-wide ``/proc/stat`` counters; with ``marks``
it also reads the issuer's CPU time every ``count // marks`` completions (how its cost per
request changes during the run).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import trio

from scitokens_batch.protocol import CLIENT_AUTH_BASIC, GRANT_REFRESH, TokenRequest, TokenResponse
from scitokens_batch.protocol import wire as w

from ._procstat import busy_and_steal, machine_counters, proc_cpu

#: Seconds for connecting and for each read of one request.
REQUEST_TIMEOUT = 30.0
#: Error messages kept (the count is always complete).
KEEP_ERRORS = 5


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


Request = Callable[[httpx.AsyncClient, int], Awaitable[tuple[bool, int, str]]]


def token_requests(job: dict[str, Any]) -> Request:
    """Refresh grants, worker ``i`` chaining its own refresh token."""
    chains: list[str] = list(job["refresh_tokens"])
    url = job["url"]

    async def one(client: httpx.AsyncClient, i: int) -> tuple[bool, int, str]:
        body, headers = w.token_request_form(
            TokenRequest(
                grant_type=GRANT_REFRESH,
                client_id=job["client_id"],
                client_secret=job["client_secret"],
                client_auth=CLIENT_AUTH_BASIC,
                refresh_token=chains[i % len(chains)],
                scope=job["scope"],
                audience=job["audience"],
            )
        )
        headers["content-type"] = "application/x-www-form-urlencoded"
        reply = await client.post(url, content=body, headers=headers)
        answer = w.decode_token_response(reply.status_code, reply.content)
        if not isinstance(answer, TokenResponse):
            return False, len(reply.content), f"{reply.status_code} {answer.error}"
        if not answer.access_token or not answer.refresh_token:
            return False, len(reply.content), "no access or refresh token in the answer"
        chains[i % len(chains)] = answer.refresh_token
        return True, len(reply.content), ""

    return one


async def phase(
    clients: Sequence[httpx.AsyncClient],
    one: Request,
    *,
    count: int,
    seconds: float,
    pids: Sequence[int] = (),
    marks: int = 0,
) -> dict[str, Any]:
    """One task per client shares ``count`` requests until done or ``seconds`` have passed.

    With ``marks``, the servers' CPU time (``pids``) is also read every ``count // marks``
    completions: ``[completions, seconds since the start, CPU seconds]`` rows in ``"marks"``.
    """
    left = count
    deadline = trio.current_time() + seconds
    t0 = time.perf_counter()
    records: list[tuple[float, float, bool, int]] = []
    errors: list[str] = []
    every = count // marks if marks else 0
    cpu_marks: list[tuple[int, float, float | None]] = []

    def mark() -> None:
        cpu = [proc_cpu(pid) for pid in pids]
        known = None if any(c is None for c in cpu) else sum(c or 0.0 for c in cpu)
        cpu_marks.append((len(records), time.perf_counter() - t0, known))

    if every:
        mark()

    async def worker(i: int) -> None:
        nonlocal left
        while left > 0 and trio.current_time() < deadline:
            left -= 1
            start = time.perf_counter()
            try:
                ok, moved, why = await one(clients[i], i)
            except (httpx.HTTPError, ssl.SSLError, OSError, ValueError) as exc:
                ok, moved, why = False, 0, f"{type(exc).__name__}: {exc}"
            end = time.perf_counter()
            records.append((start - t0, end - start, ok, moved))
            if not ok and len(errors) < KEEP_ERRORS:
                errors.append(why)
            done = len(records)
            if every and done % every == 0 and done // every < marks:  # the last: at the end
                mark()

    async with trio.open_nursery() as nursery:
        for i in range(len(clients)):
            nursery.start_soon(worker, i)
    wall = time.perf_counter() - t0
    if every and cpu_marks[-1][0] != len(records):
        mark()
    return {
        "wall": wall,
        "stopped_by": "count" if left <= 0 else "time",
        "records": records,
        "errors": errors,
        "marks": cpu_marks,
    }


async def run(job: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then measure; see the module docstring."""
    one = token_requests(job)
    workers = int(job["concurrency"])
    context = ssl.create_default_context(cafile=job["ca"])
    # One client with one keep-alive connection per worker: httpcore's pool scans all its
    # connections on every event, and with 64 connections in one pool that bookkeeping cost
    # more client CPU than the requests (measured here: 6 ms per token request, 1 ms with a
    # client per worker).
    clients = [
        httpx.AsyncClient(
            verify=context,
            http1=True,
            http2=False,
            timeout=httpx.Timeout(REQUEST_TIMEOUT),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(workers)
    ]
    try:
        warm = await phase(
            clients, one, count=int(job["warmup"]), seconds=float(job["warmup_seconds"])
        )
        pids: Sequence[int] = job.get("pids", [])
        before = {pid: proc_cpu(pid) for pid in pids}
        machine0, cpu0 = machine_counters(), _self_cpu()
        out = await phase(
            clients,
            one,
            count=int(job["count"]),
            seconds=float(job["seconds"]),
            pids=pids,
            marks=int(job.get("marks", 0)),
        )
        cpu1, machine1 = _self_cpu(), machine_counters()
        after = {pid: proc_cpu(pid) for pid in pids}
    finally:
        for client in clients:
            await client.aclose()
    out["client_cpu"] = cpu1 - cpu0
    spent = [(after[pid], b) for pid, b in before.items()]
    out["server_cpu"] = (
        sum(a - b for a, b in spent if a is not None and b is not None)
        if spent and all(a is not None and b is not None for a, b in spent)
        else None
    )
    out["machine_busy"], out["machine_steal"] = busy_and_steal(machine0, machine1)
    out["warmup"] = {
        "requests": len(warm["records"]),
        "errors": sum(1 for r in warm["records"] if not r[2]),
        "wall": warm["wall"],
        "first_errors": warm["errors"],
    }
    return out


def main() -> int:
    """Read the job from stdin, write the result to stdout."""
    job = json.load(sys.stdin)
    result = trio.run(run, job)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
