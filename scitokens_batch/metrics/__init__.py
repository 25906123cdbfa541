"""Event records, the summary built from them, and the per-job / per-token tables and report."""

from ._events import Event as Event
from ._events import EventSink as EventSink
from ._events import JsonlSink as JsonlSink
from ._events import ListSink as ListSink
from ._events import Recorder as Recorder
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
    "JOB_COLUMNS",
    "JOB_LOG_CODES",
    "JOB_STATES",
    "PLOT_FILES",
    "SAMPLES_PER_BUCKET",
    "TOKEN_COLUMNS",
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
    "fixed_bucket_s",
    "lookup",
    "percentile",
    "summary_table",
]
