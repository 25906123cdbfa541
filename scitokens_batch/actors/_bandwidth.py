"""A link whose bandwidth is shared equally by the transfers in progress (processor sharing).

Every active transfer gets ``bandwidth / n`` bytes per second. Instead of recomputing every
transfer's finish time when ``n`` changes, the link keeps the *service per transfer* ``V(t)``
(bytes each active transfer has received since the link started): ``dV/dt = bandwidth / n``.
A transfer of ``size`` bytes that starts when ``V = v0`` ends when ``V = v0 + size``; that target
never changes, so a heap ordered by it gives the next finish in O(log n). One driver task sleeps
until the next finish; an arrival with an earlier target moves its deadline forward.
"""

from __future__ import annotations

import heapq
import math

import attrs
import trio

__all__ = ["LinkReset", "SharedLink"]


class LinkReset(Exception):
    """The link was reset (its server restarted) while this transfer was under way."""


@attrs.define
class _Flow:
    done: trio.Event = attrs.field(factory=trio.Event)
    reset: bool = False


@attrs.define
class SharedLink:
    """Processor-sharing bandwidth for one data server (design: "bandwidth shared by all").

    Args:
        bandwidth: bytes per second shared by all transfers.
    """

    bandwidth: float
    _v: float = attrs.field(default=0.0, alias="_v")
    _last: float = attrs.field(default=0.0, alias="_last")
    _heap: list[tuple[float, int, _Flow]] = attrs.field(factory=list, alias="_heap")
    _seq: int = attrs.field(default=0, alias="_seq")
    _wake: trio.CancelScope | None = attrs.field(default=None, alias="_wake")
    _bytes: float = attrs.field(default=0.0, alias="_bytes")

    def __attrs_post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s (got {self.bandwidth})")

    @property
    def active(self) -> int:
        """Transfers in progress."""
        return len(self._heap)

    def _advance(self, now: float) -> None:
        n = len(self._heap)
        if n:
            self._v += (now - self._last) * self.bandwidth / n
        self._last = now

    def _next_deadline(self) -> float:
        if not self._heap:
            return math.inf
        target = self._heap[0][0]
        return self._last + max(0.0, target - self._v) * len(self._heap) / self.bandwidth

    async def transfer(self, size: float) -> None:
        """Move ``size`` bytes; returns when they are through. Cancellation abandons the flow."""
        if size <= 0:
            return
        now = trio.current_time()
        self._advance(now)
        flow = _Flow()
        heapq.heappush(self._heap, (self._v + size, self._seq, flow))
        self._seq += 1
        if self._wake is not None:
            self._wake.deadline = min(self._wake.deadline, self._next_deadline())
        try:
            await flow.done.wait()
            if flow.reset:
                raise LinkReset
        except LinkReset:
            raise
        except BaseException:
            # Abandoned (job killed, server restarted): stop counting it in the share.
            if not flow.done.is_set():
                self._advance(trio.current_time())
                self._heap = [e for e in self._heap if e[2] is not flow]
                heapq.heapify(self._heap)
            raise
        self._bytes += size

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The driver: wakes each finishing transfer at its exact virtual time."""
        task_status.started()
        while True:
            with trio.CancelScope(deadline=self._next_deadline()) as scope:
                self._wake = scope
                await trio.sleep_forever()
            self._wake = None
            now = trio.current_time()
            self._advance(now)
            self._finish_due(now)

    def _finish_due(self, now: float) -> None:
        """Finish every flow whose target is reached, or whose remaining time cannot be
        represented: near a large clock value, ``now + remaining`` may round back to ``now``,
        and a driver waiting for that instant would spin without time ever moving."""
        while self._heap:
            target = self._heap[0][0]
            remaining = (target - self._v) * len(self._heap) / self.bandwidth
            if remaining > 0 and now + remaining > now:
                return
            _, _, flow = heapq.heappop(self._heap)
            flow.done.set()

    def reset(self) -> None:
        """Abort every transfer under way (a restart): each raises :class:`LinkReset`."""
        self._advance(trio.current_time())
        for _, _, flow in self._heap:
            flow.reset = True
            flow.done.set()
        self._heap.clear()
        if self._wake is not None:
            self._wake.deadline = self._next_deadline()

    @property
    def bytes_moved(self) -> float:
        """Bytes of finished transfers."""
        return self._bytes
