"""The HTML report: self-contained, and its charts draw in a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.report import build_report

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARTS = 8


def _report(store) -> str:
    now = datetime.now(timezone.utc)
    return build_report(store, now - timedelta(days=10), now + timedelta(minutes=1))


def test_report_is_one_offline_file_with_every_chart(seeded_store) -> None:
    page = _report(seeded_store)
    assert page.count("<svg") == CHARTS
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must not fetch anything"
    assert "<script" not in page
    for caption in ("Spend over time, by team", "Top features", "Top customers", "Model mix", "Cost per request",
                    "Retry waste", "Alerts on the timeline", "Self-hosted GPUs"):
        assert caption in page
    assert "no data in this period" not in page  # every chart had data to draw
    assert "Savings opportunities" in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
def test_report_renders_in_headless_chromium(seeded_store, tmp_path) -> None:
    path = tmp_path / "report.html"
    path.write_text(_report(seeded_store))
    result = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             "--enable-logging=stderr", "--v=0", path.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr and "CONSOLE" not in result.stderr
    svgs = re.findall(r"<svg.*?</svg>", result.stdout, re.S)
    assert len(svgs) == CHARTS
    for svg in svgs:  # every chart drew shapes, not only its axes
        assert re.search(r"<(rect|polyline|circle)\b", svg), svg[:300]
    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=900,3400", f"--screenshot={screenshot}", path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
