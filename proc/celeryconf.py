"""Build the Celery app proc's processes run on (``celery_app.py`` holds the instance).

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
  never hangs on a dead broker; see ``proc.dispatch``.
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from . import config

TASK_MODULES = ["proc.tasks"]

DEFAULT_QUEUE = "celery"
#: The queue of the monitor's checks and sweeps.
MONITOR_QUEUE = "proc.monitor"


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
    from .monitor import SWEEP_TASK

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
    return app


_app: Celery | None = None


def get_app() -> Celery:
    """The Celery app of this process: ``celery_app.app`` if that module is loaded, else one built here."""
    global _app
    if _app is None:
        import sys

        module = sys.modules.get("celery_app")
        _app = getattr(module, "app", None) or make_app()
    return _app


def set_app(app: Celery | None) -> None:
    """Use ``app`` for sending from now on (tests build apps for their own broker)."""
    global _app
    _app = app
