"""Shared pieces of the benchmarks: the two database tiers, round-trip counting on each, a real
Redis broker, an in-process worker.

Every benchmark reports two tiers side by side, in one run:

- **embedded**: mongomock-ng in this process (``mongomock://``), what the demo and the test
  suite run on. It sends nothing over a socket, so its round trips are counted by wrapping
  its collection methods (``OpCounter``: one method call = one request a server would get).
- **real**: a MongoDB wire-protocol server over a socket. ``MONGODB_URI=mongodb://...`` if
  set (each benchmark uses a database of its own there, dropped at the end), else a private
  SecantusDB server started for the run (``secantusd-py`` next to this Python, else on
  PATH; a temporary directory, a free port, stopped at the end). SecantusDB is GPL-2.0-only:
  it runs as a program of its own and is never imported. Its round trips are the commands
  pymongo really sends, seen by a ``pymongo.monitoring.CommandListener``
  (``CommandCounter``; ``getMore`` included: each is one more exchange).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pymongo import monitoring

# -- round trips on a real server: every command pymongo sends ------------------------------


class _Listener(monitoring.CommandListener):
    """Process-wide; feeds every active counter or recorder (commands from every thread,
    in-process workers included). Registered at import, before any client exists
    (``monitoring.register`` applies to clients created afterwards)."""

    def __init__(self):
        self.sinks: list = []
        self.lock = threading.Lock()

    def add(self, sink) -> None:
        with self.lock:
            self.sinks = [*self.sinks, sink]

    def remove(self, sink) -> None:
        with self.lock:
            self.sinks = [s for s in self.sinks if s is not sink]

    def started(self, event):
        for sink in self.sinks:
            sink.started(event)

    def succeeded(self, event):
        for sink in self.sinks:
            sink.finished(event)

    def failed(self, event):
        for sink in self.sinks:
            sink.finished(event)


LISTENER = _Listener()
monitoring.register(LISTENER)

#: Commands that only read (the rest write, or manage indexes and collections).
READ_COMMANDS = frozenset({"find", "getMore", "aggregate", "count", "distinct", "listIndexes",
                           "listCollections", "explain"})
#: Sent by pymongo on its own (closing a client, ending sessions): not a request of the code measured.
HOUSEKEEPING = frozenset({"endSessions", "killCursors"})


class CommandCounter:
    """Commands sent to a real server while active, by command name (``find``, ``getMore``,
    ``update``, ``findAndModify``, ``aggregate``, ...), and the seconds each kind took
    (the driver's measure: from sending to the reply)."""

    tier = "real"

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.times: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def started(self, event):
        if event.command_name not in HOUSEKEEPING:
            with self._lock:
                self.counts[event.command_name] += 1

    def finished(self, event):
        if event.command_name not in HOUSEKEEPING:
            with self._lock:
                self.times[event.command_name] += event.duration_micros / 1e6

    def __enter__(self):
        LISTENER.add(self)
        return self

    def __exit__(self, *exc):
        LISTENER.remove(self)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reads(self) -> int:
        return sum(n for name, n in self.counts.items() if name in READ_COMMANDS)

    def writes(self) -> int:
        return self.total - self.reads()

    def detail(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))


class CommandRecorder:
    """Records the command documents sent while active, as ``(tag, name, command)``;
    ``tag`` (set by the caller) says which part of the code sent them."""

    def __init__(self):
        self.commands: list[tuple[str, str, dict]] = []
        self.tag = ""

    def started(self, event):
        if event.command_name not in HOUSEKEEPING:
            self.commands.append((self.tag, event.command_name, dict(event.command)))

    def finished(self, event):
        pass

    def __enter__(self):
        LISTENER.add(self)
        return self

    def __exit__(self, *exc):
        LISTENER.remove(self)


# -- round trips on the embedded database: its collection methods -----------------------------


class OpCounter:
    """Counts calls of the embedded database's collection methods (each one a round trip
    on a real server; a cursor's later batches are not counted), and times the outermost
    call of each kind (a find's time includes reading its cursor, where mongomock works)."""

    tier = "embedded"
    METHODS = ("find", "find_one", "find_one_and_update", "update_one", "update_many", "insert_one",
               "insert_many", "replace_one", "delete_one", "delete_many", "count_documents",
               "aggregate", "bulk_write", "distinct", "create_index", "find_one_and_delete",
               "estimated_document_count")
    READS = ("find", "find_one", "count_documents", "aggregate", "distinct", "estimated_document_count")

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.times: collections.Counter = collections.Counter()
        self._saved = []
        self._depth = threading.local()

    def _wrap(self, owner, name: str, label: str, counts: bool) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))

        def counted(obj, *args, **kwargs):
            depth = getattr(self._depth, "n", 0)
            if depth:  # count what the caller asked for, not mongomock's inner calls
                return original(obj, *args, **kwargs)
            if counts:
                self.counts[label] += 1
            self._depth.n = 1
            started = time.perf_counter()
            try:
                return original(obj, *args, **kwargs)
            finally:
                self._depth.n = 0
                self.times[label] += time.perf_counter() - started

        setattr(owner, name, counted)

    def __enter__(self):
        from mongomock_ng.collection import Collection, Cursor

        # mongomock's class and every subclass that defines the method itself (the embedded
        # database's collections wrap the writes in a lock of their own, calling mongomock's
        # method directly): the outermost call is counted, once.
        classes, todo = [], [Collection]
        while todo:
            cls = todo.pop()
            classes.append(cls)
            todo.extend(cls.__subclasses__())
        for cls in classes:
            for name in self.METHODS:
                if name in vars(cls):
                    self._wrap(cls, name, name, True)
        self._wrap(Cursor, "__next__", "find", False)
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reads(self) -> int:
        return sum(self.counts[n] for n in self.READS)

    def writes(self) -> int:
        return self.total - self.reads()

    def detail(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))


# -- the real server: MONGODB_URI or a private SecantusDB --------------------------------------


def secantus_binary() -> str | None:
    """``secantusd-py`` next to this Python (the virtualenv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "secantusd-py")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("secantusd-py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_answers(url: str, timeout_ms: int = 300) -> bool:
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms, directConnection=True)
    try:
        return bool(client.admin.command("ping").get("ok"))
    except Exception:
        return False
    finally:
        client.close()


class SecantusProcess:
    """A private SecantusDB server for one benchmark run: its own temporary directory and
    free port; stopped (SIGTERM, then SIGKILL) and its directory removed at the end."""

    def __init__(self):
        self.binary = secantus_binary()
        if self.binary is None:
            sys.exit("the real tier needs SecantusDB (secantusd-py, pip install SecantusDB) or "
                     "MONGODB_URI=mongodb://...; or run with --tier embedded")
        self.dir = tempfile.mkdtemp(prefix="proc-bench-secantus-")
        self.port = free_port()
        self.log = os.path.join(self.dir, "server.log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("SecantusDB")
        except Exception:
            return "?"

    def __enter__(self) -> "SecantusProcess":
        args = [self.binary, "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", os.path.join(self.dir, "db"), "--log-level", "WARNING"]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while not server_answers(self.url):
            if self.process.poll() is not None:
                sys.exit(f"secantusd-py exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.__exit__()
                sys.exit(f"secantusd-py did not answer on port {self.port} within 60 s")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


def with_database(uri: str, name: str) -> str:
    """``uri`` naming database ``name`` instead of its own (options kept)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@dataclass
class Tier:
    """One database tier of a benchmark run."""

    name: str          # "embedded" or "real"
    base_uri: str      # without a database name
    description: str   # what it is, for the report

    @property
    def real(self) -> bool:
        return self.name == "real"

    def uri(self, database: str) -> str:
        return with_database(self.base_uri, database)

    def counter(self):
        """Counts the round trips of what runs while it is active."""
        return CommandCounter() if self.real else OpCounter()

    def connect(self, database: str, **settings):
        """Point the settings and this process's connection at ``database`` on this tier,
        with every collection of it dropped."""
        from proc import config
        from proc.store import db

        uri = self.uri(database)
        config.configure(mongodb_uri=uri, **settings)
        handle = db.connect(uri)
        for name in handle.list_collection_names():
            handle.drop_collection(name)
        return handle

    def drop(self, database: str) -> None:
        """Drop ``database`` (the real tier; the embedded store ends with the process)."""
        if self.real:
            from proc.store import db

            db.connect(self.uri(database)).client.drop_database(database)


def add_tier_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tier", choices=("both", "embedded", "real"), default="both",
                        help="which database tier(s) to measure (default: both, side by side)")


@contextlib.contextmanager
def tiers(which: str = "both"):
    """The tiers to measure, embedded first; starts (and at the end stops) a private
    SecantusDB when the real tier is wanted and ``MONGODB_URI`` names no real server."""
    out = []
    if which in ("both", "embedded"):
        import mongomock_ng

        out.append(Tier("embedded", "mongomock://localhost/",
                        f"embedded database (mongomock-ng {getattr(mongomock_ng, '__version__', '?')}, "
                        "in this process)"))
    with contextlib.ExitStack() as stack:
        if which in ("both", "real"):
            uri = os.environ.get("MONGODB_URI", "")
            if uri.startswith(("mongodb://", "mongodb+srv://")):
                from proc.redact import redact_url

                out.append(Tier("real", uri, f"MONGODB_URI {redact_url(uri)}"))
            else:
                server = stack.enter_context(SecantusProcess())
                out.append(Tier("real", server.url, f"SecantusDB {server.version()} at 127.0.0.1:"
                                                    f"{server.port} (a private server for this run)"))
        yield out
        from proc.store import db

        db.disconnect()  # before the server stops: no client left talking to it


def print_tiers(found) -> None:
    for tier in found:
        print(f"  {tier.name:<8} = {tier.description}")


def add_size_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--sizes`` (embedded tier), ``--real-sizes`` (default: ``--sizes``), ``--repeat``,
    ``--quick`` and ``--tier``: the options of a benchmark measured at a few sizes of ``what``."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help=f"{what}, embedded tier")
    parser.add_argument("--real-sizes", type=int, nargs="+", default=None,
                        help=f"{what}, real tier (default: --sizes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--sizes 10000 --repeat 1")
    add_tier_argument(parser)


def sizes_of(args) -> dict[str, list[int]]:
    """The sizes per tier that ``add_size_arguments``'s options ask for (``--quick`` applied)."""
    if args.quick:
        args.sizes, args.repeat = [10_000], 1
    return {"embedded": args.sizes, "real": args.real_sizes or args.sizes}


def run_tiers(which: str, title: str, run, sizes: dict[str, list[int]]) -> dict[str, list]:
    """Print ``title`` and the tiers ``which`` names, then ``run(tier, sizes[tier.name])`` on
    each, embedded first: ``{tier name: what run returned}``."""
    results = {}
    with tiers(which) as found:
        print(title)
        print_tiers(found)
        for tier in found:
            results[tier.name] = run(tier, sizes[tier.name])
    return results


# -- the broker and an in-process worker -------------------------------------------------------


def redis_url() -> str:
    """CELERY_BROKER_URL, else the local Redis; exits with a clear message if none answers."""
    import redis

    url = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        sys.exit(f"benchmark needs a Redis broker: {url} did not answer ({exc}); "
                 "start redis-server or set CELERY_BROKER_URL")
    return url


def make_app(broker_url: str):
    """A Celery app on ``broker_url`` with keys under a prefix of its own."""
    from proc import config
    from proc.run import messaging

    app = messaging.make_app(config.Settings(**{**config.get().__dict__, "broker_url": broker_url}))
    options = dict(app.conf.broker_transport_options)
    options["global_keyprefix"] = f"procbench-{uuid.uuid4().hex[:8]}-"
    app.conf.broker_transport_options = options
    messaging.set_app(app)
    return app


@contextlib.contextmanager
def worker(app, concurrency: int = 4):
    """A real Celery worker (thread pool) in this process: its tasks use this process's
    connection, so it talks to whichever tier ``Tier.connect`` pointed the process at."""
    from proc.run.inprocess import in_process_worker

    with in_process_worker(app, concurrency=concurrency, loglevel="ERROR", shutdown_timeout=60) as w:
        yield w


def interleaved(tier_name: str, rounds: int, runs: dict, label=str) -> dict:
    """Each of ``runs`` (key -> a call that returns a rate per second) once per round, in
    turn, for ``rounds`` rounds, so that a noisy moment of the machine falls on all of them;
    prints each round's rates (named by ``label(key)``). Returns key -> median rate."""
    rates = {key: [] for key in runs}
    for r in range(rounds):
        for key, run in runs.items():
            rates[key].append(run())
        print(f"  {tier_name} round {r + 1}: " + "  ".join(
            f"{label(key)} {rates[key][-1]:7.1f}/s" for key in runs), flush=True)
    return {key: statistics.median(values) for key, values in rates.items()}


def table(headers: list[str], rows: list[list], aligns: str | None = None) -> str:
    """A plain text table (``aligns``: one ``<`` or ``>`` per column)."""
    aligns = aligns or "<" + ">" * (len(headers) - 1)
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, aligns, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def timed(tier, fn, repeat: int):
    """(median seconds over ``repeat`` calls, round trips of one more call before them,
    that call's result): what a benchmark reports for one measured operation."""
    with tier.counter() as ops:
        result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), ops, result


def empty_with_indexes(database) -> None:
    """Drop every collection of ``database``, then create the Proc models' indexes, as a
    deployed database has them (a benchmark's fresh start at each size)."""
    from proc import registry

    for name in database.list_collection_names():
        database.drop_collection(name)
    for cls in registry.proc_classes():
        cls.ensure_indexes()
