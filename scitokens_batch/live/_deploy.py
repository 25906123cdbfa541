"""A few services of a scenario as real processes on 127.0.0.1, outside a scenario run.

The live tests and the live benchmark need a small deployment (an issuer, a data server,
XRootD) without the queue manager, the execute hosts or the scenario's clock. :func:`deployment`
plans the whole scenario as :func:`~._runner.run_live` does (one loopback socket per service,
the run's CA, the configurations, the data files), starts only the services named, waits until
each answers, and stops every process it started by PID on the way out, whatever happens in
between (an error, Ctrl-C).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import trio

from .. import _files
from ..scenario import load_scenario
from ._clock import wall_now
from ._runner import LiveError, _Run, check_live, new_workdir
from ._tls import RunCA

__all__ = ["deployment"]


@contextmanager
def deployment(
    scenario: str,
    names: Sequence[str],
    *,
    prefix: str = "scitokens-batch-deploy-",
    log_level: str = "info",
    keep_workdir: bool = False,
) -> Iterator[_Run]:
    """Start the services ``names`` of the scenario whose TOML text is ``scenario``.

    Yields the runner's handle once every service answers (``run.peers``, ``run.issuer_urls``,
    ``run.services[name].pid``, ``run.transport()``, ``run.device_login(...)``). On the way
    out every process is stopped by PID (SIGTERM, SIGKILL after a bounded wait) and the work
    directory is removed unless ``keep_workdir`` (it is kept after a failure, for the logs).

    Raises:
        ScenarioError: the scenario is invalid or asks for what a live run cannot do.
        LiveError: a name is not a service of the scenario, or a service did not start.
    """
    workdir = new_workdir(prefix)
    failed = False
    try:
        # The scenario may hold client secrets and passwords: 0600, in the 0700 config/.
        path = workdir / "config" / "scenario.toml"
        _files.write_private(path, scenario)
        spec = load_scenario(path)
        check_live(spec, str(path))
        run = _Run(
            spec=spec,
            scenario_path=path,
            overrides=(),
            seed=spec.meta.seed,
            workdir=workdir,
            tls=RunCA.create(workdir / "tls"),
            log_level=log_level,
            t0=wall_now(),
        )
        try:
            run.plan()
            unknown = [n for n in names if n not in run.services]
            if unknown:
                raise LiveError(
                    f"no service named {unknown[0]!r} in the scenario "
                    f"(services: {', '.join(run.services)})"
                )
            for name in names:
                run.start(name)
            trio.run(run.wait_healthy, list(names))
            yield run
        finally:
            run.stop_all()
    except BaseException:
        failed = True
        sys.stderr.write(f"live deployment ended by an error; its logs are kept in {workdir}\n")
        raise
    finally:
        if not (keep_workdir or failed):
            shutil.rmtree(workdir, ignore_errors=True)
