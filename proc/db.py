"""The database connection: one per process, reached only through ``connect()``.

``MONGODB_URI`` names the database. ``mongomock://host/dbname`` selects the embedded
database (mongomock-ng, see ``proc.embedded``), which lives inside this Python process.

A MongoClient must never cross a fork (pymongo: "MongoClient opened before fork"). The
connection remembers the process that made it: ``database()`` in a forked child (a
Celery prefork pool process, a gunicorn worker) drops the inherited client unused and
connects anew, so every process talks to MongoDB over its own sockets. Servers that
fork still disconnect before forking (``proc.startup``), so nothing is inherited at all.

Short outages (a restart, an election) are ridden out by ``retrying()``: the writes a
process's outcome depends on are tried again with backoff for ``PROC_DB_OUTAGE_TIMEOUT``
seconds; everything else fails with ``DatabaseUnavailable``, naming ``MONGODB_URI``.

mongomock applies a conditional update as "find, then update by _id", so two threads can
both win one race. The embedded client's own collections (``proc.embedded``) run every write
under one lock, so the state machine's guarantees hold there as they do on a real server
(where a conditional update or ``find_one_and_update`` is atomic per document); nothing
here, and no production code, serialises anything.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import mongoengine
from pymongo import WriteConcern
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from . import config, embedded
from .exceptions import ConfigurationError, DatabaseUnavailable
from .redact import redact_url

log = logging.getLogger(__name__)

ALIAS = "default"

#: What pymongo raises when the server cannot be reached or stopped answering mid-call
#: (``AutoReconnect``, ``NetworkTimeout``, ``ServerSelectionTimeoutError``,
#: ``NotPrimaryError``): the outage errors that are worth trying again.
OUTAGE_ERRORS = (ConnectionFailure,)

#: How long a caller waits for an unreachable server before ``DatabaseUnavailable``.
SERVER_SELECTION_TIMEOUT_MS = 5000

_lock = threading.Lock()
_state: dict = {"uri": None, "db": None, "embedded": False, "pid": None}

T = TypeVar("T")


def _database_name(uri: str, default: str = "proc") -> str:
    path = urlsplit(uri).path.lstrip("/")
    return path.split("?")[0] or default


def connect(uri: str | None = None) -> Database:
    """Connect this process to the database at ``uri`` (default: ``MONGODB_URI``).

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
                f"MONGODB_URI={redact_url(uri)!r} is not a MongoDB URI; use mongodb://host:27017/dbname "
                f"(a real server) or {config.EMBEDDED_MONGODB_URI} (the embedded database)"
            )
        if _state["uri"] is not None:
            mongoengine.disconnect(ALIAS)
            _state.update(uri=None, db=None, embedded=False)
        name = _database_name(uri)
        if uri.startswith("mongomock://"):
            rest = uri[len("mongomock://"):]
            host = "mongodb://" + (rest.split("/")[0] or "localhost")
            client = mongoengine.connect(
                db=name, host=host, alias=ALIAS, mongo_client_class=embedded.client_class(),
                tz_aware=False, uuidRepresentation="standard",
            )
            is_mock = True
        else:
            # connect=False: no socket and no monitor thread until the first operation, so
            # a process that only checks its settings and forks opens nothing to inherit.
            client = mongoengine.connect(
                host=uri, alias=ALIAS, tz_aware=False, connect=False,
                serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS, uuidRepresentation="standard",
            )
            is_mock = False
        db = client.get_database(name)
        _state.update(uri=uri, db=db, embedded=is_mock, pid=os.getpid())
        _forget_cached_collections()
        return db


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
        return _state["db"]
    return connect()


def is_embedded() -> bool:
    """True when this process uses the embedded (in-process) database."""
    database()
    return _state["embedded"]


def disconnect() -> None:
    """Drop the connection (the embedded store is kept: it is the process's one server)."""
    with _lock:
        _forget_inherited()
        if _state["uri"] is not None:
            mongoengine.disconnect(ALIAS)
        _state.update(uri=None, db=None, embedded=False, pid=None)


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
    db = database()
    try:
        db.command("ping")
    except Exception as exc:  # pymongo raises several kinds; all mean "not reachable"
        raise ConfigurationError(
            f"MongoDB at MONGODB_URI={uri()} did not answer ({type(exc).__name__}: "
            f"{_short(exc)}); check MONGODB_URI and that the server is running"
        ) from None


def _short(exc: BaseException) -> str:
    """The first part of a pymongo error (its topology description can run to pages)."""
    text = redact_url(str(exc))
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
