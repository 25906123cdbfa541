"""The simulator section: the reference day (``day-10k.toml``) once, against its crypto floor.

What is measured, in this process, in this order:

1. ``load_scenario(day-10k.toml)`` + ``run_virtual(spec)`` once (no outputs unless
   ``--sim-out DIR``): 10,000 jobs over 24 h of virtual time, 20-minute ES256 tokens renewed at
   half life, 100 data accesses per job, the data server's accepted-token cache off, so every
   access verifies a signature. Wall time is ``time.perf_counter`` around ``run_virtual`` (world
   build and summary included, scenario parsing not); peak RSS is ``ru_maxrss`` of this process
   right after the run (interpreter, libraries and whatever ran before included).
2. The work actually done is counted, not assumed: for the duration of the run only, the
   benchmark wraps ``scitokens_batch.tokens._verifier.signature_valid`` (the name
   :meth:`Verifier.check` calls) to count and time every signature verification, and
   :meth:`Verifier.authorize` to time every whole verification; an observer counts events by
   kind. Both wrappers are restored afterwards (a benchmark-only monkeypatch; two Python call
   layers and four ``perf_counter`` calls, about 1 µs per access, under 1 % of the wall).
   Signs are ``tokens.minted`` of the summary.
3. The crypto floor, right after the run: raw ``cryptography`` ES256 verify and sign with key
   objects over signing inputs (``header.payload``) captured from the run's own tokens, timed
   in batches with the GC off (median µs/op over the batches), then
   ``floor = n_verify × t_verify + n_sign × t_sign``. Target: wall <= 2 × floor. A smaller
   timing before the run is shown too, only as a check of how much the machine drifted.
4. With ``--breakdown`` (where the time goes): a pure-trio reference (N tasks each doing K
   ``trio.sleep`` under ``MockClock(autojump_threshold=0)``), and a scaled-down run under
   cProfile whose self times are grouped by component (stdlib and builtin calls are charged to
   their callers). cProfile inflates Python-heavy code, so the per-access split reported is: the
   verify figures measured directly in the main run (the wrappers above), and the rest of the
   main run's wall time per access shared out in proportion to the profile.

``--quick`` runs the same scenario scaled down 10× (250 jobs per workload instead of 2,500,
Poisson arrivals 10× sparser so they still cover the day, 15 execute hosts instead of 150 so the
pool is as loaded as in the full day); its figures say so.
"""

from __future__ import annotations

import cProfile
import gc
import math
import os
import pstats
import random
import resource
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from scitokens_batch.metrics import Event
from scitokens_batch.scenario import Scenario, load_scenario, run_virtual
from scitokens_batch.tokens import Verifier
from scitokens_batch.tokens import _verifier as verifier_module

from ._report import CpuCounters, MachineLoad, machine_line

__all__ = ["NAME", "SCENARIO", "SimResult", "markdown_section", "measure", "print_result"]

NAME = "sim"
TITLE = "Simulator: a day of 10,000 jobs (day-10k.toml)"
SCENARIO = Path(__file__).with_name("day-10k.toml")

#: Targets of issue 3.
FLOOR_FACTOR = 2.0
RSS_LIMIT_GIB = 2.0

#: ``--quick`` divides the jobs (and the hosts) by this and spreads arrivals by it.
QUICK_SCALE = 10
#: The ``--breakdown`` profile runs the day scaled down by this (1/40 with ``--quick``).
PROFILE_SCALE = 10
PROFILE_SCALE_QUICK = 40

#: Raw verifies timed for the floor (batches × per batch), scaled to the verifies done.
FLOOR_BATCHES = 5
FLOOR_VERIFIES = 4_000
FLOOR_SIGNS = 1_000
FLOOR_VERIFIES_QUICK = 1_000
FLOOR_SIGNS_QUICK = 400

#: The trio reference: tasks x sleeps each (1/3 of it with --quick).
TRIO_TASKS = 300
TRIO_SLEEPS = 300

#: The workloads of day-10k.toml (their count is part of the scaling overrides).
_WORKLOADS = 4
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
#: The module-level name Verifier.check calls; wrapped for the run only.
_SIGNATURE_VALID = "signature_valid"

Progress = Callable[[str], None]


# -- the scenario and its scaling ----------------------------------------------------------------


def scaled_overrides(spec: Scenario, scale: int) -> list[str]:
    """``--set`` overrides running ``spec`` (day-10k) scaled down ``scale`` times.

    Jobs per workload and execute hosts are divided by ``scale`` and the Poisson arrivals
    spread by it, so that the arrivals still cover the day and the pool is as loaded as in the
    full run; ``jobs.submitted`` is expected to be the scaled count (a Poisson tail past the
    26 h may leave out a few: 2 %).
    """
    if scale == 1:
        return []
    out: list[str] = []
    total = 0
    for i, w in enumerate(spec.workloads[:_WORKLOADS]):
        jobs = max(1, w.jobs // scale)
        total += jobs
        mean = getattr(w.arrival, "mean_interval", None)
        out.append(f"workloads[{i}].jobs={jobs}")
        if mean is not None:
            out.append(f'workloads[{i}].arrival.mean_interval="{mean * scale:g}s"')
    for i, h in enumerate(spec.execute_hosts):
        out.append(f"execute_hosts[{i}].count={max(1, h.count // scale)}")
    out.append(
        'expect.checks=["jobs.submitted >= '
        f'{math.floor(total * 0.98)}", "data.accepted_after_exp == 0", '
        '"data.expired_at_use == 0"]'
    )
    return out


def load(scale: int) -> tuple[Scenario, list[str]]:
    """The benchmark scenario, scaled down ``scale`` times (1: as it is)."""
    full = load_scenario(SCENARIO)
    overrides = scaled_overrides(full, scale)
    return (load_scenario(SCENARIO, overrides=overrides) if overrides else full), overrides


# -- instrumentation of the main run --------------------------------------------------------------


@dataclass(slots=True)
class Probe:
    """What the benchmark-only wrappers and the observer saw during the run."""

    signatures: int = 0
    signature_seconds: float = 0.0
    authorizations: int = 0
    authorize_seconds: float = 0.0
    uncached_uses: int = 0
    events: Counter[str] = field(default_factory=Counter)
    #: signing inputs (``header.payload``) of the run's own tokens, for the floor
    inputs: list[bytes] = field(default_factory=list)

    def observe(self, ev: Event) -> None:
        """A recorder observer: count events; accesses whose verdict was not a cache hit."""
        kind = ev.kind
        self.events[kind] += 1
        if (kind == "use" and not ev.fields.get("cached")) or kind == "reject":
            self.uncached_uses += 1


@contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    """Count and time signature checks and whole verifications while inside (then restore)."""
    original_sig: Callable[[Any, Any], bool] = getattr(verifier_module, _SIGNATURE_VALID)
    original_authorize = Verifier.authorize
    clock = time.perf_counter
    inputs = probe.inputs

    def signature_valid(token: Any, key: Any) -> bool:
        start = clock()
        ok = original_sig(token, key)
        probe.signature_seconds += clock() - start
        probe.signatures += 1
        if not probe.signatures & 1023 and len(inputs) < 512:
            inputs.append(token.signing_input)
        return ok

    def authorize(self: Verifier, token: str | None, *, now: float, op: Any, path: str) -> Any:
        start = clock()
        verdict = original_authorize(self, token, now=now, op=op, path=path)
        probe.authorize_seconds += clock() - start
        probe.authorizations += 1
        return verdict

    setattr(verifier_module, _SIGNATURE_VALID, signature_valid)
    Verifier.authorize = authorize  # type: ignore[method-assign]
    try:
        yield
    finally:
        setattr(verifier_module, _SIGNATURE_VALID, original_sig)
        Verifier.authorize = original_authorize  # type: ignore[method-assign]


def code_revision() -> str:
    """``git`` HEAD of the checkout, and whether the package has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "scitokens_batch")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes in scitokens_batch/" if dirty else "")


def _peak_rss_gib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30 if os.uname().sysname == "Darwin" else 1 << 20)


# -- the crypto floor --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Floor:
    """Raw ES256 costs measured right after the run (median µs/op over batches)."""

    verify_us: float
    sign_us: float
    verify_batches_us: tuple[float, ...]
    sign_batches_us: tuple[float, ...]
    timed_verifies: int
    timed_signs: int
    input_bytes: int


def synthetic_inputs(size: int = 367) -> list[bytes]:
    """Random base64url ``header.payload`` stand-ins of ``size`` bytes (the day's tokens have
    367-byte signing inputs): for the floor before the run, or if the run captured none."""
    rng = random.Random(3)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return [bytes(rng.choice(alphabet) for _ in range(size)) for _ in range(64)]


def _batch_us(run: Callable[[int], object], n: int, batches: int) -> list[float]:
    out = []
    for _ in range(batches):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run(n)
            out.append((time.perf_counter() - start) / n * 1e6)
        finally:
            gc.enable()
    return out


def crypto_floor(inputs: Sequence[bytes], *, verifies: int, signs: int) -> Floor:
    """Time ``FLOOR_BATCHES`` batches of raw ES256 verifies and signs (key objects)."""
    msgs = list(inputs) or synthetic_inputs()
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    pairs = [(key.sign(m, _ECDSA_SHA256), m) for m in msgs]  # DER, as cryptography takes it
    verify, sign = public.verify, key.sign

    def run_verify(n: int) -> None:
        k = len(pairs)
        for i in range(n):
            sig, m = pairs[i % k]
            verify(sig, m, _ECDSA_SHA256)

    def run_sign(n: int) -> None:
        k = len(msgs)
        for i in range(n):
            sign(msgs[i % k], _ECDSA_SHA256)

    run_verify(200)  # warm up
    run_sign(100)
    v = _batch_us(run_verify, verifies, FLOOR_BATCHES)
    s = _batch_us(run_sign, signs, FLOOR_BATCHES)
    return Floor(
        verify_us=statistics.median(v),
        sign_us=statistics.median(s),
        verify_batches_us=tuple(v),
        sign_batches_us=tuple(s),
        timed_verifies=verifies * FLOOR_BATCHES,
        timed_signs=signs * FLOOR_BATCHES,
        input_bytes=round(statistics.mean(len(m) for m in msgs)),
    )


# -- where the time goes (--breakdown) ----------------------------------------------------------


def trio_sleep_reference(tasks: int, sleeps: int, seed: int = 20261121) -> float:
    """µs per ``trio.sleep`` for ``tasks`` tasks each sleeping ``sleeps`` random durations
    (exponential, mean 1 s) under ``MockClock(autojump_threshold=0)``."""
    rng = random.Random(seed)
    plans = [[rng.expovariate(1.0) for _ in range(sleeps)] for _ in range(tasks)]

    async def sleeper(durations: list[float]) -> None:
        for d in durations:
            await trio.sleep(d)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for durations in plans:
                nursery.start_soon(sleeper, durations)

    gc.collect()
    start = time.perf_counter()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return (time.perf_counter() - start) / (tasks * sleeps) * 1e6


#: Components, in display order. "raw" and "verify" come from the main run's wrappers.
COMPONENTS: dict[str, str] = {
    "raw": "signature check: raw ES256 verify + r‖s→DER (signature_valid)",
    "verify": "rest of our verify: parse, claims, times, audience, scopes, key lookup",
    "trio": "trio: run loop, cancel scopes, MockClock, outcome",
    "link": "shared-bandwidth link (_bandwidth.py)",
    "actors": "data server, execute host, in-memory transport, messages",
    "metrics": "recorder + summary observer (metrics/)",
    "others": "queue manager, token manager, issuer (incl. signs), world",
    "bench": "benchmark probes",
    "other": "other (unattributed)",
}

_PATH_RULES: tuple[tuple[str, str], ...] = (
    ("/trio/", "trio"),
    ("/outcome/", "trio"),
    ("/sniffio/", "trio"),
    ("scitokens_batch/tokens/", "verify"),
    ("scitokens_batch/actors/_bandwidth", "link"),
    ("scitokens_batch/actors/data_server", "actors"),
    ("scitokens_batch/actors/execute_host", "actors"),
    ("scitokens_batch/transport/", "actors"),
    ("scitokens_batch/protocol/", "actors"),
    ("scitokens_batch/metrics/", "metrics"),
    ("scitokens_batch/actors/", "others"),
    ("scitokens_batch/scenario/", "others"),
    ("benchmarks/", "bench"),
)

_Func = tuple[str, int, str]


def _own_component(func: _Func) -> str | None:
    """The component a profiled function belongs to, or None when its time goes to callers."""
    filename, _line, name = func
    if filename == "~":
        if "ECPublicKey" in name and "verify" in name:
            return "raw"
        if "ECPrivateKey" in name and "sign" in name:
            return "others"  # the issuer's signs (few)
        return None
    if filename.startswith("<attrs generated"):
        # "<attrs generated methods scitokens_batch.metrics._events.Event>": by its module
        filename = "/" + filename.rsplit(" ", 1)[-1].rstrip(">").replace(".", "/")
        if filename.startswith(("/trio/", "/outcome/")):
            return "trio"
    for needle, component in _PATH_RULES:
        if needle in filename:
            return component
    return None


def profile_components(stats: Mapping[_Func, Any]) -> dict[str, float]:
    """Self time by component; stdlib and builtin functions are charged to their callers, in
    proportion to the time each caller spent in them."""
    memo: dict[_Func, dict[str, float]] = {}

    def shares(func: _Func, depth: int = 0) -> dict[str, float]:
        own = _own_component(func)
        if own is not None:
            return {own: 1.0}
        if func in memo:
            return memo[func]
        callers = stats[func][4] if func in stats else {}
        total = sum(edge[2] for edge in callers.values())
        if depth > 30 or not callers or total <= 0:
            return {"other": 1.0}
        memo[func] = {"other": 1.0}  # a cycle lands here
        out: dict[str, float] = {}
        for caller, edge in callers.items():
            for comp, w in shares(caller, depth + 1).items():
                out[comp] = out.get(comp, 0.0) + w * edge[2] / total
        memo[func] = out
        return out

    seconds: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
    for func, (_cc, _nc, tt, _ct, _callers) in stats.items():
        for comp, w in shares(func).items():
            seconds[comp] += tt * w
    return seconds


def _calls(stats: Mapping[_Func, Any], file_part: str, name: str) -> int:
    return sum(v[1] for k, v in stats.items() if file_part in k[0] and k[2] == name)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Where the time goes: a profiled scaled-down run and the trio reference."""

    scale: int
    accesses: int
    profiled_wall: float
    profiled_seconds: dict[str, float]
    wakeups_per_access: float
    cancel_scopes_per_access: float
    run_loop_passes_per_access: float
    trio_sleep_us: float
    trio_tasks: int
    trio_sleeps: int


def profile_breakdown(scale: int, trio_tasks: int, trio_sleeps: int, say: Progress) -> Breakdown:
    """Run the day scaled down ``scale`` times under cProfile; time the trio reference."""
    say(f"trio reference: {trio_tasks} tasks x {trio_sleeps} sleeps under MockClock autojump")
    sleep_us = trio_sleep_reference(trio_tasks, trio_sleeps)
    spec, _ = load(scale)
    say(f"profiling the day scaled down 1/{scale} under cProfile")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        result = run_virtual(spec)
    finally:
        profiler.disable()
    wall = time.perf_counter() - start
    stats: Mapping[_Func, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    accesses = int(result.summary["data"]["accesses"]) or 1
    return Breakdown(
        scale=scale,
        accesses=accesses,
        profiled_wall=wall,
        profiled_seconds=profile_components(stats),
        wakeups_per_access=_calls(stats, "trio/_core/_run.py", "reschedule") / accesses,
        cancel_scopes_per_access=_calls(stats, "trio/_core/_run.py", "__enter__") / accesses,
        run_loop_passes_per_access=_calls(stats, "trio/_core/_io_", "get_events") / accesses,
        trio_sleep_us=sleep_us,
        trio_tasks=trio_tasks,
        trio_sleeps=trio_sleeps,
    )


# -- the section ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimResult:
    """Everything the simulator section measured."""

    quick: bool
    scale: int
    revision: str
    overrides: tuple[str, ...]
    out: Path | None
    wall: float
    trio_wall: float
    cpu_seconds: float
    rss_before_gib: float
    rss_peak_gib: float
    summary: dict[str, Any]
    checks: tuple[tuple[str, bool, Any], ...]
    probe: Probe
    floor: Floor
    floor_before: Floor
    load: MachineLoad | None
    breakdown: Breakdown | None

    # -- derived figures --
    @property
    def virtual_seconds(self) -> float:
        """The scenario's duration."""
        return float(self.summary["duration_s"])

    @property
    def events(self) -> int:
        """Events recorded (summary)."""
        return int(self.summary["events"])

    @property
    def accesses(self) -> int:
        """Data accesses (summary)."""
        return int(self.summary["data"]["accesses"])

    @property
    def signs(self) -> int:
        """Tokens minted, each one ES256 sign."""
        return int(self.summary["tokens"]["minted"])

    @property
    def floor_seconds(self) -> float:
        """n_verify x t_verify + n_sign x t_sign (the raw costs timed after the run)."""
        return self.floor_seconds_with(self.floor)

    def floor_seconds_with(self, floor: Floor) -> float:
        """The floor with the raw costs of ``floor``."""
        return (self.probe.signatures * floor.verify_us + self.signs * floor.sign_us) / 1e6

    @property
    def floor_ratio(self) -> float:
        """Wall / floor (target <= FLOOR_FACTOR)."""
        return self.wall / self.floor_seconds if self.floor_seconds > 0 else math.inf

    @property
    def problems(self) -> list[str]:
        """Things that make the figures suspect."""
        out = []
        if self.probe.signatures != self.probe.uncached_uses:
            out.append(
                f"signature verifications counted ({self.probe.signatures:,}) differ from "
                f"uncached use/reject events ({self.probe.uncached_uses:,})"
            )
        if self.summary["data"]["cache_hits"]:
            out.append("the accepted-token cache answered accesses: the floor is not the real one")
        if self.probe.events.total() != self.events:
            out.append(
                f"observer counted {self.probe.events.total():,} events, summary {self.events:,}"
            )
        out += [
            f"expectation failed: {line} (actual {actual})"
            for line, ok, actual in self.checks
            if not ok
        ]
        return out

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(figure, value, target, passed)."""
        return [
            (
                "wall / crypto floor",
                f"{self.floor_ratio:.2f}×",
                f"<= {FLOOR_FACTOR:.0f}×",
                self.floor_ratio <= FLOOR_FACTOR,
            ),
            (
                "peak RSS (whole process)",
                f"{self.rss_peak_gib:.2f} GiB",
                f"<= {RSS_LIMIT_GIB:.0f} GiB",
                self.rss_peak_gib <= RSS_LIMIT_GIB,
            ),
        ]

    def rows(self) -> list[tuple[str, str, str]]:
        """(figure, value, note) for the main table."""
        p, f, s = self.probe, self.floor, self.summary
        acc = max(1, self.accesses)
        vh = self.virtual_seconds / 3600
        before_ratio = self.wall / self.floor_seconds_with(self.floor_before)
        rows = [
            (
                "scenario",
                f"{s['jobs']['submitted']:,} jobs, {vh:g} h virtual",
                f"scaled down 1/{self.scale} (--quick)" if self.scale > 1 else "day-10k.toml",
            ),
            ("code", self.revision, "git HEAD of the checkout measured"),
            ("wall time", f"{self.wall:.1f} s", "run_virtual: build, run, summary"),
            ("CPU time / wall", f"{self.cpu_seconds / self.wall:.0%}", "this process"),
            (
                "virtual s per wall s",
                f"{self.virtual_seconds / self.wall:,.0f}",
                f"{self.virtual_seconds:,.0f} s virtual",
            ),
            ("events / s", f"{self.events / self.wall:,.0f}", f"{self.events:,} events"),
            ("accesses / s", f"{self.accesses / self.wall:,.0f}", f"{self.accesses:,} accesses"),
            ("wall per access", f"{self.wall / acc * 1e6:.0f} µs", "everything included"),
            (
                "signature verifies",
                f"{p.signatures:,}",
                "counted in signature_valid (every access: cache off)",
            ),
            ("signs", f"{self.signs:,}", "tokens.minted (per user and service)"),
            (
                "raw ES256 verify",
                f"{f.verify_us:.1f} µs",
                f"median of {FLOOR_BATCHES} batches, {f.timed_verifies:,} timed, scaled "
                f"to {p.signatures:,}; {f.input_bytes} B inputs from the run",
            ),
            (
                "raw ES256 sign",
                f"{f.sign_us:.1f} µs",
                f"median of {FLOOR_BATCHES} batches, {f.timed_signs:,} timed",
            ),
            (
                "raw ES256 verify / sign, before the run",
                f"{self.floor_before.verify_us:.1f} / {self.floor_before.sign_us:.1f} µs",
                "drift check only (the floor uses the figures after the run); with these, "
                f"wall / floor would be {before_ratio:.2f}×",
            ),
            (
                "crypto floor",
                f"{self.floor_seconds:.1f} s",
                "n_verify × t_verify + n_sign × t_sign",
            ),
            (
                "in run: Verifier.authorize",
                f"{p.authorize_seconds:.1f} s",
                f"{p.authorize_seconds / acc * 1e6:.1f} µs per access (whole verify + scope)",
            ),
            (
                "in run: signature_valid",
                f"{p.signature_seconds:.1f} s",
                f"{p.signature_seconds / max(1, p.signatures) * 1e6:.1f} µs each "
                "(DER conversion + raw verify)",
            ),
            (
                "in-run signature_valid / raw verify",
                f"{p.signature_seconds / max(1, p.signatures) * 1e6 / f.verify_us:.2f}×",
                "cold caches between verifies, DER conversion, load changes",
            ),
            (
                "wall / in-run signature time",
                f"{self.wall / p.signature_seconds:.2f}×" if p.signature_seconds else "n/a",
                "the floor as the run itself paid it (same load): info",
            ),
            ("peak RSS before the run", f"{self.rss_before_gib:.2f} GiB", "interpreter etc."),
            (
                "checks",
                f"completed {s['jobs']['completed']:,}, failed {s['jobs']['failed']:,}, "
                f"accesses {self.accesses:,}, expired_at_use {s['data']['expired_at_use']}, "
                f"accepted_after_exp {s['data']['accepted_after_exp']}",
                "[expect] " + ("all passed" if all(ok for _l, ok, _a in self.checks) else "FAILED"),
            ),
        ]
        if self.out is not None:
            rows.insert(1, ("outputs", str(self.out), "written: wall includes events.jsonl etc."))
        return rows

    def split(self) -> list[tuple[str, float, float | None]]:
        """(component, µs per access in the main run, profiled µs per access)."""
        b = self.breakdown
        if b is None:
            return []
        acc = max(1, self.accesses)
        wall_us = self.wall / acc * 1e6
        sig_us = self.probe.signature_seconds / acc * 1e6
        auth_us = self.probe.authorize_seconds / acc * 1e6
        prof = {k: v / b.accesses * 1e6 for k, v in b.profiled_seconds.items()}
        rest = {k: v for k, v in prof.items() if k not in ("raw", "verify")}
        rest_total = sum(rest.values()) or 1.0
        remaining = max(0.0, wall_us - auth_us)
        out: list[tuple[str, float, float | None]] = [
            ("raw", sig_us, prof["raw"]),
            ("verify", auth_us - sig_us, prof["verify"]),
        ]
        out += [(k, remaining * v / rest_total, v) for k, v in rest.items() if v >= 0.05]
        return out


def measure(*, quick: bool, breakdown: bool, out: Path | None, err: Console) -> SimResult:
    """Run the section (see the module docstring)."""

    def say(msg: str) -> None:
        err.print(f"[dim]  {NAME}: {msg}[/dim]")

    scale = QUICK_SCALE if quick else 1
    revision = code_revision()  # before the run: the code the run imports
    spec, overrides = load(scale)
    say(
        f"running {SCENARIO.name}"
        + (f" scaled down 1/{scale}" if scale > 1 else "")
        + " once (this takes minutes)" * (scale == 1)
    )
    probe = Probe()
    wall0 = time.perf_counter()
    marks = iter(range(10, 101, 10))
    next_mark = [next(marks)]

    def progress(done: float, total: float) -> None:
        pct = 100 * done / total
        if next_mark[0] and pct >= next_mark[0]:
            say(f"{pct:3.0f} % of virtual time after {time.perf_counter() - wall0:.0f} s wall")
            next_mark[0] = next(marks, 0)

    verifies = FLOOR_VERIFIES_QUICK if quick else FLOOR_VERIFIES
    signs = FLOOR_SIGNS_QUICK if quick else FLOOR_SIGNS
    # A first look at the floor before the run: only to show how much the machine drifted.
    floor_before = crypto_floor(synthetic_inputs(), verifies=verifies // 2, signs=signs // 2)
    rss_before = _peak_rss_gib()
    counters = CpuCounters.read()
    cpu0 = time.process_time()
    start = time.perf_counter()
    with instrumented(probe):
        result = run_virtual(spec, out=out, observers=[probe.observe], progress=progress)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    load_ = MachineLoad.between(counters, CpuCounters.read())
    rss_peak = _peak_rss_gib()
    say(f"run took {wall:.1f} s; timing the crypto floor")

    floor = crypto_floor(probe.inputs, verifies=verifies, signs=signs)
    bd = None
    if breakdown:
        div = 3 if quick else 1
        bd = profile_breakdown(
            PROFILE_SCALE_QUICK if quick else PROFILE_SCALE,
            TRIO_TASKS // div,
            TRIO_SLEEPS // div,
            say,
        )
    return SimResult(
        quick=quick,
        scale=scale,
        revision=revision,
        overrides=tuple(overrides),
        out=out,
        wall=wall,
        trio_wall=float(result.run["wall_seconds"]),
        cpu_seconds=cpu,
        rss_before_gib=rss_before,
        rss_peak_gib=rss_peak,
        summary=result.summary,
        checks=tuple((c.line, c.passed, c.actual) for c in result.checks),
        probe=probe,
        floor=floor,
        floor_before=floor_before,
        load=load_,
        breakdown=bd,
    )


# -- rendering ------------------------------------------------------------------------------------


def _load_text(r: SimResult) -> str:
    cores = os.cpu_count() or 1
    text = f"CPU time of this process / wall during the run: {r.cpu_seconds / r.wall:.0%}"
    if r.load is not None:
        text += (
            f"; all {cores} CPUs {r.load.busy:.0%} busy during the run "
            f"(this process alone ≈ {1 / cores:.0%}), steal {r.load.steal:.1%}"
        )
        if r.load.busy > 1.3 / cores:
            text += "; machine shared: the floor ratio is only as good as the load was even"
    return text + "."


def _breakdown_text(r: SimResult) -> list[str]:
    b = r.breakdown
    if b is None:
        return []
    acc = max(1, r.accesses)
    split = {k: us for k, us, _p in r.split()}
    wall_us = r.wall / acc * 1e6
    floor_us = r.floor_seconds / acc * 1e6
    budget = FLOOR_FACTOR * floor_us
    trio_us = split.get("trio", 0.0)
    over = wall_us - budget
    return [
        f"- Per access: {wall_us:.0f} µs of wall against a floor of {floor_us:.0f} µs "
        f"(budget {budget:.0f} µs at {FLOOR_FACTOR:.0f}× the floor; "
        + (f"{over:.0f} µs over)." if over > 0 else f"{-over:.0f} µs to spare)."),
        f"- trio does {b.wakeups_per_access:.2f} task wake-ups, enters "
        f"{b.cancel_scopes_per_access:.2f} cancel scopes and makes "
        f"{b.run_loop_passes_per_access:.2f} run-loop passes per access (profile); one "
        f"`trio.sleep` under MockClock autojump costs {b.trio_sleep_us:.1f} µs on its own here "
        f"({b.trio_tasks} tasks × {b.trio_sleeps} sleeps), so ≈ "
        f"{b.wakeups_per_access * b.trio_sleep_us:.0f} µs per access is the engine alone "
        f"(estimated {trio_us:.0f} µs from the profile).",
        f"- Profile: the day scaled down 1/{b.scale} ({b.accesses:,} accesses) ran "
        f"{b.profiled_wall:.0f} s under cProfile; stdlib and builtin calls are charged to their "
        "callers. The raw-verify and our-verify rows are measured directly in the main run "
        "(wrappers); the other rows share the rest of the main run's wall per access in "
        "proportion to the profile (cProfile inflates Python-heavy code, so read them as ±20 %).",
    ]


def _options_text(r: SimResult) -> list[str]:
    """What would close the gap, with gains estimated from this run's split (target missed)."""
    b = r.breakdown
    if b is None or r.floor_ratio <= FLOOR_FACTOR:
        return []
    acc = max(1, r.accesses)
    split = {k: us for k, us, _p in r.split()}
    wall_us = r.wall / acc * 1e6
    floor_us = r.floor_seconds / acc * 1e6
    trio_us = split.get("trio", 0.0)
    per_wake = trio_us / b.wakeups_per_access if b.wakeups_per_access else 0.0
    glue = sum(split.get(k, 0.0) for k in ("link", "actors", "metrics", "others"))
    sig_us = split.get("raw", 0.0)

    def ratio(save: float) -> str:
        return f"{(wall_us - save) / floor_us:.2f}×"

    lo, hi = trio_us / 2, trio_us * 4 / 5
    return [
        f"Options, with gains estimated from the split above (needed: "
        f"{wall_us - FLOOR_FACTOR * floor_us:.0f} µs per access):",
        "",
        f"1. **A purpose-built virtual-time scheduler instead of trio's** (a heap of `(t, seq)` "
        "deadlines stepping the actors' coroutines directly: no cancel scope, no `Cancelled` "
        "raised and caught, no epoll poll per run-loop pass). perf-notes.md measured a "
        "one-driver heap at 2× `trio.sleep` and SimPy at ~20×; at 2× to 5× this saves "
        f"{lo:.0f}–{hi:.0f} of the {trio_us:.0f} µs (wall / floor {ratio(lo)} to {ratio(hi)}). "
        "The most work: every actor's waits move to the new primitives.",
        f"2. **Fewer wake-ups per access, staying on trio** (done in a1b9804: a transfer "
        "sleeps to its own finish time, moved when the share changes, instead of a driver task "
        "waking it through an Event): an access now costs "
        f"{b.wakeups_per_access:.2f} wake-ups and {b.run_loop_passes_per_access:.2f} run-loop "
        f"passes, ≈ {per_wake:.0f} µs each; what is left of trio's cost is one sleep per "
        "transfer and per compute step, which only option 1 removes.",
        f"3. **Trim the per-access Python around the engine**: link, data server, host, "
        f"messages, recorder and the rest cost {glue:.0f} µs per access (validated message "
        "objects, an event dict per access, link bookkeeping); a third of it is ≈ "
        f"{glue / 3:.0f} µs (wall / floor {ratio(glue / 3)}). The signature check itself costs "
        f"{sig_us:.0f} µs in the run against {r.floor.verify_us:.0f} µs raw in a tight loop "
        "(r‖s→DER conversion, cold caches after the Python between verifies): memoising the "
        "DER form with the parsed token recovers only a few µs.",
        "",
        "Not an option: verifying in a worker thread. Under MockClock autojump a task waiting "
        "on `trio.to_thread` counts as blocked, so virtual time would jump while the thread "
        "verifies (perf-notes.md). The second core pays off for independent replicas (sweeps), "
        "not for one run. Combined: "
        f"1 + 3 ≈ {lo + glue / 3:.0f}–{hi + glue / 3:.0f} µs (wall / floor "
        f"{ratio(lo + glue / 3)} to {ratio(hi + glue / 3)}). The raw verify drifts between "
        f"timings on this shared machine ({r.floor_before.verify_us:.0f} µs before the run, "
        f"{r.floor.verify_us:.0f} µs after): with the figure from before the run the ratio "
        f"would be {r.wall / r.floor_seconds_with(r.floor_before):.2f}×.",
    ]


def print_result(console: Console, r: SimResult, info: Mapping[str, str]) -> None:
    """The rich tables of the section."""
    table = Table(title=f"{TITLE} — one run", caption=machine_line(info), caption_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")
    for figure, value, note in r.rows():
        table.add_row(figure, value, note)
    console.print(table)

    targets = Table(title=f"{TITLE} — targets")
    targets.add_column("figure")
    targets.add_column("value", justify="right")
    targets.add_column("target", justify="right")
    targets.add_column("result", justify="center")
    for figure, value, target, ok in r.targets():
        targets.add_row(figure, value, target, "[bold green]PASS[/]" if ok else "[bold red]MISS[/]")
    console.print(targets)
    console.print(f"[dim]{_load_text(r)}[/dim]")

    if r.breakdown is not None:
        split = Table(title=f"{TITLE} — where the time goes (µs per access)")
        split.add_column("component")
        split.add_column("µs/access", justify="right")
        split.add_column("share", justify="right")
        split.add_column("profiled µs/access", justify="right", style="dim")
        wall_us = r.wall / max(1, r.accesses) * 1e6
        for key, us, prof in r.split():
            split.add_row(
                COMPONENTS[key], f"{us:.1f}", f"{us / wall_us:.0%}", f"{prof:.1f}" if prof else ""
            )
        split.add_row("[bold]total (wall per access)[/bold]", f"{wall_us:.1f}", "100%", "")
        console.print(split)
        for line in [*_breakdown_text(r), *_options_text(r)]:
            console.print(line.replace("**", "") if line else "")
    for p in r.problems:
        console.print(f"[bold red]PROBLEM:[/bold red] {p}")
    missed = [t for t in r.targets() if not t[3]]
    if missed:
        console.print(
            f"[bold red]MISS: {len(missed)} target(s) not met:[/bold red] "
            + "; ".join(f"{t[0]} = {t[1]}" for t in missed)
        )
    else:
        console.print("[bold green]All targets met.[/bold green]")


def markdown_section(r: SimResult, info: Mapping[str, str]) -> str:
    """The markdown block of the section, markers included."""
    lines = [
        f"<!-- bench:{NAME}:start -->",
        f"## {TITLE}",
        "",
        "_Generated by `python -m benchmarks --section sim --breakdown --markdown "
        "docs/performance.md` (`make bench` runs the section without the breakdown); the text "
        f"between the `bench:{NAME}` markers is replaced on every run._",
        "",
        f"**Machine:** {machine_line(info)}",
        "",
        "**Method:** `load_scenario(benchmarks/day-10k.toml)` + `run_virtual(spec)` once, in "
        "process, no outputs; wall = `perf_counter` around `run_virtual`; peak RSS = `ru_maxrss` "
        "of the whole process (interpreter and libraries included). Signature verifies are "
        "counted by wrapping `tokens._verifier.signature_valid` for the run (restored after); "
        "signs are `tokens.minted`. The floor is timed right after the run: raw `cryptography` "
        "ES256 verify and sign with key objects over signing inputs captured from the run, "
        f"{FLOOR_BATCHES} batches each, median, scaled to the counts. {_load_text(r)}",
        "",
    ]
    if r.scale > 1:
        lines += [
            f"**Scaled down 1/{r.scale} (`--quick`)**: `{'`, `'.join(r.overrides)}`.",
            "",
        ]
    lines += ["| figure | value | how |", "|---|---:|---|"]
    lines += [f"| {f} | {v} | {n} |" for f, v, n in r.rows()]
    lines += ["", "| target | value | limit | result |", "|---|---:|---:|:---:|"]
    for figure, value, target, ok in r.targets():
        lines.append(f"| {figure} | {value} | {target} | {'**PASS**' if ok else '**MISS**'} |")
    if r.breakdown is not None:
        wall_us = r.wall / max(1, r.accesses) * 1e6
        lines += [
            "",
            "### Where the time goes",
            "",
            "| component | µs per access | share | profiled µs per access |",
            "|---|---:|---:|---:|",
        ]
        for key, us, prof in r.split():
            lines.append(
                f"| {COMPONENTS[key]} | {us:.1f} | {us / wall_us:.0%} | "
                f"{f'{prof:.1f}' if prof else ''} |"
            )
        lines.append(f"| **total (wall per access)** | **{wall_us:.1f}** | 100% | |")
        lines += ["", *_breakdown_text(r)]
        options = _options_text(r)
        if options:
            lines += ["", *options]
    if r.problems:
        lines += ["", *(f"- **Problem:** {p}" for p in r.problems)]
    lines += ["", f"<!-- bench:{NAME}:end -->"]
    return "\n".join(lines)


def to_json(r: SimResult) -> dict[str, Any]:
    """Every figure of the section, JSON-able."""
    p, f = r.probe, r.floor
    doc: dict[str, Any] = {
        "title": TITLE,
        "scale": r.scale,
        "revision": r.revision,
        "overrides": list(r.overrides),
        "wall_s": r.wall,
        "trio_run_wall_s": r.trio_wall,
        "cpu_s": r.cpu_seconds,
        "machine_busy": r.load.busy if r.load else None,
        "machine_steal": r.load.steal if r.load else None,
        "rss_before_gib": r.rss_before_gib,
        "rss_peak_gib": r.rss_peak_gib,
        "virtual_s": r.virtual_seconds,
        "events": r.events,
        "events_by_kind": dict(p.events),
        "accesses": r.accesses,
        "signature_verifies": p.signatures,
        "signature_s_in_run": p.signature_seconds,
        "authorize_s_in_run": p.authorize_seconds,
        "signs": r.signs,
        "floor": {
            "verify_us": f.verify_us,
            "sign_us": f.sign_us,
            "verify_batches_us": list(f.verify_batches_us),
            "sign_batches_us": list(f.sign_batches_us),
            "input_bytes": f.input_bytes,
            "seconds": r.floor_seconds,
            "before_run_verify_us": r.floor_before.verify_us,
            "before_run_sign_us": r.floor_before.sign_us,
        },
        "floor_ratio": r.floor_ratio,
        "targets": {t[0]: {"value": t[1], "target": t[2], "passed": t[3]} for t in r.targets()},
        "checks": [{"check": c, "passed": ok, "actual": a} for c, ok, a in r.checks],
        "problems": r.problems,
        "summary": {k: v for k, v in r.summary.items() if not k.startswith("_")},
    }
    if r.breakdown is not None:
        b = r.breakdown
        doc["breakdown"] = {
            "scale": b.scale,
            "accesses": b.accesses,
            "profiled_wall_s": b.profiled_wall,
            "profiled_s": b.profiled_seconds,
            "us_per_access": {k: us for k, us, _p in r.split()},
            "wakeups_per_access": b.wakeups_per_access,
            "cancel_scopes_per_access": b.cancel_scopes_per_access,
            "run_loop_passes_per_access": b.run_loop_passes_per_access,
            "trio_sleep_us": b.trio_sleep_us,
        }
    return doc
