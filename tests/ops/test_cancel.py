"""Cancelling a running process: its code learns of it within one heartbeat interval, its
next set_step() raises ProcessCancelled (which ``except Exception`` does not catch), its
finally blocks run, and the history says when it stopped. A recovery by the monitor is not
mistaken for a cancel."""
from __future__ import annotations

import time

import pytest

import cancel_models as cm
from cancel_models import Branch, Looper
from celery import Celery

from proc import ProcessCancelled, config, machine
from proc.monitor import terminate
from proc.ops import admin
from proc.run import heartbeat
from proc.status import MARKS, RULES, ProcessStatus as S
from support import report_page, wait_for

pytestmark = pytest.mark.broker

LOOP = 0.1  # seconds between two set_step() calls of the body


def start(style: str, seconds: float = 30.0) -> Looper:
    doc = Looper(style=style, seconds=seconds)
    doc.save()
    doc.loop()
    wait_for(lambda: (doc.reload_status().current_process_step or "").startswith("step")
             or (style in ("ask", "silent") and doc.process_status == "RUNNING"), timeout=15, message="the loop to run")
    return doc


@pytest.mark.parametrize("style", ["steps", "swallow", "ask"])
def test_a_cancelled_loop_stops_within_one_heartbeat_interval_and_its_finally_runs(worker, style):
    interval = config.get().heartbeat_interval
    doc = start(style)
    key = str(doc.pk)
    cancelled_at = time.monotonic()
    admin.cancel("test_looper", doc.pk, by="tester")
    wait_for(lambda: key in cm.stopped_at, timeout=10, message="the body's finally")
    took = cm.stopped_at[key] - cancelled_at
    # a beat within one interval finds the cancel; the next set_step (<= LOOP later) raises
    assert took <= interval + LOOP + 0.3, took
    assert cm.runs[key] == 1 and cm.finals[key] == 1
    wait_for(lambda: any(h.get("event") == "stopped" for h in doc.reload().history), timeout=10,
             message="the stopped entry")
    assert doc.process_status == "FAILURE" and doc.errors == ["cancelled by tester"]
    fail, stopped = doc.history[-2], doc.history[-1]
    assert fail["event"] == "fail" and fail["note"] == "cancelled by tester"
    assert stopped["status"] == "FAILURE" and stopped["note"] == "the code stopped (cancelled by tester)"
    assert stopped["time"] >= fail["time"] and stopped["attempt"] == doc.attempt


def test_process_cancelled_is_exported_and_not_an_exception():
    assert issubclass(ProcessCancelled, BaseException) and not issubclass(ProcessCancelled, Exception)
    assert "stopped" in MARKS and "stopped" not in RULES


def test_a_monitor_recovery_is_not_a_cancel_the_method_runs_on(worker):
    doc = start("steps", seconds=1.5)
    key = str(doc.pk)
    machine.transition(machine.Attempt.of_doc(doc.reload()), "fail", machine.Change(
        errors=["monitor: worker heartbeat lost"], note="monitor: worker heartbeat lost", by="monitor"))
    wait_for(lambda: any(b.superseded for b in heartbeat.active()
                         if b.attempt.id == doc.pk), timeout=5, message="the beat to miss")
    first = cm.runs[key]
    assert key not in cm.stopped_at and first == 1  # the loop runs on; its writes change nothing
    assert not doc.cancel_requested()
    wait_for(lambda: key in cm.stopped_at, timeout=10, message="the loop to end on its own")
    assert cm.runs[key] == 1 and cm.finals[key] == 1
    admin_fail = doc.reload()
    assert admin_fail.process_status == "FAILURE"
    assert not any(h.get("event") == "stopped" for h in admin_fail.history)


def test_cancel_requested_outside_the_worker_reads_the_document():
    doc = Looper()
    doc.save()
    coll = doc._get_collection_name()
    machine.transition(machine.Attempt(coll, doc.pk, 0), "request", machine.Change(fields={"current_process": "loop"}))
    doc.reload_status()
    assert not doc.cancel_requested()
    admin.cancel(coll, doc.pk, by="tester")
    assert doc.cancel_requested()
    assert doc.reload().process_status == S.FAILURE.value


def test_cancelling_a_parent_cancels_its_children_and_grandchildren_and_no_join_runs(worker):
    root = Branch(depth=1, width=2)
    root.save()
    root.grow()
    wait_for(lambda: Looper.objects(process_status="RUNNING").count() == 4, timeout=20,
             message="the four grandchildren to run")
    branches = list(Branch.objects(depth=0))
    loopers = list(Looper.objects())
    assert root.reload_status().process_status == "WAITING_FOR_RESULT"
    admin.cancel("test_branch", root.pk, by="tester")
    for doc in [root, *branches, *loopers]:
        doc.reload()
        assert doc.process_status == "FAILURE", doc.describe()
        assert doc.history[-1].get("by") == "tester" or doc.history[-1]["event"] == "stopped"
    for looper in loopers:  # their code learns of it and stops
        wait_for(lambda looper=looper: str(looper.pk) in cm.stopped_at, timeout=10, message="a grandchild to stop")
        assert cm.runs[str(looper.pk)] == 1 and cm.finals[str(looper.pk)] == 1
        wait_for(lambda looper=looper: looper.reload().history[-1]["event"] == "stopped", timeout=10,
                 message="its stopped entry")
        assert looper.errors == ["cancelled by tester (with its parent)"]
    assert sum(cm.joins.values()) == 0
    assert all(d.reload().process_status == "FAILURE" for d in [root, *branches])


@pytest.mark.parametrize("status", [S.READY, S.SUCCESS, S.FAILURE])
def test_cancelling_a_process_that_is_not_active_answers_409_naming_its_status(status):
    from api_seed import seed
    from proc.demo.models import Precheck
    from support import make_flask_app

    pk = seed(Precheck, status)
    response = make_flask_app().test_client().post(f"/api/procs/precheck/{pk}/cancel", headers={"X-Proc-Request": "1"})
    assert response.status_code == 409
    assert response.get_json()["error"] == f"cannot cancel a process that is {status.value}"


def test_the_demo_report_cancelled_while_it_runs_stops_and_keeps_the_pages_it_did(worker, monkeypatch):
    from proc.demo import models

    monkeypatch.setitem(models.PACE, "seconds", 0.1)
    report = models.Report(name="r", pages=200)
    report.save()
    report.build()
    wait_for(lambda: report_page(report) >= 3, timeout=15, message="the report to run")
    admin.cancel("report", report.pk, by="tester")
    wait_for(lambda: report.reload().history[-1]["event"] == "stopped", timeout=10, message="the stop")
    assert report.process_status == "FAILURE" and 3 <= report.pages_done < 200


# -- forced stop (terminate) --------------------------------------------------------------------


def marks(doc) -> list[str]:
    return [h["event"] for h in doc.reload().history]


def test_terminate_on_the_threads_pool_says_it_cannot_and_never_claims_a_stop(worker):
    doc = start("silent", seconds=1.5)
    key = str(doc.pk)
    assert doc.reload().worker_pool == "threads"  # the claim recorded the pool
    done = admin.cancel("test_looper", doc.pk, by="tester", terminate=True)
    [plan] = done.stops
    assert done.after["process_status"] == "FAILURE"
    assert plan.outcome == "cannot" and plan.pool == "threads"
    assert plan.detail.startswith(f"the threads pool of {doc.worker_hostname} cannot stop running code")
    # nothing stops it: the silent body runs to its own end, and only then is it marked stopped
    # (on a loaded machine its 1.5 s may be over before the history is read: compare it then)
    wait_for(lambda: key in cm.stopped_at, timeout=10, message="the silent body to end by itself")
    wait_for(lambda: marks(doc)[-1] == "stopped", timeout=10, message="the stopped entry")
    assert marks(doc)[-3:] == ["fail", "cannot_terminate", "stopped"]
    assert cm.runs[key] == 1 and cm.finals[key] == 1
    assert "terminate_requested" not in marks(doc) and "terminate_sent" not in marks(doc)


def test_terminate_on_prefork_is_sent_by_a_worker_after_the_grace_not_by_the_caller(worker, database):
    from api_seed import seed
    from proc.demo.models import Upload

    pk = seed(Upload, S.RUNNING, age=5, worker_pool="prefork", worker_pid=999999)
    started = time.monotonic()
    done = admin.cancel("upload", pk, by="tester", terminate=True)
    [plan] = done.stops
    assert plan.outcome == "scheduled" and plan.after_seconds == config.get().cancel_grace
    doc = Upload.objects.get(pk=pk)
    assert marks(doc)[-2:] == ["fail", "terminate_requested"]  # the caller sent nothing itself
    wait_for(lambda: marks(doc)[-1] == "terminate_sent", timeout=15, message="the worker's terminate")
    assert time.monotonic() - started >= config.get().cancel_grace
    # no worker runs that task: no pool process was seen to stop, so no stop is claimed
    assert "stopped" not in marks(doc)


def test_the_due_terminate_does_nothing_to_a_new_attempt_or_to_code_that_stopped(database):
    from api_seed import seed
    from proc.demo.models import Upload

    class Recorder:  # stands in for app.control: the real broadcast is tested end to end
        def __init__(self):
            self.revoked = []

        def revoke(self, *args, **kwargs):
            self.revoked.append((args, kwargs))

    app = type("App", (), {})()
    app.control = Recorder()
    moved_on = seed(Upload, S.RUNNING, attempt=2)
    assert terminate.due("upload", moved_on, 1, "t1", app=app) == "superseded"
    stopped = seed(Upload, S.FAILURE)
    Upload._get_collection().update_one({"_id": stopped}, {"$push": {"history": {
        "status": "FAILURE", "event": "stopped", "attempt": 1, "time": None}}})
    assert terminate.due("upload", stopped, 1, "t2", app=app) == "already stopped"
    assert app.control.revoked == []
    running = seed(Upload, S.FAILURE)
    assert terminate.due("upload", running, 1, "t3", app=app) == "terminate sent"
    assert app.control.revoked == [(("t3",), {"terminate": True, "signal": "SIGTERM"})]


def test_the_terminate_is_in_the_history_before_the_stop_the_worker_records_at_once(database):
    """The worker writes ``stopped`` as soon as the pool process is gone, which on a loaded
    machine came before a ``terminate_sent`` written after the broadcast (one real-tier run)."""
    from api_seed import seed
    from proc.demo.models import Upload

    pk = seed(Upload, S.FAILURE)
    attempt = machine.Attempt("upload", pk, 1)

    class StopsAtOnce:  # the worker's side, as fast as it can be: the stop lands in the broadcast
        def revoke(self, *args, **kwargs):
            machine.mark(attempt, "stopped", note="the code was terminated (SIGTERM to pool process 1)")

    app = type("App", (), {"control": StopsAtOnce()})()
    assert terminate.due("upload", pk, 1, "t1", app=app) == "terminate sent"
    assert marks(Upload.objects.get(pk=pk))[-2:] == ["terminate_sent", "stopped"]


def test_a_terminate_the_broker_does_not_take_is_said_in_the_history(database):
    from api_seed import seed
    from proc.demo.models import Upload
    from support import free_port

    pk = seed(Upload, S.FAILURE)
    dead = Celery("dead", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    dead.conf.broker_transport_options = {"max_retries": 0}  # kombu's publish retries take 6 s
    assert terminate.due("upload", pk, 1, "t1", app=dead) == "terminate not sent"
    doc = Upload.objects.get(pk=pk)
    assert marks(doc)[-2:] == ["terminate_sent", "terminate_not_sent"]
    assert "the broker did not take the terminate" in doc.history[-1]["note"]


def test_a_broker_that_is_down_is_reported_and_the_cancel_stands(database):
    from api_seed import seed
    from proc.demo.models import Upload
    from support import free_port

    pk = seed(Upload, S.RUNNING, worker_pool="prefork")
    dead = Celery("dead", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    before = Upload._get_collection().find_one({"_id": pk})
    admin.cancel("upload", pk, by="tester")
    plan = terminate.plan(machine.Attempt.of("upload", before), before, app=dead)
    assert plan.outcome == "not_sent" and "the broker is away" in plan.detail
    assert Upload._get_collection().find_one({"_id": pk})["process_status"] == "FAILURE"


def test_a_bulk_cancel_of_running_loops_writes_each_ones_phases_and_stops_them(worker):
    from proc.ops import bulk
    from proc.ops.filters import from_options

    docs = [start("steps") for _ in range(2)]
    result = bulk.run("cancel", from_options(kind="test_looper.loop", status=["RUNNING"]), by="tester")
    assert result.changed == 2
    for doc in docs:
        wait_for(lambda doc=doc: str(doc.pk) in cm.stopped_at, timeout=10, message="the loop to stop")
        doc.reload()
        assert doc.process_status == "FAILURE"
        phases = doc._get_collection().find_one({"_id": doc.pk})["phases"]
        assert set(phases) == {"held", "queued", "run"} and phases["run"] > 0, phases
