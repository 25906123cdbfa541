"""The seam between actors and the network (in-memory for virtual time; HTTP for live mode)."""

from ._base import Handler as Handler
from ._base import Transport as Transport
from ._base import Unreachable as Unreachable
from ._memory import InMemoryNetwork as InMemoryNetwork
from ._memory import NetworkStatistics as NetworkStatistics

__all__ = ["Handler", "InMemoryNetwork", "NetworkStatistics", "Transport", "Unreachable"]
