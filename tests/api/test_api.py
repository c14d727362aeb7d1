"""GET /api/status, /api/procs, /api/procs/<collection>/<id>, /healthz, /metrics, auth and bad input."""
from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from api import estimates
from api_seed import TOKEN, basic, bearer, seed, seed_every_status
from proc import config, registry
from proc.run import messaging, limits
from support import CommandCounter, make_flask_app
from proc.demo.models import Entry, Precheck, Upload
from proc.status import LIFECYCLE, ProcessStatus as S
from proc.timeutil import utcnow

ORDER = [s.value for s in LIFECYCLE]


def test_every_status_is_present_in_lifecycle_order_even_with_no_process(client):
    body = client.get("/api/status").get_json()
    assert list(body["counts"]) == ORDER
    assert ORDER.index("DISPATCHED") == ORDER.index("PENDING") + 1 == ORDER.index("RUNNING") - 1
    assert body["counts"] == {s: 0 for s in ORDER}
    assert body["oldest_age_seconds"] == {"PENDING": None, "DISPATCHED": None, "RUNNING": None,
                                          "WAITING_FOR_RESULT": None}


def test_status_counts_kinds_and_oldest_ages_of_seeded_processes(client):
    expected = seed_every_status()
    seed(Precheck, S.DISPATCHED, age=90)
    expected["DISPATCHED"] += 1
    body = client.get("/api/status").get_json()
    assert body["counts"] == expected
    assert 89 <= body["oldest_age_seconds"]["DISPATCHED"] < 120
    assert 29 <= body["oldest_age_seconds"]["RUNNING"] < 60
    kinds = {k["kind"]: k for k in body["kinds"]}
    assert kinds["precheck.run"]["counts"]["DISPATCHED"] == 3
    assert kinds["precheck.run"]["counts"]["READY"] == 0
    assert kinds["precheck"]["counts"]["READY"] == 2  # never run: no process method yet
    assert kinds["upload.process_upload"]["counts"]["SUCCESS"] == 1
    assert kinds["precheck.run"]["limit"] == 4 and kinds["precheck.run"]["in_use"] == 0
    assert kinds["upload.process_upload"]["limit"] is None
    assert kinds["precheck.run"]["thresholds"] == {"queue_timeout": 300.0, "expected_duration": 120.0,
                                                   "heartbeat_timeout": 120.0}
    assert kinds["entry.process_entry"]["total"] == 0  # a registered kind is listed with no process


def test_status_makes_the_same_number_of_database_round_trips_for_10_or_400_processes(client, monkeypatch):
    counter = CommandCounter(monkeypatch)
    for i in range(10):
        seed(Precheck, LIFECYCLE[i % 7])
    counter.calls.clear()
    estimates.forget_estimates()  # the all-time estimate is cached for a minute
    client.get("/api/status?workers=false")
    small = list(counter.calls)
    for i in range(390):
        seed([Precheck, Upload, Entry][i % 3], LIFECYCLE[i % 7])
    counter.calls.clear()
    estimates.forget_estimates()
    body = client.get("/api/status?workers=false").get_json()
    assert sum(body["counts"].values()) == 400
    assert len(counter.calls) == len(small)
    aggregations = [c for c in counter.calls if c[0] == "aggregate"]
    # One aggregation per status and collection, each matching ONE status (an index serves it),
    # and one more per collection for the view of many hosts (RUNNING, grouped by worker).
    assert sorted(c[1] for c in aggregations) == sorted(
        c._get_collection_name() for c in registry.proc_classes() for _ in range(len(ORDER) + 1))


def test_needs_attention_says_held_by_the_limit_heartbeat_lost_and_broker_unreachable(client):
    for i in range(4):
        limits.acquire("precheck.run", f"precheck/slot/{i}", 4)
    held = seed(Precheck, S.PENDING, age=400)
    lost = seed(Upload, S.RUNNING, age=700, heartbeat=utcnow() - timedelta(seconds=500))
    unsent = seed(Upload, S.PENDING, age=700,
                  current_process_step="broker unreachable at redis://:***@broker:6379/0 (timeout)")
    seed(Precheck, S.PENDING, age=10)  # young: healthy
    body = client.get("/api/status").get_json()
    reasons = {item["id"]: item["reason"] for item in body["needs_attention"]}
    assert reasons == {str(held): "held by the limit", str(lost): "worker heartbeat lost",
                       str(unsent): "broker unreachable"}
    assert body["kinds"][[k["kind"] for k in body["kinds"]].index("precheck.run")]["in_use"] == 4
    assert any("held by its concurrency limit (4/4 slots in use)" in h for h in body["hints"])


def test_dispatched_too_long_without_workers_or_message_says_message_lost(client):
    stuck = seed(Precheck, S.DISPATCHED, age=400)
    body = client.get("/api/status").get_json()
    assert body["workers"]["answered"] is False
    [item] = body["needs_attention"]
    assert item["id"] == str(stuck) and item["status"] == "DISPATCHED"
    assert item["reason"] == "message lost"
    assert "queue 'celery' empty" in item["detail"] and "no worker answered" in item["detail"]


@pytest.mark.broker
def test_dispatched_too_long_with_a_live_worker_and_an_empty_queue_says_message_lost(worker, flask_app):
    stuck = seed(Precheck, S.DISPATCHED, age=400)
    body = flask_app.test_client().get("/api/status").get_json()
    assert body["workers"]["answered"] is True
    assert any("celery" in w["queues"] for w in body["workers"]["list"])
    [item] = body["needs_attention"]
    assert item["id"] == str(stuck)
    assert item["reason"] == "message lost"
    assert "queue 'celery' empty" in item["detail"]


@pytest.mark.broker
def test_the_workers_table_shows_counts_not_question_marks_for_a_worker_that_answers(worker):
    """At the default inspect timeout (0.5 s), sampled again and again: every live worker's
    active and reserved counts are numbers, on the JSON API and on the page."""
    app = make_flask_app(inspect_timeout=0.5)
    client = app.test_client()
    for _ in range(4):  # each sample waits out the inspect timeout twice (API and page)
        body = client.get("/api/status").get_json()
        assert body["workers"]["answered"] is True
        mine = [w for w in body["workers"]["list"] if w["name"] == worker.hostname]
        assert mine and mine[0]["active"] is not None and mine[0]["reserved"] is not None, body["workers"]
        page = client.get("/projects/admin/check-status/live").get_data(as_text=True)
        workers_panel = page.split('id="workers"', 1)[1].split("</section>", 1)[0]
        assert worker.hostname in workers_panel and "?" not in workers_panel


def test_a_count_a_worker_did_not_answer_is_said_in_words(client, monkeypatch):
    from api import broker

    view = broker.BrokerView(url="redis://broker", reachable=True, depths={"celery": 0}, workers=[
        {"name": "slow@host", "queues": ["celery"], "active": None, "reserved": 2}])
    monkeypatch.setattr(broker, "look", lambda *args, **kwargs: view)
    body = client.get("/api/status").get_json()
    assert body["workers"]["counts_timeout"] == 1.0
    panel = client.get("/projects/admin/check-status/live").get_data(as_text=True).split('id="workers"', 1)[1]
    panel = panel.split("</section>", 1)[0]
    assert "no answer within 1s" in panel and ">2<" in panel and "?" not in panel


@pytest.mark.broker
def test_dispatched_on_a_queue_no_worker_consumes_names_the_queue_and_its_depth(app, flask_app):
    config.configure(kind_settings={"precheck.run": {"queue": "nobody-consumes"}})
    registry.forget_settings()
    check = Precheck(project_id="p", check="c")
    check.save()
    check.run()  # really published: one message waits in the queue
    assert check.reload_status().process_status == "DISPATCHED"
    Precheck._get_collection().update_one({"_id": check.pk},
                                          {"$set": {"last_status_change": utcnow() - timedelta(seconds=400)}})
    body = flask_app.test_client().get("/api/status").get_json()
    [item] = body["needs_attention"]
    assert item["reason"] == "no worker consumes the queue"
    assert "no worker consumes queue 'nobody-consumes' (1 message waiting)" in item["detail"]
    assert {"name": "nobody-consumes", "depth": 1} == {k: v for k, v in body["queues"][-1].items()
                                                        if k in ("name", "depth")}


def test_list_is_newest_change_first_and_pages_through_every_process_once(client):
    now = utcnow()
    ids = []
    for i, cls in enumerate([Precheck, Upload, Precheck, Entry, Upload, Precheck, Entry]):
        ids.append(str(seed(cls, S.SUCCESS, last_status_change=now - timedelta(seconds=10 * i))))
    same_time = now - timedelta(seconds=100)
    ids += [str(seed(Upload, S.SUCCESS, last_status_change=same_time)),
            str(seed(Precheck, S.SUCCESS, last_status_change=same_time))]
    seen, cursor = [], None
    for _ in range(10):
        url = "/api/procs?status=SUCCESS&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen[:7] == ids[:7]
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)


def test_list_filters_by_status_and_kind(client):
    running = seed(Precheck, S.RUNNING)
    seed(Precheck, S.FAILURE)
    seed(Upload, S.RUNNING)
    body = client.get("/api/procs?status=RUNNING&kind=precheck.run").get_json()
    assert [item["id"] for item in body["items"]] == [str(running)]
    assert body["items"][0]["worker"] == "celery@seed-host"
    assert len(client.get("/api/procs?kind=upload").get_json()["items"]) == 1
    assert len(client.get("/api/procs").get_json()["items"]) == 3


def test_detail_has_every_field_errors_warnings_and_history(client):
    pk = seed(Precheck, S.FAILURE, errors=["ValueError: bad input"], warnings=["slow disk"])
    body = client.get(f"/api/procs/precheck/{pk}").get_json()
    assert body["status"] == "FAILURE" and body["kind"] == "precheck.run"
    assert body["errors"] == ["ValueError: bad input"] and body["warnings"] == ["slow disk"]
    assert body["fields"]["check"].startswith("check-") and body["fields"]["_id"] == str(pk)
    assert body["history"][0]["event"] == "seeded"
    assert body["actions"] == {"reset": True, "redispatch": True, "cancel": False}


@pytest.mark.parametrize("url, parameter", [
    ("/api/procs?status=BOGUS", "status"),
    ("/api/procs?status=running", "status"),
    ("/api/procs?limit=abc", "limit"),
    ("/api/procs?limit=-1", "limit"),
    ("/api/procs?limit=0", "limit"),
    ("/api/procs?limit=1.5", "limit"),
    ("/api/procs?limit=100000", "limit"),
    ("/api/procs?cursor=not-a-cursor", "cursor"),
    ("/api/procs?cursor=W10", "cursor"),
    ("/api/procs?kind=nope", "kind"),
    ("/api/procs?kind=precheck.nope", "kind"),
    ("/api/status?workers=maybe", "workers"),
    ("/api/procs/precheck/not-an-id", "id"),
])
def test_bad_input_answers_400_naming_the_parameter(client, url, parameter):
    response = client.get(url)
    assert response.status_code == 400
    body = response.get_json()
    assert body["parameter"] == parameter and body["status"] == 400 and body["error"]


@pytest.mark.parametrize("url, parameter", [
    ("/api/procs/nosuchcollection/0123456789abcdef01234567", "collection"),
    (f"/api/procs/precheck/{ObjectId()}", "id"),
])
def test_unknown_collection_or_process_answers_404_naming_it(client, url, parameter):
    response = client.get(url)
    assert response.status_code == 404
    assert response.get_json()["parameter"] == parameter


def test_unknown_routes_and_methods_answer_json_errors(client):
    assert client.get("/api/nope").status_code == 404
    assert client.get("/api/nope").get_json()["status"] == 404
    response = client.delete("/api/status")
    assert response.status_code == 405 and response.get_json()["status"] == 405


@pytest.mark.parametrize("url", ["/api/status", "/api/procs", "/api/openapi.json",
                                 "/projects/admin/check-status/", "/projects/admin/check-status/live",
                                 "/projects/admin/check-status/procs"])
def test_with_a_token_every_api_and_page_route_requires_it(secured, url):
    response = secured.get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert secured.get(url, headers=bearer("wrong")).status_code == 401
    assert secured.get(url, headers=basic(password="wrong")).status_code == 401
    assert secured.get(url, headers=bearer()).status_code == 200
    assert secured.get(url, headers=basic()).status_code == 200


def test_without_a_token_routes_are_open_to_this_machine_and_health_never_needs_one(client, secured):
    assert client.get("/api/status").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/metrics").status_code == 401  # with a token, /metrics needs one (test_security)
    assert secured.get("/metrics", headers=bearer()).status_code == 200


def test_no_credentials_in_any_page_or_response(monkeypatch):
    config.configure(mongodb_uri="mongomock://dbuser:db-s3cret@localhost/proc_test")
    broken = messaging.make_app(config.Settings(**{**config.get().__dict__,
                                                    "broker_url": "redis://:br0ker-s3cret@127.0.0.1:9/0",
                                                    "dispatch_timeout": 1.0}))
    messaging.set_app(broken)
    try:
        app = make_flask_app(TOKEN, inspect_timeout=0.2)
        c = app.test_client()
        seed(Precheck, S.DISPATCHED, age=400)
        pages = {url: c.get(url, headers=bearer()) for url in (
            "/api/status", "/projects/admin/check-status/", "/projects/admin/check-status/live",
            "/healthz", "/metrics", "/api/procs", "/api/openapi.json")}
    finally:
        messaging.set_app(None)
    status = pages["/api/status"].get_json()
    assert status["broker"] == {"url": "redis://:***@127.0.0.1:9/0", "reachable": False,
                                "error": status["broker"]["error"]}
    assert status["database"]["url"] == "mongomock://dbuser:***@localhost/proc_test"
    assert status["needs_attention"][0]["reason"] == "broker unreachable"
    assert pages["/healthz"].status_code == 503
    for url, response in pages.items():
        text = response.get_data(as_text=True)
        for secret in ("db-s3cret", "br0ker-s3cret", TOKEN):
            assert secret not in text, f"{secret} leaked in {url}"


def test_metrics_count_processes_per_status_and_kind_from_the_database(client):
    seed_every_status()
    seed(Precheck, S.DISPATCHED, age=90)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'proc_processes{collection="precheck",method="run",status="DISPATCHED"} 3.0' in text
    assert 'proc_processes{collection="upload",method="process_upload",status="FAILURE"} 1.0' in text
    assert 'proc_processes{collection="entry",method="process_entry",status="RUNNING"} 0.0' in text
    assert 'proc_concurrency_limit{kind="precheck.run"} 4.0' in text
    line = next(l for l in text.splitlines() if l.startswith('proc_oldest_age_seconds{status="DISPATCHED"}'))
    assert 89 <= float(line.split()[-1]) < 120


def test_healthz_reports_database_and_broker(client):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["broker"]["ok"]


def test_page_is_rendered_on_the_server_with_every_box_and_count(client):
    seed_every_status()
    html = client.get("/projects/admin/check-status/").get_data(as_text=True)
    positions = [html.index(f'id="box-{s}"') for s in ORDER]
    assert positions == sorted(positions)
    for status in ORDER:
        assert f'id="box-{status}"' in html
    assert html.count('data-count="3"') == 7
    assert "Workers did not answer" in html
    assert 'src="/static/check-status.js"' in html and "http" not in html.split("<body>")[0].replace(
        'http-equiv', '')
    assert client.get("/static/check-status.js").status_code == 200
    assert client.get("/static/check-status.css").status_code == 200


def test_page_lists_and_details_and_answers_bad_input_with_an_error_page(client):
    pk = seed(Precheck, S.FAILURE, errors=["boom"])
    listing = client.get("/projects/admin/check-status/procs?status=FAILURE").get_data(as_text=True)
    assert f"/projects/admin/check-status/procs/precheck/{pk}" in listing
    detail = client.get(f"/projects/admin/check-status/procs/precheck/{pk}").get_data(as_text=True)
    assert "boom" in detail and "seeded by the test" in detail
    bad = client.get("/projects/admin/check-status/procs?status=NOPE")
    assert bad.status_code == 400 and "unknown status" in bad.get_data(as_text=True)
    assert client.get(f"/projects/admin/check-status/procs/precheck/{ObjectId()}").status_code == 404


def test_create_app_serves_the_embedded_database_but_the_separate_server_entry_points_refuse_it():
    import importlib
    import sys

    from proc.exceptions import ConfigurationError

    config.configure(mongodb_uri=config.EMBEDDED_MONGODB_URI)
    assert make_flask_app().test_client().get("/healthz").status_code == 200
    sys.modules.pop("api.wsgi", None)
    with pytest.raises(ConfigurationError, match="embedded database"):
        importlib.import_module("api.wsgi")


def test_status_and_page_name_each_recovery_of_the_monitor_with_its_reason_and_a_link(client):
    from proc import monitor

    html = client.get("/projects/admin/check-status/").get_data(as_text=True)
    assert "Recently recovered" in html and "No recoveries in the last 24 h." in html
    assert client.get("/api/status").get_json()["recoveries"] == []

    config.configure(kind_settings={"upload.process_upload": {"recovery": "fail"}})
    registry.forget_settings()
    lost = seed(Upload, S.RUNNING, age=900, heartbeat=utcnow() - timedelta(seconds=600))
    report = monitor.sweep(now=utcnow())
    assert [o.action for o in report.outcomes] == [monitor.Action.FAILED]

    body = client.get("/api/status").get_json()
    assert body["needs_attention"] == []  # recovered: no longer stuck
    [entry] = body["recoveries"]
    link = f"/projects/admin/check-status/procs/upload/{lost}"
    assert {k: entry[k] for k in ("collection", "id", "kind", "status_before", "attempt", "action", "reason",
                                  "url")} == {
        "collection": "upload", "id": str(lost), "kind": "upload.process_upload", "status_before": "RUNNING",
        "attempt": 1, "action": "failed", "reason": "worker heartbeat lost", "url": link}
    assert entry["action_text"] == "marked it FAILURE"
    from api.openapi import spec

    described = spec()["components"]["schemas"]["Status"]["properties"]["recoveries"]["items"]
    assert set(described["required"]) <= set(entry) <= set(described["properties"])
    assert entry["detail"].startswith("worker heartbeat lost after 600 s on host celery@seed-host")
    assert entry["time"].endswith("Z") and 0 <= entry["age_seconds"] < 60

    for url in ("/projects/admin/check-status/", "/projects/admin/check-status/live"):
        html = client.get(url).get_data(as_text=True)
        panel = html[html.index('id="recoveries"'):html.index('id="kinds"')]
        assert f'href="{link}"' in panel and str(lost)[-8:] in panel
        assert "worker heartbeat lost" in panel and "marked it FAILURE" in panel
        assert "No recoveries" not in panel
        assert html.index('id="attention"') < html.index('id="recoveries"')

    # The process's own page says the monitor failed it, and why.
    detail = client.get(link).get_data(as_text=True)
    history = detail[detail.index('id="history"'):]
    assert "<td>monitor</td>" in history and "monitor: worker heartbeat lost" in history
    assert "worker heartbeat lost after 600 s" in detail  # in its errors


def test_recoveries_are_the_newest_of_the_window_at_most_the_limit(monkeypatch):
    from proc import monitor
    from proc.monitor import recovery
    from proc.store import db

    now = utcnow()
    records = [{"time": now - timedelta(minutes=i), "collection": "precheck", "id": ObjectId(),
                "kind": "precheck.run", "status": "DISPATCHED", "attempt": 1, "reason": "not started by any worker",
                "detail": "d", "action": action}
               for i, action in enumerate([monitor.Action.RETRIED, monitor.Action.RESENT, monitor.Action.JOINED,
                                           monitor.Action.ALERTED])]
    records.append({**records[0], "id": ObjectId(), "time": now - timedelta(hours=25)})  # out of the window
    db.database()[recovery.RECOVERIES].insert_many(records)
    finds = []
    original = recovery.recent_recoveries
    monkeypatch.setattr(recovery, "recent_recoveries", lambda *a, **k: finds.append(k) or original(*a, **k))
    app = make_flask_app(None, inspect_timeout=0.2, PROC_RECOVERY_LIMIT=3)
    body = app.test_client().get("/api/status?workers=false").get_json()
    assert [r["id"] for r in body["recoveries"]] == [str(r["id"]) for r in records[:3]]
    assert [r["action_text"] for r in body["recoveries"]] == [
        "sent it again as a new attempt", "handed it to the broker again", "ran its lost join"]
    assert len(finds) == 1 and body["recoveries_window_hours"] == 24
    wide = make_flask_app(None, inspect_timeout=0.2, PROC_RECOVERY_HOURS=48)
    assert len(wide.test_client().get("/api/status?workers=false").get_json()["recoveries"]) == 5
