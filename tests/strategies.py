"""Shared Hypothesis strategies (style.md §15); add new ones here rather than in test modules."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from scitokens_batch.protocol import (
    NAME_PATTERN,
    AccessStep,
    Ack,
    ComputeStep,
    CredentialRequest,
    CredentialResponse,
    CredentialUpdate,
    DataResponse,
    ExecStep,
    JobFinished,
    JobProgram,
    StartJob,
    StoreCredential,
    ThirdPartyCopy,
    TransferAccepted,
    TransferFile,
    TransferRefused,
    TransferSubmit,
)
from scitokens_batch.tokens._reasons import Reason
from scitokens_batch.tokens._scopes import Operation, Scope

#: Characters of a plain path component: RFC 3986 unreserved, so already in normal form.
SEGMENT_ALPHABET = string.ascii_letters + string.digits + "-._~"

#: Scope names that carry a path and grant path operations (A15, B1).
PATH_AUTHZ = (
    "read",
    "write",
    "storage.read",
    "storage.create",
    "storage.modify",
    "storage.stage",
    "storage.poll",
)
#: Scope names without a path (B13, A15, K1) or whose path-less form is usual (B14, L1).
PATHLESS_AUTHZ = (
    "openid",
    "offline_access",
    "compute.read",
    "compute.modify",
    "compute.create",
    "compute.cancel",
    "queue",
    "execute",
    "wlcg.groups",
    "fts",
)
#: Scopes the module keeps but that grant nothing: opaque suffixes and non-storage paths (A11).
OTHER_SCOPES = (
    Scope("wlcg:1.0", None),
    Scope("scim:read", None),
    Scope("https://example.org/scope", None),
    Scope("wlcg.groups", "/cms"),
    Scope("condor", "/READ"),
)


def segments(alphabet: str = SEGMENT_ALPHABET, max_size: int = 8) -> st.SearchStrategy[str]:
    """One path component in normal form: never empty, never ``.`` or ``..``.

    Args:
        alphabet: the characters to draw from; a small one (``"ab"``) makes paths collide, which
            is what properties about prefixes and ancestors need.
        max_size: the longest component.
    """
    return st.text(alphabet, min_size=1, max_size=max_size).filter(lambda s: s not in {".", ".."})


def paths(
    alphabet: str = SEGMENT_ALPHABET, *, min_depth: int = 0, max_depth: int = 4
) -> st.SearchStrategy[str]:
    """A normalised absolute path without trailing ``/`` (``"/"`` for depth 0)."""
    return st.lists(segments(alphabet), min_size=min_depth, max_size=max_depth).map(
        lambda parts: "/" + "/".join(parts)
    )


def scope_paths(alphabet: str = SEGMENT_ALPHABET, max_depth: int = 4) -> st.SearchStrategy[str]:
    """A normalised scope path; sometimes with the "directory only" trailing ``/`` (B4)."""
    return st.tuples(paths(alphabet, max_depth=max_depth), st.booleans()).map(
        lambda pd: pd[0] + "/" if pd[1] and pd[0] != "/" else pd[0]
    )


def path_scopes(alphabet: str = SEGMENT_ALPHABET, max_depth: int = 4) -> st.SearchStrategy[Scope]:
    """A storage or SciTokens path scope, e.g. ``storage.create:/a/b/``."""
    return st.builds(Scope, st.sampled_from(PATH_AUTHZ), scope_paths(alphabet, max_depth))


def scopes(alphabet: str = SEGMENT_ALPHABET, max_depth: int = 4) -> st.SearchStrategy[Scope]:
    """Any well-formed scope: mostly path scopes, sometimes path-less or opaque ones."""
    return st.one_of(
        path_scopes(alphabet, max_depth),
        st.builds(Scope, st.sampled_from(PATHLESS_AUTHZ), st.none()),
        st.sampled_from(OTHER_SCOPES),
    )


def operations() -> st.SearchStrategy[Operation]:
    """Any data-server operation."""
    return st.sampled_from(Operation)


def raw_paths() -> st.SearchStrategy[str]:
    """Arbitrary text made mostly of path syntax: ``/``, dots, escapes, controls, letters."""
    return st.text(
        st.sampled_from(["/", "/", ".", "%", "2", "e", "E", "F", "0", "a", "b", "~", "\x00", "\t"]),
        max_size=16,
    )


# -- wire format (protocol/_wire.py) ----------------------------------------------------------

#: Any text that encodes to UTF-8 (no lone surrogates): ids, secrets, user names on the wire.
utf8_text = st.text(st.characters(codec="utf-8"))
#: The same, never empty (an empty form value means "absent", RFC 6749 §3.1).
utf8_words = st.text(st.characters(codec="utf-8"), min_size=1)
#: Names that may become file names (users, services, hosts): what the messages accept.
wire_names = st.from_regex(NAME_PATTERN, fullmatch=True)
_seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False)
_times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
_sizes = st.integers(min_value=0, max_value=2**63)


def job_steps() -> st.SearchStrategy[Any]:
    """One job step of any of the three kinds."""
    return st.one_of(
        st.builds(
            AccessStep,
            server=utf8_text,
            path=utf8_text,
            size=st.integers(0, 2**63),
            write=st.booleans(),
        ),
        st.builds(ComputeStep, seconds=_seconds),
        st.builds(ExecStep, argv=st.lists(utf8_text, max_size=4), timeout=_seconds),
    )


def rpc_messages() -> st.SearchStrategy[Any]:
    """Any message that travels over RPC (``wire.RPC_MESSAGES``), fields drawn widely."""
    ints = st.integers(-(2**63), 2**63)
    program = st.builds(
        JobProgram, steps=st.lists(job_steps(), max_size=5).map(tuple), reread=st.booleans()
    )
    return st.one_of(
        st.builds(Ack, ok=st.booleans(), detail=utf8_text),
        st.builds(
            CredentialRequest,
            user=wire_names,
            service=wire_names,
            wait=_seconds,
            min_valid=_seconds,
        ),
        st.builds(
            CredentialResponse,
            token=st.none() | utf8_text,
            jti=st.none() | utf8_text,
            exp=st.none() | _times,
        ),
        st.builds(
            CredentialUpdate,
            user=wire_names,
            service=wire_names,
            token=utf8_text,
            jti=utf8_text,
            exp=_times,
        ),
        st.builds(
            StoreCredential,
            user=wire_names,
            service=wire_names,
            issuer=wire_names,
            scopes=utf8_text,
            audience=utf8_text,
            refresh_token=utf8_text,
        ),
        st.builds(
            StartJob,
            job=st.integers(0, 2**63),
            slot=ints,
            user=wire_names,
            service=wire_names,
            token=utf8_text,
            jti=utf8_text,
            exp=_times,
            program=program,
        ),
        st.builds(
            JobFinished,
            job=ints,
            host=wire_names,
            exit_code=ints,
            reason=utf8_text,
            cpu_seconds=_seconds,
        ),
        transfer_submits(),
        st.builds(TransferAccepted, job=utf8_text, files=ints),
        st.builds(TransferRefused, job=utf8_text, status=ints, reason=utf8_text),
        st.builds(
            ThirdPartyCopy,
            source=utf8_text,
            source_path=utf8_text,
            destination_path=utf8_text,
            size=_sizes,
            source_token=st.none() | utf8_text,
            destination_token=st.none() | utf8_text,
            transfer=utf8_text,
        ),
        st.builds(
            DataResponse,
            status=ints,
            reason=st.none() | st.sampled_from(Reason),
            detail=utf8_text,
            size=ints,
            side=st.none() | st.sampled_from(["source", "destination"]),
        ),
    )


def transfer_submits() -> st.SearchStrategy[TransferSubmit]:
    """A transfer job submission (Rucio -> FTS), tokens per file or none (L5)."""
    files = st.lists(
        st.builds(
            TransferFile,
            source=utf8_text,
            source_path=utf8_text,
            destination=utf8_text,
            destination_path=utf8_text,
            size=_sizes,
        ),
        max_size=4,
    )

    def with_tokens(items: list[TransferFile]) -> st.SearchStrategy[TransferSubmit]:
        n = len(items)
        tokens = st.lists(utf8_text, min_size=n, max_size=n).map(tuple)
        both = st.tuples(tokens, tokens) | st.just(((), ()))
        return st.builds(
            lambda pair, job, fts: TransferSubmit(
                job=job,
                files=tuple(items),
                source_tokens=pair[0],
                destination_tokens=pair[1],
                fts_token=fts,
            ),
            both,
            utf8_text,
            utf8_text,
        )

    return files.flatmap(with_tokens)
