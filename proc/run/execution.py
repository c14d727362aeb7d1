"""What a worker does with a message: claim the attempt, run the method, end the attempt,
and run a parent's join when its last child ends.

The claim is the RUNNING transition, conditional on this message's attempt and on the
process still being PENDING or DISPATCHED; it returns the document, so the method's
document is loaded by that one write. A duplicate, redelivered or stale message finds
nothing to claim and does nothing. The claim and the end of the attempt ride out a short
database outage (``durable`` writes, ``PROC_DB_OUTAGE_TIMEOUT``). One process's failure
is recorded on its own document and never propagates to the worker or to other processes.

The end of every attempt (a worker's final write, an operator's reset or cancel, the
monitor failing it) goes through ``attempt_over``: the slot is given back and the parent joined if this was its last running child. The
join (``try_join``) flips the parent WAITING_FOR_RESULT -> RUNNING with one conditional
write, so exactly one caller wins, and the winner runs the join here (``execute``), whose
end is again an ``attempt_over``: the recursion stays in this module.
"""
from __future__ import annotations

import logging
import socket
import traceback

from bson import json_util

from .. import machine, registry
from ..store import caps, db
from . import checks, children, dispatch, heartbeat, pools
from ..exceptions import ClaimNotWritten, DatabaseUnavailable, ProcessCancelled, ProcessFailure
from ..machine import Attempt, Change
from ..status import PROCESSING, ProcessStatus as S
from ..timeutil import utcnow

log = logging.getLogger(__name__)


def run_message(collection: str, id_json: str, method: str, args, kwargs, attempt: int,
                *, hostname: str | None = None) -> str:
    """Run one Celery message of ``proc.run``. Returns what happened, for logs and tests."""
    cls = registry.class_for(collection)
    kind = registry.kind(cls, method)
    host = hostname or socket.gethostname()
    target = Attempt(collection, json_util.loads(id_json), attempt)
    pid, pid_start = pools.own_process()
    try:
        raw = machine.transition(target, "claim", Change(
            fields={"worker_hostname": host, "worker_pool": pools.pool_of(hostname), "worker_pid": pid,
                    "worker_pid_start": pid_start, "heartbeat": utcnow()}, note=f"{method} started", host=host),
            fetch=True, durable=True)
    except DatabaseUnavailable as exc:
        raise ClaimNotWritten(f"{kind.name} {target}: the claim was not written on {host}: {exc}") from None
    if raw is None:
        log.info("ignored message for %s %s: already claimed, finished or superseded", kind.name, target)
        return "ignored"
    doc = cls._from_son(raw)
    return execute(kind, doc, lambda: kind.process.fn(doc, *args, **(kwargs or {})), host=host,
                   timeline=raw.get("history"))


def execute(kind, doc, call, *, host: str, timeline: list, joining: bool = False) -> str:
    """Run ``call`` for the RUNNING ``doc`` and write how it ended. Returns the final status.

    ``timeline`` is the history (raw entries) returned by this worker's own claim or join,
    which the ending write's phases are computed from: no read, and none of mongoengine's
    per-entry conversion of ``doc.history``."""
    attempt = Attempt.of_doc(doc)
    if joining:  # the join's WAITING -> RUNNING flip wrote no heartbeat and no new deadline
        _refresh_for_join(kind, doc, attempt)
    beat = heartbeat.start(attempt, host)
    children.begin(doc)
    errors: list[str] = []
    try:
        call()
    except ProcessCancelled:
        errors = ["cancelled"]  # the cancel already wrote FAILURE; the final write below misses
    except ProcessFailure as exc:
        errors = exc.errors
    except Exception as exc:
        errors = [f"{type(exc).__name__}: {exc}"]
        log.error("%s %s failed:\n%s", kind.name, doc.pk, traceback.format_exc())
    finally:
        heartbeat.stop(beat)
    if beat.lease_lost:  # self-fenced: the monitor sends it again; this attempt writes no end
        children.end(doc)
        log.warning("%s %s: %s; its end is not written, the monitor sends it again after the "
                    "heartbeat timeout", kind.name, attempt, beat.lease_lost)
        return "lease lost"
    if beat.cancelled:
        children.end(doc)
        return _stopped(kind, attempt, beat.cancelled, host)
    spawned = children.end(doc)
    fields = beat.take_pending_fields()
    warnings: list[str] = []

    if not errors and spawned:
        fields["child_collections"] = sorted(set(doc.child_collections or []) | spawned)
        after = _ending_write(attempt, "wait", Change(
            fields=fields, note="waiting for child processes", host=host, method=kind.method), timeline)
        if after is None:
            return _superseded(kind, doc, attempt, host)
        if after["process_status"] == S.FAILURE.value:  # refused for size: it ended instead
            attempt_over(kind, attempt, slot=not joining)
            return S.FAILURE.value
        if not joining:
            dispatch.release_slots(kind, [attempt])
        try_join(attempt)
        return S.WAITING_FOR_RESULT.value

    if not errors and (joining or doc.child_collections):
        errors, warnings = db.retrying(lambda: children.outcome(kind, doc),
                                       f"counting the children of {kind.name} {doc.pk}")

    event = "fail" if errors else "succeed"
    note = f"{'join of ' if joining else ''}{doc.current_process} " + ("failed" if errors else "succeeded")
    after = _ending_write(attempt, event, Change(
        fields=fields, errors=errors, warnings=warnings, note=note, host=host, sources=[S.RUNNING],
        timeline=timeline, method=kind.method), timeline)  # from this worker's claim or join: the phases need no read
    if after is None:
        return _superseded(kind, doc, attempt, host)
    attempt_over(kind, attempt, slot=not joining)
    return after["process_status"]


def _ending_write(attempt: Attempt, event: str, change: Change, timeline) -> dict | None:
    """The write that ends ``attempt``'s run (``wait``, ``succeed``, ``fail``), durable. If the
    database refuses it for size (the document would pass 16 MiB: ``caps.too_large``), the
    attempt still ends: FAILURE, with ``errors`` replaced by one short error saying so (and
    how the method had ended) and ``warnings`` emptied, so the write fits. A process is never
    left RUNNING for the monitor to blame on a lost heartbeat."""
    try:
        return machine.transition(attempt, event, change, durable=True)
    except Exception as exc:
        if not caps.too_large(exc):
            raise
        outcome = "; ".join(change.errors) if change.errors else f"its {event} write"
        log.error("%s: the database refused the ending write for size (%s); ending it FAILURE",
                  attempt, exc)
        short = (f"the database refused the end of this attempt: the document would exceed "
                 f"{caps.DOCUMENT_BYTES // (1024 * 1024)} MiB ({type(exc).__name__}); errors and "
                 f"warnings were cleared to record it. The method ended with: {outcome[:500]}")
        return machine.transition(attempt, "fail", Change(
            fields={"errors": [short], "warnings": []}, note="ended FAILURE: document too large",
            host=change.host, sources=[S.RUNNING], timeline=timeline, method=change.method), durable=True)


def attempt_over(kind, attempt: Attempt, *, slot: bool = True, parent: bool = True) -> None:
    """``attempt`` left its active state (finished, failed, reset, cancelled): give back its
    concurrency slot (``slot``) and let its parent join if it was the last child. ``kind`` may be None (no known process method)."""
    if kind is not None and slot:
        dispatch.release_slots(kind, [attempt])
    # Its bucket's check will find it finished and do nothing: there is nothing to revoke.
    if parent:  # not when the parent was cancelled with it (proc.ops.actions: a cancelled subtree)
        notify_parent(Attempt.from_ref(attempt.parent))


def notify_parent(parent: Attempt | None) -> None:
    """After a child finished: let its parent join if it was the last one."""
    if parent is None:
        return
    try:
        try_join(parent)
    except Exception:  # the monitor runs a lost join; the child's own result stands
        log.exception("join of parent %s failed to start", parent)


def try_join(parent: Attempt) -> str | None:
    """Run the parent's join if its last child has finished and nobody else won the flip."""
    cls = registry.class_for(parent.collection)
    raw = cls._get_collection().find_one(
        {"_id": parent.id, "attempt": parent.number, "process_status": S.WAITING_FOR_RESULT.value},
        {"child_collections": 1})
    if raw is None:
        return None
    if children.count_children(parent, raw.get("child_collections"), PROCESSING):
        return None
    host = socket.gethostname()
    raw = machine.transition(parent, "join", Change(note="all child processes finished", host=host),
                             fetch=True)
    if raw is None:
        return None  # another finishing child (or the monitor) won the join
    doc = cls._from_son(raw)
    kind = registry.kind(cls, doc.current_process)
    join_name = kind.process.join
    call = getattr(doc, join_name) if join_name else (lambda: None)
    return execute(kind, doc, call, host=host, timeline=raw.get("history"), joining=True)


def _refresh_for_join(kind, doc, attempt: Attempt) -> None:
    """Give a join a fresh heartbeat and, if the deadline has passed, the kind's expected duration."""
    fields = {"heartbeat": utcnow()}
    if doc.deadline is None or doc.deadline < fields["heartbeat"]:
        fields["deadline"] = dispatch.deadline(kind, doc.to_mongo().to_dict())
    db.retrying(lambda: machine.update_fields(attempt, statuses=[S.RUNNING], fields=fields),
                f"refreshing the join of {kind.name} {doc.pk}")
    if "deadline" in fields and kind.settings.monitor_checks:
        checks.schedule_bucket(kind, fields["deadline"])


def _stopped(kind, attempt: Attempt, cancelled: str, host: str) -> str:
    """The code of a cancelled attempt has ended: say so, and when, in its history."""
    log.warning("%s %s was %s; its code has stopped", kind.name, attempt, cancelled)
    db.retrying(lambda: machine.mark(attempt, "stopped", note=f"the code stopped ({cancelled})",
                                     host=host), f"recording the stop of {attempt}")
    return "cancelled"


def _superseded(kind, doc, attempt: Attempt, host: str) -> str:
    cancelled = db.retrying(lambda: heartbeat.cancelled_by(attempt), f"reading {attempt}")
    if cancelled:  # it ended before a beat saw the cancel
        return _stopped(kind, attempt, cancelled, host)
    log.warning("%s %s attempt %s was superseded while it ran (recovered or cancelled); "
                "its result is discarded", kind.name, doc.pk, doc.attempt)
    return "superseded"
