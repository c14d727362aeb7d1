"""The state machine: the value naming one attempt, and the one function that writes a status.

The rules (``proc.status.RULES``) are the whole truth about allowed transitions. Every status
write in proc (dispatch, worker, join, monitor, admin actions, CLI) goes through
``transition()`` (or ``proc.machine.many``, which sends the very writes ``write_of`` builds,
for many documents at once): one atomic ``update_one``/``find_one_and_update`` filtered on
the document's id, expected status(es) and expected attempt, that sets the new status and
appends to ``history`` in the same write. A write that finds the document in another state
or attempt changes nothing and returns ``None`` (the caller reports it); a transition the
rules do not allow raises ``IllegalTransition`` before anything is sent.

One attempt of one process is an ``Attempt`` (collection, id, attempt number, parent, task
id); what a write changes besides the status is a ``Change``; the write built for it is a
``Write``.

A durable write whose reply was lost finds out whether it landed (``own_result``). Invariant:
a write landed exactly when the document is at that attempt and target status and holds that
write's own history entry (same event, attempt and time to the millisecond, which no other
write can share).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from bson import json_util
from pymongo import ReturnDocument

from .. import config
from ..exceptions import IllegalTransition
from ..status import COMPLETED, MARKS, RULES, Rule, ProcessStatus as S
from ..store import caps, db
from ..timeutil import utcnow
from . import phases, tally

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One attempt of one process: what every status write, slot and parent link names."""

    collection: str
    id: Any
    number: int
    parent: Mapping | None = None
    """The parent's attempt as stored on a child: ``{collection, id, attempt}``."""
    task_id: str | None = None
    """The Celery task id of this attempt's message."""

    @classmethod
    def of(cls, collection: str, raw: Mapping) -> "Attempt":
        """The current attempt of the raw document ``raw`` of ``collection``."""
        return cls(collection, raw["_id"], raw.get("attempt", 0), raw.get("parent") or None,
                   raw.get("celery_task_id"))

    @classmethod
    def of_doc(cls, doc) -> "Attempt":
        """The current attempt of a ``Proc`` document (as loaded)."""
        data = doc._data  # the loaded values: a field's __get__ costs 4 to 20 Python calls (on every lifecycle)
        return cls(doc._get_collection_name(), doc.pk, data.get("attempt"), data.get("parent") or None,
                   data.get("celery_task_id"))

    @classmethod
    def from_ref(cls, ref: Mapping | None) -> "Attempt | None":
        """The attempt a stored ``{collection, id, attempt}`` reference names (a child's parent)."""
        return None if not ref else cls(ref["collection"], ref["id"], ref["attempt"])

    @property
    def key(self) -> str:
        """``collection/<id as extended JSON>/attempt``: a child's ``parent_key`` and a
        concurrency slot's holder."""
        return f"{self.collection}/{json_util.dumps(self.id)}/{self.number}"

    def ref(self) -> dict:
        """This attempt as stored on its children (``parent``)."""
        return {"collection": self.collection, "id": self.id, "attempt": self.number}

    def with_number(self, number: int) -> "Attempt":
        return Attempt(self.collection, self.id, number, self.parent, self.task_id)

    def __str__(self) -> str:
        return f"{self.collection}/{self.id} attempt {self.number}"


@dataclass(frozen=True)
class Change:
    """What a status write changes besides the status, and what it expects to find."""

    fields: Mapping = field(default_factory=dict)
    """Other fields set by the same write (``$set``)."""
    unset: Iterable[str] = ()
    errors: Iterable[str] = ()
    """Appended to ``errors`` (newest ``PROC_MESSAGES_LIMIT`` kept)."""
    warnings: Iterable[str] = ()
    note: str | None = None
    """Written to the history entry, with ``host`` and ``by`` (who asked: "monitor", "cli:ann")."""
    host: str | None = None
    by: str | None = None
    sources: Iterable | None = None
    """The statuses the document must be in (default: every source of the rule)."""
    guard: Mapping | None = None
    """Further conditions the document must meet (e.g. the heartbeat that was judged lost)."""
    timeline: Iterable | None = None
    """An ending write's attempt history from the caller's own claim/join: no read (``phases``)."""
    method: str | None = None
    """The method the attempt ran, for the tally of an ending write that reads nothing (the
    worker's, with ``timeline``); other ending writes read it with the history."""


NO_CHANGE = Change()


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


def rule(event: str) -> Rule:
    try:
        return RULES[event]
    except KeyError:
        raise IllegalTransition(f"unknown event {event!r}; known: {sorted(RULES)}") from None


def capped_push(values: Iterable, cap: int | None = None) -> dict:
    """A ``$push`` operand that appends ``values`` keeping the newest ``cap`` (default
    PROC_MESSAGES_LIMIT)."""
    return {"$each": list(values), "$slice": -(cap or config.get().messages_limit)}


def _collection(attempt: Attempt):
    return db.status_collection(db.collection(attempt.collection))


def _sources(r: Rule, sources) -> frozenset:
    src = frozenset(S(s) for s in (sources if sources is not None else r.sources))
    illegal = sorted(s.value for s in src - r.sources)
    if illegal or not src:
        raise IllegalTransition(
            f"{r.event}: {', '.join(illegal) or 'no source'} -> {r.target.value} is not allowed; "
            f"allowed sources: {', '.join(sorted(s.value for s in r.sources))}"
        )
    return src


@dataclass(frozen=True)
class Write:
    """The conditional write of one transition, as ``write_of`` builds it."""

    sources: frozenset
    """The statuses the document must be in."""
    query: dict
    """The filter: id, attempt, one of ``sources`` (and ``Change.guard``)."""
    update: dict
    """``$set`` of ``fields``, ``$push`` of ``pushes``, ``$inc`` of a new attempt, ``$unset``."""
    entry: dict
    """This write's own history entry (its ``attempt`` is the attempt after the write)."""
    fields: dict
    """The fields set, the new status among them."""
    pushes: dict
    """The arrays appended to: {name: (values, newest kept)}."""


def write_of(r: Rule, attempt: Attempt, change: Change, now) -> Write:
    """The conditional write of one transition (``transition``, and ``proc.machine.many``
    for many documents at once)."""
    src = _sources(r, change.sources)
    settings = config.get()
    new_attempt = attempt.number + 1 if r.new_attempt else attempt.number
    entry = {"status": r.target.value, "event": r.event, "time": now, "attempt": new_attempt}
    for name, value in (("host", change.host), ("note", change.note), ("by", change.by)):
        if value:  # absent rather than null: history is copied on every later write
            entry[name] = caps.message(value)
    fields = caps.fields(change.fields)
    fields.update(process_status=r.target.value, last_status_change=now)
    if r.target in COMPLETED:
        fields["complete_time"] = now
    pushes = {"history": ([entry], settings.history_limit)}
    limit = settings.messages_limit  # only the newest ``limit`` would be kept: only they are sent
    if change.errors:
        pushes["errors"] = (caps.messages(list(change.errors)[-limit:]), limit)
    if change.warnings:
        pushes["warnings"] = (caps.messages(list(change.warnings)[-limit:]), limit)
    update: dict = {
        "$set": fields,
        "$push": {name: capped_push(values, cap) for name, (values, cap) in pushes.items()},
    }
    if r.new_attempt:
        update["$inc"] = {"attempt": 1}
    unset = [u for u in change.unset if u not in fields]
    if unset:
        update["$unset"] = {u: "" for u in unset}
    query = {"_id": attempt.id, "attempt": attempt.number,
             "process_status": {"$in": sorted(s.value for s in src)}, **(change.guard or {})}
    return Write(src, query, update, entry, fields, pushes)


def transition(attempt: Attempt, event: str, change: Change = NO_CHANGE, *, fetch: bool = False,
               durable: bool = False) -> dict | None:
    """Apply ``event`` to ``attempt``'s document, atomically, with ``change``.

    Only a document in one of ``change.sources`` (default: the rule's sources) at this
    attempt number (and meeting ``change.guard``) is changed. Returns ``None`` when no
    document matched (lost race, stale attempt, gone). Otherwise, with ``fetch=True``, the
    whole document after the write (one ``find_one_and_update`` returning the pre-image, to
    which this write's changes are applied here: the result is exactly what the server
    stored); with ``fetch=False`` (one ``update_one``), only ``_id``, ``attempt`` and the
    fields this write set. A ``new_attempt`` event increments ``attempt``. An ending write
    (SUCCESS, FAILURE) carries the ended attempt's phases (``proc.machine.phases``).

    ``durable=True`` (the writes a process's outcome depends on: the claim, the end of an
    attempt) rides out a database outage: the write is tried again with backoff for
    ``PROC_DB_OUTAGE_TIMEOUT`` seconds (``db.retrying``). A retried write that matches
    nothing may be matching nothing because its earlier try landed and only the reply was
    lost: it then looks for its own result (``own_result``) and reports success if it
    finds it, superseded only if not.
    """
    r = rule(event)
    now = utcnow()
    w = write_of(r, attempt, change, now)
    src, entry, fields = w.sources, w.entry, w.fields
    new_attempt = entry["attempt"]
    coll, sent = db.status_collection(db.collection(attempt.collection)), [w.update]
    ending = r.target in COMPLETED
    known = {"current_process": change.method}  # an ending write's read fills it in

    def send_one(q, u):
        sent[0] = u
        return send(coll, q, u, fetch)

    def write():  # an ending write carries the ended attempt's phases (proc.machine.phases)
        return (phases.ending_write(coll, attempt, change.timeline, w.query, w.update, now, send_one, known)
                if ending else send_one(w.query, w.update))

    def counted() -> None:  # an ending write that landed is counted (no I/O: proc.machine.tally)
        tally.ended(attempt.collection, known["current_process"], r.target.value,
                    sent[0]["$set"].get("phases"), now)

    if durable:
        retried = []
        matched, before = db.retrying(write, f"writing {event} of {attempt}",
                                      on_retry=lambda: retried.append(True))
        if not matched and retried:
            landed = db.retrying(lambda: own_result(coll, attempt.id, new_attempt, entry, fetch),
                                 f"reading {attempt.collection}/{attempt.id} after {event}")
            if landed is not None:
                log.warning("%s %s: the reply was lost in an outage, but the write had landed",
                            event, attempt.with_number(new_attempt))
                if ending:
                    counted()
                return _landed(attempt, event, r.target, new_attempt, change.note, landed, fields, fetch)
    else:
        matched, before = write()
    if not matched:
        log.info("%s %s: no change, the document is not in %s at that attempt",
                 event, attempt, "/".join(sorted(s.value for s in src)))
        return None
    if ending:
        if before is not None and known["current_process"] is None:
            known["current_process"] = before.get("current_process")
        counted()
    update = sent[0]
    if before is not None:
        after = dict(before)
        for name, (values, cap) in w.pushes.items():
            after[name] = (list(before.get(name) or []) + values)[-cap:]
        for name in update.get("$unset", ()):
            after.pop(name, None)
        source = S(before["process_status"])
    else:
        after = {"_id": attempt.id}
        source = next(iter(src)) if len(src) == 1 else None
    after.update(update["$set"])
    after["attempt"] = new_attempt
    notify(Transition(attempt.collection, attempt.id, event, source, r.target, new_attempt,
                       change.note, after))
    return after


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


def _landed(attempt: Attempt, event, target, number, note, stored: dict, fields: dict,
            fetch: bool) -> dict:
    """The result of a write whose reply was lost, from the document as stored."""
    if fetch:
        after = dict(stored)
    else:  # as update_one reports it: the fields this write set
        after = {"_id": attempt.id, **fields, "attempt": number}
    history = stored.get("history") or []
    source = S(history[-2]["status"]) if len(history) >= 2 and history[-2].get("status") in S.__members__ else None
    notify(Transition(attempt.collection, attempt.id, event, source, target, number, note, after))
    return after


def notify(t: Transition) -> None:
    """Tell the listeners of a write that landed."""
    for listener in list(listeners):
        try:
            listener(t)
        except Exception:  # a listener must never break a status write
            log.exception("transition listener %r failed", listener)


def update_fields(attempt: Attempt, *, statuses: Iterable, fields: Mapping | None = None,
                  warnings: Iterable[str] = (), errors: Iterable[str] = (),
                  guard: Mapping | None = None) -> bool:
    """Change non-status fields of ``attempt``'s document, only while it is in ``statuses``
    at that attempt.

    Used for progress (``current_process_step``, ``heartbeat``) so a late write from a
    superseded attempt changes nothing. Returns whether the document matched.
    """
    update: dict = {}
    if fields:
        update["$set"] = caps.fields(fields)
    push = {}
    if warnings:
        push["warnings"] = capped_push(caps.messages(warnings))
    if errors:
        push["errors"] = capped_push(caps.messages(errors))
    if push:
        update["$push"] = push
    if not update:
        return True
    query = {"_id": attempt.id, "attempt": attempt.number,
             "process_status": {"$in": sorted(S(s).value for s in statuses)}, **(guard or {})}
    return _collection(attempt).update_one(query, update).matched_count == 1


def mark(attempt: Attempt, event: str, *, note: str | None = None, host: str | None = None) -> bool:
    """Append the non-status history entry ``event`` (``MARKS``) to ``attempt``'s document,
    only while it is at that attempt in the mark's status. Returns whether it was written."""
    try:
        m = MARKS[event]
    except KeyError:
        raise IllegalTransition(f"unknown mark {event!r}; known: {sorted(MARKS)}") from None
    entry = {"status": m.status.value, "event": event, "time": utcnow(), "attempt": attempt.number}
    for name, value in (("host", host), ("note", note)):
        if value:
            entry[name] = caps.message(value)
    query = {"_id": attempt.id, "attempt": attempt.number, "process_status": m.status.value}
    update = {"$push": {"history": capped_push([entry], config.get().history_limit)}}
    return _collection(attempt).update_one(query, update).matched_count == 1
