"""Event records, the summary built from them, and the per-job / per-token tables and report."""

from ._events import ERROR_KINDS as ERROR_KINDS
from ._events import EVENT_OUTPUTS as EVENT_OUTPUTS
from ._events import ErrorsOnlySink as ErrorsOnlySink
from ._events import Event as Event
from ._events import EventSink as EventSink
from ._events import JsonlSink as JsonlSink
from ._events import ListSink as ListSink
from ._events import Recorder as Recorder
from ._events import events_file_sink as events_file_sink
from ._events import is_error as is_error
from ._joblog import JOB_LOG_CODES as JOB_LOG_CODES
from ._joblog import JobEventLogWriter as JobEventLogWriter
from ._report import JOB_STATES as JOB_STATES
from ._report import PLOT_FILES as PLOT_FILES
from ._report import SAMPLES_PER_BUCKET as SAMPLES_PER_BUCKET
from ._report import ReportBuilder as ReportBuilder
from ._report import ReportSeries as ReportSeries
from ._report import fixed_bucket_s as fixed_bucket_s
from ._summary import DENIAL_REASONS as DENIAL_REASONS
from ._summary import SummaryBuilder as SummaryBuilder
from ._summary import lookup as lookup
from ._summary import percentile as percentile
from ._tables import JOB_COLUMNS as JOB_COLUMNS
from ._tables import TOKEN_COLUMNS as TOKEN_COLUMNS
from ._tables import JobTable as JobTable
from ._tables import TokenTable as TokenTable
from ._text import summary_table as summary_table

__all__ = [
    "DENIAL_REASONS",
    "ERROR_KINDS",
    "EVENT_OUTPUTS",
    "JOB_COLUMNS",
    "JOB_LOG_CODES",
    "JOB_STATES",
    "PLOT_FILES",
    "SAMPLES_PER_BUCKET",
    "TOKEN_COLUMNS",
    "ErrorsOnlySink",
    "Event",
    "EventSink",
    "JobEventLogWriter",
    "JobTable",
    "JsonlSink",
    "ListSink",
    "Recorder",
    "ReportBuilder",
    "ReportSeries",
    "SummaryBuilder",
    "TokenTable",
    "events_file_sink",
    "fixed_bucket_s",
    "is_error",
    "lookup",
    "percentile",
    "summary_table",
]
