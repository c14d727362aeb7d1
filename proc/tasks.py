"""The Celery tasks of proc. Thin: the work is in ``proc.execution`` and ``proc.monitor``."""
from __future__ import annotations

import logging
import threading

from bson import json_util
from celery import shared_task, signals

from . import db, execution, heartbeat, monitor

log = logging.getLogger(__name__)

RUN_TASK = "proc.run"

# The node name of the worker that received each proc.run message, by task id. Celery's
# thread pool reports the machine's hostname as ``request.hostname``, not the worker's node
# name; heartbeats are kept per worker (``heartbeat.stop_worker``), so the run task needs it.
_received: dict[str, str] = {}
_received_lock = threading.Lock()
_RECEIVED_MAX = 10000


@signals.task_received.connect(weak=False)
def _remember_worker(sender=None, request=None, **_):
    if request is None or getattr(request, "name", None) != RUN_TASK:
        return
    with _received_lock:
        if len(_received) >= _RECEIVED_MAX:  # messages received but never run (worker stopped)
            _received.clear()
        _received[request.id] = getattr(sender, "hostname", None) or request.hostname


@signals.worker_process_init.connect(weak=False)
def _connect_pool_process(**_):
    """A prefork pool process connects on its own, right after the fork (the main process
    closed its connection before forking, see ``proc.startup``). Threads and solo pools
    connect on their first task; every task asks ``db.database()`` first."""
    try:
        db.database()
    except Exception:  # connect=False makes this cheap and offline; the first task reports
        log.exception("could not set up the MongoDB connection of this pool process")


@shared_task(name=RUN_TASK, bind=True, acks_late=True, ignore_result=True)
def run(self, collection, id_json, method, args, kwargs, attempt):
    """Run one attempt of one process (the only task proc sends for processes)."""
    db.database()
    with _received_lock:
        host = _received.pop(self.request.id, None)
    return execution.run_message(collection, id_json, method, args, kwargs, attempt,
                                 hostname=host or self.request.hostname)


@shared_task(name=monitor.CHECK_TASK, bind=True, acks_late=True, ignore_result=True)
def monitor_check(self, collection, id_json, attempt):
    """The per-process check of one attempt (scheduled at its deadline; see ``proc.monitor``)."""
    db.database()
    return monitor.check(collection, json_util.loads(id_json), attempt, app=self.app).action


@shared_task(name=monitor.SWEEP_TASK, ignore_result=True)
def monitor_sweep():
    """One sweep of the monitor (Celery beat runs it; see ``proc.celeryconf.beat_schedule``)."""
    db.database()
    report = monitor.sweep()
    for line in report.lines():
        monitor.log.info("%s", line)
    return len(report.outcomes)


@signals.worker_shutdown.connect(weak=False)
def _stop_heartbeats(sender=None, **_):
    """A worker that stopped heartbeats none of its processes any more."""
    hostname = getattr(sender, "hostname", None)
    if hostname:
        heartbeat.stop_worker(hostname)


class _NoBackendRevokeNoise(logging.Filter):
    """Workers without a result backend log a warning for every revoke; proc revokes the
    pending monitor check of every finished process, and has no result backend by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg.startswith("Failed to mark task %s as revoked in backend")
                    and record.args and str(record.args[0]).endswith("-monitor"))


logging.getLogger("celery.worker.control").addFilter(_NoBackendRevokeNoise())
