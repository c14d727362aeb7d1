"""The embedded database (mongomock-ng), made to behave like one real server in one process.

Everything here applies to the embedded client's own objects only (``EmbeddedClient`` and
the databases, collections and cursors it makes): a plain ``mongomock_ng.MongoClient`` in
the same process behaves exactly as mongomock does, and production code never sees any of
it.

- **One store.** Every client made for it shares one store, so mongoengine, the API and
  in-process workers see the same data (mongomock gives each client its own data otherwise).
- **Atomic writes.** mongomock applies a conditional update as "find, then update by _id",
  so two threads can both win one race. The embedded collections run every write (and
  ``find_one_and_*``) under one lock per store, so a single-document conditional write is
  atomic, as it is on a real server.
- **An ``_id`` lookup.** Lookups by ``_id`` use the store's key, as a real server uses its
  ``_id`` index, instead of scanning the collection: ``{_id: v}`` and ``{_id: {$in: [...]}}``,
  at the top level or as a clause of a top-level ``$and``. The rest of the filter is applied
  to every candidate (which equals a listed ``_id`` by construction), so what matches is
  unchanged. Anything else scans, as mongomock always does.
- **The 16 MiB limit.** A write whose resulting document would be larger than a real server
  takes (``caps.DOCUMENT_BYTES`` of BSON) is refused with the server's error
  (``BSONObjectTooLarge``, code 10334) and changes nothing, as on a real server; mongomock
  stores documents of any size otherwise.
- **``$slice`` of a field that is not an array** projects the field as it is, as a real server
  does (mongomock refuses the whole query): one malformed document (``errors: "boom"``)
  does not fail a list.
- **No refused write is ever seen.** mongomock applies an update in place and puts the old
  document back when the write is refused; a cursor computes its results under the same lock
  as the writes, so no reader sees the document in between.
- **A cursor window.** A cursor hands out its results without copying the whole result list
  for every document (mongomock slices it again on each ``next``: quadratic in the result size).
"""
from __future__ import annotations

import copy
import datetime
import math
import threading
import uuid
from collections.abc import Hashable

import bson
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, WriteError

from . import caps

_client_class = None

#: ``_id`` values whose Python equality (what mongomock's filter uses) agrees with
#: hashing, found by the store's key, which is the ``_id`` as inserted. ``int`` covers
#: bool and Int64, ``bytes`` covers Binary.
_BY_KEY = (str, int, float, ObjectId, bytes, uuid.UUID, type(None), datetime.datetime)


def _usable(value) -> bool:
    return (isinstance(value, _BY_KEY) and isinstance(value, Hashable)
            and not (isinstance(value, float) and math.isnan(value)))


def _id_values(condition):
    """The ``_id`` values a condition on ``_id`` allows, or None if it is not a plain
    equality or ``$in`` of usable values (regexes, operators, documents, NaN: scan)."""
    if isinstance(condition, dict):
        if condition.keys() != {"$in"} or not isinstance(condition["$in"], (list, tuple)):
            return None
        values = condition["$in"]
    else:
        values = (condition,)
    return list(values) if all(_usable(v) for v in values) else None


def id_lookup(filter) -> tuple[list, dict] | None:
    """``(values, rest)`` when every document matching ``filter`` must have an ``_id`` equal
    to one of ``values`` (said plainly at the top level or in a clause of a top-level
    ``$and``) and ``rest`` is the filter without that condition; else None.

    A document found by one of ``values`` satisfies that condition by construction, so
    only ``rest`` is left to apply to it: applying ``$in`` again would compare each
    candidate with every listed id (quadratic, what the lookup is there to avoid).
    """
    if not isinstance(filter, dict):
        return None
    if "_id" in filter:
        values = _id_values(filter["_id"])
        if values is not None:
            return values, {k: v for k, v in filter.items() if k != "_id"}
    clauses = filter.get("$and")
    if type(clauses) is list:
        for i, clause in enumerate(clauses):
            found = id_lookup(clause)
            if found is not None:
                values, rest = found
                return values, {**filter, "$and": [*clauses[:i], rest, *clauses[i + 1:]]}
    return None


_MISSING = object()


class _TooLarge(DuplicateKeyError):
    """Raised inside mongomock's write so that it restores the stored document (what it does
    for a duplicate key); turned into the server's error before the caller sees it."""

    def __init__(self, size: int):
        super().__init__("document too large", 10334)
        self.size = size


def _candidates(store, values: list) -> list:
    """The stored documents whose ``_id`` equals one of ``values``, each once, in the order
    of ``values``. mongomock keys a document by its ``_id`` as inserted but stores a date
    at millisecond precision, naive UTC: dates are looked up by key when each one is found
    so with a stored ``_id`` equal to it; otherwise (one inserted with microseconds or a time
    zone, or absent) every date is compared with each stored ``_id`` in one pass, after the
    other values, in the store's order."""
    store._remove_expired_documents()
    with store._rwlock.reader():
        documents = store._documents
        dates = [v for v in values if isinstance(v, datetime.datetime)]
        by_key = all(documents.get(v, {}).get("_id", _MISSING) == v for v in dates)
        found, seen = [], set()
        for value in values:
            if isinstance(value, datetime.datetime) and not by_key:
                continue
            doc = documents.get(value)
            if doc is not None and id(doc) not in seen:
                seen.add(id(doc))
                found.append(doc)
        if dates and not by_key:
            wanted = set(dates)
            for doc in list(documents.values()):
                stored = doc.get("_id")
                if isinstance(stored, datetime.datetime) and stored in wanted and id(doc) not in seen:
                    seen.add(id(doc))
                    found.append(doc)
        return found


#: The collection methods that write (or find and write): run under the store's lock.
_WRITES = ("insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
           "delete_many", "find_one_and_update", "find_one_and_replace", "find_one_and_delete",
           "bulk_write")


def _serialised(base, name: str):
    def write(self, *args, **kwargs):
        with self._proc_lock:  # the base method looked up per call (tests may wrap it to count)
            try:
                return getattr(base, name)(self, *args, **kwargs)
            except _TooLarge as exc:
                raise _too_large_error(exc.size) from None

    write.__name__ = name
    write.__doc__ = f"mongomock's ``{name}``, atomic: run under the store's write lock."
    return write


def _too_large_error(size: int) -> WriteError:
    message = (f"BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and "
               f"{caps.DOCUMENT_BYTES}(16MB)")
    return WriteError(message, 10334, {"code": 10334, "codeName": "BSONObjectTooLarge", "errmsg": message})


def _bson_size(document) -> int:
    try:
        return len(bson.encode(document))
    except Exception:  # a value bson cannot encode: mongomock's own checks speak for it
        return 0


def _classes():
    import mongomock_ng
    from mongomock_ng import filtering
    from mongomock_ng import collection as collection_module
    from mongomock_ng.collection import Collection, Cursor
    from mongomock_ng.database import Database

    class EmbeddedCursor(Cursor):
        """Keeps its skip/limit window once computed, instead of slicing the whole result
        list again for every ``next``."""

        def _compute_results(self, with_limit_and_skip=False):
            # Under the write lock: mongomock applies an update to the stored document in place
            # and puts it back if the write is refused (size, duplicate key); a reader must never
            # see a refused write in between.
            with self.collection._proc_lock:
                results = super()._compute_results(with_limit_and_skip=False)
            if not with_limit_and_skip:
                return results
            window = self.__dict__.get("_proc_window")
            key = (self._skip, self._limit)
            if window is None or window[0] is not results or window[1] != key:
                sliced = results[self._skip:]
                if self._limit:
                    sliced = sliced[:abs(self._limit)]
                window = self._proc_window = (results, key, sliced)
            return window[2]

    class EmbeddedCollection(Collection):
        """A collection of the embedded server: atomic writes, ``_id`` lookups, cursor windows."""

        @property
        def _proc_lock(self):
            return self.database.client._proc_lock

        def _iter_documents(self, filter):
            found = id_lookup(filter)
            if found is None:
                return super()._iter_documents(filter)
            values, rest = found
            collection_module.get_profiler().record(
                filter, self.full_name, collection_module._profiler_get_operation(),
                dict(self._list_all_indexes()) if self._store.is_created else {},
                sort=collection_module._profiler_get_sort())
            candidates = _candidates(self._store, values)
            if not candidates:  # an invalid filter raises as with a scan (on an empty store)
                filtering.filter_applies(filter, {})
            return iter([doc for doc in candidates if filtering.filter_applies(rest, doc)])

        def _ensure_uniques(self, new_data):
            """Called by mongomock for every document a write inserts or changes, before the
            write counts: a document over the server's size limit is refused here, and
            mongomock puts the stored one back (it does so for a duplicate key)."""
            size = _bson_size(new_data)
            if size > caps.DOCUMENT_BYTES:
                raise _TooLarge(size)
            return super()._ensure_uniques(new_data)

        def _apply_projection_operators(self, ops, doc, doc_copy, container):
            kept = {}
            for name, op in ops.items():
                if isinstance(op, dict) and "$slice" in op and name in doc and not isinstance(doc[name], list):
                    doc_copy[name] = copy.deepcopy(doc[name])  # as a server: not an array, kept whole
                else:
                    kept[name] = op
            return super()._apply_projection_operators(kept, doc, doc_copy, container)

        def find(self, *args, **kwargs):
            cursor = super().find(*args, **kwargs)
            cursor.__class__ = EmbeddedCursor
            return cursor

        def with_options(self, *args, **kwargs):
            other = super().with_options(*args, **kwargs)
            if type(other) is Collection:
                other.__class__ = EmbeddedCollection
            return other


    for name in _WRITES:
        setattr(EmbeddedCollection, name, _serialised(Collection, name))

    class EmbeddedDatabase(Database):
        """A database of the embedded server; its collections are ``EmbeddedCollection``s."""

        def get_collection(self, name, *args, **kwargs):
            coll = super().get_collection(name, *args, **kwargs)
            if type(coll) is Collection:
                coll.__class__ = EmbeddedCollection
                cached = self._collection_accesses.get(name)
                if cached is not None and type(cached) is Collection:
                    cached.__class__ = EmbeddedCollection
            return coll

    return mongomock_ng, EmbeddedCollection, EmbeddedDatabase


_client_class = None


def client_class():
    """The MongoClient class of the embedded database: every instance shares one store."""
    global _client_class
    if _client_class is None:
        from mongomock_ng.store import ServerStore

        mongomock_ng, _, database_class = _classes()
        store = ServerStore()
        lock = threading.RLock()

        class EmbeddedClient(mongomock_ng.MongoClient):
            """A client of this process's one embedded server."""

            _proc_lock = lock

            def __init__(self, *args, **kwargs):
                kwargs.pop("_store", None)
                for unsupported in ("w", "serverSelectionTimeoutMS", "connectTimeoutMS", "connect"):
                    kwargs.pop(unsupported, None)
                super().__init__(*args, _store=store, **kwargs)

            def get_database(self, *args, **kwargs):
                database = super().get_database(*args, **kwargs)
                if type(database) is not database_class:
                    database.__class__ = database_class
                return database

        _client_class = EmbeddedClient
    return _client_class
