"""The "Where time goes" panel in a real browser (Debian's chromium, headless, driven by
selenium, as in ``test_page_browser``): bars per kind, values in the rendered text, filled in
place as processes end. Saves artifacts/where-time-goes.png (seeded, a kind marked short of
workers) and artifacts/where-time-goes-demo.png (the demo: docs/images/where-time-goes.png)."""
from __future__ import annotations

from pathlib import Path

import pytest

from proc.demo.models import Precheck, Upload
from support import ARTIFACTS, text, wait_for

SCREENSHOT = Path(ARTIFACTS) / "check-status.png"

pytestmark = pytest.mark.browser


def shoot(browser, path: Path) -> None:
    """Save a screenshot of the panel, between two in-place refreshes (one that replaces the
    panel while it is being shot leaves a stale element: shoot again)."""
    from selenium.common.exceptions import StaleElementReferenceException

    path.parent.mkdir(exist_ok=True)

    def taken() -> bool:
        try:
            element = browser.find_element("id", "timings")
            browser.execute_script("arguments[0].scrollIntoView(true);", element)
            element.screenshot(str(path))
            return True
        except StaleElementReferenceException:
            return False

    wait_for(taken, timeout=10, message="a screenshot of the panel between two refreshes")


@pytest.fixture
def server(monkeypatch):
    """The demo's own page server (a werkzeug thread of this process), refreshing every 0.5 s
    and recomputing the panel as often."""
    from proc.demo.run import serve_status_page

    monkeypatch.setenv("FLASK_PROC_REFRESH_SECONDS", "0.5")
    monkeypatch.setenv("FLASK_PROC_TIMINGS_SECONDS", "0.5")
    monkeypatch.setenv("FLASK_PROC_INSPECT_TIMEOUT", "0.2")
    with serve_status_page("127.0.0.1", 0) as url:
        assert url is not None, "the api package is not importable"
        yield url.split("/projects/")[0]


TIMINGS_SCREENSHOT = SCREENSHOT.with_name("where-time-goes.png")


def shown(values, q: float) -> str:
    """The panel's text for the ``q`` quantile of ``values``, as the buckets give it."""
    from api.where import seconds_text
    from proc.machine import buckets

    counts = {}
    for v in values:
        counts[buckets.key(v)] = counts.get(buckets.key(v), 0) + 1
    return seconds_text(buckets.quantile(counts, q, max(values)))


def test_where_time_goes_draws_bars_per_kind_and_fills_in_place_as_processes_end(browser, server):
    from timing_models import seed_ended

    seed_ended(Precheck, "run", [{"held": 2.0 + i / 10, "queued": 8.0 * i, "run": 40.0 + i} for i in range(1, 25)])
    browser.get(f"{server}/projects/admin/check-status/")
    panel = text(browser, "#timings")
    assert "precheck.run" in panel and "24 ended" in panel
    queued, run = [8.0 * i for i in range(1, 25)], [40.0 + i for i in range(1, 25)]
    assert f"workers are too few or busy: p95 wait {shown(queued, 0.95)} against a 5m queue timeout" in panel
    bars = browser.execute_script(
        "return Array.from(document.querySelectorAll('#timings [data-kind=\"precheck.run\"] g.phase')).map("
        "function (g) { return [g.getAttribute('data-phase'), g.querySelectorAll('rect.bar').length,"
        " g.querySelector('rect.p95').getBoundingClientRect().width]; });")
    assert [(phase, rects) for phase, rects, _ in bars] == [("held", 2), ("queued", 2), ("run", 2)]
    assert all(width > 0 for _, _, width in bars)
    assert f"p50 {shown(run, 0.5)} · p95 {shown(run, 0.95)}" in panel  # run: 41..64, from the buckets

    browser.execute_script("window.__sameDocument = 'yes';")
    seed_ended(Upload, "process_upload", [{"held": 0.2, "queued": 0.1, "run": 3.0, "waiting": 12.0}] * 3)
    wait_for(lambda: browser.execute_script(
        "return !!document.querySelector('#timings [data-kind=\"upload.process_upload\"] svg');"),
        timeout=15, message="the new kind's bars in the panel")
    assert browser.execute_script("return window.__sameDocument;") == "yes"
    assert f"p50 {shown([12.0], 0.5)} · p95 {shown([12.0], 0.95)}" in text(browser, "#timings")  # waiting
    shoot(browser, TIMINGS_SCREENSHOT)


DEMO_SCREENSHOT = SCREENSHOT.with_name("where-time-goes-demo.png")


def test_the_demo_fills_where_time_goes_as_its_processes_end(browser, server):
    """The demo's processes end one after another; the panel gains kinds and counts in place."""
    import io
    import threading

    from proc.demo.run import run_demo

    def ended(kind: str) -> int:
        return browser.execute_script(
            "var k = document.querySelector('#timings [data-kind=\"' + arguments[0] + '\"] h3 .quiet');"
            " return k ? parseInt(k.textContent, 10) : 0;", kind)

    browser.get(f"{server}/projects/admin/check-status/")
    assert "No process ended in the last hour." in text(browser, "#timings")
    browser.execute_script("window.__sameDocument = 'yes';")
    demo = threading.Thread(target=run_demo, kwargs=dict(
        uploads=2, projects=1, reports=1, pace=0.2, serve=False, concurrency=2, out=io.StringIO()))
    demo.start()
    try:
        wait_for(lambda: ended("entry.process_entry") > 0, timeout=60, message="the first entries to end")
        first = ended("entry.process_entry")
        wait_for(lambda: ended("upload.process_upload") == 2, timeout=120, message="both uploads to end")
        assert ended("entry.process_entry") > first  # it filled while the page stayed open
    finally:
        demo.join(timeout=120)
    assert not demo.is_alive()
    assert browser.execute_script("return window.__sameDocument;") == "yes"
    wait_for(lambda: ended("project.run_prechecks") == 1 and ended("precheck.run") == 9, timeout=15,
             message="the project and its prechecks in the panel")
    upload = browser.execute_script(
        "return Array.from(document.querySelectorAll('#timings [data-kind=\"upload.process_upload\"] g.phase'))"
        ".map(function (g) { return g.getAttribute('data-phase'); });")
    assert upload == ["held", "queued", "run", "waiting"]  # a parent waits for its entries
    shoot(browser, DEMO_SCREENSHOT)
