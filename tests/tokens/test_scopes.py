"""Scope grammar, path authorization, audience, covering (A6, A15, B1-B15, C1-C5, M1-M5, peers.md)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scitokens_batch.errors import ScopeError
from scitokens_batch.tokens._profiles import SCITOKENS_ANY_AUDIENCE, WLCG_ANY_AUDIENCE, Profile
from scitokens_batch.tokens._reasons import Reason, Rejection
from scitokens_batch.tokens._scopes import (
    Operation,
    Scope,
    audience_matches,
    authorize,
    covers,
    format_scopes,
    narrow,
    normalize_path,
    parse_scope,
    parse_scopes,
)
from tests.strategies import (
    PATH_AUTHZ,
    operations,
    path_scopes,
    paths,
    raw_paths,
    scope_paths,
    scopes,
    segments,
)

READ, STAT, CREATE, MKDIR, MODIFY, STAGE = (
    Operation.READ,
    Operation.STAT,
    Operation.CREATE,
    Operation.MKDIR,
    Operation.MODIFY,
    Operation.STAGE,
)
FILE_OPS = (READ, CREATE, MODIFY, STAGE)


def allowed(claim: str, op: Operation, path: str, base_path: str = "/") -> bool:
    """Whether the scopes of ``claim`` allow ``op`` on server path ``path``."""
    return authorize(parse_scopes(claim), op, path, base_path=base_path) is None


def granted_ops(claim: str, path: str, base_path: str = "/") -> set[Operation]:
    """Every operation the scopes of ``claim`` allow on ``path``."""
    return {op for op in Operation if allowed(claim, op, path, base_path)}


class TestParse:
    def test_path_scope(self) -> None:
        """B2: ``authz:path`` splits at the first ':' and prints back unchanged."""
        scope = parse_scope("storage.create:/data/run1")
        assert scope == Scope("storage.create", "/data/run1")
        assert str(scope) == "storage.create:/data/run1"

    @pytest.mark.parametrize("text", ["openid", "offline_access", "compute.read", "queue", "fts"])
    def test_pathless_scope(self, text: str) -> None:
        """B13, A15, K1: path-less scopes parse with path None and print as the bare name."""
        scope = parse_scope(text)
        assert scope == Scope(text, None)
        assert str(scope) == text

    @pytest.mark.parametrize(
        ("claim", "expected"),
        [
            ("", ()),
            ("   ", ()),
            ("read:/a", (Scope("read", "/a"),)),
            ("  read:/a    write:/b ", (Scope("read", "/a"), Scope("write", "/b"))),
        ],
    )
    def test_claim_is_space_separated(self, claim: str, expected: tuple[Scope, ...]) -> None:
        """A6: the scope claim is one space-separated string; empty gives no scopes."""
        assert parse_scopes(claim) == expected

    def test_claim_must_be_a_string(self) -> None:
        """A6: a JSON list in ``scope`` (the ``scp`` shape) is refused, naming the type."""
        with pytest.raises(ScopeError, match=r"expected a space-separated string.*list"):
            parse_scopes(["read:/a"])  # type: ignore[arg-type]

    def test_same_name_several_times(self) -> None:
        """B12: several scopes of the same name are allowed and all of them count."""
        held = parse_scopes("storage.create:/foo storage.create:/bar")
        assert len(held) == 2
        assert authorize(held, CREATE, "/foo/x") is None
        assert authorize(held, CREATE, "/bar/x") is None

    def test_format_round_trip(self) -> None:
        """A6: format_scopes joins with single spaces, in order, and parses back."""
        claim = "openid storage.read:/a storage.create:/b/ wlcg:1.0"
        assert format_scopes(parse_scopes("  " + claim.replace(" ", "   "))) == claim
        assert parse_scopes(format_scopes(parse_scopes(claim))) == parse_scopes(claim)

    @pytest.mark.parametrize(
        "text",
        [
            "read",
            "write",
            "read:",
            "storage.read",
            "storage.create",
            "storage.modify",
            "storage.stage",
            "storage.poll",
            "storage.read:",
        ],
    )
    def test_path_required(self, text: str) -> None:
        """B2, A15: read, write and every storage.* scope must carry a path (even just '/')."""
        with pytest.raises(ScopeError, match="expected"):
            parse_scope(text)

    @pytest.mark.parametrize("text", ["read:relative", "storage.read:data/x", "write:~/x"])
    def test_path_must_be_absolute(self, text: str) -> None:
        """B5, G10: a relative scope path is refused."""
        with pytest.raises(ScopeError, match="absolute"):
            parse_scope(text)

    @pytest.mark.parametrize(
        "text", ["compute.read:/x", "compute.cancel:/", "openid:/x", "queue:x", "offline_access:"]
    )
    def test_path_forbidden(self, text: str) -> None:
        """B13: compute.* (and queue, execute, openid, offline_access) carry no path."""
        with pytest.raises(ScopeError, match="B13"):
            parse_scope(text)

    @pytest.mark.parametrize(
        "text",
        [
            "read:/dir/../etc",  # peers.md "scope with .. inside base"
            "read:/../etc",  # peers.md "scope with .. above root" (cpp/XRootD crash)
            "read:/..",
            "storage.read:/./x",
            "storage.read:/dir/.",
            "read:/dir/%2e%2e/etc",  # percent-encoded forms (B5 URL-escaped paths)
            "read:/dir/%2E%2e/etc",
            "read:/dir/.%2e/etc",
            "read:/dir/%2e/etc",
            "read:/dir/%252e%252e/etc",  # double-encoded: a server that decodes twice
            "wlcg.groups:/cms/../atlas",
        ],
    )
    def test_traversal_in_scope_refused(self, text: str) -> None:
        """peers.md rule 7, G10: '.' or '..' in a scope path refuses the scope (python does)."""
        with pytest.raises(ScopeError, match="path traversal"):
            parse_scope(text)

    @pytest.mark.parametrize(
        "text",
        ["read:/a%2Fb", "read:/a%2f..%2fb", "read:/a%00b", "read:/a%0a", "read:/a%zz", "read:/a%4"],
    )
    def test_hostile_escapes_refused(self, text: str) -> None:
        """B5: an encoded '/' or control character, or a malformed escape, is refused."""
        with pytest.raises(ScopeError, match="expected"):
            parse_scope(text)

    @pytest.mark.parametrize("text", ["read:/a\x00b", "read:/a\tb", 'read:/a"b', "read:/caf\u00e9"])
    def test_characters_outside_rfc6749_refused(self, text: str) -> None:
        """B5 + RFC 6749 §3.3: NUL, controls, quotes and raw non-ASCII are refused."""
        with pytest.raises(ScopeError, match="RFC 6749"):
            parse_scope(text)

    def test_error_names_value_expected_received(self) -> None:
        """Errors name the scope, what was expected and what was received (errors.py)."""
        with pytest.raises(ScopeError) as info:
            parse_scope("storage.read:/data/../etc")
        message = str(info.value)
        assert "'storage.read:/data/../etc'" in message
        assert "expected" in message and "received" in message

    @pytest.mark.parametrize(
        "text", ["wlcg:1.0", "scim:read", "https://example.org/scope", "eduperson_entitlement"]
    )
    def test_unknown_scopes_are_kept_opaque(self, text: str) -> None:
        """A11, B14: unknown names with a non-path suffix are kept whole and grant nothing."""
        scope = parse_scope(text)
        assert scope == Scope(text, None)
        assert str(scope) == text
        assert all(authorize([scope], op, "/x") is not None for op in Operation)

    def test_unknown_name_with_path_is_split(self) -> None:
        """B14: ``wlcg.groups:/cms`` is a name plus a normalised path, and grants nothing (A10)."""
        scope = parse_scope("wlcg.groups:/cms//uscms")
        assert scope == Scope("wlcg.groups", "/cms/uscms")
        assert all(authorize([scope], op, "/cms/uscms/x") is not None for op in Operation)

    def test_path_is_normalised(self) -> None:
        """B5: scope paths are normalised on parse: '//' collapsed, escapes in RFC 3986 form."""
        assert parse_scope("storage.read://data//x") == Scope("storage.read", "/data/x")
        assert parse_scope("read:/a%7e%41%c3%a9") == Scope("read", "/a~A%C3%A9")

    @pytest.mark.parametrize(
        ("authz", "path"),
        [
            ("read", "/a//b"),
            ("read", "/a/../b"),
            ("read", "a"),
            ("read", None),
            ("read:/a", None),
            ("foo:/x", None),
            ("", None),
            ("read:x", "/y"),
            ("openid", "/"),
        ],
    )
    def test_constructor_validates(self, authz: str, path: str | None) -> None:
        """B2, B5, B13: Scope() itself refuses what parse_scope refuses: one spelling per scope."""
        with pytest.raises(ScopeError):
            Scope(authz, path)


class TestNormalizePath:
    @pytest.mark.parametrize(
        ("path", "normal"),
        [
            ("/", "/"),
            ("//", "/"),
            ("/a", "/a"),
            ("//a///b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/a/b//", "/a/b/"),
            ("/.hidden/..dots/.../x", "/.hidden/..dots/.../x"),
            ("/a%7E%2d", "/a~-"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/a%20b", "/a%20b"),
        ],
    )
    def test_normal_forms(self, path: str, normal: str) -> None:
        """B4, B5: absolute, '//' collapsed, trailing '/' kept, RFC 3986 §6 escapes."""
        assert normalize_path(path) == normal

    @pytest.mark.parametrize(
        "path", ["", "a", "a/b", "/a/../b", "/.", "/./a", "/a/.", "/%2E%2E", "/a\x00", "/a\nb"]
    )
    def test_refused(self, path: str) -> None:
        """B5, peers.md rule 7: relative, traversal and control characters are refused, named."""
        with pytest.raises(ScopeError) as info:
            normalize_path(path)
        assert repr(path) in str(info.value)

    @given(raw_paths())
    def test_idempotent(self, path: str) -> None:
        """B5: normalize_path either refuses a path or returns a fixed point of itself."""
        try:
            normal = normalize_path(path)
        except ScopeError:
            return
        assert normalize_path(normal) == normal
        assert normal.startswith("/") and "//" not in normal

    @given(paths())
    def test_normal_paths_unchanged(self, path: str) -> None:
        """B5: a path already in normal form is returned as is."""
        assert normalize_path(path) == path


class TestGrants:
    @pytest.mark.parametrize(
        ("claim", "ops"),
        [
            # A15, peers.md "read scope used for write": read never allows a PUT.
            ("read:/d", {READ, STAT}),
            # SciTokens write is upload with overwrite, and does not read.
            ("write:/d", {CREATE, MKDIR, MODIFY, STAT}),
            ("storage.read:/d", {READ, STAT}),
            # B7: create never overwrites, deletes or truncates (P4).
            ("storage.create:/d", {CREATE, MKDIR, STAT}),
            # B8: modify is a strict superset of create; B9: not read.
            ("storage.modify:/d", {CREATE, MKDIR, MODIFY, STAT}),
            # B10: stage is not read.
            ("storage.stage:/d", {STAGE, STAT}),
            # B1 (poll, v1.2) is not listed in B11's stat grant beyond stat itself.
            ("storage.poll:/d", {STAT}),
            # M2, B13, A10: scopes without storage meaning grant nothing.
            ("openid offline_access compute.read compute.modify queue execute fts", set()),
            ("wlcg.groups wlcg.groups:/d wlcg:1.0 condor:/d", set()),
        ],
    )
    def test_operations_per_scope(self, claim: str, ops: set[Operation]) -> None:
        """B7-B11, A15, M2: each scope name grants exactly its operations below its path."""
        assert granted_ops(claim, "/d/f") == ops
        assert granted_ops(claim, "/d/sub/f") == ops

    def test_hierarchical(self) -> None:
        """B3: storage.modify:/baz covers /baz/qux and storage.read:/home every /home/$USER."""
        assert allowed("storage.modify:/baz", MODIFY, "/baz/qux")
        assert allowed("storage.read:/home", READ, "/home/alice/deep/file")

    def test_root_scope_grants_everything(self) -> None:
        """P6, M3: storage.read:/ reaches every path, the root included; still never PUT."""
        for path in ("/", "/x", "/a/b/c"):
            assert allowed("storage.read:/", READ, path)
        assert not allowed("storage.read:/", CREATE, "/x")

    def test_per_component(self) -> None:
        """B4: storage.create:/foo/bar allows mkdir /foo, /foo/bar, /foo/bar/qux, not /foo/bargain."""
        claim = "storage.create:/foo/bar"
        assert allowed(claim, MKDIR, "/foo")
        assert allowed(claim, MKDIR, "/foo/bar")
        assert allowed(claim, CREATE, "/foo/bar")
        assert allowed(claim, CREATE, "/foo/bar/qux")
        assert allowed(claim, MKDIR, "/foo/bar/qux")
        assert not allowed(claim, CREATE, "/foo")  # "denies file /foo"
        assert not allowed(claim, CREATE, "/foo/bargain")
        assert not allowed(claim, MKDIR, "/foo/bargain")

    def test_directory_only(self) -> None:
        """B4: a trailing '/' means directory only: mkdir the path, files only below it."""
        claim = "storage.create:/foo/bar/"
        assert allowed(claim, MKDIR, "/foo/bar")
        assert allowed(claim, MKDIR, "/foo/bar/")
        assert allowed(claim, CREATE, "/foo/bar/x")
        assert not allowed(claim, CREATE, "/foo/bar")
        assert not allowed("storage.modify:/foo/bar/", MODIFY, "/foo/bar")
        assert not allowed("storage.read:/foo/bar/", READ, "/foo/bar")
        assert not allowed("storage.read:/foo/bar/", STAT, "/foo/bar")
        assert allowed("storage.read:/foo/bar/", READ, "/foo/bar/x")

    @pytest.mark.parametrize(
        "claim", ["write:/a/b/c", "storage.create:/a/b/c", "storage.modify:/a/b/c"]
    )
    def test_mkdir_of_ancestors_only(self, claim: str) -> None:
        """B4, B7, P5: create/modify/write allow mkdir of every ancestor, and nothing else there."""
        for ancestor in ("/", "/a", "/a/b"):
            assert granted_ops(claim, ancestor) == {MKDIR}
        assert not allowed(claim, MKDIR, "/a/bx")
        assert not allowed(claim, MKDIR, "/x")

    @pytest.mark.parametrize("claim", ["read:/a/b", "storage.read:/a/b", "storage.stage:/a/b"])
    def test_no_ancestor_grant_without_create(self, claim: str) -> None:
        """B4, B11: read and stage scopes grant nothing on ancestors, not even stat."""
        assert granted_ops(claim, "/a") == set()

    @pytest.mark.parametrize(
        "claim",
        ["read:/d", "write:/d", "storage.read:/d", "storage.create:/d", "storage.modify:/d"],
    )
    def test_stat_on_matching_paths(self, claim: str) -> None:
        """B11: read/create/modify/stage scopes also allow stat on matching paths."""
        assert allowed(claim, STAT, "/d")
        assert allowed(claim, STAT, "/d/f")
        assert not allowed(claim, STAT, "/dx")

    def test_both_families_together(self) -> None:
        """peers.md rule 6: SciTokens and WLCG names are honoured side by side in one token."""
        claim = "read:/sci storage.read:/wlcg"
        assert allowed(claim, READ, "/sci/f") and allowed(claim, READ, "/wlcg/f")

    def test_request_path_forms(self) -> None:
        """B5: a request path is normalised like a scope path ('//', trailing '/', escapes)."""
        assert allowed("read:/dir", READ, "/dir//sub/f/")
        assert allowed("read:/dir", READ, "/di%72/f")  # %72 is 'r', unreserved
        assert allowed("read:/a%20b", READ, "/a%20b/f")

    def test_rejection_value(self) -> None:
        """RFC 6750 §3.1: a denial is insufficient_scope (403), naming op, path and scopes."""
        held = parse_scopes("storage.create:/results openid")
        verdict = authorize(held, MODIFY, "/results/out.h5")
        assert isinstance(verdict, Rejection)
        assert verdict.reason is Reason.INSUFFICIENT_SCOPE and verdict.status == 403
        assert "modify" in verdict.detail and "/results/out.h5" in verdict.detail
        assert "storage.create:/results openid" in verdict.detail

    def test_no_scopes(self) -> None:
        """M2: a token without storage scopes is refused every operation."""
        verdict = authorize((), READ, "/x")
        assert verdict is not None and "(none)" in verdict.detail


class TestComplianceSuite:
    """The indigo-iam wlcg-jwt-compliance-tests shapes (M2-M5)."""

    def test_read_scope(self) -> None:
        """M3: storage.read:/ lets GET through (a missing file is then 404) but PUT is 403."""
        assert allowed("storage.read:/", READ, "/missing.txt")
        assert not allowed("storage.read:/", CREATE, "/new.txt")
        assert not allowed("storage.read:/", MODIFY, "/existing.txt")

    def test_create_scope(self) -> None:
        """M4, B7: storage.create:/ PUT new is 201, overwrite and DELETE are 403 (MODIFY)."""
        assert allowed("storage.create:/", CREATE, "/new.txt")
        assert not allowed("storage.create:/", MODIFY, "/new.txt")  # overwrite / DELETE
        assert allowed("storage.create:/", MKDIR, "/newdir")

    def test_modify_scope(self) -> None:
        """M4, B8, B9: storage.modify:/ PUT, DELETE and MKCOL pass; GET does not."""
        for op in (CREATE, MODIFY, MKDIR):
            assert allowed("storage.modify:/", op, "/x")
        assert not allowed("storage.modify:/", READ, "/x")

    def test_path_enforced(self) -> None:
        """M5: outside the scope is 403; storage.read:/foo never grants /foobar."""
        assert allowed("storage.read:/foo", READ, "/foo/x")
        assert not allowed("storage.read:/foo", READ, "/foobar")
        assert not allowed("storage.read:/foo", READ, "/foobar/x")
        assert not allowed("storage.read:/foo", READ, "/bar/x")

    def test_mkcol_under_partial_name(self) -> None:
        """M5: MKCOL under a directory that only shares a name prefix with the scope is 403."""
        assert not allowed("storage.modify:/foo", MKDIR, "/foobar/sub")
        assert not allowed("storage.modify:/foo", MKDIR, "/foobar")
        assert not allowed("storage.create:/foo/bar", MKDIR, "/fo")


class TestBasePath:
    def test_scope_relative_to_base(self) -> None:
        """B6, M1: issuer base /vo: storage.read:/ allows GET /vo/x, not /x."""
        assert allowed("storage.read:/", READ, "/vo/x", base_path="/vo")
        assert not allowed("storage.read:/", READ, "/x", base_path="/vo")

    def test_base_by_components(self) -> None:
        """B6, P1, P6: the base path is stripped by whole components: /vox is outside /vo."""
        assert not allowed("storage.read:/", READ, "/vox/y", base_path="/vo")
        verdict = authorize(parse_scopes("storage.read:/"), READ, "/vox/y", base_path="/vo")
        assert verdict is not None and "outside" in verdict.detail and "B6" in verdict.detail

    def test_scope_path_under_base(self) -> None:
        """B6, peers.md rule 6: XRootD maps read:/dir to <base_path>/dir."""
        assert allowed("read:/dir", READ, "/data/dir/file.txt", base_path="/data")
        assert not allowed("read:/dir", READ, "/dir/file.txt", base_path="/data")
        assert not allowed("read:/dir", READ, "/data/dirty/file.txt", base_path="/data")

    def test_base_itself_and_forms(self) -> None:
        """B6: the base directory is token path '/'; '/vo/' and '//vo' name the same base."""
        assert allowed("storage.read:/", STAT, "/vo", base_path="/vo")
        assert allowed("storage.create:/a", MKDIR, "/vo", base_path="/vo/")
        assert allowed("storage.read:/a", READ, "/vo/a/f", base_path="//vo")
        assert not allowed("storage.create:/a", MKDIR, "/", base_path="/vo")

    def test_deep_base(self) -> None:
        """B6: a base of several components is matched whole."""
        assert allowed("storage.read:/x", READ, "/srv/vo/x/f", base_path="/srv/vo")
        assert not allowed("storage.read:/x", READ, "/srv/vox/f", base_path="/srv/vo")

    def test_bad_base_is_a_config_error(self) -> None:
        """M1: a base path with traversal is a local configuration error, not a denial."""
        with pytest.raises(ScopeError, match="base_path"):
            authorize(parse_scopes("storage.read:/"), READ, "/vo/x", base_path="/vo/../etc")


class TestPeersTable:
    """peers.md "Generated interop table": every row we must refuse, refused without their bugs."""

    def test_prefix_confusion(self) -> None:
        """peers.md "prefix confusion /dir vs /dirty", P1, H10: read:/dir never grants /dirty."""
        assert not allowed("read:/dir", READ, "/dirty/file.txt")

    @pytest.mark.parametrize(
        "path",
        [
            "/dir/../etc/passwd",
            "/dir/./file.txt",
            "/dir/%2e%2e/etc/passwd",
            "/dir/%2E%2E/etc/passwd",
            "/dir/.%2e/etc/passwd",
            "/dir/%252e%252e/etc/passwd",
            "/dir/..",
            "dir/file.txt",
            "",
        ],
    )
    def test_request_path_traversal(self, path: str) -> None:
        """peers.md "request path traversal": '.', '..' or a relative path is a 403 (as XRootD)."""
        verdict = authorize(parse_scopes("read:/"), READ, path)
        assert verdict is not None
        assert verdict.reason is Reason.INSUFFICIENT_SCOPE and verdict.status == 403
        assert "path traversal" in verdict.detail

    @pytest.mark.parametrize("path", ["/dir/a\x00b", "/dir/a%00b", "/dir/a%2Fb", "/dir/100%"])
    def test_request_path_hostile_characters(self, path: str) -> None:
        """B5: NUL, encoded separators and malformed escapes in a request are refused (403)."""
        verdict = authorize(parse_scopes("read:/"), READ, path)
        assert verdict is not None and verdict.status == 403

    def test_dotdot_inside_scope(self) -> None:
        """peers.md "scope with .. inside base": read:/dir/../etc refuses the token (python does)."""
        with pytest.raises(ScopeError, match="path traversal"):
            parse_scopes("read:/dir/../etc")

    def test_dotdot_above_root(self) -> None:
        """peers.md "scope with .. above root": read:/../etc is refused (cpp/XRootD crash here)."""
        with pytest.raises(ScopeError, match="path traversal"):
            parse_scopes("openid read:/../etc")

    def test_read_scope_used_for_write(self) -> None:
        """peers.md "read scope used for write": a read scope never allows a PUT."""
        assert not allowed("read:/dir", CREATE, "/dir/new2.txt")
        assert not allowed("read:/dir", MODIFY, "/dir/new2.txt")

    def test_wlcg_storage_read(self) -> None:
        """peers.md "WLCG profile storage.read": storage.read:/dir reads /dir/file.txt."""
        assert allowed("storage.read:/dir", READ, "/dir/file.txt")

    def test_valid_read_and_write(self) -> None:
        """peers.md "valid read", "valid write": the everyday cases are allowed."""
        assert allowed("read:/dir", READ, "/dir/file.txt")
        assert allowed("write:/dir", CREATE, "/dir/new.txt")


class TestAudience:
    @pytest.mark.parametrize("profile", list(Profile))
    def test_exact_match(self, profile: Profile) -> None:
        """C2, C4: the audience is an exact string; one match in a list is enough."""
        server = {"https://storage.example", "https://redirector.example"}
        assert audience_matches("https://storage.example", server, profile)
        assert audience_matches(
            ["https://other.example", "https://storage.example"], server, profile
        )
        assert not audience_matches("https://other.example", server, profile)
        assert not audience_matches(["https://a.example", "https://b.example"], server, profile)

    @pytest.mark.parametrize(
        "aud",
        [
            "https://Storage.example",  # case-sensitive
            "https://storage.example/",  # no trailing slash (C2)
            "https://storage.example:443",  # no default port (C2)
            "storage.example",
            "",
        ],
    )
    def test_no_lenient_comparison(self, aud: str) -> None:
        """C2: no case folding, no trailing slash, no port normalisation, no empty audience."""
        assert not audience_matches(aud, ["https://storage.example"], Profile.WLCG)

    def test_uri_audience(self) -> None:
        """C3, J3: a non-HTTPS service matches its URI audience, e.g. condor://host:port."""
        server = ["condor://ce.example:9619"]
        assert audience_matches("condor://ce.example:9619", server, Profile.WLCG)
        assert not audience_matches("condor://ce.example", server, Profile.WLCG)

    def test_wlcg_any(self) -> None:
        """C1, H8: the WLCG any-audience matches any server, but only in a WLCG token."""
        server = ["https://storage.example"]
        assert audience_matches(WLCG_ANY_AUDIENCE, server, Profile.WLCG)
        assert not audience_matches(WLCG_ANY_AUDIENCE, server, Profile.SCITOKENS)

    def test_scitokens_any(self) -> None:
        """C5, G7, H8: ``ANY`` matches any server, but only in a SciTokens token."""
        server = ["https://storage.example"]
        assert audience_matches(SCITOKENS_ANY_AUDIENCE, server, Profile.SCITOKENS)
        assert audience_matches(["x", SCITOKENS_ANY_AUDIENCE], server, Profile.SCITOKENS)
        assert not audience_matches(SCITOKENS_ANY_AUDIENCE, server, Profile.WLCG)

    @pytest.mark.parametrize("profile", list(Profile))
    def test_server_without_real_audience(self, profile: Profile) -> None:
        """C5, G7: no audience, or only a wildcard, configured at the server never matches."""
        for server in ([], [""], [SCITOKENS_ANY_AUDIENCE], [WLCG_ANY_AUDIENCE]):
            assert not audience_matches(profile.any_audience, server, profile)
            assert not audience_matches(SCITOKENS_ANY_AUDIENCE, server, profile)
            assert not audience_matches(WLCG_ANY_AUDIENCE, server, profile)
            assert not audience_matches("https://storage.example", server, profile)

    def test_empty_token_audience_list(self) -> None:
        """C1: an empty aud list names no server."""
        assert not audience_matches([], ["https://storage.example"], Profile.WLCG)


class TestCovers:
    @pytest.mark.parametrize(
        ("granting", "requested"),
        [
            ("storage.read:/a", "storage.read:/a"),
            ("storage.read:/a", "storage.read:/a/b"),
            ("storage.read:/a", "storage.read:/a/"),
            ("storage.read:/", "storage.read:/anything/at/all"),
            ("storage.read:/a/", "storage.read:/a/b"),
            ("storage.read:/a/", "storage.read:/a/"),
            ("storage.modify:/a", "storage.create:/a/b"),  # B8
            ("storage.modify:/a", "storage.create:/a"),
            ("write:/a", "write:/a/b/"),
            ("openid", "openid"),
            ("wlcg.groups:/cms", "wlcg.groups:/cms"),
        ],
    )
    def test_covers(self, granting: str, requested: str) -> None:
        """B3, B4, B8, B14: a scope covers the same name below its path (modify covers create)."""
        assert covers(parse_scope(granting), parse_scope(requested))

    @pytest.mark.parametrize(
        ("granting", "requested"),
        [
            ("storage.read:/a", "storage.read:/ab"),  # P1: whole components
            ("storage.read:/a/b", "storage.read:/a"),  # never upwards
            ("storage.read:/a/", "storage.read:/a"),  # B4: dir-only does not cover the file
            ("storage.create:/a", "storage.modify:/a"),  # B8: modify is the bigger one
            ("write:/", "storage.create:/a"),  # families stay separate
            ("storage.modify:/", "write:/a"),
            ("storage.read:/", "read:/a"),
            ("read:/", "write:/a"),
            ("storage.read:/", "storage.stage:/a"),  # B10
            ("storage.stage:/", "storage.read:/a"),
            ("storage.modify:/", "storage.read:/a"),  # B9
            ("wlcg.groups:/cms", "wlcg.groups:/cms/uscms"),  # A9: groups are not paths
            ("openid", "offline_access"),
            ("compute.modify", "compute.read"),
            ("wlcg.groups", "wlcg.groups:/cms"),
        ],
    )
    def test_does_not_cover(self, granting: str, requested: str) -> None:
        """B4, B8-B10, A9, P1: no widening across names, upwards, across siblings or groups."""
        assert not covers(parse_scope(granting), parse_scope(requested))

    def test_narrow(self) -> None:
        """B15: narrow keeps the covered requests, in order, once each, and drops the rest."""
        requested = parse_scopes(
            "storage.read:/data/run1 storage.modify:/data openid storage.read:/data/run1 "
            "storage.create:/results/alice storage.read:/database"
        )
        allowed_scopes = parse_scopes("storage.read:/data storage.modify:/results openid")
        assert narrow(requested, allowed_scopes) == parse_scopes(
            "storage.read:/data/run1 openid storage.create:/results/alice"
        )
        assert narrow(requested, ()) == ()


class TestProperties:
    @given(
        authz=st.sampled_from(PATH_AUTHZ),
        parent=paths(max_depth=3),
        name=segments(),
        suffix=segments(),
        rest=paths(max_depth=2),
        dir_only=st.booleans(),
        op=operations(),
    )
    def test_sibling_prefix_never_granted(
        self,
        authz: str,
        parent: str,
        name: str,
        suffix: str,
        rest: str,
        dir_only: bool,
        op: Operation,
    ) -> None:
        """P1, M5, B4: a scope on .../a never grants .../a<suffix>, the sibling sharing a prefix."""
        base = parent.rstrip("/") + "/" + name
        scope = Scope(authz, base + "/" if dir_only else base)
        sibling = base + suffix + (rest if rest != "/" else "")
        assert authorize([scope], op, sibling) is not None
        assert not covers(scope, Scope(authz, sibling))

    @given(scopes())
    def test_parse_round_trip(self, scope: Scope) -> None:
        """A6, B5: parse_scope(str(s)) == s for every well-formed scope."""
        assert parse_scope(str(scope)) == scope

    @given(st.lists(scopes(), max_size=6))
    def test_claim_round_trip(self, held: list[Scope]) -> None:
        """A6: a claim formatted from scopes parses back to the same scopes, in order."""
        assert parse_scopes(format_scopes(held)) == tuple(held)

    @given(
        requested=st.lists(path_scopes("ab", 3), max_size=5),
        allowed_scopes=st.lists(path_scopes("ab", 3), max_size=4),
        op=operations(),
        path=paths("ab", max_depth=4),
    )
    def test_narrow_never_widens(
        self, requested: list[Scope], allowed_scopes: list[Scope], op: Operation, path: str
    ) -> None:
        """B15, "exchange never widens": what a narrowed scope allows, the allowed set allows."""
        narrowed = narrow(requested, allowed_scopes)
        assert set(narrowed) <= set(requested)
        for scope in narrowed:
            assert any(covers(grant, scope) for grant in allowed_scopes)
            if authorize([scope], op, path) is None:
                assert authorize(allowed_scopes, op, path) is None

    @given(
        held=st.lists(scopes("ab", 3), max_size=4),
        extra=st.lists(scopes("ab", 3), max_size=3),
        op=operations(),
        path=paths("ab", max_depth=4),
        base=st.sampled_from(["/", "/a", "/b/a"]),
    )
    def test_authorize_is_monotone(
        self, held: list[Scope], extra: list[Scope], op: Operation, path: str, base: str
    ) -> None:
        """B12: adding scopes, anywhere in the list, never turns an allowed access into a denial."""
        if authorize(held, op, path, base_path=base) is None:
            assert authorize(held + extra, op, path, base_path=base) is None
            assert authorize(extra + held, op, path, base_path=base) is None

    @given(scope=path_scopes("ab", 3), op=operations(), path=paths("ab", max_depth=4))
    def test_request_spelling_does_not_matter(self, scope: Scope, op: Operation, path: str) -> None:
        """B5: '//' and a trailing '/' in a request name the same path and get the same verdict."""
        verdict = authorize([scope], op, path) is None
        assert (authorize([scope], op, "/" + path + "/") is None) == verdict

    @given(scope=path_scopes("ab", 3), path=paths("ab", max_depth=4))
    def test_base_path_is_a_pure_shift(self, scope: Scope, path: str) -> None:
        """B6: under base /vo, server path /vo<p> gets exactly the verdict of token path <p>."""
        server_path = "/vo" + ("" if path == "/" else path)
        for op in Operation:
            assert (authorize([scope], op, server_path, base_path="/vo") is None) == (
                authorize([scope], op, path) is None
            )

    @given(scope=path_scopes("ab", 3), path=scope_paths("ab", max_depth=4))
    def test_stat_only_where_another_grant_reaches(self, scope: Scope, path: str) -> None:
        """B11: a scope allows stat only where it also allows another operation (poll aside)."""
        assume(path != "/")
        if authorize([scope], STAT, path) is None:
            others = {
                op for op in Operation if op is not STAT and authorize([scope], op, path) is None
            }
            assert others or scope.authz == "storage.poll"
