"""Helpers for tests: waiting on conditions with a deadline, private redis servers."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02, message: str = ""):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {message or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(reason: str):
    """Skip with ``reason``; under CI=true a missing real component is a failure instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


class RedisServer:
    """A private redis-server on a free port, for tests that stop, restart or purge a broker."""

    def __init__(self, *, appendonly: bool = False):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="proc-redis-")
        self.appendonly = appendonly
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        if not self.binary:
            require("redis-server is not installed (run scripts/install-system-deps)")
        self.process = spawn(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", self.dir])
        wait_for(self.answers, timeout=10, message=f"redis-server on port {self.port}")
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except Exception:
        return False


@contextlib.contextmanager
def own_redis_database(server: str):
    """``server/N``: a numbered database of the shared Redis that no other test run holds,
    claimed for this run and emptied when it ends. Test processes started with this URL
    (``celery -A celery_app worker``, ``procctl``) then see only this run's messages: on a
    shared database they took messages other runs published or left behind, and spent
    their time on them first. ``require`` (a failure with CI=true) when all are taken."""
    import redis

    marker, me = "proc-test-run", f"{socket.gethostname()} {os.getpid()}"
    count = int(redis.Redis.from_url(f"{server}/0").config_get("databases").get("databases", 16))
    for number in range(1, count):
        client = redis.Redis.from_url(f"{server}/{number}", socket_timeout=5)
        if _left_by_a_dead_run(client.get(marker)):  # a run killed before it could empty it
            client.flushdb()
        # Claimed only if it holds nothing at all: a database in use by anything else is left be.
        if client.dbsize() == 0 and client.set(marker, me, nx=True):
            break
    else:
        require(f"every numbered database of {server} holds keys: no Redis database of its own "
                f"for this test run (set CELERY_BROKER_URL, or empty one with FLUSHDB)")
    try:
        yield f"{server}/{number}"
    finally:
        client.flushdb()


def _left_by_a_dead_run(claim: bytes | None) -> bool:
    """Whether ``claim`` (the marker of ``own_redis_database``) names a test run of this machine
    whose process no longer runs; a claim from another machine is never judged here."""
    if claim is None:
        return False
    host, _, pid = claim.decode(errors="replace").rpartition(" ")
    return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))


def empty_memory_broker() -> None:
    """Drop every message of the in-process broker (``memory://``, the default without a
    broker URL): its queues live as long as the test process, so a message an earlier test
    published (a redispatch, a deadline's check) would otherwise change what a later test
    sees of the queues ("queue 'celery' empty")."""
    from kombu.transport import memory

    for queue in list(memory.Channel.queues.values()):
        with queue.mutex:
            queue.queue.clear()


# -- the real-server tier -------------------------------------------------------------------

#: Set by conftest for the session: the MongoDB server of this run (None: the embedded one).
REAL_SERVER_URI: str | None = None


def real_tier() -> bool:
    """True when this run tests against a real MongoDB wire-protocol server."""
    return REAL_SERVER_URI is not None


def database_uri(name: str) -> str:
    """The URI of database ``name`` on this run's server (embedded or real)."""
    if REAL_SERVER_URI is None:
        return f"mongomock://localhost/{name}"
    base, _, query = REAL_SERVER_URI.partition("?")
    base = base.rstrip("/")
    if base.count("/") > 2:  # the URI names a database: keep the host part only
        base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def require_real_server(reason: str = "needs a real MongoDB server (run with --real-server)"):
    if not real_tier():
        pytest.skip(reason)


# -- processes the tests start --------------------------------------------------------------

#: Every process a test started (``spawn``); the session checks that none outlives it.
started: list[subprocess.Popen] = []

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(PROJECT_DIR, "tests")
MODELS_DIR = os.path.join(TESTS_DIR, "models")
"""The tests' Proc subclasses (``PROC_MODELS=e2e_models`` and the like): a process a test starts
finds them with ``PYTHONPATH=MODELS_DIR``."""
ARTIFACTS = os.path.join(PROJECT_DIR, "artifacts")
"""Where the browser tests save their screenshots (docs/images/ holds copies)."""


def text(driver, selector: str) -> str:
    """The rendered text of the first element ``selector`` finds (read in one script: a live
    part of the page may be replaced in place between two calls)."""
    return driver.execute_script("return document.querySelector(arguments[0]).innerText;", selector)


def hold_dispatched_until_claimed(monkeypatch) -> None:
    """Make every caller's DISPATCHED write wait until a worker has claimed the attempt (the
    claim overtakes it: PENDING -> RUNNING), through ``machine.transition``."""
    import threading

    from proc import machine

    original = machine.transition
    claimed = threading.Event()

    def slow_dispatched(attempt, event, *args, **kw):
        if event == "dispatched":
            claimed.wait(timeout=20)  # hold the DISPATCHED write until the worker claimed
        result = original(attempt, event, *args, **kw)
        if event == "claim" and result is not None:
            claimed.set()
        return result

    monkeypatch.setattr(machine, "transition", slow_dispatched)


def report_page(report) -> int:
    """The page a running demo ``Report`` says it is at (its step ``"page N/M ..."``), else 0."""
    step = report.reload_status().current_process_step or ""
    return int(step.split()[1].split("/")[0]) if step.startswith("page ") else 0


def venv_bin(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (the project's venv)."""
    import sys

    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


def read_log(path: str) -> str:
    """The text a process has written to its log file so far ("" before it made the file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def said(name: str, proc: subprocess.Popen, log: str, text: str) -> bool:
    """Whether process ``name`` wrote ``text`` to its ``log`` yet; fails the test with the
    log's tail if it exited instead (a wait on a process that died would last its timeout)."""
    if proc.poll() is not None:
        pytest.fail(f"{name} exited with {proc.returncode}:\n{read_log(log)[-3000:]}")
    return text in read_log(log)


def spawn(args, *, env: dict | None = None, log: str | None = None, cwd: str | None = None,
          **kwargs) -> subprocess.Popen:
    """Start a process of its own (never a fork of the test process) and remember it.

    Its output goes to ``log`` (a file path) if given, else nowhere. It is started in a
    session of its own, so ``stop`` can signal the whole group it may fork.
    """
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(args, env=env, cwd=cwd or PROJECT_DIR, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
    finally:
        if log:
            out.close()
    started.append(proc)
    return proc


def stop(proc: subprocess.Popen, sig=None, timeout: float = 30.0) -> int | None:
    """Send ``sig`` (default SIGTERM) to ``proc`` and wait for it; SIGKILL its group if it
    does not end within ``timeout``. Returns its exit code."""
    import signal

    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig or signal.SIGTERM)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return proc.poll()
    kill_group(proc)
    return proc.wait(timeout=10)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (a worker and its pool, gunicorn and its workers)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    """True if ``pid`` is a live process (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (``NAME=value``): every
    process this session started, and whatever those started in turn."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def forks_of_this_process() -> list[int]:
    """Live processes running this very command line other than this one: a fork of the
    test process (``fork`` without ``exec``) shows up like that."""
    me = os.getpid()
    with open(f"/proc/{me}/cmdline", "rb") as f:
        mine = f.read()
    with open(f"/proc/{me}/environ", "rb") as f:
        my_env = f.read()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == mine and alive(int(entry)):
                    with open(f"/proc/{entry}/environ", "rb") as e:
                        if e.read() == my_env:
                            found.append(int(entry))
        except OSError:
            continue
    return found


def _ask(url: str, timeout: float, question) -> bool:
    """``question(client)`` on a client of the server at ``url`` whose connecting, server
    selection and each reply are bounded by ``timeout`` seconds; False on any error."""
    import pymongo

    ms = max(1, int(timeout * 1000))
    try:
        client = pymongo.MongoClient(url, directConnection=True, serverSelectionTimeoutMS=ms,
                                     connectTimeoutMS=ms, socketTimeoutMS=ms, retryWrites=False,
                                     retryReads=False)
    except Exception:
        return False
    try:
        return bool(question(client))
    except Exception:
        return False
    finally:
        client.close()


def server_answers(url: str, timeout: float) -> bool:
    """Whether the server at ``url`` answers a ping within ``timeout`` seconds."""
    return _ask(url, timeout, lambda client: client.admin.command("ping").get("ok"))


class SecantusServer:
    """A SecantusDB server (a MongoDB wire-protocol server over WiredTiger) as a process of
    its own, on a free port and a data directory of its own. It is GPL-2.0-only: proc never
    imports it, the tests only talk to it over a socket."""

    def __init__(self, data_dir: str | None = None, port: int | None = None, *,
                 test_commands: bool = True):
        self.binary = venv_bin("secantusd-py")
        self.port = port or free_port()
        self.own_dir = data_dir is None
        self.dir = data_dir or tempfile.mkdtemp(prefix="proc-secantus-")
        os.makedirs(self.dir, exist_ok=True)
        self.test_commands = test_commands
        self.process: subprocess.Popen | None = None
        self.log = os.path.join(self.dir, "server.log")
        self.storage = "db"  # below ``dir``; a replacement server gets a fresh one (Watchdog)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> "SecantusServer":
        if not os.path.exists(self.binary) and not shutil.which(self.binary):
            require("secantusd-py is not installed (pip install -e '.[test]')")
        args = [self.binary, "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", os.path.join(self.dir, self.storage), "--log-level", "WARNING"]
        if self.test_commands:
            args.append("--enable-test-commands")
        self.process = spawn(args, log=self.log)
        wait_for(self.answers, timeout=timeout, interval=0.05,
                 message=f"secantusd-py on port {self.port} (log: {self.log})")
        return self

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"secantusd-py exited with {self.process.returncode}; see {self.log}")
        return server_answers(self.url, 0.3)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server cleanly (SIGTERM), keeping its data for a restart."""
        if self.process is not None:
            stop(self.process, timeout=timeout)
        self.process = None

    def cleanup(self) -> None:
        """Kill the server (its data is not kept: a clean stop takes 2 s) and remove its own directory."""
        if self.process is not None:
            stop(self.process, signal.SIGKILL)
        self.process = None
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


WATCHDOG_DATABASE = "proc_watchdog"
"""Where ``server_works`` asks (one document); the command counters of the tests skip it."""


def server_works(url: str, timeout: float) -> bool:
    """Whether the server at ``url`` answers a ping *and* a write and a read of its storage
    within ``timeout`` seconds each: a server whose storage is stuck may still answer pings,
    which need no lock."""

    def question(client) -> bool:
        database = client[WATCHDOG_DATABASE]
        database.canary.update_one({"_id": "canary"}, {"$inc": {"writes": 1}}, upsert=True)
        return database.command("ping").get("ok") and database.canary.find_one({"_id": "canary"}) is not None

    return _ask(url, timeout, question)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def describe_process(proc: subprocess.Popen | None, log: str, lines: int = 30, port: int | None = None) -> str:
    """What can be read of a server that stopped answering, shortest first: its state, CPU
    time and threads (``/proc``); the machine's busiest processes (``ps``); who holds
    connections to its ``port`` (``ss``); its Python stacks (``py-spy dump``: each active
    thread whole, each idle one by its innermost frame); the end of its log."""
    parts, stacks = [], None
    if proc is not None and alive(proc.pid):
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            parts.append(f"pid {proc.pid}: state {status['State'].strip()}, {status['Threads'].strip()} threads, "
                         f"CPU user {int(fields[11]) / ticks:.1f} s system {int(fields[12]) / ticks:.1f} s, "
                         f"RSS {status.get('VmRSS', '?').strip()}, {len(os.listdir(f'/proc/{proc.pid}/fd'))} open files")
        except (OSError, KeyError, IndexError, ValueError) as exc:
            parts.append(f"pid {proc.pid}: /proc unreadable ({exc})")
        stacks = _python_stacks(proc.pid)
    elif proc is not None:
        parts.append(f"pid {proc.pid}: exited with {proc.poll()}")
    commands = [("the busiest processes of this machine", ["ps", "-eo", "pid,ppid,pcpu,rss,etime,args", "--sort=-pcpu"])]
    if port:
        commands.append((f"who holds a connection to port {port}", ["ss", "-tnp"]))
    for title, command in commands:
        try:
            text = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.splitlines()
        except (OSError, subprocess.TimeoutExpired) as exc:
            parts.append(f"{title}: {command[0]} failed ({exc})")
            continue
        if command[0] == "ss":
            text = [line for line in text if f":{port} " in line]
        parts.append(f"{title}:\n" + "\n".join(line[:200] for line in text[:12]))
    if stacks:
        parts.append(stacks)
    try:
        with open(log, errors="replace") as f:
            tail = f.readlines()[-lines:]
        parts.append(f"last {len(tail)} lines of {log}:\n" + "".join(tail))
    except OSError as exc:
        parts.append(f"log {log} unreadable: {exc}")
    return "\n".join(parts)


def _python_stacks(pid: int) -> str | None:
    spy = venv_bin("py-spy")
    if not os.path.exists(spy):
        return None
    try:
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy dump failed: {exc}"
    if dump.returncode != 0:
        return "py-spy dump failed:\n" + "\n".join((dump.stdout + dump.stderr).splitlines()[:6])
    kept, idle = [], True
    for line in dump.stdout.splitlines():
        if line.startswith("Thread "):
            idle = "(idle)" in line
            kept.append(line)
        elif line.startswith(" ") and kept and kept[-1].startswith("Thread "):
            kept.append(line)  # every thread's innermost frame
        elif line.startswith(" ") and not idle:
            kept.append(line)
    return "py-spy dump (idle threads by their innermost frame):\n" + "\n".join(kept[:150])


class Watchdog:
    """Replaces the run's SecantusDB when it stops working, so that one hung server fails
    the test it hangs, not the whole run. Two hangs were seen: the server spun at 95% CPU,
    ignored SIGTERM and answered no new client; and (stop 26's CI run) every test that used
    the server failed from one test on, for over an hour, while nothing replaced it.

    Every ``interval`` seconds it asks the server for a ping, a write and a read
    (``server_works``, ``timeout`` seconds each) with a client of its own. After ``misses``
    asks in a row without an answer it reports what it can read of the server (state, CPU,
    Python stacks by ``py-spy``, log) through ``report``, SIGKILLs the server's process group
    and starts a fresh server with a new data directory: on the same port, or on a free one
    if the old port is still held, in which case ``on_replace(url)`` is told the new URL.
    Every test makes its own database, so the tests after it run as before. ``replaced``
    counts replacements, ``pings`` the asks, ``missed`` the asks in a row without an answer.
    When ``give_up`` replacements in a row do not answer either, ``broken`` says why, and the
    tests stop (conftest's ``database`` fixture) instead of each waiting out its timeout.
    """

    def __init__(self, server: SecantusServer, *, interval: float = 10.0, timeout: float = 5.0,
                 misses: int = 6, give_up: int = 2, report=None, on_replace=None):
        self.server, self.interval, self.timeout, self.misses = server, interval, timeout, misses
        self.give_up = give_up
        self.report = report or sys.stderr.write
        self.on_replace = on_replace or (lambda url: None)
        self.replaced = 0
        self.pings = 0  # the asks it sent (answered or not)
        self.missed = 0
        self.broken: str | None = None
        self._failed_starts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="secantusd-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(self.interval + 3 * self.timeout + 90)

    def answers(self) -> bool:
        return server_works(self.server.url, self.timeout)

    def wait_until_working(self) -> None:
        """Return at once while the last ask was answered; else wait (bounded) until one is,
        or the server was replaced. Raises RuntimeError naming the cause when neither happens."""
        if not self.missed and not self.broken:
            return
        deadline = time.monotonic() + (self.misses + 1) * (self.interval + self.timeout) + 120
        while self.missed and not self.broken and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.broken or self.missed:
            raise RuntimeError(self.broken or f"the run's SecantusDB ({self.server.url}) has answered none of "
                                              f"{self.missed} asks and was not replaced in time")

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                answered = self.answers()
                self.pings += 1
                self.missed = 0 if answered else self.missed + 1
                process = self.server.process
                exited = process is not None and process.poll() is not None  # no need to wait it out
                if (self.missed >= self.misses or (self.missed and exited)) and not self._stopping.is_set():
                    self._replace()
            except BaseException as exc:  # never let the watchdog itself die silently
                self.report(f"\nWATCHDOG: unexpected {exc!r}; watching on\n")

    def _replace(self) -> None:
        hung = self.server.process
        self.report(f"\nWATCHDOG: secantusd-py at {self.server.url} (pid {hung.pid if hung else '?'}) answered "
                    f"none of {self.missed} asks (ping, write, read) over {self.missed * self.interval:.0f} s"
                    + (f" and exited with {hung.returncode}" if hung is not None and hung.poll() is not None else "")
                    + ": "
                    f"killing it and starting a fresh server; the test running now fails. What it looked like:\n"
                    f"{describe_process(hung, self.server.log, port=self.server.port)}\n")
        if hung is not None:
            kill_group(hung)
            try:
                hung.wait(30)
            except subprocess.TimeoutExpired:
                self.report(f"WATCHDOG: pid {hung.pid} did not die within 30 s of SIGKILL\n")
        generation = self.replaced + self._failed_starts + 2
        self.server.storage = f"db-{generation}"
        self.server.log = os.path.join(self.server.dir, f"server-{generation}.log")
        if not port_is_free(self.server.port):
            old, self.server.port = self.server.port, free_port()
            self.report(f"WATCHDOG: port {old} is still held; the fresh server listens on {self.server.port}\n")
        try:
            self.server.start()  # returns once the fresh server answers
        except BaseException as exc:  # pytest.fail in a thread: say it, the next asks try again
            self._failed_starts += 1
            self.report(f"WATCHDOG: the fresh secantusd-py did not start: {exc}\n"
                        f"{describe_process(self.server.process, self.server.log)}\n")
            if self._failed_starts >= self.give_up:
                self.broken = (f"the run's SecantusDB stopped working and {self._failed_starts} fresh servers in a "
                               f"row did not start (logs in {self.server.dir}); the tests after it cannot run")
            self.missed = 0  # count the next misses against the fresh (or missing) server
            return
        self._failed_starts = 0
        self.replaced += 1
        self.missed = 0
        self.on_replace(self.server.url)
        self.report(f"WATCHDOG: a fresh secantusd-py answers at {self.server.url}\n")


def make_test_app(broker_url: str, **overrides):
    """A Celery app on ``broker_url`` whose keys carry a prefix unique to this test run,
    so concurrent test runs sharing one Redis never take each other's messages."""
    import uuid

    from proc import config
    from proc.run import messaging

    settings = config.get()
    app = messaging.make_app(config.Settings(**{**settings.__dict__, "broker_url": broker_url,
                                                 "dispatch_timeout": 4.0}))
    options = dict(app.conf.broker_transport_options)
    options["global_keyprefix"] = f"proctest-{uuid.uuid4().hex[:8]}-"
    app.conf.broker_transport_options = options
    app.conf.update(worker_hijack_root_logger=False, **overrides)
    return app


@contextlib.contextmanager
def fault_models_app(broker_url: str, **overrides):
    """The app the fault tests send through: on ``broker_url`` (a private server), the
    fault models loaded, their counters reset, and the app current for the block."""
    import fault_models as fm
    from proc import registry
    from proc.run import messaging

    registry.load_models(["fault_models"])
    fm.reset()
    app = make_test_app(broker_url, **overrides)
    messaging.set_app(app)
    try:
        yield app
    finally:
        fm.reset()
        messaging.set_app(None)
        app.close()


class CommandCounter:
    """Counts the operations that reach the database, as ``(operation, collection)``.

    On a real server a pymongo ``CommandListener`` sees every command sent (the real round
    trips); on the embedded database, which sends none, mongomock's collection methods are
    counted instead. Operation names are pymongo's method names on both tiers
    (``count_documents`` travels as an ``aggregate`` with a ``$group`` counter).

    Only the operations of the thread that made the counter are counted: the session worker
    and the heartbeat thread run in this process too, and a message an earlier test left
    behind may run on this test's database meanwhile (one real-tier run counted a stray
    ``find`` on ``precheck`` in the middle of a bulk request's round trips).
    """

    METHODS = ("aggregate", "find", "find_one", "count_documents", "find_one_and_update", "update_one",
               "update_many", "insert_one")

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str]] = []
        self.thread = threading.get_ident()
        if real_tier():
            monkeypatch.setattr(_listener, "sinks", [self])
            return
        import mongomock_ng.collection as mc

        for name in self.METHODS:
            original = getattr(mc.Collection, name)

            def wrapper(coll, *args, _original=original, _name=name, **kwargs):
                self.record(_name, coll.name)
                return _original(coll, *args, **kwargs)

            monkeypatch.setattr(mc.Collection, name, wrapper)

    def record(self, operation: str, collection: str) -> None:
        if threading.get_ident() == self.thread:
            self.calls.append((operation, collection))


def _operation(command_name: str, command) -> str | None:
    if command_name == "aggregate":
        pipeline = command.get("pipeline") or []
        last = pipeline[-1] if pipeline else {}
        group = last.get("$group") if isinstance(last, dict) else None
        if group and set(group) == {"_id", "n"} and group.get("n") == {"$sum": 1}:
            return "count_documents"
        return "aggregate"
    if command_name == "find":
        return "find_one" if command.get("limit") == 1 and command.get("singleBatch") else "find"
    return {"findAndModify": "find_one_and_update", "update": "update_one", "insert": "insert",
            "delete": "delete", "getMore": "getMore"}.get(command_name)


class _Listener:
    """A process-wide pymongo command listener feeding the counters of the running test."""

    def __init__(self):
        self.sinks: list[CommandCounter] = []
        self.raw: list[list] = []
        """Lists receiving ``(command name, command document)`` of every command sent."""

    def started(self, event):
        if event.database_name == WATCHDOG_DATABASE:  # the watchdog's asks are not the test's
            return
        for sink in self.raw:
            sink.append((event.command_name, dict(event.command)))
        if not self.sinks:
            return
        name = _operation(event.command_name, event.command)
        if name is None:
            return
        collection = event.command.get(event.command_name)
        for counter in self.sinks:
            counter.record(name, collection if isinstance(collection, str) else "")

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


_listener = _Listener()


@contextlib.contextmanager
def commands_sent():
    """The ``(name, command)`` of every command sent to the real server while inside."""
    sink: list = []
    _listener.raw.append(sink)
    try:
        yield sink
    finally:
        _listener.raw.remove(sink)


def install_command_listener() -> None:
    """Register the listener for every MongoClient made from now on (conftest, real tier)."""
    from pymongo import monitoring

    class Listener(monitoring.CommandListener):
        started = staticmethod(_listener.started)
        succeeded = staticmethod(_listener.succeeded)
        failed = staticmethod(_listener.failed)

    monitoring.register(Listener())


# -- the test app ---------------------------------------------------------------------------------


def make_flask_app(token: str | None = None, *, inspect_timeout: float = 0.3, **config):
    """The Flask app of ``api.create_app`` as every test builds it: testing mode, a short
    inspect timeout, ``token`` as ``PROC_API_TOKEN`` (None: no token), the page's data and
    ``/metrics`` computed on every request (tests of the sharing set ``PROC_PAGE_SECONDS`` and
    ``PROC_METRICS_SECONDS``), and ``config``."""
    from api import create_app

    return create_app({"TESTING": True, "PROC_INSPECT_TIMEOUT": inspect_timeout,
                       "PROC_API_TOKEN": token, "PROC_PAGE_SECONDS": 0, "PROC_METRICS_SECONDS": 0, **config})


# -- RabbitMQ ---------------------------------------------------------------------------------

RABBITMQ_LIB = "/usr/lib/rabbitmq/bin"
"""Debian's rabbitmq-server package puts the real scripts here; those in /usr/sbin switch to the
``rabbitmq`` user (dropping the environment that makes a node private) when run as root."""


def rabbitmq_binary(name: str) -> str | None:
    path = os.path.join(RABBITMQ_LIB, name)
    return path if os.access(path, os.X_OK) else shutil.which(name)


class RabbitMQServer:
    """A private rabbitmq-server: its own node name (``proc-test-<pid>-<n>@localhost``), free
    AMQP and distribution ports, its own data, log and config, no plugins (no management).
    ``ctl(...)`` runs ``rabbitmqctl -n <node>`` with the node's own Erlang cookie (``HOME``
    is the node's directory, for the server and the CLI alike). Starting takes about 5 s.

    ``consumer_timeout`` (ms) goes into its config file; ``tick_interval`` (ms) is how often a
    channel checks it (``channel_tick_interval`` in its advanced config; RabbitMQ's default is
    60000, so a delivery held past the timeout is caught up to a minute late). ``stop()`` keeps
    its data for a restart (messages of durable queues survive), ``start(fresh=True)`` wipes
    it first."""

    _count = 0

    def __init__(self, *, consumer_timeout: int | None = None, tick_interval: int | None = None):
        RabbitMQServer._count += 1
        self.tick_interval = tick_interval
        self.server = rabbitmq_binary("rabbitmq-server")
        self.ctl_binary = rabbitmq_binary("rabbitmqctl")
        self.port, self.dist_port = free_port(), free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.node = f"proc-test-{os.getpid()}-{RabbitMQServer._count}@localhost"
        self.dir = tempfile.mkdtemp(prefix="proc-rabbitmq-")
        self.consumer_timeout = consumer_timeout
        self.process: subprocess.Popen | None = None
        self.log = os.path.join(self.dir, "server.log")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "HOME": self.dir, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.dir, "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbitmq.pid"),
        })
        return env

    def start(self, *, fresh: bool = False, timeout: float = 60) -> "RabbitMQServer":
        if not self.server or not self.ctl_binary:
            require("rabbitmq-server is not installed (run scripts/install-system-deps)")
        if fresh:
            shutil.rmtree(os.path.join(self.dir, "mnesia"), ignore_errors=True)
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
            if self.consumer_timeout is not None:
                f.write(f"consumer_timeout = {int(self.consumer_timeout)}\n")
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "advanced.config"), "w") as f:
            ticks = f"{{channel_tick_interval, {int(self.tick_interval)}}}" if self.tick_interval else ""
            f.write(f"[{{rabbit, [{ticks}]}}].\n")
        self.process = spawn([self.server], env=self.env, log=self.log, cwd=self.dir)
        wait_for(self.answers, timeout=timeout, interval=0.1,
                 message=f"rabbitmq-server {self.node} on port {self.port} (log: {self.log})")
        return self

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            with open(self.log, errors="replace") as f:
                tail = f.read()[-2000:]
            pytest.fail(f"rabbitmq-server {self.node} exited with {self.process.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                s.settimeout(2)
                return s.recv(1) == b"\x01"  # connection.start: a method frame
        except OSError:
            return False

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([self.ctl_binary, "-n", self.node, *args], env=self.env, capture_output=True,
                                text=True, timeout=60, cwd=self.dir)
        if check and result.returncode != 0:
            pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()[-1000:]}")
        return result

    def stop(self) -> None:
        """Stop the node (SIGTERM to its process group, the script and the Erlang VM: a clean
        shutdown, its data kept; SIGKILL after 60 s)."""
        import signal

        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_group(self.process)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self.process is not None:
            kill_group(self.process)  # anything of the group still there
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def rabbitmq_answers(url: str, timeout: float = 2.0) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
        return True
    except Exception:
        return False
