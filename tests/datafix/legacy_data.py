"""A generator of realistic collections written by the previous version (for datafix tests
and the benchmark): every legacy status, old process_status values, null and odd values,
missing fields, large ``tasks`` lists, mixed ``_id`` types, already-migrated documents."""
from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta

from bson import ObjectId

OLD_STATUSES = ("CREATED", "SUCCESS", "FAILURE")
PROCESSING_STATUSES = ("PENDING", "RUNNING")
OLD_PROCESS_STATUS = ("CALLED", "RUNNING", "COMPLETED", None)
NEW_STATUSES = ("READY", "PENDING", "DISPATCHED", "RUNNING", "WAITING_FOR_RESULT", "SUCCESS", "FAILURE")
#: tasks_status values no mapping row knows: wrong case, unknown, empty, wrong types.
ODD_TASKS_STATUS = ("DONE", "created", "", 3, None, ["CREATED"], {"status": "CREATED"})
MISSING = object()

#: Collections of the default PROC_MODELS, plus one only named on the command line.
MODEL_COLLECTIONS = ("entry", "upload")
EXTRA_COLLECTION = "legacy_archive"


def _make_id(rng: random.Random, i: int, kind: str):
    if kind == "objectid":
        return ObjectId(rng.randbytes(12).hex())
    if kind == "str":
        return f"doc-{i:06d}"
    if kind == "int":
        return i
    if kind == "float":
        return i + 0.5
    if kind == "date":
        return datetime(2020, 1, 1) + timedelta(seconds=i)
    if kind == "dict":
        return {"shard": i % 3, "n": i}
    raise ValueError(kind)


#: mongomock cannot update a document whose _id is an embedded document, so none here.
ID_KINDS = ("objectid", "objectid", "str", "int", "float", "objectid", "date")


def _body(rng: random.Random, collection: str, i: int) -> dict:
    base = {"create_time": datetime(2024, 5, 1) + timedelta(minutes=i), "note": f"n{i}"}
    if collection == "upload":
        base.update(name=f"upload {i}", paths=[f"f{j}.txt" for j in range(rng.randint(0, 3))])
    elif collection == "entry":
        base.update(upload_id=f"u{i % 7}", path=f"dir/f{i}.dat")
    else:
        base.update(payload={"k": i, "nested": [1, {"x": None}]})
    if rng.random() < 0.3:
        base["errors"] = [f"old error {j}" for j in range(rng.randint(1, 3))]
    return base


def legacy_document(rng: random.Random, collection: str, i: int, status, *, id_kind: str,
                    large_tasks: bool = False) -> dict:
    """One document as the previous version stored it (``status`` may be ``MISSING``)."""
    doc = {"_id": _make_id(rng, i, id_kind), **_body(rng, collection, i)}
    roll = rng.random()
    if large_tasks:
        doc["tasks"] = [f"task_{j}" for j in range(2000)]
    elif roll < 0.85:
        doc["tasks"] = [f"task_{j}" for j in range(rng.randint(0, 6))]
    if roll < 0.5:
        doc["current_task"] = rng.choice(["parsing", "upload", "normalize"]) + f"_{i}"
    elif roll < 0.8:
        doc["current_task"] = None
    if status is not MISSING:
        doc["tasks_status"] = status
    elif "tasks" not in doc and "current_task" not in doc:
        doc["tasks"] = []
    old = rng.choice((*OLD_PROCESS_STATUS, MISSING))
    if old is not MISSING:
        doc["process_status"] = old
    return doc


def migrated_document(rng: random.Random, collection: str, i: int, *, id_kind: str) -> dict:
    """A document already in the new shape (written by the new version)."""
    return {"_id": _make_id(rng, i, id_kind), **_body(rng, collection, i),
            "process_status": rng.choice(NEW_STATUSES), "current_process_step": None,
            "attempt": rng.randint(0, 3), "last_status_change": datetime(2025, 1, 1)}


def generate(per_collection: int = 40, *, seed: int = 7, collections=MODEL_COLLECTIONS,
             processing: bool = True, odd: bool = True, migrated: bool = True,
             large_tasks_every: int = 25) -> dict[str, list[dict]]:
    """Documents per collection: cycles through every status and ``_id`` kind."""
    rng = random.Random(seed)
    statuses = list(OLD_STATUSES) + (list(PROCESSING_STATUSES) if processing else [])
    result = {}
    for c, name in enumerate(collections):
        docs = []
        for i in range(per_collection):
            n = c * 1_000_000 + i
            kind = ID_KINDS[i % len(ID_KINDS)]
            if migrated and i % 10 == 9:
                docs.append(migrated_document(rng, name, n, id_kind=kind))
            elif odd and i % 13 == 12:
                odd_value = (*ODD_TASKS_STATUS, MISSING)[(i // 13) % (len(ODD_TASKS_STATUS) + 1)]
                docs.append(legacy_document(rng, name, n, odd_value, id_kind=kind))
            else:
                docs.append(legacy_document(rng, name, n, statuses[i % len(statuses)], id_kind=kind,
                                            large_tasks=large_tasks_every and i % large_tasks_every == 0))
        result[name] = docs
    return result


def populate(database, per_collection: int = 40, **kwargs) -> dict[str, list[dict]]:
    """Insert ``generate(...)`` into ``database``; returns deep copies of what was inserted."""
    data = generate(per_collection, **kwargs)
    for name, docs in data.items():
        if docs:
            database[name].insert_many(copy.deepcopy(docs))
    return data


def snapshot(database) -> dict[str, dict]:
    """Every collection's documents, by ``_id`` (as a type-exact key), for exact comparisons."""
    import bson

    return {name: {bson.encode({"k": d["_id"]}): d for d in database[name].find({})}
            for name in sorted(database.list_collection_names())}
