"""Bulk operator actions: reset, redispatch or cancel every process a filter matches.

``plan()`` finds the matches with one query per collection (``proc.filters``; newest change
first, at most ``PROC_BULK_LIMIT`` + 1 documents read: a filter matching more raises
``BulkTooLarge``, nothing written) and judges each with the single action's rules: the
event's source statuses, and for reset and redispatch the health rule
(``admin.require_stuck``, unless ``force``), with the slot usage read once. A dry run stops
there.

``run()`` then changes each eligible document through the same conditional transition as the
single action, recorded in its history with ``by`` and a note naming this bulk call:

- reset and cancel: per batch of ``BATCH`` documents and collection, one
  ``transitions.transition_each`` (one ``bulk_write`` of the single action's writes, each
  conditional on the attempt and status the document was judged at, and one read of which
  landed), so a document that changed in the meantime is not changed (it is listed in
  ``skipped`` with its reason); then one slot release per limited kind, one subtree walk for every cancelled root
  (``admin.cancel_subtrees``), one revoke, and the parents told once each, at the end;
- redispatch begins a new attempt with a task id of its own per document: per batch and
  collection one ``transitions.transition_each`` (one ``bulk_write`` of the single action's
  conditional writes, one read of which landed), one publish per message, and per kind one
  more ``transition_each`` for DISPATCHED (``dispatch.send_many``).

Each real call is recorded once in ``proc_bulk_actions`` (``recent()`` lists them).
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime

from bson import ObjectId

from . import admin, config, db, dispatch, execution, limits, machine, messaging, registry, stuck, transitions
from .exceptions import IllegalTransition, ProcError, ProcessHealthy
from .filters import Filter
from .machine import Attempt, Change
from .status import PROCESSING_VALUES, ProcessStatus as S
from .timeutil import utcnow

log = logging.getLogger(__name__)

ACTIONS = ("reset", "redispatch", "cancel")
EVENTS = {"reset": "reset", "redispatch": "redispatch", "cancel": "fail"}
VERBS = {"reset": "reset", "redispatch": "redispatched", "cancel": "cancelled"}
BATCH = 500
SAMPLE = 20
AUDIT = "proc_bulk_actions"
#: What judging and changing a match needs (and the summaries of the sample).
PROJECTION = {**stuck.PROJECTION, "parent": 1, "errors": {"$slice": -1}, "create_time": 1}
CHANGED_MEANWHILE = "changed in the meantime"


class BulkError(ProcError, ValueError):
    """A bulk request is malformed; ``field`` names what is at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class BulkTooLarge(BulkError):
    """The filter matches more processes than ``PROC_BULK_LIMIT``."""


@dataclass
class Match:
    """One matched process and, when the action would not change it, why."""

    collection: str
    raw: dict
    kind: registry.Kind | None
    reason: str | None = None

    @property
    def id(self):
        return self.raw["_id"]

    def skipped(self, reason: str | None = None) -> dict:
        return {"collection": self.collection, "id": str(self.id), "reason": reason or self.reason}


@dataclass
class Plan:
    action: str
    filter: Filter
    force: bool
    matches: list[Match]

    @property
    def eligible(self) -> list[Match]:
        return [m for m in self.matches if m.reason is None]

    def dry_run(self) -> dict:
        eligible = self.eligible
        return {"matched": len(self.matches), "would_change": len(eligible),
                "sample": [(m.collection, m.raw) for m in eligible[:SAMPLE]]}


@dataclass
class Result:
    id: ObjectId
    matched: int
    changed: int
    skipped: list[dict] = field(default_factory=list)
    by: str = ""

    def as_dict(self) -> dict:
        return {"changed": self.changed, "skipped": self.skipped, "by": self.by}


def check_action(action) -> str:
    if action not in ACTIONS:
        raise BulkError("action", f"unknown action {action!r}; actions: {', '.join(ACTIONS)}")
    return action


def count(filter: Filter) -> int:
    """How many processes ``filter`` matches: one count per collection."""
    now = utcnow()
    return sum(cls._get_collection().count_documents(query) for cls, query in filter.targets(now))


def plan(action: str, filter: Filter, *, force: bool = False, limit: int | None = None) -> Plan:
    """The matches of ``filter``, each judged for ``action``; writes nothing."""
    check_action(action)
    limit = limit or config.get().bulk_limit
    now = utcnow()
    found: list[tuple[type, dict]] = []
    for cls, query in filter.targets(now):
        docs = cls._get_collection().find(query, PROJECTION).sort(
            [("last_status_change", -1), ("_id", -1)]).limit(limit + 1)
        if not db.is_embedded():  # one exchange per BATCH documents (mongomock warns it has none)
            docs = docs.batch_size(BATCH)
        found.extend((cls, raw) for raw in docs)
        if len(found) > limit:
            raise BulkTooLarge("filter", f"the filter matches more than PROC_BULK_LIMIT={limit} processes; "
                                         "narrow it (status, kind, older_than, newer_than, q, ids) and "
                                         "act in several calls")
    found.sort(key=lambda item: (item[1].get("last_status_change") or datetime.min,
                                 item[0]._get_collection_name(), str(item[1]["_id"])), reverse=True)
    usage = limits.usage() if action != "cancel" and not force else None
    matches = []
    for cls, raw in found:
        match = Match(cls._get_collection_name(), raw, registry.kind_of(cls, raw))
        match.reason = refusal(action, match, force=force, usage=usage)
        matches.append(match)
    return Plan(action, filter, force, matches)


def refusal(action: str, match: Match, *, force: bool, usage: dict | None) -> str | None:
    """Why the single action would refuse ``match`` now, or None."""
    status = match.raw.get("process_status")
    if action == "redispatch" and match.kind is None:
        return "no process to send again (current_process is empty)"
    if status not in {s.value for s in machine.RULES[EVENTS[action]].sources}:
        return f"cannot {action} a process that is {status}"
    if action != "cancel" and not force:
        try:
            admin.require_stuck(match.kind, match.raw, action, usage)
        except (ProcessHealthy, IllegalTransition) as exc:
            return str(exc)
    return None


def run(action: str, filter: Filter, *, by: str, force: bool = False, limit: int | None = None) -> Result:
    """Apply ``action`` to every eligible match of ``filter``; see the module docstring."""
    started, began = utcnow(), time.perf_counter()
    the_plan = plan(action, filter, force=force, limit=limit)
    result = Result(ObjectId(), len(the_plan.matches), 0, [m.skipped() for m in the_plan.matches if m.reason],
                    by)
    note = f"{VERBS[action]} by {by} (bulk {result.id})"
    parents: dict[str, Attempt] = {}
    eligible = the_plan.eligible
    for start in range(0, len(eligible), BATCH):
        batch = eligible[start:start + BATCH]
        if action == "redispatch":
            changed, skipped = _redispatch(batch, by, note)
        else:
            changed, skipped = _in_groups(action, batch, by, note)
            _over(action, changed, by, parents)
        result.changed += len(changed)
        result.skipped += skipped
    for parent in parents.values():  # once every batch is done: no join of a parent cancelled too
        execution.notify_parent(parent)
    _record(the_plan, result, started, time.perf_counter() - began)
    return result


def _change(action: str, by: str, note: str, status: str) -> Change:
    host = socket.gethostname()
    if action == "reset":
        return Change(fields={"current_process_step": None, "deadline": None}, note=note, by=by,
                      host=host, sources=[status])
    return Change(errors=[f"cancelled by {by}"], note=note, by=by, host=host, sources=[status])


def _in_groups(action: str, batch: list[Match], by: str, note: str) -> tuple[list[Match], list[dict]]:
    """Reset or cancel ``batch``: per collection one ``transitions.transition_each`` of the
    single action's write, each conditional on the attempt and status it was judged at
    (whatever the mix of attempts: two round trips); returns (changed, skipped)."""
    by_collection: dict[str, list[Match]] = {}
    for m in batch:
        by_collection.setdefault(m.collection, []).append(m)
    changed, missed = [], []
    for collection, members in by_collection.items():
        done = {after["_id"] for after in transitions.transition_each(collection, [
            (Attempt.of(collection, m.raw), _change(action, by, note, m.raw["process_status"]))
            for m in members], EVENTS[action])}
        changed += [m for m in members if m.id in done]
        missed += [m for m in members if m.id not in done]
    return changed, _meanwhile(missed)


def _meanwhile(missed: list[Match]) -> list[dict]:
    """The skipped entries of documents a conditional write did not find as judged: one read
    per collection says what they are now."""
    by_collection: dict[str, list[Match]] = {}
    for m in missed:
        by_collection.setdefault(m.collection, []).append(m)
    out = []
    for collection, members in by_collection.items():
        now = {raw["_id"]: raw for raw in registry.class_for(collection)._get_collection().find(
            {"_id": {"$in": [m.id for m in members]}}, {"process_status": 1, "attempt": 1})}
        for m in members:
            current = now.get(m.id)
            where = ("it is gone" if current is None else
                     f"now {current.get('process_status')} at attempt {current.get('attempt', 0)}")
            out.append(m.skipped(f"{CHANGED_MEANWHILE} ({where}); not forced"))
    return out


def _over(action: str, changed: list[Match], by: str, parents: dict) -> None:
    """The end of the changed attempts that were active: slots back (one write per limited
    kind), a cancel's subtrees and tasks, parents noted for the end of the run."""
    active = [m for m in changed if m.raw["process_status"] in PROCESSING_VALUES]
    attempts = [Attempt.of(m.collection, m.raw) for m in active]
    task_ids = [a.task_id for a in attempts if a.task_id] if action == "cancel" else []
    if action == "cancel" and attempts:
        task_ids += [r["celery_task_id"] for _, r in admin.cancel_subtrees(attempts, by=by)
                     if r.get("celery_task_id")]
    if task_ids:
        try:
            messaging.get_app().control.revoke(task_ids)
        except Exception as exc:  # the attempt check already makes the messages harmless
            log.warning("could not revoke %d task(s): %s", len(task_ids), exc)
    _release(active)
    for attempt in attempts:
        if attempt.parent:
            parent = Attempt.from_ref(attempt.parent)
            parents[parent.key] = parent


def _release(active: list[Match]) -> None:
    by_kind: dict[str, tuple[registry.Kind, list[str]]] = {}
    for m in active:
        if m.kind is not None and m.kind.settings.limit:
            by_kind.setdefault(m.kind.name, (m.kind, []))[1].append(Attempt.of(m.collection, m.raw).key)
    for kind, keys in by_kind.values():
        limits.release_many(kind.name, keys)
        try:
            dispatch.pump(kind)
        except Exception:  # the monitor's sweep pumps again
            log.exception("could not send the next held %s process", kind.name)


def _redispatch(batch: list[Match], by: str, note: str) -> tuple[list[Match], list[dict]]:
    """A new attempt for each document of ``batch``: per collection one ``transition_each`` of
    the single action's ``redispatch`` write (a task id of its own each), the old slots given
    back, then per kind one publish per message and one DISPATCHED write
    (``dispatch.send_many``); returns (changed, skipped)."""
    changed, missed = [], []
    by_collection: dict[str, list[Match]] = {}
    for m in batch:
        by_collection.setdefault(m.collection, []).append(m)
    for collection, members in by_collection.items():
        landed = {after["_id"]: after for after in transitions.transition_each(collection, [
            (Attempt.of(collection, m.raw), dispatch.redispatch_change(note=note, by=by,
                                                                       sources=[m.raw["process_status"]]))
            for m in members], "redispatch")}
        done = [m for m in members if m.id in landed]
        changed += done
        missed += [m for m in members if m.id not in landed]
        _release([m for m in done if m.raw["process_status"] in PROCESSING_VALUES])
        by_kind: dict[str, tuple[registry.Kind, list[dict]]] = {}
        for m in done:
            by_kind.setdefault(m.kind.name, (m.kind, []))[1].append({**m.raw, **landed[m.id]})
        for kind, afters in by_kind.values():
            dispatch.send_many(kind, afters)
    return changed, _meanwhile(missed)


def _record(the_plan: Plan, result: Result, started: datetime, seconds: float) -> None:
    coll = db.database()[AUDIT]
    coll.insert_one({"_id": result.id, "time": started, "action": the_plan.action,
                     "filter": the_plan.filter.as_dict(), "force": the_plan.force, "by": result.by,
                     "matched": result.matched, "changed": result.changed,
                     "skipped": len(result.skipped), "seconds": round(seconds, 3)})


def recent(limit: int = 50) -> list[dict]:
    """The most recent bulk calls, newest first (one query on the ``time`` index)."""
    coll = db.database()[AUDIT]
    coll.create_index([("time", -1)])
    return list(coll.find({}).sort([("time", -1)]).limit(limit))
