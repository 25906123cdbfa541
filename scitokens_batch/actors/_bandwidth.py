"""A link whose bandwidth is shared equally by the transfers in progress (processor sharing).

Every active transfer gets ``bandwidth / n`` bytes per second. Instead of recomputing every
transfer's progress when ``n`` changes, the link keeps the *service per transfer* ``V(t)``
(bytes each active transfer has received since the link started): ``dV/dt = bandwidth / n``.
A transfer of ``size`` bytes that starts when ``V = v0`` ends when ``V = v0 + size``; that target
never changes. Each transfer sleeps on its own timer (``_vtime.Timer``) until the instant
``V`` reaches its target; when ``n`` changes (an arrival or a departure) the link moves the
deadlines of the transfers under way. One wake-up per transfer, no helper task and no cancel
scope: a wake-up is the largest cost of an access once signatures are memoised.
"""

from __future__ import annotations

import attrs
import trio

from .._vtime import Timer

__all__ = ["LinkReset", "SharedLink"]


class LinkReset(Exception):
    """The link was reset (its server restarted) while this transfer was under way."""


@attrs.define(eq=False)
class _Flow:
    target: float
    timer: Timer
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
    _flows: list[_Flow] = attrs.field(factory=list, alias="_flows")
    _bytes: float = attrs.field(default=0.0, alias="_bytes")

    def __attrs_post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s (got {self.bandwidth})")

    @property
    def active(self) -> int:
        """Transfers in progress."""
        return len(self._flows)

    def _advance(self, now: float) -> None:
        n = len(self._flows)
        if n:
            self._v += (now - self._last) * self.bandwidth / n
        self._last = now

    def _deadline(self, flow: _Flow) -> float:
        """When ``V`` reaches ``flow``'s target at the current share."""
        return self._last + max(0.0, flow.target - self._v) * len(self._flows) / self.bandwidth

    def _retime(self, skip: _Flow | None = None) -> None:
        """Move every sleeping transfer's deadline (but ``skip``'s) to when ``V`` reaches its
        target: the share changed."""
        per_byte = len(self._flows) / self.bandwidth
        for f in self._flows:
            if f is not skip and f.timer.waiting:  # a woken flow recomputes its own
                f.timer.set(self._last + max(0.0, f.target - self._v) * per_byte)

    async def transfer(self, size: float) -> None:
        """Move ``size`` bytes; returns when they are through.

        Raises:
            LinkReset: the link was reset meanwhile (cancellation also abandons the flow).
        """
        if size <= 0:
            return
        # The run's clock, read directly: trio.current_time() is three calls deep.
        clock = trio.lowlevel.current_clock().current_time
        self._advance(clock())
        flow = _Flow(self._v + size, Timer())
        self._flows.append(flow)
        try:
            while True:
                # The share of every flow changed (or, after an early wake-up, the others'
                # deadlines are recomputed from the new V, as they always were).
                self._retime(skip=flow)
                flow.timer.set(self._deadline(flow))
                await flow.timer.wait()
                if flow.reset:
                    raise LinkReset
                now = clock()
                self._advance(now)
                remaining = (flow.target - self._v) * len(self._flows) / self.bandwidth
                # Done, or a remainder the clock cannot represent (near a large clock value
                # now + remaining == now: waiting for it would spin at one instant forever).
                if remaining <= 0 or now + remaining <= now:
                    break
        finally:
            if not flow.reset:
                self._advance(clock())
                self._flows.remove(flow)
                if self._flows:
                    self._retime()  # the others speed up
        self._bytes += size

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to drive: transfers time themselves. Kept so a server's ``run`` has a body."""
        task_status.started()
        await trio.sleep_forever()

    def reset(self) -> None:
        """Abort every transfer under way (a restart): each raises :class:`LinkReset`."""
        for flow in self._flows:
            flow.reset = True
            flow.timer.fire()
        self._flows.clear()
        self._advance(trio.current_time())

    @property
    def bytes_moved(self) -> float:
        """Bytes of finished transfers."""
        return self._bytes
