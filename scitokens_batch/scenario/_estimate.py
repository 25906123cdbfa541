"""What a scenario costs before it runs: an event estimate, and a miniature for ``check``.

Both read the spec only (O(size of the file), never O(simulated pool)): a scenario of a million
hosts or a billion repeats is one line of TOML, and ``check`` must answer as fast for it as for
the reference file, while ``run`` must refuse it up front instead of taking the machine.

The estimate is an upper-side approximation of the events and timer wake-ups a run makes,
calibrated on the bundled scenarios (docs/scenario-reference.md, "Limits"); it only has to
tell a run of minutes from a run of days.
"""

from __future__ import annotations

from typing import Final

import attrs

from ._spec import ExecStep, ReadStep, Scenario, Step, WriteStep

__all__ = ["DEFAULT_EVENT_LIMIT", "EVENTS_PER_SECOND", "estimate_events", "miniature"]

#: Runs estimated above this many events are refused unless forced (``run --force``): about
#: ten minutes at :data:`EVENTS_PER_SECOND`, and above the design's day of 100,000 jobs.
DEFAULT_EVENT_LIMIT: Final = 20_000_000
#: Estimated events a virtual-time run gets through per wall second on one core, measured on
#: the bundled scenarios (the estimate is 3-5x the events actually recorded: it counts timer
#: wake-ups too): ligo-day.toml, 272,682 estimated in 8.2 s.
EVENTS_PER_SECOND: Final = 30_000

# Events of one job besides its data steps: submit, match, execute, mint and stage of its
# token, compute, terminate, with the queue manager's bookkeeping (reference.toml: ~12).
_PER_JOB: Final = 12
# Events of one data access or exec step: the request, the verdict, the transfer.
_PER_STEP: Final = 3


def estimate_events(spec: Scenario) -> int:
    """An estimate of the events and timer wake-ups of running ``spec``, from the spec alone.

    Args:
        spec: a validated scenario.

    Returns:
        The estimate (an integer; exact arithmetic, so it never overflows to infinity).
    """
    duration = spec.meta.duration
    jobs = 0
    slots = sum(group.count * group.slots for group in spec.execute_hosts)
    total = 0
    users: set[tuple[str, str]] = set()
    for workload in spec.workloads:
        steps = 0
        for step in workload.steps:
            if isinstance(step, ReadStep | WriteStep):
                steps += step.repeat
            elif isinstance(step, ExecStep):
                steps += 1
        total += workload.jobs * (_PER_JOB + _PER_STEP * steps)
        jobs += workload.jobs
        if workload.jobs:
            users.add((workload.issuer, workload.user))
    # Periodic work: each loop wakes every interval for the whole run.
    tm, qm = spec.token_manager, spec.queue_manager
    total += int(duration / tm.scan_interval) * max(1, len(users))
    total += int(duration / qm.negotiation_interval)
    running = min(jobs, slots)
    for group in spec.execute_hosts:
        if group.sandbox_refresh > 0:
            total += int(duration / group.sandbox_refresh) * min(running, group.count * group.slots)
    for issuer in spec.issuers:
        # Renewals: one mint (request, mint, refresh) per renew_fraction of a lifetime per user.
        per_user = duration / (issuer.access_token_lifetime * tm.renew_fraction)
        total += 3 * int(per_user) * max(1, len(users))
    for server in spec.data_servers:
        total += int(duration / server.key_refresh) * len(server.issuers)
        total += sum(files.count for files in server.files) // 100  # populated, no events
    datasets = {dataset.name: dataset for dataset in spec.datasets}
    for rule in spec.rules:
        dataset = datasets.get(rule.dataset)
        total += 10 * (dataset.files if dataset is not None else 0)
    total += 10 * len(spec.faults) + 10 * (len(spec.issuers) + len(spec.data_servers))
    return total


def miniature(spec: Scenario) -> Scenario:
    """``spec`` with every count cut to at most one, for validating the wiring cheaply.

    What only building the world can tell (a ``{random_file}`` with no files behind it, a scope
    no user may have, I15 conflicts) depends on which tables exist and how they refer to each
    other, not on how many jobs, hosts, files or repeats there are; a zero stays zero.
    """

    def one(n: int) -> int:
        return min(n, 1)

    def step(s: Step) -> Step:
        if isinstance(s, ReadStep | WriteStep):
            return attrs.evolve(s, repeat=1)
        return s

    return attrs.evolve(
        spec,
        execute_hosts=tuple(
            attrs.evolve(group, count=one(group.count)) for group in spec.execute_hosts
        ),
        data_servers=tuple(
            attrs.evolve(
                server,
                files=tuple(attrs.evolve(fs, count=one(fs.count)) for fs in server.files),
            )
            for server in spec.data_servers
        ),
        datasets=tuple(attrs.evolve(d, files=one(d.files)) for d in spec.datasets),
        workloads=tuple(
            attrs.evolve(w, jobs=one(w.jobs), steps=tuple(step(s) for s in w.steps))
            for w in spec.workloads
        ),
    )
