"""How one status write is sent, and how a durable one whose reply was lost finds out
whether it landed.

Invariant: a write landed exactly when the document is at that attempt and target status and
holds that write's own history entry (same event, attempt and time to the millisecond, which
no other write can share).
"""
from __future__ import annotations

from pymongo import ReturnDocument


def send(coll, query: dict, update: dict, fetch: bool) -> tuple[bool, dict | None]:
    """One conditional write: ``(matched, the document before it)`` with ``fetch`` (one
    ``find_one_and_update``), else ``(matched, None)`` (one ``update_one``)."""
    if fetch:
        found = coll.find_one_and_update(query, update, return_document=ReturnDocument.BEFORE)
        return found is not None, found
    return coll.update_one(query, update).matched_count == 1, None


def own_result(coll, id, attempt: int, entry: dict, fetch: bool) -> dict | None:
    """The document if it shows this write's result: ``attempt`` at the target status with
    this write's history entry (same event and time, to the millisecond)."""
    query = {"_id": id, "attempt": attempt, "process_status": entry["status"],
             "history": {"$elemMatch": {"event": entry["event"], "time": entry["time"],
                                        "attempt": attempt}}}
    return coll.find_one(query, None if fetch else {"_id": 1, "attempt": 1, "history": {"$slice": -2}})
