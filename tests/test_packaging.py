"""What an installed package needs: the demo's scenario shipped as package data, the check
table's exact digits."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from rich.console import Console

from scitokens_batch.metrics import SummaryBuilder, summary_table

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_reference_matches_the_user_facing_copy() -> None:
    """The package's copy of reference.toml (demo) is byte-identical to scenarios/reference.toml.

    If this fails after an edit of scenarios/reference.toml, copy it:
    cp scenarios/reference.toml scitokens_batch/_scenarios/reference.toml
    """
    bundled = importlib.resources.files("scitokens_batch") / "_scenarios" / "reference.toml"
    assert bundled.read_bytes() == (ROOT / "scenarios" / "reference.toml").read_bytes()


def test_package_data_declared() -> None:
    """pyproject.toml ships _scenarios/*.toml and uses the SPDX license string (setuptools>=77)."""
    text = (ROOT / "pyproject.toml").read_text()
    assert '"_scenarios/*.toml"' in text
    assert 'license = "Apache-2.0"' in text and "setuptools>=77" in text


def test_check_values_keep_their_digits() -> None:
    """A check's actual value prints every digit: 0.0004 is not shown as 0.0."""
    summary = {
        "scenario": "s",
        "seed": 1,
        **SummaryBuilder().figures(),
        "expectations": [{"check": "headroom.min_s > 0", "passed": True, "actual": 0.0004}],
    }
    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    assert "pass (0.0004)" in console.export_text()
