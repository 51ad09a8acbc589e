"""The HTML report: self-contained, its charts drawn by Vega-Lite, readable in a real browser (headless Chromium)
on a phone (390 px) and on a desk (1280 px)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from spendstream import report_charts as charts
from spendstream.report import build_report

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CAPTIONS = ("Spend over time, by team", "Top features", "Top customers", "Model mix", "Cost per request",
            "Retry waste", "Alerts on the timeline", "Self-hosted GPUs")
# Vega's SVG: each mark is a group of class "mark-<type> role-mark"; its shapes are paths (bars, lines,
# points) or lines (rules).
SHAPES = re.compile(r'<g class="mark-(rect|line|symbol|rule) role-mark[^"]*"[^>]*>\s*<(path|line)\b')


def _report(store) -> str:
    now = datetime.now(timezone.utc)
    return build_report(store, now - timedelta(days=10), now + timedelta(minutes=1))


def _figures(page: str) -> dict[str, str]:
    return {re.search(r"<figcaption>(.*?)</figcaption>", f).group(1): f
            for f in re.findall(r"<figure>.*?</figure>", page, re.S)}


def test_report_is_one_offline_file_with_every_chart_drawn_by_vega_lite(seeded_store) -> None:
    page = _report(seeded_store)
    figures = _figures(page)
    assert [c for c in CAPTIONS if not any(t.startswith(c) for t in figures)] == []
    for caption, figure in figures.items():
        # a narrow and a wide drawing of the same chart, each scaling with the page (no fixed size)
        svgs = re.findall(r"<svg[^>]*>", figure)
        assert [('class="chart narrow"' in s, 'class="chart wide"' in s) for s in svgs] == [
            (True, False), (False, True)], caption
        assert all("viewBox=" in s and " width=" not in s for s in svgs), caption
        assert SHAPES.search(figure), f"{caption}: nothing drawn"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must not fetch anything"
    assert "<script" not in page
    assert "no data in this period" not in page  # every chart had data to draw
    assert "Savings opportunities" in page


def test_one_unit_per_axis_gpu_dollars_and_utilisation_are_two_views() -> None:
    periods = ["2026-11-30 10:00:00", "2026-11-30 11:00:00"]
    chart = charts.render(charts.cost_and_utilisation(periods, [1.5, 2.0], [0.4, None], "GPU utilisation"), "gpu")
    for svg in (chart.narrow_svg, chart.wide_svg):
        titles = re.findall(r'<g class="mark-text role-axis-title[^"]*"[^>]*>.*?>([^<>]+)</text>', svg, re.S)
        assert titles == ["USD", "GPU utilisation"], titles  # each y axis one unit; no shared axis
        assert ">100%</text>" in svg and ">$2</text>" in svg  # the share on its own 0-100 % scale
        assert len(SHAPES.findall(svg)) >= 2  # bars above, a point below


def test_a_period_of_one_bucket_still_draws(seeded_store) -> None:
    latest = seeded_store.query("SELECT toString(max(ts)) FROM usage_events FINAL "
                                "WHERE ts > now() - INTERVAL 1 DAY").scalar()
    latest = datetime.fromisoformat(latest).replace(tzinfo=timezone.utc)
    start = latest.replace(minute=latest.minute - latest.minute % 5, second=0, microsecond=0)
    page = build_report(seeded_store, start, start + timedelta(minutes=5))  # one 5-minute bucket
    figures = _figures(page)
    for caption in ("Spend over time, by team", "Cost per request, by feature"):
        figure = figures[caption]
        periods = set(re.findall(r"<tr><td>(\d{4}-\d\d-\d\d [^<]*)</td>", figure.split("<details>")[1]))
        assert len(periods) == 1, (caption, periods)
        assert SHAPES.search(figure), f"{caption}: one bucket drew nothing"


# Measures, inside Chromium, what a reader sees: the page's own width, and for each chart shown, its box and the
# boxes of its texts. Appended to a copy of the report only (the report itself runs no script).
MEASURE = """<script>
const out = {width: innerWidth, scrollWidth: document.documentElement.scrollWidth, charts: []};
for (const svg of document.querySelectorAll('svg.chart')) {
  if (getComputedStyle(svg).display === 'none') continue;
  const box = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim());
  const clipped = texts.filter(t => { const r = t.getBoundingClientRect();
    return r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1; });
  out.charts.push({cls: svg.getAttribute('class'), label: svg.getAttribute('aria-label'), left: box.left,
                   right: box.right, clipped: clipped.map(t => t.textContent),
                   smallest_text_px: Math.min(...texts.map(t => t.getBoundingClientRect().height))});
}
parent.document.body.setAttribute('data-measured', JSON.stringify(out));
</script>"""
# Headless Chromium's window is at least 500 px wide: the report is measured in a frame of the phone's width.
FRAME = '<!doctype html><body style="margin:0"><iframe src="report.html" width="{w}" height="2400"></iframe></body>'



@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
@pytest.mark.parametrize(("width_px", "shown"), [(390, "narrow"), (1280, "wide")])
def test_report_reads_in_headless_chromium_on_a_phone_and_a_desk(seeded_store, tmp_path, width_px, shown) -> None:
    page = _report(seeded_store)
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", MEASURE + "</body>"))
    frame = tmp_path / "frame.html"
    frame.write_text(FRAME.format(w=width_px))
    result = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--allow-file-access-from-files", f"--window-size={width_px + 100},2500", "--dump-dom",
                             "--enable-logging=stderr", "--v=0", frame.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr
    measured = json.loads(re.search(r'data-measured="(.*?)"', result.stdout).group(1).replace("&quot;", '"')
                          .replace("&amp;", "&"))
    assert measured["width"] == width_px
    assert measured["scrollWidth"] <= width_px, "the page is wider than the screen"
    charts = measured["charts"]
    assert len(charts) == len(CAPTIONS) and {c["cls"] for c in charts} == {f"chart {shown}"}
    for chart in charts:
        assert 0 <= chart["left"] and chart["right"] <= width_px, chart
        assert chart["clipped"] == [], chart  # every label inside its drawing
        assert chart["smallest_text_px"] >= 10, chart  # 11 px text, not shrunk to fit
    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--allow-file-access-from-files", f"--window-size={width_px + 100},2500",
                    f"--screenshot={screenshot}", frame.as_uri()], capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_a_long_legend_label_is_cut_to_its_column_on_a_phone_and_whole_on_a_desk() -> None:
    """Three legend columns of 140 px ran past a phone's drawing: a long team name was drawn off its edge
    (the Chromium test above caught it when another test's long team names reached the report)."""
    chart = charts.render(charts.stacked_bars(["11-30", "12-01"], {"platform-search-europe-1": [1.0, 2.0],
                                                                   "t2": [2.0, 1.0]}), "spend by team")
    def labels(svg: str) -> list[str]:
        return [t for t in re.findall(r">([^<]*)</text>", svg) if t.startswith("platform")]

    assert labels(chart.wide_svg) == ["platform-search-europe-1"]
    (narrow,) = labels(chart.narrow_svg)
    assert narrow.endswith("…") and "platform-search-europe-1".startswith(narrow[:-1]) and len(narrow) >= 12


def test_label_limits_are_left_out_only_where_no_label_could_reach_them(monkeypatch) -> None:
    """Without a label limit Vega measures fewer labels; where every name is short the drawing must not change,
    and a name that could reach a limit keeps it."""
    short = [charts.stacked_bars(["2026-11-30 00:00:00", "2026-12-01 00:00:00"],
                                 {"team-00": [1.0, 2.0], "team-01": [2.0, 0.5]}),
             charts.ranking([("feature-000", 2.0), ("feature-001", 1.5)]),
             charts.lines(["2026-11-30 00:00:00", "2026-12-01 00:00:00"], {"feature-000": [0.1, 0.2]})]
    for spec in short:
        for width in (charts.NARROW_PX, charts.WIDE_PX):
            config = charts._unlimited({**charts._CONFIG, "legend": charts._legend(width)}, spec)
            assert config["axisDiscrete"] == config["axisQuantitative"] == {"labelLimit": 0}
            if spec is short[0]:  # seven characters fit a phone's legend column
                assert config["legend"]["labelLimit"] == 0
    drawn = [charts.render(spec, "a chart") for spec in short]
    monkeypatch.setattr(charts, "_unlimited", lambda config, spec: config)
    assert drawn == [charts.render(spec, "a chart") for spec in short]

    long = charts.ranking([("platform-search-europe-1", 1.0)])
    config = {**charts._CONFIG, "legend": charts._legend(charts.NARROW_PX)}
    assert "axisDiscrete" not in charts._unlimited(config, long)
    # a tick label of "$2,000,000,000" could reach the axis's limit: kept
    assert "axisQuantitative" not in charts._unlimited(config, charts.ranking([("f", 1e9)]))
