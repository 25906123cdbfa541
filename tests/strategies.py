"""Shared Hypothesis strategies (style.md §15); add new ones here rather than in test modules."""

from __future__ import annotations

import string

from hypothesis import strategies as st

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
