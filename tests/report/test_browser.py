"""The report as a person sees it: opened from disk in a real headless Chromium (Debian's
`chromium`, driven by Playwright; .ci/run installs the browser), it renders without errors,
fetches nothing, and shows every plot and a readable table."""

from __future__ import annotations

import shutil

import pytest

from retort.report.page import write
from retort.report.sources import gather

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no chromium on PATH: apt-get install chromium (.ci/run does; no browser can be "
    "downloaded at test time)",
)


def test_the_report_renders_in_a_real_browser(tiny_run, tmp_path):
    from playwright.sync_api import sync_playwright

    path = write(
        gather([tiny_run["run"]], [tiny_run["eval"]], [tiny_run["judge"]]),
        tmp_path / "report.html",
    )
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        figures = page.evaluate(
            """() => [...document.querySelectorAll('figure svg')].map(svg => {
                const box = svg.getBoundingClientRect();
                return {width: box.width, height: box.height,
                        marks: svg.querySelectorAll('path, use, rect, line').length};
            })"""
        )
        table = page.evaluate(
            """() => {
                const table = document.querySelector('table');
                const cells = [...table.querySelectorAll('td')];
                return {rows: table.querySelectorAll('tbody tr').length,
                        visible: table.getBoundingClientRect().width > 300,
                        clipped: cells.some(c => c.scrollWidth > c.clientWidth + 1),
                        first: cells[0].innerText};
            }"""
        )
        screenshot = page.screenshot(full_page=True)
        browser.close()

    assert errors == []
    assert requests == [path.as_uri()]  # the page itself, nothing else
    assert len(figures) == 5
    for figure in figures:
        assert figure["width"] > 300 and figure["height"] > 100, figure
        assert figure["marks"] > 10, figure  # axes, lines and points drawn, not an empty frame
    assert table == {"rows": 3, "visible": True, "clipped": False, "first": "teacher"}
    assert len(screenshot) > 50_000  # a full page was painted
