"""The state machine: which status changes exist, and the one function that writes them.

The rules below are the whole truth about allowed transitions. Every status write in
proc (dispatch, worker, join, monitor, admin actions, CLI) goes through ``transition()``:
one atomic ``find_one_and_update`` filtered on the document's id, expected status(es)
and expected attempt, that sets the new status and appends to ``history`` in the same
write. A write that finds the document in another state or attempt changes nothing and
returns ``None`` (the caller reports it); a transition the rules do not allow raises
``IllegalTransition`` before anything is sent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from bson import json_util
from pymongo import ReturnDocument

from . import config, db
from .exceptions import IllegalTransition
from .status import COMPLETED, ProcessStatus as S
from .timeutil import utcnow

log = logging.getLogger(__name__)

ACTIVE = frozenset({S.PENDING, S.DISPATCHED, S.RUNNING, S.WAITING_FOR_RESULT})


@dataclass(frozen=True)
class Rule:
    """One kind of status change: from any of ``sources`` to ``target``."""

    event: str
    sources: frozenset
    target: S
    new_attempt: bool = False
    doc: str = ""


RULES: dict[str, Rule] = {
    r.event: r
    for r in (
        Rule("request", frozenset({S.READY, S.SUCCESS, S.FAILURE}), S.PENDING, True,
             "a process method was called; a new attempt begins"),
        Rule("dispatched", frozenset({S.PENDING}), S.DISPATCHED, False,
             "the broker accepted the Celery message"),
        Rule("claim", frozenset({S.PENDING, S.DISPATCHED}), S.RUNNING, False,
             "a worker started the message of this attempt (it may overtake the DISPATCHED write)"),
        Rule("wait", frozenset({S.RUNNING}), S.WAITING_FOR_RESULT, False,
             "the method returned with child processes still running"),
        Rule("join", frozenset({S.WAITING_FOR_RESULT}), S.RUNNING, False,
             "the last child finished; exactly one caller wins this and runs the join"),
        Rule("succeed", frozenset({S.RUNNING}), S.SUCCESS, False, "the method (or join) returned"),
        Rule("fail", ACTIVE, S.FAILURE, False,
             "the method raised, or recovery/cancel ended an active process"),
        Rule("reset", ACTIVE | {S.FAILURE}, S.READY, False,
             "an operator put a stuck or failed process back to READY"),
        Rule("redispatch", ACTIVE | {S.FAILURE}, S.PENDING, True,
             "recovery or an operator sends a stuck or failed process again, as a new attempt"),
    )
}

#: Every allowed (from, to) pair.
ALLOWED: frozenset = frozenset((src, r.target) for r in RULES.values() for src in r.sources)


def is_allowed(source, target) -> bool:
    return (S(source), S(target)) in ALLOWED


@dataclass(frozen=True)
class Transition:
    """What a successful write did; passed to listeners."""

    collection: str
    id: Any
    event: str
    source: S | None
    """The status before, when known (always for fetched writes and single-source ones)."""
    target: S
    attempt: int
    note: str | None
    document: dict
    """The document after the write (whole when fetched, else the fields it set)."""


#: Callables run after every successful transition in this process (the demo prints them).
listeners: list[Callable[[Transition], None]] = []


def attempt_key(collection: str, id, attempt: int) -> str:
    """One attempt of one process as a string, ``collection/<id as extended JSON>/attempt``:
    a child's ``parent_key`` and a concurrency slot's holder."""
    return f"{collection}/{json_util.dumps(id)}/{attempt}"


def rule(event: str) -> Rule:
    try:
        return RULES[event]
    except KeyError:
        raise IllegalTransition(f"unknown event {event!r}; known: {sorted(RULES)}") from None


def capped_push(values: Iterable, cap: int | None = None) -> dict:
    """A ``$push`` operand that appends ``values`` keeping the newest ``cap`` (default
    PROC_MESSAGES_LIMIT)."""
    return {"$each": list(values), "$slice": -(cap or config.get().messages_limit)}


def transition(
    collection,
    id,
    event: str,
    *,
    attempt: int,
    sources: Iterable | None = None,
    set: dict | None = None,
    unset: Iterable[str] = (),
    errors: Iterable[str] = (),
    warnings: Iterable[str] = (),
    note: str | None = None,
    host: str | None = None,
    by: str | None = None,
    extra_filter: dict | None = None,
    fetch: bool = False,
    durable: bool = False,
) -> dict | None:
    """Apply ``event`` to the document ``id`` of the pymongo ``collection``, atomically.

    Only a document whose status is one of ``sources`` (default: all the rule's sources)
    and whose ``attempt`` equals ``attempt`` is changed. Returns ``None`` when no document
    matched (lost race, stale attempt, gone). Otherwise, with ``fetch=True``, the whole
    document after the write (one ``find_one_and_update`` returning the pre-image, to which
    this write's changes are applied here: the result is exactly what the server stored);
    with ``fetch=False`` (one ``update_one``), only ``_id``, ``attempt`` and the fields
    this write set. ``errors``/``warnings`` are appended (capped); ``set``/``unset``
    change other fields in the same write. A ``new_attempt`` event increments ``attempt``.

    ``durable=True`` (the writes a process's outcome depends on: the claim, the end of an
    attempt) rides out a database outage: the write is tried again with backoff for
    ``PROC_DB_OUTAGE_TIMEOUT`` seconds (``db.retrying``). A retried write that matches
    nothing may be matching nothing because its earlier try landed and only the reply was
    lost: it then looks for its own result (this attempt at the target status, with this
    write's history entry) and reports success if it finds it, superseded only if not.
    """
    r = rule(event)
    src = frozenset(S(s) for s in (sources if sources is not None else r.sources))
    illegal = sorted(s.value for s in src - r.sources)
    if illegal or not src:
        raise IllegalTransition(
            f"{event}: {', '.join(illegal) or 'no source'} -> {r.target.value} is not allowed; "
            f"allowed sources: {', '.join(sorted(s.value for s in r.sources))}"
        )
    settings = config.get()
    now = utcnow()
    new_attempt = attempt + 1 if r.new_attempt else attempt
    entry = {"status": r.target.value, "event": event, "time": now, "attempt": new_attempt}
    for name, value in (("host", host), ("note", note), ("by", by)):
        if value:  # absent rather than null: history is copied on every later write
            entry[name] = value
    fields = dict(set or {})
    fields.update(process_status=r.target.value, last_status_change=now)
    if r.target in COMPLETED:
        fields["complete_time"] = now
    pushes = {"history": ([entry], settings.history_limit)}
    if errors:
        pushes["errors"] = ([str(e) for e in errors], settings.messages_limit)
    if warnings:
        pushes["warnings"] = ([str(w) for w in warnings], settings.messages_limit)
    update: dict = {
        "$set": fields,
        "$push": {name: capped_push(values, cap) for name, (values, cap) in pushes.items()},
    }
    if r.new_attempt:
        update["$inc"] = {"attempt": 1}
    unset = [u for u in unset if u not in fields]
    if unset:
        update["$unset"] = {u: "" for u in unset}
    query = {"_id": id, "attempt": attempt,
             "process_status": {"$in": sorted(s.value for s in src)}}
    if extra_filter:
        query.update(extra_filter)
    coll = db.status_collection(collection)

    def write():
        if fetch:
            found = coll.find_one_and_update(query, update, return_document=ReturnDocument.BEFORE)
            return found is not None, found
        return coll.update_one(query, update).matched_count == 1, None

    if durable:
        retried = []
        matched, before = db.retrying(write, f"writing {event} of {collection.name}/{id}",
                                      on_retry=lambda: retried.append(True))
        if not matched and retried:
            landed = db.retrying(lambda: _own_result(coll, id, new_attempt, entry, fetch),
                                 f"reading {collection.name}/{id} after {event}")
            if landed is not None:
                log.warning("%s %s/%s (attempt %s): the reply was lost in an outage, but the write "
                            "had landed", event, collection.name, id, new_attempt)
                return _landed(collection, id, event, r.target, new_attempt, note, landed, fields, fetch)
    else:
        matched, before = write()
    if not matched:
        log.info("%s %s/%s (attempt %s): no change, the document is not in %s at that attempt",
                 event, collection.name, id, attempt, "/".join(sorted(s.value for s in src)))
        return None
    if before is not None:
        after = dict(before)
        for name, (values, cap) in pushes.items():
            after[name] = (list(before.get(name) or []) + values)[-cap:]
        for name in unset:
            after.pop(name, None)
        source = S(before["process_status"])
    else:
        after = {"_id": id}
        source = next(iter(src)) if len(src) == 1 else None
    after.update(fields)
    after["attempt"] = new_attempt
    _notify(Transition(collection.name, id, event, source, r.target, new_attempt, note, after))
    return after


def _own_result(coll, id, attempt: int, entry: dict, fetch: bool) -> dict | None:
    """The document if it shows this write's result: ``attempt`` at the target status with
    this write's history entry (same event and time, to the millisecond)."""
    query = {"_id": id, "attempt": attempt, "process_status": entry["status"],
             "history": {"$elemMatch": {"event": entry["event"], "time": entry["time"],
                                        "attempt": attempt}}}
    return coll.find_one(query, None if fetch else {"_id": 1, "attempt": 1, "history": {"$slice": -2}})


def _landed(collection, id, event, target, attempt, note, stored: dict, fields: dict,
            fetch: bool) -> dict:
    """The result of a write whose reply was lost, from the document as stored."""
    if fetch:
        after = dict(stored)
    else:  # as update_one reports it: the fields this write set
        after = {"_id": id, **fields, "attempt": attempt}
    history = stored.get("history") or []
    source = S(history[-2]["status"]) if len(history) >= 2 and history[-2].get("status") in S.__members__ else None
    t = Transition(collection.name, id, event, source, target, attempt, note, after)
    _notify(t)
    return after


def _notify(t: "Transition") -> None:
    for listener in list(listeners):
        try:
            listener(t)
        except Exception:  # a listener must never break a status write
            log.exception("transition listener %r failed", listener)


def update_fields(collection, id, *, attempt: int, statuses: Iterable, set: dict | None = None,
                  warnings: Iterable[str] = (), errors: Iterable[str] = (),
                  extra_filter: dict | None = None) -> bool:
    """Change non-status fields of a document, only while it is in ``statuses`` at ``attempt``.

    Used for progress (``current_process_step``, ``heartbeat``) so a late write from a
    superseded attempt changes nothing. Returns whether the document matched.
    """
    update: dict = {}
    if set:
        update["$set"] = dict(set)
    push = {}
    if warnings:
        push["warnings"] = capped_push(str(w) for w in warnings)
    if errors:
        push["errors"] = capped_push(str(e) for e in errors)
    if push:
        update["$push"] = push
    if not update:
        return True
    query = {"_id": id, "attempt": attempt,
             "process_status": {"$in": sorted(S(s).value for s in statuses)}, **(extra_filter or {})}
    result = collection.update_one(query, update)
    return result.matched_count == 1
