"""The words of estimates and capped counts, and the all-time estimate shown as one."""
from __future__ import annotations

import threading

from api import estimates, overview
from api.estimates import about, at_most
from api_seed import seed
from proc.demo.models import Precheck
from proc.status import ProcessStatus as S
from support import wait_for


def test_an_estimate_says_about_and_rounds_to_three_figures():
    assert about(0) == "about 0"
    assert about(950) == "about 950"
    assert about(9_800_000) == "about 9.8M"
    assert about(12_345) == "about 12.3k"
    assert about(123_456) == "about 123k"
    assert about(2_500_000_000) == "about 2.5B"


def test_a_capped_count_is_exact_up_to_the_cap_and_more_than_the_cap_beyond():
    assert at_most(9_999, 10_000) == "9,999"
    assert at_most(10_000, 10_000) == "10,000"
    assert at_most(10_001, 10_000) == "more than 10,000"


def test_ready_beyond_its_cap_is_shown_as_more_than_the_cap(monkeypatch):
    monkeypatch.setattr(overview, "READY_CAP", 3)
    for _ in range(5):
        seed(Precheck, S.READY)
    counts = overview.aggregate_counts()
    assert counts.ready_capped and counts.totals["READY"] == 4  # read no more than the cap + 1
    assert counts.texts()["READY"] == "more than 3"
    assert counts.basis()["READY"].startswith("more than 3")


def test_success_counts_the_window_and_the_all_time_figure_is_an_estimate(client):
    seed(Precheck, S.SUCCESS, age=60)
    seed(Precheck, S.SUCCESS, age=7200)  # ended before the window
    estimates.forget_estimates()
    body = client.get("/api/status?workers=false").get_json()
    assert body["counts"]["SUCCESS"] == 1
    assert body["count_basis"]["SUCCESS"] == "ended in the last 1 h"
    assert body["all_time"] == {"estimated": True, "processes": 2, "text": "about 2"}
    page = client.get("/projects/admin/check-status/live").get_data(as_text=True)
    assert "about 2 processes in all (an estimate" in page


def test_open_pages_and_concurrent_scrapes_share_one_computation_per_interval(monkeypatch):
    """However many browsers refresh or Prometheus servers scrape at once, one web process
    computes the page's data once per PROC_PAGE_SECONDS and /metrics once per
    PROC_METRICS_SECONDS; with 0 each request computes its own."""
    import threading

    from api import health
    from support import make_flask_app

    calls = {"status": 0, "metrics": 0}
    real_counts = overview.aggregate_counts

    def counted(*args, **kwargs):
        calls["status" if kwargs.get("estimate") else "metrics"] += 1
        return real_counts(*args, **kwargs)

    monkeypatch.setattr(overview, "aggregate_counts", counted)
    monkeypatch.setattr(health.overview, "aggregate_counts", counted)
    shared_app = make_flask_app(PROC_PAGE_SECONDS=3600, PROC_METRICS_SECONDS=3600)
    fresh_app = make_flask_app()

    def hit(app, url, n):
        answers = []

        def one():
            answers.append(app.test_client().get(url).status_code)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * n

    hit(shared_app, "/projects/admin/check-status/live", 8)
    hit(shared_app, "/metrics", 8)
    assert calls == {"status": 1, "metrics": 1}
    hit(fresh_app, "/projects/admin/check-status/live", 3)
    hit(fresh_app, "/metrics", 3)
    assert calls == {"status": 4, "metrics": 4}


def test_only_the_first_view_waits_for_the_all_time_count_a_stale_one_is_asked_again_beside_the_views(monkeypatch):
    """SecantusDB counts every document for the estimate (2.1 s at 1,000,000): a view that finds
    the figure older than TOTALS_SECONDS gets it as it is, and one thread asks again."""
    seed(Precheck, S.SUCCESS)
    estimates.forget_estimates()
    assert estimates.estimated_total(Precheck) == 1  # the first view waits for the count
    seed(Precheck, S.SUCCESS)
    collection_class = type(Precheck._get_collection())
    original, gate, asked = collection_class.estimated_document_count, threading.Event(), []

    def held(coll, *args, **kwargs):  # the count asked again waits until the views have been served
        asked.append(threading.current_thread().name)
        assert gate.wait(15), "the gate was never opened"
        return original(coll, *args, **kwargs)

    monkeypatch.setattr(collection_class, "estimated_document_count", held)
    monkeypatch.setattr(estimates, "TOTALS_SECONDS", 0.0)
    try:
        assert [estimates.estimated_total(Precheck) for _ in range(3)] == [1, 1, 1]  # none waited
        wait_for(lambda: asked, message="the count asked again to start")
        assert asked == [f"proc-estimate-{Precheck._get_collection_name()}"]  # one, beside the views
    finally:
        gate.set()
    wait_for(lambda: estimates.estimated_total(Precheck) == 2, message="the count asked again")
    estimates.forget_estimates()
