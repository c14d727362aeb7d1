"""The demo's failed entries retried from the list view in a real browser: filter to them,
see "Retry all 3 matching", click (the dry run's count and sample), confirm, and watch them
run again. Saves artifacts/bulk-retry.png and artifacts/bulk-retry-dry-run.png (the
screenshots in docs/images/)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from proc.run import messaging
from proc.demo.models import Entry
from support import wait_for

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def script(browser, code: str):
    """``code``'s value, or None while the page is between two documents (a reload)."""
    from selenium.common.exceptions import WebDriverException

    try:
        return browser.execute_script(code)
    except WebDriverException:
        return None


def failed_entries() -> int:
    return Entry._get_collection().count_documents({"process_status": "FAILURE"})


def test_the_demos_failed_entries_are_retried_from_the_list_after_a_dry_run(browser, monkeypatch):
    from selenium.webdriver.common.by import By

    from proc.demo.run import run_demo, serve_status_page
    from proc.run.inprocess import in_process_worker

    monkeypatch.setenv("FLASK_PROC_REFRESH_SECONDS", "60")
    monkeypatch.setenv("FLASK_PROC_INSPECT_TIMEOUT", "0.2")
    counts = run_demo(uploads=3, projects=0, reports=0, pace=0, serve=False, out=io.StringIO())
    assert counts["FAILURE"] == 3 == failed_entries()
    with serve_status_page("127.0.0.1", 0) as url, in_process_worker(messaging.get_app(), concurrency=2):
        base = url.split("/projects/")[0]
        browser.get(f"{base}/projects/admin/check-status/procs?status=FAILURE&kind=entry.process_entry")
        rows = browser.find_elements(By.CSS_SELECTOR, "#proc-list tbody tr")
        assert len(rows) == 3 and all("late.partial" in r.text for r in rows)
        retry = browser.find_element(By.CSS_SELECTOR, "button[data-bulk-action=redispatch]")
        assert retry.text == "Retry all 3 matching"
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "bulk-retry.png"))

        retry.click()  # the dry run: count and sample, nothing written
        result = browser.find_element(By.ID, "bulk-result")
        wait_for(lambda: "would redispatch" in result.text, timeout=10, message="the dry run's answer")
        assert result.text == "3 matching, 3 would redispatch. Click again to confirm."
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bulk-sample li")) == 3
        assert retry.text == "Confirm: redispatch 3"
        assert failed_entries() == 3
        browser.save_screenshot(str(ARTIFACTS / "bulk-retry-dry-run.png"))

        browser.execute_script("window.__beforeConfirm = true;")
        retry.click()  # confirmed: they run again, on the worker, and succeed this time
        wait_for(lambda: failed_entries() == 0, timeout=30, message="the entries to run again")
        # The page reloads itself and says what the action did.
        wait_for(lambda: script(browser, "return !window.__beforeConfirm && document.readyState === 'complete' "
                                         "&& document.getElementById('bulk-last').textContent;"),
                 timeout=15, message="the list to reload")
        assert "redispatch: 3 changed, 0 skipped (by unauthenticated:" in browser.find_element(By.ID, "bulk-last").text
        assert "No process matches." in browser.find_element(By.TAG_NAME, "main").text
    retried = list(Entry._get_collection().find({"path": {"$regex": r"\.partial$"}}))
    assert len(retried) == 3 and {e["process_status"] for e in retried} == {"SUCCESS"}
    assert {e["attempt"] for e in retried} == {2}
    assert all(any(h.get("by", "").startswith("unauthenticated:") for h in e["history"]) for e in retried)
