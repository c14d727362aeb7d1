"""Real Celery workers running in threads of this process (demo, tests, benchmarks).

The embedded database lives in one process, so its workers must too. Two things keep
in-process workers from disturbing each other: each is stopped on its own (Celery's
``celery.contrib.testing.worker.start_worker`` stops its worker through the process-wide
``should_terminate`` flag, which stops every in-process worker at once), and each gets a
kombu event loop of its own (kombu keeps one per process, which Celery would share
between workers and close with the first one stopped).
"""
from __future__ import annotations

import contextlib
import threading

from celery.bootsteps import RUN
from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
from celery.utils.nodenames import anon_nodename
from kombu.asynchronous import hub as kombu_hub

from . import heartbeat


class InProcessWorker:
    """A thread-pool Celery worker on its own node name, in a thread of this process."""

    def __init__(self, app, hostname: str | None = None, *, concurrency: int = 4,
                 loglevel: str = "WARNING", **options):
        self.app = app
        self.hostname = hostname or anon_nodename()
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.options = options
        self.controller = None
        self.thread: threading.Thread | None = None

    def start(self) -> "InProcessWorker":
        heartbeat.worker_started(self.hostname)  # a name a killed worker had is alive again
        setup_app_for_worker(self.app, self.loglevel, None)
        shared = kombu_hub.get_event_loop()
        kombu_hub.set_event_loop(None)  # the worker's Hub step makes a new loop when none is current
        try:
            self.controller = TestWorkController(
                app=self.app, concurrency=self.concurrency, hostname=self.hostname, pool="threads",
                loglevel=self.loglevel, logfile=None, ready_callback=None, without_heartbeat=True,
                without_mingle=True, without_gossip=True, **self.options)
        finally:
            kombu_hub.set_event_loop(shared)
        self.thread = threading.Thread(target=self.controller.start, daemon=True,
                                       name=f"celery-{self.hostname}")
        self.thread.start()
        self.controller.ensure_started()
        return self

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.blueprint.state == RUN

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: stop consuming, let running processes finish, wait for the thread.

        The stop runs inside the worker's own event loop (as a remote-control shutdown would):
        closing its broker channels from another thread races with the loop that polls them.
        """
        hub = getattr(self.controller, "hub", None)
        if hub is not None and self.running:
            hub.call_soon(self.controller.stop, False)
        else:
            self.controller.stop(in_sighandler=False)
        self._join(timeout)

    def kill(self, timeout: float = 15.0) -> None:
        """Simulate the death of the worker's process while its methods may be blocked: it
        stops consuming and drops its broker connection without waiting for its tasks (Redis
        delivers their unacknowledged messages again), and its heartbeats stop for good."""
        heartbeat.stop_worker(self.hostname)
        self.controller.terminate()
        self._join(timeout)

    def _join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"worker {self.hostname} did not stop within {timeout:g} s")


@contextlib.contextmanager
def in_process_worker(app, *, concurrency: int = 4, hostname: str | None = None,
                      loglevel: str = "WARNING", shutdown_timeout: float = 30.0, **options):
    """Run a worker for ``app`` while the block runs; yields the ``InProcessWorker``."""
    worker = InProcessWorker(app, hostname, concurrency=concurrency, loglevel=loglevel, **options).start()
    try:
        yield worker
    finally:
        worker.stop(shutdown_timeout)
