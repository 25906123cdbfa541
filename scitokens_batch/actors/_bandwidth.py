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
    #: target -> the transfers under way with that target, which share one timer: transfers
    #: that start together with the same size (the jobs a negotiation cycle started, in lock
    #: step) are due at the same instant whatever the share, so one deadline serves them all
    _by_target: dict[float, list[_Flow]] = attrs.field(factory=dict, alias="_by_target")
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
        # The same expression as _retime's, to the last bit: transfers that share a timer must
        # compute one deadline, whichever of them computes it.
        per_byte = len(self._flows) / self.bandwidth
        return self._last + max(0.0, flow.target - self._v) * per_byte

    def _retime(self) -> None:
        """Move every sleeping transfer's deadline to when ``V`` reaches its target: the share
        changed. One move per distinct target (its transfers share a timer), not per transfer:
        with a timer each, k transfers starting together cost k(k+1)/2 moves."""
        per_byte = len(self._flows) / self.bandwidth
        for target, group in self._by_target.items():
            due = self._last + max(0.0, target - self._v) * per_byte
            timer = group[0].timer
            if timer.fast:
                if timer.waiting:  # a woken group recomputes its own
                    timer.set(due)
                continue
            for f in group:  # fallback timers wake one task each
                if f.timer.waiting:
                    f.timer.set(due)

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
        target = self._v + size
        group = self._by_target.get(target)
        if group is not None and group[0].timer.fast:
            flow = _Flow(target, group[0].timer)  # due with them, whatever the share
            group.append(flow)
        else:
            flow = _Flow(target, Timer())
            if group is None:
                self._by_target[target] = [flow]
            else:
                group.append(flow)  # the fallback timer wakes one task: a timer each
        self._flows.append(flow)
        try:
            while True:
                # The share of every flow changed (or, after an early wake-up, the others'
                # deadlines are recomputed from the new V, as they always were).
                self._retime()
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
                group = self._by_target[flow.target]
                group.remove(flow)
                if not group:
                    del self._by_target[flow.target]
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
        self._by_target.clear()
        self._advance(trio.current_time())

    @property
    def bytes_moved(self) -> float:
        """Bytes of finished transfers."""
        return self._bytes
