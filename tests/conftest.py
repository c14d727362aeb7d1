"""Shared fixtures: an empty database per test, a real Redis broker, a real in-process
Celery worker (thread pool) that shares the database.

Two tiers run the same tests:

- ``pytest``: the embedded database (mongomock-ng, in this process);
- ``pytest --real-server``: a real MongoDB wire-protocol server: ``PROC_TEST_MONGODB_URI``
  if set (e.g. a mongod), else a SecantusDB server this run starts as a process of its own
  (one per run, a fresh database per test). Tests marked ``embedded_only`` (they test the
  embedded database itself) skip there; tests marked ``real_server`` skip on the embedded tier.

At the end of a run, every process the tests started must have ended (``support.spawn``
records them; a process whose environment carries this run's marker, or a fork of the
test process itself, found still alive fails the run).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

import support
from proc import config, machine, registry
from proc.run import checks, heartbeat, messaging
from proc.machine import tally
from proc.store import db
from support import RabbitMQServer, RedisServer, SecantusServer, make_test_app, redis_answers, require  # noqa: F401

#: Every process started during this run inherits it (see ``pytest_sessionfinish``).
SESSION_MARKER = f"PROC_TEST_SESSION={uuid.uuid4().hex}"

_server: SecantusServer | None = None
_watchdog: support.Watchdog | None = None
_terminal: int | None = None  # a copy of the run's stderr, which no capture of a test takes
_numbers = itertools.count(1)


def pytest_addoption(parser):
    parser.addoption("--real-server", action="store_true",
                     help="run against a real MongoDB server: PROC_TEST_MONGODB_URI, else a "
                          "SecantusDB server started for the run")


def pytest_configure(config):
    global _server, _watchdog, _terminal
    name, _, value = SESSION_MARKER.partition("=")
    os.environ[name] = value
    config.addinivalue_line("markers", "embedded_only: tests the embedded database itself "
                                       "(skipped on the real server)")
    config.addinivalue_line("markers", "real_server: needs a real MongoDB server (--real-server)")
    if not config.getoption("--real-server"):
        return
    uri = os.environ.get("PROC_TEST_MONGODB_URI")
    if not uri:
        _server = SecantusServer(test_commands=True)
        try:
            _server.start()
        except BaseException as exc:  # pytest.fail/skip outside a test: say it plainly
            raise pytest.UsageError(f"--real-server: could not start secantusd-py: {exc}") from None
        _terminal = os.dup(2)
        # PROC_TEST_WATCHDOG=interval,timeout,misses (seconds, seconds, count): tests/system/test_watchdog
        timing = dict(zip(("interval", "timeout", "misses"),
                          map(float, os.environ.get("PROC_TEST_WATCHDOG", "10,5,6").split(","))))
        timing["misses"] = int(timing["misses"])
        _watchdog = support.Watchdog(_server, report=_to_terminal, on_replace=_use_server, **timing).start()
        uri = _server.url
    support.REAL_SERVER_URI = uri
    support.install_command_listener()


_watchdog_said: list[str] = []


def _to_terminal(text: str) -> None:
    _watchdog_said.append(text)  # again in the summary: CI may keep only the end of the output
    os.write(_terminal, text.encode(errors="replace"))


def _use_server(url: str) -> None:
    support.REAL_SERVER_URI = url  # the watchdog's fresh server listens on another port


def pytest_terminal_summary(terminalreporter):
    if _watchdog is not None and (_watchdog.replaced or _watchdog.broken):
        terminalreporter.write_line(
            f"WATCHDOG: the run's SecantusDB was replaced {_watchdog.replaced} time(s)"
            + (f"; {_watchdog.broken}" if _watchdog.broken else "") + "; what it said first (200 lines at most):",
            red=True)
        for line in "".join(_watchdog_said).splitlines()[:200]:
            terminalreporter.write_line(line)


def pytest_report_header(config):
    if support.REAL_SERVER_URI:
        return f"database tier: real server at {support.REAL_SERVER_URI}"
    return "database tier: embedded (mongomock-ng)"


def pytest_collection_modifyitems(config, items):
    real = support.real_tier()
    for item in items:
        if real and item.get_closest_marker("embedded_only"):
            reason = item.get_closest_marker("embedded_only").kwargs.get(
                "reason", "tests the embedded database itself")
            item.add_marker(pytest.mark.skip(reason=f"embedded tier only: {reason}"))
        if not real and item.get_closest_marker("real_server"):
            item.add_marker(pytest.mark.skip(reason="real-server tier only (pytest --real-server)"))


def pytest_sessionfinish(session, exitstatus):
    for proc in support.started:
        if proc.poll() is None and proc is not getattr(_server, "process", None):
            support.kill_group(proc)
            session.config._proc_leftovers = getattr(session.config, "_proc_leftovers", []) + [proc.args]
    if _watchdog is not None:
        _watchdog.stop()
    if _server is not None:
        _server.cleanup()
    leftovers = support.processes_with_env(SESSION_MARKER) + support.forks_of_this_process()
    named = getattr(session.config, "_proc_leftovers", [])
    if leftovers or named:
        lines = [f"  pid {pid}: {open(f'/proc/{pid}/cmdline', 'rb').read().replace(chr(0).encode(), b' ').decode(errors='replace')[:200]}"
                 for pid in leftovers if support.alive(pid)]
        lines += [f"  (killed) {' '.join(map(str, args))[:200]}" for args in named]
        for pid in leftovers:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        print("\nERROR: processes started by the tests outlived them:\n" + "\n".join(lines))
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def database():
    """An empty database for every test (and the default settings): the embedded one, or a
    fresh database on the real server, dropped afterwards; and an empty in-process broker."""
    if _watchdog is not None:
        try:
            _watchdog.wait_until_working()
        except RuntimeError as exc:  # every test after this would wait out its timeout
            pytest.exit(f"--real-server: {exc}", returncode=3)
    tally.discard()  # before the next database: nothing counted for the last test lands in it
    config.reset()
    name = "proc_test" if not support.real_tier() else f"proc_test_{os.getpid()}_{next(_numbers)}"
    uri = support.database_uri(name)
    config.configure(mongodb_uri=uri, heartbeat_interval=0.2, check_bucket=0.5, cancel_grace=0.5)
    registry.forget_settings()
    checks.forget_claims()
    support.empty_memory_broker()
    database = db.connect(uri)
    registry.load_models()
    if not support.real_tier():
        for collection in database.list_collection_names():
            database.drop_collection(collection)
    listeners = list(machine.listeners)
    yield database
    machine.listeners[:] = listeners
    heartbeat.stop_all()
    if support.real_tier():
        try:
            db.connect(uri).client.drop_database(name)
        except Exception:  # a test that stopped the server leaves its database behind
            pass


@pytest.fixture
def flask_app():
    """The HTTP app (``api.create_app``) as the tests build it, without a token."""
    return support.make_flask_app()


@pytest.fixture
def client(flask_app):
    return flask_app.test_client()


@pytest.fixture
def secured():
    """A client of the app with ``PROC_API_TOKEN`` set (``api_seed.TOKEN``)."""
    from api_seed import TOKEN

    return support.make_flask_app(TOKEN).test_client()


@pytest.fixture
def database_uri(database):
    """The URI of this test's database, for processes of their own (real tier)."""
    return support.database_uri(database.name)


@pytest.fixture(scope="session")
def redis_url():
    """A real Redis: CELERY_BROKER_URL, else a database of its own on 127.0.0.1:6379 (so
    processes started with this URL never take the messages of another run, or those an
    earlier run left behind), else a private redis-server."""
    configured = os.environ.get("CELERY_BROKER_URL", "")
    if configured.startswith("redis"):
        if not redis_answers(configured):
            require(f"CELERY_BROKER_URL={configured} does not answer")
        yield configured
        return
    if redis_answers("redis://127.0.0.1:6379/0"):
        with support.own_redis_database("redis://127.0.0.1:6379") as url:
            yield url
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def private_redis():
    """A redis-server of this module's own, for tests that stop it, fill it or need a
    broker no other worker consumes from."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def private_rabbitmq():
    """A rabbitmq-server node of this module's own, for tests that alarm it or fill its queues."""
    server = RabbitMQServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def rabbitmq_server():
    """A private rabbitmq-server shared by the tests that do not stop, restart or alarm it
    (about 5 s to start, once per run, when a test first asks for it). Tests that do start
    their own ``RabbitMQServer``. Missing: a skip, a failure with CI=true."""
    server = RabbitMQServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def rabbitmq_url(request):
    """An AMQP broker for a non-destructive test: CELERY_BROKER_URL when it names one, else a
    virtual host of its own on the run's private rabbitmq-server (fixed queue names never meet
    another test's), removed afterwards."""
    configured = os.environ.get("CELERY_BROKER_URL", "")
    if messaging.is_amqp(configured):
        if not support.rabbitmq_answers(configured):
            require(f"CELERY_BROKER_URL={configured} does not answer")
        yield configured
        return
    server = request.getfixturevalue("rabbitmq_server")
    vhost = f"t{uuid.uuid4().hex[:10]}"
    server.ctl("add_vhost", vhost)
    server.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:{server.port}/{vhost}"
    server.ctl("delete_vhost", vhost, check=False)


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
        from proc.run.inprocess import in_process_worker

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
    messaging.set_app(celery_test_app)
    yield celery_test_app
    messaging.set_app(None)


@pytest.fixture
def worker(app, session_worker):
    """A real Celery worker in this process (thread pool) on the real Redis broker."""
    yield session_worker.ensure()


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    """Headless Chromium (Debian's chromium and chromium-driver) driven by selenium."""
    with chromium() as driver:
        yield driver


@pytest.fixture
def browser_with():
    """``browser_with(*args)``: a headless Chromium with extra command-line arguments
    (e.g. ``--host-resolver-rules=...``), quit after the test."""
    stack = contextlib.ExitStack()
    yield lambda *args: stack.enter_context(chromium(*args))
    stack.close()


@contextlib.contextmanager
def chromium(*extra: str):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require("selenium is not installed (pip install -e '.[test]')")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            require(f"{path} is missing (run scripts/install-system-deps)")
    profile = tempfile.mkdtemp(prefix="proc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1200", *extra):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
