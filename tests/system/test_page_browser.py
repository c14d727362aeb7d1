"""The check-status page in a real browser (Debian's chromium, headless, driven by selenium).

The server runs in a thread of this process (werkzeug), so it shares the embedded
database with the test. Saves a screenshot to artifacts/check-status.png.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from api_seed import seed
from proc import config, monitor, registry
from proc.ops import admin
from proc.demo.models import Precheck, Upload
from proc.status import LIFECYCLE, ProcessStatus as S
from proc.timeutil import utcnow
from support import report_page, text, wait_for

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "artifacts" / "check-status.png"
RECOVERED_SCREENSHOT = SCREENSHOT.with_name("check-status-recovered.png")
BROWSER_TOKEN = "browser-t0ken-0123456789abcdefghijkl"


@pytest.fixture
def server(monkeypatch):
    """The demo's own page server (a werkzeug thread of this process), refreshing every 0.5 s."""
    from proc.demo.run import serve_status_page

    monkeypatch.setenv("FLASK_PROC_REFRESH_SECONDS", "0.5")
    monkeypatch.setenv("FLASK_PROC_INSPECT_TIMEOUT", "0.2")
    with serve_status_page("127.0.0.1", 0) as url:
        assert url is not None, "the api package is not importable"
        yield url.split("/projects/")[0]


def box_counts(driver) -> dict[str, int]:
    """Status -> count as the page shows them (read in one script: the live part is replaced in place)."""
    pairs = driver.execute_script(
        "return Array.from(document.querySelectorAll('.boxes .box')).map(function (b) {"
        " return [b.getAttribute('data-status'), b.querySelector('.box-count').textContent.trim()]; });")
    return {status: int(count) for status, count in pairs}


def click_fresh(browser, selector: str) -> bool:
    """Click ``selector``; False when an in-place refresh replaced it between the find and the
    click (a stale element, seen once in a fresh-clone run), so the caller tries again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        browser.find_element(By.CSS_SELECTOR, selector).click()
    except StaleElementReferenceException:
        return False
    return True


def test_boxes_show_the_counts_and_change_in_place_when_processes_move(browser, server):
    from selenium.webdriver.common.by import By

    expected = {}
    for n, status in enumerate(LIFECYCLE, start=1):
        for _ in range(n):
            seed(Precheck, status, age=40 * n)
        expected[status.value] = n
    stuck = seed(Upload, S.RUNNING, age=900, heartbeat=utcnow() - timedelta(seconds=600))
    lost = seed(Precheck, S.DISPATCHED, age=1200)
    expected["RUNNING"] += 1
    expected["DISPATCHED"] += 1

    browser.get(f"{server}/projects/admin/check-status/")
    counts = box_counts(browser)
    assert list(counts) == [s.value for s in LIFECYCLE]
    assert counts == expected
    assert "oldest" in text(browser, "#box-DISPATCHED .box-age")
    assert "precheck.run" in text(browser, "#kinds")
    assert "0/4 in use" in text(browser, "#kinds")
    assert "Workers did not answer" in text(browser, "#workers")
    attention = text(browser, "#attention")
    assert "worker heartbeat lost" in attention
    # No worker answers; whether the shared in-memory queue still holds other tests' messages
    # decides between the two DISPATCHED reasons.
    assert "message lost" in attention or "no worker consumes the queue" in attention
    assert str(lost)[-8:] in attention and str(stuck)[-8:] in attention
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    # Processes move; the page follows without a reload (the marker survives).
    browser.execute_script("window.__sameDocument = 'yes';")
    config.configure(kind_settings={"precheck.run": {"queue": "browser-test-nobody"}})
    registry.forget_settings()
    fresh = Precheck(project_id="p", check="live")
    fresh.save()
    fresh.run()  # really published to the broker; no worker consumes that queue: it stays DISPATCHED
    assert fresh.reload_status().process_status == "DISPATCHED"
    admin.cancel("upload", stuck, by="test")
    expected.update(READY=expected["READY"] + 1, DISPATCHED=expected["DISPATCHED"] + 1,
                    RUNNING=expected["RUNNING"] - 1, FAILURE=expected["FAILURE"] + 1)
    # A new document is READY until its process is called: the READY box gained it then lost it.
    expected["READY"] -= 1
    wait_for(lambda: box_counts(browser) == expected, timeout=15, message="the boxes to show the new counts")
    assert browser.execute_script("return window.__sameDocument;") == "yes"
    assert int(browser.find_element(By.ID, "live").get_attribute("data-refreshes")) >= 1

    # A box lists its processes; a process shows its detail and history.
    wait_for(lambda: click_fresh(browser, "#box-FAILURE"), timeout=10, message="a click on the FAILURE box")
    wait_for(lambda: "/check-status/procs" in browser.current_url, timeout=10)
    rows = browser.find_elements(By.CSS_SELECTOR, "#proc-list tbody tr")
    assert len(rows) == expected["FAILURE"]
    assert "upload/" in rows[0].text  # the newest change first: the cancelled upload
    rows[0].find_element(By.CSS_SELECTOR, "a").click()
    wait_for(lambda: browser.find_elements(By.ID, "history"), timeout=10)
    history = browser.find_element(By.ID, "history").text
    assert "cancelled by test" in history
    assert str(stuck) in browser.title


def test_with_a_token_the_browser_signs_in_with_basic_auth_and_the_refresh_keeps_working(
        browser, monkeypatch):
    from proc.demo.run import serve_status_page

    monkeypatch.setenv("FLASK_PROC_REFRESH_SECONDS", "0.5")
    monkeypatch.setenv("FLASK_PROC_INSPECT_TIMEOUT", "0.2")
    config.configure(api_token=BROWSER_TOKEN)
    seed(Precheck, S.RUNNING)
    with serve_status_page("127.0.0.1", 0) as url:
        browser.get(url.replace("http://", "http://alice:" + BROWSER_TOKEN + "@"))
        assert box_counts(browser)["RUNNING"] == 1
        seed(Precheck, S.RUNNING)
        wait_for(lambda: box_counts(browser)["RUNNING"] == 2, timeout=15, message="the refresh, signed in")
        assert BROWSER_TOKEN not in browser.page_source


def test_recently_recovered_lists_the_monitors_recoveries_in_place_and_links_to_each_process(browser, server):
    from selenium.webdriver.common.by import By

    config.configure(kind_settings={"upload.process_upload": {"recovery": "fail"}})
    registry.forget_settings()
    first = seed(Upload, S.RUNNING, age=900, heartbeat=utcnow() - timedelta(seconds=600))
    seed(Precheck, S.RUNNING, age=60)
    assert [o.action for o in monitor.sweep().outcomes] == [monitor.Action.FAILED]

    browser.get(f"{server}/projects/admin/check-status/")
    panel = text(browser, "#recoveries")
    assert "worker heartbeat lost" in panel and "marked it FAILURE" in panel and str(first)[-8:] in panel
    RECOVERED_SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(RECOVERED_SCREENSHOT))

    # A new recovery appears without a reload.
    browser.execute_script("window.__sameDocument = 'yes';")
    second = seed(Upload, S.RUNNING, age=900, heartbeat=utcnow() - timedelta(seconds=700))
    monitor.sweep()
    wait_for(lambda: str(second)[-8:] in text(browser, "#recoveries"), timeout=15,
             message="the new recovery in the panel")
    assert browser.execute_script("return window.__sameDocument;") == "yes"

    # Each row links to its process, whose history says the monitor failed it. (Clicked in one
    # script: the live part may be replaced between finding the link and clicking it.)
    browser.execute_script("document.querySelector('#recoveries a[href$=\"/' + arguments[0] + '\"]').click();",
                           f"upload/{first}")
    wait_for(lambda: browser.find_elements(By.ID, "history"), timeout=10)
    assert str(first) in browser.title
    assert "monitor: worker heartbeat lost" in browser.find_element(By.ID, "history").text


CANCEL_SCREENSHOT = SCREENSHOT.with_name("cancel-stopped.png")


@pytest.mark.broker
def test_a_running_demo_report_cancelled_from_its_page_stops_within_a_heartbeat(browser, server, worker,
                                                                              monkeypatch):
    from selenium.webdriver.common.by import By

    from proc.demo import models

    monkeypatch.setitem(models.PACE, "seconds", 0.1)
    report = models.Report(name="cancel-me", pages=300)
    report.save()
    report.build()

    wait_for(lambda: report_page(report) >= 3, timeout=15, message="the report to run")
    browser.get(f"{server}/projects/admin/check-status/procs/report/{report.pk}")
    browser.execute_script("window.confirm = function () { return true; };")
    browser.find_element(By.XPATH, "//button[normalize-space()='Cancel']").click()
    wait_for(lambda: report.reload().history[-1]["event"] == "stopped", timeout=10, message="the stop")
    fail, stopped = report.history[-2], report.history[-1]
    assert fail["event"] == "fail" and fail["by"].startswith("unauthenticated:")
    took = (stopped["time"] - fail["time"]).total_seconds()
    assert took <= config.get().heartbeat_interval + models.PACE["seconds"] + 0.5, took
    assert report.process_status == "FAILURE" and 3 <= report.pages_done < 300

    browser.refresh()
    wait_for(lambda: "the code stopped (cancelled by" in browser.find_element(By.ID, "history").text,
             timeout=10, message="the stopped entry on the page")
    assert "FAILURE" in browser.find_element(By.CSS_SELECTOR, ".page-head").text
    CANCEL_SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(CANCEL_SCREENSHOT))
