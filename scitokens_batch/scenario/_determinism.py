"""Seeding trio's scheduler: the one place that touches trio internals.

trio shuffles tasks woken at the same instant on purpose. Its Hypothesis plugin makes that
deterministic by setting ``trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING`` and seeding the
module's ``_r`` RNG; we do the same for the duration of one run (style.md practice 16,
perf-notes.md "Determinism needs a per-run seed of trio's scheduler randomness").
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import trio

__all__ = ["seeded_trio_scheduler"]


@contextlib.contextmanager
def seeded_trio_scheduler(seed: int) -> Iterator[None]:
    """Within this block, trio runs tasks woken together in an order fixed by ``seed``."""
    run_mod = trio._core._run  # the Hypothesis hook, see module doc
    rng: random.Random = run_mod._r
    saved_flag = run_mod._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = rng.getstate()
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    rng.seed(f"scitokens-batch/{seed}")
    try:
        yield
    finally:
        run_mod._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        rng.setstate(saved_state)
