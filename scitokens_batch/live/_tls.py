"""The run's certificate authority: a throw-away CA and one server certificate for loopback.

Made with trustme, written under the run's work directory: ``ca.pem`` (what clients trust),
``server.pem`` + ``server.key`` (what every service presents; valid for ``127.0.0.1`` and
``localhost``) and ``bundle.pem`` (the system trust store plus our CA, for clients such as the
scitokens Python library that take one file through ``SSL_CERT_FILE``, peers.md a.).

The private key file is written 0600 (brief: keys never readable by others).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from .. import _files

__all__ = ["RunCA", "system_ca_bundle"]

#: Where Debian (and libcurl's compiled-in default) keep the system trust store.
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def system_ca_bundle() -> Path | None:
    """The system CA bundle file, or None when there is none."""
    for name in _SYSTEM_BUNDLES:
        if os.path.isfile(name):
            return Path(name)
    return None


@attrs.frozen
class RunCA:
    """Paths of the run's CA and server credentials (see the module docstring)."""

    ca: Path
    cert: Path
    key: Path
    bundle: Path

    @classmethod
    def create(
        cls, directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    ) -> RunCA:
        """Make a new CA and a server certificate for ``hosts`` under ``directory``."""
        import trustme  # only live mode needs it (the ``http`` extra)

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="scitokens-batch run CA")
        server = ca.issue_cert(*hosts)
        paths = cls(
            ca=directory / "ca.pem",
            cert=directory / "server.pem",
            key=directory / "server.key",
            bundle=directory / "bundle.pem",
        )
        ca_pem = ca.cert_pem.bytes()
        _files.write_public(paths.ca, ca_pem.decode())
        _files.write_public(
            paths.cert, "".join(blob.bytes().decode() for blob in server.cert_chain_pems)
        )
        _files.write_private(paths.key, server.private_key_pem.bytes().decode())
        system = system_ca_bundle()
        system_pem = system.read_text() if system is not None else ""
        _files.write_public(paths.bundle, system_pem.rstrip("\n") + "\n" + ca_pem.decode())
        return paths

    @classmethod
    def existing(cls, *, ca: Path, cert: Path, key: Path, bundle: Path | None = None) -> RunCA:
        """The user's own CA and server certificate (``bundle`` defaults to ``ca``)."""
        return cls(ca=ca, cert=cert, key=key, bundle=bundle or ca)
