"""Fixtures that provide the real peers, and the rule for a missing one.

The issue's rule: an interop test is "skipped with a clear reason only when the peer is absent,
which CI must never be". So a missing peer skips the test, unless
``SCITOKENS_BATCH_REQUIRE_PEERS=1`` (set by ``.ci/run``), in which case the test fails with the
same message.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from scitokens_batch.tokens import Algorithm, SigningKey

from .peers import CPP_TOOLS, CppPeer, PyPeer, env_flag

#: Set by .ci/run: a missing peer is a failure there, never a skip.
REQUIRE_PEERS_ENV = "SCITOKENS_BATCH_REQUIRE_PEERS"
CPP_MISSING = "scitokens-cpp not installed (apt-get install scitokens-cpp)"
PY_MISSING = "python scitokens 1.9.7 not installed (pip install -e '.[test]')"


def peer_missing(message: str) -> None:
    """Skip the test, or fail it when ``SCITOKENS_BATCH_REQUIRE_PEERS=1``."""
    if env_flag(REQUIRE_PEERS_ENV):
        pytest.fail(f"{message}; {REQUIRE_PEERS_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def cpp(tmp_path: Path) -> CppPeer:
    """The scitokens-cpp tools, with an empty key cache under this test's ``tmp_path``."""
    tools = {tool: shutil.which(tool) for tool in CPP_TOOLS}
    if not all(tools.values()):
        peer_missing(CPP_MISSING)
    home = tmp_path / "cpp-home"
    home.mkdir(mode=0o700)
    return CppPeer(home=home, tools={t: p for t, p in tools.items() if p})


@pytest.fixture
def scitokens_py(tmp_path: Path) -> PyPeer:
    """python scitokens 1.9.7, run in a subprocess with its key cache under ``tmp_path``."""
    try:
        version = importlib.metadata.version("scitokens")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != "1.9.7":
        peer_missing(PY_MISSING if version is None else f"{PY_MISSING} (found {version})")
    home = tmp_path / "py-home"
    home.mkdir(mode=0o700)
    return PyPeer(home=home)


@pytest.fixture(scope="session", params=[Algorithm.ES256, Algorithm.RS256], ids=lambda a: a.value)
def signing_key(request: pytest.FixtureRequest) -> SigningKey:
    """Our issuer's key, once per algorithm every peer accepts (peers.md rule 3)."""
    alg: Algorithm = request.param
    return SigningKey.generate(alg, kid=f"interop-{alg.value.lower()}")
