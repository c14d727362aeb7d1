"""The embedded database (mongomock-ng), made to behave like one real server in one process.

- Every client made for it shares one store, so mongoengine, the API and in-process
  workers see the same data (mongomock gives each client its own data otherwise).
- Lookups by ``_id`` use the store's key, as a real server uses its ``_id`` index, instead
  of scanning the collection; the whole filter is still applied to the candidate, so what
  matches is unchanged. Everything else scans, as mongomock always does.
"""
from __future__ import annotations

from collections.abc import Hashable

_client_class = None


def _install_id_lookup() -> None:
    from mongomock_ng import filtering
    from mongomock_ng.collection import Collection

    if getattr(Collection._iter_documents, "_proc_id_lookup", False):
        return
    scan = Collection._iter_documents

    def _iter_documents(self, filter):
        if type(filter) is dict and "_id" in filter:
            key = filter["_id"]
            if isinstance(key, Hashable) and not isinstance(key, (dict, list, tuple)):
                try:
                    doc = self._store[key]
                except KeyError:
                    return iter(())
                return iter([doc] if filtering.filter_applies(filter, doc) else ())
        return scan(self, filter)

    _iter_documents._proc_id_lookup = True
    Collection._iter_documents = _iter_documents


def client_class():
    """The MongoClient class of the embedded database: every instance shares one store."""
    global _client_class
    if _client_class is None:
        import mongomock_ng
        from mongomock_ng.store import ServerStore

        _install_id_lookup()
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
