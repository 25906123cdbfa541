"""Exceptions raised by scitokens-batch.

A *rejected token* is not an exception: verification returns a
:class:`~scitokens_batch.tokens.Rejection` value with a reason and an HTTP status
hint.  Exceptions are for programming errors and for bad input given to us::

    SciTokensBatchError (Exception)
    ├── LocalInputError (ValueError)        input we were given is wrong
    │   ├── ScenarioError                   a scenario file or --set override (file, key path)
    │   ├── StudyError                      a study file or one of its points (file, key, point)
    │   ├── ScopeError                      a scope string that breaks the grammar
    │   ├── KeyFileError                    a key or JWKS file that cannot be used
    │   └── TokenFormatError                a token that cannot even be parsed (inspect)
    ├── RemoteProtocolError (RuntimeError)  a peer answered something that breaks the protocol
    └── PeerError (RuntimeError)            a real peer program we run (XRootD) cannot be used
        ├── PeerMissingError                it is not installed here (names what is missing)
        └── PeerStartError                  it was started but died or never answered

Every message names the field or key path, what was expected and what was received.
"""

from __future__ import annotations

__all__ = [
    "KeyFileError",
    "LocalInputError",
    "PeerError",
    "PeerMissingError",
    "PeerStartError",
    "RemoteProtocolError",
    "ScenarioError",
    "SciTokensBatchError",
    "ScopeError",
    "StudyError",
    "TokenFormatError",
]


class SciTokensBatchError(Exception):
    """Base class of every exception this package raises on purpose."""


class LocalInputError(SciTokensBatchError, ValueError):
    """Input given to us (a file, an option, an argument) is not acceptable."""


class ScenarioError(LocalInputError):
    """A scenario file, or an override of one, is invalid.

    Args:
        file: the scenario file (or ``"--set"`` for a command-line override).
        key_path: where in the file, e.g. ``workloads[1].token.audience``; ``""`` for the
            whole file.
        message: what is wrong, naming what was expected and what was received.
    """

    def __init__(self, file: str, key_path: str, message: str) -> None:
        self.file = file
        self.key_path = key_path
        self.message = message
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {message}")


class StudyError(LocalInputError):
    """A study file is invalid, or one of its points gives an invalid scenario.

    Args:
        file: the study file.
        key_path: where in the file, e.g. ``study.grid."token_manager.scan_interval"``.
        message: what is wrong, naming what was expected and what was received.
        point: the point the problem belongs to (``"point 3 (a=1, b=2)"``), if any.
    """

    def __init__(self, file: str, key_path: str, message: str, *, point: str | None = None) -> None:
        self.file = file
        self.key_path = key_path
        self.message = message
        self.point = point
        where = f"{file}: {key_path}" if key_path else file
        at = f" [{point}]" if point else ""
        super().__init__(f"{where}{at}: {message}")


class ScopeError(LocalInputError):
    """A scope string does not follow the SciTokens / WLCG scope grammar."""


class KeyFileError(LocalInputError):
    """A key, PEM or JWKS file cannot be read or used."""


class TokenFormatError(LocalInputError):
    """A token is not even a compact JWS (three base64url parts with JSON header and payload)."""


class RemoteProtocolError(SciTokensBatchError, RuntimeError):
    """A peer answered in a way the protocol does not allow."""


class PeerError(SciTokensBatchError, RuntimeError):
    """A real peer program that live mode runs (XRootD) cannot be used."""


class PeerMissingError(PeerError):
    """The peer program, or a part it needs (plugin, user, tool), is not installed here.

    The message names every missing part, e.g. ``libXrdAccSciTokens-5.so not found in ...``.
    """


class PeerStartError(PeerError):
    """The peer program was started but exited, or did not answer in time.

    The message says which, and ends with the tail of the program's own log.
    """
