"""Scenarios: the TOML spec, its loader, and the expectations judged after a run.

General layout:

- ``_units.py``: durations, sizes, rates and the RFC 3339 epoch.
- ``_spec.py``: the frozen attrs classes of a scenario file; they are the schema.
- ``_loader.py``: TOML -> spec via cattrs, ``--set`` overrides, cross-reference checks; every
  failure is a :class:`~scitokens_batch.errors.ScenarioError` naming the key path.
- ``_expect.py``: ``[expect] checks`` lines and their evaluation against summary.json.
"""

from scitokens_batch.scenario._expect import ZERO_WHEN_MISSING as ZERO_WHEN_MISSING
from scitokens_batch.scenario._expect import Check as Check
from scitokens_batch.scenario._expect import CheckResult as CheckResult
from scitokens_batch.scenario._expect import evaluate as evaluate
from scitokens_batch.scenario._expect import lookup_figure as lookup_figure
from scitokens_batch.scenario._expect import parse_check as parse_check
from scitokens_batch.scenario._loader import OVERRIDE_FILE as OVERRIDE_FILE
from scitokens_batch.scenario._loader import load_scenario as load_scenario
from scitokens_batch.scenario._loader import parse_scenario as parse_scenario
from scitokens_batch.scenario._spec import DEFAULT_EPOCH as DEFAULT_EPOCH
from scitokens_batch.scenario._spec import PARTITION_SERVICES as PARTITION_SERVICES
from scitokens_batch.scenario._spec import Arrival as Arrival
from scitokens_batch.scenario._spec import BurstArrival as BurstArrival
from scitokens_batch.scenario._spec import ClientSpec as ClientSpec
from scitokens_batch.scenario._spec import ClockStep as ClockStep
from scitokens_batch.scenario._spec import Compute as Compute
from scitokens_batch.scenario._spec import ComputeStep as ComputeStep
from scitokens_batch.scenario._spec import DataBackend as DataBackend
from scitokens_batch.scenario._spec import DataManagerSpec as DataManagerSpec
from scitokens_batch.scenario._spec import DataServerRestart as DataServerRestart
from scitokens_batch.scenario._spec import DataServerSpec as DataServerSpec
from scitokens_batch.scenario._spec import DatasetSpec as DatasetSpec
from scitokens_batch.scenario._spec import EveryArrival as EveryArrival
from scitokens_batch.scenario._spec import ExecuteHostCrash as ExecuteHostCrash
from scitokens_batch.scenario._spec import ExecuteHostSpec as ExecuteHostSpec
from scitokens_batch.scenario._spec import ExpectSpec as ExpectSpec
from scitokens_batch.scenario._spec import Fault as Fault
from scitokens_batch.scenario._spec import FileSetSpec as FileSetSpec
from scitokens_batch.scenario._spec import FixedCompute as FixedCompute
from scitokens_batch.scenario._spec import GrantName as GrantName
from scitokens_batch.scenario._spec import IssuerOutage as IssuerOutage
from scitokens_batch.scenario._spec import IssuerSpec as IssuerSpec
from scitokens_batch.scenario._spec import KeyRotation as KeyRotation
from scitokens_batch.scenario._spec import LognormalCompute as LognormalCompute
from scitokens_batch.scenario._spec import Partition as Partition
from scitokens_batch.scenario._spec import PoissonArrival as PoissonArrival
from scitokens_batch.scenario._spec import QueueManagerSpec as QueueManagerSpec
from scitokens_batch.scenario._spec import ReadStep as ReadStep
from scitokens_batch.scenario._spec import RefreshTokenRestore as RefreshTokenRestore
from scitokens_batch.scenario._spec import RefreshTokenRevoked as RefreshTokenRevoked
from scitokens_batch.scenario._spec import RuleSpec as RuleSpec
from scitokens_batch.scenario._spec import Scenario as Scenario
from scitokens_batch.scenario._spec import ScenarioMeta as ScenarioMeta
from scitokens_batch.scenario._spec import Step as Step
from scitokens_batch.scenario._spec import StepTarget as StepTarget
from scitokens_batch.scenario._spec import TokenManagerCrash as TokenManagerCrash
from scitokens_batch.scenario._spec import TokenManagerSpec as TokenManagerSpec
from scitokens_batch.scenario._spec import TokenRequestSpec as TokenRequestSpec
from scitokens_batch.scenario._spec import TokenUse as TokenUse
from scitokens_batch.scenario._spec import TpcMode as TpcMode
from scitokens_batch.scenario._spec import TransferServiceSpec as TransferServiceSpec
from scitokens_batch.scenario._spec import TransferServiceStateLoss as TransferServiceStateLoss
from scitokens_batch.scenario._spec import UniformCompute as UniformCompute
from scitokens_batch.scenario._spec import UserSpec as UserSpec
from scitokens_batch.scenario._spec import WorkloadSpec as WorkloadSpec
from scitokens_batch.scenario._spec import WriteStep as WriteStep
from scitokens_batch.scenario._units import format_duration as format_duration
from scitokens_batch.scenario._units import parse_duration as parse_duration
from scitokens_batch.scenario._units import parse_epoch as parse_epoch
from scitokens_batch.scenario._units import parse_rate as parse_rate
from scitokens_batch.scenario._units import parse_size as parse_size

from ._estimate import DEFAULT_EVENT_LIMIT as DEFAULT_EVENT_LIMIT
from ._estimate import EVENTS_PER_SECOND as EVENTS_PER_SECOND
from ._estimate import estimate_events as estimate_events
from ._run import RunResult as RunResult
from ._run import check_scenario as check_scenario
from ._run import result_from_events as result_from_events
from ._run import run_virtual as run_virtual
from ._world import LiveWiring as LiveWiring
from ._world import World as World
from ._world import derive_rng as derive_rng
from ._world import submissions as submissions

__all__ = [
    "DEFAULT_EPOCH",
    "DEFAULT_EVENT_LIMIT",
    "EVENTS_PER_SECOND",
    "OVERRIDE_FILE",
    "PARTITION_SERVICES",
    "ZERO_WHEN_MISSING",
    "Arrival",
    "BurstArrival",
    "Check",
    "CheckResult",
    "ClientSpec",
    "ClockStep",
    "Compute",
    "ComputeStep",
    "DataBackend",
    "DataManagerSpec",
    "DataServerRestart",
    "DataServerSpec",
    "DatasetSpec",
    "EveryArrival",
    "ExecuteHostCrash",
    "ExecuteHostSpec",
    "ExpectSpec",
    "Fault",
    "FileSetSpec",
    "FixedCompute",
    "GrantName",
    "IssuerOutage",
    "IssuerSpec",
    "KeyRotation",
    "LiveWiring",
    "LognormalCompute",
    "Partition",
    "PoissonArrival",
    "QueueManagerSpec",
    "ReadStep",
    "RefreshTokenRestore",
    "RefreshTokenRevoked",
    "RuleSpec",
    "RunResult",
    "Scenario",
    "ScenarioMeta",
    "Step",
    "StepTarget",
    "TokenManagerCrash",
    "TokenManagerSpec",
    "TokenRequestSpec",
    "TokenUse",
    "TpcMode",
    "TransferServiceSpec",
    "TransferServiceStateLoss",
    "UniformCompute",
    "UserSpec",
    "WorkloadSpec",
    "World",
    "WriteStep",
    "check_scenario",
    "derive_rng",
    "estimate_events",
    "evaluate",
    "format_duration",
    "load_scenario",
    "lookup_figure",
    "parse_check",
    "parse_duration",
    "parse_epoch",
    "parse_rate",
    "parse_size",
    "result_from_events",
    "run_virtual",
    "submissions",
]
