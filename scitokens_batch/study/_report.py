"""A study's report.html: tables and plots with uncertainty, readable without a legend hunt.

Plots (matplotlib, Agg; PNG files beside report.html, referenced by name):

* each metric against each varied parameter: the mean over seeds with its 95 % confidence band,
  one line per value of a second varied parameter; other varied parameters are held at their
  first value, and the title says what was held fixed;
* a heatmap of each metric's mean for a two-parameter grid;
* a search's bracket history, one line per seed, with the boundary found.

Axis labels carry units (seconds for durations, bytes for sizes, the metric's own unit).
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from .. import _files
from ._design import Point
from ._results import Aggregate
from ._spec import StudySpec, to_number

__all__ = ["metric_unit", "write_report"]

_STYLE: Final = """body{font-family:sans-serif;margin:2em;max-width:72em}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;display:block;margin:1em 0}
.fail{color:#b00}"""


def metric_unit(metric: str) -> str:
    """The unit of a summary figure, for axis labels."""
    if metric.endswith("_s") or metric.startswith("headroom."):
        return "s"
    if metric.endswith("rps"):
        return "requests/s"
    if metric.endswith("_bytes"):
        return "bytes"
    return "count"


def _param_axis(key: str, values: Sequence[Any]) -> tuple[list[float] | None, str]:
    """Numbers for a parameter's values (None for categories) and its axis label."""
    nums = [to_number(v) for v in values]
    if all(n is not None for n in nums):
        kinds = {n[1] for n in nums if n is not None}
        unit = (
            {"duration": " (s)", "size": " (bytes)"}.get(next(iter(kinds)), "")
            if len(kinds) == 1
            else ""
        )
        return [n[0] for n in nums if n is not None], f"{key}{unit}"
    return None, key


def _render(draw: Any) -> bytes:
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with (
        matplotlib.style.context("default"),
        matplotlib.rc_context(
            {
                "figure.dpi": 100,
                "savefig.dpi": 100,
                "font.size": 9,
                "axes.grid": True,
                "grid.alpha": 0.3,
            }
        ),
    ):
        fig = Figure(figsize=(8, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _values_of(study: StudySpec, points: Sequence[Point], key: str) -> list[Any]:
    seen: list[Any] = []
    for p in points:
        v = dict(p.params).get(key)
        if v not in seen:
            seen.append(v)
    return seen


def _line_plot(
    study: StudySpec,
    points: Sequence[Point],
    agg: Sequence[Aggregate],
    metric: str,
    x_key: str,
    line_key: str | None,
) -> tuple[bytes, str]:
    varied = study.varied
    x_values = _values_of(study, points, x_key)
    line_values = _values_of(study, points, line_key) if line_key else [None]
    held = {k: _values_of(study, points, k)[0] for k in varied if k not in (x_key, line_key)}
    by_point = {a["point"]: a for a in agg if a["metric"] == metric}
    x_nums, x_label = _param_axis(x_key, x_values)
    fixed_text = ", ".join([*(f"{k}={v}" for k, v in held.items()), *study.fixed])
    title = f"{metric} vs {x_key}" + (f" (fixed: {fixed_text})" if fixed_text else "")
    n_seeds = len(study.seeds)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        for lv in line_values:
            xs: list[float] = []
            means: list[float] = []
            lows: list[float] = []
            highs: list[float] = []
            for i, xv in enumerate(x_values):
                want = {x_key: xv, **held}
                if line_key:
                    want[line_key] = lv
                match = [
                    p for p in points if all(dict(p.params).get(k) == v for k, v in want.items())
                ]
                if not match or match[0].index not in by_point:
                    continue
                a = by_point[match[0].index]
                if a["mean"] is None:
                    continue
                xs.append(x_nums[i] if x_nums is not None else float(i))
                means.append(a["mean"])
                lows.append(a["ci95_low"] if a["ci95_low"] is not None else a["mean"])
                highs.append(a["ci95_high"] if a["ci95_high"] is not None else a["mean"])
            if not xs:
                continue
            label = f"{line_key} = {lv}" if line_key else "mean"
            (line,) = ax.plot(xs, means, marker="o", label=label)
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        if x_nums is None:
            ax.set_xticks(range(len(x_values)), [str(v) for v in x_values])
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{metric} ({metric_unit(metric)}); mean, 95 % CI over {n_seeds} seeds")
        ax.set_title(title, fontsize=9)
        if line_key:
            ax.legend(title=None, fontsize=8)

    return _render(draw), title


def _heatmap(
    study: StudySpec, points: Sequence[Point], agg: Sequence[Aggregate], metric: str
) -> tuple[bytes, str]:
    (k1, v1), (k2, v2) = study.grid[0], study.grid[1]
    by_point = {a["point"]: a for a in agg if a["metric"] == metric}
    grid = [[math.nan] * len(v1) for _ in v2]
    for p in points:
        params = dict(p.params)
        a = by_point.get(p.index)
        if a is not None and a["mean"] is not None:
            grid[list(v2).index(params[k2])][list(v1).index(params[k1])] = a["mean"]
    title = f"{metric}: mean over {len(study.seeds)} seeds" + (
        f" (fixed: {', '.join(study.fixed)})" if study.fixed else ""
    )

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.grid(False)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(v1)), [str(v) for v in v1])
        ax.set_yticks(range(len(v2)), [str(v) for v in v2])
        ax.set_xlabel(k1)
        ax.set_ylabel(k2)
        for j, row in enumerate(grid):
            for i, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(i, j, f"{value:.3g}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(image, ax=ax, label=f"{metric} ({metric_unit(metric)})")
        ax.set_title(title, fontsize=9)

    return _render(draw), title


def _search_plot(search: Mapping[str, Any]) -> tuple[bytes, str]:
    unit = f" ({search['unit']})" if search["unit"] else ""
    title = f"search: {search['condition']} along {search['parameter']}"

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        for seed, steps in search["history"].items():
            if not steps:
                continue
            rounds = range(1, len(steps) + 1)
            (line,) = ax.plot(
                rounds, [s["holds"] for s in steps], marker="o", label=f"seed {seed}: holds"
            )
            ax.plot(
                rounds,
                [s["fails"] for s in steps],
                marker="x",
                linestyle="--",
                color=line.get_color(),
            )
        if search.get("boundary"):
            ax.axhline(
                search["boundary"]["median"],
                color="k",
                linewidth=0.8,
                label=f"boundary (median) {search['boundary']['median']:g}{search['unit']}",
            )
        ax.set_xlabel("round (1 = after the probes)")
        ax.set_ylabel(f"{search['parameter']}{unit}: holding side (o), failing side (x)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)

    return _render(draw), title


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "" if v is None else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>\n"


def write_report(
    out: Path,
    study: StudySpec,
    points: Sequence[Point],
    rows: Sequence[Mapping[str, Any]],
    agg: Sequence[Aggregate],
    search: Mapping[str, Any] | None,
) -> None:
    """report.html and its PNGs in ``out`` (no plots when matplotlib is missing)."""
    try:
        import matplotlib  # noqa: F401

        plots = True
    except ImportError:
        plots = False
    images: list[tuple[str, str]] = []
    varied = study.varied
    if plots and agg:
        n = 0
        for metric in study.metrics:
            if study.search is None:
                for x_key in varied:
                    others = [k for k in varied if k != x_key]
                    line_key = others[0] if others else None
                    png, title = _line_plot(study, points, agg, metric, x_key, line_key)
                    n += 1
                    name = f"study-{n:02d}.png"
                    _files.write_public(out / name, png)
                    images.append((name, title))
                if len(study.grid) == 2 and not study.zip:
                    png, title = _heatmap(study, points, agg, metric)
                    n += 1
                    name = f"study-{n:02d}.png"
                    _files.write_public(out / name, png)
                    images.append((name, title))
    if plots and search is not None:
        png, title = _search_plot(search)
        _files.write_public(out / "search.png", png)
        images.append(("search.png", title))

    esc = html.escape
    parts = [
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n",
        f"<title>study {esc(study.name)}</title>\n",
        f"<style>\n{_STYLE}\n</style>\n</head>\n<body>\n<h1>study {esc(study.name)}</h1>\n",
        _table(
            ["", ""],
            [
                ("scenario", study.scenario_file),
                ("seeds", ", ".join(map(str, study.seeds))),
                ("varied", ", ".join(varied) or "nothing"),
                ("fixed", ", ".join(study.fixed) or "nothing"),
                ("runs", len(rows)),
                ("failed", sum(1 for r in rows if r["status"] != "ok")),
            ],
        ),
    ]
    if search is not None:
        if search.get("error"):
            parts.append(f"<p class=fail>search refused: {esc(search['error'])}</p>\n")
        elif search.get("boundary"):
            b = search["boundary"]
            parts.append(
                f"<p>boundary of <code>{esc(search['condition'])}</code> along "
                f"<code>{esc(search['parameter'])}</code>: min {b['min']:g}, median "
                f"{b['median']:g}, max {b['max']:g} {esc(search['unit'])} (tolerance "
                f"{search['tolerance']:g})</p>\n"
            )
    for name, title in images:
        parts.append(f'<h2>{esc(title)}</h2>\n<img src="{esc(name)}" alt="{esc(title)}">\n')
    params = [f"param.{k}" for k in varied]
    headers = [
        "point",
        *varied,
        "metric",
        "n",
        "mean",
        "std",
        "ci95_low",
        "ci95_high",
        "min",
        "max",
    ]
    parts.append("<h2>Aggregates</h2>\n")
    parts.append(
        _table(
            headers,
            [
                [
                    a.get("point"),
                    *(a.get(p) for p in params),
                    *(a.get(c) for c in headers[1 + len(varied) :]),
                ]
                for a in agg
            ],
        )
    )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        parts.append("<h2>Failed runs</h2>\n")
        parts.append(
            _table(
                ["point", "seed", "status", "error"],
                [[r["point"], r["seed"], r["status"], r["error"]] for r in failed],
            )
        )
    if not plots:
        parts.append("<p>matplotlib is not installed, so this report has no plots.</p>\n")
    parts.append("</body>\n</html>\n")
    _files.write_public(out / "report.html", "".join(parts))
