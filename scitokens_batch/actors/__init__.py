"""The actors, one module each, all the same shape: an attrs class with injected transport,
clock, RNG, recorder and logger, ``async def run(*, task_status)`` and ``async def handle(msg)``.
"""

from ._bandwidth import SharedLink as SharedLink
from ._common import HostClock as HostClock
from .data_manager import DataManager as DataManager
from .data_manager import Endpoint as Endpoint
from .data_manager import ReplicationRule as ReplicationRule
from .data_server import DataServer as DataServer
from .data_server import GroupArea as GroupArea
from .data_server import namespace as namespace
from .execute_host import ExecuteHost as ExecuteHost
from .execute_host import MemorySandbox as MemorySandbox
from .execute_host import Sandbox as Sandbox
from .execute_host import SandboxFactory as SandboxFactory
from .issuer import ClientPolicy as ClientPolicy
from .issuer import Issuer as Issuer
from .issuer import RegistrationPolicy as RegistrationPolicy
from .issuer import UserPolicy as UserPolicy
from .queue_manager import JobAd as JobAd
from .queue_manager import QueueManager as QueueManager
from .queue_manager import Submission as Submission
from .queue_manager import machine_ad as machine_ad
from .token_manager import Credential as Credential
from .token_manager import TokenManager as TokenManager
from .transfer_service import FileState as FileState
from .transfer_service import ManagedToken as ManagedToken
from .transfer_service import TransferService as TransferService

__all__ = [
    "ClientPolicy",
    "Credential",
    "DataManager",
    "DataServer",
    "Endpoint",
    "ExecuteHost",
    "FileState",
    "GroupArea",
    "HostClock",
    "Issuer",
    "JobAd",
    "ManagedToken",
    "MemorySandbox",
    "QueueManager",
    "RegistrationPolicy",
    "ReplicationRule",
    "Sandbox",
    "SandboxFactory",
    "SharedLink",
    "Submission",
    "TokenManager",
    "TransferService",
    "UserPolicy",
    "machine_ad",
    "namespace",
]
