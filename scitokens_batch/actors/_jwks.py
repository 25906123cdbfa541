"""Fetching an issuer's keys for a verifier: one fetch per issuer at a time (single flight)."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from ..metrics import Recorder
from ..protocol import JwksRequest, JwksResponse
from ..tokens import NeedKeys, Verifier
from ..transport import Transport, Unreachable
from ._common import Clock

__all__ = ["fetch_jwks"]


async def fetch_jwks(
    need: NeedKeys,
    *,
    owner: str,
    verifier: Verifier,
    issuer_actors: Mapping[str, str],
    transport: Transport,
    clock: Clock,
    recorder: Recorder,
    running: dict[str, trio.Event],
) -> None:
    """Fetch ``need.issuer``'s JWKS through the transport and tell ``verifier`` the outcome.

    Callers that need the same issuer's keys while a fetch is under way wait for it instead of
    sending their own (``running`` holds the fetches under way, per issuer, for one owner). An
    issuer that cannot be reached, is not known, or answers something else is a failed fetch
    (the verifier's negative cache, P10). Records a ``jwks_fetch`` event.
    """
    waiting = running.get(need.issuer)
    if waiting is not None:
        await waiting.wait()
        return
    done = running[need.issuer] = trio.Event()
    try:
        ok = False
        actor = issuer_actors.get(need.issuer)
        if actor is not None:
            try:
                answer = await transport.request(owner, actor, JwksRequest(issuer=need.issuer))
            except Unreachable:
                answer = None
            if isinstance(answer, JwksResponse):
                verifier.keys_fetched(
                    need.issuer, answer.keys, now=clock(), unknown_kid=need.unknown_kid
                )
                ok = True
        if not ok:
            verifier.keys_failed(need.issuer, now=clock(), unknown_kid=need.unknown_kid)
        recorder.record(
            owner, "jwks_fetch", issuer=need.issuer, ok=ok, unknown_kid=need.unknown_kid
        )
    finally:
        del running[need.issuer]
        done.set()
