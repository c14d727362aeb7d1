"""Bulk operator actions: reset, redispatch or cancel every process a filter matches.

``plan()`` finds the matches with one query per collection (``proc.ops.filters``; newest change
first, at most ``PROC_BULK_LIMIT`` + 1 documents read: a filter matching more raises
``BulkTooLarge``, nothing written) and judges each with the single action's rule
(``actions.refusal``: the event's source statuses, and for reset and redispatch the health
rule unless ``force``), with the slot usage read once. A dry run stops there.

``run()`` then hands each batch of ``BATCH`` eligible matches to ``actions.apply``, the one
implementation of the actions (the single action is its batch of one): per batch and
collection one ``bulk_write`` of the single action's conditional writes and one read of which
landed; then one subtree walk, one revoke and one slot release per limited kind (reset,
cancel), or one publish per message and one DISPATCHED write per kind (redispatch). A document
that changed since it was judged is not changed: it is listed in ``skipped`` with its reason
(one read per collection says what it is now). The parents of ended attempts are told once
each, at the end.

Each real call is recorded once in ``proc_bulk_actions`` (``recent()`` lists them).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from bson import ObjectId

from .. import config, registry
from ..store import reader
from ..monitor import stuck
from ..run import limits
from ..store import db
from . import actions
from .actions import ACTIONS, EVENTS, VERBS  # noqa: F401 (EVENTS: what each action writes)
from ..exceptions import ProcError
from .filters import Filter, FilterError
from ..timeutil import utcnow

log = logging.getLogger(__name__)

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
class Match(actions.Target):
    """One matched process and, when the action would not change it, why."""

    reason: str | None = None

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


EVERYTHING = "all"
"""The one key of the filter ``{"all": true}``: every process, said on purpose."""
FILTER_RULE = ('the filter is a JSON object of filter keys (status, kind, older_than, newer_than, q, '
               'ids); to act on every process, send {"all": true}')


def parse_filter(data) -> Filter:
    """The filter of a bulk action (API body, ``procctl admin ... --all``): a JSON object with
    at least one filter key, or exactly ``{"all": true}`` for every process. A missing, null,
    false, 0, "" or [] filter, and an empty object, raise ``BulkError`` (field ``filter``):
    an action on every process is never the result of leaving something out."""
    if not isinstance(data, Mapping):
        raise BulkError("filter", f"filter is required and must be a JSON object, got {data!r}; "
                                  f"{FILTER_RULE}")
    data = dict(data)
    everything = data.pop(EVERYTHING, None)
    if everything is not None and not isinstance(everything, bool):
        raise BulkError(EVERYTHING, f"all must be true or false, got {everything!r}")
    if everything and data:
        raise BulkError(EVERYTHING, f"all: true selects every process and goes alone; drop it or the "
                                    f"other keys ({', '.join(sorted(map(str, data)))})")
    try:
        chosen = Filter.parse(data)
    except FilterError as exc:
        raise BulkError(exc.field, str(exc)) from None
    if not everything and not chosen.as_dict():
        raise BulkError("filter", f"an empty filter would act on every process; {FILTER_RULE}")
    return chosen


def _changed(raw: dict) -> datetime:
    when = raw.get("last_status_change")
    return when if isinstance(when, datetime) else datetime.min


def check_action(action) -> str:
    if action not in ACTIONS:
        raise BulkError("action", f"unknown action {action!r}; actions: {', '.join(ACTIONS)}")
    return action


COUNT_CAP = 10_000
"""The lists' "N matching" is exact up to this many, "more than" beyond (the dry run, an
explicit action, counts exactly)."""


def count(filter: Filter, capped: bool = True) -> int:
    """How many processes ``filter`` matches, one count per collection; ``capped``: the counts
    stop at ``COUNT_CAP + 1`` in all (the answer is then above the cap: "more than")."""
    now = utcnow()
    cap = COUNT_CAP if capped else None
    total = 0
    for cls, query in filter.targets(now):
        left = None if cap is None else cap + 1 - total
        if left is not None and left <= 0:
            break
        options = {} if left is None else {"limit": left}
        total += cls._get_collection().count_documents(query, **options)
    return total


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
    found.sort(key=lambda item: (_changed(item[1]), item[0]._get_collection_name(), str(item[1]["_id"])),
               reverse=True)
    usage = limits.usage() if action != "cancel" and not force else None
    matches = []
    for cls, raw in found:
        match = Match(cls._get_collection_name(), raw, registry.kind_of(cls, raw))
        problem = reader.problem(raw)  # its fields cannot be trusted to condition a write
        refused = (f"could not be read: {problem}" if problem is not None
                   else actions.refusal(action, match, force=force, usage=usage))
        match.reason = None if refused is None else str(refused)
        matches.append(match)
    return Plan(action, filter, force, matches)


def run(action: str, filter: Filter, *, by: str, force: bool = False, limit: int | None = None) -> Result:
    """Apply ``action`` to every eligible match of ``filter``; see the module docstring."""
    started, began = utcnow(), time.perf_counter()
    the_plan = plan(action, filter, force=force, limit=limit)
    result = Result(ObjectId(), len(the_plan.matches), 0, [m.skipped() for m in the_plan.matches if m.reason],
                    by)
    note = f"{VERBS[action]} by {by} (bulk {result.id})"
    parents: dict = {}
    eligible = the_plan.eligible
    for start in range(0, len(eligible), BATCH):
        done = actions.apply(action, eligible[start:start + BATCH], by=by, note=note, parents=parents)
        result.changed += len(done.changed)
        result.skipped += _meanwhile(done.missed)
    actions.tell_parents(parents)  # once every batch is done: no join of a parent cancelled too
    _record(the_plan, result, started, time.perf_counter() - began)
    return result


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


def _record(the_plan: Plan, result: Result, started: datetime, seconds: float) -> None:
    coll = db.database()[AUDIT]
    coll.insert_one({"_id": result.id, "time": started, "action": the_plan.action,
                     "filter": the_plan.filter.as_dict() or {EVERYTHING: True}, "force": the_plan.force,
                     "by": result.by,
                     "matched": result.matched, "changed": result.changed,
                     "skipped": len(result.skipped), "seconds": round(seconds, 3)})


def recent(limit: int = 50) -> list[dict]:
    """The most recent bulk calls, newest first (one query on the ``time`` index)."""
    coll = db.database()[AUDIT]
    coll.create_index([("time", -1)])
    return list(coll.find({}).sort([("time", -1)]).limit(limit))
