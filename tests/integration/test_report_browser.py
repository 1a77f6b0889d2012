"""The HTML report as a person sees it: rendered by a real headless chromium, read back from the DOM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Browser
from tests.integration.test_report_html import (
    CLOCKS,
    HOSTILE_HOST,
    HOSTILE_PRODUCT,
    HOSTILE_TENANT,
    lookup,
    seed_history,
    shown,
    write_page,
)
from tests.system_tools import need_program

pytestmark = pytest.mark.db

#: Each chart's name, width and height as laid out, and whether its SVG has drawn shapes.
CHARTS_JS = """
[...document.querySelectorAll('figure[data-chart]')].map(f => {
  const svg = f.querySelector('svg');
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return {name: f.dataset.chart, width: box.width, height: box.height,
          shapes: svg ? svg.querySelectorAll('path, rect, use').length : 0};
})
"""
#: Every tagged figure as the page shows it: [source, path, text].
FIGURES_JS = """
[...document.querySelectorAll('[data-source]')].map(e =>
  [e.dataset.source, JSON.parse(e.dataset.path), e.textContent])
"""


@pytest.fixture
def chromium() -> str:
    return need_program("chromium", package="chromium")


def check_page(browser: Browser, report: Any, attribution: Any) -> list[dict[str, Any]]:
    """No console error, no request off the file, charts drawn, figures equal to the JSON."""
    assert browser.log.errors() == []
    assert browser.log.blocked == []
    assert browser.log.requests, "the page's own load is a request"
    assert all(url.startswith(("file:", "data:")) for url in browser.log.requests), browser.log.requests
    charts: list[dict[str, Any]] = browser.evaluate(CHARTS_JS)
    assert [c["name"] for c in charts] == ["fleet", "tenants-now", "tenants-over-time", "fleet-by"]
    for chart in charts:
        assert chart["width"] > 300, chart
        assert chart["height"] > 100, chart
        assert chart["shapes"] > 5, chart
    figures = browser.evaluate(FIGURES_JS)
    sources = {"report": report, "attribution": attribution}
    compared = 0
    for source, path, text in figures:
        if path in CLOCKS:
            continue
        assert text == shown(lookup(sources[source], path)), (source, path)
        compared += 1
    assert compared > 40
    return charts


async def test_the_report_renders_in_chromium_with_the_json_figures(
    chromium: str,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Opened from disk: nothing fetched, no error, every chart drawn, the figures read back equal
    `report --json` and `attribution --json`; links to explanations land on them; prints on A4."""
    await seed_history(db_url)
    _, report, attribution = await write_page(monkeypatch, capsys, db_url, tmp_path / "report.html")
    with Browser(chromium) as browser:
        browser.open(tmp_path / "report.html")
        check_page(browser, report, attribution)
        # Every link is to a place in the page, and the place exists.
        missing = browser.evaluate(
            "[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
            ".filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1)))"
        )
        assert missing == []
        explained = browser.evaluate(
            "[...document.querySelectorAll('#changes a[href]')].every(a =>"
            " document.getElementById(a.getAttribute('href').slice(1)).textContent.includes('history'))"
        )
        assert explained is True
        # Printed: A4 pages (595 x 842 points), more than one.
        pdf = browser.pdf()
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert len(boxes) > 1
    assert all(round(float(w)) == 595 and round(float(h)) == 842 for w, h in boxes), boxes[:2]


async def test_hostile_names_render_as_text_in_chromium(
    chromium: str,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Names written as markup run nothing and hide nothing in a browser: they are the page's text."""
    await seed_history(db_url, hostile=True)
    _, report, attribution = await write_page(monkeypatch, capsys, db_url, tmp_path / "report.html")
    with Browser(chromium) as browser:
        browser.open(tmp_path / "report.html")
        check_page(browser, report, attribution)
        assert browser.evaluate("document.querySelectorAll('script, img, iframe').length") == 0
        assert browser.evaluate("getComputedStyle(document.body).display") == "block"
        text = browser.evaluate("document.body.textContent")
        for name in (HOSTILE_TENANT, HOSTILE_HOST, HOSTILE_PRODUCT):
            assert name in text, json.dumps(name)
        # In the chart too, as the name itself (shortened to fit; matplotlib's mathtext is off).
        assert HOSTILE_TENANT[:31] in browser.evaluate(
            "document.querySelector('figure[data-chart=\"tenants-now\"] svg').textContent"
        )


def test_the_client_sees_what_the_report_test_forbids(chromium: str, tmp_path: Path) -> None:
    """The checks can fail: a page that fetches from the network and logs an error is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title>"
        '<link rel="stylesheet" href="https://cdn.example.invalid/x.css"></head>'
        '<body><img src="http://192.0.2.1/pixel.png"><script>console.error("broken")</script></body></html>',
        encoding="utf-8",
    )
    with Browser(chromium) as browser:
        browser.open(page)
        assert "broken" in " ".join(browser.log.errors())
        assert set(browser.log.blocked) >= {"https://cdn.example.invalid/x.css", "http://192.0.2.1/pixel.png"}
