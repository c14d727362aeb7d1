"""What a worker does with a message: claim the attempt, run the method, record the end.

The claim is the RUNNING transition, conditional on this message's attempt and on the
process still being PENDING or DISPATCHED; it returns the document, so the method's
document is loaded by that one write. A duplicate, redelivered or stale message finds
nothing to claim and does nothing. The claim and the end of the attempt ride out a short
database outage (``durable`` writes, ``PROC_DB_OUTAGE_TIMEOUT``). One process's failure is recorded on its own document
and never propagates to the worker or to other processes.
"""
from __future__ import annotations

import logging
import socket
import traceback

from bson import json_util

from . import children, db, dispatch, heartbeat, machine, registry
from .exceptions import ProcessFailure
from .status import ProcessStatus as S
from .timeutil import utcnow

log = logging.getLogger(__name__)


def run_message(collection: str, id_json: str, method: str, args, kwargs, attempt: int,
                *, hostname: str | None = None) -> str:
    """Run one Celery message of ``proc.run``. Returns what happened, for logs and tests."""
    cls = registry.class_for(collection)
    kind = registry.kind(cls, method)
    pk = json_util.loads(id_json)
    host = hostname or socket.gethostname()
    coll = cls._get_collection()
    raw = machine.transition(coll, pk, "claim", attempt=attempt,
                             set={"worker_hostname": host, "heartbeat": utcnow()},
                             note=f"{method} started", host=host, fetch=True, durable=True)
    if raw is None:
        log.info("ignored message for %s %s attempt %s: already claimed, finished or superseded",
                 kind.name, pk, attempt)
        return "ignored"
    doc = cls._from_son(raw)
    return execute(kind, doc, lambda: kind.process.fn(doc, *args, **(kwargs or {})), host=host)


def execute(kind, doc, call, *, host: str, joining: bool = False) -> str:
    """Run ``call`` for the RUNNING ``doc`` and write how it ended. Returns the final status."""
    coll = doc._get_collection()
    if joining:  # the join's WAITING -> RUNNING flip wrote no heartbeat and no new deadline
        _refresh_for_join(kind, doc, coll)
    beat = heartbeat.start(coll, doc.pk, doc.attempt, host)
    children.begin(doc)
    errors: list[str] = []
    try:
        call()
    except ProcessFailure as exc:
        errors = exc.errors
    except Exception as exc:
        errors = [f"{type(exc).__name__}: {exc}"]
        log.error("%s %s failed:\n%s", kind.name, doc.pk, traceback.format_exc())
    finally:
        heartbeat.stop(beat)
    spawned = children.end(doc)
    fields = beat.take_pending_fields()
    warnings: list[str] = []

    if not errors and spawned:
        fields["child_collections"] = sorted(set(doc.child_collections or []) | spawned)
        after = machine.transition(coll, doc.pk, "wait", attempt=doc.attempt, set=fields,
                                   note="waiting for child processes", host=host, durable=True)
        if after is None:
            return _superseded(kind, doc)
        if not joining:
            dispatch.release_slot(kind, doc.pk, doc.attempt)
        children.try_join(doc._get_collection_name(), doc.pk, doc.attempt)
        return S.WAITING_FOR_RESULT.value

    if not errors and (joining or doc.child_collections):
        errors, warnings = db.retrying(lambda: children.outcome(kind, doc),
                                       f"counting the children of {kind.name} {doc.pk}")

    event = "fail" if errors else "succeed"
    note = f"{'join of ' if joining else ''}{doc.current_process} " + ("failed" if errors else "succeeded")
    after = machine.transition(coll, doc.pk, event, attempt=doc.attempt, sources=[S.RUNNING],
                               set=fields, errors=errors, warnings=warnings, note=note, host=host,
                               durable=True)
    if after is None:
        return _superseded(kind, doc)
    dispatch.attempt_over(kind, doc.pk, doc.attempt, parent=doc.parent, task_id=doc.celery_task_id,
                          slot=not joining)
    return after["process_status"]


def _refresh_for_join(kind, doc, coll) -> None:
    """Give a join a fresh heartbeat and, if the deadline has passed, the kind's expected duration."""
    fields = {"heartbeat": utcnow()}
    if doc.deadline is None or doc.deadline < fields["heartbeat"]:
        fields["deadline"] = dispatch.deadline(kind, doc.to_mongo().to_dict())
    db.retrying(lambda: machine.update_fields(coll, doc.pk, attempt=doc.attempt, statuses=[S.RUNNING],
                                             set=fields), f"refreshing the join of {kind.name} {doc.pk}")


def _superseded(kind, doc) -> str:
    log.warning("%s %s attempt %s was superseded while it ran (recovered or cancelled); "
                "its result is discarded", kind.name, doc.pk, doc.attempt)
    return "superseded"
