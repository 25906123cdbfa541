"""Tests for WLCG bearer token discovery and ``.use`` parsing (conformance F1-F6, I2, P16).

Everything here is pure: the file system is a dict behind a fake ``read_file``.
"""

from __future__ import annotations

import errno
import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitokens_batch.errors import LocalInputError, TokenFormatError
from scitokens_batch.tokens._discovery import (
    MAX_TOKEN_FILE_SIZE,
    Discovered,
    DiscoveryError,
    TokenSource,
    discover,
    is_b64token,
    parse_condor_creds,
)

EUID = 1221
XDG = "/run/user/1221"
XDG_FILE = f"{XDG}/bt_u{EUID}"
TMP_FILE = f"/tmp/bt_u{EUID}"
TOKEN_FILE = "/home/alice/token"

# Distinct, valid tokens so a test can tell which step answered.
ENV_TOKEN = "env.token-value_1"
FILE_TOKEN = "file.token~value+2/"
XDG_TOKEN = "xdg.token.value3=="
TMP_TOKEN = "tmp.token.value4="

C99_WHITESPACE = " \f\n\r\t\v"
B64TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


@attrs.define
class FakeFiles:
    """A dict-backed ``read_file``: bytes are contents, an ``OSError`` is raised on read."""

    files: dict[str, bytes | OSError] = attrs.Factory(dict)
    reads: list[str] = attrs.Factory(list)

    def __call__(self, path: str) -> bytes:
        self.reads.append(path)
        content = self.files.get(path)
        if content is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if isinstance(content, OSError):
            raise content
        return content


def run(
    env: dict[str, str],
    files: dict[str, bytes | OSError] | None = None,
    *,
    purpose: str | None = None,
) -> tuple[Discovered | DiscoveryError | None, FakeFiles]:
    """Run discovery against a fake file system; return the result and the fake."""
    fake = FakeFiles(dict(files or {}))
    return discover(env, euid=EUID, read_file=fake, purpose=purpose), fake


ALL_SOURCES_ENV = {
    "BEARER_TOKEN": ENV_TOKEN,
    "BEARER_TOKEN_FILE": TOKEN_FILE,
    "XDG_RUNTIME_DIR": XDG,
}
ALL_SOURCES_FILES: dict[str, bytes | OSError] = {
    TOKEN_FILE: FILE_TOKEN.encode(),
    XDG_FILE: XDG_TOKEN.encode(),
    TMP_FILE: TMP_TOKEN.encode(),
}


class TestPrecedence:
    """F1: the four steps, in order."""

    def test_bearer_token_wins_and_reads_no_file(self) -> None:
        """BEARER_TOKEN is used before any file, and no file is even read (F1)."""
        result, fake = run(ALL_SOURCES_ENV, ALL_SOURCES_FILES)
        assert result == Discovered(ENV_TOKEN, TokenSource.BEARER_TOKEN, None)
        assert fake.reads == []

    def test_bearer_token_file_beats_runtime_dir_and_tmp(self) -> None:
        """BEARER_TOKEN_FILE comes second, before the XDG and /tmp files (F1)."""
        env = {k: v for k, v in ALL_SOURCES_ENV.items() if k != "BEARER_TOKEN"}
        result, fake = run(env, ALL_SOURCES_FILES)
        assert result == Discovered(FILE_TOKEN, TokenSource.BEARER_TOKEN_FILE, TOKEN_FILE)
        assert fake.reads == [TOKEN_FILE]

    def test_runtime_dir_beats_tmp(self) -> None:
        """$XDG_RUNTIME_DIR/bt_u$EUID comes third, before /tmp/bt_u$EUID (F1)."""
        result, fake = run({"XDG_RUNTIME_DIR": XDG}, ALL_SOURCES_FILES)
        assert result == Discovered(XDG_TOKEN, TokenSource.XDG_RUNTIME_DIR, XDG_FILE)
        assert fake.reads == [XDG_FILE]

    def test_tmp_is_the_last_resort(self) -> None:
        """/tmp/bt_u$EUID is used when no variable is set (F1)."""
        result, fake = run({}, ALL_SOURCES_FILES)
        assert result == Discovered(TMP_TOKEN, TokenSource.TMP, TMP_FILE)
        assert fake.reads == [TMP_FILE]

    def test_nothing_anywhere_gives_none(self) -> None:
        """Every step empty or missing gives None after trying each file once (F1, F5)."""
        result, fake = run({"BEARER_TOKEN_FILE": TOKEN_FILE, "XDG_RUNTIME_DIR": XDG})
        assert result is None
        assert fake.reads == [TOKEN_FILE, XDG_FILE, TMP_FILE]

    def test_file_names_use_the_given_euid(self) -> None:
        """The bt_u file names carry the euid passed in, not the test runner's (F1)."""
        fake = FakeFiles({"/tmp/bt_u0": b"root-token"})
        result = discover({"XDG_RUNTIME_DIR": "/run/user/0"}, euid=0, read_file=fake)
        assert result == Discovered("root-token", TokenSource.TMP, "/tmp/bt_u0")
        assert fake.reads == ["/run/user/0/bt_u0", "/tmp/bt_u0"]

    def test_trailing_slash_in_runtime_dir(self) -> None:
        """A trailing '/' in XDG_RUNTIME_DIR does not double the separator (F1)."""
        result, _ = run({"XDG_RUNTIME_DIR": XDG + "/"}, ALL_SOURCES_FILES)
        assert result == Discovered(XDG_TOKEN, TokenSource.XDG_RUNTIME_DIR, XDG_FILE)

    def test_negative_euid_is_refused(self) -> None:
        """A negative euid is a caller bug and raises LocalInputError (F1 "$ID")."""
        with pytest.raises(LocalInputError, match="euid"):
            discover({}, euid=-1, read_file=FakeFiles())


class TestWhitespace:
    """F2: strip C99 whitespace; blank falls through."""

    @pytest.mark.parametrize("value", ["", "   ", C99_WHITESPACE, "\n"])
    def test_blank_bearer_token_falls_through(self, value: str) -> None:
        """An empty or whitespace-only BEARER_TOKEN continues with the next step (F2)."""
        result, _ = run({"BEARER_TOKEN": value, "BEARER_TOKEN_FILE": TOKEN_FILE}, ALL_SOURCES_FILES)
        assert result == Discovered(FILE_TOKEN, TokenSource.BEARER_TOKEN_FILE, TOKEN_FILE)

    @pytest.mark.parametrize(
        ("blank_paths", "expected"),
        [
            ([TOKEN_FILE], Discovered(XDG_TOKEN, TokenSource.XDG_RUNTIME_DIR, XDG_FILE)),
            ([TOKEN_FILE, XDG_FILE], Discovered(TMP_TOKEN, TokenSource.TMP, TMP_FILE)),
            ([TOKEN_FILE, XDG_FILE, TMP_FILE], None),
        ],
    )
    def test_blank_file_falls_through(
        self, blank_paths: list[str], expected: Discovered | None
    ) -> None:
        """A whitespace-only token file continues with the next step (F2, F5)."""
        env = {"BEARER_TOKEN_FILE": TOKEN_FILE, "XDG_RUNTIME_DIR": XDG}
        files = dict(ALL_SOURCES_FILES)
        for path in blank_paths:
            files[path] = b" \n\t\r\n\v\f"
        result, _ = run(env, files)
        assert result == expected

    def test_empty_file_falls_through(self) -> None:
        """A zero-byte token file continues with the next step (F2, F5)."""
        result, _ = run({"XDG_RUNTIME_DIR": XDG}, {XDG_FILE: b"", TMP_FILE: b"t"})
        assert result == Discovered("t", TokenSource.TMP, TMP_FILE)

    def test_every_c99_space_is_stripped(self) -> None:
        """All six C99 isspace characters are stripped on both sides (F2)."""
        result, _ = run({"BEARER_TOKEN": f"{C99_WHITESPACE}{ENV_TOKEN}{C99_WHITESPACE}"})
        assert result == Discovered(ENV_TOKEN, TokenSource.BEARER_TOKEN, None)

    def test_trailing_crlf_in_a_file_is_stripped(self) -> None:
        """A token file ending in CR LF is fine: only an inner CR LF stops discovery (F2, F5)."""
        result, _ = run({}, {TMP_FILE: TMP_TOKEN.encode() + b"\r\n"})
        assert result == Discovered(TMP_TOKEN, TokenSource.TMP, TMP_FILE)

    def test_non_c99_space_is_not_stripped(self) -> None:
        """A no-break space (not C99 isspace) is not stripped, so the token is invalid (F2)."""
        result, _ = run({"BEARER_TOKEN": "\u00a0" + ENV_TOKEN})
        assert isinstance(result, DiscoveryError)
        assert "non-ASCII" in result.detail


class TestInvalidTokens:
    """F2: an invalid token stops discovery with an error; F5: CR LF and interior spaces."""

    def test_invalid_bearer_token_stops_before_files(self) -> None:
        """An invalid BEARER_TOKEN stops with an error and no file is tried (F2)."""
        result, fake = run({"BEARER_TOKEN": "not a token"}, ALL_SOURCES_FILES)
        assert isinstance(result, DiscoveryError)
        assert (result.source, result.path) == (TokenSource.BEARER_TOKEN, None)
        assert fake.reads == []

    def test_crlf_inside_a_file_stops(self) -> None:
        """An embedded CR LF stops discovery, even with a valid token in a later step (F5)."""
        env = {"XDG_RUNTIME_DIR": XDG}
        result, _ = run(env, {XDG_FILE: b"abc\r\ndef\n", TMP_FILE: TMP_TOKEN.encode()})
        assert isinstance(result, DiscoveryError)
        assert (result.source, result.path) == (TokenSource.XDG_RUNTIME_DIR, XDG_FILE)
        assert "CR LF" in result.detail

    @pytest.mark.parametrize("inner", [" ", "\t", "\n", "\v", "\f", "\r"])
    def test_interior_whitespace_stops(self, inner: str) -> None:
        """Any whitespace inside the stripped value makes the token invalid (F2, F5)."""
        result, _ = run({}, {TMP_FILE: f"abc{inner}def".encode()})
        assert isinstance(result, DiscoveryError)
        assert "whitespace" in result.detail

    @pytest.mark.parametrize(
        ("bad", "offset"),
        [("tok!en", 3), ("tok,en", 3), ("tok\x00en", 3), ("tök", 1), ('tok"en', 3)],
    )
    def test_invalid_character_stops(self, bad: str, offset: int) -> None:
        """A character outside the RFC 6750 b64token alphabet stops discovery at its offset (F2)."""
        result, _ = run({"BEARER_TOKEN": bad}, ALL_SOURCES_FILES)
        assert isinstance(result, DiscoveryError)
        assert f"offset {offset} " in result.detail

    def test_non_ascii_byte_in_file_stops(self) -> None:
        """A non-ASCII byte in a token file is invalid, whatever the locale (F2)."""
        result, _ = run({}, {TMP_FILE: b"abc\xffdef"})
        assert isinstance(result, DiscoveryError)
        assert "non-ASCII" in result.detail

    @pytest.mark.parametrize("bad", ["abc=def", "=abc", "==="])
    def test_misplaced_padding_stops(self, bad: str) -> None:
        """'=' is only allowed at the end, after at least one other character (F2, RFC 6750)."""
        result, _ = run({"BEARER_TOKEN": bad})
        assert isinstance(result, DiscoveryError)
        assert "'='" in result.detail

    def test_error_detail_never_contains_the_token(self) -> None:
        """The error detail names the problem but never repeats the token text (F2)."""
        secret = "SUPERSECRETPAYLOAD"
        for value in (f"{secret} x", f"{secret}\r\nx", f"{secret}!", f"{secret}=x"):
            result, _ = run({"BEARER_TOKEN": value})
            assert isinstance(result, DiscoveryError)
            assert secret not in result.detail
            assert secret not in repr(result)


class TestFileErrors:
    """F5: HTCondor's rules for token files."""

    def test_missing_bearer_token_file_falls_through(self) -> None:
        """ENOENT on BEARER_TOKEN_FILE continues with the next step (F5)."""
        env = {"BEARER_TOKEN_FILE": "/nonexistent", "XDG_RUNTIME_DIR": XDG}
        result, fake = run(env, ALL_SOURCES_FILES)
        assert result == Discovered(XDG_TOKEN, TokenSource.XDG_RUNTIME_DIR, XDG_FILE)
        assert fake.reads == ["/nonexistent", XDG_FILE]

    @pytest.mark.parametrize(
        "error",
        [
            PermissionError(errno.EACCES, "Permission denied"),
            IsADirectoryError(errno.EISDIR, "Is a directory"),
            OSError(errno.EIO, "Input/output error"),
        ],
    )
    def test_other_read_errors_stop(self, error: OSError) -> None:
        """EACCES, EISDIR or EIO on a token file stops with an error, not the next step (F5)."""
        files = dict(ALL_SOURCES_FILES)
        files[TOKEN_FILE] = error
        result, fake = run({"BEARER_TOKEN_FILE": TOKEN_FILE}, files)
        assert result == DiscoveryError(
            TokenSource.BEARER_TOKEN_FILE,
            TOKEN_FILE,
            f"cannot read token file: {error.strerror} (errno {error.errno})",
        )
        assert fake.reads == [TOKEN_FILE]

    def test_unreadable_runtime_dir_file_does_not_fall_back_to_tmp(self) -> None:
        """EACCES on $XDG_RUNTIME_DIR/bt_u$EUID stops; /tmp is not tried (F5)."""
        files: dict[str, bytes | OSError] = {
            XDG_FILE: PermissionError(errno.EACCES, "Permission denied"),
            TMP_FILE: b"t",
        }
        result, fake = run({"XDG_RUNTIME_DIR": XDG}, files)
        assert isinstance(result, DiscoveryError)
        assert (result.source, result.path) == (TokenSource.XDG_RUNTIME_DIR, XDG_FILE)
        assert fake.reads == [XDG_FILE]

    def test_file_of_16384_bytes_stops(self) -> None:
        """A token file of exactly 16384 bytes stops discovery (F5, may be truncated)."""
        result, _ = run({}, {TMP_FILE: b"a" * MAX_TOKEN_FILE_SIZE})
        assert isinstance(result, DiscoveryError)
        assert (result.source, result.path) == (TokenSource.TMP, TMP_FILE)
        assert "16384" in result.detail

    def test_size_limit_counts_whitespace_too(self) -> None:
        """The 16384-byte limit applies to the raw file, before stripping (F5)."""
        result, _ = run({}, {TMP_FILE: b"a" + b"\n" * (MAX_TOKEN_FILE_SIZE - 1)})
        assert isinstance(result, DiscoveryError)

    def test_file_of_16383_bytes_is_accepted(self) -> None:
        """A token file of 16383 bytes is under the limit and accepted (F5)."""
        token = "a" * (MAX_TOKEN_FILE_SIZE - 1)
        result, _ = run({}, {TMP_FILE: token.encode()})
        assert result == Discovered(token, TokenSource.TMP, TMP_FILE)


class TestPurpose:
    """F4: per-purpose token files."""

    def test_purpose_files_are_used(self) -> None:
        """With a purpose, steps 3 and 4 read bt_u$EUID-<purpose> (F4)."""
        files: dict[str, bytes | OSError] = {
            XDG_FILE: b"plain",
            f"{XDG_FILE}-fife-CMS": b"cms-token",
        }
        result, fake = run({"XDG_RUNTIME_DIR": XDG}, files, purpose="fife-CMS")
        assert result == Discovered(
            "cms-token", TokenSource.XDG_RUNTIME_DIR, f"{XDG_FILE}-fife-CMS"
        )
        assert fake.reads == [f"{XDG_FILE}-fife-CMS"]

    def test_purpose_tmp_file_and_no_fallback_to_plain_file(self) -> None:
        """A purpose never falls back to the plain bt_u$EUID file (F4: no picking among tokens)."""
        files: dict[str, bytes | OSError] = {XDG_FILE: b"plain", TMP_FILE: b"plain"}
        result, fake = run({"XDG_RUNTIME_DIR": XDG}, files, purpose="atlas")
        assert result is None
        assert fake.reads == [f"{XDG_FILE}-atlas", f"{TMP_FILE}-atlas"]
        files[f"{TMP_FILE}-atlas"] = b"atlas-token"
        result, _ = run({}, files, purpose="atlas")
        assert result == Discovered("atlas-token", TokenSource.TMP, f"{TMP_FILE}-atlas")

    def test_variables_still_win_over_purpose_files(self) -> None:
        """BEARER_TOKEN_FILE, set by a high-level tool for children, beats purpose files (F4)."""
        files = dict(ALL_SOURCES_FILES)
        files[f"{TMP_FILE}-cms"] = b"cms-token"
        result, _ = run({"BEARER_TOKEN_FILE": TOKEN_FILE}, files, purpose="cms")
        assert result == Discovered(FILE_TOKEN, TokenSource.BEARER_TOKEN_FILE, TOKEN_FILE)

    @pytest.mark.parametrize("purpose", ["", "a/b", "../x", "nul\x00"])
    def test_bad_purpose_is_refused(self, purpose: str) -> None:
        """A purpose that is not a file-name part raises LocalInputError (F4)."""
        with pytest.raises(LocalInputError, match="purpose"):
            run({}, purpose=purpose)


class TestSpecNotPythonQuirks:
    """F6: we follow the spec where python's SciToken.discover() does not."""

    def test_runtime_dir_set_but_file_missing_uses_tmp(self) -> None:
        """XDG_RUNTIME_DIR set without its bt_u file falls back to /tmp (F1, unlike F6)."""
        result, fake = run({"XDG_RUNTIME_DIR": XDG}, {TMP_FILE: TMP_TOKEN.encode()})
        assert result == Discovered(TMP_TOKEN, TokenSource.TMP, TMP_FILE)
        assert fake.reads == [XDG_FILE, TMP_FILE]

    @pytest.mark.parametrize("runtime_dir", ["", "relative/dir"])
    def test_empty_or_relative_runtime_dir_is_ignored(self, runtime_dir: str) -> None:
        """An empty or relative XDG_RUNTIME_DIR is ignored, as the XDG basedir spec says (F1)."""
        result, fake = run({"XDG_RUNTIME_DIR": runtime_dir}, {TMP_FILE: b"t"})
        assert result == Discovered("t", TokenSource.TMP, TMP_FILE)
        assert fake.reads == [TMP_FILE]

    def test_empty_bearer_token_file_is_unset(self) -> None:
        """An empty BEARER_TOKEN_FILE is skipped without a read (F1; HTCondor gets ENOENT)."""
        result, fake = run({"BEARER_TOKEN_FILE": ""}, {TMP_FILE: b"t"})
        assert result == Discovered("t", TokenSource.TMP, TMP_FILE)
        assert fake.reads == [TMP_FILE]


class TestValues:
    """The result types keep tokens out of logs."""

    def test_discovered_repr_hides_the_token(self) -> None:
        """repr() and str() of Discovered show source and path but never the token (F3 secrecy)."""
        found = Discovered("SECRET-TOKEN", TokenSource.TMP, TMP_FILE)
        for text in (repr(found), str(found)):
            assert "SECRET-TOKEN" not in text
            assert "TMP" in text
            assert TMP_FILE in text

    def test_results_are_frozen(self) -> None:
        """Discovered and DiscoveryError are immutable values (F1 results)."""
        found = Discovered("t", TokenSource.TMP, TMP_FILE)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            found.token = "other"  # type: ignore[misc]

    @pytest.mark.parametrize(
        "value",
        ["a", "abc.DEF-123_~+/", "a=", "abc==", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"],
    )
    def test_is_b64token_accepts(self, value: str) -> None:
        """is_b64token accepts the RFC 6750 §2.1 grammar (F2)."""
        assert is_b64token(value)

    @pytest.mark.parametrize("value", ["", "=", "a b", "a\n", "a=b", "é", "a!", "a\r\nb"])
    def test_is_b64token_rejects(self, value: str) -> None:
        """is_b64token rejects empty, whitespace, misplaced '=' and other characters (F2)."""
        assert not is_b64token(value)


class TestCondorCreds:
    """I2, P16: the two forms of $_CONDOR_CREDS/<svc>.use."""

    def test_json_form(self) -> None:
        """The JSON token response yields its access_token (I2, I12)."""
        content = json.dumps(
            {"access_token": "eyJ.abc.def", "expires_in": 1200, "token_type": "bearer"}
        ).encode()
        assert parse_condor_creds(content + b"\n") == "eyJ.abc.def"

    def test_raw_form(self) -> None:
        """A bare token + newline (Vault, LOCAL_CREDMON_TOKEN_USE_JSON=False) is read (I2, P16)."""
        assert parse_condor_creds(b"eyJ.abc.def\n") == "eyJ.abc.def"

    @pytest.mark.parametrize(
        ("content", "match"),
        [
            (b"", "empty"),
            (b" \n", "empty"),
            (b"not a token\n", "whitespace"),
            (b"tok!en", "character"),
            (b"\xff\xfe", "UTF-8"),
            (b'{"access_token": ', "not valid JSON"),
            (b'{"refresh_token": "r"}', "no 'access_token'"),
            (b'{"access_token": 42}', "must be a string"),
            (b'{"access_token": "a b"}', "whitespace"),
            (b'["eyJ.abc.def"]', "character"),
        ],
    )
    def test_garbage_raises(self, content: bytes, match: str) -> None:
        """Content that is neither form raises TokenFormatError saying why (I2)."""
        with pytest.raises(TokenFormatError, match=match):
            parse_condor_creds(content)

    def test_errors_never_quote_the_token(self) -> None:
        """TokenFormatError messages and their chains never contain the token text (I2)."""
        secret = "SUPERSECRETPAYLOAD"
        contents = [
            f'{{"access_token": "{secret}", '.encode(),
            f'{{"access_token": "{secret} x"}}'.encode(),
            f"{secret} x\n".encode(),
        ]
        for content in contents:
            with pytest.raises(TokenFormatError) as info:
                parse_condor_creds(content)
            assert secret not in str(info.value)
            # No chained JSONDecodeError either: its .doc holds the whole file.
            assert info.value.__cause__ is None
            assert info.value.__context__ is None or info.value.__suppress_context__


# --- Property -----------------------------------------------------------------------------------

b64tokens = st.builds(
    lambda body, pad: body + pad,
    st.text(alphabet=B64TOKEN_CHARS, min_size=1, max_size=300),
    st.text(alphabet="=", max_size=3),
)
paddings = st.text(alphabet=C99_WHITESPACE, max_size=20)


@given(
    token=b64tokens,
    left=paddings,
    right=paddings,
    step=st.sampled_from(list(TokenSource)),
)
def test_any_padded_b64token_is_found_exactly(
    token: str, left: str, right: str, step: TokenSource
) -> None:
    """For any b64token and any C99 whitespace padding, each step finds exactly that token (F2)."""
    padded = f"{left}{token}{right}"
    env: dict[str, str] = {}
    files: dict[str, bytes | OSError] = {}
    path: str | None = None
    if step is TokenSource.BEARER_TOKEN:
        env["BEARER_TOKEN"] = padded
    elif step is TokenSource.BEARER_TOKEN_FILE:
        env["BEARER_TOKEN_FILE"] = path = TOKEN_FILE
        files[TOKEN_FILE] = padded.encode()
    elif step is TokenSource.XDG_RUNTIME_DIR:
        env["XDG_RUNTIME_DIR"] = XDG
        files[path := XDG_FILE] = padded.encode()
    else:
        files[path := TMP_FILE] = padded.encode()
    assert is_b64token(token)
    result, _ = run(env, files)
    assert result == Discovered(token, step, path)
