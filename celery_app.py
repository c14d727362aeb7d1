"""The Celery app: ``celery -A celery_app worker``.

Settings come from the environment (``CELERY_BROKER_URL``, ``MONGODB_URI``, ...); see
``proc.run.messaging`` for what each Celery setting is for. A worker started as its own
process needs a real MongoDB: it refuses the embedded database (which lives in one
process) and a database still holding documents in the old shape.
"""
from celery import signals

from proc import tasks
from proc.run import messaging

app = messaging.make_app()
messaging.set_app(app)
tasks.connect_signal_handlers()


@signals.celeryd_init.connect
def _check_before_start(sender=None, **_):
    """Runs only for a worker started by the ``celery worker`` command (not in-process ones)."""
    import sys

    from migrations import guard
    from proc import startup
    from proc.exceptions import ConfigurationError

    try:
        startup.check_worker_can_start(checks=[guard.refuse_if_legacy])
    except ConfigurationError as exc:  # Celery logs and swallows exceptions of signal handlers
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    app.start()
