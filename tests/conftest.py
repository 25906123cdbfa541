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


@pytest.fixture(scope="session")
def es256_key() -> SigningKey:
    """One ES256 key for the session (key generation is not what these tests measure)."""
    return SigningKey.generate(Algorithm.ES256)


@pytest.fixture(scope="session")
def rs256_key() -> SigningKey:
    """One RS256 key for the session (2048-bit generation takes ~50 ms)."""
    return SigningKey.generate(Algorithm.RS256)
