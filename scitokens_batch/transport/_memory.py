"""The in-memory network for virtual time: direct calls, latency as a sleep, and faults.

A request costs one ``trio.sleep(latency)`` (when the link has latency) and one call of the
destination's handler, nothing else: no channels and no extra tasks. perf-notes.md measured a
round trip through trio memory channels at about 22 k/s, a cost a million data accesses cannot
afford; a direct ``await handler(message)`` keeps the same semantics (the caller waits for the
answer, the handler runs in the caller's task, cancellation propagates) at the cost of a call.

Faults: an actor can be *down* (every request to it fails at once, like a refused connection)
and two actors can be *partitioned* (requests between them fail in both directions).
"""

from __future__ import annotations

import attrs

from .._vtime import sleep
from ..protocol import Message
from ._base import Handler, Unreachable

__all__ = ["InMemoryNetwork", "NetworkStatistics"]


@attrs.frozen
class NetworkStatistics:
    """Counters of an in-memory network."""

    requests: int
    """Requests delivered to a handler."""
    refused: int
    """Requests that failed because the destination was down or partitioned away."""


@attrs.define
class InMemoryNetwork:
    """Actors by name, with per-destination latency, downtime and partitions."""

    _handlers: dict[str, Handler] = attrs.field(factory=dict, alias="_handlers")
    _latency: dict[str, float] = attrs.field(factory=dict, alias="_latency")
    _down: set[str] = attrs.field(factory=set, alias="_down")
    _cut: set[frozenset[str]] = attrs.field(factory=set, alias="_cut")
    _requests: int = attrs.field(default=0, alias="_requests")
    _refused: int = attrs.field(default=0, alias="_refused")

    def register(self, name: str, handler: Handler, *, latency: float = 0.0) -> None:
        """Make ``name`` reachable; each request to it takes ``latency`` seconds (round trip)."""
        if name in self._handlers:
            raise ValueError(f"actor {name!r} is already registered")
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds (got {latency})")
        self._handlers[name] = handler
        self._latency[name] = latency

    def set_down(self, name: str, down: bool) -> None:
        """Take ``name`` off the network (``True``) or put it back."""
        self._require(name)
        if down:
            self._down.add(name)
        else:
            self._down.discard(name)

    def is_down(self, name: str) -> bool:
        """Whether ``name`` is currently down."""
        return name in self._down

    def set_partition(self, a: str, b: str, cut: bool) -> None:
        """Cut (``True``) or heal the link between ``a`` and ``b``, both directions."""
        self._require(a)
        self._require(b)
        pair = frozenset((a, b))
        if cut:
            self._cut.add(pair)
        else:
            self._cut.discard(pair)

    async def request(self, src: str, dest: str, message: Message) -> Message:
        """Deliver ``message`` to ``dest``'s handler after its latency; see :class:`Transport`."""
        handler = self._handlers.get(dest)
        if handler is None:
            raise ValueError(f"no actor named {dest!r} on the network")
        if dest in self._down:
            self._refused += 1
            raise Unreachable(src, dest, "down")
        if self._cut and frozenset((src, dest)) in self._cut:
            self._refused += 1
            raise Unreachable(src, dest, "partition")
        latency = self._latency[dest]
        if latency:
            await sleep(latency)
            # The destination may have gone down while the request was on the wire.
            if dest in self._down:
                self._refused += 1
                raise Unreachable(src, dest, "down")
        self._requests += 1
        return await handler(message)

    def statistics(self) -> NetworkStatistics:
        """Counters since creation."""
        return NetworkStatistics(requests=self._requests, refused=self._refused)

    def _require(self, name: str) -> None:
        if name not in self._handlers:
            raise ValueError(f"no actor named {name!r} on the network")
