"""Whole studies on a real Dask LocalCluster: executor independence, resume, failures, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from scitokens_batch.cli import main
from scitokens_batch.errors import StudyError
from scitokens_batch.study import RunTask, execute, load_study, run_study

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "issuer-outage.toml"

STUDY = f"""
[study]
name = "small"
scenario = "{SCENARIO}"
seeds = [1, 2]
set = ["scenario.duration=2h", "faults[0].at=20m", "faults[1].at=20m"]
metrics = ["data.expired_at_use", "headroom.min_s", "jobs.completed"]

[study.grid]
"faults[1].duration" = ["1m", "8m"]
"token_manager.scan_interval" = ["30s", "60s"]
"""


def _table(path: Path, drop: str = "wall_seconds") -> list[list[str]]:
    with path.open() as f:
        rows = list(csv.reader(f))
    i = rows[0].index(drop) if drop in rows[0] else None
    return [[c for j, c in enumerate(r) if j != i] for r in rows]


@pytest.fixture(name="study_file")
def _study_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(STUDY)
    return path


@pytest.mark.slow
def test_one_and_two_workers_give_identical_tables_and_resume_runs_only_missing(
    study_file: Path, tmp_path: Path
) -> None:
    """1 and 2 workers give the same results and aggregates (wall time aside); --resume after
    losing three runs runs exactly those three and gives the same tables again."""
    study = load_study(study_file)
    one = run_study(study, out=tmp_path / "one", workers=1)
    two = run_study(study, out=tmp_path / "two", workers=2)
    assert one.ok and two.ok and one.runs == two.runs == 8
    assert _table(tmp_path / "one" / "results.csv") == _table(tmp_path / "two" / "results.csv")
    assert (tmp_path / "one" / "aggregate.csv").read_bytes() == (
        tmp_path / "two" / "aggregate.csv"
    ).read_bytes()
    rows = _table(tmp_path / "one" / "results.csv")
    header = rows[0]
    # The seed really changes the runs, and the grid changes the outcome.
    assert {r[header.index("seed")] for r in rows[1:]} == {"1", "2"}
    assert len({r[header.index("data.expired_at_use")] for r in rows[1:]}) > 1
    manifest = json.loads((tmp_path / "two" / "study.json").read_text())
    assert manifest["executor"] == {"kind": "local", "workers": 2, "threads_per_worker": 1}
    assert manifest["runs"] == 8 and manifest["failed"] == 0 and manifest["points"] == 4
    assert manifest["versions"]["distributed"] != "missing"
    assert (tmp_path / "two" / "report.html").read_text().count("<img") >= 6

    points = sorted((tmp_path / "two" / "points").glob("*.json"))
    assert len(points) == 8
    for lost in points[:3]:
        lost.unlink()
    again = run_study(study, out=tmp_path / "two", workers=2, resume=True)
    assert again.manifest["resumed"] == 5 and again.runs == 8
    assert _table(tmp_path / "two" / "results.csv") == _table(tmp_path / "one" / "results.csv")
    # Each run's summary records what it was run with, so any row can be rerun by hand.
    summary = json.loads(points[3].read_text())["summary"]
    assert summary["overrides"][:3] == [
        "scenario.duration=2h",
        "faults[0].at=20m",
        "faults[1].at=20m",
    ]


def test_reused_out_without_resume_is_refused(study_file: Path, tmp_path: Path) -> None:
    """A folder holding a study's outputs is not overwritten unless --resume is given."""
    out = tmp_path / "out"
    (out / "points").mkdir(parents=True)
    with pytest.raises(StudyError, match="give --resume"):
        run_study(load_study(study_file), out=out, workers=1)


def test_a_run_that_raises_becomes_an_error_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside a run is returned as a row with its error, never raised."""
    import scitokens_batch.study._task as task_module

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(task_module, "run_virtual", boom)
    task = RunTask(
        key="k",
        point=0,
        seed=1,
        scenario_text=SCENARIO.read_text(),
        scenario_file=str(SCENARIO),
        overrides=(),
    )
    result = execute(task)
    assert result["status"] == "error" and result["error"] == "RuntimeError: simulated bug"
    assert "Traceback" in result["traceback"] and result["summary"] is None


def test_invalid_point_at_run_time_is_an_invalid_row() -> None:
    """A task whose scenario does not load (only possible if sent by hand) is an 'invalid' row."""
    task = RunTask(
        key="k",
        point=0,
        seed=1,
        scenario_text="[scenario]\nname = 3\n",
        scenario_file="x.toml",
        overrides=(),
    )
    result = execute(task)
    assert result["status"] == "invalid" and "x.toml" in result["error"]


@pytest.mark.slow
def test_quick_sweep_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sweep SCENARIO --grid K=V1,V2 --seeds 2` runs 4 runs and prints one line per run
    (stderr is no terminal) and the outputs."""
    out = tmp_path / "quick"
    code = main(
        [
            "sweep",
            str(SCENARIO),
            "--grid",
            "token_manager.scan_interval=30s,60s",
            "--seeds",
            "2",
            "--set",
            "scenario.duration=1h",
            "--workers",
            "2",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured
    assert captured.err.count(": ok in ") == 4
    assert "2 point(s) x 2 seed(s) = 4 runs (0 resumed), 0 failed" in captured.out
    for name in ("study.json", "results.csv", "results.parquet", "aggregate.csv", "report.html"):
        assert (out / name).is_file()


BAD = [
    ("[study]\nscenario = 'missing.toml'\n", "study.scenario", "readable scenario file"),
    ("[other]\n", "other", "received 'other'"),  # no [study]: a plain scenario, checked as one
    ("[study\n", "", "expected TOML"),
    ("study = 3\n", "", "expected a table"),
    ("[study]\nscenario = 'S'\nseeds = 0\n", "study.seeds", "from 1 to 10000"),
    ("[study]\nscenario = 'S'\nseeds = [1, 1]\n", "study.seeds", "distinct seeds"),
    ("[study]\nscenario = 'S'\nseeds = [-1]\n", "study.seeds[0]", "integer >= 0"),
    (
        "[study]\nscenario = 'S'\nmetrics = ['jobs.compleeted']\n",
        "study.metrics[0]",
        "summary.json figure",
    ),
    ("[study]\nscenario = 'S'\nmetrics = []\n", "study.metrics", "non-empty array"),
    ("[study]\nscenario = 'S'\ngrids = {}\n", "study.grids", "expected one of"),
    (
        "[study]\nscenario = 'S'\n[study.grid]\n'token_manager.scan_interval' = []\n",
        'study.grid."token_manager.scan_interval"',
        "non-empty array",
    ),
    (
        "[study]\nscenario = 'S'\n[study.grid]\n'token_manager.scan_interval' = ['1m', '1m']\n",
        'study.grid."token_manager.scan_interval"',
        "distinct values",
    ),
    (
        "[study]\nscenario = 'S'\n[study.grid]\n'token_manager.scan_interval' = ['1m', 'soon']\n",
        'study.grid."token_manager.scan_interval"',
        "point 1",
    ),
    (
        "[study]\nscenario = 'S'\n[study.grid]\n'token_manager.scan_intervall' = ['1m']\n",
        'study.grid."token_manager.scan_intervall"',
        "scan_intervall",
    ),
    ("[study]\nscenario = 'S'\n[study.zip]\na = [1, 2]\nb = [1]\n", "study.zip", "one length"),
    (
        "[study]\nscenario = 'S'\n[study.sample]\nn = 4\n[study.sample.ranges]\nx = [2, 1]\n",
        "study.sample.ranges.x",
        "low < high",
    ),
    (
        "[study]\nscenario = 'S'\n[study.sample]\nn = 0\n[study.sample.ranges]\nx = [1, 2]\n",
        "study.sample.n",
        "number of points",
    ),
    (
        "[study]\nscenario = 'S'\n[study.search]\nparameter = 'faults[0].duration'\nlow = '1m'\n"
        "high = '2m'\ntolerance = '5s'\ncondition = 'data.expired_at_use === 0'\n",
        "study.search.condition",
        "expected",
    ),
    (
        "[study]\nscenario = 'S'\n[study.search]\nparameter = 'faults[0].duration'\nlow = '1m'\n"
        "high = '2GB'\ntolerance = '5s'\ncondition = 'data.expired_at_use == 0'\n",
        "study.search",
        "of one kind",
    ),
    (
        "[study]\nscenario = 'S'\n[study.search]\nparameter = 'faults[9].duration'\nlow = '1m'\n"
        "high = '2m'\ntolerance = '5s'\ncondition = 'data.expired_at_use == 0'\n",
        "study.search.parameter",
        "faults[9]",
    ),
    (
        "[study]\nscenario = 'S'\nset = ['token_manager.renew_fraction=7']\n",
        "study.set",
        "renew_fraction",
    ),
    (
        "[study]\nscenario = 'S'\n[study.grid]\na = [1]\n[study.search]\nparameter = 'b'\nlow = 1\n"
        "high = 2\ntolerance = 0.1\ncondition = 'jobs.failed == 0'\n",
        "study.search",
        "one design",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "message"), BAD)
def test_bad_study_file_exits_2_naming_file_key_and_point(
    text: str, key_path: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad study file exits 2 with one line naming the file and key path; nothing is written."""
    study = tmp_path / "bad.toml"
    study.write_text(text.replace("'S'", repr(str(SCENARIO))))
    out = tmp_path / "out"
    code = main(["sweep", str(study), "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{study}: {key_path}" in err if key_path else str(study) in err
    assert message in err
    assert not out.exists()


def test_the_bundled_studies_load_and_every_point_validates(tmp_path: Path) -> None:
    """studies/*.toml load, and every point of every grid study gives a valid scenario."""
    from scitokens_batch.study import expand
    from scitokens_batch.study._runner import _load_point

    names = sorted(p.name for p in (ROOT / "studies").glob("*.toml"))
    assert names == ["key-rotation.toml", "outage-tolerance.toml", "renewal-policy.toml"]
    for name in names:
        study = load_study(ROOT / "studies" / name)
        for point in expand(study):
            _load_point(study, point)


@pytest.mark.slow
def test_outage_tolerance_search_agrees_with_the_formula(tmp_path: Path) -> None:
    """The bundled search finds vo-short's longest tolerated outage within its tolerance of the
    211 s that docs/scenarios.md derives (D_tol = 210 s + 1 s), for every seed."""
    study = load_study(ROOT / "studies" / "outage-tolerance.toml")
    outcome = run_study(study, out=tmp_path / "ot", workers=2, report=False)
    assert outcome.ok
    search = json.loads((tmp_path / "ot" / "search.json").read_text())
    tolerance = search["tolerance"]
    assert tolerance == 5.0 and search["unit"] == "s"
    assert set(search["per_seed"]) == {"1", "2", "3"}
    for boundary in search["per_seed"].values():
        assert 211.0 - tolerance <= boundary <= 211.0
    assert search["boundary"]["median"] == pytest.approx(208.125)
    assert all({"point", "value", "seed", "holds"} <= set(e) for e in search["evaluated"])
    shutil.rmtree(tmp_path / "ot")
