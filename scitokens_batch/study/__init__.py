"""Studies: parameter sweeps over seeds, aggregation and threshold searches, on Dask.

General layout:

- ``_spec.py``: the ``[study]`` table -> :class:`StudySpec` (errors name file, key path, point).
- ``_design.py``: grid, zip and Latin hypercube designs -> :class:`Point` s (pure).
- ``_search.py``: the sans-IO bisection of a threshold search (pure).
- ``_task.py``: one self-contained run, executed on a worker; returns the summary.
- ``_execute.py``: Dask distributed (a local cluster, or any scheduler by address).
- ``_results.py``: results table, aggregates (mean, std, 95 % CI), CSV and Parquet.
- ``_report.py``: report.html with plots.
- ``_runner.py``: validation, resume, execution and outputs of a whole study.
"""

from scitokens_batch.study._design import Point as Point
from scitokens_batch.study._design import expand as expand
from scitokens_batch.study._execute import DaskExecutor as DaskExecutor
from scitokens_batch.study._execute import default_workers as default_workers
from scitokens_batch.study._runner import StudyOutcome as StudyOutcome
from scitokens_batch.study._runner import describe_executor as describe_executor
from scitokens_batch.study._runner import describe_result as describe_result
from scitokens_batch.study._runner import run_study as run_study
from scitokens_batch.study._search import Bisection as Bisection
from scitokens_batch.study._search import NotMonotone as NotMonotone
from scitokens_batch.study._spec import StudySpec as StudySpec
from scitokens_batch.study._spec import is_study_file as is_study_file
from scitokens_batch.study._spec import load_study as load_study
from scitokens_batch.study._spec import quick_study as quick_study
from scitokens_batch.study._task import RunTask as RunTask
from scitokens_batch.study._task import execute as execute

__all__ = [
    "Bisection",
    "DaskExecutor",
    "NotMonotone",
    "Point",
    "RunTask",
    "StudyOutcome",
    "StudySpec",
    "default_workers",
    "describe_executor",
    "describe_result",
    "execute",
    "expand",
    "is_study_file",
    "load_study",
    "quick_study",
    "run_study",
]
