"""Bad input found during a run reaches the caller as itself, never as an exception group."""

from __future__ import annotations

from pathlib import Path

import pytest

from scitokens_batch.actors import Issuer
from scitokens_batch.errors import LocalInputError
from scitokens_batch.scenario import load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]


def test_input_error_inside_an_actor_is_unwrapped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An actor raising LocalInputError mid-run gives that error (exit 2 at the CLI) and no output."""

    def refuse(self: Issuer, *args: object, **kwargs: object) -> object:
        raise LocalInputError("issuer vo: cannot mint (test)")

    monkeypatch.setattr(Issuer, "_mint", refuse)
    spec = load_scenario(ROOT / "scenarios" / "reference.toml")
    with pytest.raises(LocalInputError, match="cannot mint"):
        run_virtual(spec, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # made for the run, removed with it
