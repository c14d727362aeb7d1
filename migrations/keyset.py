"""Walking a collection in ``_id`` order, in batches, whatever BSON types the ``_id``s have.

MongoDB compares values of different BSON types by type bracket only: ``{_id: {$gt: 2}}``
never matches a string ``_id``. A keyset walk therefore goes bracket by bracket, in the
server's sort order, and each query asks for "after the last ``_id`` in its bracket, or in
any later bracket". One query per batch, no long-lived cursor, and every bracket an
``_id`` may hold is listed (an array can never be an ``_id``).
"""
from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import bson
from bson import Binary, Decimal128, Int64, ObjectId

from proc.store import db

#: The BSON type brackets an ``_id`` can be in, in the server's sort order, each with the
#: query that selects the whole bracket. An array is never an ``_id``. MinKey, MaxKey,
#: Timestamp, JavaScript and symbol ``_id``s are in none of them (mongomock cannot sort
#: them): ``rest`` reads those after the walk, unsorted; the runner's final count of
#: documents still to migrate reports any document neither reached.
BRACKETS: tuple[tuple[str, dict], ...] = (
    ("null", {"_id": None}),
    ("number", {"_id": {"$type": "number"}}),
    ("string", {"_id": {"$type": "string"}}),
    ("object", {"_id": {"$type": "object"}}),
    ("binData", {"_id": {"$type": "binData"}}),
    ("objectId", {"_id": {"$type": "objectId"}}),
    ("bool", {"_id": {"$type": "bool"}}),
    ("date", {"_id": {"$type": "date"}}),
)
_ORDER = {name: i for i, (name, _) in enumerate(BRACKETS)}


def bracket_of(value) -> str:
    """The bracket of a Python value as pymongo decodes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Int64, Decimal128, Decimal)):  # after bool: bool is an int
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, (bytes, Binary, uuid.UUID)):
        return "binData"
    if isinstance(value, datetime.datetime):
        return "date"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"cannot place an _id of type {type(value).__name__} in a BSON bracket")


def after(last_id=None, *, started: bool = True) -> dict:
    """The ``_id`` condition for the next batch: every walked ``_id`` sorting after ``last_id``.

    ``None`` is itself an ``_id`` (null), so the walk passes ``started=False`` for "from
    the very beginning" (every walked bracket).
    """
    if not started:
        return {"$or": [clause for _, clause in BRACKETS]}
    bracket = bracket_of(last_id)
    later = [clause for name, clause in BRACKETS if _ORDER[name] > _ORDER[bracket]]
    same = {"_id": {"$gt": last_id}}
    if db.is_embedded():  # mongomock raises comparing with a MinKey, MaxKey or Timestamp _id:
        same = {"$and": [BRACKETS[_ORDER[bracket]][1], same]}  # its $and stops at the type
    return {"$or": [same, *later]}


def among(ids: list, selector: dict) -> dict:
    """The filter of one batch's write on the embedded database: ``_id`` among ``ids``, and
    still matching ``selector`` (under ``$and``, so it may name ``_id`` too).

    ``proc.store.embedded`` serves ``_id $in`` (top level, or a clause of a top-level ``$and``)
    as one store-key lookup per id. Not for a real server: SecantusDB answers ``_id $in``
    combined with other conditions with a collection scan (``migrations.match``).
    """
    return {"_id": {"$in": list(ids)}, "$and": [selector]}


def guarded(doc_id, selector: dict) -> dict:
    """The filter of one document's write: its ``_id``, and still matching ``selector``
    (the per-document shape of ``migrations.match.update_batch``).

    ``_id`` equality is an ``_id`` index point lookup on mongod and on SecantusDB (which
    scans the collection for ``_id $in`` combined with other conditions), and a store-key
    lookup on the embedded database. The selector's conditions sit beside ``_id`` at the
    top level (SecantusDB scans for ``{_id, $and: [...]}``); only a selector that names
    ``_id`` itself goes under ``$and``.
    """
    if "_id" in selector:
        return {"_id": doc_id, "$and": [selector]}
    return {"_id": doc_id, **selector}


def span(ids: list) -> dict:
    """A filter matching the ``_id`` range of one sorted batch: per bracket, first to last;
    ``_id``s in no bracket (``rest``'s: MinKey, MaxKey, Timestamp, ...) by equality.

    Used where the ``_id``s are a field of another collection (the backups' ``doc_id``);
    there a range is one index range on a real server and one comparison per document on
    the embedded database, where ``$in`` would compare each document with every listed id.
    """
    ranges: dict[str, list] = {}
    others = []
    for value in ids:
        try:
            lo_hi = ranges.setdefault(bracket_of(value), [value, value])
        except TypeError:
            others.append(value)
            continue
        lo_hi[1] = value
    clauses = [{"_id": None} if lo is None else {"_id": {"$gte": lo, "$lte": hi}}
               for lo, hi in ranges.values()]
    if others:
        clauses.append({"_id": {"$in": others}})
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def first(collection, query: dict, limit: int, projection=None) -> list[dict]:
    """Up to ``limit`` documents matching ``query``, for samples: the first in ``_id`` order
    among the walked brackets, then (unsorted: mongomock cannot sort them) those in none."""
    walked = {"$and": [query, after(started=False)]}
    found = list(collection.find(walked, projection).sort("_id", 1).limit(limit))
    if len(found) < limit:
        others = {"$and": [query, {"$nor": [clause for _, clause in BRACKETS]}]}
        found += list(collection.find(others, projection).limit(limit - len(found)))
    return found


def key(value) -> bytes:
    """A hashable, type-exact key for an ``_id`` (``1``, ``1.0`` and ``"1"`` differ)."""
    return bson.encode({"k": value})


def walk(collection, selector: dict, *, batch_size: int, projection=None):
    """Yield lists of documents matching ``selector``, in ``_id`` order, ``batch_size`` each.

    Each batch is one query (``limit`` and ``batch_size`` equal: one round trip on a
    real server). The caller may change the yielded documents in the database before
    asking for the next batch; the walk continues after the last ``_id`` it returned.
    """
    last, started = None, False
    while True:
        query = {"$and": [selector, after(last, started=started)]}
        cursor = collection.find(query, projection).sort("_id", 1).limit(batch_size)
        if not db.is_embedded():  # mongomock warns that it has no batches
            cursor = cursor.batch_size(batch_size)
        batch = list(cursor)
        if not batch:
            return
        yield batch
        last, started = batch[-1]["_id"], True
        if len(batch) < batch_size:
            return


def rest(collection, selector: dict, *, batch_size: int, projection=None):
    """Yield lists of documents matching ``selector`` whose ``_id`` is in no bracket of
    ``BRACKETS`` (MinKey, MaxKey, Timestamp, JavaScript, symbol, regex), ``batch_size`` each,
    unsorted: the walk's complement. Each query leaves out the ``_id``s already yielded
    (few: such ``_id``s are rare), so every document is yielded once, whether or not the
    caller moved it out of ``selector`` (a dry run does not), and the walk ends."""
    others = {"$nor": [clause for _, clause in BRACKETS]}
    seen: list = []
    while True:
        query = {"$and": [selector, others, *([{"_id": {"$nin": seen}}] if seen else [])]}
        batch = list(collection.find(query, projection).limit(batch_size))
        if not batch:
            return
        seen.extend(d["_id"] for d in batch)
        yield batch
