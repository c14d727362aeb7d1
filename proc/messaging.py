"""Everything proc says to the broker: the Celery app, publishing a process's message,
scheduling and revoking the monitor's checks, and proc's Celery signal handlers.

``celery_app.py`` builds the app with ``make_app()`` and hands it over with ``set_app()``;
code that sends uses ``get_app()``. Task and queue names are in ``proc.names``.

Settings that matter for correctness:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after the
  process ran, so one whose worker died is delivered again; the attempt check of the
  RUNNING claim makes a second delivery harmless (it runs nothing twice).
- Redis has no real acknowledgements: an unacknowledged message is delivered again after
  ``visibility_timeout`` (``PROC_VISIBILITY_TIMEOUT``, default 3600 s). A process that runs
  longer than that gets a second copy of its message, which the attempt check ignores; a
  message with a countdown is held unacknowledged by a worker until it is due, so a
  countdown longer than the timeout is delivered twice. Every countdown proc schedules (the
  monitor's checks) is capped at ``max_countdown()`` = half the visibility timeout, and a
  check that fires early schedules itself again.
- The monitor's checks and sweeps travel on their own queue, ``proc.monitor``
  (``MONITOR_QUEUE``), so the depth of a process queue counts processes only. Both queues
  are in ``task_queues``: a worker started without ``-Q`` consumes both; one started with
  ``-Q`` must name ``proc.monitor`` too (at least one worker must).
- Beat runs the monitor's sweep every ``PROC_SWEEP_INTERVAL`` seconds (default 60)
  (``beat_schedule["proc-monitor-sweep"]``; run ``celery -A celery_app beat`` next to the
  workers, or ``procctl monitor`` instead). A sweep message expires after one interval, so
  sweeps missed while no worker ran do not pile up.
- Publishing is bounded (connect/socket timeouts and a short retry policy) so a call
  never hangs on a dead broker (``publish``).
- The monitor's checks: one delayed message per kind and deadline bucket
  (``schedule_bucket``, ``PROC_CHECK_BUCKET`` wide), claimed by whoever dispatches first
  into it; a check that needs another look later gets a per-process message
  (``schedule_check``). Neither is ever revoked: a check of a finished process does nothing.
- proc's signal handlers (a pool process connects after the fork; a stopping worker stops
  its heartbeats; the worker that received each run message is remembered; a worker
  remembers its pool type and records a forced stop, ``proc.pools``) are connected
  by ``make_app()``, once, not as a side effect of importing a module.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from bson import json_util
from celery import Celery, signals
from kombu import Queue

from . import config, db, heartbeat, pools
from .exceptions import BrokerUnavailable
from .names import BUCKET_TASK, CHECK_TASK, DEFAULT_QUEUE, MONITOR_QUEUE, RUN_TASK, SWEEP_TASK
from .redact import redact_url
from .timeutil import utcnow

log = logging.getLogger(__name__)

TASK_MODULES = ["proc.tasks"]


def publish_retry_policy(timeout: float) -> dict:
    """Retry the publish a few times, all within about ``timeout`` seconds."""
    return {"max_retries": 2, "interval_start": 0, "interval_step": min(1.0, timeout / 4),
            "interval_max": min(1.0, timeout / 4)}


def max_countdown(app: Celery | None = None) -> float:
    """The longest countdown proc gives a message: half the broker's visibility timeout."""
    options = (app or get_app()).conf.broker_transport_options or {}
    return float(options.get("visibility_timeout", 3600)) / 2


def beat_schedule(interval: float | None = None) -> dict:
    """The periodic tasks of proc: the monitor's sweep."""
    every = interval or config.get().sweep_interval
    return {"proc-monitor-sweep": {"task": SWEEP_TASK, "schedule": every,
                                   "options": {"expires": every, "queue": MONITOR_QUEUE}}}


def make_app(settings: config.Settings | None = None, **overrides) -> Celery:
    s = settings or config.get()
    app = Celery("proc", include=list(TASK_MODULES), set_as_current=True)
    connect_timeout = max(0.5, min(3.0, s.dispatch_timeout / 4))
    app.conf.update(
        broker_url=s.broker_url,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=connect_timeout,
        broker_transport_options={
            "visibility_timeout": s.visibility_timeout,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": max(1.0, s.dispatch_timeout / 2),
            "max_retries": 1,
        },
        task_publish_retry=True,
        task_publish_retry_policy=publish_retry_policy(s.dispatch_timeout),
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
        task_default_queue=DEFAULT_QUEUE,
        task_queues=(Queue(DEFAULT_QUEUE), Queue(MONITOR_QUEUE)),
        beat_schedule=beat_schedule(),
    )
    if overrides:
        app.conf.update(**overrides)
    connect_signal_handlers()
    return app


_app: Celery | None = None


def get_app() -> Celery:
    """The Celery app of this process: the one handed to ``set_app()`` (``celery_app.py`` does),
    else one built here from the settings."""
    global _app
    if _app is None:
        _app = make_app()
    return _app


def set_app(app: Celery | None) -> None:
    """Use ``app`` for sending from now on (tests build apps for their own broker)."""
    global _app
    _app = app


# -- publishing ------------------------------------------------------------------------------


def publish(kind, raw: dict) -> None:
    """Publish the ``proc.run`` message of ``raw``'s attempt, or raise ``BrokerUnavailable``."""
    app = get_app()
    pargs = raw.get("process_args") or {}
    message = [kind.collection, json_util.dumps(raw["_id"]), kind.method,
               pargs.get("args", []), pargs.get("kwargs", {}), raw["attempt"]]
    timeout = app.conf.broker_transport_options.get("socket_timeout", 5) * 2
    try:
        app.send_task(RUN_TASK, args=message, task_id=raw["celery_task_id"],
                      queue=kind.settings.queue, retry=True,
                      retry_policy=publish_retry_policy(timeout))
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not accepted"
        url = redact_url(app.conf.broker_url)
        reason = redact_url(f"{type(exc).__name__}: {exc}")
        log.warning("broker at %s did not accept %s %s: %s", url, kind.name, raw["_id"], reason)
        raise BrokerUnavailable(
            f"broker unreachable at {url} ({reason}); the process stays PENDING and will be sent "
            "again when the broker is back (monitor), or redispatch it") from None


# -- the monitor's checks ----------------------------------------------------------------------


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
    app = app or get_app()
    now = utcnow()
    when = when or raw.get("deadline") or now + timedelta(seconds=kind.settings.monitor_interval)
    countdown = min(max(0.0, (when - now).total_seconds()), max_countdown(app))
    args = [kind.collection, json_util.dumps(raw["_id"]), raw["attempt"]]
    try:
        app.send_task(CHECK_TASK, args=args, task_id=check_task_id(task_id), countdown=countdown,
                      queue=MONITOR_QUEUE, retry=True, retry_policy=publish_retry_policy(2.0))
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
    now = time.time()
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
    app = app or get_app()
    countdown = min(max(0.0, (end - utcnow()).total_seconds()), max_countdown(app))
    try:
        app.send_task(BUCKET_TASK, args=[kind_name, start.isoformat(), end.isoformat()],
                      countdown=countdown, queue=MONITOR_QUEUE, retry=True,
                      retry_policy=publish_retry_policy(2.0))
    except Exception as exc:  # the sweep finds the processes anyway
        log.warning("could not schedule the monitor of %s: %s: %s", kind_name, type(exc).__name__, exc)
        return False
    return True


def forget_bucket(kind_name: str, start: datetime) -> None:
    """The bucket's check ran: drop its claim document."""
    db.database()[BUCKETS].delete_one({"_id": f"{kind_name}|{start.isoformat(timespec='milliseconds')}"})


# -- proc's Celery signal handlers ---------------------------------------------------------------

# The node name of the worker that received each proc.run message, by task id. Celery's
# thread pool reports the machine's hostname as ``request.hostname``, not the worker's node
# name; heartbeats are kept per worker (``heartbeat.stop_worker``), so the run task needs it.
_received: dict[str, str] = {}
_received_lock = threading.Lock()
_RECEIVED_MAX = 10000


def _remember_worker(sender=None, request=None, **_):
    if request is None or getattr(request, "name", None) != RUN_TASK:
        return
    with _received_lock:
        if len(_received) >= _RECEIVED_MAX:  # messages received but never run (worker stopped)
            _received.clear()
        _received[request.id] = getattr(sender, "hostname", None) or request.hostname


def receiving_worker(task_id: str) -> str | None:
    """The node name of the worker that received the message ``task_id`` (once)."""
    with _received_lock:
        return _received.pop(task_id, None)


def _connect_pool_process(**_):
    """A prefork pool process connects on its own, right after the fork (the main process
    closed its connection before forking, see ``proc.startup``). Threads and solo pools
    connect on their first task; every task asks ``db.database()`` first."""
    try:
        db.database()
    except Exception:  # connect=False makes this cheap and offline; the first task reports
        log.exception("could not set up the MongoDB connection of this pool process")


def _stop_heartbeats(sender=None, **_):
    """A worker that stopped heartbeats none of its processes any more."""
    hostname = getattr(sender, "hostname", None)
    if hostname:
        heartbeat.stop_worker(hostname)


class _NoBackendRevokeNoise(logging.Filter):
    """Workers without a result backend log a warning for every revoke; proc revokes the
    pending monitor check of every finished process, and has no result backend by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Failed to mark task %s as revoked in backend")
                    and record.args and str(record.args[0]).endswith("-monitor"))


#: (signal, handler): what ``connect_signal_handlers`` connects, each once per process.
SIGNAL_HANDLERS = (
    (signals.task_received, _remember_worker),
    (signals.worker_process_init, _connect_pool_process),
    (signals.worker_shutdown, _stop_heartbeats),
    (signals.worker_init, pools.record_pool),
    (signals.task_revoked, pools.record_termination),
)
_revoke_noise = _NoBackendRevokeNoise()


def connect_signal_handlers() -> None:
    """Connect proc's Celery signal handlers (idempotent: each has a dispatch uid)."""
    for signal, handler in SIGNAL_HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"proc.messaging.{handler.__name__}")
    control_log = logging.getLogger("celery.worker.control")
    if _revoke_noise not in control_log.filters:
        control_log.addFilter(_revoke_noise)
