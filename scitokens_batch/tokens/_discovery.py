"""WLCG Bearer Token Discovery, with HTCondor's stricter file rules (conformance F1-F6, I2, P16).

This module is pure: it never looks at ``os.environ``, never opens a file and never asks for the
time.  The caller injects the environment (a mapping), the effective user id and a ``read_file``
callable; :func:`scitokens_batch._files.read_file` is the real implementation and tests pass a
dict-backed fake.

Theory of operation
-------------------

:func:`discover` walks the four steps of the WLCG specification in order (F1)::

    1. BEARER_TOKEN            the variable's value is the token
    2. BEARER_TOKEN_FILE       the variable names a file holding the token
    3. $XDG_RUNTIME_DIR/bt_u$EUID     only if XDG_RUNTIME_DIR is set
    4. /tmp/bt_u$EUID

Each candidate is normalised the same way (F2): leading and trailing C99 ``isspace`` characters
are stripped; an empty result means "nothing here, go on"; a valid RFC 6750 §2.1 ``b64token``
ends discovery with that token; anything else ends discovery with a :class:`DiscoveryError`
(the spec's "SHOULD stop and return an error").  Files follow HTCondor (F5): a missing file
falls through, every other read error stops, and so does a file of 16384 bytes or more.

The result is a value, never an exception: :class:`Discovered`, :class:`DiscoveryError`, or
``None`` when every step came up empty.
"""

from __future__ import annotations

import enum
import json
import posixpath
import re
from typing import TYPE_CHECKING

import attrs

from scitokens_batch.errors import LocalInputError, TokenFormatError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "MAX_TOKEN_FILE_SIZE",
    "Discovered",
    "DiscoveryError",
    "TokenSource",
    "discover",
    "is_b64token",
    "parse_condor_creds",
]

#: F5: HTCondor refuses a token file of this many bytes or more ("often the limit in size of
#: HTTP headers for many web servers"); a full buffer may mean a truncated token.
MAX_TOKEN_FILE_SIZE = 16384

#: F2: whitespace as C99 ``isspace`` defines it in the "C" locale, and nothing else.  Python's
#: ``str.strip()`` would also strip U+0085, U+00A0, U+2028... which the spec does not allow.
_C99_WHITESPACE = " \f\n\r\t\v"

#: RFC 6750 §2.1: ``b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="``.
#: Spelled with explicit ASCII ranges: ``\w`` or ``str.isalnum`` would admit non-ASCII letters.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: The same alphabet as a set, to point at the first offending character in an error message.
_B64TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")


class TokenSource(enum.Enum):
    """Which discovery step produced a token or an error (F1)."""

    BEARER_TOKEN = "BEARER_TOKEN"  #: the value of the ``BEARER_TOKEN`` variable itself
    BEARER_TOKEN_FILE = "BEARER_TOKEN_FILE"  #: the file ``BEARER_TOKEN_FILE`` names
    XDG_RUNTIME_DIR = "XDG_RUNTIME_DIR"  #: ``$XDG_RUNTIME_DIR/bt_u$EUID[-<purpose>]``
    TMP = "TMP"  #: ``/tmp/bt_u$EUID[-<purpose>]``


@attrs.frozen
class Discovered:
    """A token found by :func:`discover`.

    Attributes:
        token: the token, already stripped of surrounding whitespace (F2).  Left out of
            ``repr()`` so that a token never lands in a log line or a test failure by accident.
        source: the step that found it.
        path: the file it was read from, or ``None`` for ``BEARER_TOKEN``.
    """

    token: str = attrs.field(repr=False)
    source: TokenSource
    path: str | None


@attrs.frozen
class DiscoveryError:
    """Discovery stopped at a step with an error, without a token (F2 "SHOULD stop", F5).

    Attributes:
        source: the step that stopped discovery.
        path: the file involved, or ``None`` for ``BEARER_TOKEN``.
        detail: why, in words; never contains any part of the candidate token.
    """

    source: TokenSource
    path: str | None
    detail: str


def is_b64token(s: str) -> bool:
    """Tell whether ``s`` is exactly one RFC 6750 §2.1 ``b64token`` (F2).

    The grammar is ``1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="``, in ASCII.
    No whitespace is allowed anywhere: strip first if the value came from a file or a variable.

    Args:
        s: the candidate token.

    Returns:
        ``True`` when ``s`` matches the grammar; ``False`` otherwise, including for ``""``.
    """
    return _B64TOKEN.fullmatch(s) is not None


def discover(
    env: Mapping[str, str],
    *,
    euid: int,
    read_file: Callable[[str], bytes],
    purpose: str | None = None,
) -> Discovered | DiscoveryError | None:
    """Find the bearer token a client should use, per WLCG Bearer Token Discovery (F1-F5).

    Steps, in order (F1); the first one that yields a valid token or an error wins:

    1. ``BEARER_TOKEN`` set and not blank: its value.
    2. ``BEARER_TOKEN_FILE`` set and not empty: the file it names.
    3. ``XDG_RUNTIME_DIR`` set to an absolute path: ``$XDG_RUNTIME_DIR/bt_u$EUID``.
    4. ``/tmp/bt_u$EUID``.

    Every candidate is stripped of leading and trailing C99 whitespace (F2).  Blank means
    "continue with the next step"; a valid RFC 6750 ``b64token`` stops with :class:`Discovered`;
    anything else stops with :class:`DiscoveryError`, including an embedded ``"\\r\\n"`` or any
    other whitespace inside the token (F2, F5).

    Files follow HTCondor's ``find_token_in_file`` (F5): ``FileNotFoundError`` from
    ``read_file`` falls through to the next step; any other ``OSError`` (permission denied, a
    directory, ...) stops with :class:`DiscoveryError`; so does content of
    :data:`MAX_TOKEN_FILE_SIZE` (16384) bytes or more.

    Purpose (F4): a tool that keeps one token per purpose (e.g. per VO) passes ``purpose``;
    steps 3 and 4 then read ``bt_u$EUID-<purpose>`` instead of ``bt_u$EUID``.  Steps 1 and 2
    are unchanged, because F4 says the tool should hand its children the chosen file through
    ``BEARER_TOKEN_FILE``, so an explicit variable still wins.  There is no fallback from
    ``bt_u$EUID-<purpose>`` to ``bt_u$EUID``: that token was issued for something else, and F4
    says tools SHOULD NOT pick among tokens.

    Differences from other implementations, on purpose:

    * python ``SciToken.discover()`` (scitokens 1.9.7) never reaches ``/tmp/bt_u$EUID`` when
      ``XDG_RUNTIME_DIR`` is set but its file is missing, and silently skips a
      ``BEARER_TOKEN_FILE`` that is not a regular file (F6).  We follow the specification:
      a missing ``$XDG_RUNTIME_DIR/bt_u$EUID`` falls through to ``/tmp``, and an unreadable
      ``BEARER_TOKEN_FILE`` stops discovery with an error (F5).
    * An empty ``BEARER_TOKEN_FILE`` is treated as unset (HTCondor opens ``""``, gets ENOENT
      and falls through: same outcome).  An empty or relative ``XDG_RUNTIME_DIR`` is ignored,
      as the XDG Base Directory specification the WLCG spec refers to requires for relative
      paths; HTCondor would instead look for ``bt_u$EUID`` relative to its working directory.
    * Non-ASCII bytes in a token file make the token invalid (they cannot be in a
      ``b64token``), so they stop discovery rather than being decoded in some locale.

    Args:
        env: the environment to read, e.g. a snapshot of ``os.environ``
            (:func:`scitokens_batch._files.os_environ_snapshot`).
        euid: the effective user id of the process the token is for (``$ID`` in the spec).
        read_file: returns the bytes of the file at a path (at least
            :data:`MAX_TOKEN_FILE_SIZE` bytes of it when there are that many); raises
            ``FileNotFoundError`` when the file does not exist and another ``OSError`` when it
            cannot be read.  :func:`scitokens_batch._files.read_file` does exactly this.
        purpose: the F4 purpose name appended to the ``bt_u$EUID`` file names, or ``None``.

    Returns:
        :class:`Discovered` with the token, the step and the file; :class:`DiscoveryError` when
        a step stopped discovery; ``None`` when every step was empty or missing.

    Raises:
        LocalInputError: ``purpose`` is empty or contains ``"/"`` or NUL (it must name a file
            in the same directory), or ``euid`` is negative.
    """
    if euid < 0:
        raise LocalInputError(f"euid must be >= 0 (got {euid})")
    suffix = ""
    if purpose is not None:
        if not purpose or "/" in purpose or "\0" in purpose:
            raise LocalInputError(
                f"purpose must be a non-empty file-name part without '/' or NUL (got {purpose!r})"
            )
        suffix = f"-{purpose}"

    # Step 1 (F1): the variable's value is the token itself.
    value = env.get("BEARER_TOKEN")
    if value is not None:
        found = _check_candidate(value, TokenSource.BEARER_TOKEN, None)
        if found is not None:
            return found

    # Step 2 (F1): the variable names a file.  Empty is treated as unset (see docstring).
    token_file = env.get("BEARER_TOKEN_FILE")
    if token_file:
        found = _from_file(token_file, TokenSource.BEARER_TOKEN_FILE, read_file)
        if found is not None:
            return found

    file_name = f"bt_u{euid}{suffix}"

    # Step 3 (F1): only when XDG_RUNTIME_DIR is usable; a missing file falls through to /tmp
    # as the spec says (not python's SciToken.discover behaviour, F6).
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir and posixpath.isabs(runtime_dir):
        found = _from_file(
            posixpath.join(runtime_dir, file_name), TokenSource.XDG_RUNTIME_DIR, read_file
        )
        if found is not None:
            return found

    # Step 4 (F1): the last resort.
    return _from_file(posixpath.join("/tmp", file_name), TokenSource.TMP, read_file)


def parse_condor_creds(content: bytes) -> str:
    """Extract the access token from an HTCondor ``<svc>[_<handle>].use`` file (I2, I12, P16).

    Two forms exist (I2):

    * JSON, as the OAuth and local credmons write it by default: a token response such as
      ``{"access_token": "eyJ...", "expires_in": 1200, ...}``; the ``access_token`` member
      must be a string and a valid ``b64token`` as it stands.
    * A bare token followed by a newline, as the Vault credmon writes it and the local credmon
      with ``LOCAL_CREDMON_TOKEN_USE_JSON = False``; surrounding whitespace is stripped as in
      discovery (F2).

    Jobs are expected to call this on every use, re-reading the file each time, since the
    starter replaces it every ``SEC_CREDENTIAL_REFRESH`` seconds (I13, P16).

    Args:
        content: the whole file.

    Returns:
        The access token.

    Raises:
        TokenFormatError: the content is neither form.  The message says what was wrong and
            never quotes the content, since it may hold a token.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenFormatError(
            f".use file: expected UTF-8 JSON or a bare token, got invalid UTF-8 at byte {exc.start}"
        ) from None
    stripped = text.strip(_C99_WHITESPACE)
    if not stripped:
        raise TokenFormatError(".use file: expected JSON or a bare token, got an empty file")

    if stripped.startswith("{"):
        return _access_token_from_json(stripped)

    problem = _token_problem(stripped)
    if problem is not None:
        raise TokenFormatError(
            ".use file: expected a JSON object or a bare RFC 6750 token, got a value that"
            f" {problem}"
        )
    return stripped


def _access_token_from_json(text: str) -> str:
    """Return ``access_token`` from an HTCondor JSON token response (I2).

    ``from None`` everywhere: a ``JSONDecodeError`` keeps the whole document in ``.doc``, which
    would put the token in a chained traceback.
    """
    try:
        document = json.loads(text)
    except RecursionError:  # a 16 kB file of "[[[[..." is no token response either
        raise TokenFormatError(".use file: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise TokenFormatError(
            f".use file: starts with '{{' but is not valid JSON ({exc.msg} at line {exc.lineno}"
            f" column {exc.colno})"
        ) from None
    if not isinstance(document, dict):
        raise TokenFormatError(
            f".use file: expected a JSON object, got a JSON {type(document).__name__}"
        )
    if "access_token" not in document:
        members = ", ".join(sorted(repr(k) for k in document)) or "none"
        raise TokenFormatError(
            f".use file: JSON object has no 'access_token' member (members: {members})"
        )
    token = document["access_token"]
    if not isinstance(token, str):
        raise TokenFormatError(
            f".use file: 'access_token' must be a string, got a JSON {type(token).__name__}"
        )
    problem = _token_problem(token)
    if problem is not None:
        raise TokenFormatError(f".use file: 'access_token' {problem}")
    return token


def _from_file(
    path: str, source: TokenSource, read_file: Callable[[str], bytes]
) -> Discovered | DiscoveryError | None:
    """Run one file step: ``None`` means fall through to the next step (F5)."""
    try:
        content = read_file(path)
    except FileNotFoundError:
        # F5: ENOENT is "no token here", not an error.
        return None
    except OSError as exc:
        # F5: anything else (EACCES, EISDIR, ELOOP, EIO...) stops discovery: the user pointed
        # us at a token we cannot read, and silently using another one would be worse.
        reason = exc.strerror or type(exc).__name__
        errno_part = f" (errno {exc.errno})" if exc.errno is not None else ""
        return DiscoveryError(source, path, f"cannot read token file: {reason}{errno_part}")
    if len(content) >= MAX_TOKEN_FILE_SIZE:
        # F5: a full 16 KiB buffer may be a truncated token; HTCondor errs on the side of caution.
        return DiscoveryError(
            source,
            path,
            f"token file is {MAX_TOKEN_FILE_SIZE} bytes or larger (limit is"
            f" {MAX_TOKEN_FILE_SIZE - 1} bytes)",
        )
    # latin-1 maps every byte to one code point and never fails; any non-ASCII byte then fails
    # the b64token check with an offset, instead of depending on a locale's decoder.
    return _check_candidate(content.decode("latin-1"), source, path)


def _check_candidate(
    raw: str, source: TokenSource, path: str | None
) -> Discovered | DiscoveryError | None:
    """Apply F2 to one candidate: ``None`` when blank, else a token or an error."""
    token = raw.strip(_C99_WHITESPACE)
    if not token:
        # F2/F5: empty or whitespace-only continues with the next step.
        return None
    problem = _token_problem(token)
    if problem is not None:
        # F2: "Upon finding an invalid token, the implementation SHOULD stop and return an
        # error."  The detail names the problem and an offset, never the token text.
        return DiscoveryError(source, path, f"invalid bearer token: the value {problem}")
    return Discovered(token, source, path)


def _token_problem(token: str) -> str | None:
    """Say what makes ``token`` (already stripped) not a ``b64token``, or ``None`` if it is one.

    The message gives offsets and lengths only, never characters of the token.
    """
    if is_b64token(token):
        return None
    crlf = token.find("\r\n")
    if crlf != -1:
        # F5: HTCondor's normalize_token rejects "\r\n" explicitly (header injection).
        return f"contains CR LF at offset {crlf} (forbidden in an HTTP header)"
    for offset, char in enumerate(token):
        if char in _C99_WHITESPACE:
            return f"contains whitespace at offset {offset} (a token is a single word)"
    for offset, char in enumerate(token):
        if char not in _B64TOKEN_CHARS and char != "=":
            what = "a non-ASCII character" if ord(char) > 0x7F else "a character"
            return f"contains {what} at offset {offset} that RFC 6750 §2.1 does not allow"
    # Only the padding rule is left: "=" may only follow at least one other character, and
    # nothing but "=" may follow it.
    first_pad = token.index("=")
    if first_pad == 0:
        return "starts with '=' (padding must follow at least one token character)"
    return f"has '=' at offset {first_pad} followed by other characters (padding goes last)"
