"""Functions Dask workers import by name in the executor tests."""

from __future__ import annotations

import os
from typing import Any

from scitokens_batch.study import RunTask


def die_on_seed_13(task: RunTask) -> dict[str, Any]:
    """Kill the worker process for seed 13 (as an OOM kill would); answer the others."""
    if task.seed == 13:
        os._exit(9)
    return {
        "key": task.key,
        "point": task.point,
        "seed": task.seed,
        "label": task.label,
        "status": "ok",
        "error": None,
        "summary": {},
        "wall_seconds": 0.0,
    }
