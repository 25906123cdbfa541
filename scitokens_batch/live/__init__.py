"""Live mode: every actor as a real process over HTTPS, real sandboxes, XRootD as a data server.

This package sits between the command line and the scenario layer: it starts and stops
processes, makes the run's certificate authority, and runs one actor as a service. It is kept
apart from ``scenario/`` so that the virtual-time layers never touch sockets or subprocesses.
"""

from __future__ import annotations

from ._config import ROLES, ConfigError, ServiceConfig, TlsFiles, load_service_config
from ._runner import LiveError, run_live
from ._serve import serve
from ._tls import RunCA, system_ca_bundle

__all__ = [
    "ROLES",
    "ConfigError",
    "LiveError",
    "RunCA",
    "ServiceConfig",
    "TlsFiles",
    "load_service_config",
    "run_live",
    "serve",
    "system_ca_bundle",
]
