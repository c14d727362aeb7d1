"""The Celery tasks of proc. Thin: the work is in ``proc.execution`` and ``proc.monitor``.

Each task first asks ``db.database()``, so the process it runs in (a prefork pool process,
or the worker itself for threads and solo pools) is connected on its own.
"""
from __future__ import annotations

import logging

from bson import json_util
from celery import shared_task

from . import db, execution, messaging, monitor, terminate
from .names import BUCKET_TASK, CHECK_TASK, RUN_TASK, SWEEP_TASK, TERMINATE_TASK

log = logging.getLogger(__name__)


@shared_task(name=RUN_TASK, bind=True, acks_late=True, ignore_result=True)
def run(self, collection, id_json, method, args, kwargs, attempt):
    """Run one attempt of one process (the only task proc sends for processes)."""
    db.database()
    host = messaging.receiving_worker(self.request.id)
    return execution.run_message(collection, id_json, method, args, kwargs, attempt,
                                 hostname=host or self.request.hostname)


@shared_task(name=CHECK_TASK, bind=True, acks_late=True, ignore_result=True)
def monitor_check(self, collection, id_json, attempt):
    """The per-process check of one attempt (scheduled at its deadline; see ``proc.monitor``)."""
    db.database()
    return monitor.check(collection, json_util.loads(id_json), attempt, app=self.app).action.value


@shared_task(name=BUCKET_TASK, bind=True, acks_late=True, ignore_result=True)
def monitor_bucket(self, kind_name, start, end):
    """The check of every process of one kind whose deadline is in one bucket (see ``proc.monitor``)."""
    from datetime import datetime

    db.database()
    outcomes = monitor.check_bucket(kind_name, datetime.fromisoformat(start), datetime.fromisoformat(end),
                                    app=self.app)
    return len(outcomes)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def monitor_sweep():
    """One sweep of the monitor (Celery beat runs it; see ``proc.messaging.beat_schedule``)."""
    db.database()
    report = monitor.sweep()
    for line in report.lines():
        log.info("%s", line)
    return len(report.outcomes)


@shared_task(name=TERMINATE_TASK, bind=True, acks_late=True, ignore_result=True)
def terminate_after_grace(self, collection, id_json, attempt, task_id):
    """The grace of a forced cancel has passed: terminate the code if it still runs (``proc.terminate``)."""
    db.database()
    outcome = terminate.due(collection, json_util.loads(id_json), attempt, task_id, app=self.app)
    log.info("forced stop of %s %s attempt %s: %s", collection, id_json, attempt, outcome)
    return outcome
