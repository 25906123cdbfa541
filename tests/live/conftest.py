"""Fixtures for the live tests: one small deployment per module, stopped by PID afterwards."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from scitokens_batch.live import xrootd_missing

from ..interop.conftest import peer_missing
from .cluster import Cluster, start_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Our HTTPS issuer, our data server and XRootD, running for the whole module."""
    why = xrootd_missing()
    if why is not None:
        peer_missing(f"XRootD: {why}")
    if shutil.which("curl") is None:
        peer_missing("curl not installed (apt-get install curl)")
    yield from start_cluster()
