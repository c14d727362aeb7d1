"""Celery's view of a process agrees with proc's: a FAILURE process is a failed task (Celery's
``task_failure`` signal, on a real in-process worker), a success a succeeded one; a revoke
that Celery's own tools sent is recorded as a cancel, proc's own revokes are not recorded
twice. On real prefork workers with ``celery events`` and ``celery control``: tests/system/test_e2e.py.
"""
from __future__ import annotations

import threading

import pytest
from celery import signals

from core_models import Job
from proc import tasks
from proc.exceptions import ProcessEndedFailure
from proc.machine import Attempt
from proc.names import RUN_TASK
from proc.ops import admin
from proc.run import pools
from proc.timeutil import utcnow
from support import wait_for


@pytest.fixture
def celery_outcomes():
    """Task id -> ("failure", exception) or ("success", return value), as Celery's signals said."""
    seen: dict = {}
    lock = threading.Lock()

    def failed(sender=None, task_id=None, exception=None, **_):
        if getattr(sender, "name", None) == RUN_TASK:
            with lock:
                seen[task_id] = ("failure", exception)

    def succeeded(sender=None, result=None, **_):
        if getattr(sender, "name", None) == RUN_TASK:
            with lock:
                seen[sender.request.id] = ("success", result)

    signals.task_failure.connect(failed, weak=False)
    signals.task_success.connect(succeeded, weak=False)
    yield seen
    signals.task_failure.disconnect(failed)
    signals.task_success.disconnect(succeeded)


def test_a_failure_process_fails_its_celery_task_with_procs_errors_and_a_success_succeeds(worker, celery_outcomes):
    broken, refused, fine = Job(label="broken"), Job(label="refused"), Job(label="fine")
    for job in (broken, refused, fine):
        job.save()
    broken.explode()
    refused.refuse()
    fine.noop()
    for job in (broken, refused, fine):
        job.block_until_complete(20)
        wait_for(lambda job=job: job.celery_task_id in celery_outcomes, timeout=10,
                 message=f"Celery's signal for {job.label}")
    kind, exc = celery_outcomes[broken.celery_task_id]
    assert kind == "failure" and isinstance(exc, ProcessEndedFailure)
    assert str(exc) == f"test_job/{broken.pk} attempt 1 ended FAILURE: ValueError: the input is broken"
    kind, exc = celery_outcomes[refused.celery_task_id]
    assert kind == "failure" and str(exc).endswith("ended FAILURE: first reason; second reason")
    assert celery_outcomes[fine.celery_task_id] == ("success", "SUCCESS")
    assert (broken.process_status, refused.process_status, fine.process_status) == ("FAILURE", "FAILURE", "SUCCESS")
    assert [broken.attempt, refused.attempt] == [1, 1]  # Celery retried nothing
    assert ProcessEndedFailure in tasks.run.throws  # logged as expected: no traceback


def _dispatched(label: str) -> Job:
    """A Job DISPATCHED at attempt 1 whose message no worker has taken (written directly)."""
    job = Job(label=label)
    job.save()
    Job._get_collection().update_one({"_id": job.pk}, {"$set": {
        "process_status": "DISPATCHED", "attempt": 1, "current_process": "noop", "celery_task_id": f"task-{job.pk}",
        "history": [{"status": "PENDING", "event": "request", "attempt": 1, "time": utcnow()},
                    {"status": "DISPATCHED", "event": "dispatched", "attempt": 1, "time": utcnow()}]}})
    return job.reload()


def test_a_revoke_by_celerys_tools_is_a_cancel_and_procs_own_is_not_recorded_twice(app):
    revoked = _dispatched("revoked by flower")
    attempt = Attempt.of_doc(revoked)
    assert tasks.record_celery_revoke(attempt, False, None) is True
    revoked.reload()
    assert revoked.process_status == "FAILURE" and revoked.errors == ["cancelled by celery (revoked through Celery)"]
    assert revoked.history[-1]["by"] == tasks.CELERY_REVOKE
    assert tasks.record_celery_revoke(attempt, False, None) is False  # seen again: nothing more
    assert [h["event"] for h in revoked.reload().history].count("fail") == 1

    cancelled = _dispatched("cancelled by proc")
    admin.cancel("test_job", cancelled.pk, by="cli:ann")  # proc's own cancel revokes the task after it
    assert tasks.record_celery_revoke(Attempt.of_doc(cancelled), False, None) is False
    assert cancelled.reload().history[-1]["by"] == "cli:ann"

    stale = _dispatched("an older attempt's message")
    assert tasks.record_celery_revoke(Attempt.of_doc(stale).with_number(7), True, 15) is False
    assert stale.reload_status().process_status == "DISPATCHED"


def test_the_revoke_listener_is_added_once_by_connect_signal_handlers():
    tasks.connect_signal_handlers()
    tasks.connect_signal_handlers()
    assert pools.revoke_listeners.count(tasks.record_celery_revoke) == 1
