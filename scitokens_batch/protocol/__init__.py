"""Pure protocol pieces: messages, the job state table, back-off. No I/O, no clock."""

from . import _rpcauth as rpcauth
from . import _wire as wire
from ._backoff import Backoff as Backoff
from ._jobs import EVENT_TYPES as EVENT_TYPES
from ._jobs import TRANSITIONS as TRANSITIONS
from ._jobs import Evict as Evict
from ._jobs import Execute as Execute
from ._jobs import Hold as Hold
from ._jobs import HoldCode as HoldCode
from ._jobs import JobEvent as JobEvent
from ._jobs import JobLifecycle as JobLifecycle
from ._jobs import JobState as JobState
from ._jobs import JobStateError as JobStateError
from ._jobs import Match as Match
from ._jobs import Release as Release
from ._jobs import Remove as Remove
from ._jobs import Submit as Submit
from ._jobs import Terminate as Terminate
from ._messages import CLIENT_AUTH_BASIC as CLIENT_AUTH_BASIC
from ._messages import CLIENT_AUTH_NONE as CLIENT_AUTH_NONE
from ._messages import CLIENT_AUTH_POST as CLIENT_AUTH_POST
from ._messages import GRANT_AUTHORIZATION_CODE as GRANT_AUTHORIZATION_CODE
from ._messages import GRANT_CLIENT_CREDENTIALS as GRANT_CLIENT_CREDENTIALS
from ._messages import GRANT_DEVICE_CODE as GRANT_DEVICE_CODE
from ._messages import GRANT_REFRESH as GRANT_REFRESH
from ._messages import GRANT_TOKEN_EXCHANGE as GRANT_TOKEN_EXCHANGE
from ._messages import NAME_PATTERN as NAME_PATTERN
from ._messages import TOKEN_TYPE_ACCESS as TOKEN_TYPE_ACCESS
from ._messages import TOKEN_TYPE_JWT as TOKEN_TYPE_JWT
from ._messages import TOKEN_TYPE_REFRESH as TOKEN_TYPE_REFRESH
from ._messages import AccessStep as AccessStep
from ._messages import Ack as Ack
from ._messages import AuthorizationRequest as AuthorizationRequest
from ._messages import AuthorizationResponse as AuthorizationResponse
from ._messages import ClaimAlive as ClaimAlive
from ._messages import ClientRegistrationRequest as ClientRegistrationRequest
from ._messages import ClientRegistrationResponse as ClientRegistrationResponse
from ._messages import ComputeStep as ComputeStep
from ._messages import CredentialRequest as CredentialRequest
from ._messages import CredentialResponse as CredentialResponse
from ._messages import CredentialUpdate as CredentialUpdate
from ._messages import DataRequest as DataRequest
from ._messages import DataResponse as DataResponse
from ._messages import DeviceApproval as DeviceApproval
from ._messages import DeviceAuthorizationRequest as DeviceAuthorizationRequest
from ._messages import DeviceAuthorizationResponse as DeviceAuthorizationResponse
from ._messages import ExecStep as ExecStep
from ._messages import JobFinished as JobFinished
from ._messages import JobProgram as JobProgram
from ._messages import JobStep as JobStep
from ._messages import JwksRequest as JwksRequest
from ._messages import JwksResponse as JwksResponse
from ._messages import Message as Message
from ._messages import OAuthError as OAuthError
from ._messages import RevocationRequest as RevocationRequest
from ._messages import StartJob as StartJob
from ._messages import StoreCredential as StoreCredential
from ._messages import ThirdPartyCopy as ThirdPartyCopy
from ._messages import TokenRequest as TokenRequest
from ._messages import TokenResponse as TokenResponse
from ._messages import TransferAccepted as TransferAccepted
from ._messages import TransferFile as TransferFile
from ._messages import TransferRefused as TransferRefused
from ._messages import TransferSubmit as TransferSubmit
from ._messages import UserinfoRequest as UserinfoRequest
from ._messages import UserinfoResponse as UserinfoResponse

__all__ = [
    "CLIENT_AUTH_BASIC",
    "CLIENT_AUTH_NONE",
    "CLIENT_AUTH_POST",
    "EVENT_TYPES",
    "GRANT_AUTHORIZATION_CODE",
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_DEVICE_CODE",
    "GRANT_REFRESH",
    "GRANT_TOKEN_EXCHANGE",
    "NAME_PATTERN",
    "TOKEN_TYPE_ACCESS",
    "TOKEN_TYPE_JWT",
    "TOKEN_TYPE_REFRESH",
    "TRANSITIONS",
    "AccessStep",
    "Ack",
    "AuthorizationRequest",
    "AuthorizationResponse",
    "Backoff",
    "ClaimAlive",
    "ClientRegistrationRequest",
    "ClientRegistrationResponse",
    "ComputeStep",
    "CredentialRequest",
    "CredentialResponse",
    "CredentialUpdate",
    "DataRequest",
    "DataResponse",
    "DeviceApproval",
    "DeviceAuthorizationRequest",
    "DeviceAuthorizationResponse",
    "Evict",
    "ExecStep",
    "Execute",
    "Hold",
    "HoldCode",
    "JobEvent",
    "JobFinished",
    "JobLifecycle",
    "JobProgram",
    "JobState",
    "JobStateError",
    "JobStep",
    "JwksRequest",
    "JwksResponse",
    "Match",
    "Message",
    "OAuthError",
    "Release",
    "Remove",
    "RevocationRequest",
    "StartJob",
    "StoreCredential",
    "Submit",
    "Terminate",
    "ThirdPartyCopy",
    "TokenRequest",
    "TokenResponse",
    "TransferAccepted",
    "TransferFile",
    "TransferRefused",
    "TransferSubmit",
    "UserinfoRequest",
    "UserinfoResponse",
    "rpcauth",
    "wire",
]
