"""Deeply nested JSON from a peer is refused like any other bad body, never a RecursionError."""

from __future__ import annotations

import pytest

from scitokens_batch.protocol import OAuthError
from scitokens_batch.protocol._wire import WireError, decode_rpc, decode_token_response

DEEP = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"


def test_deep_rpc_envelope_is_a_wire_error() -> None:
    """An RPC body nesting JSON 5,000 deep is a WireError naming the envelope."""
    with pytest.raises(WireError):
        decode_rpc(DEEP)


def test_deep_token_response_is_not_a_crash() -> None:
    """A token endpoint answering deeply nested JSON is an OAuthError value (or, with status
    200, the WireError of a 200 without access_token), never a RecursionError."""
    assert isinstance(decode_token_response(400, DEEP), OAuthError)
    with pytest.raises(WireError, match="access_token"):
        decode_token_response(200, DEEP)
