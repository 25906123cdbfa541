"""The pure token core: claims, scopes, keys, encode/verify, discovery, renewal policy.

Nothing here does I/O, imports trio, or reads a clock: every function that needs the time takes
``now`` (unix seconds) as a parameter. An import-linter contract in pyproject.toml keeps it so.
"""

from ._claims import MAX_LIFETIME as MAX_LIFETIME
from ._claims import MAX_TIME as MAX_TIME
from ._claims import MIN_LIFETIME as MIN_LIFETIME
from ._claims import REQUIRED_CLAIMS as REQUIRED_CLAIMS
from ._claims import build_claims as build_claims
from ._claims import check_claims as check_claims
from ._claims import check_issuer_url as check_issuer_url
from ._claims import check_times as check_times
from ._codec import MAX_TOKEN_BYTES as MAX_TOKEN_BYTES
from ._codec import ParsedToken as ParsedToken
from ._codec import claimed_identity as claimed_identity
from ._codec import encode as encode
from ._codec import parse as parse
from ._codec import peek as peek
from ._codec import signature_valid as signature_valid
from ._discovery import Discovered as Discovered
from ._discovery import DiscoveryError as DiscoveryError
from ._discovery import TokenSource as TokenSource
from ._discovery import discover as discover
from ._discovery import is_b64token as is_b64token
from ._discovery import parse_condor_creds as parse_condor_creds
from ._keycache import KeyCache as KeyCache
from ._keycache import KeyCachePolicy as KeyCachePolicy
from ._keycache import KeyCacheStatistics as KeyCacheStatistics
from ._keys import KeyRing as KeyRing
from ._keys import PublicKey as PublicKey
from ._keys import SigningKey as SigningKey
from ._keys import jwks_document as jwks_document
from ._keys import parse_jwks as parse_jwks
from ._policy import RenewalPolicy as RenewalPolicy
from ._profiles import SCITOKENS_ANY_AUDIENCE as SCITOKENS_ANY_AUDIENCE
from ._profiles import SCITOKENS_VER as SCITOKENS_VER
from ._profiles import WLCG_ANY_AUDIENCE as WLCG_ANY_AUDIENCE
from ._profiles import WLCG_VER as WLCG_VER
from ._profiles import Algorithm as Algorithm
from ._profiles import Profile as Profile
from ._reasons import Reason as Reason
from ._reasons import Rejection as Rejection
from ._redact import bound as bound
from ._redact import bound_fields as bound_fields
from ._redact import redact as redact
from ._redact import redact_event_dict as redact_event_dict
from ._scopes import Operation as Operation
from ._scopes import Scope as Scope
from ._scopes import audience_matches as audience_matches
from ._scopes import authorize as authorize
from ._scopes import covers as covers
from ._scopes import format_scopes as format_scopes
from ._scopes import narrow as narrow
from ._scopes import normalize_path as normalize_path
from ._scopes import parse_scope as parse_scope
from ._scopes import parse_scopes as parse_scopes
from ._util import short_hash as short_hash
from ._verifier import NeedKeys as NeedKeys
from ._verifier import TrustedIssuer as TrustedIssuer
from ._verifier import VerifiedToken as VerifiedToken
from ._verifier import Verifier as Verifier
from ._verifier import VerifierStatistics as VerifierStatistics
from ._verifier import verifier_for as verifier_for

__all__ = [
    "MAX_LIFETIME",
    "MAX_TIME",
    "MAX_TOKEN_BYTES",
    "MIN_LIFETIME",
    "REQUIRED_CLAIMS",
    "SCITOKENS_ANY_AUDIENCE",
    "SCITOKENS_VER",
    "WLCG_ANY_AUDIENCE",
    "WLCG_VER",
    "Algorithm",
    "Discovered",
    "DiscoveryError",
    "KeyCache",
    "KeyCachePolicy",
    "KeyCacheStatistics",
    "KeyRing",
    "NeedKeys",
    "Operation",
    "ParsedToken",
    "Profile",
    "PublicKey",
    "Reason",
    "Rejection",
    "RenewalPolicy",
    "Scope",
    "SigningKey",
    "TokenSource",
    "TrustedIssuer",
    "VerifiedToken",
    "Verifier",
    "VerifierStatistics",
    "audience_matches",
    "authorize",
    "bound",
    "bound_fields",
    "build_claims",
    "check_claims",
    "check_issuer_url",
    "check_times",
    "claimed_identity",
    "covers",
    "discover",
    "encode",
    "format_scopes",
    "is_b64token",
    "jwks_document",
    "narrow",
    "normalize_path",
    "parse",
    "parse_condor_creds",
    "parse_jwks",
    "parse_scope",
    "parse_scopes",
    "peek",
    "redact",
    "redact_event_dict",
    "short_hash",
    "signature_valid",
    "verifier_for",
]
