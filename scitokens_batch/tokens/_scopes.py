"""Scope grammar, path authorization and audience matching (conformance A6, A15, B1-B15, C1-C5, M).

Pure: stdlib and attrs only, no I/O, no time.

Theory of operation.  A scope string is parsed once into a :class:`Scope`.  Construction checks
the grammar (B2, B13, A15) and precomputes what :func:`authorize` needs, so that the per-access
check is a few string comparisons and set look-ups per scope, with no splitting and no regex:

* ``_exact``: the scope path without its trailing ``/`` (``"/"`` for the root);
* ``_prefix``: ``_exact + "/"``; a request path strictly below the scope path starts with it;
* three operation sets: on the scope path itself, strictly below it, and on its ancestors.

Path matching is by whole components (B3, B4, P1, M5): ``/dir`` grants ``/dir/x`` but never
``/dirty``.  Paths are normalised the same way on both sides (absolute, ``//`` collapsed,
RFC 3986 §6 percent-encoding normal form) and any ``.`` or ``..`` component is refused, in a
scope (python scitokens rejects such a token; scitokens-cpp and XRootD normalise it and escape
or crash, peers.md) and in a request (XRootD answers 403).

We are at least as strict as the strictest real validator (design.md, "Token semantics"), and
deliberately do not share any validator's known bugs (P1 prefix match, P4 create/modify
collapsed to write, P6 root/base-path corner cases).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection, Iterable, Sequence
from urllib.parse import unquote

import attrs

from scitokens_batch.errors import ScopeError

from ._profiles import SCITOKENS_ANY_AUDIENCE, WLCG_ANY_AUDIENCE, Profile
from ._reasons import Reason, Rejection

__all__ = [
    "Operation",
    "Scope",
    "audience_matches",
    "authorize",
    "covers",
    "format_scopes",
    "narrow",
    "normalize_path",
    "parse_scope",
    "parse_scopes",
]


class Operation(enum.Enum):
    """What a client asks a data server to do."""

    READ = "read"  #: GET a file
    STAT = "stat"  #: HEAD / stat: size, checksum, locality (B11)
    CREATE = "create"  #: upload a new file; rename within the granted tree (B7)
    MKDIR = "mkdir"  #: create a directory (MKCOL), including missing parents (B4, B7)
    MODIFY = "modify"  #: overwrite, truncate or delete an existing file (B8)
    STAGE = "stage"  #: bring online, poll, abort, evict, pin (B10)


_R, _S, _C, _D, _M, _G = (
    Operation.READ,
    Operation.STAT,
    Operation.CREATE,
    Operation.MKDIR,
    Operation.MODIFY,
    Operation.STAGE,
)

#: What each path scope grants on its path and below.  Names not listed grant no path operation
#: (compute.*, queue, execute, openid, offline_access, unknown names: A10, A11).
_SUBTREE_GRANTS: dict[str, frozenset[Operation]] = {
    # A15 + peers.md: "a read scope never allows a PUT".
    "read": frozenset({_R, _S}),
    # SciTokens write is upload-with-overwrite; it never reads (peers.md row "read scope used
    # for write" is the mirror case; B9 holds the same for the WLCG names).
    "write": frozenset({_C, _D, _M, _S}),
    "storage.read": frozenset({_R, _S}),
    # B7: create never overwrites, deletes or truncates (P4: XRootD/cpp once collapsed it to write).
    "storage.create": frozenset({_C, _D, _S}),
    # B8: modify is a strict superset of create; B9: neither implies read.
    "storage.modify": frozenset({_C, _D, _M, _S}),
    # B10: stage is not read, whatever wlcg.ver says; B11: it does allow stat.
    "storage.stage": frozenset({_G, _S}),
    # B1 (v1.2): poll only asks about staging progress; B11 does not list it, so stat only.
    "storage.poll": frozenset({_S}),
}

#: Names whose scope MUST carry a path (B2 for every storage.*, A15 for read/write).
_PATH_REQUIRED_NAMES = frozenset({"read", "write"})
_PATH_REQUIRED_PREFIX = "storage."
#: Names that carry no path (B13 for compute.*; queue/execute/openid/offline_access by definition).
_PATHLESS_NAMES = frozenset({"queue", "execute", "openid", "offline_access"})
_PATHLESS_PREFIX = "compute."

#: RFC 3986 §2.3 unreserved characters: their percent-encoded form is decoded by §6.2.2.2.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
#: Bound on repeated percent-decoding when looking for double-encoded traversal (%252e%252e).
_MAX_DECODE_ROUNDS = 4
#: Never a real server audience: a wildcard in the server's list is a configuration error (C5, G7).
_WILDCARD_AUDIENCES = frozenset({SCITOKENS_ANY_AUDIENCE, WLCG_ANY_AUDIENCE})
#: Sentinel for path-less scopes; never equal to or a prefix of a validated path (no NUL there).
_NO_PATH = "\x00"

_EMPTY: frozenset[Operation] = frozenset()

#: What :class:`Scope` precomputes: operation values allowed anywhere, on the scope path itself,
#: strictly below it, and on its ancestors.
_GrantSets = tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]
_NO_GRANTS: _GrantSets = (frozenset(), frozenset(), frozenset(), frozenset())


def _grant_sets(subtree: frozenset[Operation], dir_only: bool) -> _GrantSets:
    """The precomputed sets of a path scope granting ``subtree`` (see ``_GrantSets``)."""
    creates = Operation.MKDIR in subtree
    # B4 "dir auto-create", B7 "mkdir (incl. missing parents)", P5: a create/modify/write scope
    # allows MKDIR of every ancestor, but nothing else there (no file op, and no stat: B11 is
    # "on matching paths").
    ancestor = frozenset({Operation.MKDIR}) if creates else _EMPTY
    # B4: a trailing "/" is "directory only": on the path itself only MKDIR and the STAT that
    # goes with it (B11: stat where another grant reaches); no READ/CREATE/MODIFY/STAGE there.
    on_self = subtree
    if dir_only:
        on_self = frozenset({Operation.MKDIR, Operation.STAT}) if creates else _EMPTY

    def values(ops: frozenset[Operation]) -> frozenset[str]:
        return frozenset(op.value for op in ops)

    return (
        values(subtree | on_self | ancestor),
        values(on_self),
        values(subtree),
        values(ancestor),
    )


_GRANT_SETS: dict[tuple[str, bool], _GrantSets] = {
    (name, dir_only): _grant_sets(ops, dir_only)
    for name, ops in _SUBTREE_GRANTS.items()
    for dir_only in (False, True)
}


def _path_rule(name: str) -> bool | None:
    """True if ``name`` requires a path, False if it forbids one, None if either is fine."""
    if name in _PATH_REQUIRED_NAMES or name.startswith(_PATH_REQUIRED_PREFIX):
        return True
    if name in _PATHLESS_NAMES or name.startswith(_PATHLESS_PREFIX):
        return False
    return None


def _is_path_suffix(tail: str) -> bool:
    """Whether the text after ``name:`` is a path (``https://x`` is an opaque URL, not a path)."""
    return tail[:1] == "/" and tail[:2] != "//"


def _is_dir_only(path: str) -> bool:
    """B4: a trailing ``/`` on a scope path means "directory only" (the root is just the root)."""
    return path != "/" and path.endswith("/")


def _is_scope_text(text: str) -> bool:
    """RFC 6749 §3.3 scope-token characters: printable ASCII except space, ``"`` and ``\\``."""
    return (
        text.isascii()
        and text.isprintable()
        and " " not in text
        and '"' not in text
        and "\\" not in text
    )


def _is_normal(path: str) -> bool:
    """Fast check that ``path`` is already in normal form (the hot path: no splitting).

    A path that starts with ``/`` and contains no ``//``, no ``/.`` and no ``%`` has no empty,
    ``.``, ``..`` or percent-encoded component, so :func:`normalize_path` would return it as is.
    """
    return (
        path[:1] == "/"
        and "//" not in path
        and "/." not in path
        and "%" not in path
        and path.isprintable()
    )


def _normalize_escapes(component: str, path: str) -> str:
    """RFC 3986 §6.2.2: decode escaped unreserved characters, upper-case the other escapes."""
    head, *rest = component.split("%")
    out = [head]
    for part in rest:
        digits = part[:2]
        if len(digits) != 2 or not _HEX.issuperset(digits):
            raise ScopeError(
                f"path {path!r}: expected '%' followed by two hex digits (RFC 3986 §2.1), "
                f"received {'%' + part[:2]!r}"
            )
        char = chr(int(digits, 16))
        out.append((char if char in _UNRESERVED else "%" + digits.upper()) + part[2:])
    return "".join(out)


def _check_decoded(component: str, path: str) -> None:
    """Refuse a component that decodes (once or repeatedly) to traversal, ``/`` or a control.

    A server that percent-decodes again (double decoding) would otherwise see ``..`` in
    ``%252e%252e`` or a separator in ``%2F``; the python library has the same defence in depth.
    """
    decoded = component
    for _ in range(_MAX_DECODE_ROUNDS):
        if "%" not in decoded:
            return
        again = unquote(decoded)
        if again == decoded:
            return
        decoded = again
        if decoded in {".", ".."}:
            raise ScopeError(
                f"path {path!r}: path traversal: component {component!r} decodes to "
                f"{decoded!r}; expected a normalised path without '.' or '..' components"
            )
        if "/" in decoded or not decoded.isprintable():
            raise ScopeError(
                f"path {path!r}: component {component!r} decodes to a separator or a control "
                f"character ({decoded!r}); expected plain path components"
            )


def normalize_path(path: str) -> str:
    """Return the normal form of an absolute path.

    The normal form is absolute, has no empty component (``//`` collapsed), keeps one trailing
    ``/`` when there was one (it means "directory only", B4) and has its percent-encoding in
    RFC 3986 §6 normal form (B5).  It is idempotent.

    Args:
        path: an absolute path, from a scope or from a request.

    Returns:
        The normalised path.

    Raises:
        ScopeError: the path is not absolute, has a ``.`` or ``..`` component (also
            percent-encoded, e.g. ``%2e%2e``: peers.md "`..` in scope"), a malformed escape, an
            encoded ``/``, or a NUL or other control character.
    """
    if _is_normal(path):
        return path
    if not path.startswith("/"):
        raise ScopeError(f"path {path!r}: expected an absolute path starting with '/'")
    if not path.isprintable():
        raise ScopeError(
            f"path {path!r}: expected printable characters, received a NUL or control character"
        )
    components: list[str] = []
    for raw in path.split("/"):
        if not raw:
            continue  # leading "/", "//" and the trailing "/" (restored below)
        component = _normalize_escapes(raw, path) if "%" in raw else raw
        if component in {".", ".."}:
            # peers.md: scitokens-cpp and XRootD normalise "/dir/../etc" to "/etc" (escape) and
            # crash on "/../etc"; the python library rejects the token.  We refuse.
            raise ScopeError(
                f"path {path!r}: path traversal: expected no '.' or '..' components, "
                f"received {raw!r}"
            )
        _check_decoded(component, path)
        components.append(component)
    if not components:
        return "/"
    trailing = "/" if path.endswith("/") else ""
    return "/" + "/".join(components) + trailing


@attrs.frozen
class Scope:
    """One scope of a token's ``scope`` claim, e.g. ``storage.read:/data`` or ``openid``.

    Construction validates the grammar, so every ``Scope`` is well formed and
    ``parse_scope(str(scope)) == scope``.  A name this module does not know with a suffix that is
    not a path (``wlcg:1.0``, ``scim:read``) is kept whole in ``authz`` with ``path`` None: it is
    carried along and grants nothing (A11).

    Attributes:
        authz: the authorization name: ``read``, ``write``, ``storage.read``, ``compute.read``,
            ``openid``, ``offline_access``, ``wlcg.groups``, ...
        path: the normalised absolute path (a trailing ``/`` means "directory only", B4), or None
            for scopes without one.

    Raises:
        ScopeError: from the constructor, when the scope breaks the grammar (B2, B13, A15, B5).
    """

    authz: str
    path: str | None
    # Precomputed for the hot path (authorize); not part of equality or the repr.  The operation
    # sets hold Operation *values*: Enum.__hash__ runs Python code, str hashes are cached.
    _text: str = attrs.field(init=False, eq=False, repr=False)
    _exact: str = attrs.field(init=False, eq=False, repr=False)
    _prefix: str = attrs.field(init=False, eq=False, repr=False)
    _ops: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _self_ops: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _subtree_ops: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _ancestor_ops: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        authz, path = self.authz, self.path
        text = authz if path is None else f"{authz}:{path}"
        if not authz or not _is_scope_text(authz):
            raise ScopeError(
                f"scope {text!r}: expected a name of RFC 6749 scope characters (printable "
                f"ASCII, no space, '\"' or '\\'), received authz {authz!r}"
            )
        head, colon, tail = authz.partition(":")
        rule = _path_rule(head)
        if path is None:
            if rule is True:
                # B2: "for every storage.* scope $PATH MUST be present"; A15: read/write too.
                raise ScopeError(
                    f"scope {text!r}: expected '{head}:<absolute path>' ('/' for everything; "
                    f"B2, A15), received no path"
                )
            if colon and rule is False:
                raise ScopeError(f"scope {text!r}: expected {head!r} without a suffix (B13)")
            if colon and not head:
                raise ScopeError(f"scope {text!r}: expected a name before ':'")
            if colon and _is_path_suffix(tail):
                # One spelling per scope: "name:/p" is Scope(name, "/p"), never opaque.
                raise ScopeError(
                    f"scope {text!r}: expected Scope({head!r}, {tail!r}) for a path scope"
                )
        else:
            if colon:
                raise ScopeError(
                    f"scope {text!r}: expected a name without ':', received authz {authz!r}"
                )
            if rule is False:
                # B13: compute.* carry no path; queue, execute, openid, offline_access neither.
                raise ScopeError(f"scope {text!r}: expected {authz!r} without a path (B13)")
            try:
                normal = normalize_path(path)
            except ScopeError as exc:
                raise ScopeError(f"scope {text!r}: {exc}") from exc
            if normal != path or not _is_scope_text(path):
                raise ScopeError(
                    f"scope {text!r}: expected a normalised, URL-escaped absolute path (B5), "
                    f"received {path!r}; normalize_path() gives {normal!r}"
                )
        _set = object.__setattr__
        _set(self, "_text", text)
        dir_only = path is not None and _is_dir_only(path)
        grants = None if path is None else _GRANT_SETS.get((authz, dir_only))
        if path is None or grants is None:
            # A10, A11: no path, or a name that grants no path operation.
            _set(self, "_exact", _NO_PATH)
            _set(self, "_prefix", _NO_PATH)
            grants = _NO_GRANTS
        else:
            exact = path[:-1] if dir_only else path
            _set(self, "_exact", exact)
            _set(self, "_prefix", "/" if exact == "/" else exact + "/")
        _set(self, "_ops", grants[0])
        _set(self, "_self_ops", grants[1])
        _set(self, "_subtree_ops", grants[2])
        _set(self, "_ancestor_ops", grants[3])

    def __str__(self) -> str:
        """The scope as it appears in a ``scope`` claim: ``authz:path`` or ``authz``."""
        return self._text


def parse_scope(text: str) -> Scope:
    """Parse one scope token.

    Args:
        text: one scope, e.g. ``storage.create:/data/run1`` or ``openid``.

    Returns:
        The parsed :class:`Scope`; its path is normalised (``//`` collapsed, escapes in
        RFC 3986 normal form).

    Raises:
        ScopeError: the scope breaks the grammar: a path missing where required (B2, A15),
            present where forbidden (B13), relative, or with ``.``/``..`` components
            (peers.md), or characters outside RFC 6749 §3.3.  The message names the value.
    """
    if not _is_scope_text(text):
        raise ScopeError(
            f"scope {text!r}: expected one RFC 6749 scope token (printable ASCII, no space, "
            f"'\"' or '\\')"
        )
    head, colon, tail = text.partition(":")
    rule = _path_rule(head)
    if colon and (rule is True or (rule is None and _is_path_suffix(tail))):
        try:
            path = normalize_path(tail)
        except ScopeError as exc:
            raise ScopeError(f"scope {text!r}: {exc}") from exc
        return Scope(head, path)
    # No ':' at all, or an opaque suffix (wlcg:1.0, https://...); Scope() refuses the rest.
    return Scope(text, None)


def parse_scopes(claim: str) -> tuple[Scope, ...]:
    """Parse the space-separated ``scope`` claim (A6).

    Args:
        claim: the claim value; empty or whitespace-only gives no scopes, repeated spaces are
            fine.  Duplicates and several scopes of one name are kept (B12).

    Returns:
        The scopes in claim order.

    Raises:
        ScopeError: the claim is not a string, or one scope breaks the grammar.
    """
    if not isinstance(claim, str):
        # JSON claims are untyped: a list here is the "scp" shape, not the WLCG one (A6).
        raise ScopeError(
            f"scope claim: expected a space-separated string (A6), received {type(claim).__name__}"
        )
    return tuple(parse_scope(text) for text in claim.split())


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Format scopes as a ``scope`` claim value (A6): space-separated, in the given order."""
    return " ".join(str(scope) for scope in scopes)


@functools.lru_cache(maxsize=64)
def _normal_base(base_path: str) -> str:
    """The base path in normal form without a trailing ``/`` (``"/"`` stays ``"/"``).

    Memoised: a server has a handful of base paths (one per trusted issuer, M1) and this runs on
    every access; the function is pure, so the cache only saves time.
    """
    if not _is_normal(base_path):
        try:
            base_path = normalize_path(base_path)
        except ScopeError as exc:
            raise ScopeError(f"base_path: {exc}") from exc
    if base_path != "/" and base_path.endswith("/"):
        base_path = base_path[:-1]
    return base_path


def authorize(
    scopes: Sequence[Scope], op: Operation, path: str, *, base_path: str = "/"
) -> Rejection | None:
    """Decide whether a token's scopes allow one operation on one server path.

    Args:
        scopes: the token's scopes (from :func:`parse_scopes`).
        op: the operation asked for.
        path: the path on the server, as requested (absolute).
        base_path: the server's base path for the token's issuer (B6, M1); scope paths are
            relative to it.

    Returns:
        None when allowed, else ``Rejection(Reason.INSUFFICIENT_SCOPE, detail)``; the detail
        names the operation, the path and the scopes held.

    Raises:
        ScopeError: ``base_path`` (server configuration) is not a clean absolute path.
    """
    # Request path: XRootD answers 403 to "/../" before authorization (peers.md "request path
    # traversal"); we refuse any "."/".." component or relative path the same way.  The common,
    # already normal, path skips the split (_is_normal).
    if not _is_normal(path):
        try:
            path = normalize_path(path)
        except ScopeError as exc:
            return Rejection(
                Reason.INSUFFICIENT_SCOPE,
                f"{op.value} refused by the path traversal check: {exc}; "
                f"scopes held: {_held(scopes)}",
            )
    # A trailing "/" on a request names the same object; only scopes use it for "directory".
    token_path = path[:-1] if path[-1] == "/" and path != "/" else path
    # B6, M1, P6: strip the issuer's base path by whole components; outside it nothing is granted.
    base = "/" if base_path == "/" else _normal_base(base_path)
    if base != "/":
        if token_path == base:
            token_path = "/"
        elif token_path.startswith(base) and token_path[len(base)] == "/":
            token_path = token_path[len(base) :]
        else:
            return Rejection(
                Reason.INSUFFICIENT_SCOPE,
                f"{op.value} on {path!r} is outside the issuer's base path {base!r} (B6); "
                f"scopes held: {_held(scopes)}",
            )
    # The request is an ancestor of a scope path when the scope's _prefix starts with it + "/".
    token_dir = "/" if token_path == "/" else token_path + "/"
    value: str = op._value_  # the precomputed sets hold values (see Scope)
    for scope in scopes:
        if value not in scope._ops:
            continue  # A10/A11: this scope grants this operation nowhere
        if token_path == scope._exact:
            if value in scope._self_ops:  # B4: the path itself (dir-only: only MKDIR, STAT)
                return None
        elif token_path.startswith(scope._prefix):
            if value in scope._subtree_ops:  # B3, B4, P1, M5: below it, by whole components
                return None
        elif scope._prefix.startswith(token_dir) and value in scope._ancestor_ops:
            return None  # B4, B7, P5: mkdir of a missing parent, nothing else there
    where = f"{path!r}" if base == "/" else f"{path!r} (token path {token_path!r})"
    return Rejection(
        Reason.INSUFFICIENT_SCOPE,
        f"{op.value} on {where} is not granted by the scopes held: {_held(scopes)}",
    )


def _held(scopes: Sequence[Scope]) -> str:
    """The scopes, for a rejection detail (scopes are not secrets; the token never appears)."""
    return " ".join(scope._text for scope in scopes) or "(none)"


def audience_matches(
    token_aud: str | Sequence[str], server_audiences: Collection[str], profile: Profile
) -> bool:
    """Whether a token's ``aud`` names this server (C1-C5, G7, H8).

    Args:
        token_aud: the token's ``aud`` claim, a string or a list of strings (C1).
        server_audiences: the audiences this server answers to (C2: origin, redirector names;
            C3: ``condor://`` URIs).  Wildcards and empty strings here are never a real audience
            and are ignored (C5: "server audience ANY is an error").
        profile: the token's profile; its wildcard (``ANY`` for SciTokens, the WLCG any-URL for
            WLCG) matches any server, the other profile's wildcard is just a string (G7, H8).

    Returns:
        True when one of the token's audiences matches exactly (case-sensitive, C2, C4), or is
        the profile's wildcard and the server has at least one real audience.
    """
    auds = (token_aud,) if isinstance(token_aud, str) else token_aud
    wildcard = profile.any_audience
    for aud in auds:
        if aud == wildcard:
            # C1, C5, H8: the wildcard matches any server that has a real audience (G7: a
            # server without one, or whose only audience is "ANY", fails).
            if any(s and s not in _WILDCARD_AUDIENCES for s in server_audiences):
                return True
        elif (
            isinstance(aud, str) and aud and aud not in _WILDCARD_AUDIENCES
        ) and aud in server_audiences:
            return True  # C2, C4: exact, case-sensitive; one match in a list is enough
    return False


def covers(granting: Scope, requested: Scope) -> bool:
    """Whether ``granting`` allows everything ``requested`` would allow (B14, B15).

    Used for down-scoping at the issuer and for token exchange, which never widens.

    Args:
        granting: a scope the subject holds or is entitled to.
        requested: a scope asked for.

    Returns:
        True when both have the same name (or ``granting`` is ``storage.modify`` and
        ``requested`` ``storage.create``, B8) and the requested path lies within the granting
        path by whole components; a directory-only granting path covers only paths strictly
        below it or itself as directory-only.  Path-less scopes, and path scopes of names
        without hierarchical meaning (e.g. ``wlcg.groups:/cms``, A9), cover only themselves.
    """
    if granting == requested:
        return True
    if granting.authz != requested.authz and (granting.authz, requested.authz) != (
        "storage.modify",
        "storage.create",
    ):
        # Families stay separate: write does not cover storage.*, read does not cover write.
        return False
    if granting.path is None or requested.path is None or granting.authz not in _SUBTREE_GRANTS:
        return False  # A9: wlcg.groups:/cms does not cover wlcg.groups:/cms/uscms
    if requested._exact == granting._exact:
        # Same path: a directory-only grant does not cover file operations on the path (B4).
        return not _is_dir_only(granting.path) or _is_dir_only(requested.path)
    return requested._exact.startswith(granting._prefix)


def narrow(requested: Sequence[Scope], allowed: Sequence[Scope]) -> tuple[Scope, ...]:
    """The requested scopes that some allowed scope covers, in request order, deduplicated.

    Args:
        requested: the scopes asked for (a down-scoping or token-exchange request).
        allowed: the scopes the subject holds or is entitled to.

    Returns:
        A subset of ``requested``; never anything ``allowed`` does not cover.
    """
    seen: set[Scope] = set()
    result: list[Scope] = []
    for scope in requested:
        if scope not in seen and any(covers(grant, scope) for grant in allowed):
            seen.add(scope)
            result.append(scope)
    return tuple(result)
