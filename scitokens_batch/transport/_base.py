"""The seam between actors and the network: one small Protocol (style.md practice 6).

Actors call :meth:`Transport.request` and register one handler each; they never touch channels,
sockets or HTTP. The in-memory network implements it in virtual time; the HTTP transport (live
mode) implements it over hypercorn and httpx.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..errors import SciTokensBatchError
from ..protocol import Message

__all__ = ["Handler", "Transport", "Unreachable"]

#: What an actor registers: takes a request message, returns a response message.
Handler = Callable[[Message], Awaitable[Message]]


class Unreachable(SciTokensBatchError, ConnectionError):
    """The destination did not answer: down, crashed, or partitioned away (connection refused).

    Attributes:
        dest: the actor that could not be reached.
        why: ``"down"`` or ``"partition"`` (live mode: also ``"timeout"``).
        detail: what the network layer said (live mode), for logs.
    """

    def __init__(self, src: str, dest: str, why: str, *, detail: str = "") -> None:
        self.src, self.dest, self.why, self.detail = src, dest, why, detail
        super().__init__(f"{src} -> {dest}: unreachable ({why})")


class Transport(Protocol):
    """How an actor talks to another actor by name."""

    async def request(self, src: str, dest: str, message: Message) -> Message:
        """Send ``message`` from ``src`` to ``dest`` and return the answer.

        Raises:
            Unreachable: when ``dest`` is down or partitioned from ``src``.
        """
        ...
