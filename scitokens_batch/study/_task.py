"""One run of a study, as a self-contained task a Dask worker executes.

A task carries the scenario text, the overrides and the seed: a worker needs only the package
installed, not the study's files. It returns a plain dict (the summary, never the events), so
a worker's memory stays bounded whatever the study's size.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from pathlib import Path
from typing import Any

import attrs

from .._version import __version__
from ..errors import LocalInputError
from ..scenario import parse_scenario, run_virtual
from ..scenario._run import with_seed

__all__ = ["RunTask", "execute", "run_key"]


def run_key(resolved: str, seed: int) -> str:
    """The identity of a run: the resolved scenario, the seed and the package version."""
    digest = hashlib.sha256(f"{__version__}\n{seed}\n{resolved}".encode()).hexdigest()
    return digest[:20]


@attrs.frozen(kw_only=True)
class RunTask:
    """Everything one run needs.

    Attributes:
        key: :func:`run_key` of the run (the resume key and the output name).
        point: the point's index.
        seed: the run's seed.
        scenario_text: the scenario's TOML.
        scenario_file: its name, for error messages.
        overrides: ``--set`` strings: the study's fixed ones, then the point's.
        keep_dir: with ``--keep-runs``, where the run writes its full outputs.
        label: the point's label (``point 3 (a=1, b="5m")``), for progress lines.
        events: what events.jsonl holds in ``keep_dir`` (the study's ``events``).
    """

    key: str
    point: int
    seed: int
    scenario_text: str
    scenario_file: str
    overrides: tuple[str, ...]
    keep_dir: str | None = None
    label: str = ""
    events: str = "none"


def execute(task: RunTask) -> dict[str, Any]:
    """Run one task (on a worker); never raises for a failed run.

    Returns:
        ``{"key", "point", "seed", "status", "error", "summary", "wall_seconds"}`` where status
        is ``"ok"``, ``"invalid"`` (the point's scenario does not load) or ``"error"`` (the run
        raised; ``error`` holds the last line and ``traceback`` the whole).
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "key": task.key,
        "point": task.point,
        "seed": task.seed,
        "label": task.label,
    }
    try:
        spec = with_seed(
            parse_scenario(task.scenario_text, file=task.scenario_file, overrides=task.overrides),
            task.seed,
        )
        result = run_virtual(
            spec,
            seed=task.seed,
            out=Path(task.keep_dir) if task.keep_dir else None,
            log_level="critical",
            source=task.scenario_file,
            overrides=task.overrides,
            plots=False,
            events=task.events,
        )
    except LocalInputError as exc:
        out.update(status="invalid", error=str(exc), summary=None)
    except Exception as exc:  # a bug in a run must not take the study down: it becomes a row
        out.update(
            status="error",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            summary=None,
        )
    else:
        out.update(status="ok", error=None, summary=result.summary)
    out["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return out
