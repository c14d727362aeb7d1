"""Which processes need attention, and why: shared by the check-status page and the monitor.

A process needs attention when it has been in an active state longer than its kind's
thresholds (``proc.settings``):

===================  =============================================  ==========================
status               condition                                      reason
===================  =============================================  ==========================
PENDING              longer than ``queue_timeout``                  held by the limit /
                                                                    broker unreachable /
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

- PENDING/DISPATCHED with ``last_status_change`` older than ``queue_timeout``: index
  (process_status, last_status_change);
- RUNNING with ``heartbeat`` older than ``heartbeat_timeout``: index (process_status, heartbeat);
- DISPATCHED/RUNNING/WAITING_FOR_RESULT past ``deadline``: index (process_status, deadline).

When the kinds of a collection have different thresholds, the first two are issued once
per distinct threshold, limited to those kinds' methods (``current_process``). A waiting
parent whose join was lost is found at its deadline (a parent's ``expected_duration``
covers its children); ``diagnose()`` of one waiting process reports it as soon as its
children have all finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import children, limits, registry
from .machine import Attempt
from .status import PROCESSING_VALUES, ProcessStatus as S
from .timeutil import age_seconds, format_age, utcnow

HELD_BY_LIMIT = "held by the limit"
BROKER_UNREACHABLE = "broker unreachable"
NOT_SENT = "never handed to the broker"
NOT_STARTED = "not started by any worker"
HEARTBEAT_LOST = "worker heartbeat lost"
OVERRAN = "overran expected duration"
JOIN_LOST = "join never ran"
CHILDREN_OVERRAN = "children overran"

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


def queries_for(kinds, now: datetime) -> list[dict]:
    """The filters ``find()`` issues for one collection whose kinds are ``kinds``."""
    split = len({k.settings.queue_timeout for k in kinds}) > 1
    out = []
    for seconds, methods in _by_threshold(kinds, "queue_timeout"):
        q = {"process_status": {"$in": [S.PENDING.value, S.DISPATCHED.value]},
             "last_status_change": {"$lt": now - timedelta(seconds=seconds)}}
        if split:
            q["current_process"] = {"$in": methods}
        out.append(q)
    split = len({k.settings.heartbeat_timeout for k in kinds}) > 1
    for seconds, methods in _by_threshold(kinds, "heartbeat_timeout"):
        q = {"process_status": S.RUNNING.value, "heartbeat": {"$lt": now - timedelta(seconds=seconds)}}
        if split:
            q["current_process"] = {"$in": methods}
        out.append(q)
    out.append({"process_status": {"$in": [S.DISPATCHED.value, S.RUNNING.value,
                                           S.WAITING_FOR_RESULT.value]},
                "deadline": {"$lt": now}})
    return out


def index_for(query: dict) -> tuple[str, str]:
    """The compound index a ``find()`` query is meant to use."""
    for name, index in INDEX_BY_FIELD.items():
        if name in query:
            return index
    raise ValueError(f"not a find() query: {query}")


def find(now: datetime | None = None, *, collections=None, limit: int = 1000,
         query_log: list | None = None, explain: list | None = None) -> list[Stuck]:
    """Every process that needs attention now (at most ``limit`` per query).

    ``query_log`` receives ``(collection, filter)`` per query issued; ``explain`` receives a
    dict per query: collection, filter, the index it is meant to use, documents returned.
    """
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
            for raw in coll.find(query, PROJECTION).limit(limit):
                returned += 1
                if raw["_id"] in seen:
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
    return found


def diagnose(kind, raw: dict, now: datetime, usage: dict | None = None) -> tuple[str, str] | None:
    """(reason, detail) if this process needs attention now, else None."""
    s = kind.settings
    status = raw["process_status"]
    in_state = age_seconds(raw.get("last_status_change"), now) or 0.0
    if status == S.PENDING.value and in_state > s.queue_timeout:
        step = raw.get("current_process_step") or ""
        if step.startswith("broker unreachable"):
            return BROKER_UNREACHABLE, step
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
