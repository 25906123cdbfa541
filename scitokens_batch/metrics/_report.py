"""report.html and its plots, from downsampled series folded out of the event stream.

:class:`ReportBuilder` is a :class:`~scitokens_batch.metrics.Recorder` observer, like
:class:`~scitokens_batch.metrics.SummaryBuilder`, but it never keeps the events: it cuts the run
into a fixed number of time buckets and keeps a few numbers per bucket, so a run of a million
data accesses costs the same memory as a run of a thousand. Per bucket it keeps:

* headroom at use (``use`` events): the minimum, and a bounded systematic sample (every
  ``2**k``-th value, at most :data:`SAMPLES_PER_BUCKET`) from which the median is read;
* accesses that presented an expired token (``use`` or ``reject`` with ``headroom_s <= 0``, the
  events behind ``data.expired_at_use``);
* issuer ``request`` events and those with ``status >= 400``; token manager renewals
  (``refresh`` with ``initial`` false) and ``refresh_failed`` events;
* ``reject`` events by reason;
* the number of jobs in each state at the end of the bucket (the only per-job memory is the
  current state of each job, as in summary.json).

:meth:`ReportBuilder.write` draws the PNGs with matplotlib's Agg canvas (imported only then; the
report is written without plots when matplotlib is missing) and a self-contained report.html:
no JavaScript, no external resources, the images by relative file name. Every file is written
atomically, and the same events and summary give byte-identical files.
"""

from __future__ import annotations

import html
import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from scitokens_batch._files import write_public

from ._events import Event
from ._summary import DENIAL_REASONS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BUCKET_LADDER",
    "JOB_STATES",
    "PLOT_FILES",
    "SAMPLES_PER_BUCKET",
    "TIMELINE_JOBS",
    "JobLane",
    "ReportBuilder",
    "ReportSeries",
    "fixed_bucket_s",
]

#: Every PNG the report may write (a run removes those it did not write this time).
PLOT_FILES: Final[tuple[str, ...]] = (
    "headroom.png",
    "headroom-cdf.png",
    "timeline.png",
    "issuer.png",
    "servers.png",
    "jobs.png",
    "denials.png",
)

#: A fault window as the report shades it: (start s, end s, label); end == start for an
#: instantaneous fault (a key rotation, a clock step), drawn as a line.
FaultWindow = tuple[float, float, str]

#: The prefix of the error a client records when the issuer did not answer at all.
ISSUER_UNREACHABLE: Final = "issuer unreachable"

#: Job states, in the order the jobs plot stacks them.
JOB_STATES: Final[tuple[str, ...]] = ("idle", "running", "held", "completed", "failed")

#: The most headroom values kept per bucket for its median.
SAMPLES_PER_BUCKET: Final = 64

_IDLE, _RUNNING, _HELD, _COMPLETED, _FAILED = range(5)
_STATE_AFTER: Final[dict[str, int]] = {
    "submit": _IDLE,
    "execute": _RUNNING,
    "held": _HELD,
    "released": _IDLE,
    "evicted": _IDLE,
}

#: The order of the headline tables; other sections of the summary follow, by name.
_SECTIONS: Final = ("jobs", "tokens", "data", "headroom", "issuer")

_MATPLOTLIB_MISSING: Final = (
    "matplotlib is not installed, so this report has no plots "
    "(install it with: pip install matplotlib)"
)

_PNG_METADATA: Final[dict[str, str | None]] = {"Software": None}

_COLORS: Final[dict[str, str]] = {
    "idle": "#9ecae1",
    "running": "#3182bd",
    "held": "#fd8d3c",
    "completed": "#74c476",
    "failed": "#de2d26",
}


#: Jobs drawn on the per-job timeline, and the marks kept per job (memory stays bounded).
TIMELINE_JOBS: Final = 20
_TIMELINE_MARKS: Final = 500


@attrs.frozen(kw_only=True)
class JobLane:
    """One sampled job on the timeline (times in run seconds)."""

    job: int
    """The job id."""
    runs: tuple[tuple[float, float | None], ...]
    """(start, end) of each execution; end None while still running at the end."""
    tokens: tuple[tuple[float, float], ...]
    """(staged at, expires at) of each token staged into its sandbox."""
    uses: tuple[float, ...]
    """Times of accepted data accesses."""
    denials: tuple[float, ...]
    """Times of refused data accesses."""


@attrs.frozen(kw_only=True)
class ReportSeries:
    """The per-bucket series of a run, as plotted.

    Bucket ``i`` spans ``[i * bucket_s, (i + 1) * bucket_s)`` seconds. Events after the run's
    duration count in the last bucket; events before 0 in the first.
    """

    bucket_s: float
    """Width of a bucket, in seconds."""
    headroom_min_s: tuple[float | None, ...]
    """Least headroom of an accepted access in the bucket; None when there was none."""
    headroom_p50_s: tuple[float | None, ...]
    """Median headroom of the bucket's accepted accesses, from the bucket's bounded sample."""
    headroom_count: tuple[int, ...]
    """Accepted accesses with a headroom in the bucket."""
    expired_at_use: tuple[int, ...]
    """Accesses (accepted or rejected) that presented an expired token."""
    issuer_requests: tuple[int, ...]
    """Requests to the issuer (token and JWKS endpoints)."""
    issuer_errors: tuple[int, ...]
    """Issuer requests answered with a status of 400 or more."""
    renewals: tuple[int, ...]
    """Token manager renewals (``refresh`` events that are not a first token)."""
    refresh_failures: tuple[int, ...]
    """Token manager ``refresh_failed`` events."""
    denied: Mapping[str, tuple[int, ...]]
    """Rejected accesses by reason, only reasons seen, known reasons first."""
    job_states: Mapping[str, tuple[int, ...]]
    """Jobs in each of :data:`JOB_STATES` at the end of the bucket."""
    issuer_unreachable: tuple[int, ...] = ()
    """Attempts on the issuer that got no answer (down or partitioned away): with
    ``issuer_requests`` they are the attempts, so that a retry storm against a down issuer
    shows (the issuer itself records nothing while it is down)."""
    faults: tuple[FaultWindow, ...] = ()
    """The scenario's fault windows, shaded on every time plot."""
    headroom_sample: tuple[float, ...] = ()
    """Every headroom kept by the bounded per-bucket samples, sorted (the CDF plot)."""
    job_lanes: tuple[JobLane, ...] = ()
    """The sampled jobs of the per-job timeline, by job id."""
    requests_by_issuer: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict)
    """``issuer_requests`` split by issuer (the actor that answered), by name."""
    accesses_by_server: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict)
    """Data accesses judged (accepted or refused) per data server, by name."""
    denials_by_server: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict)
    """Refused data accesses per data server, by name."""

    @property
    def buckets(self) -> int:
        """Number of buckets."""
        return len(self.issuer_requests)


#: The bucket widths a run's report chooses from (seconds): round, so that rates read plainly.
BUCKET_LADDER: Final = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0)


def fixed_bucket_s(duration_s: float, *, most: int = 500) -> float:
    """The smallest width of :data:`BUCKET_LADDER` that cuts ``duration_s`` into at most
    ``most`` buckets (the largest width for longer runs)."""
    for width in BUCKET_LADDER:
        if duration_s / width <= most:
            return width
    return BUCKET_LADDER[-1]


class ReportBuilder:
    """Folds events into downsampled per-bucket series and writes report.html with its plots.

    Args:
        duration_s: how long the run lasts, in the events' seconds; the buckets divide it.
        buckets: how many buckets (200 to 600 give smooth plots of a few hundred pixels).

    Raises:
        ValueError: ``duration_s`` is not a positive finite number, or ``buckets`` < 1.
    """

    __slots__ = (
        "_bucket_s",
        "_by_issuer",
        "_by_server",
        "_denied",
        "_denied_by_server",
        "_dispatch",
        "_errors",
        "_expired",
        "_faults",
        "_filled",
        "_inv",
        "_job_state",
        "_lane_stride",
        "_lanes",
        "_min",
        "_n",
        "_refresh_failures",
        "_renewals",
        "_requests",
        "_samples",
        "_seen",
        "_state_counts",
        "_state_ends",
        "_stride",
        "_unreachable",
    )

    def __init__(
        self,
        duration_s: float,
        *,
        buckets: int = 400,
        faults: Sequence[FaultWindow] = (),
        bucket_s: float | None = None,
        jobs_total: int = 0,
    ) -> None:
        if not (isinstance(duration_s, int | float) and math.isfinite(duration_s)) or (
            duration_s <= 0
        ):
            raise ValueError(f"duration_s must be a positive finite number (got {duration_s!r})")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"buckets must be an integer >= 1 (got {buckets!r})")
        if bucket_s is not None:
            # A fixed, round width (fixed_bucket_s): "per minute" then means per minute, and
            # the last bucket may reach past the end of the run.
            if not (0 < bucket_s < math.inf):
                raise ValueError(f"bucket_s must be a positive finite number (got {bucket_s!r})")
            buckets = max(1, math.ceil(duration_s / bucket_s - 1e-9))
            duration_s = buckets * bucket_s
        n = buckets
        self._n = n
        self._bucket_s = duration_s / n
        self._inv = n / duration_s
        self._min = [math.inf] * n
        self._seen = [0] * n
        self._stride = [1] * n
        self._samples: list[list[float]] = [[] for _ in range(n)]
        self._expired = [0] * n
        self._requests = [0] * n
        self._errors = [0] * n
        self._renewals = [0] * n
        self._refresh_failures = [0] * n
        self._unreachable = [0] * n
        self._faults = tuple(faults)
        # The timeline follows jobs 1, 1 + stride, ... (ids are given in submit order), so
        # that the sample spreads over the whole run whatever its size.
        self._lane_stride = max(1, jobs_total // TIMELINE_JOBS)
        self._lanes: dict[int, dict[str, list[Any]]] = {}
        # One series per issuer and per data server: as many lists as there are such actors.
        self._by_issuer: dict[str, list[int]] = {}
        self._by_server: dict[str, list[int]] = {}
        self._denied_by_server: dict[str, list[int]] = {}
        self._denied: dict[str, list[int]] = {}
        self._job_state: dict[Any, int] = {}
        self._state_counts = [0] * len(JOB_STATES)
        # The state counts at the end of each bucket already over; the bucket still open and
        # those after it get the current counts (see series()).
        self._state_ends: list[tuple[int, ...]] = []
        self._filled = 0
        job = self._job
        self._dispatch: dict[str, Callable[[Event], None]] = {
            "use": self._use,
            "reject": self._reject,
            "request": self._request,
            "refresh": self._refresh,
            "refresh_failed": self._refresh_failed,
            "stage": self._stage,
            "exchange_failed": self._client_failed,
            "token_request_failed": self._client_failed,
            "submit": job,
            "execute": job,
            "held": job,
            "released": job,
            "evicted": job,
            "terminated": job,
        }

    def __call__(self, ev: Event) -> None:
        """Take one event (a :class:`~scitokens_batch.metrics.Recorder` observer)."""
        handle = self._dispatch.get(ev.kind)
        if handle is not None:
            handle(ev)

    def feed(self, events: Iterable[Event]) -> ReportBuilder:
        """Take many events (replaying an events.jsonl).

        Returns:
            This builder, for chaining.
        """
        for ev in events:
            self(ev)
        return self

    @property
    def buckets(self) -> int:
        """Number of time buckets."""
        return self._n

    # -- folding (the hot path: a bucket index and a few additions per event) ---------------

    def _index(self, t: float) -> int:
        i = int(t * self._inv)
        if i >= self._n:
            return self._n - 1
        return i if i > 0 else 0

    def _lane(self, ev: Event) -> dict[str, list[Any]] | None:
        """The timeline lane of the event's job, when that job is sampled (and not full)."""
        job = ev.fields.get("job")
        if not isinstance(job, int) or (job - 1) % self._lane_stride:
            return None
        lane = self._lanes.get(job)
        if lane is None:
            if len(self._lanes) >= TIMELINE_JOBS:
                return None
            lane = self._lanes[job] = {"runs": [], "tokens": [], "uses": [], "denials": []}
        return lane

    def _stage(self, ev: Event) -> None:
        lane = self._lane(ev)
        f = ev.fields
        exp, host_time = f.get("exp"), f.get("host_time")
        if (
            lane is not None
            and isinstance(exp, int | float)
            and isinstance(host_time, float)
            and len(lane["tokens"]) < _TIMELINE_MARKS
        ):
            # exp is unix time on the issuer's clock; host_time is the host's clock at t.
            lane["tokens"].append((ev.t, ev.t + (exp - host_time)))

    def _per_actor(self, table: dict[str, list[int]], ev: Event, i: int) -> None:
        counts = table.get(ev.actor)
        if counts is None:
            counts = table[ev.actor] = [0] * self._n
        counts[i] += 1

    def _use(self, ev: Event) -> None:
        f = ev.fields
        # _index(), inlined: this runs once per data access.
        i = int(ev.t * self._inv)
        if i >= self._n:
            i = self._n - 1
        elif i < 0:
            i = 0
        counts = self._by_server.get(ev.actor)
        if counts is None:
            counts = self._by_server[ev.actor] = [0] * self._n
        counts[i] += 1
        job = f.get("job")
        if job.__class__ is int and not (job - 1) % self._lane_stride:  # a sampled job
            lane = self._lane(ev)
            if lane is not None and len(lane["uses"]) < _TIMELINE_MARKS:
                lane["uses"].append(ev.t)
        headroom = f.get("headroom_s")
        if headroom is None:
            return
        if headroom <= 0:
            self._expired[i] += 1
        if headroom < self._min[i]:
            self._min[i] = headroom
        # A systematic sample: keep every stride-th value; when the sample is full, drop every
        # other kept value and double the stride, so it stays spread over the whole bucket.
        seen = self._seen[i]
        self._seen[i] = seen + 1
        stride = self._stride[i]
        if seen % stride == 0:
            sample = self._samples[i]
            sample.append(headroom)
            if len(sample) >= SAMPLES_PER_BUCKET:
                del sample[1::2]
                self._stride[i] = stride * 2

    def _reject(self, ev: Event) -> None:
        i = self._index(ev.t)
        self._per_actor(self._by_server, ev, i)
        self._per_actor(self._denied_by_server, ev, i)
        lane = self._lane(ev)
        if lane is not None and len(lane["denials"]) < _TIMELINE_MARKS:
            lane["denials"].append(ev.t)
        f = ev.fields
        reason = f.get("reason") or "unknown"
        per_bucket = self._denied.get(reason)
        if per_bucket is None:
            per_bucket = self._denied[reason] = [0] * self._n
        per_bucket[i] += 1
        headroom = f.get("headroom_s")
        if headroom is not None and headroom <= 0:
            self._expired[i] += 1

    def _request(self, ev: Event) -> None:
        i = self._index(ev.t)
        self._per_actor(self._by_issuer, ev, i)
        self._requests[i] += 1
        if ev.fields.get("status", 0) >= 400:
            self._errors[i] += 1

    def _refresh(self, ev: Event) -> None:
        if not ev.fields.get("initial"):
            self._renewals[self._index(ev.t)] += 1

    def _refresh_failed(self, ev: Event) -> None:
        self._refresh_failures[self._index(ev.t)] += 1
        self._client_failed(ev)

    def _client_failed(self, ev: Event) -> None:
        error = ev.fields.get("error")
        if isinstance(error, str) and error.startswith(ISSUER_UNREACHABLE):
            self._unreachable[self._index(ev.t)] += 1

    def _job(self, ev: Event) -> None:
        f = ev.fields
        kind = ev.kind
        if kind == "terminated":
            new = _COMPLETED if f.get("status") == "completed" else _FAILED
        else:
            new = _STATE_AFTER[kind]
        i = self._index(ev.t)
        counts = self._state_counts
        # Buckets that ended before this event end with the counts as they are now.
        while self._filled < i:
            self._state_ends.append(tuple(counts))
            self._filled += 1
        job = f["job"]
        if kind in ("execute", "terminated", "evicted"):
            lane = self._lane(ev)
            if lane is not None:
                runs = lane["runs"]
                if kind == "execute":
                    runs.append([ev.t, None])
                elif runs and runs[-1][1] is None:
                    runs[-1][1] = ev.t
        old = self._job_state.get(job)
        if old is not None:
            counts[old] -= 1
        counts[new] += 1
        self._job_state[job] = new

    # -- output --------------------------------------------------------------------------------

    def series(self) -> ReportSeries:
        """The series as plotted, from the events so far (the builder is not changed)."""
        n = self._n
        p50: list[float | None] = []
        for sample in self._samples:
            if sample:
                ordered = sorted(sample)
                p50.append(ordered[math.ceil(0.5 * len(ordered)) - 1])
            else:
                p50.append(None)
        ends = self._state_ends + [tuple(self._state_counts)] * (n - len(self._state_ends))
        known = [r for r in DENIAL_REASONS if r in self._denied]
        denied = {
            r: tuple(self._denied[r]) for r in [*known, *sorted(set(self._denied) - set(known))]
        }
        return ReportSeries(
            bucket_s=self._bucket_s,
            headroom_min_s=tuple(None if m == math.inf else m for m in self._min),
            headroom_p50_s=tuple(p50),
            headroom_count=tuple(self._seen),
            expired_at_use=tuple(self._expired),
            issuer_requests=tuple(self._requests),
            issuer_errors=tuple(self._errors),
            renewals=tuple(self._renewals),
            refresh_failures=tuple(self._refresh_failures),
            denied=denied,
            job_states={s: tuple(e[k] for e in ends) for k, s in enumerate(JOB_STATES)},
            issuer_unreachable=tuple(self._unreachable),
            faults=self._faults,
            headroom_sample=tuple(sorted(v for sample in self._samples for v in sample)),
            job_lanes=tuple(
                JobLane(
                    job=job,
                    runs=tuple((start, end) for start, end in lane["runs"]),
                    tokens=tuple(lane["tokens"]),
                    uses=tuple(lane["uses"]),
                    denials=tuple(lane["denials"]),
                )
                for job, lane in sorted(self._lanes.items())
            ),
            requests_by_issuer={k: tuple(v) for k, v in sorted(self._by_issuer.items())},
            accesses_by_server={k: tuple(v) for k, v in sorted(self._by_server.items())},
            denials_by_server={k: tuple(v) for k, v in sorted(self._denied_by_server.items())},
        )

    def write(
        self, out_dir: str | os.PathLike[str], *, title: str, summary: Mapping[str, Any]
    ) -> list[str]:
        """Write report.html and its PNGs into ``out_dir``, each file atomically.

        The plots are headroom.png, issuer.png, jobs.png and, when some access was rejected,
        denials.png. Without matplotlib, a :class:`RuntimeWarning` says so and report.html is
        written without plots. report.html is written last.

        Args:
            out_dir: an existing directory.
            title: the report's title (plain text; it is escaped).
            summary: the figures of summary.json; its ``jobs``, ``tokens``, ``data``,
                ``headroom`` and ``issuer`` sections (then any others) become tables, its
                top-level values a "Run" table, and an ``expectations`` list of
                ``{"check", "passed", "actual"}`` a table of results.

        Returns:
            The paths written, report.html last.

        Raises:
            OSError: a file could not be written.
        """
        series = self.series()
        plots = _plot_specs(series)
        written: list[str] = []
        drawn: dict[str, bool] = {}
        note = None
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            note = _MATPLOTLIB_MISSING
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        else:
            for spec in plots:
                png = _render(spec.draw, series) if spec.draw is not None else None
                drawn[spec.name] = png is not None
                if png is not None:
                    path = os.path.join(out_dir, spec.name)
                    write_public(path, png)
                    written.append(path)
        page = _html(title=title, summary=summary, plots=plots, drawn=drawn, note=note)
        path = os.path.join(out_dir, "report.html")
        write_public(path, page)
        written.append(path)
        return written


# -- plots ---------------------------------------------------------------------------------


@attrs.frozen
class _PlotSpec:
    name: str
    caption: str
    draw: Callable[[Figure, ReportSeries, tuple[float, str]], None] | None
    absent: str = ""


def _duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _time_unit(total_s: float) -> tuple[float, str]:
    if total_s <= 600:
        return 1.0, "s"
    if total_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _plot_specs(s: ReportSeries) -> list[_PlotSpec]:
    width = _duration_text(s.bucket_s)
    any_denied = any(any(v) for v in s.denied.values())
    return [
        _PlotSpec(
            "headroom.png",
            "Seconds of validity left on a token when a data server accepted it, per "
            f"{width} bucket: the least and the median (from a bounded sample), with crosses "
            "counting the accesses that presented an already expired token.",
            _draw_headroom,
        ),
        _PlotSpec(
            "headroom-cdf.png",
            "Distribution of the headroom at use: the fraction of accepted accesses with at "
            "most that many seconds of validity left (from the bounded per-bucket samples), "
            "with the 1st percentile and the median marked.",
            _draw_headroom_cdf if s.headroom_sample else None,
            absent="No data access was accepted, so there is no headroom distribution.",
        ),
        _PlotSpec(
            "timeline.png",
            f"A sample of {len(s.job_lanes)} jobs spread over the run (job ids 1, 1 + k, ...): "
            "when each ran (grey line), the validity of each token staged into its sandbox "
            "(blue bars, from staging to exp), accepted data accesses (black ticks) and refused "
            "ones (red crosses).",
            _draw_timeline if s.job_lanes else None,
            absent="No job ran, so there is no per-job timeline.",
        ),
        _PlotSpec(
            "issuer.png",
            "Attempts on the token issuer (answered requests plus attempts that got no answer "
            "because it was down or cut off), requests answered with an error (top); token "
            "renewals and refresh failures of the token manager (bottom): counts per fixed "
            f"{width} bucket.",
            _draw_issuer,
        ),
        _PlotSpec(
            "servers.png",
            f"Data accesses judged by each data server (solid) and those it refused (dashed), "
            f"counts per fixed {width} bucket.",
            _draw_servers if s.accesses_by_server else None,
            absent="No data access was judged, so there is no per-server plot.",
        ),
        _PlotSpec(
            "jobs.png",
            "Number of jobs idle, running, held, completed and failed at the end of each "
            f"{width} bucket.",
            _draw_jobs,
        ),
        _PlotSpec(
            "denials.png",
            f"Rejected data accesses per {width} bucket, stacked by the reason the data server "
            "gave.",
            _draw_denials if any_denied else None,
            absent="No data access was rejected in this run, so there is no denials plot.",
        ),
    ]


def _render(
    draw: Callable[[Figure, ReportSeries, tuple[float, str]], None], series: ReportSeries
) -> bytes:
    """One plot as PNG bytes, with pinned settings and no timestamp or version in the file."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Pinned on top of matplotlib's default style, so that a user's matplotlibrc cannot change
    # the images and two runs give the same bytes.
    with (
        matplotlib.style.context("default"),
        matplotlib.rc_context(
            {
                "svg.hashsalt": "scitokens-batch",
                "figure.dpi": 100,
                "savefig.dpi": 100,
                "font.size": 9,
                "axes.grid": True,
                "grid.alpha": 0.3,
            }
        ),
    ):
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig, series, _time_unit(series.bucket_s * series.buckets))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata=_PNG_METADATA)
    return buf.getvalue()


def _centers(s: ReportSeries, unit: tuple[float, str]) -> list[float]:
    return [(i + 0.5) * s.bucket_s / unit[0] for i in range(s.buckets)]


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _time_axis(ax: Axes, s: ReportSeries, unit: tuple[float, str]) -> None:
    ax.set_xlabel(f"time ({unit[1]})")
    ax.set_xlim(0, s.bucket_s * s.buckets / unit[0])


_FAULT_COLORS: Final = ("#969696", "#bcbddc", "#fdae6b", "#a1d99b", "#9ecae1", "#fcbba1")


def _shade_faults(axes: Sequence[Axes], s: ReportSeries, unit: tuple[float, str]) -> None:
    """Shade each fault window on every axis, labelled (kind and target) on the first one."""
    kinds: dict[str, str] = {}
    for index, (start, end, label) in enumerate(s.faults):
        kind = label.split(" ", 1)[0]
        color = kinds.setdefault(kind, _FAULT_COLORS[len(kinds) % len(_FAULT_COLORS)])
        for ax in axes:
            if end > start:
                ax.axvspan(start / unit[0], end / unit[0], color=color, alpha=0.3, linewidth=0)
            else:
                ax.axvline(start / unit[0], color=color, linewidth=1.5, linestyle="--")
        # Labels are staggered downwards so that faults starting together stay readable.
        axes[0].annotate(
            label,
            xy=(start / unit[0], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3 - 10 * (index % 6)),
            textcoords="offset points",
            va="top",
            fontsize=7,
            color="#444444",
        )


def _draw_servers(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    ax = fig.add_subplot()
    x = _centers(s, unit)
    steps: dict[str, Any] = {"drawstyle": "steps-mid", "linewidth": 1}
    for k, (name, counts) in enumerate(s.accesses_by_server.items()):
        color = f"C{k % 10}"
        ax.plot(x, counts, color=color, label=f"{name}: accesses", **steps)
        denied = s.denials_by_server.get(name)
        if denied is not None:
            ax.plot(x, denied, color=color, linestyle="--", label=f"{name}: refused", **steps)
    ax.set_ylabel(f"per {_duration_text(s.bucket_s)}")
    ax.set_ylim(bottom=0)
    ax.set_title("Data servers")
    _time_axis(ax, s, unit)
    _shade_faults([ax], s, unit)
    fig.legend(loc="outside right upper")


def _draw_timeline(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    ax = fig.add_subplot()
    scale = unit[0]
    end_of_run = s.bucket_s * s.buckets
    for row, lane in enumerate(s.job_lanes):
        for start, end in lane.runs:
            stop = end_of_run if end is None else end
            ax.plot([start / scale, stop / scale], [row, row], color="#969696", linewidth=1)
        ax.broken_barh(
            [(a / scale, max(b - a, 0.0) / scale) for a, b in lane.tokens],
            (row - 0.3, 0.6),
            facecolors="#9ecae1",
            edgecolors="#3182bd",
            linewidth=0.5,
            alpha=0.6,
        )
        if lane.uses:
            ax.plot(
                [t / scale for t in lane.uses], [row] * len(lane.uses), "|", color="black", ms=5
            )
        if lane.denials:
            ax.plot(
                [t / scale for t in lane.denials], [row] * len(lane.denials), "x", color="#de2d26"
            )
    ax.set_yticks(range(len(s.job_lanes)), [f"job {lane.job}" for lane in s.job_lanes])
    ax.set_ylim(-0.8, len(s.job_lanes) - 0.2)
    ax.invert_yaxis()
    ax.set_title("Per-job timeline (sampled jobs)")
    _time_axis(ax, s, unit)
    _shade_faults([ax], s, unit)


def _draw_headroom_cdf(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    ax = fig.add_subplot()
    values = s.headroom_sample
    n = len(values)
    ax.step(values, [(k + 1) / n for k in range(n)], where="post", color="#3182bd")
    for q, color in ((0.01, "#de2d26"), (0.50, "#08306b")):
        v = values[max(math.ceil(q * n) - 1, 0)]
        ax.axvline(
            v, color=color, linestyle="--", linewidth=1, label=f"p{q * 100:02.0f} = {v:.1f} s"
        )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlabel("headroom at use (s)")
    ax.set_ylabel("fraction of accepted accesses")
    ax.set_ylim(0, 1)
    ax.set_title(f"Headroom distribution ({n:,} sampled accesses)")
    fig.legend(loc="outside right upper")


def _draw_headroom(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    x = _centers(s, unit)
    top.plot(x, _nan(s.headroom_p50_s), color="#3182bd", label="median headroom")
    top.plot(x, _nan(s.headroom_min_s), color="#08306b", linewidth=0.8, label="least headroom")
    top.axhline(0, color="black", linewidth=1)
    top.set_ylabel("headroom at use (s)")
    top.set_title("Token headroom at use")
    if not any(s.headroom_count):
        top.text(0.5, 0.5, "no accepted data access", ha="center", transform=top.transAxes)
    hits = [(xi, c) for xi, c in zip(x, s.expired_at_use, strict=True) if c]
    bottom.plot(
        [h[0] for h in hits],
        [h[1] for h in hits],
        "x",
        color="#de2d26",
        label="accesses with an expired token",
    )
    bottom.set_ylabel("expired")
    bottom.set_ylim(bottom=0, top=max((h[1] for h in hits), default=1) * 1.15)
    bottom.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    _time_axis(bottom, s, unit)
    _shade_faults([top, bottom], s, unit)
    fig.legend(loc="outside right upper")


def _draw_issuer(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = _centers(s, unit)
    steps: dict[str, Any] = {"drawstyle": "steps-mid", "linewidth": 1}
    # Counts per fixed bucket, the width in the label: no rescaling to a rate per minute that
    # a reader would take for a count (issue 15: "per minute means per minute").
    per = f"per {_duration_text(s.bucket_s)}"
    if s.issuer_unreachable and any(s.issuer_unreachable):
        attempts = [r + u for r, u in zip(s.issuer_requests, s.issuer_unreachable, strict=True)]
        top.plot(x, attempts, color="#756bb1", label="issuer attempts", **steps)
    top.plot(x, s.issuer_requests, color="#3182bd", label="issuer requests", **steps)
    if len(s.requests_by_issuer) > 1:  # one series per issuer once there are several
        for name, counts in s.requests_by_issuer.items():
            top.plot(x, counts, label=f"requests: {name}", linestyle=":", **steps)
    top.plot(x, s.issuer_errors, color="#de2d26", label="issuer errors", **steps)
    top.set_ylabel(per)
    top.set_ylim(bottom=0)
    top.set_title("Issuer load and token renewals")
    bottom.plot(x, s.renewals, color="#31a354", label="renewals", **steps)
    bottom.plot(x, s.refresh_failures, color="#fd8d3c", label="refresh failures", **steps)
    bottom.set_ylabel(per)
    bottom.set_ylim(bottom=0)
    _time_axis(bottom, s, unit)
    _shade_faults([top, bottom], s, unit)
    fig.legend(loc="outside right upper")


def _draw_jobs(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax = fig.add_subplot()
    x = [(i + 1) * s.bucket_s / unit[0] for i in range(s.buckets)]
    ax.stackplot(
        x,
        *[s.job_states[state] for state in JOB_STATES],
        labels=list(JOB_STATES),
        colors=[_COLORS[state] for state in JOB_STATES],
    )
    ax.set_ylabel("jobs")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Job states")
    _time_axis(ax, s, unit)
    _shade_faults([ax], s, unit)
    fig.legend(loc="outside right upper")


def _draw_denials(fig: Figure, s: ReportSeries, unit: tuple[float, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax = fig.add_subplot()
    x = _centers(s, unit)
    bottom = [0] * s.buckets
    for reason, counts in s.denied.items():
        ax.bar(x, counts, width=s.bucket_s / unit[0], bottom=bottom, label=reason, linewidth=0)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_ylabel("rejected accesses per bucket")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Rejected accesses by reason")
    _time_axis(ax, s, unit)
    _shade_faults([ax], s, unit)
    fig.legend(loc="outside right upper")


# -- html ------------------------------------------------------------------------------------

_STYLE: Final = """\
body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}
figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555}
.sections{display:flex;flex-wrap:wrap;gap:0 2em}"""


def _text(value: object) -> str:
    """A summary value as escaped text (None as a dash, floats to the microsecond)."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return html.escape(repr(round(value, 6)))
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return html.escape(str(value))


def _flatten(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def _table(caption: str, rows: list[tuple[str, object]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(k)}</th>"
        f"<td{' class=n' if isinstance(v, int | float) and not isinstance(v, bool) else ''}>"
        f"{_text(v)}</td></tr>\n"
        for k, v in rows
    )
    return f"<table>\n<caption>{html.escape(caption)}</caption>\n{body}</table>\n"


def _expectations(items: Sequence[Any]) -> str:
    results = [e for e in items if isinstance(e, Mapping)]
    held = sum(1 for e in results if e.get("passed"))
    rows = "".join(
        "<tr><td>{}</td><td class={}>{}</td><td class=n>{}</td></tr>\n".format(
            _text(e.get("check")),
            "pass" if e.get("passed") else "fail",
            "holds" if e.get("passed") else "FAILS",
            _text(e.get("actual")),
        )
        for e in results
    )
    return (
        f"<h2>Expectations</h2>\n<p>{held} of {len(results)} expectations hold.</p>\n"
        "<table>\n<tr><th>check</th><th>result</th><th>actual</th></tr>\n"
        f"{rows}</table>\n"
    )


def _html(
    *,
    title: str,
    summary: Mapping[str, Any],
    plots: list[_PlotSpec],
    drawn: Mapping[str, bool],
    note: str | None,
) -> str:
    esc = html.escape(title)
    parts = [
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n",
        f"<title>{esc}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n<body>\n<h1>{esc}</h1>\n",
    ]
    run = [(k, v) for k, v in summary.items() if not isinstance(v, Mapping | list | tuple)]
    if run:
        parts.append(_table("Run", run))
    expectations = summary.get("expectations")
    if isinstance(expectations, list | tuple) and expectations:
        parts.append(_expectations(expectations))
    sections = [k for k in _SECTIONS if isinstance(summary.get(k), Mapping)]
    sections += sorted(
        k for k, v in summary.items() if isinstance(v, Mapping) and k not in _SECTIONS
    )
    if sections:
        parts.append("<h2>Figures</h2>\n<div class=sections>\n")
        parts += [_table(k, _flatten(summary[k])) for k in sections]
        parts.append("</div>\n")
    parts.append("<h2>Plots</h2>\n")
    if note is not None:
        parts.append(f"<p>{html.escape(note)}.</p>\n")
    for spec in plots:
        name = html.escape(spec.name)
        if drawn.get(spec.name):
            parts.append(
                f'<figure>\n<img src="{name}" alt="{name}">\n'
                f"<figcaption>{html.escape(spec.caption)}</figcaption>\n</figure>\n"
            )
        elif spec.draw is None:
            parts.append(f"<p>{html.escape(spec.absent)}</p>\n")
        else:
            parts.append(f"<p>{name} not drawn: {html.escape(spec.caption)}</p>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)
