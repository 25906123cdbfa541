"""Signal helpers for tests that start a process and interrupt it as a terminal user would."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` for such a process: SIGINT back to its default disposition.

    A test runner started as a background job of a non-interactive shell (``nohup make test
    &``, some CI wrappers) has SIGINT ignored, exec passes the ignore on, and Python then
    leaves SIGINT ignored, as it must: the Ctrl-C the test sends would never arrive. A
    terminal user's process has the default, which Python turns into KeyboardInterrupt.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
