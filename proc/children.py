"""Child processes and the join of their parent.

A running process starts children with ``self.spawn(child.some_process, ...)``. Each
child records its parent (collection, id, attempt) in ``parent``/``parent_key``. When
the parent's method returns it goes WAITING_FOR_RESULT (freeing its concurrency slot).
Whenever a child finishes, and right after the parent starts waiting, ``try_join``
counts the parent's unfinished children; at zero it flips the parent WAITING_FOR_RESULT
-> RUNNING with one conditional write, so exactly one caller wins, and the winner runs
the parent's join method inline.

Rule for failed children: the join runs whatever the children's outcome (it can look at
``children_of``). Then, unless the join itself raised, the parent ends FAILURE if any
child of this attempt ended FAILURE ("2 of 9 child processes failed: ..."), or SUCCESS
with one warning per failed child when the kind sets ``tolerate_child_failures=True``.
"""
from __future__ import annotations

import logging
import socket

from . import machine, registry
from .exceptions import BrokerUnavailable
from .status import PROCESSING_VALUES, ProcessStatus as S

log = logging.getLogger(__name__)

_SPAWNED = "_proc_spawned"


def begin(doc) -> None:
    doc.__dict__[_SPAWNED] = set()


def end(doc) -> set:
    return doc.__dict__.pop(_SPAWNED, set())


def spawn(parent, bound, args, kwargs):
    from . import dispatch

    spawned = parent.__dict__.get(_SPAWNED)
    if spawned is None:
        raise RuntimeError("spawn() works only inside a running process method (or its join)")
    child = bound.doc
    ref = {"collection": parent._get_collection_name(), "id": parent.pk, "attempt": parent.attempt}
    spawned.add(child._get_collection_name())
    try:
        dispatch.start(child, bound.method.name, args, kwargs, parent=ref)
    except BrokerUnavailable as exc:
        # The child stays PENDING, linked to this parent; the monitor sends it later and
        # the parent waits for it like for any other child.
        log.warning("child %s %s stays PENDING: %s", type(child).__name__, child.pk, exc)
    return child


def count_children(collection: str, parent: dict, statuses) -> int:
    """How many children of this attempt of ``parent`` (a raw document of ``collection``
    with ``_id``, ``attempt`` and ``child_collections``) are in one of ``statuses``."""
    from .db import database

    key = machine.attempt_key(collection, parent["_id"], parent["attempt"])
    query = {"parent_key": key, "process_status": {"$in": [S(s).value for s in statuses]}}
    return sum(database()[name].count_documents(query) for name in parent.get("child_collections") or [])


def children_of(parent, statuses=None, limit: int | None = None) -> list:
    """The child documents of ``parent``'s current attempt (optionally only in ``statuses``,
    at most ``limit`` of them)."""
    key = machine.attempt_key(parent._get_collection_name(), parent.pk, parent.attempt)
    query = {"parent_key": key}
    if statuses:
        query["process_status"] = {"$in": [S(s).value for s in statuses]}
    found = []
    for name in parent.child_collections or []:
        wanted = None if limit is None else limit - len(found)
        if wanted == 0:
            break
        found.extend(registry.class_for(name).objects(__raw__=query).limit(wanted or 0))
    return found


def try_join(collection: str, id, attempt: int) -> str | None:
    """Run the parent's join if its last child has finished and nobody else won the flip."""
    from .execution import execute

    cls = registry.class_for(collection)
    coll = cls._get_collection()
    parent = coll.find_one({"_id": id, "attempt": attempt,
                            "process_status": S.WAITING_FOR_RESULT.value},
                           {"child_collections": 1, "attempt": 1})
    if parent is None:
        return None
    if count_children(collection, parent, PROCESSING_VALUES):
        return None
    host = socket.gethostname()
    raw = machine.transition(coll, id, "join", attempt=attempt, note="all child processes finished",
                             host=host, fetch=True)
    if raw is None:
        return None  # another finishing child (or the monitor) won the join
    doc = cls._from_son(raw)
    kind = registry.kind(cls, doc.current_process)
    join_name = kind.process.join
    call = getattr(doc, join_name) if join_name else (lambda: None)
    return execute(kind, doc, call, host=host, joining=True)


def outcome(kind, doc) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a parent whose children have all finished."""
    collection = doc._get_collection_name()
    raw = {"_id": doc.pk, "attempt": doc.attempt, "child_collections": doc.child_collections}
    failures = count_children(collection, raw, [S.FAILURE])
    if not failures:
        return [], []
    total = count_children(collection, raw, [S.SUCCESS, S.FAILURE])
    named = children_of(doc, [S.FAILURE], limit=5)
    details = [f"{type(c).__name__} {c.pk}: {(c.errors or ['failed'])[-1]}" for c in named]
    more = f" (and {failures - len(named)} more)" if failures > len(named) else ""
    summary = f"{failures} of {total} child processes failed: " + "; ".join(details) + more
    if kind.settings.tolerate_child_failures:
        return [], [summary]
    return [summary], []


def notify_parent(parent: dict | None) -> None:
    """After a child finished: let its parent (``{collection, id, attempt}``) join if it was the last one."""
    if not parent:
        return
    try:
        try_join(parent["collection"], parent["id"], parent["attempt"])
    except Exception:  # the monitor runs a lost join; the child's own result stands
        log.exception("join of parent %s/%s failed to start", parent.get("collection"), parent.get("id"))
