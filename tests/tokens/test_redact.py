"""Redaction by shape (tokens/_redact.py): JWTs and opaque secrets never pass, values are bounded."""

from __future__ import annotations

from scitokens_batch.tokens import bound, redact, redact_event_dict, short_hash
from scitokens_batch.tokens._redact import EVENT_LIMIT, bound_fields

JWT = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6InZvLTEifQ"
    ".eyJzdWIiOiJhbGljZSIsInNjb3BlIjoicmVhZDovZGF0YSJ9"
    ".c2lnbmF0dXJlLWJ5dGVzLXRoYXQtYXJlLXNlY3JldA"
)


def test_jwt_becomes_a_hash_marker() -> None:
    """A JWT anywhere in a text is replaced by <jwt sha256:...> with its short hash."""
    text = redact(f"unknown client '{JWT}' here")
    assert JWT not in text and "eyJ" not in text
    assert f"<jwt sha256:{short_hash(JWT)}>" in text


def test_opaque_secrets_are_redacted() -> None:
    """Refresh tokens, device codes and client secrets of ours are replaced as well."""
    text = redact(
        "rt-AAAAAAAAAAAAAAAAAAAAAAAA and dc-BBBBBBBBBBBBBBBBBBBBBBBB cs-CCCCCCCCCCCCCCCCCC"
    )
    assert "rt-AAAA" not in text and "dc-BBBB" not in text and "cs-CCCC" not in text


def test_control_characters_are_escaped() -> None:
    """A newline or an escape sequence cannot forge a log line or drive a terminal."""
    assert redact("a\nb\x1b[31m") == "a\\nb\\x1b[31m"


def test_bound_keeps_a_short_prefix() -> None:
    """A 900 kB value is cut to the limit and says how much was left out."""
    text = bound("x" * 900_000, 64)
    assert text.startswith("x" * 64) and text.endswith("(+899936 chars)")
    assert len(text) < 100


def test_bound_of_a_cut_jwt_shows_none_of_it() -> None:
    """A JWT longer than the window is still redacted, not shown in part."""
    text = bound(JWT * 10, 64)
    assert "eyJ" not in text and "c2lnbmF0dXJl" not in text


def test_short_plain_values_are_unchanged() -> None:
    """Client ids, scopes and audiences pass as they are."""
    for value in ("token_manager", "read:/data write:/out", "https://storage.example"):
        assert bound(value, 64) == value


def test_log_processor_cleans_every_value() -> None:
    """The structlog processor redacts strings in values, lists and nested dicts."""
    event = redact_event_dict(None, "info", {"event": JWT, "x": [JWT], "y": {"z": JWT}})
    assert JWT not in repr(event)


def test_event_fields_are_bounded() -> None:
    """Event fields are bounded to EVENT_LIMIT and keep their types otherwise."""
    fields = {"grant": "g" * 900_000, "aud": ("a", JWT), "n": 3}
    bound_fields(fields)
    assert len(fields["grant"]) < EVENT_LIMIT + 30
    assert isinstance(fields["aud"], tuple) and JWT not in fields["aud"]
    assert fields["n"] == 3
