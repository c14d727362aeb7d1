"""The Celery app: ``celery -A celery_app worker``.

Settings come from the environment (``CELERY_BROKER_URL``, ``MONGODB_URI``, ...); see
``proc.celeryconf`` for what each Celery setting is for. A worker started as its own
process needs a real MongoDB: it refuses the embedded database (which lives in one
process) and a database still holding documents in the old shape.
"""
from celery import signals

from proc import celeryconf

app = celeryconf.make_app()
celeryconf.set_app(app)


@signals.celeryd_init.connect
def _check_before_start(sender=None, **_):
    """Runs only for a worker started by the ``celery worker`` command (not in-process ones)."""
    from proc import startup

    startup.check_worker_can_start()


if __name__ == "__main__":
    app.start()
