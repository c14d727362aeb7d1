"""The Celery tasks of proc. Thin: the work is in ``proc.run.execution`` and ``proc.monitor``.

Each task first asks ``db.database()``, so the process it runs in (a prefork pool process,
or the worker itself for threads and solo pools) is connected on its own.

``proc.run`` is acknowledged when a pool process takes it (``acks_late=False``, unlike the
monitor's tasks): from its claim on, the document and the monitor own the attempt's recovery,
and a message held unacknowledged for the whole run would meet RabbitMQ's ``consumer_timeout``
(the channel closed, the worker exiting with ``PreconditionFailed``) and Redis's
``visibility_timeout`` (a second copy) for every process longer than they. A worker that dies
between taking the message and writing the claim leaves the attempt DISPATCHED: the monitor's
"not started" check (after the kind's queue timeout) applies the policy; messages a worker
reserved but no pool process took yet are unacknowledged and delivered again. A worker lowers
its prefetch by one for each such run (``proc.run.prefetch``), so one whose pool processes are
all busy holds at most one message it cannot start yet. See docs/faults.md,
"Acknowledgements and broker timeouts".

A prefork worker watches its own running ``proc.run`` requests (``watch_pool``, a thread of
the worker's main process, every ``WATCH_INTERVAL`` seconds): as soon as a request's pool
process is gone (SIGKILL, out of memory) while its attempt is still RUNNING on this very
worker (``proc.run.pools.lost_here``: pid and start time), the kind's recovery policy for a
lost heartbeat is applied now (``proc.monitor.recovery.recover_lost``), not a heartbeat
timeout and a sweep later. Celery's own report of the death (``WorkerLostError``, a
``task_failure`` in the main process, ``recover_on_worker_lost``) makes the same check, in
case it came first; so does a ``proc.run`` message that finds nothing to claim (a duplicate,
or a message a broker delivered again). Whichever comes first recovers; the others find it
recovered and do nothing.

A process that ends FAILURE ends its task as failed (``ProcessEndedFailure``, one of the
task's expected errors: logged without a traceback): Celery's ``task-failed`` event, Flower
and celery-exporter count it. Nothing is retried by Celery; the message is acknowledged as
any other.

A revoke sent by Celery's own tools (Flower's Revoke or Terminate, ``celery control revoke``
or ``terminate``) of an attempt that is still active is recorded as a cancel
(``record_celery_revoke``: ``proc.ops.admin.cancel``, by "celery (revoked through Celery)");
a terminated one's stop is then recorded as a forced cancel's is (``proc.run.pools``).
proc's own revokes come after its own cancel wrote FAILURE, so they are not recorded twice.

``connect_signal_handlers()`` (called by ``celery_app.py``) starts the watch on a prefork
worker and adds the revoke listener.
"""
from __future__ import annotations

import logging
import threading
import time

from bson import json_util
from celery import shared_task, signals
from celery.exceptions import Retry

from . import monitor, registry
from .monitor import recovery, terminate
from .exceptions import ClaimNotWritten, ProcError, ProcessEndedFailure
from .machine import Attempt
from .ops import admin
from .run import execution, messaging, pools
from .status import PROCESSING_VALUES, ProcessStatus as S
from .store import db
from .names import BUCKET_TASK, CHECK_TASK, RUN_TASK, SWEEP_TASK, TERMINATE_TASK

log = logging.getLogger(__name__)


@shared_task(name=RUN_TASK, bind=True, acks_late=False, ignore_result=True, throws=(ProcessEndedFailure,),
             Request="proc.run.request:RunRequest", Strategy="proc.run.prefetch:strategy")
def run(self, collection, id_json, method, args, kwargs, attempt):
    """Run one attempt of one process (the only task proc sends for processes). Raises
    ``ProcessEndedFailure`` when the attempt ended FAILURE (cancelled included).

    A claim this worker could not write (``ClaimNotWritten``: the database did not answer it
    for ``PROC_DB_OUTAGE_TIMEOUT``; it is cut off, or the database is down for everyone) ends
    the task as a Celery retry, and the worker's main process stops consuming and publishes
    the same message again for a worker that can reach the database (``proc.run.intake``);
    nothing ran. Without it the message, acknowledged already, would be lost, and the process
    would wait DISPATCHED for its queue timeout."""
    db.database()
    host = messaging.receiving_worker(self.request.id) or self.request.hostname
    try:
        outcome = execution.run_message(collection, id_json, method, args, kwargs, attempt, hostname=host)
    except ClaimNotWritten as exc:  # Celery logs and counts a retry; the worker hands the message back
        raise Retry(f"the message goes back to the broker for a worker that can reach the database: {exc}",
                    exc=exc, when=0) from None
    if outcome == "ignored":
        recover_if_lost_here(collection, id_json, method, attempt, host)
    if outcome in (S.FAILURE.value, "cancelled"):
        raise ProcessEndedFailure(failure_text(collection, id_json, attempt))
    return outcome


def failure_text(collection: str, id_json: str, attempt: int) -> str:
    """What Celery is told of an attempt that ended FAILURE: which, and its errors (one read)."""
    raw = db.database()[collection].find_one({"_id": json_util.loads(id_json)}, {"errors": 1})
    errors = "; ".join(str(e) for e in (raw or {}).get("errors") or []) or "no error recorded"
    return f"{collection}/{json_util.loads(id_json)} attempt {attempt} ended FAILURE: {errors}"


def recover_if_lost_here(collection, id_json, method, attempt, host) -> str | None:
    """The attempt of an ignored message is RUNNING on this worker ``host`` and its pool
    process is gone: recover it now (see the module docstring). Returns the action, if any."""
    kind = registry.kind(registry.class_for(collection), method)
    raw = kind.cls._get_collection().find_one(
        {"_id": json_util.loads(id_json), "attempt": attempt, "process_status": "RUNNING"})
    detail = pools.lost_here(raw, host)
    if detail is None:
        return None
    outcome = recovery.recover_lost(kind, raw, detail, by=f"worker:{host}")
    return outcome.action.value


WATCH_INTERVAL = 0.5
"""Seconds between two looks of a prefork worker at the pool processes of its running processes."""


def watch_pool(sender=None, **_) -> threading.Thread | None:
    """``worker_ready`` of a prefork worker: start the watch of its pool processes (module docstring)."""
    hostname = getattr(sender, "hostname", None)
    if not hostname or pools.pool_of(hostname) not in pools.CAN_TERMINATE:
        return None
    _watching.add(hostname)
    thread = threading.Thread(target=_watch, args=(hostname,), daemon=True, name=f"proc-pool-watch-{hostname}")
    thread.start()
    log.info("watching the pool processes of %s", hostname)
    return thread


_watching: set[str] = set()
"""The prefork workers of this (main) process whose pool processes are watched."""


def recover_on_worker_lost(sender=None, task_id=None, exception=None, args=None, **_) -> threading.Thread | None:
    """``task_failure`` in a prefork worker's main process: Celery saw the pool process of a
    ``proc.run`` die (``WorkerLostError``) before the watch did. ``proc.run`` was acknowledged
    when it started, so no second delivery will come: make the watch's check now (in a thread
    of its own: this runs in the worker's event loop)."""
    from billiard.exceptions import WorkerLostError

    if getattr(sender, "name", None) != RUN_TASK or not isinstance(exception, WorkerLostError) or not _watching:
        return None

    def recover():
        try:
            collection, id_json, method, _args, _kwargs, attempt = args
            for hostname in list(_watching):
                recover_if_lost_here(collection, id_json, method, attempt, hostname)
        except Exception:  # the monitor's heartbeat check is the backstop
            log.exception("could not recover the attempt of task %s, whose pool process died", task_id)

    thread = threading.Thread(target=recover, daemon=True, name=f"proc-worker-lost-{task_id}")
    thread.start()
    return thread


def _watch(hostname: str) -> None:
    from celery.worker import state

    judged: set[str] = set()
    while True:
        time.sleep(WATCH_INTERVAL)
        try:
            requests = list(state.active_requests)
        except RuntimeError:  # changed while copied: look again
            continue
        for request in requests:
            if request.name != RUN_TASK or request.id in judged or not request.worker_pid:
                continue
            if not pools.process_gone(request.worker_pid):
                continue
            judged.add(request.id)
            try:
                collection, id_json, method, _args, _kwargs, attempt = request.args
                recover_if_lost_here(collection, id_json, method, attempt, hostname)
            except Exception:  # the redelivered message, or the monitor, tries again
                log.exception("could not recover the attempt of task %s, whose pool process died", request.id)
        if len(judged) > 10000:
            judged.clear()


CELERY_REVOKE = "celery (revoked through Celery)"
"""Who cancelled a process whose task Celery's own tools revoked (``by`` of its history)."""


def record_celery_revoke(attempt: Attempt, terminated: bool, signum) -> bool:
    """A ``proc.run`` message was revoked on this worker (``proc.run.pools.revoke_listeners``).
    If its attempt is still active, the revoke came from Celery's own tools: cancel the
    process (and its subtree) as an operator's cancel does. Returns whether it did."""
    raw = db.database()[attempt.collection].find_one(
        {"_id": attempt.id, "attempt": attempt.number, "process_status": {"$in": list(PROCESSING_VALUES)}},
        {"_id": 1})
    if raw is None:  # proc's own revoke (its cancel wrote FAILURE first), or the attempt is over
        return False
    how = f"terminated with {pools.signal_name(signum)}" if terminated else "revoked"
    log.warning("%s was %s through Celery (not by proc): recorded as a cancel", attempt, how)
    try:
        admin.cancel(attempt.collection, attempt.id, by=CELERY_REVOKE)
    except (ProcError, LookupError) as exc:  # it ended or changed meanwhile
        log.info("the revoke of %s was not recorded: %s", attempt, exc)
        return False
    return True


def connect_signal_handlers() -> None:
    """Connect the worker's handlers of this layer (idempotent: each has a dispatch uid)."""
    signals.worker_ready.connect(watch_pool, weak=False, dispatch_uid="proc.tasks.watch_pool")
    signals.task_failure.connect(recover_on_worker_lost, weak=False, dispatch_uid="proc.tasks.recover_on_worker_lost")
    if record_celery_revoke not in pools.revoke_listeners:
        pools.revoke_listeners.append(record_celery_revoke)


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
    """One sweep of the monitor (Celery beat runs it; see ``proc.run.messaging.beat_schedule``)."""
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
