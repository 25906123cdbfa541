"""Fixtures for the security tests: one live deployment per module, stopped by PID afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .deploy import Deployment, start


@pytest.fixture(scope="module")
def live() -> Iterator[Deployment]:
    """The live deployment of :mod:`tests.security.deploy`, with alice and bob logged in."""
    yield from start()
