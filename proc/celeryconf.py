"""Build the Celery app proc's processes run on (``celery_app.py`` holds the instance).

Settings that matter for correctness:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after the
  process ran, so one whose worker died is delivered again; the attempt check of the
  RUNNING claim makes a second delivery harmless (it runs nothing twice).
- Redis has no real acknowledgements: an unacknowledged message is delivered again after
  ``visibility_timeout`` (``PROC_VISIBILITY_TIMEOUT``, default 3600 s). It must exceed the
  longest run plus queueing, and every countdown proc schedules (monitors) stays below it.
- Publishing is bounded (connect/socket timeouts and a short retry policy) so a call
  never hangs on a dead broker; see ``proc.dispatch``.
"""
from __future__ import annotations

from celery import Celery

from . import config

TASK_MODULES = ["proc.tasks"]


def publish_retry_policy(timeout: float) -> dict:
    """Retry the publish a few times, all within about ``timeout`` seconds."""
    return {"max_retries": 2, "interval_start": 0, "interval_step": min(1.0, timeout / 4),
            "interval_max": min(1.0, timeout / 4)}


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
