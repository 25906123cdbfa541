"""report.html in a real browser: headless Chromium renders it (skipped where Chromium is absent;
.ci/run installs the Debian package ``chromium``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scitokens_batch.scenario import load_scenario, run_virtual

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Chromium loads report.html with its plots and writes a full-page screenshot."""
    assert CHROMIUM is not None
    out = tmp_path / "out"
    run_virtual(load_scenario(ROOT / "scenarios" / "issuer-outage.toml"), out=out)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,2600",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000  # plots drawn, not a blank page
