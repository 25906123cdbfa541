"""The live section: real HTTPS services on 127.0.0.1 under a concurrency of 64.

One small deployment is started for the section (:func:`scitokens_batch.live._deploy.deployment`,
every process stopped by PID at the end, also on an error or Ctrl-C): our issuer ``vo``, our
data server ``store`` with the accepted-token cache off (``token_cache = "0s"``: every GET
verifies the token's ES256 signature), the same data server as ``store_cached`` with
``token_cache = "60s"``, and XRootD ``xroot`` (XrdHttp + the SciTokens plugin, which keeps
verified tokens too), each serving ``/vo/data/0`` of 1 MB (10⁶ bytes). What is measured, in
this order:

1. Logins (not timed): 64 device flows of alice for the token manager's client, one refresh
   token per load worker, and one more whose access token (``read:/data``, the audience every
   data server accepts) is used for every GET.
2. Token endpoint: ``POST /vo/token`` with the refresh grant, as the token manager sends it.
   Each of the 64 workers chains its own rotations (every answer's new refresh token is its
   next request's), as HTCondor's credmon does; no refresh token is used twice. The scenario
   sets no ``max_requests_per_second``: nothing is rate-limited. Load: :mod:`benchmarks._loadgen`,
   a separate Python process (httpx on trio, HTTP/1.1 keep-alive, one connection per worker).
   The measured requests are also reported in thirds, with the issuer's CPU per request and
   its refresh-token table size, which grows by one row per rotation; afterwards what the
   issuer does for each rotation before it answers (one SQLite WAL transaction with
   ``synchronous=FULL``, ``live/_durable.py``) is timed in this process on a copy of its
   table at the final size.
3. Data, cold start: the first 64 GETs sent at once to each data server, which has never seen
   the token (nor, for XRootD, the issuer's keys), on new connections.
4. Data, steady state: ``GET /vo/data/0`` with alice's token from each data server, in
   interleaved rounds (the order rotates and reverses from round to round) so that machine
   noise hits every server alike. Load: one ``curl --parallel`` process per server and round
   (:mod:`benchmarks._curlload`; httpx cost more CPU per 1 MB GET than the servers). Ratios
   ours ÷ XRootD are paired per round (the median of the per-round ratios). XRootD's log is
   read afterwards for how many tokens its plugin verified in full.

Every measurement warms up first (not counted), then stops at its request count or its time
cap, whichever comes first. Around each measured window the CPU time of the client and of the
server process (``/proc/<pid>/stat``, all threads) and the machine's ``/proc/stat`` are read:
CPU milliseconds per request say where the time goes. The client, the servers and TLS on both
ends share the machine's cores: the absolute figures are this machine's under this load.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from scitokens_batch.live import xrootd_missing
from scitokens_batch.live._deploy import deployment
from scitokens_batch.live._runner import _Run

from ._curlload import CurlRun, curl_gets, curl_missing
from ._report import CpuCounters, MachineLoad, machine_line
from .sim import code_revision

__all__ = [
    "FULL",
    "NAME",
    "QUICK",
    "LiveResult",
    "Settings",
    "markdown_section",
    "measure",
    "print_result",
    "to_json",
]

NAME = "live"
TITLE = "Live services on loopback: token endpoint and 1 MB GETs, ours and XRootD"

ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "https://store.vo.example"
SCOPES = ("read:/data",)
PATH = "/vo/data/0"
FILE_SIZE = 1_000_000
#: The data servers, in the order of the first round: service -> label.
SERVERS: dict[str, str] = {
    "store": "ours, token_cache 0s",
    "xroot": "XRootD + SciTokens plugin",
    "store_cached": "ours, token_cache 60s",
}
#: Seconds the parent waits for the token load generator beyond its caps before killing it.
LOADGEN_GRACE = 60.0
#: The measured token requests are reported in this many consecutive blocks.
TOKEN_BLOCKS = 3
#: Machine-wide busy share above which a measurement is bounded by the machine, not the server.
MACHINE_BOUND = 0.95
#: Cores of other work (beyond the server and the client) above which the machine was shared.
SHARED_CORES = 0.4
#: Repetitions when timing the issuer's save.
SAVE_REPEATS = 7
#: Concurrent device-flow logins while preparing the refresh tokens.
LOGIN_CONCURRENCY = 8

SCENARIO = f"""
[scenario]
name = "live-bench"
duration = "1h"
seed = 11

[[issuers]]
name = "vo"
url = "https://issuer.vo.example/vo"
access_token_lifetime = "30m"

[[issuers.users]]
name = "alice"
scopes = ["read:/data"]

[[execute_hosts]]
name = "node"
count = 1
slots = 1

[[data_servers]]
name = "store"
audience = "{AUDIENCE}"
token_cache = "0s"
issuers = {{ vo = "/vo" }}
files = [{{ path = "/vo/data", count = 1, size = "1MB" }}]

[[data_servers]]
name = "store_cached"
audience = "{AUDIENCE}"
token_cache = "60s"
issuers = {{ vo = "/vo" }}
files = [{{ path = "/vo/data", count = 1, size = "1MB" }}]

[[data_servers]]
name = "xroot"
audience = "{AUDIENCE}"
backend = "xrootd"
issuers = {{ vo = "/vo" }}
files = [{{ path = "/vo/data", count = 1, size = "1MB" }}]

[[workloads]]
name = "w"
user = "alice"
issuer = "vo"
jobs = 1
arrival = {{ kind = "burst", at = "0s" }}
token = {{ service = "vo", scopes = ["read:/data"], audience = "{AUDIENCE}" }}
steps = [{{ compute = {{ kind = "fixed", duration = "1s" }} }}]
"""


@dataclass(frozen=True, slots=True)
class Settings:
    """Counts and caps of one run of the section."""

    concurrency: int = 64
    token_count: int = 3000
    token_warmup: int = 256
    token_seconds: float = 40.0
    get_count: int = 2000  # per data server, over all rounds
    get_warmup: int = 128  # per data server and round: two per connection
    get_seconds: float = 20.0  # per data server and round
    rounds: int = 3
    warmup_seconds: float = 20.0

    @property
    def get_per_round(self) -> int:
        """GETs per data server and round."""
        return math.ceil(self.get_count / self.rounds)

    def line(self) -> str:
        """The settings in one line."""
        return (
            f"concurrency {self.concurrency}; token endpoint {self.token_count:,} requests "
            f"(cap {self.token_seconds:g} s) after {self.token_warmup} warm-up; GETs "
            f"{self.rounds} interleaved rounds × {self.get_per_round:,} per server (cap "
            f"{self.get_seconds:g} s per round), each after {self.get_warmup} warm-up"
        )


FULL = Settings()
QUICK = Settings(
    token_count=300,
    token_warmup=64,
    token_seconds=10.0,
    get_count=200,
    get_seconds=5.0,
    warmup_seconds=10.0,
)


# -- measurements ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of sorted values; nan when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _div(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else math.nan


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured window against one server.

    ``latencies`` are the good requests' (seconds, sorted); ``ends`` the good requests'
    completion times (seconds since the window began, sorted); ``server_cpu`` and
    ``client_cpu`` are CPU seconds over the window (None when unknown).
    """

    target: str
    round: int
    wall: float
    stopped_by: str
    latencies: tuple[float, ...]
    ends: tuple[float, ...]
    errors: int
    first_errors: tuple[str, ...]
    moved: int
    client_cpu: float | None
    server_cpu: float | None
    machine_busy: float
    machine_steal: float
    warmup_requests: int
    warmup_errors: int
    new_connections: int = 0
    #: (completions, seconds since the window began, server CPU seconds) every so often
    marks: tuple[tuple[int, float, float | None], ...] = ()

    @classmethod
    def from_loadgen(cls, target: str, rnd: int, doc: Mapping[str, Any]) -> Measurement:
        """From :mod:`benchmarks._loadgen`'s JSON answer."""
        good = [r for r in doc["records"] if r[2]]
        return cls(
            target=target,
            round=rnd,
            wall=float(doc["wall"]),
            stopped_by=str(doc["stopped_by"]),
            latencies=tuple(sorted(r[1] for r in good)),
            ends=tuple(sorted(r[0] + r[1] for r in good)),
            errors=len(doc["records"]) - len(good),
            first_errors=tuple(doc["errors"]),
            moved=sum(r[3] for r in good),
            client_cpu=doc.get("client_cpu"),
            server_cpu=doc.get("server_cpu"),
            machine_busy=float(doc.get("machine_busy", math.nan)),
            machine_steal=float(doc.get("machine_steal", math.nan)),
            warmup_requests=int(doc["warmup"]["requests"]),
            warmup_errors=int(doc["warmup"]["errors"]),
            marks=tuple((int(n), float(t), c) for n, t, c in doc.get("marks", [])),
        )

    @classmethod
    def from_curl(cls, target: str, rnd: int, run: CurlRun) -> Measurement:
        """From a :class:`CurlRun`: good = 200 with exactly :data:`FILE_SIZE` bytes."""

        def good(line: Sequence[str]) -> bool:
            return len(line) >= 3 and line[1] == "200" and line[2] == str(FILE_SIZE)

        ok = [(line, end) for line, end in zip(run.lines, run.ends, strict=True) if good(line)]
        bad = [line for line in run.lines if not good(line)]
        why = [f"http {line[1]}, {line[2]} bytes" if len(line) >= 3 else "?" for line in bad]
        if bad and run.stderr.strip():
            why.append("curl: " + run.stderr.strip().splitlines()[-1])
        return cls(
            target=target,
            round=rnd,
            wall=run.wall,
            stopped_by=run.stopped_by,
            latencies=tuple(sorted(float(line[0]) for line, _ in ok)),
            ends=tuple(sorted(end for _, end in ok)),
            errors=len(bad),
            first_errors=tuple(why[:5]),
            moved=FILE_SIZE * len(ok),
            client_cpu=run.client_cpu,
            server_cpu=run.server_cpu,
            machine_busy=run.machine_busy,
            machine_steal=run.machine_steal,
            warmup_requests=len(run.warmup_lines),
            warmup_errors=sum(1 for line in run.warmup_lines if not good(line)),
            new_connections=sum(int(line[3]) for line in run.lines if len(line) >= 4),
        )

    @property
    def ok(self) -> int:
        """Good requests."""
        return len(self.latencies)

    @property
    def rps(self) -> float:
        """Good requests per second of the window."""
        return _div(self.ok, self.wall)

    def p(self, q: float) -> float:
        """Latency percentile, ms."""
        return percentile(self.latencies, q) * 1e3


@dataclass(frozen=True, slots=True)
class Row:
    """One server's measurements over all its rounds, pooled."""

    target: str
    label: str
    runs: tuple[Measurement, ...]

    @property
    def ok(self) -> int:
        """Good requests over all rounds."""
        return sum(m.ok for m in self.runs)

    @property
    def errors(self) -> int:
        """Failed requests, warm-up included (must be 0)."""
        return sum(m.errors + m.warmup_errors for m in self.runs)

    @property
    def wall(self) -> float:
        """Seconds of measured windows."""
        return sum(m.wall for m in self.runs)

    @property
    def rps(self) -> float:
        """Good requests per second over all rounds (total ÷ total wall)."""
        return _div(self.ok, self.wall)

    def p(self, q: float) -> float:
        """Latency percentile over every good request of every round, ms."""
        return percentile(sorted(x for m in self.runs for x in m.latencies), q) * 1e3

    @property
    def mb_per_s(self) -> float:
        """Body bytes of good requests per second, 10⁶ bytes."""
        return _div(sum(m.moved for m in self.runs) / 1e6, self.wall)

    def _per_request(self, cpu: Sequence[float | None]) -> float | None:
        if not self.ok or any(c is None for c in cpu):
            return None
        return sum(c for c in cpu if c is not None) / self.ok * 1e3

    @property
    def server_ms(self) -> float | None:
        """Server CPU per good request, ms (all its threads)."""
        return self._per_request([m.server_cpu for m in self.runs])

    @property
    def server_cores(self) -> float | None:
        """Server CPU seconds per wall second over the windows (1.0 = one core all the time)."""
        cpu = [m.server_cpu for m in self.runs]
        if any(c is None for c in cpu) or self.wall <= 0:
            return None
        return sum(c for c in cpu if c is not None) / self.wall

    @property
    def client_ms(self) -> float | None:
        """Client (load generator) CPU per good request, ms."""
        return self._per_request([m.client_cpu for m in self.runs])

    @property
    def other_cores(self) -> float | None:
        """Cores busy with anything but this server and its client over the windows: the
        machine's busy time (``/proc/stat``) minus both processes' CPU time, per wall second.
        Kernel work on their behalf (loopback, softirqs) lands here too, so a quiet machine
        shows a little; much more means other processes shared it."""
        cores = os.cpu_count() or 1
        total = 0.0
        for m in self.runs:
            if math.isnan(m.machine_busy) or m.server_cpu is None or m.client_cpu is None:
                return None
            total += m.machine_busy * cores * m.wall - m.server_cpu - m.client_cpu
        return total / self.wall if self.wall > 0 else None

    @property
    def busy(self) -> float:
        """Machine-wide busy share over the windows (weighted by their wall time)."""
        known = [(m.machine_busy, m.wall) for m in self.runs if not math.isnan(m.machine_busy)]
        weight = sum(w for _, w in known)
        return sum(b * w for b, w in known) / weight if weight else math.nan

    @property
    def stopped_by(self) -> str:
        """How the windows ended: ``count``, ``time`` or e.g. ``count ×2, time ×1``."""
        kinds = [m.stopped_by for m in self.runs]
        if len(set(kinds)) == 1:
            return kinds[0]
        return ", ".join(f"{k} ×{kinds.count(k)}" for k in sorted(set(kinds)))

    def first_errors(self) -> list[str]:
        """A few of the failures' descriptions."""
        return [e for m in self.runs for e in m.first_errors][:5]


@dataclass(frozen=True, slots=True)
class Ratio:
    """Ours ÷ XRootD for one figure, paired per round."""

    label: str
    meaning: str
    per_round: tuple[float, ...]

    @property
    def value(self) -> float:
        """The median of the per-round ratios."""
        known = [x for x in self.per_round if not math.isnan(x)]
        return statistics.median(known) if known else math.nan


@dataclass(frozen=True, slots=True)
class SaveCost:
    """What making one rotation durable costs at the issuer's final table size."""

    grants: int
    size_bytes: int
    commit_ms: float
    commit_p99_ms: float


@dataclass(frozen=True, slots=True)
class TokenBlock:
    """One block of the measured token requests: the issuer's refresh-token table size at its
    ends, the rate, and the issuer's CPU per request."""

    grants_from: int
    grants_to: int
    rps: float
    server_ms: float | None


@dataclass
class LiveResult:
    """Everything the section measured."""

    quick: bool
    settings: Settings
    revision: str
    elapsed: float = 0.0
    algorithm: str = "?"
    token: Row | None = None
    data: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    cold: dict[str, Measurement] = field(default_factory=dict)
    xrootd_log: dict[str, int] = field(default_factory=dict)
    xrootd_trust: str | None = None
    save: SaveCost | None = None
    missing: list[str] = field(default_factory=list)
    load: MachineLoad | None = None

    @property
    def token_blocks(self) -> list[TokenBlock]:
        """The measured token requests in consecutive blocks (thirds of the count)."""
        if self.token is None or not self.token.runs or self.grants_at_start is None:
            return []
        marks = self.token.runs[0].marks
        out = []
        for (n0, t0, c0), (n1, t1, c1) in itertools.pairwise(marks):
            if n1 <= n0 or t1 <= t0:
                continue
            cpu = (c1 - c0) / (n1 - n0) * 1e3 if c0 is not None and c1 is not None else None
            out.append(
                TokenBlock(
                    grants_from=self.grants_at_start + n0,
                    grants_to=self.grants_at_start + n1,
                    rps=(n1 - n0) / (t1 - t0),
                    server_ms=cpu,
                )
            )
        return out

    @property
    def grants_at_start(self) -> int | None:
        """The issuer's refresh-token table when the measured token requests began (each good
        refresh adds one entry)."""
        if self.save is None or self.token is None:
            return None
        return self.save.grants - self.token.ok

    @property
    def problems(self) -> list[str]:
        """What makes the figures suspect or incomplete (errors must be 0)."""
        out = list(self.missing)
        for row in [self.token, *self.data]:
            if row is not None and row.errors:
                out.append(
                    f"{row.label}: {row.errors} failed requests (e.g. "
                    + "; ".join(row.first_errors() or ["?"])
                    + ")"
                )
        for row in [self.token, *self.data]:
            other = row.other_cores if row is not None else None
            if row is not None and other is not None and other > SHARED_CORES:
                out.append(
                    f"{row.label}: {other:.2f} cores went to other work during its windows "
                    "(the machine was shared): its figures are pessimistic"
                )
        for name, m in self.cold.items():
            if m.errors:
                out.append(f"cold start of {name}: {m.errors} failed GETs")
        for row in self.data:
            reconnects = sum(m.new_connections for m in row.runs)
            if reconnects:
                out.append(
                    f"{row.label}: {reconnects} new connections inside the measured windows "
                    "(keep-alive not kept: TLS handshakes are in the figures)"
                )
        return out


# -- the run --------------------------------------------------------------------------------------


Say = Callable[[str], None]


async def _logins(run: _Run, n: int) -> tuple[list[str], str]:
    """``n`` refresh tokens of alice (one device flow each) and one more login's access token."""
    transport = run.transport()
    refresh: list[str] = []
    access: list[str] = []
    limiter = trio.CapacityLimiter(LOGIN_CONCURRENCY)

    async def one(keep_access: bool) -> None:
        async with limiter:
            answer = await run.device_login(transport, "vo", "alice", SCOPES, AUDIENCE)
        if keep_access:
            access.append(answer.access_token)
        else:
            refresh.append(answer.refresh_token or "")

    try:
        async with trio.open_nursery() as nursery:
            for i in range(n + 1):
                nursery.start_soon(one, i == n)
    finally:
        await transport.aclose()
    return refresh, access[0]


def _run_loadgen(job: Mapping[str, Any]) -> dict[str, Any]:
    """``python -m benchmarks._loadgen`` with ``job``; its JSON answer. The child is killed by
    its pid if it overruns its caps or anything goes wrong (Ctrl-C included)."""
    limit = float(job["warmup_seconds"]) + float(job["seconds"]) + LOADGEN_GRACE
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, errors = proc.communicate(json.dumps(job).encode(), timeout=limit)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if proc.returncode != 0:
        tail = errors.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"load generator exited with {proc.returncode}: " + " | ".join(tail))
    doc: dict[str, Any] = json.loads(out)
    return doc


def save_cost(db: Path, scratch: Path) -> SaveCost | None:
    """Time one rotation's durable write (``DurableTable.apply`` of one row: a WAL transaction
    with ``synchronous=FULL``, as the issuer commits before answering) on a copy of the
    issuer's table at the size the run left."""
    import sqlite3

    from scitokens_batch.live._durable import DurableTable

    if not db.exists():
        return None
    copy = scratch / "grants-copy.db"
    try:
        with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        table = DurableTable(copy)
        rows = table.load()
        times = []
        for i in range(SAVE_REPEATS * 30):
            t0 = time.perf_counter()
            table.apply({f"bench-{i}": {"family": "bench", "expires": 0.0}})
            times.append(time.perf_counter() - t0)
        table.close()
    except (OSError, sqlite3.Error):
        return None
    finally:
        for path in scratch.glob("grants-copy.db*"):
            path.unlink(missing_ok=True)
    times.sort()
    return SaveCost(
        grants=len(rows),
        size_bytes=db.stat().st_size,
        commit_ms=statistics.median(times) * 1e3,
        commit_p99_ms=times[int(0.99 * (len(times) - 1))] * 1e3,
    )


#: Lines of XRootD's log (``scitokens.trace all``) counted after the run: label -> text.
XROOTD_LOG_LINES = {
    "full verifications": "New valid token",
    "token-cache hits": "Cached token",
    "scitokens-cpp key-cache 'database is locked'": "database is locked",
}


def xrootd_log_counts(log: Path) -> dict[str, int]:
    """How often each of :data:`XROOTD_LOG_LINES` appears in XRootD's log ({} if unreadable)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    return {label: text.count(needle) for label, needle in XROOTD_LOG_LINES.items()}


def _token_phase(run: _Run, s: Settings, refresh: list[str], say: Say) -> Row:
    pid = run.services["vo"].pid
    say(
        f"token endpoint: {s.token_count:,} refresh grants after {s.token_warmup} warm-up, "
        f"concurrency {s.concurrency}"
    )
    doc = _run_loadgen(
        {
            "ca": str(run.tls.ca),
            "concurrency": s.concurrency,
            "count": s.token_count,
            "warmup": s.token_warmup,
            "seconds": s.token_seconds,
            "warmup_seconds": s.warmup_seconds,
            "url": run.issuer_urls["vo"] + "/token",
            "client_id": "token_manager",
            "client_secret": run.client_secrets["vo"]["token_manager"],
            "refresh_tokens": refresh,
            "scope": " ".join(SCOPES),
            "audience": AUDIENCE,
            "pids": [pid] if pid is not None else [],
            "marks": TOKEN_BLOCKS,
        }
    )
    return Row("vo", "token endpoint (refresh grant)", (Measurement.from_loadgen("vo", 0, doc),))


def round_order(servers: Sequence[str], rnd: int) -> list[str]:
    """The servers' order in round ``rnd``: rotated by one each round, reversed every other."""
    k = rnd % len(servers) if servers else 0
    order = [*servers[k:], *servers[:k]]
    return order[::-1] if rnd % 2 else order


def _data_phase(
    run: _Run, s: Settings, servers: Sequence[str], token: str, say: Say
) -> tuple[dict[str, Measurement], dict[str, list[Measurement]]]:
    """The cold start of every server, then the interleaved rounds."""

    def gets(name: str, rnd: int, count: int, warmup: int, seconds: float) -> Measurement:
        pid = run.services[name].pid
        got = curl_gets(
            url=run.peers[name] + PATH,
            token=token,
            ca=run.tls.ca,
            count=count,
            warmup=warmup,
            concurrency=s.concurrency,
            seconds=seconds,
            warmup_seconds=s.warmup_seconds,
            server_pids=[pid] if pid is not None else [],
            scratch=run.workdir,
        )
        return Measurement.from_curl(name, rnd, got)

    cold: dict[str, Measurement] = {}
    for name in servers:
        say(f"cold start: the first {s.concurrency} GETs from {name}")
        cold[name] = gets(name, -1, s.concurrency, 0, s.warmup_seconds)
    per_round = s.get_per_round
    runs: dict[str, list[Measurement]] = {n: [] for n in servers}
    for rnd in range(s.rounds):
        for name in round_order(servers, rnd):
            say(f"round {rnd + 1}/{s.rounds}: {per_round} GETs of {PATH} from {name}")
            runs[name].append(gets(name, rnd, per_round, s.get_warmup, s.get_seconds))
    return cold, runs


def _ratios(runs: Mapping[str, Sequence[Measurement]]) -> list[Ratio]:
    out: list[Ratio] = []
    if "xroot" not in runs:
        return out
    for name in [n for n in ("store", "store_cached") if n in runs]:
        pairs = list(zip(runs[name], runs["xroot"], strict=True))
        label = SERVERS[name]
        out.append(
            Ratio(
                f"req/s: {label} ÷ XRootD",
                "below 1: ours serves fewer",
                tuple(_div(a.rps, b.rps) for a, b in pairs),
            )
        )
        out.append(
            Ratio(
                f"p99: {label} ÷ XRootD",
                "above 1: ours is slower",
                tuple(_div(a.p(99), b.p(99)) for a, b in pairs),
            )
        )
    return out


def measure(*, quick: bool, err: Console, settings: Settings | None = None) -> LiveResult:
    """Run the section (see the module docstring); ``settings`` overrides FULL/QUICK."""

    def say(msg: str) -> None:
        err.print(f"[dim]  {NAME}: {msg}[/dim]")

    s = settings or (QUICK if quick else FULL)
    result = LiveResult(quick=quick, settings=s, revision=code_revision())
    start = time.perf_counter()
    counters = CpuCounters.read()
    servers = list(SERVERS)
    why = xrootd_missing()
    if why is not None:
        result.missing.append(f"XRootD not measured: {why}")
        servers.remove("xroot")
    why = curl_missing()
    if why is not None:
        result.missing.append(f"GETs not measured: {why}")
        servers = []
    names = ["vo", *servers]
    say(f"starting {', '.join(names)} on 127.0.0.1")
    with deployment(SCENARIO, names, prefix="stb-live-bench-", log_level="warning") as run:
        result.algorithm = run.spec.issuer("vo").algorithm.value
        say(f"{s.concurrency + 1} device-flow logins of alice")
        refresh, access = trio.run(_logins, run, s.concurrency)
        result.token = _token_phase(run, s, refresh, say)
        result.cold, runs = _data_phase(run, s, servers, access, say)
        result.data = [Row(n, SERVERS[n], tuple(runs[n])) for n in servers]
        result.ratios = _ratios(runs)
        result.save = save_cost(run.workdir / "services" / "vo" / "grants.db", run.workdir)
        if "xroot" in servers:
            result.xrootd_log = xrootd_log_counts(run.services["xroot"].log_path)
            server = getattr(run.services["xroot"], "server", None)
            result.xrootd_trust = getattr(server, "trust", None)
    result.elapsed = time.perf_counter() - start
    result.load = MachineLoad.between(counters, CpuCounters.read())
    return result


# -- rendering ------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, fmt)


def _ms(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


HEADER = (
    "measurement",
    "requests",
    "errors",
    "req/s",
    "p50 ms",
    "p99 ms",
    "MB/s",
    "server CPU ms/req",
    "server cores",
    "client CPU ms/req",
    "other cores",
    "ended by",
)


def rows(r: LiveResult) -> list[tuple[str, ...]]:
    """The main table's rows (see :data:`HEADER`)."""
    out: list[tuple[str, ...]] = []
    named = [(f"token endpoint, refresh grant: ours ({r.algorithm})", r.token)] if r.token else []
    named += [(f"GET 1 MB: {row.label}", row) for row in r.data]
    for name, row in named:
        assert row is not None
        out.append(
            (
                name,
                f"{row.ok:,}",
                str(row.errors),
                _num(row.rps),
                _ms(row.p(50)),
                _ms(row.p(99)),
                _num(row.mb_per_s) if row.target != "vo" else "—",
                _ms(row.server_ms),
                _num(row.server_cores, ".2f"),
                _ms(row.client_ms),
                _num(row.other_cores, ".2f"),
                row.stopped_by,
            )
        )
    return out


COLD_HEADER = (
    "cold start",
    "GETs",
    "errors",
    "wall s",
    "p50 ms",
    "max ms",
    "server CPU s",
    "server CPU ms/GET",
)


def cold_rows(r: LiveResult) -> list[tuple[str, ...]]:
    """The cold-start table's rows (see :data:`COLD_HEADER`)."""
    out: list[tuple[str, ...]] = []
    for name, m in r.cold.items():
        cpu = m.server_cpu
        out.append(
            (
                SERVERS.get(name, name),
                f"{m.ok}",
                str(m.errors),
                _num(m.wall, ".2f"),
                _ms(m.p(50)),
                _ms(m.p(100)),
                _num(cpu, ".2f"),
                _ms(cpu / m.ok * 1e3) if cpu is not None and m.ok else "n/a",
            )
        )
    return out


def notes(r: LiveResult) -> list[str]:
    """What the table means and where the time goes, one paragraph per item."""
    s = r.settings
    out = [
        f"Load: {s.line()}. Token requests from a separate Python process (httpx on trio, one "
        "HTTP/1.1 keep-alive connection per worker, each request chaining its worker's "
        "rotated refresh token); GETs from one `curl --parallel --http1.1` process per server "
        "and round (keep-alive, latency = curl's `time_total`). Latencies are of good requests "
        "and pooled over the rounds; req/s = good requests ÷ wall time of the measured "
        "windows. CPU per request = CPU time of the process over the window ÷ good requests "
        "(server: all its threads; XRootD runs several); server cores = its CPU seconds per "
        "wall second (1.00: one core busy all the time); other cores = the machine's busy "
        "time (`/proc/stat`) minus server and client, per wall second: kernel work for them "
        "and whatever else ran on the machine.",
    ]
    blocks = r.token_blocks
    if blocks:
        text = (
            "Token endpoint, in consecutive thirds of the measured requests (the issuer's "
            "refresh-token table size → req/s, issuer CPU per request): "
            + "; ".join(
                f"{b.grants_from:,}–{b.grants_to:,} → {b.rps:.0f} req/s, {_ms(b.server_ms)} ms"
                for b in blocks
            )
            + ". Every rotation adds a row and rotated tokens stay for the issuer's reuse "
            "grace (docs/issuer.md); the live issuer commits each rotation to its SQLite table "
            "(WAL, synchronous=FULL) before it answers, in a worker thread."
        )
        if r.save is not None:
            text += (
                f" One such commit at the final {r.save.grants:,} rows "
                f"({r.save.size_bytes / 1e3:,.0f} kB), timed here in this process: median "
                f"{_ms(r.save.commit_ms)} ms, p99 {_ms(r.save.commit_p99_ms)} ms."
            )
        out.append(text)
    by = {row.target: row for row in r.data}
    store, cached, xroot = by.get("store"), by.get("store_cached"), by.get("xroot")
    if store is not None and cached is not None:
        a, b = store.server_ms, cached.server_ms
        if a is not None and b is not None:
            verify = (
                f"the difference, {a - b:.2f} ms, is what verifying the token (ES256 signature, "
                "claims, scope) adds to a GET"
                if a - b > 0.05 * a
                else "the verification is lost in the noise of the rest"
            )
            out.append(
                f"Our data server spends {a:.2f} ms of CPU per GET with every token verified "
                f"and {b:.2f} ms with the 60 s token cache: {verify}; the rest is TLS, HTTP "
                "(hypercorn, h11), an event line per access, and moving the 1 MB through trio "
                "in 256 kB chunks read in a worker thread."
            )
    if store is not None and xroot is not None:
        a, x = store.server_ms, xroot.server_ms
        if a is not None and x is not None and x > 0:
            text = (
                f"Per GET, XRootD spends {x:.2f} ms of CPU against our {a:.2f} ms "
                f"({a / x:.1f}×). Ours runs its Python on one trio thread (file reads go to "
                "worker threads), so it can use little more than one core (it used "
                f"{_num(store.server_cores, '.2f')}); XRootD serves from a pool of threads "
                f"(it used {_num(xroot.server_cores, '.2f')} cores)."
            )
            if xroot.busy >= MACHINE_BOUND:
                text += (
                    f" During XRootD's windows the machine was {xroot.busy:.0%} busy (XRootD, "
                    "curl and the kernel): its req/s is what the machine allowed with the "
                    "client on it, so it would serve more with the client elsewhere, and "
                    "the req/s ratios above are upper bounds for ours."
                )
            out.append(text)
    if r.cold:
        text = (
            f"Cold start: the first {r.settings.concurrency} GETs sent at once to a server "
            "that has never seen the token, on new connections (TLS handshakes included), "
            "before any round; wall = until the last of them finished."
        )
        if r.xrootd_trust:
            how = {
                "overlay": "fetches the issuer's keys live over HTTPS (overlay trust)",
                "preload": "finds the issuer's keys preloaded in its key cache",
            }.get(r.xrootd_trust, f"trust mode {r.xrootd_trust}")
            text += f" XRootD {how}."
        if r.xrootd_log:
            text += (
                " XRootD's log over the whole section counts "
                + ", ".join(f"{n:,} {label}" for label, n in r.xrootd_log.items())
                + " (a full verification per connection that arrived before the token was in "
                "the plugin's cache: no single flight)."
            )
        out.append(text)
    if r.load is not None:
        out.append(
            f"The whole section took {r.elapsed:.0f} s; all CPUs were "
            f"{r.load.busy:.0%} busy meanwhile, steal {r.load.steal:.1%}. Client and servers "
            "share the machine's cores: a server that needs less CPU leaves more to the client, "
            "and the busiest figures are bounded by the machine, not by one server alone."
        )
    return out


def print_result(console: Console, r: LiveResult, info: Mapping[str, str]) -> None:
    """The rich tables of the section."""
    table = Table(title=TITLE, caption=machine_line(info), caption_justify="left")
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="left" if i in (0, len(HEADER) - 1) else "right")
    for row in rows(r):
        table.add_row(*row)
    console.print(table)
    if r.ratios:
        ratios = Table(title=f"{TITLE} — ours ÷ XRootD, paired per round")
        ratios.add_column("figure")
        ratios.add_column("median", justify="right")
        ratios.add_column("per round", justify="right", style="dim")
        ratios.add_column("reading", style="dim")
        for x in r.ratios:
            ratios.add_row(
                x.label,
                f"{x.value:.2f}×",
                " ".join(f"{v:.2f}" for v in x.per_round),
                x.meaning,
            )
        console.print(ratios)
    if r.cold:
        cold = Table(title=f"{TITLE} — cold start")
        for i, h in enumerate(COLD_HEADER):
            cold.add_column(h, justify="left" if i == 0 else "right")
        for row in cold_rows(r):
            cold.add_row(*row)
        console.print(cold)
    for text in notes(r):
        console.print(f"[dim]{text.replace('`', '')}[/dim]")
    for p in r.problems:
        console.print(f"[bold red]PROBLEM:[/bold red] {p}")


def markdown_section(r: LiveResult, info: Mapping[str, str]) -> str:
    """The markdown block of the section, markers included."""
    lines = [
        f"<!-- bench:{NAME}:start -->",
        f"## {TITLE}",
        "",
        "_Generated by `python -m benchmarks --section live --markdown docs/performance.md` "
        "(`make bench` runs it too); the text between the `bench:live` markers is replaced on "
        "every run._",
        "",
        f"**Machine:** {machine_line(info)}",
        "",
        f"**Code:** {r.revision}."
        + (" **`--quick`: a tenth of the requests, noisy.**" if r.quick else ""),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|---|" + "---:|" * (len(HEADER) - 2) + "---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(r)]
    if r.ratios:
        lines += [
            "",
            "| ours ÷ XRootD (paired per round) | median | per round | reading |",
            "|---|---:|---:|---|",
        ]
        lines += [
            f"| {x.label} | **{x.value:.2f}×** | {' '.join(f'{v:.2f}' for v in x.per_round)} "
            f"| {x.meaning} |"
            for x in r.ratios
        ]
    if r.cold:
        lines += [
            "",
            "| " + " | ".join(COLD_HEADER) + " |",
            "|---|" + "---:|" * (len(COLD_HEADER) - 1),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in cold_rows(r)]
    lines += ["", *(f"- {text}" for text in notes(r))]
    if r.problems:
        lines += ["", *(f"- **Problem:** {p}" for p in r.problems)]
    lines += ["", f"<!-- bench:{NAME}:end -->"]
    return "\n".join(lines)


def _measurement_json(m: Measurement) -> dict[str, Any]:
    return {
        "round": m.round,
        "requests": m.ok,
        "errors": m.errors,
        "first_errors": list(m.first_errors),
        "wall_s": m.wall,
        "stopped_by": m.stopped_by,
        "req_per_s": m.rps,
        "p50_ms": m.p(50),
        "p90_ms": m.p(90),
        "p99_ms": m.p(99),
        "max_ms": m.p(100),
        "bytes": m.moved,
        "client_cpu_s": m.client_cpu,
        "server_cpu_s": m.server_cpu,
        "machine_busy": m.machine_busy,
        "machine_steal": m.machine_steal,
        "warmup_requests": m.warmup_requests,
        "warmup_errors": m.warmup_errors,
        "new_connections": m.new_connections,
    }


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "label": row.label,
        "requests": row.ok,
        "errors": row.errors,
        "req_per_s": row.rps,
        "p50_ms": row.p(50),
        "p99_ms": row.p(99),
        "mb_per_s": row.mb_per_s,
        "server_cpu_ms_per_request": row.server_ms,
        "server_cores": row.server_cores,
        "client_cpu_ms_per_request": row.client_ms,
        "other_cores": row.other_cores,
        "machine_busy": row.busy,
        "rounds": [_measurement_json(m) for m in row.runs],
    }


def to_json(r: LiveResult) -> dict[str, Any]:
    """Every figure of the section, JSON-able."""
    s = r.settings
    return {
        "title": TITLE,
        "quick": r.quick,
        "revision": r.revision,
        "elapsed_s": r.elapsed,
        "machine_busy": r.load.busy if r.load else None,
        "machine_steal": r.load.steal if r.load else None,
        "settings": {
            "concurrency": s.concurrency,
            "token_count": s.token_count,
            "token_warmup": s.token_warmup,
            "token_seconds": s.token_seconds,
            "get_count": s.get_count,
            "get_warmup": s.get_warmup,
            "get_seconds": s.get_seconds,
            "rounds": s.rounds,
        },
        "algorithm": r.algorithm,
        "file_bytes": FILE_SIZE,
        "token": _row_json(r.token) if r.token else None,
        "token_blocks": [
            {
                "grants_from": b.grants_from,
                "grants_to": b.grants_to,
                "req_per_s": b.rps,
                "server_cpu_ms_per_request": b.server_ms,
            }
            for b in r.token_blocks
        ],
        "issuer_grants": {
            "at_start": r.grants_at_start,
            "at_end": r.save.grants if r.save else None,
            "state_bytes_at_end": r.save.size_bytes if r.save else None,
            "commit_ms_at_end": r.save.commit_ms if r.save else None,
            "commit_p99_ms_at_end": r.save.commit_p99_ms if r.save else None,
        },
        "data": {row.target: _row_json(row) for row in r.data},
        "cold_start": {name: _measurement_json(m) for name, m in r.cold.items()},
        "xrootd_log": r.xrootd_log,
        "xrootd_trust": r.xrootd_trust,
        "ratios": {
            x.label: {"median": x.value, "per_round": list(x.per_round), "reading": x.meaning}
            for x in r.ratios
        },
        "problems": r.problems,
    }
