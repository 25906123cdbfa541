"""Job programs share their immutable access steps: memory per access is a tuple slot."""

from __future__ import annotations

from pathlib import Path

from scitokens_batch.protocol import AccessStep
from scitokens_batch.scenario import load_scenario
from scitokens_batch.scenario._world import submissions

ROOT = Path(__file__).resolve().parents[2]
#: The benchmark day scaled down 100 times, as test_pinned_outputs builds it.
OVERRIDES = (
    *(f"workloads[{i}].jobs=25" for i in range(4)),
    *(f'workloads[{i}].arrival.mean_interval="3456s"' for i in range(4)),
    "execute_hosts[0].count=2",
)


def test_steps_shared_between_jobs_and_values_unchanged() -> None:
    """Every job's program has the same steps, by value, as before sharing (the same files
    drawn in the same order), and an access to one file is one object across all jobs."""
    spec = load_scenario(ROOT / "benchmarks" / "day-10k.toml", overrides=OVERRIDES)
    subs = submissions(spec, seed=spec.meta.seed)
    steps = [s for sub in subs for s in sub.program.steps if isinstance(s, AccessStep)]
    assert len(steps) == 100 * len(subs)
    by_value: dict[AccessStep, int] = {}
    for s in steps:
        assert by_value.setdefault(s, id(s)) == id(s)  # equal steps are the same object
    again = submissions(spec, seed=spec.meta.seed)
    assert [s.program for s in again] == [s.program for s in subs]
    # The draws are the same as resolving each job alone: the job's first read is one of the
    # files, the last write is the job's own output.
    assert subs[0].program.steps[-1] == AccessStep(
        server="se", path=f"/vo/out/{subs[0].job}.dat", size=5_000_000, write=True
    )
