"""Real job sandboxes for live mode (conformance I12, I13, F1-F5, P16).

Each job gets a directory ``<host workdir>/sandboxes/job-<id>`` with ``.condor_creds/`` (0700)
holding, per service:

- ``<service>.use``: the access token in HTCondor's JSON form (``{"access_token": ...,
  "token_type": "bearer", "expires_in": ...}``, I2), what ``$_CONDOR_CREDS`` readers parse;
- ``bt_u<euid>-<service>``: the bare token (F4 naming), which ``BEARER_TOKEN_FILE`` names so that
  any WLCG-discovery client (curl in a script, gfal, xrdcp) finds it (F1).

Both are written 0600 through a temporary file and ``rename(2)`` (I3): a job that reads while
the starter re-stages sees the old token or the new one, never a torn file. The starter's own
accesses read the token back through the same discovery a job would use.

Names from messages (the service, the job id) become file names here. The messages' validators
already refuse anything but a plain name, and every path made from one is checked again here
(:func:`_inside`): resolved, it must stay below the sandbox root, else :class:`ValueError`
(the execute host fails that one job, never the host).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import trio

from .. import _files
from ..protocol import NAME_PATTERN, ExecStep
from ..tokens import Discovered, discover

__all__ = ["DirectorySandbox", "directory_sandboxes", "remove_stale_sandboxes"]


def _inside(base: Path, name: str) -> Path:
    """``base / name``, refused unless it is a direct child of ``base`` once resolved (no
    separator, no ``..``, no symbolic link that leads elsewhere)."""
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise ValueError(f"not a plain file name ({len(name)} characters)")
    path = base / name
    if path.resolve().parent != base.resolve():
        raise ValueError(f"{name!r} leads outside {base}")
    return path


@attrs.define
class DirectorySandbox:
    """One job's sandbox directory (see the module docstring)."""

    path: Path
    service: str
    now: Callable[[], float]
    extra_env: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def creds(self) -> Path:
        """``$_CONDOR_CREDS``."""
        return self.path / ".condor_creds"

    @property
    def bearer_file(self) -> Path:
        """``$BEARER_TOKEN_FILE``."""
        return _inside(self.creds, f"bt_u{_files.current_euid()}-{self.service}")

    def stage(self, token: str, *, jti: str, exp: float) -> None:
        """Write both token files, 0600 and atomically."""
        self.creds.mkdir(parents=True, exist_ok=True, mode=0o700)
        use = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": max(0, math.floor(exp - self.now())),
        }
        _files.write_private(_inside(self.creds, f"{self.service}.use"), json.dumps(use) + "\n")
        _files.write_private(self.bearer_file, token + "\n")

    def env(self) -> dict[str, str]:
        """The job's environment: the host's, plus the credential variables (I13, F1)."""
        env = dict(os.environ)
        env.pop("BEARER_TOKEN", None)  # F1: a stray value would win over the file
        env.update(self.extra_env)
        env.update(
            _CONDOR_CREDS=str(self.creds),
            _CONDOR_SCRATCH_DIR=str(self.path),
            BEARER_TOKEN_FILE=str(self.bearer_file),
        )
        return env

    def token(self) -> str | None:
        """The token a job finds now, by WLCG discovery through ``BEARER_TOKEN_FILE``."""
        found = discover(
            {"BEARER_TOKEN_FILE": str(self.bearer_file)},
            euid=_files.current_euid(),
            read_file=_files.read_file,
        )
        return found.token if isinstance(found, Discovered) else None

    async def execute(self, step: ExecStep) -> tuple[int, str]:
        """Run the command in the sandbox; killed (and the job failed) after its timeout."""
        out = self.path / "job.out"
        with open(out, "ab") as sink:  # noqa: ASYNC230 - the child needs a real fd; a local file
            try:
                with trio.fail_after(step.timeout):
                    proc = await trio.run_process(
                        list(step.argv),
                        cwd=self.path,
                        env=self.env(),
                        stdout=sink,
                        stderr=sink,
                        check=False,
                        deliver_cancel=_terminate,
                    )
            except trio.TooSlowError:
                return 124, f"exec {step.argv[0]}: killed after {step.timeout:g} s"
            except OSError as exc:
                return 127, f"exec {step.argv[0]}: {exc.strerror or exc}"
        if proc.returncode != 0:
            tail = out.read_bytes()[-300:].decode("utf-8", "replace").strip().replace("\n", " | ")
            return proc.returncode, f"exec {step.argv[0]}: exit {proc.returncode}: {tail}"
        return 0, ""

    def remove(self) -> None:
        """The job is over: its sandbox (and the tokens in it) go away."""
        shutil.rmtree(self.path, ignore_errors=True)


async def _terminate(proc: trio.Process) -> None:
    """On cancel: SIGTERM, then SIGKILL after 5 s (bounded)."""
    proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(5):
        await proc.wait()
        return
    proc.kill()


def directory_sandboxes(
    root: Path, now: Callable[[], float], extra_env: Mapping[str, str]
) -> Callable[[int, str, str], DirectorySandbox]:
    """The live :data:`~scitokens_batch.actors.SandboxFactory` of one host."""

    def make(job: int, user: str, service: str) -> DirectorySandbox:
        if not isinstance(job, int) or job < 0:
            raise ValueError(f"job id must be an integer >= 0 (got {job!r})")
        if not re.fullmatch(NAME_PATTERN, service):  # as the messages check it, once more
            raise ValueError(f"service must match {NAME_PATTERN} ({len(service)} characters)")
        path = _inside(root, f"job-{job}")
        shutil.rmtree(path, ignore_errors=True)  # a rerun after an eviction starts clean
        path.mkdir(parents=True, mode=0o700)
        return DirectorySandbox(path=path, service=service, now=now, extra_env=extra_env)

    return make


def remove_stale_sandboxes(root: Path) -> int:
    """Remove the job sandboxes a killed predecessor left under ``root`` (with the tokens in
    them) when an execute host starts: no job survives its host process. Returns how many."""
    n = 0
    if root.is_dir():
        for path in root.glob("job-*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                n += 1
    return n
