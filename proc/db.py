"""The database connection: one per process, reached only through ``connect()``.

``MONGODB_URI`` names the database. ``mongomock://host/dbname`` selects the embedded
database (mongomock-ng, see ``proc.embedded``), which lives inside this Python process.

mongomock applies a conditional update as "find, then update by _id", so two threads can
both win one race. ``atomic()`` serialises conditional writes on the embedded database so
the state machine's guarantees hold there as they do on a real server (where
``find_one_and_update`` is atomic per document and ``atomic()`` does nothing).
"""
from __future__ import annotations

import contextlib
import threading
from urllib.parse import urlsplit

import mongoengine
from pymongo import WriteConcern
from pymongo.database import Database

from . import config, embedded
from .exceptions import ConfigurationError
from .redact import redact_url

ALIAS = "default"

_lock = threading.Lock()
_conditional_write_lock = threading.RLock()
_state: dict = {"uri": None, "db": None, "embedded": False}


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
            client = mongoengine.connect(
                host=uri, alias=ALIAS, tz_aware=False, serverSelectionTimeoutMS=5000,
                uuidRepresentation="standard",
            )
            is_mock = False
        db = client.get_database(name)
        _state.update(uri=uri, db=db, embedded=is_mock)
        _forget_cached_collections()
        return db


def _forget_cached_collections() -> None:
    """mongoengine caches each class's collection; after a reconnect it must look again."""
    from mongoengine.base import _document_registry

    for cls in _document_registry.values():
        if getattr(cls, "_collection", None) is not None:
            cls._collection = None


def database() -> Database:
    """The connected database, connecting with the configured URI if needed."""
    return _state["db"] if _state["db"] is not None else connect()


def is_embedded() -> bool:
    """True when this process uses the embedded (in-process) database."""
    database()
    return _state["embedded"]


def disconnect() -> None:
    """Drop the connection (the embedded store is kept: it is the process's one server)."""
    with _lock:
        if _state["uri"] is not None:
            mongoengine.disconnect(ALIAS)
        _state.update(uri=None, db=None, embedded=False)


@contextlib.contextmanager
def atomic():
    """Hold while doing one conditional write. Serialises them on the embedded database."""
    if _state["embedded"]:
        with _conditional_write_lock:
            yield
    else:
        yield


def status_collection(collection):
    """``collection`` with the write concern status writes use: majority on a replica set.

    A standalone server accepts ``w="majority"`` too (it is the only member), so this is
    safe everywhere; the embedded database ignores write concerns.
    """
    if _state["embedded"]:
        return collection
    return collection.with_options(write_concern=WriteConcern(w="majority"))


def ping() -> None:
    """Raise ``ConfigurationError`` naming the URI (password hidden) if the DB does not answer."""
    db = database()
    try:
        db.command("ping")
    except Exception as exc:  # pymongo raises several kinds; all mean "not reachable"
        raise ConfigurationError(
            f"MongoDB at {redact_url(_state['uri'])} did not answer ({type(exc).__name__}: "
            f"{redact_url(str(exc))}); check MONGODB_URI and that the server is running"
        ) from None
