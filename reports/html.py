"""The review as one self-contained HTML page: plotly.js and every plot inline, so it opens offline.

The plots are reports/plots.py's. A table wider than the page scrolls sideways in its own box,
so no column is cut off.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from harness.verdict import Status
from reports import plots, sensitivity, stats
from reports.review import Review

TABLE_ROWS = 500
CONTENTS = "<p class='note'>" + " | ".join(
    f"<a href='#{anchor}'>{title}</a>"
    for anchor, title in (
        ("histograms", "distributions"), ("heatmap", "worst nodes"), ("outliers", "outliers"), ("fell", "fell"),
        ("failures", "failures"), ("coverage", "coverage"), ("proposals", "proposals"),
        ("sensitivity", "sensitivity"), ("verdicts", "verdicts"), ("fleet", "statistics"), ("broken", "broken files"),
    )
) + "</p>"  # fmt: skip
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; padding: 0 1em; }
.wide { max-width: 100%; overflow-x: auto; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: .6em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
td:last-child, th:last-child { white-space: normal; text-align: left; min-width: 20em; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: .6em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .4em .8em; min-width: 9em; }
.card b { display: block; font-size: 1.5em; } .bad b { color: #d62728; } .ok b { color: #2ca02c; }
.empty { border: 2px solid #ff7f0e; border-radius: 6px; padding: .6em 1em; font-size: 1.1em; }
.note { color: #555; font-size: .9em; } pre { background: #f7f7f7; padding: .5em; overflow-x: auto; }
"""


def render(review: Review) -> str:
    page = _Page()
    summary = review.summary()
    page.add(f"<h1>gpu-burnin fleet report</h1><p class='note'>{_summary_line(summary)}</p>")
    page.section("summary", "Summary", _empty(summary) + _cards(summary) + _summary_notes(review) + CONTENTS)
    page.section("histograms", "Per-metric distributions, with current and proposed limits", "")
    for figure in plots.histograms(review):
        page.plot(figure)
    page.section("heatmap", "Worst nodes: each GPU against its model's median", "")
    for figure in plots.heatmaps(review):
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
    page.plot(plots.verdicts(review.verdicts))
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
    span = "no runs" if summary["first"] is None else f"{_day(summary['first'])} to {_day(summary['last'])}"
    return html.escape(
        f"{summary['runs']} runs on {summary['nodes']} nodes, {summary['gpus']} GPUs, "
        f"{summary['measurements']} measurements, {span}; "
        f"generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, coverage measured from {summary['now']}"
    )


def _empty(summary: dict[str, Any]) -> str:
    """A report of no runs says so first: nothing was judged, which is not a healthy fleet."""
    if summary["runs"]:
        return ""
    return (
        f"<p class='empty' id='no-results'>No results: none of the {summary['files']} files named could be read "
        f"({summary['broken_files']} broken, listed under <a href='#broken'>broken files</a>). Nothing was judged; "
        "this is not a healthy fleet.</p>"
    )


def _cards(summary: dict[str, Any]) -> str:
    verdicts = summary["latest_verdicts"]
    ok = "ok" if summary["runs"] else ""  # zero problems among zero runs is not good news

    def bad(count: int) -> str:
        return "bad" if count else ok

    cards = [
        ("nodes", summary["nodes"], "" if summary["runs"] else "bad"),
        ("GPUs", summary["gpus"], ""),
        ("latest run passed", verdicts[Status.PASS], ok),
        ("latest run failed", verdicts[Status.FAIL], bad(verdicts[Status.FAIL])),
        ("latest run incomplete", verdicts[Status.INCOMPLETE], bad(verdicts[Status.INCOMPLETE])),
        ("outlying GPUs", summary["outlier_gpus"], bad(summary["outlier_gpus"])),
        ("figures fell", summary["fell_figures"], bad(summary["fell_figures"])),
        ("stale nodes", summary["stale_nodes"], bad(summary["stale_nodes"])),
        ("unfinished preflights", summary["unfinished_preflights"], bad(summary["unfinished_preflights"])),
        ("broken files", summary["broken_files"], bad(summary["broken_files"])),
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
    codes = review.summary()["failing_codes"]
    if codes:
        notes.append("Failing nodes by code: " + ", ".join(f"{code} {count}" for code, count in codes.items()) + ".")
    if review.loaded.duplicates:
        notes.append(f"{len(review.loaded.duplicates)} files held a run already read from another file: counted once.")
    return "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)


def _coverage(review: Review) -> str:
    c = review.coverage
    interval = "n/a" if c.interval_days is None else f"{c.interval_days:.1f} days"
    periodic = (
        "No periodic runs."
        if c.cycle_days is None
        else f"Periodic runs reached {c.periodic_nodes} nodes: all of them within the last {c.cycle_days:.1f} days "
        f"(median {interval} between two periodic runs of a node)."
    )
    text = (
        f"<p>{len(c.nodes)} nodes seen; {len(c.stale)} not tested within {c.window.total_seconds() / 86400:g} days; "
        f"{len(c.unfinished)} whose last preflight never finished. {periodic}</p>"
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
    table = shown.to_html(index=False, escape=True, table_id=anchor, na_rep="", border=0)
    return f"<div class='wide'>{table}</div>{more}"  # a wide table scrolls in its box, not off the page


def _day(moment: str | None) -> str:
    return "never" if moment is None else moment[:16].replace("T", " ")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
