"""``procctl worker``: a Celery worker for proc's processes (needs a real MongoDB)."""
from __future__ import annotations

import click

from migrations import guard

from .. import startup


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes/threads.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-l", "--loglevel", default="INFO")
def worker(concurrency, queues, loglevel):
    """Start a Celery worker (same as `celery -A celery_app worker`)."""
    startup.check_worker_can_start(checks=[guard.refuse_if_legacy])
    import celery_app

    argv = ["worker", f"--loglevel={loglevel}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if queues:
        argv.append(f"--queues={queues}")
    celery_app.app.worker_main(argv)
