"""A real Celery worker running in threads of this process (demo, tests, benchmarks).

The embedded database lives in one process, so its workers must too. Celery's own
``celery.contrib.testing.worker.start_worker`` stops its worker by setting the
process-wide ``should_terminate`` flag, which stops every other in-process worker as
well; this one stops only its own (a warm shutdown: running tasks finish first).
"""
from __future__ import annotations

import contextlib
import threading

from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
from celery.utils.nodenames import anon_nodename


@contextlib.contextmanager
def in_process_worker(app, *, concurrency: int = 4, hostname: str | None = None,
                      loglevel: str = "WARNING", shutdown_timeout: float = 30.0, **options):
    """Run a thread-pool worker for ``app`` while the block runs; yields the WorkController."""
    setup_app_for_worker(app, loglevel, None)
    worker = TestWorkController(
        app=app, concurrency=concurrency, hostname=hostname or anon_nodename(), pool="threads",
        loglevel=loglevel, logfile=None, ready_callback=None, without_heartbeat=True,
        without_mingle=True, without_gossip=True, **options)
    thread = threading.Thread(target=worker.start, name=f"celery-{worker.hostname}", daemon=True)
    thread.start()
    worker.ensure_started()
    try:
        yield worker
    finally:
        stop(worker, thread, shutdown_timeout)


def stop(worker, thread: threading.Thread | None = None, timeout: float = 30.0) -> None:
    """Warm-stop one in-process worker (its running tasks finish) and wait for its thread.

    The stop runs inside the worker's own event loop (as a remote-control shutdown would):
    closing its broker channels from another thread races with the loop that polls them.
    """
    hub = getattr(worker, "hub", None)
    if hub is not None and is_running(worker):
        hub.call_soon(worker.stop, False)
    else:
        worker.stop(in_sighandler=False)
    if thread is not None:
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"worker {worker.hostname} did not stop within {timeout:g} s")


def is_running(worker) -> bool:
    from celery.bootsteps import RUN

    return worker.blueprint.state == RUN
