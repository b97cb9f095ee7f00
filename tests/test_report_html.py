"""The HTML report is one file that opens offline and renders in a browser without console errors."""

import html.parser
import json
import re
import shutil
import subprocess

import pytest

from bench.fleet import FleetSpec, write_fleet
from harness.cli import main

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
