"""Live mode: every actor as a real process over HTTPS, real sandboxes, XRootD as a data server.

This package sits between the command line and the scenario layer: it starts and stops
processes, makes the run's certificate authority, runs one actor as a service, and runs XRootD
(XrdHttp + the SciTokens plugin) as a real data server on 127.0.0.1. It is kept apart from
``scenario/`` so that the virtual-time layers never touch sockets or subprocesses.
"""

from __future__ import annotations

from ._config import (
    ROLES,
    AuthFiles,
    ConfigError,
    ServiceConfig,
    TlsFiles,
    load_service_config,
)
from ._runner import LiveError, run_live
from ._serve import serve
from ._tls import RunCA, system_ca_bundle
from ._xrootd import (
    CURL_CA_FILE,
    XROOTD_USER,
    XrootdArea,
    XrootdIssuer,
    XrootdServer,
    XrootdSpec,
    listening_addresses,
    preload_cpp_keycache,
    xrootd_missing,
)

__all__ = [
    "CURL_CA_FILE",
    "ROLES",
    "XROOTD_USER",
    "AuthFiles",
    "ConfigError",
    "LiveError",
    "RunCA",
    "ServiceConfig",
    "TlsFiles",
    "XrootdArea",
    "XrootdIssuer",
    "XrootdServer",
    "XrootdSpec",
    "listening_addresses",
    "load_service_config",
    "preload_cpp_keycache",
    "run_live",
    "serve",
    "system_ca_bundle",
    "xrootd_missing",
]
