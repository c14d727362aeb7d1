"""A batch's write as one pure ``_id $in`` update whose pipeline re-checks the selector.

SecantusDB answers ``{_id: {$in: [...]}, <other conditions>}`` with a collection scan,
and a pure ``{_id: {$in: [...]}}`` from its ``_id`` index (as mongod does). So the batch's
write filter names only the batch's ``_id``s, and the guard "still matching the selector"
moves into the update pipeline: a first stage computes the selector as an aggregation
expression into a temporary field, every later ``$set`` keeps a field's current value
unless it is true (``$cond``), every ``$unset`` becomes a ``$set`` to ``$$REMOVE`` under
the same condition, and a last stage removes the temporary field. A document changed out
of the selector between the batch's read and its write is left exactly as it is (and is
not counted as modified).

``expression(query)`` translates only query shapes whose meaning it reproduces exactly
(field equality and ``$in`` on scalars, array fields included; ``$exists`` on top-level
fields; ``$and``/``$or``/``$nor``; the "string among values" idiom ``{f: {$in: [...]},
"f.0": {$exists: false}}``) and returns ``None`` otherwise, as ``guarded_pipeline`` does
for stages other than ``$set``/``$addFields``/``$unset`` or dotted field names: the
runner then falls back to one ``UpdateOne({_id, ...selector})`` per document.
"""
from __future__ import annotations

import datetime

from bson import ObjectId
from pymongo import UpdateOne

from proc.store import db

from . import keyset

FLAG = "__datafix_match"
_SCALARS = (str, int, float, bool, datetime.datetime, ObjectId)


def _scalar(value) -> bool:
    return isinstance(value, _SCALARS)


def _plain_field(name: str) -> bool:
    return isinstance(name, str) and name and "." not in name and not name.startswith("$")


def _among(field: str, values: list) -> dict:
    """The query ``{field: {$in: values}}``: the value, or an array holding one of them."""
    ref = f"${field}"
    return {"$or": [{"$in": [ref, {"$literal": values}]},
                    {"$and": [{"$isArray": ref},
                              {"$gt": [{"$size": {"$setIntersection": [ref, {"$literal": values}]}}, 0]}]}]}


def _exists(field: str, wanted: bool) -> dict:
    return {"$ne" if wanted else "$eq": [{"$type": f"${field}"}, "missing"]}


def _condition(field: str, cond, siblings: dict) -> dict | None:
    if not isinstance(cond, dict) or not any(str(k).startswith("$") for k in cond):
        if _plain_field(field) and _scalar(cond):
            return _among(field, [cond])
        return None
    if set(cond) == {"$in"} and _plain_field(field) and isinstance(cond["$in"], list) \
            and cond["$in"] and all(_scalar(v) for v in cond["$in"]):
        values = list(cond["$in"])
        if siblings.get(f"{field}.0") == {"$exists": False}:  # a scalar among values, not an array
            return {"$in": [f"${field}", {"$literal": values}]}
        return _among(field, values)
    if set(cond) == {"$exists"} and isinstance(cond["$exists"], bool):
        if _plain_field(field):
            return _exists(field, cond["$exists"])
        head, _, index = field.rpartition(".")
        if index == "0" and cond["$exists"] is False and "$in" in (siblings.get(head) or {}):
            return True  # the idiom's guard: covered by the exact $in of its sibling
    return None


def expression(query: dict) -> dict | None:
    """The aggregation expression true exactly when a document matches ``query``, or None."""
    if not isinstance(query, dict):
        return None
    parts = []
    for key, value in query.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list) or not value:
                return None
            subs = [expression(q) for q in value]
            if any(s is None for s in subs):
                return None
            parts.append({"$eq": [{"$or": subs}, False]} if key == "$nor" else {key: subs})
        elif str(key).startswith("$"):
            return None
        else:
            part = _condition(key, value, query)
            if part is None:
                return None
            if part is not True:
                parts.append(part)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def guarded_pipeline(pipeline: list, match: dict) -> list | None:
    """``pipeline`` applied only where ``match`` (an expression) holds, else None."""
    stages = [{"$set": {FLAG: {"$and": [match]}}}]
    keep = f"${FLAG}"
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            return None
        (op, spec), = stage.items()
        if op in ("$set", "$addFields") and isinstance(spec, dict):
            if not all(_plain_field(f) for f in spec):
                return None
            stages.append({"$set": {f: {"$cond": [keep, v, f"${f}"]} for f, v in spec.items()}})
        elif op == "$unset":
            fields = [spec] if isinstance(spec, str) else spec
            if not isinstance(fields, list) or not all(_plain_field(f) for f in fields):
                return None
            stages.append({"$set": {f: {"$cond": [keep, "$$REMOVE", f"${f}"]} for f in fields}})
        else:
            return None
    stages.append({"$unset": [FLAG]})
    return stages


def batch_update(selector: dict, pipeline: list) -> list | None:
    """The guarded pipeline for ``selector``, or None when it cannot be written exactly."""
    match = expression(selector)
    return None if match is None else guarded_pipeline(pipeline, match)


EMBEDDED = "embedded"


def shape(selector: dict, pipeline: list):
    """How a batch is written on this database: a guarded pipeline (real server), the
    ``EMBEDDED`` marker (one ``update_many`` of ``keyset.among``: mongomock ignores
    ``$$REMOVE`` in ``$set``, and ``proc.store.embedded`` serves ``_id $in`` under ``$and`` by
    store key), or None: one ``UpdateOne`` per document (a real server and a selector
    ``expression`` cannot translate exactly)."""
    if db.is_embedded():
        return EMBEDDED
    return batch_update(selector, pipeline)


#: ``_id``s per guarded ``update_many``. SecantusDB serves ``_id $in`` from its ``_id``
#: index, but at a cost per listed id that grows with the list's length (measured: 0.36 ms
#: per document at 100 ids, 0.87 ms at 400, 4 ms at 2,000, whatever the collection size),
#: so a batch is written in chunks of this many ids: 10 round trips per 1,000 documents.
#: mongod serves the same shape at any length; the chunks only add round trips there.
WRITE_IDS = 100


def update_batch(collection, ids: list, selector: dict, pipeline: list, guarded: list | None) -> int:
    """Write one batch: documents among ``ids`` still matching ``selector`` get ``pipeline``;
    returns how many changed. One ``update_many`` per ``WRITE_IDS`` ids, or one
    ``bulk_write`` of per-document updates."""
    if guarded == EMBEDDED:
        return collection.update_many(keyset.among(ids, selector), pipeline).modified_count if ids else 0
    if guarded is not None:
        return sum(collection.update_many({"_id": {"$in": ids[i:i + WRITE_IDS]}}, guarded).modified_count
                   for i in range(0, len(ids), WRITE_IDS))
    ops = [UpdateOne(keyset.guarded(i, selector), pipeline) for i in ids]
    return collection.bulk_write(ops, ordered=False).modified_count if ops else 0
