"""Cancelling a running process: its code learns of it within one heartbeat interval, its
next set_step() raises ProcessCancelled (which ``except Exception`` does not catch), its
finally blocks run, and the history says when it stopped. A recovery by the monitor is not
mistaken for a cancel."""
from __future__ import annotations

import time

import pytest

import cancel_models as cm
from cancel_models import Branch, Looper
from proc import ProcessCancelled, admin, config, machine
from proc.status import ProcessStatus as S
from support import wait_for

pytestmark = pytest.mark.broker

LOOP = 0.1  # seconds between two set_step() calls of the body


def start(style: str, seconds: float = 30.0) -> Looper:
    doc = Looper(style=style, seconds=seconds)
    doc.save()
    doc.loop()
    wait_for(lambda: (doc.reload_status().current_process_step or "").startswith("step")
             or (style == "ask" and doc.process_status == "RUNNING"), timeout=15, message="the loop to run")
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
    assert "stopped" in machine.MARKS and "stopped" not in machine.RULES


def test_a_monitor_recovery_is_not_a_cancel_the_method_runs_on(worker):
    doc = start("steps", seconds=1.5)
    key = str(doc.pk)
    machine.transition(machine.Attempt.of_doc(doc.reload()), "fail", machine.Change(
        errors=["monitor: worker heartbeat lost"], note="monitor: worker heartbeat lost", by="monitor"))
    wait_for(lambda: any(b.superseded for b in __import__("proc").heartbeat.active()
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
        assert doc.history[-1]["by"] == "tester" or doc.history[-1]["event"] == "stopped"
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
    def page() -> int:
        step = report.reload_status().current_process_step or ""
        return int(step.split()[1].split("/")[0]) if step.startswith("page ") else 0

    wait_for(lambda: page() >= 3, timeout=15, message="the report to run")
    admin.cancel("report", report.pk, by="tester")
    wait_for(lambda: report.reload().history[-1]["event"] == "stopped", timeout=10, message="the stop")
    assert report.process_status == "FAILURE" and 3 <= report.pages_done < 200
