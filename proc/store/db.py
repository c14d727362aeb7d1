"""The database connection: one per process, reached only through ``connect()``.

``MONGODB_URI`` names the database. ``mongomock://host/dbname`` selects the embedded
database (mongomock-ng, see ``proc.store.embedded``), which lives inside this Python process.

A MongoClient must never cross a fork (pymongo: "MongoClient opened before fork"). The
connection remembers the process that made it: ``database()`` in a forked child (a
Celery prefork pool process, a gunicorn worker) drops the inherited client unused and
connects anew, so every process talks to MongoDB over its own sockets. Servers that
fork still disconnect before forking (``proc.startup``), so nothing is inherited at all.

One clock: the first use of the connection in a process measures this host's offset from the
server's clock (``measure_clock``: ``hello``'s ``localTime``, corrected by half the round trip),
and ``database()`` measures it again in a thread of its own every ``timeutil.CLOCK_REFRESH``
seconds, so ``timeutil.utcnow()`` is the server's time on every host. A measurement the server
does not answer keeps the last offset. The embedded database has offset 0.

Short outages (a restart, an election) are ridden out by ``retrying()``: the writes a
process's outcome depends on are tried again with backoff for ``PROC_DB_OUTAGE_TIMEOUT``
seconds; everything else fails with ``DatabaseUnavailable``, naming ``MONGODB_URI``.

mongomock applies a conditional update as "find, then update by _id", so two threads can
both win one race. The embedded client's own collections (``proc.store.embedded``) run every write
under one lock, so the state machine's guarantees hold there as they do on a real server
(where a conditional update or ``find_one_and_update`` is atomic per document); nothing
here, and no production code, serialises anything.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import mongoengine
from pymongo import WriteConcern
from pymongo.database import Database
from pymongo.errors import ConfigurationError as PyMongoConfigurationError, ConnectionFailure, InvalidName

from .. import config, timeutil
from . import embedded
from ..exceptions import ConfigurationError, DatabaseUnavailable
from ..redact import redact_text, redact_url

log = logging.getLogger(__name__)

ALIAS = "default"

#: What pymongo raises when the server cannot be reached or stopped answering mid-call
#: (``AutoReconnect``, ``NetworkTimeout``, ``ServerSelectionTimeoutError``,
#: ``NotPrimaryError``): the outage errors that are worth trying again.
OUTAGE_ERRORS = (ConnectionFailure,)

#: How long a caller waits for an unreachable server before ``DatabaseUnavailable``.
SERVER_SELECTION_TIMEOUT_MS = 5000

#: How long closing a client may spend on its goodbye to the server (pymongo's
#: ``endSessions``, which drivers may skip): without a bound, closing a client whose server is
#: gone waits a whole server selection.
CLOSE_TIMEOUT = 1.0

_lock = threading.Lock()
_state: dict = {"uri": None, "db": None, "embedded": False, "pid": None}

T = TypeVar("T")


def _database_name(uri: str, default: str = "proc") -> str:
    path = urlsplit(uri).path.lstrip("/")
    return path.split("?")[0] or default


def connect(uri: str | None = None, *, named: str = "MONGODB_URI") -> Database:
    """Connect this process to the database at ``uri`` (default: ``MONGODB_URI``); ``named``
    is where the caller took ``uri`` from, for the error that refuses it.

    Idempotent: a second call with the same URI returns the same database. A call with
    another URI reconnects mongoengine's default alias to it (tests, shells).
    """
    uri = uri or config.get().mongodb_uri
    with _lock:
        _forget_inherited()
        if _state["uri"] == uri:
            return _state["db"]
        if not uri.startswith(("mongomock://", "mongodb://", "mongodb+srv://")):
            raise ConfigurationError(
                f"{named} {redact_url(uri)!r} is not a MongoDB URI; use mongodb://host:27017/dbname "
                f"(a real server) or {config.EMBEDDED_MONGODB_URI} (the embedded database)"
            )
        if _state["uri"] is not None:
            _close()
            _state.update(uri=None, db=None, embedded=False)
        try:
            db, is_mock = _client(uri)
        except (ValueError, PyMongoConfigurationError, InvalidName) as exc:  # pymongo parses the URI here
            _close()  # nothing half-registered under the alias for the next try
            raise ConfigurationError(
                f"{named} {redact_url(uri)!r} cannot be used: {redact_text(str(exc)).rstrip('.')}. Write it as "
                f"mongodb://[user:password@]host[:port]/dbname[?options] (a user name or password "
                f"containing @ : / or % escaped with urllib.parse.quote_plus), or use "
                f"{config.EMBEDDED_MONGODB_URI} (the embedded database)"
            ) from None
        _state.update(uri=uri, db=db, embedded=is_mock, pid=os.getpid())
        _clock_due[0] = float("inf") if is_mock else 0.0  # a real server: measured on first use
        _forget_cached_collections()
        return db


def _client(uri: str) -> tuple[Database, bool]:
    """(the database ``uri`` names, through mongoengine's default alias; whether it is the
    embedded one). Called with ``_lock`` held, nothing connected."""
    name = _database_name(uri)
    if uri.startswith("mongomock://"):
        rest = uri[len("mongomock://"):]
        host = "mongodb://" + (rest.split("/")[0] or "localhost")
        client = mongoengine.connect(
            db=name, host=host, alias=ALIAS, mongo_client_class=embedded.client_class(),
            tz_aware=False, uuidRepresentation="standard",
        )
        return client.get_database(name), True
    # connect=False: no socket and no monitor thread until the first operation, so
    # a process that only checks its settings and forks opens nothing to inherit.
    # A cut link loses packets without a word: bound each reply and each new connection
    # (pymongo waits 20 s to connect by default), unless the URI says otherwise.
    socket_ms = int(config.get().db_socket_timeout * 1000)
    options = {option: value for option, value in (
        ("socketTimeoutMS", socket_ms), ("connectTimeoutMS", min(SERVER_SELECTION_TIMEOUT_MS, socket_ms)))
        if option.lower() not in uri.lower()}
    client = mongoengine.connect(
        host=uri, alias=ALIAS, tz_aware=False, connect=False,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS, uuidRepresentation="standard", **options,
    )
    return client.get_database(name), False


def _forget_inherited() -> None:
    """In a forked child, drop the parent's client without using it (it belongs to the parent)."""
    if _state["pid"] is None or _state["pid"] == os.getpid():
        return
    from mongoengine import connection

    for registry in (connection._connections, connection._dbs, connection._connection_settings):
        registry.pop(ALIAS, None)
    _state.update(uri=None, db=None, embedded=False, pid=None)


def _forget_cached_collections() -> None:
    """mongoengine caches each class's collection; after a reconnect it must look again."""
    from mongoengine.base import _document_registry

    for cls in _document_registry.values():
        if getattr(cls, "_collection", None) is not None:
            cls._collection = None


def database() -> Database:
    """The connected database, connecting with the configured URI if needed (and anew in a
    process forked from the one that connected)."""
    if _state["db"] is not None and _state["pid"] == os.getpid():
        if _clock_due[0] <= time.monotonic():  # one call and a comparison on the hot path
            _clock_check()
        return _state["db"]
    db = connect()
    if not _state["embedded"]:
        _clock_check()
    return db


#: How long a clock measurement waits for the server (a refresh runs in a thread of its own).
CLOCK_TIMEOUT = 2.0
_clock_state = {"pid": None, "uri": None, "running": False, "next": 0.0}
_clock_due = [0.0]
"""When (monotonic) ``database()`` looks at the clock next (inf on the embedded database)."""
_clock_lock = threading.Lock()


def _clock_check() -> None:
    """Measure the clock at the first use in this process (and for this URI), synchronously;
    afterwards every ``CLOCK_REFRESH`` seconds in a thread of its own, never blocking a caller."""
    now = time.monotonic()
    fresh = _clock_state["pid"] == os.getpid() and _clock_state["uri"] == _state["uri"]
    if fresh and (now < _clock_state["next"] or _clock_state["running"]):
        if not _clock_state["running"]:  # reconnected to the same server: measured already
            _clock_due[0] = _clock_state["next"]
        return
    with _clock_lock:
        fresh = _clock_state["pid"] == os.getpid() and _clock_state["uri"] == _state["uri"]
        if fresh and (now < _clock_state["next"] or _clock_state["running"]):
            return
        if not fresh:  # a new process or server: the first measurement, before anything is written
            _clock_state.update(pid=os.getpid(), uri=_state["uri"], running=False,
                                next=now + timeutil.CLOCK_REFRESH)
            first = True
        else:
            _clock_state.update(running=True)
            first = False
    if first:
        if measure_clock() is None:  # not answered: try again soon (the offset inherited stays)
            _clock_state["next"] = time.monotonic() + min(5.0, timeutil.CLOCK_REFRESH)
        _clock_due[0] = _clock_state["next"]
        return
    _clock_due[0] = now + timeutil.CLOCK_REFRESH  # the thread sets it again when done
    threading.Thread(target=_refresh_clock, name="proc-clock", daemon=True).start()


def _refresh_clock() -> None:
    try:
        measure_clock()
    finally:
        with _clock_lock:
            _clock_state.update(running=False, next=time.monotonic() + timeutil.CLOCK_REFRESH)
            _clock_due[0] = _clock_state["next"]


def measure_clock() -> float | None:
    """Measure this host's offset from the server's clock and apply it to ``timeutil.utcnow()``:
    ``hello`` answers the server's ``localTime``; the server read it, on average, half way
    through the round trip. Returns the offset (seconds, server minus local), or None when the
    server did not answer (the last offset stays) or is the embedded database (offset 0)."""
    import pymongo

    db = _state["db"]
    if db is None or _state["embedded"]:
        return None
    try:
        with pymongo.timeout(CLOCK_TIMEOUT):
            db.client.admin.command("ping")  # a connection made and checked before timing
            start, sent = time.monotonic(), timeutil.local_utcnow()
            reply = db.client.admin.command("hello")
            rtt = time.monotonic() - start
    except Exception as exc:  # an outage: keep the last offset, measure again later
        log.debug("clock offset of MongoDB at %s not measured: %s", uri(), _short(exc))
        return None
    server_time = reply.get("localTime")
    if server_time is None:
        log.warning("MongoDB at %s answered hello without localTime; times stay on this host's "
                    "clock (offset %.3f s)", uri(), timeutil.clock_offset())
        return None
    if server_time.tzinfo is not None:
        server_time = server_time.replace(tzinfo=None) - server_time.utcoffset()
    received = sent + timedelta(seconds=rtt)  # the round trip by the monotonic clock
    offset = timeutil.offset_from(sent, server_time, received)
    previous = timeutil.clock_offset()
    timeutil.set_clock_offset(offset, rtt, time.monotonic())
    if abs(offset - previous) > 1.0:
        log.warning("this host's clock is %+.3f s from MongoDB's at %s (round trip %.3f s); "
                    "proc writes and compares times on the server's clock", -offset, uri(), rtt)
    return offset


def is_embedded() -> bool:
    """True when this process uses the embedded (in-process) database."""
    database()
    return _state["embedded"]


def disconnect() -> None:
    """Drop the connection (the embedded store is kept: it is the process's one server)."""
    with _lock:
        _forget_inherited()
        if _state["uri"] is not None:
            _close()
        _state.update(uri=None, db=None, embedded=False, pid=None)


def _close() -> None:
    """``mongoengine.disconnect`` of the default alias, its goodbye to the server bounded by
    ``CLOSE_TIMEOUT`` (pymongo's client-side operation timeout also bounds the server
    selection ``endSessions`` makes; pymongo ignores its errors)."""
    import pymongo

    with pymongo.timeout(CLOSE_TIMEOUT):
        mongoengine.disconnect(ALIAS)


_collections: dict = {}


def collection(name: str):
    """``database()[name]``, kept per connection (made anew after a reconnect or in a forked
    child, whose database is another object): the state machine asks for its collection on
    every write, and making it anew costs about 20 Python calls on the embedded database."""
    current = database()
    try:
        made_for, found = _collections[name]
    except KeyError:
        made_for = None
    if made_for is not current:
        found = current[name]
        _collections[name] = (current, found)
    return found


def status_collection(collection):
    """``collection`` with the write concern status writes use: majority on a replica set.

    A standalone server accepts ``w="majority"`` too (it is the only member), so this is
    safe everywhere; the embedded database ignores write concerns.
    """
    if _state["embedded"]:
        return collection
    return collection.with_options(write_concern=WriteConcern(w="majority"))


def uri() -> str:
    """The URI this process is connected to (or will connect to), password hidden."""
    return redact_url(_state["uri"] or config.get().mongodb_uri)


def ping() -> None:
    """Raise ``ConfigurationError`` naming the URI (password hidden) if the DB does not answer."""
    import pymongo

    try:
        db = database()
        with pymongo.timeout(SERVER_SELECTION_TIMEOUT_MS / 1000):  # a cut link must not hold it
            db.command("ping")
    except Exception as exc:  # pymongo raises several kinds; all mean "not reachable"
        raise ConfigurationError(
            f"MongoDB at MONGODB_URI={uri()} did not answer ({type(exc).__name__}: "
            f"{_short(exc)}); check MONGODB_URI and that the server is running"
        ) from None


def _short(exc: BaseException) -> str:
    """The first part of a pymongo error (its topology description can run to pages)."""
    text = redact_text(str(exc))
    return text.split(", Timeout:")[0].split("; Topology Description")[0][:300]


def unavailable(exc: BaseException, what: str) -> DatabaseUnavailable:
    """The error a caller gets when MongoDB is away: it names MONGODB_URI and the fix."""
    return DatabaseUnavailable(
        f"MongoDB at MONGODB_URI={uri()} did not answer while {what} ({type(exc).__name__}: "
        f"{_short(exc)}); check that the server is running and MONGODB_URI names it, then try again")


def retrying(fn: Callable[[], T], what: str, *, timeout: float | None = None,
             on_retry: Callable[[], None] | None = None) -> T:
    """Call ``fn`` until it succeeds, trying again with backoff after an outage error for up
    to ``timeout`` seconds (default ``PROC_DB_OUTAGE_TIMEOUT``); then ``DatabaseUnavailable``.

    ``on_retry`` runs before each new try (a write uses it to learn that its earlier try
    may have landed). Errors other than outages propagate at once.
    """
    limit = config.get().db_outage_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    delay, tries = 0.1, 0
    while True:
        try:
            return fn()
        except OUTAGE_ERRORS as exc:
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("MongoDB at %s still unreachable after %g s while %s: %s",
                          uri(), limit, what, _short(exc))
                raise unavailable(exc, what) from None
            log.warning("MongoDB at %s unreachable while %s (try %d, %s); trying again for up to %.0f s",
                        uri(), what, tries, type(exc).__name__, left)
            time.sleep(min(delay, left))  # backoff between tries, not synchronisation
            delay = min(delay * 2, 2.0)
            if on_retry is not None:
                on_retry()
