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

- ``machine.transition`` (and ``many.transition_many``) to SUCCESS or FAILURE call
  ``ending_write`` / ``update_each``, which put ``phases`` in the ``$set`` of the ending write
  itself: a document at SUCCESS/FAILURE with ``phases`` carries exactly its last attempt's
  phases. Aggregations read ``phases``; nothing rebuilds them from the bounded ``history``.
- The phases come from the attempt's history entries. A worker hands the history it holds
  from its own claim or join (``Change.timeline``: nothing else can have moved a RUNNING
  attempt). Any other caller (cancel, the monitor, a failed publish) reads the history first
  and its write is conditional on ``last_status_change`` being still what it read, so the
  phases written always match the states the attempt went through; if the attempt moved to
  another state the write also ends, it reads and writes again.
- An attempt whose first entry (PENDING) is no longer in the history (``PROC_HISTORY_LIMIT``
  entries are kept) gets no phases (they are unset) rather than wrong ones.
- Every ending write that lands is counted into the time buckets by its caller
  (``machine.transition``, ``machine.many``), with the method read here (``known``) or named
  by the worker (``Change.method``).
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping

from pymongo import UpdateOne

from ..store import db
from ..status import PHASE_OF, PHASES, ProcessStatus as S

#: What an ending write must read when the caller holds no timeline.
READ_FIELDS = {"history": 1, "attempt": 1, "last_status_change": 1, "current_process": 1,
               "process_status": 1}
#: Reads and writes an ending write tries while the attempt keeps moving between active states.
TRIES = 5


def of(history: Iterable[Mapping], attempt: int, end: datetime) -> dict:
    """The phases of attempt ``attempt`` that ends at ``end``, from its history entries (oldest
    first). Empty when the entry that began the attempt is no longer in ``history``."""
    entries = [h for h in history if isinstance(h, Mapping) and h.get("attempt") == attempt
               and h.get("status") in PHASE_OF]  # an entry of another type (a hand edit) is no phase
    if not entries or entries[0]["status"] != S.PENDING.value:
        return {}
    # Each write takes its time just before it is sent, so two writers may land in the other
    # order (a claim timed before a DISPATCHED write that landed first): a state then starts
    # when the previous one did, never earlier, and the phases still add up to the attempt.
    starts = [entries[0]["time"]]
    for entry in entries[1:]:
        starts.append(max(entry["time"], starts[-1]))
    found: dict[str, float] = {}
    for entry, start, until in zip(entries, starts, starts[1:] + [max(end, starts[-1])]):
        phase = PHASE_OF[entry["status"]]
        found[phase] = found.get(phase, 0.0) + (until - start).total_seconds()
    if "run" in found and "queued" not in found:  # the claim overtook the DISPATCHED write
        found["queued"] = 0.0
    return {p: round(found[p], 3) for p in PHASES if p in found}


def with_phases(update: dict, phases: dict) -> dict:
    """``update`` with ``phases`` set (or unset when there are none)."""
    update = {**update, "$set": dict(update["$set"])}
    if phases:
        update["$set"]["phases"] = phases
    else:
        update["$unset"] = {**update.get("$unset", {}), "phases": ""}
    return update


def as_read(query: dict, update: dict, raw: Mapping, number: int, now: datetime) -> tuple[dict, dict]:
    """The ending write of attempt ``number`` for a document read as ``raw`` (``READ_FIELDS``):
    conditional on its ``last_status_change`` and ``process_status`` being still what was read
    (a move within the same millisecond keeps the time but not the status), with the phases of
    the history read."""
    still = {"last_status_change": raw.get("last_status_change")}
    if isinstance(raw.get("process_status"), str):
        still["process_status"] = raw["process_status"]
    return ({**query, **still}, with_phases(update, of(raw.get("history") or [], number, now)))


def ending_write(coll, attempt, timeline, query: dict, update: dict, now: datetime, send,
                 known: dict | None = None) -> tuple:
    """Send the ending write ``send(query, update)`` with the attempt's phases in its ``$set``;
    returns what ``send`` returned. A read also puts the document's ``current_process`` in
    ``known`` (for the tally).

    With ``timeline`` (the history the caller got from its own write), no read. Otherwise the
    document is read, and the write is conditional on its ``last_status_change``: if the
    attempt moved meanwhile (RUNNING -> WAITING_FOR_RESULT) but still matches ``query``, it is
    read and written again (at most ``TRIES`` times)."""
    if timeline is not None:
        return send(query, with_phases(update, of(timeline, attempt.number, now)))
    for _ in range(TRIES):
        raw = coll.find_one(query, READ_FIELDS)
        if raw is None:
            break  # not (or no longer) in a state this write ends
        if known is not None:
            known["current_process"] = raw.get("current_process")
        result = send(*as_read(query, update, raw, attempt.number, now))
        if result[0]:
            return result
    return False, None


def update_each(coll, query: dict, update: dict, now: datetime) -> int:
    """``update_many(query, update)`` for an ending write, each document with its own phases:
    one read, then one ``bulk_write`` of writes conditional on what was read; the documents
    that moved meanwhile and still match ``query`` are read and written again (at most
    ``TRIES`` rounds). Returns how many documents changed."""
    changed = 0
    for _ in range(TRIES):
        ops = [UpdateOne(*as_read({**query, "_id": raw["_id"]}, update, raw, raw.get("attempt"), now))
               for raw in coll.find(query, READ_FIELDS)]
        if not ops:
            break
        changed += coll.bulk_write(ops, ordered=False).modified_count
    return changed
