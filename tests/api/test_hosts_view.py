"""The view of many hosts: per worker, what it recorded of itself (``proc_workers``, written by
``proc.run.presence``) and its RUNNING processes; a worker that stopped answering is named with
them, on the page, in ``/api/status`` and in ``/metrics``."""
from __future__ import annotations

from datetime import timedelta

from api_seed import seed
from proc.demo.models import Precheck
from proc.run import presence
from proc.store import db
from proc.timeutil import utcnow


def record(name: str, age: float, **fields) -> None:
    db.database()[presence.COLLECTION].insert_one({
        "_id": name, "host": name.split("@")[1], "pool": "prefork", "concurrency": 4, "queues": ["proc"],
        "pid": 123, "clock_offset": -0.25, "clock_rtt": 0.001, "last_seen": utcnow() - timedelta(seconds=age),
        **fields})


def test_a_worker_that_stopped_answering_is_named_with_its_running_processes(client):
    record("w1@a", age=40)
    record("w2@b", age=0.1, clock_offset=300.0)
    now = utcnow()
    stale = [seed(Precheck, "RUNNING", worker_hostname="w1@a", heartbeat=now - timedelta(seconds=40 + i))
             for i in range(3)]
    seed(Precheck, "RUNNING", worker_hostname="w2@b", heartbeat=now)
    body = client.get("/api/status?workers=false").get_json()
    first, second = body["hosts"]
    assert first["name"] == "w1@a" and not first["answering"]
    assert first["said"] == "w1@a has not answered for 40 s; its 3 RUNNING processes' heartbeats are 42 s old"
    assert {p["id"] for p in first["running"]} == {str(i) for i in stale}
    assert first["busy"] == 3 and first["concurrency"] == 4 and first["pool"] == "prefork"
    assert first["queues"] == ["proc"] and first["clock_offset_seconds"] == -0.25
    assert second["name"] == "w2@b" and second["answering"] and second["said"] is None
    assert second["busy"] == 1 and second["clock_offset_seconds"] == 300.0
    assert second["oldest_heartbeat_age_seconds"] < 5

    page = client.get("/projects/admin/check-status/live").get_data(as_text=True).split('id="hosts"', 1)[1]
    assert "w1@a has not answered for 40 s; its 3 RUNNING processes&#39; heartbeats are 42 s old" in page
    assert str(stale[0]) in page and "+300.000 s" in page and "3 / 4" in page

    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'proc_host_answering{worker="w1@a"} 0.0' in metrics
    assert 'proc_host_answering{worker="w2@b"} 1.0' in metrics
    assert 'proc_host_running{worker="w1@a"} 3.0' in metrics
    assert 'proc_host_clock_offset_seconds{worker="w2@b"} 300.0' in metrics


def test_a_worker_gone_for_an_hour_that_runs_nothing_is_left_out_and_an_unrecorded_one_is_shown(client):
    record("old@x", age=7200)
    seed(Precheck, "RUNNING", worker_hostname="celery@inproc", heartbeat=utcnow() - timedelta(seconds=30))
    hosts = client.get("/api/status?workers=false").get_json()["hosts"]
    assert [h["name"] for h in hosts] == ["celery@inproc"]
    assert hosts[0]["said"].startswith("celery@inproc keeps no record of itself")
    assert "its 1 RUNNING process' heartbeat is 30 s old" in hosts[0]["said"]
