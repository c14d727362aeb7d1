"""Shared fixtures: an empty embedded database per test, a real Redis broker, a real
in-process Celery worker (thread pool) that shares the embedded database."""
from __future__ import annotations

import logging
import os
import uuid

import pytest

from proc import celeryconf, config, db, heartbeat, machine, registry
from support import RedisServer, redis_answers, require

#: The test database: the embedded one, or a throw-away database on a real server
#: (PROC_TEST_MONGODB_URI=mongodb://host/proc_test; every collection in it is dropped).
TEST_DB_URI = os.environ.get("PROC_TEST_MONGODB_URI", "mongomock://localhost/proc_test")


@pytest.fixture(autouse=True)
def database():
    """An empty embedded database for every test (and the default settings)."""
    config.reset()
    config.configure(mongodb_uri=TEST_DB_URI, heartbeat_interval=0.2)
    registry.forget_settings()
    database = db.connect(TEST_DB_URI)
    registry.load_models()
    for name in database.list_collection_names():
        database.drop_collection(name)
    listeners = list(machine.listeners)
    yield database
    machine.listeners[:] = listeners
    heartbeat.stop_all()


@pytest.fixture(scope="session")
def redis_url():
    """A real Redis: CELERY_BROKER_URL, else 127.0.0.1:6379, else a private redis-server."""
    configured = os.environ.get("CELERY_BROKER_URL", "")
    if configured.startswith("redis"):
        if not redis_answers(configured):
            require(f"CELERY_BROKER_URL={configured} does not answer")
        yield configured
        return
    if redis_answers("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379/0"
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


def make_test_app(broker_url: str, **overrides):
    """A Celery app on ``broker_url`` whose keys carry a prefix unique to this test run,
    so concurrent test runs sharing one Redis never take each other's messages."""
    settings = config.get()
    app = celeryconf.make_app(config.Settings(**{**settings.__dict__, "broker_url": broker_url,
                                                 "dispatch_timeout": 4.0}))
    options = dict(app.conf.broker_transport_options)
    options["global_keyprefix"] = f"proctest-{uuid.uuid4().hex[:8]}-"
    app.conf.broker_transport_options = options
    app.conf.update(worker_hijack_root_logger=False, **overrides)
    return app


@pytest.fixture(scope="session")
def celery_test_app(redis_url):
    app = make_test_app(redis_url)
    yield app
    app.close()


class SessionWorker:
    """One in-process worker shared by the tests, started again if a test stopped it
    (Celery's own ``start_worker`` teardown stops every in-process worker)."""

    def __init__(self, app):
        self.app = app
        self.context = None
        self.worker = None

    def ensure(self):
        from proc.inprocess import in_process_worker

        if self.worker is None or not self.worker.running:
            self.close()
            self.context = in_process_worker(self.app, concurrency=8)
            self.worker = self.context.__enter__()
        return self.worker

    def close(self):
        context, self.context, self.worker = self.context, None, None
        if context is not None:
            try:
                context.__exit__(None, None, None)
            except RuntimeError:  # it had been stopped already
                pass


@pytest.fixture(scope="session")
def session_worker(celery_test_app):
    logging.getLogger("celery").setLevel(logging.WARNING)
    workers = SessionWorker(celery_test_app)
    yield workers
    workers.close()


@pytest.fixture
def app(celery_test_app):
    """The Celery app proc sends with (real Redis), without a worker."""
    celeryconf.set_app(celery_test_app)
    yield celery_test_app
    celeryconf.set_app(None)


@pytest.fixture
def worker(app, session_worker):
    """A real Celery worker in this process (thread pool) on the real Redis broker."""
    yield session_worker.ensure()
