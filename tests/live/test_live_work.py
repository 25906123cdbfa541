"""Live mode's data.signature_checks / data.signature_memo_hits: the services' verifier work,
summed over restarts, null when a count is lost or unknowable (no process is started here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from scitokens_batch.live._runner import _verifier_work
from scitokens_batch.live._serve import _tally_work
from scitokens_batch.scenario import load_scenario
from scitokens_batch.tokens import SigningKey, verifier_for
from tests.tokens.helpers import AUDIENCE, ISSUER, T0, token

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "live-smoke.toml"


def _incarnation(events: Path, key: SigningKey, accesses: int) -> Any:
    """One service process: starts its tally, checks one token ``accesses`` times."""
    server = SimpleNamespace(verifier=verifier_for(ISSUER, [AUDIENCE], [key.public], now=T0))
    done = _tally_work(server, events)  # type: ignore[arg-type]
    tok = token(key)
    for i in range(accesses):
        server.verifier.check(tok, now=T0 + i)
    return done


def test_summed_over_clean_restarts(tmp_path: Path, es256_key: SigningKey) -> None:
    """Two clean incarnations of a data server: their counts add up in the summary."""
    spec = load_scenario(SMOKE)
    (name,) = [d.name for d in spec.data_servers]
    events = tmp_path / f"{name}.jsonl"
    _incarnation(events, es256_key, 5)()
    _incarnation(events, es256_key, 3)()
    assert _verifier_work(spec, tmp_path) == (2, 6)


def test_running_or_killed_is_unknown(tmp_path: Path, es256_key: SigningKey) -> None:
    """A service still marked running, or one whose predecessor was killed before it could
    write its counts, gives null rather than an undercount."""
    spec = load_scenario(SMOKE)
    (name,) = [d.name for d in spec.data_servers]
    events = tmp_path / f"{name}.jsonl"
    _incarnation(events, es256_key, 5)  # killed: never reaches its way out
    assert _verifier_work(spec, tmp_path) is None
    _incarnation(events, es256_key, 3)()
    assert _verifier_work(spec, tmp_path) is None


def test_missing_or_xrootd_is_unknown(tmp_path: Path, es256_key: SigningKey) -> None:
    """No tally (a service that never started) gives null, and so does an XRootD server (its
    plugin verifies, we cannot count) whatever file lies there."""
    spec = load_scenario(SMOKE)
    assert _verifier_work(spec, tmp_path) is None
    _incarnation(tmp_path / f"{spec.data_servers[0].name}.jsonl", es256_key, 2)()
    assert _verifier_work(spec, tmp_path) == (1, 1)
    xrootd = load_scenario(SMOKE, overrides=["data_servers[0].backend=xrootd"])
    assert _verifier_work(xrootd, tmp_path) is None
