"""How a durable status write whose reply was lost finds out whether it landed.

Invariant: a write landed exactly when the document is at that attempt and target status and
holds that write's own history entry (same event, attempt and time to the millisecond, which
no other write can share).
"""
from __future__ import annotations


def own_result(coll, id, attempt: int, entry: dict, fetch: bool) -> dict | None:
    """The document if it shows this write's result: ``attempt`` at the target status with
    this write's history entry (same event and time, to the millisecond)."""
    query = {"_id": id, "attempt": attempt, "process_status": entry["status"],
             "history": {"$elemMatch": {"event": entry["event"], "time": entry["time"],
                                        "attempt": attempt}}}
    return coll.find_one(query, None if fetch else {"_id": 1, "attempt": 1, "history": {"$slice": -2}})
