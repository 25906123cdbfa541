"""GET load for the live section: one ``curl --parallel`` process, 64 transfers at a time.

Why curl and not httpx: on this machine httpx on trio spends 6-7 ms of CPU per 1 MB GET over
TLS (about 140 reads of one TLS record each, every one through httpcore, trio's SSLStream and
h11), more than our data server and six times XRootD, so on two cores it measured the client.
curl (libcurl + OpenSSL, what WLCG clients and our own tests use) costs about 1.4 ms.

One curl process does the warm-up and the measured requests on the same connections: it is
given ``warmup + count`` transfers of the same URL (HTTP/1.1, ``--parallel-max`` connections
opened at once and kept alive), and prints one ``-w`` line per finished transfer, line-buffered
(``stdbuf -oL``), which a reader thread timestamps as it arrives. The first ``warmup``
completions open the connections (TLS handshakes) and warm the server; the measured window runs
from the ``warmup``-th completion to the last. Each request's latency is curl's own
``time_total`` (request sent to last byte received, curl's monotonic clock). The process is
stopped by its pid at the time cap (what finished until then is kept) and anyway on the way out.

At both ends of the window the reader thread samples the CPU time of curl and of the server
(``/proc/<pid>/stat``) and the machine-wide ``/proc/stat`` counters.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._procstat import busy_and_steal, machine_counters, proc_cpu

__all__ = ["CurlRun", "curl_gets", "curl_missing"]

#: Seconds one transfer may take (curl's ``--max-time``).
TRANSFER_TIMEOUT = 30
#: Seconds curl has to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 5.0
#: One line per finished transfer: latency, status, bytes, new connections, TLS handshake end.
WRITE_OUT = "%{time_total} %{http_code} %{size_download} %{num_connects} %{time_appconnect}\n"


def curl_missing() -> str | None:
    """Why the GET load cannot run here, or None."""
    for tool in ("curl", "stdbuf"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@dataclass(frozen=True, slots=True)
class _Sample:
    t: float
    client: float | None
    server: float | None
    machine: list[int] | None


@dataclass(frozen=True, slots=True)
class CurlRun:
    """What one curl process measured.

    Attributes:
        lines: the measured transfers' ``-w`` lines, split (after the warm-up ones).
        ends: when each of them finished, seconds since the window began.
        wall: seconds from the ``warmup``-th completion to the last one.
        stopped_by: ``"count"`` or ``"time"`` (stopped at the cap).
        warmup_lines: the warm-up transfers' lines.
        client_cpu / server_cpu: CPU seconds over the window (None if unknown).
        machine_busy / machine_steal: machine-wide shares over the window.
        stderr: the end of curl's error output.
    """

    lines: tuple[tuple[str, ...], ...]
    ends: tuple[float, ...]
    wall: float
    stopped_by: str
    warmup_lines: tuple[tuple[str, ...], ...]
    client_cpu: float | None
    server_cpu: float | None
    machine_busy: float
    machine_steal: float
    stderr: str


def _delta(a: float | None, b: float | None) -> float | None:
    return b - a if a is not None and b is not None else None


def curl_gets(
    *,
    url: str,
    token: str,
    ca: Path,
    count: int,
    warmup: int,
    concurrency: int,
    seconds: float,
    warmup_seconds: float,
    server_pids: Sequence[int],
    scratch: Path,
) -> CurlRun:
    """``warmup + count`` GETs of ``url`` with ``token``; see the module docstring."""
    config = scratch / "curl-gets.cfg"
    lines = [f'header = "Authorization: Bearer {token}"']  # curl's spelling (XrdHttp needs it)
    lines += [f'url = "{url}"\noutput = "/dev/null"'] * (warmup + count)
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token is in it
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    command = [
        "stdbuf",
        "-oL",
        "curl",
        "--silent",
        "--show-error",
        "--http1.1",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        str(concurrency),
        "--max-time",
        str(TRANSFER_TIMEOUT),
        "--cacert",
        str(ca),
        "--config",
        str(config),
        "--write-out",
        WRITE_OUT,
    ]
    got: list[tuple[float, str]] = []
    samples: list[_Sample] = []
    error_file = scratch / "curl-gets.err"
    with open(error_file, "wb") as stderr:  # a file: a full stderr pipe would stall curl
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    def sample() -> None:
        server = [proc_cpu(pid) for pid in server_pids]
        samples.append(
            _Sample(
                t=time.perf_counter(),
                client=proc_cpu(proc.pid),
                server=None if any(s is None for s in server) else sum(s or 0 for s in server),
                machine=machine_counters(),
            )
        )

    total = warmup + count

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.append((time.perf_counter(), line))
            if len(got) in (warmup, total):  # the window's two ends (warmup may be 0)
                sample()

    if warmup == 0:
        sample()
    reader = threading.Thread(target=read, name="curl-reader", daemon=True)
    reader.start()
    stopped_by = "count"
    try:
        start = time.perf_counter()
        deadline: float | None = None
        while reader.is_alive():
            now = time.perf_counter()
            if deadline is None:
                if len(got) >= warmup:  # the cap counts from the window's start
                    deadline = (got[warmup - 1][0] if warmup else start) + seconds
                elif now > start + warmup_seconds:
                    stopped_by = "warm-up cap"
                    break
            elif now > deadline:
                stopped_by = "time"
                sample()
                break
            reader.join(0.05)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        reader.join(STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()
        errors = error_file.read_text(errors="replace")[-2000:] if error_file.exists() else ""
        error_file.unlink(missing_ok=True)
        config.unlink(missing_ok=True)
    if stopped_by == "time":  # what finished after the cap's sample is not in the window
        got = [g for g in got if g[0] <= samples[-1].t]
    split = [tuple(line.split()) for _, line in got]
    first, last = (samples[0], samples[-1]) if len(samples) >= 2 else (None, None)
    busy, steal = busy_and_steal(first.machine if first else None, last.machine if last else None)
    measured = split[warmup:]
    if warmup:
        origin = got[warmup - 1][0] if len(got) >= warmup else math.nan
    else:
        origin = samples[0].t if samples else math.nan
    ends = tuple(t - origin for t, _ in got[warmup:])
    wall = ends[-1] if ends else 0.0
    return CurlRun(
        lines=tuple(measured),
        ends=ends,
        wall=wall,
        stopped_by=stopped_by,
        warmup_lines=tuple(split[:warmup]),
        client_cpu=_delta(first.client, last.client) if first and last else None,
        server_cpu=_delta(first.server, last.server) if first and last else None,
        machine_busy=busy,
        machine_steal=steal,
        stderr=errors,
    )
