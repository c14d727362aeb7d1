"""Where an attempt's time went: the phases it spent in each active status, written by the
conditional write that ends it.

The phases of one attempt (seconds, to the millisecond):

- ``held``: in PENDING (waiting for a concurrency slot or for the broker);
- ``queued``: in DISPATCHED (waiting for a worker); 0 when the claim overtook the DISPATCHED
  write (PENDING -> RUNNING);
- ``run``: in RUNNING, summed over every RUNNING spell (a parent runs its method, waits, then
  runs its join), without WAITING_FOR_RESULT;
- ``waiting``: in WAITING_FOR_RESULT (only a process with children).

Invariants:

- ``machine.transition`` (and ``transition_many``) to SUCCESS or FAILURE call ``add`` /
  ``update_each``, which put ``phases`` and ``phases_draw`` in the ``$set`` of the ending write
  itself: a document at SUCCESS/FAILURE with ``phases`` carries exactly its last attempt's
  phases. Aggregations read ``phases``; nothing rebuilds them from the bounded ``history``.
- The phases come from the attempt's history entries. A worker hands the history it holds
  from its own claim or join (``Change.timeline``: nothing else can have moved a RUNNING
  attempt). Any other caller (cancel, the monitor, a failed publish) reads the history first
  and its write is conditional on ``last_status_change`` being still what it read, so the
  phases written always match the states the attempt went through.
- An attempt whose first entry (PENDING) is no longer in the history (``PROC_HISTORY_LIMIT``
  entries are kept) gets no phases (they are unset) rather than wrong ones.
- ``phases_draw`` is a uniform random number in [0, 1): ``proc.timings`` samples kinds with
  more ended processes than it sorts exactly by it.
"""
from __future__ import annotations

import random
from datetime import datetime
from typing import Iterable, Mapping

from pymongo import UpdateOne

from . import db
from .status import ProcessStatus as S

#: The phase each active status counts towards.
PHASE_OF = {S.PENDING.value: "held", S.DISPATCHED.value: "queued", S.RUNNING.value: "run",
            S.WAITING_FOR_RESULT.value: "waiting"}
#: Every phase, in lifecycle order.
PHASES = ("held", "queued", "run", "waiting")
#: What an ending write must read when the caller holds no timeline.
READ_FIELDS = {"history": 1, "attempt": 1, "last_status_change": 1}


def of(history: Iterable[Mapping], attempt: int, end: datetime) -> dict:
    """The phases of attempt ``attempt`` that ends at ``end``, from its history entries (oldest
    first). Empty when the entry that began the attempt is no longer in ``history``."""
    entries = [h for h in history if h.get("attempt") == attempt and h.get("status") in PHASE_OF]
    if not entries or entries[0]["status"] != S.PENDING.value:
        return {}
    found: dict[str, float] = {}
    for entry, until in zip(entries, [e["time"] for e in entries[1:]] + [end]):
        phase = PHASE_OF[entry["status"]]
        found[phase] = found.get(phase, 0.0) + max((until - entry["time"]).total_seconds(), 0.0)
    if "run" in found and "queued" not in found:  # the claim overtook the DISPATCHED write
        found["queued"] = 0.0
    return {p: round(found[p], 3) for p in PHASES if p in found}


def _put(update: dict, phases: dict) -> dict:
    """``update`` with ``phases`` set (or unset when there are none)."""
    update = {**update, "$set": dict(update["$set"])}
    if phases:
        update["$set"].update(phases=phases, phases_draw=random.random())
    else:
        update["$unset"] = {**update.get("$unset", {}), "phases": "", "phases_draw": ""}
    return update


def add(coll, attempt, timeline, query: dict, update: dict, now: datetime,
        durable: bool) -> tuple[dict, dict]:
    """The ``(query, update)`` of an ending write, with the attempt's phases in its ``$set``.

    With ``timeline`` (the history the caller got from its own write), no read; otherwise
    one read of the document, and the write is made conditional on what it read."""
    if timeline is None:
        raw = (db.retrying(lambda: coll.find_one(query, READ_FIELDS), f"reading {attempt}")
               if durable else coll.find_one(query, READ_FIELDS))
        if raw is None:
            return query, update  # the write will find nothing either
        timeline = raw.get("history") or []
        query = {**query, "last_status_change": raw.get("last_status_change")}
    return query, _put(update, of(timeline, attempt.number, now))


def update_each(coll, query: dict, update: dict, now: datetime) -> int:
    """``update_many(query, update)`` for an ending write, each document with its own phases:
    one read, then one ``bulk_write`` of writes conditional on what was read. Returns how many
    documents changed."""
    ops = [UpdateOne({**query, "_id": raw["_id"], "last_status_change": raw.get("last_status_change")},
                     _put(update, of(raw.get("history") or [], raw.get("attempt"), now)))
           for raw in coll.find(query, READ_FIELDS)]
    return coll.bulk_write(ops, ordered=False).modified_count if ops else 0
