"""Which processes need attention, and why: shared by the check-status page and the monitor.

A process needs attention when it has been in an active state longer than its kind's
thresholds (``proc.config``):

===================  =============================================  ==========================
status               condition                                      reason
===================  =============================================  ==========================
PENDING              its send failed: the broker was unreachable    broker unreachable
                     (at any age)
PENDING              longer than ``queue_timeout``                  held by the limit /
                                                                    never handed to the broker
DISPATCHED           longer than ``queue_timeout``, or past         not started by any worker
                     ``deadline``
RUNNING              ``heartbeat`` older than ``heartbeat_timeout``  worker heartbeat lost
RUNNING              past ``deadline`` (dispatch + expected),       overran expected duration
                     heartbeat fresh
WAITING_FOR_RESULT   every child finished (past ``deadline``, or    join never ran
                     when asked about this one process)
WAITING_FOR_RESULT   past ``deadline``, children still running      children overran
===================  =============================================  ==========================

``find()`` issues, per collection, one indexed query per condition, each returning only
processes past their threshold (never the whole collection, never healthy ones):

- PENDING, then DISPATCHED, with ``last_status_change`` older than ``queue_timeout``: index
  (process_status, last_status_change);
- PENDING whose step says the broker refused it (``BROKER_PREFIX``), at any age: the same
  index, on the PENDING processes only;
- RUNNING with ``heartbeat`` older than ``heartbeat_timeout``: index (process_status, heartbeat);
- DISPATCHED, RUNNING and WAITING_FOR_RESULT past ``deadline``: index (process_status, deadline).

Each query names one status (an equality), never ``$in`` with a range, which SecantusDB
serves by scanning the collection. The server is sent the status and the range only, the
fields of the index, and the rest of the condition (the kinds' methods, the step's prefix)
is checked here, on processes of that status past that threshold: SecantusDB serves an
equality and a range from the index only when the filter names nothing else, and naming the
index instead (a ``hint``) makes it walk the whole index, every document of the collection,
whatever its ``explain`` reports.

When the kinds of a collection have different thresholds, the first two are issued once
per distinct threshold, limited to those kinds' methods (``current_process``). A waiting
parent whose join was lost is found at its deadline (a parent's ``expected_duration``
covers its children); ``diagnose()`` of one waiting process reports it as soon as its
children have all finished.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import registry
from ..run import children, limits
from ..store import reader
from ..machine import Attempt
from ..status import (
    BROKER_UNREACHABLE, CHILDREN_OVERRAN, HEARTBEAT_LOST, HELD_BY_LIMIT, JOIN_LOST, NOT_SENT, NOT_STARTED,
    OVERRAN, PROCESSING_VALUES, ProcessStatus as S,
)
from ..timeutil import age_seconds, format_age, utcnow

log = logging.getLogger(__name__)

#: The fields a stuck-process query returns (never whole documents).
PROJECTION = {"process_status": 1, "current_process": 1, "current_process_step": 1, "attempt": 1,
              "last_status_change": 1, "heartbeat": 1, "deadline": 1, "worker_hostname": 1,
              "child_collections": 1, "celery_task_id": 1, "process_args": 1}


@dataclass
class Stuck:
    """One process that needs attention."""

    kind: registry.Kind
    raw: dict
    reason: str
    detail: str
    queries: list = field(default_factory=list, repr=False)

    @property
    def collection(self) -> str:
        return self.kind.collection

    @property
    def id(self):
        return self.raw["_id"]

    @property
    def status(self) -> str:
        return self.raw["process_status"]

    @property
    def attempt(self) -> int:
        return self.raw.get("attempt", 0)

    @property
    def age(self) -> float | None:
        return age_seconds(self.raw.get("last_status_change"))

    def as_dict(self) -> dict:
        return {"collection": self.collection, "id": str(self.id), "kind": self.kind.name,
                "status": self.status, "attempt": self.attempt, "age_seconds": self.age,
                "reason": self.reason, "detail": self.detail,
                "worker": self.raw.get("worker_hostname")}


def _kinds_by_collection() -> dict[str, list]:
    by: dict[str, list] = {}
    for kind in registry.kinds():
        by.setdefault(kind.collection, []).append(kind)
    return by


#: Which index each query of ``find()`` is meant to use on a real server.
INDEX_BY_FIELD = {"last_status_change": ("process_status", "last_status_change"),
                  "heartbeat": ("process_status", "heartbeat"),
                  "deadline": ("process_status", "deadline")}


def _by_threshold(kinds, setting: str) -> list[tuple[float, list]]:
    """[(threshold, methods)] for the kinds of one collection, one entry per distinct value."""
    groups: dict[float, list] = {}
    for k in kinds:
        groups.setdefault(float(getattr(k.settings, setting)), []).append(k.method)
    return sorted(groups.items())


BROKER_PREFIX = BROKER_UNREACHABLE
"""How the step of a process whose send the broker refused begins (``proc.run.messaging.publish``)."""


def queries_for(kinds, now: datetime) -> list[dict]:
    """The filters ``find()`` issues for one collection whose kinds are ``kinds``: each names
    ONE status (an equality and a range, which both mongod and SecantusDB serve from the index
    ``INDEX_BY_FIELD``; SecantusDB scans ``$in`` combined with a range)."""
    split = len({k.settings.queue_timeout for k in kinds}) > 1
    out = [{"process_status": S.PENDING.value, "last_status_change": {"$lt": now},
            "current_process_step": {"$regex": f"^{BROKER_PREFIX}"}}]
    for seconds, methods in _by_threshold(kinds, "queue_timeout"):
        for status in (S.PENDING.value, S.DISPATCHED.value):
            q = {"process_status": status, "last_status_change": {"$lt": now - timedelta(seconds=seconds)}}
            if split:
                q["current_process"] = {"$in": methods}
            out.append(q)
    split = len({k.settings.heartbeat_timeout for k in kinds}) > 1
    for seconds, methods in _by_threshold(kinds, "heartbeat_timeout"):
        q = {"process_status": S.RUNNING.value, "heartbeat": {"$lt": now - timedelta(seconds=seconds)}}
        if split:
            q["current_process"] = {"$in": methods}
        out.append(q)
    for status in (S.DISPATCHED.value, S.RUNNING.value, S.WAITING_FOR_RESULT.value):
        out.append({"process_status": status, "deadline": {"$lt": now}})
    return out


def index_for(query: dict) -> tuple[str, str]:
    """The compound index a ``find()`` query is meant to use."""
    for name, index in INDEX_BY_FIELD.items():
        if name in query:
            return index
    raise ValueError(f"not a find() query: {query}")


def split_query(query: dict) -> tuple[dict, dict]:
    """``query`` as (what the server is sent: the status and the range of ``index_for``, what
    is checked here: the rest, ``matches_rest``)."""
    index = index_for(query)
    return ({k: v for k, v in query.items() if k in index}, {k: v for k, v in query.items() if k not in index})


def matches_rest(raw: dict, rest: dict) -> bool:
    """Whether ``raw`` meets the conditions of ``rest``: ``{field: {"$in": [...]}}`` or
    ``{field: {"$regex": pattern}}``, the two ``queries_for`` adds to a status and range."""
    for field, condition in rest.items():
        value = raw.get(field)
        if "$in" in condition and value not in condition["$in"]:
            return False
        if "$regex" in condition and not (isinstance(value, str) and re.search(condition["$regex"], value)):
            return False
    return True


def find(now: datetime | None = None, *, collections=None, limit: int = 1000,
         query_log: list | None = None, explain: list | None = None,
         unreadable: reader.Unreadable | None = None) -> list[Stuck]:
    """Every process that needs attention now (at most ``limit`` per query).

    ``query_log`` receives ``(collection, filter)`` per query issued; ``explain`` receives a
    dict per query: collection, filter, the index it is meant to use, documents returned.
    A candidate that cannot be read (``proc.store.reader``) is skipped, and counted in
    ``unreadable`` (a fresh one, logged, when none is given): it can be neither judged nor
    recovered, and must not stop the others from being.
    """
    own = unreadable is None
    unreadable = reader.Unreadable() if own else unreadable
    now = now or utcnow()
    found: list[Stuck] = []
    usage = limits.usage()
    for collection, kinds in sorted(_kinds_by_collection().items()):
        if collections is not None and collection not in collections:
            continue
        by_method = {k.method: k for k in kinds}
        coll = kinds[0].cls._get_collection()
        seen = set()
        for query in queries_for(kinds, now):
            if query_log is not None:
                query_log.append((collection, query))
            returned = 0
            served, rest = split_query(query)  # the index's fields to the server (module docstring)
            found_raws = coll.find(served, PROJECTION)
            for raw in found_raws:
                if not matches_rest(raw, rest):
                    continue
                if returned == limit:
                    found_raws.close()
                    break
                returned += 1
                if raw["_id"] in seen:
                    continue
                if not unreadable.check(collection, raw):
                    continue
                kind = by_method.get(raw.get("current_process"))
                if kind is None:
                    continue
                verdict = diagnose(kind, raw, now, usage)
                if verdict is not None:
                    seen.add(raw["_id"])
                    found.append(Stuck(kind, raw, *verdict))
            if explain is not None:
                explain.append({"collection": collection, "filter": query, "index": index_for(query),
                                "returned": returned})
    if own and unreadable.count:
        log.warning("needs-attention check: %s", unreadable.message)
    return found


def diagnose(kind, raw: dict, now: datetime, usage: dict | None = None) -> tuple[str, str] | None:
    """(reason, detail) if this process needs attention now, else None."""
    s = kind.settings
    status = raw["process_status"]
    in_state = age_seconds(raw.get("last_status_change"), now) or 0.0
    step = raw.get("current_process_step") or ""
    if status == S.PENDING.value and step.startswith(BROKER_PREFIX):  # sent once the broker is back
        return BROKER_UNREACHABLE, step
    if status == S.PENDING.value and in_state > s.queue_timeout:
        if s.limit and (usage or {}).get(kind.name, 0) >= s.limit:
            return HELD_BY_LIMIT, (f"waiting {format_age(in_state)} for a slot: "
                                   f"{usage.get(kind.name, 0)}/{s.limit} in use")
        return NOT_SENT, f"PENDING for {format_age(in_state)} without reaching the broker"
    past_deadline = raw.get("deadline") is not None and raw["deadline"] < now
    if status == S.DISPATCHED.value and (in_state > s.queue_timeout or past_deadline):
        return NOT_STARTED, (f"DISPATCHED for {format_age(in_state)} (queue timeout "
                             f"{format_age(s.queue_timeout)}): no worker consumes queue "
                             f"{s.queue!r}, or the message was lost")
    if status == S.RUNNING.value:
        beat_age = age_seconds(raw.get("heartbeat"), now)
        if beat_age is not None and beat_age > s.heartbeat_timeout:
            return HEARTBEAT_LOST, (f"worker heartbeat lost after {int(beat_age)} s on host "
                                    f"{raw.get('worker_hostname') or '?'}")
        if past_deadline:
            return OVERRAN, (f"running past its expected duration ({format_age(age_seconds(raw['deadline'], now))} "
                             f"over) on host {raw.get('worker_hostname') or '?'}, heartbeat fresh")
    if status == S.WAITING_FOR_RESULT.value and (past_deadline or in_state > min(s.queue_timeout,
                                                                                  s.heartbeat_timeout)):
        # Only a late parent can be stuck: a young one is judged without counting its children.
        running = children.count_children(Attempt.of(kind.collection, raw), raw.get("child_collections"),
                                          PROCESSING_VALUES)
        if running == 0 and (past_deadline or in_state > min(s.queue_timeout, s.heartbeat_timeout)):
            return JOIN_LOST, "every child finished but the join never ran"
        if past_deadline and running:
            return CHILDREN_OVERRAN, (f"{running} child process(es) still running "
                                      f"{format_age(age_seconds(raw['deadline'], now))} past the deadline")
    return None
