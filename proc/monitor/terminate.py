"""Forced stop of cancelled attempts whose code does not stop on its own.

A cancel (``proc.ops.admin.cancel``) ends the attempt as FAILURE at once; running code learns of
it at its next heartbeat and stops at its next ``set_step()``. Code that never reports
progress never learns. A cancel with ``terminate`` therefore also plans a hard stop of every
attempt it ended while RUNNING:

- on a pool that can stop running code (``proc.run.pools.CAN_TERMINATE``: prefork), one
  ``proc.terminate`` message is sent to the monitor queue with a countdown of
  ``PROC_CANCEL_GRACE`` seconds. When it fires on any worker, and the attempt's code has not
  stopped meanwhile (no ``stopped`` mark), it broadcasts Celery's
  ``revoke(terminate=True)``. The worker that runs the attempt signals its pool process and,
  once the process is gone, marks the attempt ``stopped`` (``proc.run.pools``);
- on any other pool (threads, solo), or when the claim recorded no pool, nothing is sent: the
  answer and the history (``cannot_terminate``) say that the code stops only at its next
  ``set_step()``.

The HTTP request or CLI command never waits for the grace and never signals anything itself.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import asdict, dataclass

from bson import json_util

from .. import config, machine
from ..run import messaging, pools
from ..store import db
from ..machine import Attempt
from ..names import MONITOR_QUEUE, TERMINATE_TASK
from ..status import ProcessStatus as S

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What a forced cancel will do to one attempt, as the API and the CLI report it."""

    collection: str
    id: str
    attempt: int
    outcome: str
    """``scheduled`` (terminate after the grace), ``cannot`` (the pool cannot), ``not_running``
    (it had not started: its revoked message will not run), ``not_sent`` (the broker is away)."""
    detail: str
    pool: str | None = None
    after_seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def plan(attempt: Attempt, before: dict, *, grace: float | None = None, app=None) -> Plan:
    """Plan the forced stop of ``attempt``, just cancelled; ``before`` is its document as it
    was before the cancel (its status, pool, worker and task id)."""
    grace = config.get().cancel_grace if grace is None else grace
    status, pool = before.get("process_status"), before.get("worker_pool")
    worker = before.get("worker_hostname") or "its worker"
    base = dict(collection=attempt.collection, id=str(attempt.id), attempt=attempt.number, pool=pool)
    if status != S.RUNNING.value:
        return Plan(**base, outcome="not_running",
                    detail=f"it was {status}: no code runs, and its revoked message will not start")
    if pool not in pools.CAN_TERMINATE:
        why = (f"the {pool} pool of {worker} cannot stop running code" if pool else
               "its claim recorded no pool (a worker older than this release)")
        detail = f"{why}; the code stops at its next set_step(), if it calls one"
        _mark(attempt, "cannot_terminate", detail)
        return Plan(**base, outcome="cannot", detail=detail)
    app = app or messaging.get_app()
    args = [attempt.collection, json_util.dumps(attempt.id), attempt.number, before.get("celery_task_id")]
    try:
        messaging.send_task(app, TERMINATE_TASK, 2.0, args=args, countdown=grace, queue=MONITOR_QUEUE)
    except Exception as exc:
        detail = (f"the forced stop could not be scheduled, the broker is away ({type(exc).__name__}: "
                  f"{exc}); the code stops at its next set_step(); cancel with terminate again later")
        log.warning("%s: %s", attempt, detail)
        return Plan(**base, outcome="not_sent", detail=detail)
    detail = (f"its pool process on {worker} is terminated in {grace:g} s "
              f"(PROC_CANCEL_GRACE) unless the code stops first")
    _mark(attempt, "terminate_requested", detail)
    return Plan(**base, outcome="scheduled", detail=detail, after_seconds=grace)


def due(collection: str, id, number: int, task_id: str | None, *, app=None) -> str:
    """The grace of a forced stop has passed (the ``proc.terminate`` task): terminate the
    attempt's code if it still runs. Returns what was done."""
    attempt = Attempt(collection, id, number)
    raw = db.retrying(lambda: db.database()[collection].find_one(
        {"_id": id}, {"attempt": 1, "process_status": 1, "history": 1}), f"reading {attempt}")
    if raw is None or raw.get("attempt") != number:
        return "superseded"  # a new attempt runs now; it was not cancelled
    if any(h.get("event") == "stopped" and h.get("attempt") == number for h in raw.get("history") or []):
        return "already stopped"
    if not task_id:
        return "no task"
    # Recorded before the broadcast: the worker writes ``stopped`` as soon as the pool process
    # is gone, which can be before a mark written after the broadcast lands.
    _mark(attempt, "terminate_sent", "the grace passed and the code still ran: SIGTERM asked of "
          "the worker that runs it")
    try:
        (app or messaging.get_app()).control.revoke(task_id, terminate=True, signal="SIGTERM")
    except Exception as exc:  # the broker went away within the grace
        detail = (f"the broker did not take the terminate ({type(exc).__name__}: {exc}); the code "
                  f"stops at its next set_step(); cancel with terminate again later")
        log.warning("%s: %s", attempt, detail)
        _mark(attempt, "terminate_not_sent", detail)
        return "terminate not sent"
    return "terminate sent"


def _mark(attempt: Attempt, event: str, note: str) -> None:
    try:
        db.retrying(lambda: machine.mark(attempt, event, note=note, host=socket.gethostname()),
                    f"recording {event} of {attempt}")
    except Exception:  # the answer still says it; the history misses one line
        log.exception("could not record %s of %s", event, attempt)
