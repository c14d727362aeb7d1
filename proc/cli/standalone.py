"""``procctl standalone``: everything proc needs, on one machine, in one command.

It starts, each as a process of its own with its log in ``DIR/logs/``:

- the database: ``MONGODB_URI`` if set, else a SecantusDB server (``secantusd-py``, from
  the ``standalone`` extra; GPL-2.0-only, so it is only ever run as a program, never
  imported) on ``DIR/db``, on a free port remembered in ``DIR/ports.json``;
- the broker: ``CELERY_BROKER_URL`` if set, else the Redis on 127.0.0.1:6379 if it answers,
  else a private ``redis-server`` on ``DIR/redis`` (``appendonly yes``). The address probed
  can be changed with ``PROC_STANDALONE_LOCAL_REDIS`` (``none``: do not probe), which the
  tests use to get a private broker;
- a Celery worker (prefork), the monitor's sweep (``procctl monitor``) and the status page
  (``procctl serve``, loopback only).

Ctrl-C or SIGTERM stops them in order (page and sweep, worker with a warm shutdown, broker,
database); a second Ctrl-C kills them at once. ``DIR`` defaults to ``$XDG_DATA_HOME/proc``
(``~/.local/share/proc``), followed by hand (no extra dependency). A lock file
(``DIR/standalone.lock``, holding the pid) keeps a second run off the same directory.
"""
from __future__ import annotations

import fcntl
import importlib
import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request

import click

from migrations import guard

from .. import config, registry, startup
from ..store import db
from ..exceptions import ConfigurationError
from ..redact import redact_url
from .serve import check_app_settings
from .supervise import Child, StartFailed, Supervisor, say

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
PAGE = "/projects/admin/check-status/"
CHECKED_AS = "procctl standalone (its worker, sweep and status page)"


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "proc")


def find_program(name: str) -> str | None:
    """``name`` next to this interpreter (the virtualenv), else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.access(candidate, os.X_OK) else shutil.which(name)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except Exception:  # not reachable, not Redis, refused: all mean "no"
        return False


def mongo_answers(uri: str) -> bool:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=300, directConnection=True)
    try:
        return bool(client.admin.command("ping").get("ok"))
    except Exception:  # not up yet
        return False
    finally:
        client.close()


def http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:  # it answered (e.g. 503: the page says what is wrong)
        return True
    except OSError:
        return False


def take_lock(data_dir: str):
    """Create the data directory and hold its lock; refuse if it is not writable or held."""
    path = os.path.join(data_dir, "standalone.lock")
    try:
        os.makedirs(os.path.join(data_dir, "logs"), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigurationError(f"--data-dir {data_dir} is not writable ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigurationError(f"another procctl standalone (pid {pid}) is running on {data_dir} "
                                 f"(lock file {path}); stop it first, or use another --data-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def import_models(models: list[str]) -> None:
    if os.getcwd() not in sys.path:  # the children (python -m ..., celery -A) import from here too
        sys.path.insert(0, os.getcwd())
    for name in models:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an import error, or anything the module raised
            raise ConfigurationError(f"--models: module {name!r} does not import "
                                     f"({type(exc).__name__}: {exc})") from None


def remembered_port(data_dir: str, name: str) -> int:
    """The port ``name`` had last time in this data directory, or a new free one."""
    path = os.path.join(data_dir, "ports.json")
    try:
        with open(path) as f:
            ports = json.load(f)
    except (OSError, ValueError):
        ports = {}
    port = ports.get(name)
    if not port or not port_free(port):
        if port:
            say(name, f"port {port} of the last run is taken; using another")
        port = ports[name] = free_port()
        with open(path, "w") as f:
            json.dump(ports, f)
    return port


def choose_broker(data_dir: str, environ=os.environ):
    """``(url, redis-server binary or None)``: the broker to use, and whether to start one."""
    given = environ.get("CELERY_BROKER_URL")
    if given:
        if given.startswith("memory://"):
            raise ConfigurationError("CELERY_BROKER_URL=memory:// is the in-process broker; the worker "
                                     "runs as its own process here. Unset it, or name a Redis")
        if given.startswith(("redis://", "rediss://")) and not redis_answers(given):
            raise ConfigurationError(f"the broker CELERY_BROKER_URL={redact_url(given)} does not answer")
        return given, None
    local = environ.get("PROC_STANDALONE_LOCAL_REDIS", LOCAL_REDIS)
    if local != "none" and redis_answers(local):
        return local, None
    binary = find_program("redis-server")
    if not binary:
        raise ConfigurationError(
            "no broker: CELERY_BROKER_URL is not set, no Redis answers on 127.0.0.1:6379, and "
            "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install "
            "redis-server), or set CELERY_BROKER_URL to a Redis")
    return f"redis://127.0.0.1:{remembered_port(data_dir, 'broker')}/0", binary


def running_processes(limit: int = 10) -> list[str]:
    """``collection/id (step)`` of RUNNING processes, for the worker's shutdown report."""
    found = []
    try:
        database = db.database()
        for cls in registry.proc_classes():
            name = cls._get_collection_name()
            for doc in database[name].find({"process_status": "RUNNING"},
                                           {"current_process_step": 1}).limit(limit - len(found)):
                found.append(f"{name}/{doc['_id']} ({doc.get('current_process_step') or 'no step'})")
            if len(found) >= limit:
                break
    except Exception as exc:  # the report must not stop the shutdown
        found.append(f"(could not ask the database: {type(exc).__name__})")
    return found


def ready_in_log(marker: str):
    return lambda child: marker in child.log_since_start()


@click.command()
@click.option("--data-dir", default=None, help="Where the database, the Redis, the logs and the lock "
                                                "live [default: $XDG_DATA_HOME/proc or ~/.local/share/proc].")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the check-status page (127.0.0.1).")
@click.option("--concurrency", default=None, type=click.IntRange(1, 512),
              help="Worker processes [default: the number of cores].")
@click.option("--models", envvar="PROC_MODELS", default="proc.demo.models", show_default=True,
              help="Modules defining your Proc subclasses, comma-separated (PROC_MODELS).")
@click.option("--shutdown-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds the worker may take to finish running processes when stopping.")
def standalone(data_dir, port, concurrency, models, shutdown_timeout):
    """Start a database, a broker, a worker, the monitor's sweep and the status page on this
    machine, and print how to join them from another terminal. Ctrl-C stops everything."""
    data_dir = os.path.abspath(data_dir or default_data_dir())
    check_app_settings()  # its page would refuse them: say so before starting anything
    logs = os.path.join(data_dir, "logs")
    lock = take_lock(data_dir)  # noqa: F841 (held until this process exits)
    model_list = [m.strip() for m in models.split(",") if m.strip()]
    import_models(model_list)
    if not port_free(port):
        raise ConfigurationError(f"port {port} (127.0.0.1) is already in use; stop what uses it or "
                                 "choose another with --port")
    broker_url, redis_binary = choose_broker(data_dir)
    mongo_uri = os.environ.get("MONGODB_URI") or (None if config.get().embedded_db else config.get().mongodb_uri)
    secantus = None
    if not mongo_uri:
        secantus = find_program("secantusd-py")
        if not secantus:
            raise ConfigurationError("the database: secantusd-py is not installed (pip install "
                                     "'proc[standalone]'), and MONGODB_URI is not set")
        mongo_uri = f"mongodb://127.0.0.1:{remembered_port(data_dir, 'db')}/proc"
    concurrency = concurrency or os.cpu_count() or 1
    env = {**os.environ, "MONGODB_URI": mongo_uri, "CELERY_BROKER_URL": broker_url,
           "PROC_MODELS": ",".join(model_list), "PYTHONUNBUFFERED": "1"}
    config.configure(mongodb_uri=mongo_uri, broker_url=broker_url, models=tuple(model_list))

    children = components(data_dir, port, concurrency, shutdown_timeout, env, secantus, redis_binary)
    sup = Supervisor()
    sup.install_signal_handlers()
    say("standalone", f"data directory {data_dir} (logs in {logs}/)")
    failure = reason = None
    try:
        if "db" in children:
            sup.start(children["db"])
            sup.wait_ready([children["db"]])
        else:
            say("db", f"using MONGODB_URI={redact_url(mongo_uri)} (not started here)")
        startup.check_separate_process(CHECKED_AS, checks=[guard.refuse_if_legacy], disconnect=True)
        say("checks", "passed: the database answers, no document is in the old shape, "
                      f"the models import ({', '.join(model_list)})")
        if "broker" in children:
            os.makedirs(os.path.join(data_dir, "redis"), exist_ok=True)
            sup.start(children["broker"])
            sup.wait_ready([children["broker"]])
        else:
            say("broker", f"using the Redis at {redact_url(broker_url)} (not started here)")
        servers = [children[name] for name in ("worker", "sweep", "web")]
        for child in servers:
            sup.start(child)
        sup.wait_ready(servers)
        print_exports(port, env, logs)
        reason = sup.watch()
    except (StartFailed, ConfigurationError) as exc:
        reason = sup.stop_reason  # Ctrl-C while starting is no error
        failure = None if sup.signals else str(exc)
    finally:
        if sup.children:
            say("standalone", f"stopping everything ({reason or failure or 'an error'}): the page and "
                              "the sweep, then the worker, the broker, the database")
            sup.stop([[children["web"], children["sweep"]], [children["worker"]],
                      [children[name] for name in ("broker", "db") if name in children]])
            say("standalone", "stopped; nothing is left running")
    if failure:
        raise ConfigurationError(failure)
    if sup.signals == 0:  # a component used up its restarts
        click.echo(f"Error: {reason}", err=True)
        sys.exit(1)


def components(data_dir, port, concurrency, shutdown_timeout, env, secantus, redis_binary) -> dict:
    """The children to start, by name: the database and the broker only if they are to be
    started here (a program was found for them)."""
    def log(name):
        return os.path.join(data_dir, "logs", f"{name}.log")

    mongo_uri, broker_url = env["MONGODB_URI"], env["CELERY_BROKER_URL"]
    children = {}
    if secantus:
        host_port = mongo_uri.split("/")[2]
        children["db"] = Child(
            "db", [secantus, "--host", "127.0.0.1", "--port", host_port.rsplit(":", 1)[1],
                   "--storage-path", os.path.join(data_dir, "db")], log("db"),
            f"secantusd-py on {host_port} (data {data_dir}/db)", env,
            ready=lambda child: mongo_answers(mongo_uri), stop_timeout=60)
    if redis_binary:
        redis_port = broker_url.rsplit(":", 1)[1].split("/")[0]
        children["broker"] = Child(
            "broker", [redis_binary, "--port", redis_port, "--bind", "127.0.0.1",
                       "--dir", os.path.join(data_dir, "redis"), "--appendonly", "yes"], log("broker"),
            f"redis-server on {broker_url} (data {data_dir}/redis, appendonly yes)", env,
            ready=lambda child: redis_answers(broker_url), stop_timeout=30)
    children["worker"] = worker = Child(
        "worker", [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", "prefork",
                   "-c", str(concurrency), "-n", "standalone@%h", "-l", "INFO"], log("worker"),
        f"celery -A celery_app worker -P prefork -c {concurrency}", env,
        ready=ready_in_log(" ready."), stop_timeout=shutdown_timeout)
    children["sweep"] = Child("sweep", [sys.executable, "-m", "proc", "monitor"], log("sweep"),
                              "procctl monitor (the periodic sweep)", env, ready=ready_in_log("sweep at"))
    children["web"] = Child("web", [sys.executable, "-m", "proc", "serve", "--port", str(port)], log("web"),
                            f"procctl serve on 127.0.0.1:{port} (gunicorn)", env,
                            ready=lambda child: http_answers(f"http://127.0.0.1:{port}/healthz"))

    def before_warm_shutdown():
        running = running_processes()
        say("worker", f"warm shutdown: waiting up to {shutdown_timeout:g} s for "
                      + (f"{len(running)} running process(es) to finish: {', '.join(running)}"
                         if running else "running processes to finish (none is RUNNING)"))

    def still_running(waited):
        running = running_processes()
        say("worker", f"still running after {waited:g} s: {', '.join(running) or 'none in the database'}; "
                      "killing the worker (the monitor recovers them by their kind's policy)")

    worker.on_stop, worker.on_stop_timeout = before_warm_shutdown, still_running
    return children


def print_exports(port, env, logs) -> None:
    say("standalone", f"everything is up. The check-status page: http://127.0.0.1:{port}{PAGE}")
    say("standalone", "to join from another terminal (procctl shell, procctl datafix, your callers):")
    for name in ("MONGODB_URI", "CELERY_BROKER_URL", "PROC_MODELS"):
        print(f"    export {name}={redact_url(env[name])}", flush=True)
    say("standalone", f"logs in {logs}/; Ctrl-C stops everything (a second Ctrl-C kills at once)")
