"""One process in full, and the summary of a process that lists show (the lists: ``api.listing``)."""
from __future__ import annotations

from datetime import datetime

from bson import ObjectId

from proc import registry
from proc.store import reader
from proc.monitor import stuck
from proc.run import limits
from proc.ops.filters import parse_id
from proc.exceptions import UnknownKind
from proc.status import ProcessStatus as S
from proc.timeutil import age_seconds, format_age, utcnow

from .errors import ApiError, bad_parameter
from .overview import STATUSES, iso

SUMMARY_FIELDS = {"process_status": 1, "current_process": 1, "current_process_step": 1, "attempt": 1,
                  "last_status_change": 1, "worker_hostname": 1, "errors": {"$slice": -1},
                  "create_time": 1}


def _sortable(value):
    return (0, value.binary) if isinstance(value, ObjectId) else (1, str(value))


def summary(collection: str, raw: dict, now: datetime) -> dict:
    method = raw.get("current_process")
    return {
        "collection": collection,
        "id": str(raw["_id"]),
        "kind": f"{collection}.{method}" if method else collection,
        "status": raw.get("process_status"),
        "attempt": raw.get("attempt", 0),
        "step": raw.get("current_process_step"),
        "last_status_change": iso(raw.get("last_status_change")),
        "age_seconds": _rounded(age_seconds(raw.get("last_status_change"), now)),
        "age": format_age(age_seconds(raw.get("last_status_change"), now)),
        "worker": raw.get("worker_hostname"),
        "last_error": (raw.get("errors") or [None])[-1],
    }


def find_proc(collection: str, id_text: str) -> tuple[type, dict]:
    """(class, raw document) or an ApiError: 404 for an unknown collection or id, 400 for a bad id."""
    try:
        cls = registry.class_for(collection)
    except UnknownKind as exc:
        raise ApiError(404, str(exc), "collection") from None
    try:
        pk = parse_id(cls, id_text)
    except ValueError as exc:
        raise bad_parameter("id", str(exc)) from None
    raw = cls._get_collection().find_one({"_id": pk})
    if raw is None:
        raise ApiError(404, f"no {cls.__name__} with id {id_text!r} in collection {collection!r}", "id")
    return cls, raw


def detail(collection: str, id_text: str) -> dict:
    """Every field of one process, its kind's settings, its diagnosis and what may be done to it."""
    cls, stored = find_proc(collection, id_text)
    now = utcnow()
    problem = reader.problem(stored)  # an unreadable document is shown as stored, not judged
    raw = stored if problem is None else reader.sanitized(stored)
    kind = registry.kind_of(cls, raw)
    verdict = None
    if problem is None and kind is not None and raw.get("process_status") in STATUSES:
        verdict = stuck.diagnose(kind, raw, now, limits.usage())
    status = raw.get("process_status")
    active = status in (S.PENDING.value, S.DISPATCHED.value, S.RUNNING.value, S.WAITING_FOR_RESULT.value)
    repairable = status == S.FAILURE.value or (active and (verdict is not None or kind is None))
    fields = {name: jsonable(value) for name, value in stored.items() if name != "history"}
    return {
        **summary(collection, raw, now),
        "unreadable": problem,
        "fields": fields,
        "errors": list(raw.get("errors") or []),
        "warnings": list(raw.get("warnings") or []),
        "history": [jsonable(h) for h in reversed(raw.get("history") or [])],
        "needs_attention": None if verdict is None else {"reason": verdict[0], "detail": verdict[1]},
        "settings": None if kind is None else {
            "limit": kind.settings.limit, "queue": kind.settings.queue,
            "queue_timeout": kind.settings.queue_timeout,
            "heartbeat_timeout": kind.settings.heartbeat_timeout,
            "recovery": kind.settings.recovery, "max_attempts": kind.settings.max_attempts},
        "actions": {"reset": repairable, "redispatch": repairable and kind is not None and problem is None,
                    "cancel": active},
    }


def _rounded(value):
    return None if value is None else round(value, 1)


def jsonable(value):
    """A stored value as plain JSON: ids as strings, times as ISO 8601 UTC."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
