"""Many status writes at once, each exactly the one ``machine.transition`` would send.

``transition_each`` is for documents that each need their own values (a new attempt with a
task id of its own: bulk redispatch, and the DISPATCHED write after it): one unordered
``bulk_write`` of the per-document conditional updates of ``machine.write_of`` (the same id,
attempt and source-status conditions), then one read of the documents whose history holds
this write's entry. A document that changed meanwhile is not matched and not reported, as
``transition`` would return None for it. An ending write (bulk cancel) first reads the
documents once and carries each attempt's phases, conditional on ``last_status_change`` as
read (``proc.phases``): a document that moved after that read is skipped, never forced. Listeners hear of each document changed.
"""
from __future__ import annotations

from typing import Iterable

from pymongo import UpdateOne

from . import db, machine, phases
from .machine import Attempt, Change
from .status import COMPLETED, ProcessStatus as S
from .timeutil import utcnow


def transition_each(collection: str, items: Iterable[tuple[Attempt, Change]], event: str) -> list[dict]:
    """``transition`` of many documents of one collection, each at its own attempt with its own
    ``Change`` (a new task id per document: bulk redispatch), as one unordered ``bulk_write``
    of exactly the conditional updates ``transition`` sends one by one, then one read of which
    landed. Returns, for each changed document, what ``transition(fetch=False)`` returns."""
    r, now = machine.rule(event), utcnow()
    items = list(items)
    coll = db.status_collection(db.database()[collection])
    read = {}
    if r.target in COMPLETED and items:  # an ending write carries each attempt's phases: one read
        read = {raw["_id"]: raw for raw in coll.find({"_id": {"$in": [a.id for a, _ in items]}},
                                                       phases.READ_FIELDS)}
    ops, written = [], {}
    for attempt, change in items:
        _, query, update, entry, fields, _, _ = machine.write_of(r, attempt, change, now)
        if r.target in COMPLETED:  # as read, or skipped
            query, update = phases.as_read(query, update, read.get(attempt.id) or {}, attempt.number, now)
        ops.append(UpdateOne(query, update))
        written[attempt.id] = (attempt, change, {"_id": attempt.id, **fields, "attempt": entry["attempt"]})
    if not ops:
        return []
    coll.bulk_write(ops, ordered=False)
    landed = []
    for raw in coll.find({"_id": {"$in": list(written)}, "history": {"$elemMatch": {"event": event, "time": now}}},
                         {"_id": 1}):
        attempt, change, after = written[raw["_id"]]
        sources = list(change.sources or r.sources)
        source = S(sources[0]) if len(sources) == 1 else None
        machine.notify(machine.Transition(collection, attempt.id, event, source, r.target, after["attempt"],
                                          change.note, after))
        landed.append(after)
    return landed
