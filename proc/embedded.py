"""The embedded database (mongomock-ng), made to behave like one real server in one process.

- Every client made for it shares one store, so mongoengine, the API and in-process
  workers see the same data (mongomock gives each client its own data otherwise).
- Lookups by ``_id`` use the store's key, as a real server uses its ``_id`` index, instead
  of scanning the collection: ``{_id: v}`` and ``{_id: {$in: [...]}}``, at the top level
  or as a clause of a top-level ``$and``. The rest of the filter is applied to every
  candidate (which equals a listed ``_id`` by construction), so what matches is
  unchanged. Anything else scans, as mongomock always does.
- A cursor hands out its results without copying the whole result list for every
  document (mongomock slices it again on each ``next``: quadratic in the result size).
"""
from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Hashable

from bson import ObjectId

_client_class = None

#: ``_id`` values whose Python equality (what mongomock's filter uses) agrees with
#: hashing, found by the store's key, which is the ``_id`` as inserted. ``int`` covers
#: bool and Int64, ``bytes`` covers Binary.
_BY_KEY = (str, int, float, ObjectId, bytes, uuid.UUID, type(None), datetime.datetime)
#: mongomock keeps a date ``_id`` at millisecond precision, naive UTC, but keys the
#: document by the date as inserted: once a collection holds one inserted otherwise
#: (microseconds, a time zone), its date lookups compare ``_id``s in one pass instead.
_INEXACT = "_proc_inexact_date_keys"


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


def _candidates(store, values: list) -> list:
    """The stored documents whose ``_id`` equals one of ``values``, each once: in the
    order of ``values`` (by key), or in the store's order (one pass comparing ``_id``s,
    when a date is listed and a date key may differ from its document's ``_id``)."""
    store._remove_expired_documents()
    with store._rwlock.reader():
        documents = store._documents
        if not (store.__dict__.get(_INEXACT) and any(isinstance(v, datetime.datetime)
                                                     for v in values)):
            found, seen = [], set()
            for value in values:
                doc = documents.get(value)
                if doc is not None and id(doc) not in seen:
                    seen.add(id(doc))
                    found.append(doc)
            return found
        wanted = set(values)
        found = []
        for doc in list(documents.values()):
            try:
                if doc.get("_id") in wanted:
                    found.append(doc)
            except TypeError:  # an unhashable _id (a document) equals none of the values
                pass
        return found


def _install_date_key_check() -> None:
    """Mark a collection store once it keys a document by a date other than its ``_id``."""
    from mongomock_ng.store import CollectionStore

    if getattr(CollectionStore.__setitem__, "_proc_date_keys", False):
        return
    setitem = CollectionStore.__setitem__

    def __setitem__(self, key, val):
        if isinstance(key, datetime.datetime) and not (
                type(val.get("_id")) is type(key) and val.get("_id") == key
                and getattr(key, "tzinfo", None) is None):
            self.__dict__[_INEXACT] = True
        setitem(self, key, val)

    __setitem__._proc_date_keys = True
    CollectionStore.__setitem__ = __setitem__


def _install_id_lookup() -> None:
    from mongomock_ng import collection as collection_module
    from mongomock_ng import filtering
    from mongomock_ng.collection import Collection

    if getattr(Collection._iter_documents, "_proc_id_lookup", False):
        return
    scan = Collection._iter_documents

    def _iter_documents(self, filter):
        found = id_lookup(filter)
        if found is None:
            return scan(self, filter)
        values, rest = found
        collection_module.get_profiler().record(
            filter, self.full_name, collection_module._profiler_get_operation(),
            dict(self._list_all_indexes()) if self._store.is_created else {},
            sort=collection_module._profiler_get_sort())
        candidates = _candidates(self._store, values)
        if not candidates:  # an invalid filter raises as with a scan (on an empty store)
            filtering.filter_applies(filter, {})
        return iter([doc for doc in candidates if filtering.filter_applies(rest, doc)])

    _iter_documents._proc_id_lookup = True
    _iter_documents.scan = scan  # mongomock's own, for comparisons in tests
    Collection._iter_documents = _iter_documents


def _install_cursor_window() -> None:
    """Keep a cursor's skip/limit window once computed, instead of slicing the whole result
    list again for every ``next`` (quadratic in the number of results)."""
    from mongomock_ng.collection import Cursor

    if getattr(Cursor._compute_results, "_proc_window", False):
        return
    compute = Cursor._compute_results

    def _compute_results(self, with_limit_and_skip=False):
        results = compute(self, with_limit_and_skip=False)
        if not with_limit_and_skip:
            return results
        window = self.__dict__.get("_proc_window_cache")
        key = (self._skip, self._limit)
        if window is None or window[0] is not results or window[1] != key:
            sliced = results[self._skip:]
            if self._limit:
                sliced = sliced[:abs(self._limit)]
            window = (results, key, sliced)
            self._proc_window_cache = window
        return window[2]

    _compute_results._proc_window = True
    Cursor._compute_results = _compute_results


def client_class():
    """The MongoClient class of the embedded database: every instance shares one store."""
    global _client_class
    if _client_class is None:
        import mongomock_ng
        from mongomock_ng.store import ServerStore

        _install_date_key_check()
        _install_id_lookup()
        _install_cursor_window()
        store = ServerStore()

        class EmbeddedClient(mongomock_ng.MongoClient):
            """A client of this process's one embedded server."""

            def __init__(self, *args, **kwargs):
                kwargs.pop("_store", None)
                for unsupported in ("w", "serverSelectionTimeoutMS", "connectTimeoutMS"):
                    kwargs.pop(unsupported, None)
                super().__init__(*args, _store=store, **kwargs)

        _client_class = EmbeddedClient
    return _client_class
