"""The per-service clock offset a live clock_step writes and a service follows (no processes)."""

from __future__ import annotations

from pathlib import Path

import structlog
import trio
import trio.testing

from scitokens_batch.live._clock import OFFSET_FILE, follow_offset, read_offset, write_offset


def test_offset_file_is_private_and_read_back(tmp_path: Path) -> None:
    """write_offset makes a 0600 file that read_offset reads back; garbage reads as None."""
    write_offset(tmp_path, -600.0)
    assert (tmp_path / OFFSET_FILE).stat().st_mode & 0o777 == 0o600
    assert read_offset(tmp_path) == -600.0
    (tmp_path / OFFSET_FILE).write_text("nan\n")
    assert read_offset(tmp_path) is None


def test_follow_offset_applies_steps_ignores_garbage_and_resets_on_removal(
    tmp_path: Path,
) -> None:
    """A step is applied; a file that is not a finite number changes nothing; a removed file
    brings the clock back to 0."""
    seen: list[float] = []
    log = structlog.get_logger()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow_offset, tmp_path, seen.append, log)
            await trio.sleep(0.5)
            write_offset(tmp_path, -600.0)
            await trio.sleep(0.5)
            (tmp_path / OFFSET_FILE).write_text("not a number\n")
            await trio.sleep(0.5)
            (tmp_path / OFFSET_FILE).unlink()
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [-600.0, 0.0]
