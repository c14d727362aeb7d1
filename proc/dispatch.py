"""Starting a process: record PENDING, take a slot, hand the message to the broker, record DISPATCHED.

Order of writes for one call (each one atomic and conditional on the attempt):

1. ``request``: READY/SUCCESS/FAILURE -> PENDING, new attempt, task id, method and arguments.
2. a slot of the kind's concurrency limit (if any); without one the call returns with the
   process PENDING ("waiting for a slot: 4/4 in use"); it is sent when a slot frees.
3. the Celery message, published within ``PROC_DISPATCH_TIMEOUT``. If the broker does not
   take it, the slot is given back, the process stays PENDING with the reason in
   ``current_process_step`` and ``BrokerUnavailable`` is raised: nothing is lost, the
   monitor (or ``redispatch``) sends it again.
4. ``dispatched``: PENDING -> DISPATCHED. A worker may have claimed it RUNNING already;
   then this write finds nothing to change, which is fine: the status never steps back.
"""
from __future__ import annotations

import logging
import socket
import uuid
from datetime import timedelta

from bson import json_util

from . import celeryconf, db, limits, machine, registry
from .document import Proc, collection_of, require_saved
from .exceptions import BrokerUnavailable, ProcessAlreadyRunning, ProcError
from .process import check_jsonable
from .redact import redact_url
from .status import PROCESSING, ProcessStatus as S
from .timeutil import age_seconds, utcnow

log = logging.getLogger(__name__)

TASK_NAME = "proc.run"


def start(doc: Proc, method: str, args=(), kwargs=None, *, parent: dict | None = None) -> Proc:
    """Call process ``method`` on ``doc``: see the module docstring. Returns ``doc``, updated.

    With the database away the call fails after ``serverSelectionTimeoutMS`` with
    ``DatabaseUnavailable``; if the first write did not land, nothing was written.
    """
    try:
        return _start(doc, method, args, kwargs, parent=parent)
    except db.OUTAGE_ERRORS as exc:
        raise db.unavailable(exc, f"calling {type(doc).__name__}.{method} on {doc.pk}") from None


def _start(doc: Proc, method: str, args, kwargs, *, parent: dict | None) -> Proc:
    require_saved(doc)
    kind = registry.kind(type(doc), method)
    args, kwargs = list(args), dict(kwargs or {})
    check_jsonable(kind.name, args, kwargs)
    coll = collection_of(doc)
    fields = {
        "current_process": method,
        "current_process_step": None,
        "process_args": {"args": args, "kwargs": kwargs},
        "celery_task_id": str(uuid.uuid4()),
        "worker_hostname": None,
        "errors": [],
        "warnings": [],
        "child_collections": [],
        "heartbeat": None,
        "complete_time": None,
        "deadline": None,
    }
    if parent is not None:
        fields["parent"] = parent
        fields["parent_key"] = machine.attempt_key(parent["collection"], parent["id"], parent["attempt"])
    for _ in range(3):
        raw = machine.transition(coll, doc.pk, "request", attempt=doc.attempt, set=fields,
                                 note=f"{method} called", host=socket.gethostname())
        if raw is not None:
            break
        current = coll.find_one({"_id": doc.pk}, {"process_status": 1, "attempt": 1})
        if current is None:
            raise ProcError(f"{type(doc).__name__} {doc.pk} no longer exists")
        if S(current["process_status"]) in PROCESSING:
            raise ProcessAlreadyRunning(
                f"{type(doc).__name__} {doc.pk} is {current['process_status']} "
                f"(attempt {current['attempt']}); wait for it, or reset/cancel it first")
        doc._data["attempt"] = current["attempt"]  # stale copy in memory: retry on the fresh attempt
    else:
        raise ProcessAlreadyRunning(f"{type(doc).__name__} {doc.pk}: lost the start race three times")
    doc._apply_raw(raw)
    raw = send(kind, raw)
    if raw is not None:
        doc._apply_raw(raw)
    return doc


def send(kind, raw: dict, *, have_slot: bool = False, note: str | None = None,
         by: str | None = None) -> dict | None:
    """Take a slot (if the kind is limited) and publish the message of a PENDING process.

    Returns the document after the DISPATCHED write, or None when it is held by the limit,
    was already being sent by another caller, or a worker overtook the write. Once the
    message is out, the attempt's monitor check is scheduled at its deadline (``proc.monitor``).
    """
    coll = kind.cls._get_collection()
    attempt = raw["attempt"]
    limit = kind.settings.limit
    key = machine.attempt_key(kind.collection, raw["_id"], attempt)
    if limit and not have_slot:
        slot = limits.acquire(kind.name, key, limit)
        if slot is limits.Slot.HELD and not abandoned(kind, raw):
            return None  # its dispatcher is sending it right now
        if slot is limits.Slot.FULL:
            in_use = len(limits.holders(kind.name))
            machine.update_fields(coll, raw["_id"], attempt=attempt, statuses=[S.PENDING],
                                  set={"current_process_step": f"waiting for a slot: {in_use}/{limit} in use"})
            # A slot may have been freed between our attempt and that write; its releaser
            # pumps the queue after releasing, so the process is not forgotten either way.
            return None
    try:
        publish(kind, raw)
    except BrokerUnavailable as exc:
        if limit:
            limits.release(kind.name, key)
        machine.update_fields(coll, raw["_id"], attempt=attempt, statuses=[S.PENDING],
                              set={"current_process_step": str(exc)})
        raise
    due = deadline(kind, raw)
    fields = {"deadline": due}
    if raw.get("current_process_step"):
        fields["current_process_step"] = None
    after = machine.transition(coll, raw["_id"], "dispatched", attempt=attempt, set=fields,
                               note=note, by=by)
    if after is None:
        # A worker overtook the write: the attempt still needs its deadline.
        machine.update_fields(coll, raw["_id"], attempt=attempt, statuses=PROCESSING,
                              set={"deadline": due}, extra_filter={"deadline": None})
    from . import monitor

    if kind.settings.monitor_checks:
        monitor.schedule(kind, dict(raw, deadline=due))
    return after


def abandoned(kind, raw: dict) -> bool:
    """A PENDING process whose slot is held but which is older than the queue timeout: the
    caller that took the slot died before publishing (a live one publishes within
    PROC_DISPATCH_TIMEOUT). Whoever finds it may send it; a second message is harmless."""
    age = age_seconds(raw.get("last_status_change"))
    return age is not None and age > kind.settings.queue_timeout


def deadline(kind, raw: dict):
    """When this attempt should have finished: dispatch time + the kind's expected duration."""
    expected = kind.settings.expected_duration
    if callable(expected):
        # ``raw`` may be a projection (pump): the function needs the whole document.
        full = kind.cls._get_collection().find_one({"_id": raw["_id"]}) or raw
        seconds = kind.settings.expected_seconds(kind.cls._from_son(full))
    else:
        seconds = float(expected)
    return utcnow() + timedelta(seconds=seconds)


def publish(kind, raw: dict) -> None:
    """Publish the Celery message for ``raw``'s attempt, or raise ``BrokerUnavailable``."""
    app = celeryconf.get_app()
    pargs = raw.get("process_args") or {}
    message = [kind.collection, json_util.dumps(raw["_id"]), kind.method,
               pargs.get("args", []), pargs.get("kwargs", {}), raw["attempt"]]
    timeout = app.conf.broker_transport_options.get("socket_timeout", 5) * 2
    try:
        app.send_task(TASK_NAME, args=message, task_id=raw["celery_task_id"],
                      queue=kind.settings.queue, retry=True,
                      retry_policy=celeryconf.publish_retry_policy(timeout))
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not accepted"
        url = redact_url(app.conf.broker_url)
        reason = redact_url(f"{type(exc).__name__}: {exc}")
        log.warning("broker at %s did not accept %s %s: %s", url, kind.name, raw["_id"], reason)
        raise BrokerUnavailable(
            f"broker unreachable at {url} ({reason}); the process stays PENDING and will be sent "
            "again when the broker is back (monitor), or redispatch it") from None


def pump(kind) -> int:
    """Send held PENDING processes of a limited kind, oldest first, while slots are free.

    Called whenever a slot is given back (and by the monitor's sweep). Returns how many
    were sent. Concurrent pumps are safe: only the caller that acquires a process's slot
    sends it.
    """
    limit = kind.settings.limit
    if not limit:
        return 0
    coll = kind.cls._get_collection()
    sent = 0
    query = {"process_status": S.PENDING.value, "current_process": kind.method}
    fields = {"attempt": 1, "process_args": 1, "celery_task_id": 1, "current_process_step": 1,
              "last_status_change": 1}
    while True:
        batch = list(coll.find(query, fields).sort([("last_status_change", 1), ("_id", 1)]).limit(limit))
        progressed = False
        for raw in batch:
            key = machine.attempt_key(kind.collection, raw["_id"], raw["attempt"])
            slot = limits.acquire(kind.name, key, limit)
            if slot is limits.Slot.FULL:
                return sent
            if slot is limits.Slot.HELD and not abandoned(kind, raw):
                continue
            try:
                send(kind, raw, have_slot=True)
                sent += 1
                progressed = True
            except BrokerUnavailable:
                return sent
        if not progressed or len(batch) < limit:
            return sent


def attempt_over(kind, id, attempt: int, *, parent: dict | None = None, task_id: str | None = None,
                 slot: bool = True) -> None:
    """An attempt left its active state (finished, failed, reset, cancelled): give back its
    concurrency slot (``slot``), drop its pending monitor check (``task_id``), and let its
    parent join if it was the last child. ``kind`` may be None (no known process method)."""
    from . import children, monitor

    if kind is not None:
        if slot:
            release_slot(kind, id, attempt)
        if task_id and kind.settings.monitor_checks:
            monitor.forget(task_id)  # its pending check would find it finished anyway
    children.notify_parent(parent)


def release_slot(kind, id, attempt: int) -> None:
    """Give back the slot of one attempt and send the next held process of the kind."""
    if not kind.settings.limit:
        return
    key = machine.attempt_key(kind.collection, id, attempt)
    db.retrying(lambda: limits.release(kind.name, key), f"giving back the slot of {kind.name} {id}")
    try:
        pump(kind)
    except Exception:  # the monitor's sweep pumps again; a finished process stays finished
        log.exception("could not send the next held %s process", kind.name)


def redispatch(doc_or_raw, kind, *, note: str, by: str | None = None, warnings=(),
               sources=None, extra_filter: dict | None = None) -> dict | None:
    """Send a stuck or failed process again as a new attempt (monitor and admin)."""
    raw = doc_or_raw if isinstance(doc_or_raw, dict) else doc_or_raw.to_mongo().to_dict()
    coll = kind.cls._get_collection()
    old_attempt = raw["attempt"]
    after = machine.transition(
        coll, raw["_id"], "redispatch", attempt=old_attempt, sources=sources,
        set={"celery_task_id": str(uuid.uuid4()), "worker_hostname": None, "heartbeat": None,
             "current_process_step": None, "complete_time": None, "deadline": None},
        warnings=warnings, note=note, by=by, host=socket.gethostname(), extra_filter=extra_filter,
        fetch=True)
    if after is None:
        return None
    if kind.settings.limit:
        limits.release(kind.name, machine.attempt_key(kind.collection, raw["_id"], old_attempt))
    try:
        sent = send(kind, after)
    except BrokerUnavailable:
        return coll.find_one({"_id": raw["_id"]})
    return sent or coll.find_one({"_id": raw["_id"]})
