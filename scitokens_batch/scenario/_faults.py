"""Fault injection: each fault of the scenario begins at ``at`` and, if it lasts, ends later.

Every fault records ``fault`` events (phase ``start`` and, when it ends, ``end``) so that the
report can mark them. A fault at ``at = 0`` is applied before any actor starts: it is in effect
for the very first request (for example an issuer that is down when the pool starts).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import trio

from ._spec import (
    ClockStep,
    DataServerRestart,
    ExecuteHostCrash,
    Fault,
    IssuerOutage,
    KeyRotation,
    Partition,
    RefreshTokenRestore,
    RefreshTokenRevoked,
    TokenManagerCrash,
    TransferServiceStateLoss,
)
from ._world import World, issuer_key

__all__ = ["begin_fault", "end_fault", "run_fault"]


def _fields(fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in attrs.fields(type(fault)):
        v = getattr(fault, a.name)
        if isinstance(v, enum.Enum):
            v = v.value
        out[a.name] = list(v) if isinstance(v, tuple) else v
    return out


def _members(world: World, name: str) -> tuple[str, ...]:
    """An actor name, or every host of a host group."""
    return world.spec.resolve_hosts(name) or (name,)


def begin_fault(world: World, fault: Fault) -> float | None:
    """Apply ``fault`` now; returns how long until :func:`end_fault`, or None if it is final."""
    world.recorder.record("world", "fault", fault=fault.kind, phase="start", **_fields(fault))
    net = world.network
    if isinstance(fault, IssuerOutage):
        net.set_down(fault.issuer, True)
        return fault.duration
    if isinstance(fault, KeyRotation):
        issuer = world.issuers[fault.issuer]
        keys = issuer.keys.keys()
        issuer.rotate_key(
            issuer_key(keys[0].alg, world.seed, fault.issuer, len(keys) + 1),
            publish_ahead=fault.publish_ahead,
        )
        return None
    if isinstance(fault, ClockStep):
        for host in world.spec.resolve_hosts(fault.host) or (fault.host,):
            world.host_clocks[host].skew += fault.offset  # data servers have a clock there too
        return None
    if isinstance(fault, RefreshTokenRevoked):
        targets = [fault.issuer] if fault.issuer else sorted(world.issuers)
        for name in targets:
            if fault.user in world.issuers[name].users:
                world.issuers[name].revoke_user(fault.user)
        return None
    if isinstance(fault, TokenManagerCrash):
        net.set_down(world.token_manager.name, True)
        world.stop_token_manager()
        world.token_manager.crash(lose_state=fault.lose_state)
        return fault.restart_after
    if isinstance(fault, ExecuteHostCrash):
        for name in world.spec.resolve_hosts(fault.host):
            net.set_down(name, True)
            world.hosts[name].crash()
            world.queue_manager.host_down(name, reason=f"{name} crashed")
        return fault.restart_after
    if isinstance(fault, DataServerRestart):
        net.set_down(fault.server, True)
        world.data_servers[fault.server].restart()
        return fault.downtime
    if isinstance(fault, Partition):
        a, b = fault.between
        for x in _members(world, a):
            for y in _members(world, b):
                net.set_partition(x, y, True)
        return fault.duration
    if isinstance(fault, TransferServiceStateLoss):
        assert world.transfer_service is not None  # the loader checked it
        world.transfer_service.lose_refresh_tokens(
            backup=fault.restore is RefreshTokenRestore.BACKUP
        )
        return None
    raise AssertionError(f"unknown fault {fault!r}")  # the loader builds only the kinds above


def end_fault(world: World, fault: Fault, nursery: trio.Nursery) -> None:
    """Undo a lasting fault: the issuer is back, the host restarted, the partition healed."""
    net = world.network
    if isinstance(fault, IssuerOutage):
        net.set_down(fault.issuer, False)
    elif isinstance(fault, TokenManagerCrash):
        world.token_manager.restarted()
        net.set_down(world.token_manager.name, False)
        world.restart_token_manager(nursery)
    elif isinstance(fault, ExecuteHostCrash):
        for name in world.spec.resolve_hosts(fault.host):
            net.set_down(name, False)
            world.queue_manager.host_up(name)
    elif isinstance(fault, DataServerRestart):
        net.set_down(fault.server, False)
    elif isinstance(fault, Partition):
        a, b = fault.between
        for x in _members(world, a):
            for y in _members(world, b):
                net.set_partition(x, y, False)
    world.recorder.record("world", "fault", fault=fault.kind, phase="end")


async def run_fault(
    world: World, fault: Fault, nursery: trio.Nursery, t0: float, *, begun: float | None = None
) -> None:
    """Wait for the fault's time, begin it, and end it when its duration is over.

    Args:
        begun: the fault was already begun (at t=0, before the actors started) and lasts this
            long; only the end is left to do.
    """
    duration = begun
    if duration is None:
        await trio.sleep_until(t0 + fault.at)
        duration = begin_fault(world, fault)
        if duration is None:
            return
    await trio.sleep_until(t0 + fault.at + duration)
    end_fault(world, fault, nursery)
