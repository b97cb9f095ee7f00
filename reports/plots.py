"""The report's plots, from binned counts and the worst nodes, never from every figure, so that a
page for a million measurements stays a few megabytes (most of it plotly.js)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.verdict import Status
from reports import stats
from reports.review import Review

MAIN_METRICS = ("matmul.bf16.tflops", "memory.verify.gbps", "pcie.h2d.gbps", "nccl.allreduce.8gib.busbw")
"""The heatmap's metrics, where measured."""
HEATMAP_NODES = 40
BINS = 60
HISTOGRAMS = 48
"""At most this many metrics' histograms per model (real results have about 20); the rest in --json."""
NEAR = 1.0
"""A limit within this many data spans of the figures is drawn on the axis; one farther off is named
at the axis' edge instead, so that a far floor does not squash the figures into one bar."""
LEFT, RIGHT = "\u25c0 ", " \u25b6"
"""Arrows before or after a limit named at the axis' edge it lies beyond."""
COLOURS: dict[str, str] = {Status.PASS: "#2ca02c", Status.FAIL: "#d62728", Status.INCOMPLETE: "#ff7f0e"}


def histograms(review: Review) -> list[go.Figure]:
    """Per model, a histogram of each metric's latest figure per GPU, with the current (red) and
    proposed (green) limit: drawn where near the figures, named at the axis' edge where far off."""
    figures = []
    limits = _limits(review)
    for model, rows in review.figures.groupby("gpu_name", observed=True, sort=True):
        every = sorted(str(m) for m in rows["metric"].unique())
        metrics = every[:HISTOGRAMS]
        if not metrics:
            continue
        cols = 3
        lines = math.ceil(len(metrics) / cols)
        height = 260 * lines
        grid = make_subplots(
            rows=lines, cols=cols, subplot_titles=metrics, vertical_spacing=min(0.3, 70 / height)
        )  # the same 70 px between rows, however many
        shapes: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        for i, metric in enumerate(metrics):
            row, col = i // cols + 1, i % cols + 1
            values = rows.loc[rows["metric"] == metric, "value"].to_numpy()
            old, new = limits.get((str(model), metric), (None, None))
            low, high, far = _axis(values, [v for v in (old, new) if v is not None])
            counts, edges = np.histogram(values, bins=BINS, range=(low, high))
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
            grid.update_xaxes(range=[low, high], row=row, col=col)
            named = 0
            for value, colour, name in ((old, "#d62728", "current"), (new, "#2ca02c", "proposed")):
                if value is None:
                    continue
                if value in far:  # named at the edge it lies beyond, with its value
                    left = value < low
                    notes.append(
                        {"x": 0 if left else 1, "y": 0.97 - 0.12 * named, "xref": f"x{axis} domain",
                         "yref": f"y{axis} domain", "showarrow": False, "xanchor": "left" if left else "right",
                         "font": {"color": colour, "size": 11},
                         "text": f"{LEFT if left else ''}{name} limit {value:.4g}{'' if left else RIGHT}"}
                    )  # fmt: skip
                    named += 1
                    continue
                shapes.append(
                    {"type": "line", "x0": value, "x1": value, "y0": 0, "y1": 1, "xref": f"x{axis}",
                     "yref": f"y{axis} domain", "line": {"color": colour, "dash": "dash", "width": 1.5}}
                )  # fmt: skip
        left_out = len(every) - len(metrics)
        title = f"{model}: latest figure per GPU (red: current limit, green: proposed; off-scale limits at the edge)"
        if left_out:
            title += f"; {left_out} more metrics not drawn (in --json)"
        grid.update_layout(
            shapes=shapes,  # at once: plotly checks every shape again on each add_vline
            annotations=[*grid.layout.annotations, *notes],  # the subplot titles, then the far limits
            title=title,
            height=height,
            margin={"t": 60, "b": 30},
            bargap=0,
        )
        figures.append(grid)
    return figures


def _axis(values: np.ndarray, marks: list[float]) -> tuple[float, float, set[float]]:
    """The x range of a histogram: the figures and the limits near them (within NEAR spans of the
    figures); the limits beyond are returned apart, to be named rather than drawn."""
    low, high = float(values.min()), float(values.max())
    span = high - low or abs(high) * 0.01 or 1.0  # all equal (zero bad words): a span around them
    far = {m for m in marks if not low - NEAR * span <= m <= high + NEAR * span}
    near = [m for m in marks if m not in far]
    low, high = min([low, *near]), max([high, *near])
    if high == low:
        low, high = low - span / 2, high + span / 2
    margin = (high - low) * 0.02
    return low - margin, high + margin, far


def _limits(review: Review) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    found: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    models = [str(m) for m in review.figures["gpu_name"].unique()]
    for proposal in review.proposals:
        for model in models:
            if proposal.current.covers(proposal.current.device, model):
                for c in proposal.changes:
                    found[(model, c.metric)] = (c.old_limit, c.new_limit)
    return found


def heatmaps(review: Review) -> list[go.Figure]:
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


def verdicts(table: pd.DataFrame) -> go.Figure:
    figure = go.Figure()
    for verdict in stats.VERDICTS:
        figure.add_trace(go.Bar(x=table["day"], y=table[verdict], name=verdict, marker_color=COLOURS[verdict]))
    figure.update_layout(barmode="stack", height=320, margin={"t": 30}, xaxis_title="day (UTC)", yaxis_title="runs")
    return figure
