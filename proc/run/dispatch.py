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
   The attempt's deadline is in a bucket whose monitor check is scheduled
   (``checks.schedule_bucket``: one message per kind and bucket, not per process).

This module works on any document with the ``Proc`` fields; it never imports ``Proc``.
"""
from __future__ import annotations

import logging
import socket
import uuid
from datetime import timedelta

from .. import machine, registry
from ..exceptions import BrokerUnavailable, ProcessAlreadyRunning, ProcError
from ..machine import Attempt, Change, many
from ..status import PROCESSING, PROCESSING_VALUES, ProcessStatus as S
from ..store import caps, db
from ..timeutil import age_seconds, utcnow
from . import checks, children, limits, messaging

log = logging.getLogger(__name__)


def start(doc, method: str, args=(), kwargs=None, *, parent: Attempt | None = None):
    """Call process ``method`` on ``doc``: see the module docstring. Returns ``doc``, updated.

    With the database away the call fails after ``serverSelectionTimeoutMS`` with
    ``DatabaseUnavailable``; if the first write did not land, nothing was written.
    """
    try:
        return _start(doc, method, args, kwargs, parent=parent)
    except db.OUTAGE_ERRORS as exc:
        raise db.unavailable(exc, f"calling {type(doc).__name__}.{method} on {doc.pk}") from None


def _start(doc, method: str, args, kwargs, *, parent: Attempt | None):
    if doc.pk is None:
        raise ProcError(f"save the {type(doc).__name__} before calling a process on it")
    kind = registry.kind(type(doc), method)
    args, kwargs = list(args), dict(kwargs or {})
    caps.check_args(kind.name, args, kwargs)  # before anything is written
    fields = {
        "current_process": method,
        "current_process_step": None,
        "process_args": {"args": args, "kwargs": kwargs},
        "celery_task_id": str(uuid.uuid4()),
        "worker_hostname": None,
        "worker_pool": None,
        "worker_pid": None,
        "worker_pid_start": None,
        "errors": [],
        "warnings": [],
        "child_collections": [],
        "heartbeat": None,
        "complete_time": None,
        "deadline": None,
    }
    if parent is not None:
        fields["parent"] = parent.ref()
        fields["parent_key"] = parent.key
    change = Change(fields=fields, note=f"{method} called", host=socket.gethostname())
    for _ in range(3):
        raw = machine.transition(Attempt.of_doc(doc), "request", change)
        if raw is not None:
            break
        current = kind.cls._get_collection().find_one({"_id": doc.pk}, {"process_status": 1, "attempt": 1})
        if current is None:
            raise ProcError(f"{type(doc).__name__} {doc.pk} no longer exists")
        if S(current["process_status"]) in PROCESSING:
            raise ProcessAlreadyRunning(
                f"{type(doc).__name__} {doc.pk} is {current['process_status']} "
                f"(attempt {current['attempt']}); wait for it, or reset/cancel it first")
        doc._apply_raw({"attempt": current["attempt"]})  # stale copy in memory: retry on the fresh attempt
    else:
        raise ProcessAlreadyRunning(f"{type(doc).__name__} {doc.pk}: lost the start race three times")
    doc._apply_raw(raw)
    raw = send(kind, raw)
    if raw is not None:
        doc._apply_raw(raw)
    return doc


def spawn(parent, bound, args, kwargs):
    """Start ``bound`` (``child.some_process``) as a child of ``parent``'s running attempt.

    A child the broker does not take stays PENDING, linked to its parent; the monitor sends
    it later and the parent waits for it like for any other child.
    """
    child = bound.doc
    children.note_spawned(parent, child._get_collection_name())
    try:
        start(child, bound.method.name, args, kwargs, parent=Attempt.of_doc(parent))
    except BrokerUnavailable as exc:
        log.warning("child %s %s stays PENDING: %s", type(child).__name__, child.pk, exc)
    return child


def send(kind, raw: dict, *, have_slot: bool = False, note: str | None = None,
         by: str | None = None) -> dict | None:
    """Take a slot (if the kind is limited) and publish the message of a PENDING process.

    Returns the document after the DISPATCHED write, or None when it is held by the limit,
    was already being sent by another caller, or a worker overtook the write. Once the
    message is out, the attempt's monitor check is scheduled at its deadline.
    """
    attempt = Attempt.of(kind.collection, raw)
    limit = kind.settings.limit
    if limit and not have_slot:
        slot = limits.acquire(kind.name, attempt.key, limit)
        if slot is limits.Slot.HELD and not abandoned(kind, raw):
            return None  # its dispatcher is sending it right now
        if slot is limits.Slot.FULL:
            in_use = len(limits.holders(kind.name))
            machine.update_fields(attempt, statuses=[S.PENDING],
                                  fields={"current_process_step": f"waiting for a slot: {in_use}/{limit} in use"})
            # A slot may have been freed between our attempt and that write; its releaser
            # pumps the queue after releasing, so the process is not forgotten either way.
            return None
    try:
        messaging.publish(kind, raw)
    except BrokerUnavailable as exc:
        if limit:
            limits.release(kind.name, attempt.key)
        machine.update_fields(attempt, statuses=[S.PENDING], fields={"current_process_step": str(exc)})
        raise
    due = deadline(kind, raw)
    fields = {"deadline": due}
    if raw.get("current_process_step"):
        fields["current_process_step"] = None
    after = machine.transition(attempt, "dispatched", Change(fields=fields, note=note, by=by))
    if after is None:
        # A worker overtook the write: the attempt still needs its deadline. Or the attempt is
        # not active any more (another pump sent it and it finished between our read and our
        # slot): then the slot just taken belongs to nobody and is given back.
        still_active = machine.update_fields(attempt, statuses=PROCESSING, fields={"deadline": due})
        if not still_active:
            if limit:
                limits.release(kind.name, attempt.key)
            return None
    if kind.settings.monitor_checks:
        checks.schedule_bucket(kind, due)
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
            slot = limits.acquire(kind.name, Attempt.of(kind.collection, raw).key, limit)
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


def release_slots(kind, attempts) -> None:
    """Give back the slots of ``attempts`` of ``kind`` (one write, ridden through an outage)
    and send the next held processes of the kind. Nothing for a kind without a limit."""
    if not kind.settings.limit:
        return  # before the keys: each costs a JSON encoding of the id, on every ending
    keys = [attempt.key for attempt in attempts]
    if not keys:
        return
    db.retrying(lambda: limits.release_many(kind.name, keys), f"giving back {len(keys)} slot(s) of {kind.name}")
    try:
        pump(kind)
    except Exception:  # the monitor's sweep pumps again; a finished process stays finished
        log.exception("could not send the next held %s process", kind.name)


def write_each(collection: str, items, event: str) -> list[dict]:
    """``transition`` of each (``Attempt``, ``Change``) of ``items``, documents of one
    collection: what ``transition(fetch=False)`` returns for each document changed.

    Many documents: one ``many.transition_each`` (one ``bulk_write`` and one read of
    which landed). One document: one ``machine.transition`` (one ``update_one`` whose match says
    whether it landed), so a single action costs no read of which landed, a read by ``_id $in``
    and ``history`` that SecantusDB serves with a collection scan."""
    items = list(items)
    if len(items) == 1:
        attempt, change = items[0]
        after = machine.transition(attempt, event, change)
        return [] if after is None else [after]
    return many.transition_each(collection, items, event)


def redispatch_change(*, note: str, by: str | None = None, warnings=(), sources=None,
                      guard: dict | None = None) -> Change:
    """The ``redispatch`` write: a new task id, the last attempt's worker, heartbeat, step,
    end and deadline cleared."""
    return Change(fields={"celery_task_id": str(uuid.uuid4()), "worker_hostname": None, "worker_pool": None,
                          "worker_pid": None, "worker_pid_start": None, "heartbeat": None, "current_process_step": None,
                          "complete_time": None, "deadline": None},
                  warnings=warnings, note=note, by=by, host=socket.gethostname(), sources=sources, guard=guard)


def send_many(kind, raws: list[dict], *, note: str | None = None, by: str | None = None) -> dict:
    """``send`` for PENDING processes of one kind (every redispatch): one publish per message,
    then ONE DISPATCHED write for all of them (``write_each``). A limited kind takes its slots
    one by one (``send`` each). A broker that refuses leaves that process and the rest PENDING
    with the reason as their step (the monitor sends them again). Returns, by ``_id``, what the
    DISPATCHED write returned for each process it changed."""
    if kind.settings.limit:
        sent = {}
        for raw in raws:
            try:
                after = send(kind, raw, note=note, by=by)
            except BrokerUnavailable:
                break
            if after is not None:
                sent[raw["_id"]] = after
        return sent
    published: list[dict] = []
    for raw in raws:
        try:
            messaging.publish(kind, raw)
        except BrokerUnavailable as exc:
            for rest in raws[len(published):]:
                machine.update_fields(Attempt.of(kind.collection, rest), statuses=[S.PENDING],
                                      fields={"current_process_step": str(exc)})
            break
        published.append(raw)
    dues = {raw["_id"]: deadline(kind, raw) for raw in published}
    landed = {after["_id"]: after for after in write_each(kind.collection, [
        (Attempt.of(kind.collection, raw), Change(fields={"deadline": dues[raw["_id"]]}, note=note, by=by))
        for raw in published], "dispatched")}
    for raw in published:
        if raw["_id"] not in landed:  # a worker overtook the write: the attempt still needs its deadline
            machine.update_fields(Attempt.of(kind.collection, raw), statuses=PROCESSING,
                                  fields={"deadline": dues[raw["_id"]]})
    if kind.settings.monitor_checks:
        for due in dues.values():
            checks.schedule_bucket(kind, due)
    return landed


def redispatch_each(collection: str, targets, *, note: str, by: str | None = None, warnings=(),
                    sources=None, guard: dict | None = None) -> tuple[dict, dict]:
    """Send each (kind, raw) of ``targets`` (documents of ``collection`` with a process, as
    read and judged) again, as a new attempt: the ``redispatch`` write of each, conditional on
    the attempt and status it was read at (or ``sources``) and on ``guard`` (``write_each``: one
    ``update_one`` for one document, one ``bulk_write`` and one read for many), the slots of
    the attempts it ended given back (one write per limited kind, no pump: the new attempts
    take them), then per kind ``send_many``.

    Returns two dicts by ``_id``: what the redispatch write returned for each document it
    changed, and what the DISPATCHED write returned for each it changed (not one held by its
    limit, refused by the broker or overtaken by a worker)."""
    targets = list(targets)
    landed = {after["_id"]: after for after in write_each(collection, [
        (Attempt.of(collection, raw), redispatch_change(note=note, by=by, warnings=warnings,
                                                        sources=sources or [raw["process_status"]],
                                                        guard=guard))
        for _, raw in targets], "redispatch")}
    by_kind: dict[str, tuple] = {}
    for kind, raw in targets:
        if raw["_id"] in landed:
            by_kind.setdefault(kind.name, (kind, []))[1].append(raw)
    sent: dict = {}
    for kind, raws in by_kind.values():
        if kind.settings.limit:  # no pump: the new attempts take these slots first
            limits.release_many(kind.name, [Attempt.of(collection, raw).key for raw in raws
                                            if raw["process_status"] in PROCESSING_VALUES])
        sent.update(send_many(kind, [{**raw, **landed[raw["_id"]]} for raw in raws]))
    return landed, sent


def redispatch(kind, raw: dict, *, note: str, by: str | None = None, warnings=(),
               sources=None, guard: dict | None = None) -> dict | None:
    """``redispatch_each`` of one stuck or failed process (``raw``, as read), for the monitor:
    the document after it (read again when its DISPATCHED write did not land), or None when it
    changed since it was read."""
    landed, sent = redispatch_each(kind.collection, [(kind, raw)], note=note, by=by, warnings=warnings,
                                   sources=sources, guard=guard)
    if raw["_id"] not in landed:
        return None
    if raw["_id"] in sent:
        return {**raw, **landed[raw["_id"]], **sent[raw["_id"]]}
    return kind.cls._get_collection().find_one({"_id": raw["_id"]})
