"""Many status writes at once, each exactly the one ``machine.transition`` would send.

``transition_many`` is for documents at one attempt number that all get the same change (a
cancelled parent's subtree): one unordered ``bulk_write`` of conditional ``UpdateOne``s, each
filtered by its document's ``_id`` (never a multi-document update: those are not retryable,
and on a sharded collection each ``UpdateOne`` goes to one shard). Not for new-attempt events.

``transition_each`` is for documents that each need their own values (a new attempt with a
task id of its own: bulk redispatch, and the DISPATCHED write after it): one unordered
``bulk_write`` of the per-document conditional updates of ``machine.write_of`` (the same id,
attempt and source-status conditions), then one read of the documents whose history holds
this write's entry. A document that changed meanwhile is not matched and not reported, as
``transition`` would return None for it. An ending write (bulk cancel) first reads the
documents once and carries each attempt's phases, conditional on ``last_status_change`` as
read (``proc.machine.phases``): a document that moved after that read is skipped, never forced. Listeners hear of each document changed; each ending one is counted
(``proc.machine.tally``) from that same read of which landed.
"""
from __future__ import annotations

from typing import Iterable

from pymongo import UpdateOne

from .. import machine
from ..exceptions import IllegalTransition
from ..status import COMPLETED, ProcessStatus as S
from ..store import db
from ..timeutil import utcnow
from . import NO_CHANGE, Attempt, Change, phases, tally

#: What the read of the documents a write landed on returns: enough to count an ending one.
LANDED = {"_id": 1, "current_process": 1, "phases": 1}


def transition_many(collection: str, ids: Iterable, number: int, event: str,
                    change: Change = NO_CHANGE) -> int:
    """``transition`` for many documents of one collection at attempt ``number``, in one
    unordered ``bulk_write`` of single-document conditional updates (a cancelled parent's
    subtree). Not for new-attempt events.
    Returns how many documents it changed; listeners hear of each of them."""
    r = machine.rule(event)
    if r.new_attempt:
        raise IllegalTransition(f"{event} begins a new attempt; use transition() or transition_each()")
    ids, now = list(ids), utcnow()
    w = machine.write_of(r, Attempt(collection, None, number), change, now)
    query = {**w.query, "_id": {"$in": ids}}
    coll = db.status_collection(db.database()[collection])
    if r.target in COMPLETED:  # each document with its own phases (proc.machine.phases)
        changed = phases.update_each(coll, query, w.update, now)
    else:  # one update per document, filtered by its _id: retryable, and one shard each
        ops = [UpdateOne({**w.query, "_id": i}, w.update) for i in ids]
        changed = coll.bulk_write(ops, ordered=False).modified_count if ops else 0
    if changed:
        for raw in coll.find({"_id": {"$in": ids}, "attempt": number, "history": {"$elemMatch": {
                "event": event, "time": now, "attempt": number}}}, LANDED):
            if r.target in COMPLETED:
                tally.ended(collection, raw.get("current_process"), r.target.value, raw.get("phases"), now)
            machine.notify(machine.Transition(collection, raw["_id"], event, None, r.target, number, change.note,
                                              {"_id": raw["_id"], **w.fields, "attempt": number}))
    return changed


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
        w = machine.write_of(r, attempt, change, now)
        query, update = w.query, w.update
        if r.target in COMPLETED:  # as read, or skipped
            query, update = phases.as_read(query, update, read.get(attempt.id) or {}, attempt.number, now)
        ops.append(UpdateOne(query, update))
        written[attempt.id] = (attempt, change, {"_id": attempt.id, **w.fields, "attempt": w.entry["attempt"]})
    if not ops:
        return []
    coll.bulk_write(ops, ordered=False)
    landed = []
    for raw in coll.find({"_id": {"$in": list(written)}, "history": {"$elemMatch": {"event": event, "time": now}}},
                         LANDED):
        attempt, change, after = written[raw["_id"]]
        if r.target in COMPLETED:
            tally.ended(collection, raw.get("current_process"), r.target.value, raw.get("phases"), now)
        sources = list(change.sources or r.sources)
        source = S(sources[0]) if len(sources) == 1 else None
        machine.notify(machine.Transition(collection, attempt.id, event, source, r.target, after["attempt"],
                                          change.note, after))
        landed.append(after)
    return landed
