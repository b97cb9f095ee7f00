"""The review as one self-contained HTML page: plotly.js and every plot inline, so it opens offline.

Plots are drawn from binned counts and the worst nodes, never from every figure, so a page for
a million measurements stays a few megabytes (most of it plotly.js).
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from reports import sensitivity, stats
from reports.review import Review

MAIN_METRICS = ("matmul.bf16.tflops", "memory.verify.gbps", "pcie.h2d.gbps", "nccl.allreduce.8gib.busbw")
"""The heatmap's metrics, where measured."""
HEATMAP_NODES = 40
TABLE_ROWS = 500
BINS = 60
CONTENTS = "<p class='note'>" + " | ".join(
    f"<a href='#{anchor}'>{title}</a>"
    for anchor, title in (
        ("histograms", "distributions"), ("heatmap", "worst nodes"), ("outliers", "outliers"), ("fell", "fell"),
        ("failures", "failures"), ("coverage", "coverage"), ("proposals", "proposals"),
        ("sensitivity", "sensitivity"), ("verdicts", "verdicts"), ("fleet", "statistics"), ("broken", "broken files"),
    )
) + "</p>"  # fmt: skip
COLOURS = {"pass": "#2ca02c", "fail": "#d62728", "incomplete": "#ff7f0e"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: .6em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
td:last-child, th:last-child { white-space: normal; text-align: left; min-width: 20em; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: .6em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .4em .8em; min-width: 9em; }
.card b { display: block; font-size: 1.5em; } .bad b { color: #d62728; } .ok b { color: #2ca02c; }
.note { color: #555; font-size: .9em; } pre { background: #f7f7f7; padding: .5em; overflow-x: auto; }
"""


def render(review: Review) -> str:
    page = _Page()
    summary = review.summary()
    page.add(f"<h1>gpu-burnin fleet report</h1><p class='note'>{_summary_line(summary)}</p>")
    page.section("summary", "Summary", _cards(summary) + _summary_notes(review) + CONTENTS)
    page.section("histograms", "Per-metric distributions, with current and proposed limits", "")
    for figure in _histograms(review):
        page.plot(figure)
    page.section("heatmap", "Worst nodes: each GPU against its model's median", "")
    for figure in _heatmaps(review):
        page.plot(figure)
    page.section(
        "outliers",
        f"Outliers: GPUs with figures {review.settings.limits.outlier_z:g} robust sigmas or more worse than their "
        "model's median (every figure in --json)",
        _table("outliers-table", stats.outlying_gpus(review.outliers), percent=("worst_share",)),
    )
    page.section(
        "fell",
        f"Fell between runs: the same GPU over {review.settings.limits.fell_share:.0%} worse than in its previous run",
        _table("fell-table", review.fell, percent=("change",)),
    )
    failing = stats.failing_gpus(review.failures)
    page.section("failures", "Failing nodes (latest run failed), per GPU and code", _table("failures-table", failing))
    page.section("coverage", "Coverage", _coverage(review))
    page.section("proposals", "Proposed baselines", _proposals(review))
    page.section("sensitivity", "Sensitivity of the node tolerance", _sensitivity(review))
    page.section("verdicts", "Runs by day and verdict", "")
    page.plot(_verdicts(review.verdicts))
    page.section("fleet", "Fleet statistics (latest figure per GPU)", _table("fleet-table", review.fleet, rows=None))
    broken = pd.DataFrame(
        [{"file": e.file or "", "field": e.field or "", "problem": e.problem} for e in review.loaded.errors],
        columns=["file", "field", "problem"],
    )
    page.section("broken", f"Files that could not be read ({len(broken)}), skipped", _table("broken-table", broken))
    return page.html()


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.plots = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def section(self, anchor: str, title: str, body: str) -> None:
        self.parts.append(f"<h2 id='{anchor}'>{html.escape(title)}</h2>{body}")

    def plot(self, figure: go.Figure) -> None:
        include = self.plots == 0  # plotly.js inline once, in the first plot
        self.plots += 1
        self.parts.append(
            pio.to_html(
                figure,
                full_html=False,
                include_plotlyjs=include,
                config={"displaylogo": False, "responsive": True},
                div_id=f"plot-{self.plots}",
            )
        )

    def html(self) -> str:
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<title>gpu-burnin fleet report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(self.parts)}</body></html>\n"
        )


def _summary_line(summary: dict[str, Any]) -> str:
    return html.escape(
        f"{summary['runs']} runs on {summary['nodes']} nodes, {summary['gpus']} GPUs, "
        f"{summary['measurements']} measurements, {_day(summary['first'])} to {_day(summary['last'])}; "
        f"generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, coverage measured from {summary['now']}"
    )


def _cards(summary: dict[str, Any]) -> str:
    verdicts = summary["latest_verdicts"]
    cards = [
        ("nodes", summary["nodes"], ""),
        ("GPUs", summary["gpus"], ""),
        ("latest run passed", verdicts["pass"], "ok"),
        ("latest run failed", verdicts["fail"], "bad" if verdicts["fail"] else "ok"),
        ("latest run incomplete", verdicts["incomplete"], "bad" if verdicts["incomplete"] else "ok"),
        ("outlying GPUs", summary["outlier_gpus"], "bad" if summary["outlier_gpus"] else "ok"),
        ("figures fell", summary["fell_figures"], "bad" if summary["fell_figures"] else "ok"),
        ("stale nodes", summary["stale_nodes"], "bad" if summary["stale_nodes"] else "ok"),
        (
            "unfinished preflights",
            summary["unfinished_preflights"],
            "bad" if summary["unfinished_preflights"] else "ok",
        ),
        ("broken files", summary["broken_files"], "bad" if summary["broken_files"] else "ok"),
        ("proposed changes", summary["proposed_changes"], ""),
    ]
    body = "".join(
        f"<div class='card {kind}' data-key='{html.escape(label)}'><b>{value}</b>{html.escape(label)}</div>"
        for label, value, kind in cards
    )
    return f"<div class='cards' id='summary-cards'>{body}</div>"


def _summary_notes(review: Review) -> str:
    notes = []
    if review.uncovered:
        notes.append(f"No baseline covers: {', '.join(sorted(set(review.uncovered)))} (no proposal, no limits drawn).")
    codes = review.failures["code"].value_counts()
    if not codes.empty:
        notes.append("Failing findings: " + ", ".join(f"{code} {count}" for code, count in codes.items()) + ".")
    return "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)


def _coverage(review: Review) -> str:
    c = review.coverage
    cycle = "no periodic runs" if c.cycle_days is None else f"{c.cycle_days:.1f} days"
    interval = "n/a" if c.interval_days is None else f"{c.interval_days:.1f} days"
    text = (
        f"<p>{len(c.nodes)} nodes seen; {len(c.stale)} not tested within {c.window.total_seconds() / 86400:g} days; "
        f"{len(c.unfinished)} whose last preflight never finished. Periodic runs reached {c.periodic_nodes} nodes: "
        f"all of them within the last {cycle} (median {interval} between two periodic runs of a node).</p>"
    )
    text += "<h3 id='stale'>Not tested lately</h3>" + _table("stale-table", c.stale)
    text += "<h3 id='unfinished'>Last preflight never finished</h3>" + _table("unfinished-table", c.unfinished)
    oldest = c.nodes.sort_values("age_days", ascending=False)
    nodes = _table("nodes-table", oldest)
    return text + f"<details><summary>Last tested, per node, oldest first ({len(c.nodes)})</summary>{nodes}</details>"


def _proposals(review: Review) -> str:
    if not review.proposals:
        return "<p>No baseline covers the fleet's GPUs: nothing to propose.</p>"
    parts = [f"<p class='note'>Rule: {html.escape(review.proposals[0].rule.describe())}.</p>"]
    for proposal in review.proposals:
        table = proposal.table()[
            [
                "metric",
                "unit",
                "old_limit",
                "new_limit",
                "fail_old",
                "fail_new",
                "old_tolerance",
                "new_tolerance",
                "flag_old",
                "flag_new",
                "gpus",
                "median",
                "sigma",
                "note",
            ]
        ]
        parts.append(
            f"<h3>{html.escape(proposal.current.model)} <span class='note'>({html.escape(str(proposal.current.path))}; "
            f"{proposal.gpus} GPUs, {proposal.healthy_runs} passing runs)</span></h3>"
        )
        parts.append(_table(f"proposal-{_slug(proposal.current.model)}", table, rows=None))
    return "".join(parts)


def _sensitivity(review: Review) -> str:
    intro = (
        f"<p class='note'>Monte Carlo, {sensitivity.NODES} simulated nodes (seed {sensitivity.SEED}) with the "
        f"within-node spread fitted from the fleet's passing runs. Goal: a GPU {sensitivity.GOAL_SLOWDOWN:.0%} "
        f"slower than its peers caught in at least {sensitivity.GOAL_DETECTION:.0%} of nodes, healthy GPUs "
        f"flagged at most {sensitivity.GOAL_FALSE_FLAG:.1%}.</p>"
    )
    percent = (
        "within_node_sigma",
        "tolerance",
        "false_flag",
        "caught_at_5pct",
        "smallest_caught_99pct",
        "proposed_tolerance",
        "proposed_false_flag",
        "proposed_caught_at_5pct",
        "proposed_smallest_caught_99pct",
    )
    return intro + _table("sensitivity-table", review.sensitivity, rows=None, percent=percent, digits=2)


def _histograms(review: Review) -> list[go.Figure]:
    figures = []
    limits = _limits(review)
    for model, rows in review.figures.groupby("gpu_name", observed=True, sort=True):
        metrics = sorted(str(m) for m in rows["metric"].unique())
        if not metrics:
            continue
        cols = 3
        grid = make_subplots(
            rows=math.ceil(len(metrics) / cols), cols=cols, subplot_titles=metrics, vertical_spacing=0.06
        )
        shapes = []
        for i, metric in enumerate(metrics):
            row, col = i // cols + 1, i % cols + 1
            values = rows.loc[rows["metric"] == metric, "value"].to_numpy()
            old, new = limits.get((str(model), metric), (None, None))
            marks = [v for v in (old, new) if v is not None]
            low, high = min([values.min(), *marks]), max([values.max(), *marks])
            counts, edges = np.histogram(values, bins=BINS, range=(low, high) if high > low else None)
            grid.add_trace(
                go.Bar(
                    x=(edges[:-1] + edges[1:]) / 2,
                    y=counts,
                    width=np.diff(edges),
                    marker_color="#4c78a8",
                    name=metric,
                    showlegend=False,
                    hovertemplate="%{x:.4g}: %{y} GPUs<extra></extra>",
                ),
                row=row,
                col=col,
            )
            axis = "" if i == 0 else str(i + 1)
            for value, colour in ((old, "#d62728"), (new, "#2ca02c")):
                if value is not None:
                    shapes.append(
                        {"type": "line", "x0": value, "x1": value, "y0": 0, "y1": 1, "xref": f"x{axis}",
                         "yref": f"y{axis} domain", "line": {"color": colour, "dash": "dash", "width": 1.5}}
                    )  # fmt: skip
        grid.update_layout(
            shapes=shapes,  # at once: plotly checks every shape again on each add_vline
            title=f"{model}: latest figure per GPU (red: current limit, green: proposed)",
            height=260 * math.ceil(len(metrics) / cols),
            margin={"t": 60, "b": 30},
            bargap=0,
        )
        figures.append(grid)
    return figures


def _limits(review: Review) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    found: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    models = [str(m) for m in review.figures["gpu_name"].unique()]
    for proposal in review.proposals:
        for model in models:
            if proposal.current.covers(proposal.current.device, model):
                for c in proposal.changes:
                    found[(model, c.metric)] = (c.old_limit, c.new_limit)
    return found


def _heatmaps(review: Review) -> list[go.Figure]:
    figures = []
    medians = review.fleet.set_index(["gpu_name", "metric"])["median"]
    single = review.figures[review.figures["peer"] == ""]
    for model, rows in single.groupby("gpu_name", observed=True, sort=True):
        metrics = [m for m in MAIN_METRICS if (rows["metric"] == m).any()]
        if not metrics or rows["gpu_index"].isna().all():
            continue
        ratios = []
        for metric in metrics:
            part = rows[rows["metric"] == metric]
            median = medians.get((model, metric))
            if not median:
                continue
            sign = -1 if str(part["direction"].iloc[0]) == "lower" else 1
            ratio = (part["value"] / median) ** sign
            ratios.append(part.assign(ratio=ratio.to_numpy())[["node", "gpu_index", "metric", "ratio"]])
        table = pd.concat(ratios).astype({"node": str, "metric": str})
        worst = table.groupby("node")["ratio"].min().nsmallest(HEATMAP_NODES).index
        grid = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, shared_yaxes=True)
        for i, metric in enumerate(metrics, 1):
            part = table[(table["metric"] == metric) & table["node"].isin(worst)]
            pivot = part.pivot_table(index="node", columns="gpu_index", values="ratio").reindex(index=worst[::-1])
            grid.add_trace(
                go.Heatmap(
                    z=pivot.to_numpy(),
                    x=[f"GPU {int(c)}" for c in pivot.columns],
                    y=list(pivot.index),
                    zmin=0.85,
                    zmax=1.05,
                    colorscale="RdYlGn",
                    showscale=i == 1,
                    colorbar={"title": "x median"},
                    hovertemplate="%{y} %{x}: %{z:.3f} x median<extra></extra>",
                ),
                row=1,
                col=i,
            )
        grid.update_layout(
            title=f"{model}: the {len(worst)} nodes with the worst GPU (1.0 = fleet median; better is greener)",
            height=max(300, 18 * len(worst) + 120),
            margin={"l": 140},
        )
        figures.append(grid)
    return figures


def _verdicts(table: pd.DataFrame) -> go.Figure:
    figure = go.Figure()
    for verdict in ("pass", "fail", "incomplete"):
        figure.add_trace(go.Bar(x=table["day"], y=table[verdict], name=verdict, marker_color=COLOURS[verdict]))
    figure.update_layout(barmode="stack", height=320, margin={"t": 30}, xaxis_title="day (UTC)", yaxis_title="runs")
    return figure


def _table(
    anchor: str,
    frame: pd.DataFrame,
    *,
    rows: int | None = TABLE_ROWS,
    percent: tuple[str, ...] = (),
    digits: int = 4,
) -> str:
    if frame.empty:
        return f"<p class='note' id='{anchor}'>None.</p>"
    shown = frame if rows is None else frame.head(rows)
    shown = shown.copy()
    for column in shown.columns:
        values = shown[column]
        if column in percent:
            shown[column] = values.map(
                lambda v: "" if pd.isna(v) else f"{v:.{digits}%}" if abs(v) < 0.001 else f"{v:.1%}"
            )
        elif pd.api.types.is_float_dtype(values):
            shown[column] = values.map(lambda v: "" if pd.isna(v) else f"{v:.{digits}g}")
        elif pd.api.types.is_datetime64_any_dtype(values):
            shown[column] = values.dt.strftime("%Y-%m-%d %H:%M")
    more = "" if len(shown) == len(frame) else f"<p class='note'>First {len(shown)} of {len(frame)}; all in --json.</p>"
    return shown.to_html(index=False, escape=True, table_id=anchor, na_rep="", border=0) + more


def _day(moment: str | None) -> str:
    return "never" if moment is None else moment[:16].replace("T", " ")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
