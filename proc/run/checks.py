"""The monitor's checks, as the dispatcher schedules them: one delayed message per kind and
deadline bucket, and a per-process check for a process that needs another look later.

- ``schedule_bucket``: when a process is DISPATCHED its deadline falls in a bucket of
  ``PROC_CHECK_BUCKET`` seconds; the first dispatcher of a bucket claims it (an insert on a
  unique ``_id`` in ``proc_check_buckets``) and sends one ``proc.monitor_bucket`` message due
  at the bucket's end; every later one finds the claim and sends nothing.
- ``schedule_check``: one ``proc.monitor_check`` message for one attempt (task id: the
  attempt's own + ``-monitor``, so rescheduled checks share it).

Neither is ever revoked: a check of a finished process does nothing. Every countdown is capped
at ``messaging.max_countdown()`` (half the Redis visibility timeout), and a check that fires
early schedules itself again. Scheduling never raises: the sweep is the backstop.

It lives beside dispatch, not in ``proc.monitor``: dispatching schedules the checks, and the
run layer never imports the monitor (which runs them).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from bson import json_util

from .. import config
from ..names import BUCKET_TASK, CHECK_TASK, MONITOR_QUEUE
from ..store import db
from ..timeutil import utcnow
from . import messaging

log = logging.getLogger(__name__)


def check_task_id(celery_task_id: str) -> str:
    """The task id of every check of one attempt (the attempt's own task id + suffix).

    Rescheduled checks reuse it (as Celery's own retries do), so one revoke reaches them all.
    """
    return f"{celery_task_id}-monitor"


def schedule_check(kind, raw: dict, when: datetime | None = None, *, app=None) -> float | None:
    """Schedule the monitor's check of ``raw``'s attempt at ``when`` (default: its deadline).

    Returns the countdown used, or None when nothing could be scheduled (no task id,
    broker down): the sweep is the backstop then. Never raises.
    """
    task_id = raw.get("celery_task_id")
    if not task_id:
        return None
    app = app or messaging.get_app()
    now = utcnow()
    when = when or raw.get("deadline") or now + timedelta(seconds=kind.settings.monitor_interval)
    countdown = min(max(0.0, (when - now).total_seconds()), messaging.max_countdown(app))
    args = [kind.collection, json_util.dumps(raw["_id"]), raw["attempt"]]
    try:
        messaging.send_task(app, CHECK_TASK, 2.0, args=args, task_id=check_task_id(task_id),
                            countdown=countdown, queue=MONITOR_QUEUE)
    except Exception as exc:  # the sweep finds the process anyway
        log.warning("could not schedule the monitor of %s %s: %s: %s", kind.name, raw["_id"],
                    type(exc).__name__, exc)
        return None
    return countdown


#: One small document per (kind, bucket) whose check message was sent: the set-if-absent
#: claim that makes exactly one dispatcher send it. The bucket's check deletes it.
BUCKETS = "proc_check_buckets"

_claimed: dict[str, float] = {}
"""Buckets this process already knows are claimed (key -> bucket end, epoch seconds)."""
_claimed_lock = threading.Lock()


def bucket_of(when: datetime, width: float) -> tuple[datetime, datetime]:
    """The bucket ``[start, end)`` of width ``width`` seconds that ``when`` falls in."""
    epoch = datetime(1970, 1, 1)
    seconds = (when - epoch).total_seconds()
    start = epoch + timedelta(seconds=(seconds // width) * width)
    return start, start + timedelta(seconds=width)


def schedule_bucket(kind, deadline: datetime, *, app=None) -> bool:
    """Make sure the check of ``kind``'s bucket holding ``deadline`` is scheduled.

    The first dispatcher of a bucket claims it (an insert on a unique ``_id``) and sends one
    ``proc.monitor_bucket`` message due at the bucket's end; every later one finds the claim
    (in this process's memory after the first time, else by the duplicate key) and sends
    nothing. Returns True if this call sent the message. Never raises: the sweep is the backstop.
    """
    from pymongo.errors import DuplicateKeyError

    width = config.get().check_bucket
    start, end = bucket_of(deadline, width)
    key = f"{kind.name}|{start.isoformat(timespec='milliseconds')}"
    now = (utcnow() - datetime(1970, 1, 1)).total_seconds()  # the bucket ends are server time
    with _claimed_lock:
        if key in _claimed:
            return False
        if len(_claimed) > 10000:  # forget buckets long past
            for old in [k for k, e in _claimed.items() if e < now - 3600]:
                del _claimed[old]
    try:
        db.database()[BUCKETS].insert_one({"_id": key, "kind": kind.name, "start": start, "end": end})
    except DuplicateKeyError:
        with _claimed_lock:
            _claimed[key] = (end - datetime(1970, 1, 1)).total_seconds()
        return False
    except Exception as exc:
        log.warning("could not claim the monitor bucket %s: %s: %s", key, type(exc).__name__, exc)
        return False
    with _claimed_lock:
        _claimed[key] = (end - datetime(1970, 1, 1)).total_seconds()
    if not send_bucket(kind.name, start, end, app=app):
        try:  # not sent: let a later dispatcher of this bucket try again
            db.database()[BUCKETS].delete_one({"_id": key})
        except Exception:
            pass
        with _claimed_lock:
            _claimed.pop(key, None)
        return False
    return True


def forget_claims() -> None:
    """Forget the buckets this process saw claimed (tests that switch databases)."""
    with _claimed_lock:
        _claimed.clear()


def send_bucket(kind_name: str, start: datetime, end: datetime, *, app=None) -> bool:
    """Send (or send again, when it fired early) the check of one bucket, due at its end."""
    app = app or messaging.get_app()
    countdown = min(max(0.0, (end - utcnow()).total_seconds()), messaging.max_countdown(app))
    try:
        messaging.send_task(app, BUCKET_TASK, 2.0, args=[kind_name, start.isoformat(), end.isoformat()],
                            countdown=countdown, queue=MONITOR_QUEUE)
    except Exception as exc:  # the sweep finds the processes anyway
        log.warning("could not schedule the monitor of %s: %s: %s", kind_name, type(exc).__name__, exc)
        return False
    return True


def forget_bucket(kind_name: str, start: datetime) -> None:
    """The bucket's check ran: drop its claim document."""
    db.database()[BUCKETS].delete_one({"_id": f"{kind_name}|{start.isoformat(timespec='milliseconds')}"})
