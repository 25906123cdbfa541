"""Shared test configuration: hypothesis profiles and common fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from scitokens_batch.tokens import Algorithm, SigningKey

# "ci" is thorough but bounded; "dev" is quick for local iteration. CI=true selects "ci".
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

#: The test files that run real services on the wall clock for minutes (mostly waiting), in two
#: groups of about the same length (six minutes each on the 2-core machine). ``make test`` runs
#: pytest-xdist with three workers and ``--dist loadgroup``: each group runs in order on one
#: worker while the third works through everything else, so the suite takes about as long as
#: the longest group instead of their sum, and no more than one CPU-bound worker competes with
#: the live services for the two cores (the XRootD smoke run was checked beside a CPU hog).
WALL_CLOCK_GROUPS = {
    "tests/live/test_live_smoke.py": "wall-clock-a",
    "tests/security/test_durability.py": "wall-clock-a",
    "tests/live/test_live_faults.py": "wall-clock-b",
    "tests/live/test_live_transfers.py": "wall-clock-b",
    "tests/live/test_fts_store.py": "wall-clock-b",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each wall-clock test in its group (a no-op without pytest-xdist)."""
    root = config.rootpath
    for item in items:
        group = WALL_CLOCK_GROUPS.get(item.path.relative_to(root).as_posix())
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def es256_key() -> SigningKey:
    """One ES256 key for the session (key generation is not what these tests measure)."""
    return SigningKey.generate(Algorithm.ES256)


@pytest.fixture(scope="session")
def rs256_key() -> SigningKey:
    """One RS256 key for the session (2048-bit generation takes ~50 ms)."""
    return SigningKey.generate(Algorithm.RS256)
