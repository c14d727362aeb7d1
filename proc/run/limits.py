"""Concurrency limits: at most ``limit`` processes of a kind hold a slot at once.

One document per limited kind in ``proc_slots``: ``{_id: kind, holders: [key, ...]}``.
A slot is taken by one conditional ``$push`` (only if the array is shorter than the
limit and does not hold the key yet) and given back by ``$pull``, both atomic on the
server, so the limit holds under any number of concurrent callers and a double release
is harmless. A holder is one attempt of one process (``proc.machine.Attempt.key``).
"""
from __future__ import annotations

import enum

from pymongo.errors import DuplicateKeyError

from ..store import db

COLLECTION = "proc_slots"


class Slot(enum.Enum):
    ACQUIRED = "acquired"
    """The caller took the slot now and must send the message."""
    HELD = "held"
    """This attempt already holds a slot: another caller is dispatching it."""
    FULL = "full"
    """Every slot is in use; the process waits PENDING."""


def _slots():
    return db.database()[COLLECTION]


def acquire(kind_name: str, key: str, limit: int) -> Slot:
    """Take one of the kind's ``limit`` slots for ``key``, or say why not.

    FULL is answered only after seeing the kind's document full: the first callers of a kind
    race to create that document, and a slot may free between the conditional ``$push`` and
    the read; both are tried again.
    """
    coll = _slots()
    query = {"_id": kind_name, f"holders.{limit - 1}": {"$exists": False}, "holders": {"$ne": key}}
    for _ in range(5):
        if coll.update_one(query, {"$push": {"holders": key}}).modified_count:
            return Slot.ACQUIRED
        doc = coll.find_one({"_id": kind_name}, {"holders": 1})
        if doc is None:
            try:
                coll.insert_one({"_id": kind_name, "holders": []})
            except DuplicateKeyError:
                pass
            continue
        holders = doc.get("holders", [])
        if key in holders:
            return Slot.HELD
        if len(holders) >= limit:
            return Slot.FULL
    return Slot.FULL


def release(kind_name: str, key: str) -> None:
    _slots().update_one({"_id": kind_name}, {"$pull": {"holders": key}})


def release_many(kind_name: str, keys) -> None:
    """Give back the slots of many holders of one kind in one write (bulk actions)."""
    keys = list(keys)
    if keys:
        _slots().update_one({"_id": kind_name}, {"$pull": {"holders": {"$in": keys}}})


def holders(kind_name: str) -> list[str]:
    doc = _slots().find_one({"_id": kind_name}, {"holders": 1})
    return list(doc.get("holders", [])) if doc else []


def usage() -> dict[str, int]:
    """Slots in use per limited kind, in one query."""
    return {d["_id"]: len(d.get("holders", [])) for d in _slots().find({}, {"holders": 1})}
