"""The HTML report is one file that opens offline and renders in a browser without console errors."""

import datetime as dt
import html.parser
import json
import re
import shutil
import subprocess

import pytest

from bench.fleet import FleetSpec, write_fleet
from harness import baselines
from harness.cli import main
from reports import load_results, plots, review

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    fleet = directory / "fleet"
    write_fleet(fleet, FleetSpec(nodes=24, history=2, slow_gpus=1, slow_nodes=1, failing_nodes=2, broken_files=2))
    page, findings = directory / "report.html", directory / "findings.json"
    code = main(["report", str(fleet), "-o", str(page), "--json", str(findings), "--now", "2026-11-28T00:00:00Z"])
    assert code == 0
    return page, json.loads(findings.read_text())


def test_the_page_loads_nothing_from_the_network(report):
    page, _ = report
    text = page.read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", text, re.IGNORECASE)
    assert "@import" not in text and text.count("plotly.js v") == 1
    assert text.index("id='summary'") < text.index("id='histograms'") < text.index("id='heatmap'")


class _Dom(html.parser.HTMLParser):
    """Ids, the rows of each table, and which plot divs hold a rendered SVG."""

    def __init__(self):
        super().__init__()
        self.ids, self.rows, self.rendered = set(), {}, set()
        self.table, self.plot = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.table = attrs.get("id")
        elif tag == "tr" and self.table:
            self.rows[self.table] = self.rows.get(self.table, 0) + 1
        if tag == "div" and (attrs.get("id") or "").startswith("plot-"):
            self.plot = attrs["id"]
        if tag == "svg" and "main-svg" in (attrs.get("class") or "") and self.plot:
            self.rendered.add(self.plot)

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None


@pytest.mark.skipif(CHROMIUM is None, reason="needs the Debian package chromium (CI installs it)")
def test_it_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    page, findings = report
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: anything fetched from a network would fail
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    dom = _Dom()
    dom.feed(done.stdout)
    plots = {i for i in dom.ids if i.startswith("plot-")}
    assert len(plots) == 5  # two models' histograms and heatmaps, the verdicts by day
    assert dom.rendered == plots, "plotly drew every plot"
    for section in ("summary", "failures", "outliers", "coverage", "proposals", "sensitivity", "broken"):
        assert section in dom.ids
    # The page lists outliers per GPU and failures per GPU and code; --json every figure and finding.
    assert dom.rows["outliers-table"] == len({(o["node"], o["gpu_index"]) for o in findings["outliers"]}) + 1
    assert dom.rows["failures-table"] == len({(f["node"], f["gpu_index"], f["code"]) for f in findings["failures"]}) + 1
    assert dom.rows["broken-table"] == 2 + 1
    assert dom.rows["sensitivity-table"] == len(findings["sensitivity"]) + 1


# Item 23 of issue 15: the page's layout and its empty and counting states.


def test_every_table_scrolls_sideways_in_its_own_box(report):
    """Wide tables were cut at the page's edge (1400 px): each sits in a box that scrolls."""
    page, _ = report
    text = page.read_text()
    assert re.search(r"\.wide \{[^}]*overflow-x: auto", text)
    tables = re.findall(r"(.{0,40})<table", text)
    assert tables and all(before.endswith("<div class='wide'>") for before in tables)


def test_a_far_limit_is_named_at_the_axis_edge_not_stretched_to(report):
    """The figures fill each histogram's axis; a limit far off is written at the edge with its value."""
    page, _ = report
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    found = baselines.load_dir(baselines.default_dir())
    done = review.review(load_results(page.parent / "fleet"), review.Settings(now=now), found)
    named = []
    for figure in plots.histograms(done):
        model = figure.layout.title.text.split(":")[0]
        figures = done.figures[done.figures["gpu_name"] == model]
        for bars in figure.data:
            values = figures.loc[figures["metric"] == bars.name, "value"]
            low, high = bars.x[0] - bars.width[0] / 2, bars.x[-1] + bars.width[-1] / 2
            span = values.max() - values.min() or abs(values.max()) * 0.01 or 1.0
            assert low <= values.min() and values.max() <= high
            assert high - low <= (1 + 2 * plots.NEAR) * span * 1.05, bars.name
        named += [a.text for a in figure.layout.annotations if " limit " in a.text]
    assert any(n.startswith("\u25c0 current limit ") for n in named)  # the packaged floors lie far below


def test_an_empty_report_says_no_results_and_shows_nothing_green(tmp_path, capsys):
    torn = tmp_path / "torn.json"
    torn.write_text('{"schema": "gpu-bur')
    out = tmp_path / "r.html"
    assert main(["report", str(torn), "-o", str(out)]) == 2
    text = out.read_text()
    assert "id='no-results'" in text and "No results: none of the 1 files named could be read" in text
    assert "card ok" not in text and "never to never" not in text
    assert "no runs read" in capsys.readouterr().out.splitlines()[0]


def test_the_page_and_the_terminal_count_failing_codes_alike(tmp_path, capsys):
    """A node with HANG on two GPUs is one failing node: the page once said 3 where the terminal said 2."""
    fleet = tmp_path / "fleet"
    write_fleet(fleet, FleetSpec(nodes=3, gpus=2))
    for path, gpus in zip(sorted(fleet.glob("*.json")), (2, 1), strict=False):
        data = json.loads(path.read_text())
        data["verdict"] = {"status": "fail", "reasons": ["HANG"], "exit_code": 1}
        data["findings"] = [
            {"code": "HANG", "severity": "fail", "message": "hung", "gpu": d["uuid"], "remediation": "reset-gpu"}
            for d in data["devices"][:gpus]
        ]
        path.write_text(json.dumps(data))
    out = tmp_path / "r.html"
    assert main(["report", str(fleet), "-o", str(out), "--now", "2026-11-28T00:00:00Z"]) == 0
    terminal = [line for line in capsys.readouterr().out.splitlines() if line.startswith("failing nodes by code")]
    assert terminal == ["failing nodes by code: HANG 2"]
    assert "Failing nodes by code: HANG 2." in out.read_text()
