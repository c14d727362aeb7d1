"""Operator actions on one process: reset, redispatch, cancel.

Each is one state-machine transition, written to the process's history with who did it
(``by``: "token:<name>", "cli:<user>", "monitor") and when. Reset and redispatch are for
stuck or failed processes: asked of a healthy active process they raise ``ProcessHealthy``
unless ``force=True``.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from mongoengine.errors import ValidationError

from . import dispatch, execution, limits, machine, messaging, registry, stuck
from . import terminate as stopping
from .exceptions import IllegalTransition, ProcError, ProcessHealthy, TransitionConflict
from .machine import Attempt, Change
from .status import ProcessStatus as S
from .timeutil import utcnow

log = logging.getLogger(__name__)


def parse_id(cls, text: str):
    """The primary key of ``cls`` written as ``text`` (an ObjectId's 24 hex digits by default).

    Raises ``ValueError`` saying what an id of that collection looks like.
    """
    field = cls._fields[cls._meta["id_field"]]
    try:
        value = field.to_python(text)
        field.validate(value)
    except (ValidationError, ValueError, TypeError):
        raise ValueError(f"{text!r} is not an id of collection {cls._get_collection_name()!r} "
                         f"({type(field).__name__}; an ObjectId is 24 hexadecimal digits)") from None
    return value


def load(collection: str, id) -> tuple[registry.Kind | None, type, dict]:
    """(kind of its current process or None, class, raw document) or ``LookupError``."""
    cls = registry.class_for(collection)
    raw = cls._get_collection().find_one({"_id": id})
    if raw is None:
        raise LookupError(f"no {cls.__name__} with id {id!r} in collection {collection!r}")
    return registry.kind_of(cls, raw), cls, raw


def require_stuck(kind, raw: dict, action: str, usage: dict | None = None) -> None:
    """The health rule of reset and redispatch: raise unless ``raw`` is failed or stuck.
    ``usage`` (``limits.usage()``) may be read once for many documents."""
    status = raw.get("process_status")
    if status in (S.FAILURE.value,) or kind is None:
        return
    if status in (S.READY.value, S.SUCCESS.value):
        raise IllegalTransition(f"cannot {action} a process that is {status}")
    if stuck.diagnose(kind, raw, utcnow(), limits.usage() if usage is None else usage) is None:
        raise ProcessHealthy(
            f"{kind.name} {raw['_id']} is {status} and healthy (within its thresholds); "
            f"{action} is for stuck or failed processes. Use force to {action} it anyway, or cancel it.")


def reset(collection: str, id, *, by: str, force: bool = False) -> dict:
    """Put a stuck or failed process back to READY."""
    kind, cls, raw = load(collection, id)
    if not force:
        require_stuck(kind, raw, "reset")
    attempt = Attempt.of(collection, raw)
    after = machine.transition(attempt, "reset", Change(
        fields={"current_process_step": None, "deadline": None}, note=f"reset by {by}", by=by,
        host=socket.gethostname()), fetch=True)
    if after is None:
        raise TransitionConflict(f"{collection}/{id} changed while being reset; look again")
    execution.attempt_over(kind, attempt)
    return after


def redispatch(collection: str, id, *, by: str, force: bool = False) -> dict:
    """Send a stuck or failed process again, as a new attempt."""
    kind, cls, raw = load(collection, id)
    if kind is None:
        raise ProcError(f"{collection}/{id} has no process to send again (current_process is empty)")
    if not force:
        require_stuck(kind, raw, "redispatch")
    after = dispatch.redispatch(kind, raw, note=f"redispatched by {by}", by=by)
    if after is None:
        raise TransitionConflict(f"{collection}/{id} changed while being redispatched; look again")
    return after


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: the process after it, and the forced stops it planned (``terminate``)."""

    after: dict
    stops: list = field(default_factory=list)
    """One ``proc.terminate.Plan`` per attempt it ended (the process and its subtree), if asked."""


def cancel(collection: str, id, *, by: str, terminate: bool = False) -> dict:
    """End a pending or running process as FAILURE "cancelled" (``cancel_process``); returns
    the process after it."""
    return cancel_process(collection, id, by=by, terminate=terminate).after


def cancel_process(collection: str, id, *, by: str, terminate: bool = False) -> Cancelled:
    """End a pending or running process as FAILURE "cancelled", revoking its Celery task, and
    its active children, and theirs (``cancel_subtree``). Running code learns of it with its
    next heartbeat (``proc.heartbeat``); with ``terminate``, code that has not stopped after
    ``PROC_CANCEL_GRACE`` seconds is terminated where its pool can (``proc.terminate``)."""
    kind, cls, raw = load(collection, id)
    if raw.get("process_status") not in machine.RULES["fail"].sources:
        raise IllegalTransition(f"cannot cancel a process that is {raw.get('process_status')}")
    attempt = Attempt.of(collection, raw)
    after = machine.transition(attempt, "fail", Change(
        errors=[f"cancelled by {by}"], note=f"cancelled by {by}", by=by, host=socket.gethostname()),
        fetch=True)
    if after is None:
        raise TransitionConflict(f"{collection}/{id} changed while being cancelled; look again")
    ended = [(attempt, raw)] + cancel_subtree(attempt, by=by)
    task_ids = [r["celery_task_id"] for _, r in ended if r.get("celery_task_id")]
    if task_ids:
        try:
            messaging.get_app().control.revoke(task_ids)
        except Exception as exc:  # the attempt check already makes the messages harmless
            log.warning("could not revoke %d task(s): %s", len(task_ids), exc)
    execution.attempt_over(kind, attempt)
    stops = [stopping.plan(a, r) for a, r in ended] if terminate else []
    return Cancelled(after, stops)


def cancel_subtree(root: Attempt, *, by: str) -> list[tuple[Attempt, dict]]:
    """Cancel the active descendants of the cancelled attempt ``root``: level by level, one
    read and one conditional write per collection (and attempt number) that holds children
    of the level. The parents' joins do not run. Returns each cancelled attempt with its
    document as it was read before the cancel."""
    return cancel_subtrees([root], by=by)


def cancel_subtrees(roots, *, by: str) -> list[tuple[Attempt, dict]]:
    """``cancel_subtree`` of many cancelled attempts at once (bulk cancel): the same level by
    level walk, each level's reads and writes shared by every root."""
    processing = sorted(s.value for s in machine.RULES["fail"].sources)
    note = f"cancelled by {by}"
    change = Change(errors=[f"{note} (with its parent)"], note=note, by=by, host=socket.gethostname())
    keys, ended = [root.key for root in roots], []
    while keys:
        level: list[str] = []
        for cls in {c._get_collection_name(): c for c in registry.proc_classes()}.values():
            coll = cls._get_collection()
            found = list(coll.find({"parent_key": {"$in": keys}, "process_status": {"$in": processing}},
                                   {"attempt": 1, "celery_task_id": 1, "current_process": 1, "parent": 1,
                                    "process_status": 1, "worker_pool": 1, "worker_hostname": 1}))
            by_number: dict[int, list] = {}
            for child in found:
                by_number.setdefault(child.get("attempt", 0), []).append(child)
            for number, group in by_number.items():
                if not machine.transition_many(coll.name, [c["_id"] for c in group], number, "fail", change):
                    continue
                for child in group:  # one that finished meanwhile: slot and check are gone already
                    child_attempt = Attempt.of(coll.name, child)
                    execution.attempt_over(registry.kind_of(cls, child), child_attempt, parent=False)
                    level.append(child_attempt.key)
                    ended.append((child_attempt, child))
        keys = level
    return ended
