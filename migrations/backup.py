"""Backups of the values a datafix replaces or removes, written per batch before the update.

One record per document and run: ``{revision, collection, doc_id, run_id, time, fields,
values}``; ``fields`` lists what was backed up, ``values`` holds those that existed
(a field in ``fields`` but not in ``values`` was absent). The newest record of a
document is the one a downgrade restores from.
"""
from __future__ import annotations

from datetime import timedelta

from proc.timeutil import utcnow

from . import keyset

COLLECTION = "datafix_backup"


class Backups:
    def __init__(self, database):
        self.collection = database[COLLECTION]

    def ensure_index(self) -> None:
        self.collection.create_index([("revision", 1), ("collection", 1), ("doc_id", 1)])

    @staticmethod
    def record(revision: str, collection: str, run_id: str, doc: dict, fields) -> dict:
        return {"revision": revision, "collection": collection, "doc_id": doc["_id"],
                "run_id": run_id, "time": utcnow(), "fields": list(fields),
                "values": {f: doc[f] for f in fields if f in doc}}

    def save(self, records: list[dict]) -> None:
        if records:
            self.collection.insert_many(records, ordered=False)

    def latest(self, revision: str, collection: str, ids: list) -> dict[bytes, dict]:
        """The newest record of each of ``ids`` (sorted ``_id``s of one batch), by ``keyset.key``.

        One query over the batch's ``_id`` range, filtered to the batch in Python. The
        embedded database cannot compare a range with a stored MinKey, MaxKey or Timestamp
        ``doc_id`` (``NotImplementedError``): there the query lists the batch's ``_id``s.
        """
        wanted = {keyset.key(i) for i in ids}
        span = keyset.span(ids)
        ranges = span["$or"] if "$or" in span else [span]
        query = {"revision": revision, "collection": collection,
                 "$or": [{"doc_id": clause["_id"]} for clause in ranges]}
        try:
            records = list(self.collection.find(query).sort([("time", 1), ("_id", 1)]))
        except NotImplementedError:  # mongomock cannot compare a range with MinKey, MaxKey, ...
            query = {"revision": revision, "collection": collection, "doc_id": {"$in": list(ids)}}
            records = list(self.collection.find(query).sort([("time", 1), ("_id", 1)]))
        found: dict[bytes, dict] = {}
        for rec in records:
            k = keyset.key(rec["doc_id"])
            if k in wanted:
                found[k] = rec
        return found

    def prune(self, older_than: timedelta) -> int:
        return self.collection.delete_many({"time": {"$lt": utcnow() - older_than}}).deleted_count
