"""Child processes: which children an attempt started, and queries about them.

A running process starts children with ``self.spawn(child.some_process, ...)``
(``proc.run.dispatch.spawn``). Each child records its parent's attempt in ``parent`` /
``parent_key`` (``Attempt.key``). This module only counts and reads children; the join of
their parent (``proc.run.execution.try_join``) uses it.

Rule for failed children: the join runs whatever the children's outcome (it can look at
``children_of``). Then, unless the join itself raised, the parent ends FAILURE if any
child of this attempt ended FAILURE ("2 of 9 child processes failed: ..."), or SUCCESS
with one warning per failed child when the kind sets ``tolerate_child_failures=True``.
"""
from __future__ import annotations

from .. import registry
from ..store import db
from ..machine import Attempt
from ..status import ProcessStatus as S

_SPAWNED = "_proc_spawned"


def begin(doc) -> None:
    """The method (or join) of ``doc`` starts: from now on it may spawn children."""
    doc.__dict__[_SPAWNED] = set()


def note_spawned(parent, collection: str) -> None:
    """``parent``'s running method started a child in ``collection``."""
    spawned = parent.__dict__.get(_SPAWNED)
    if spawned is None:
        raise RuntimeError("spawn() works only inside a running process method (or its join)")
    spawned.add(collection)


def end(doc) -> set:
    """The method ended: the collections it started children in."""
    return doc.__dict__.pop(_SPAWNED, set())


def count_children(parent: Attempt, child_collections, statuses) -> int:
    """How many children of the attempt ``parent`` (in ``child_collections``) are in one of
    ``statuses``: one count per child collection, on the (parent_key, process_status) index."""
    query = {"parent_key": parent.key, "process_status": {"$in": [S(s).value for s in statuses]}}
    database = db.database()
    return sum(database[name].count_documents(query) for name in child_collections or [])


def children_of(parent, statuses=None, limit: int | None = None) -> list:
    """The child documents of ``parent``'s current attempt (optionally only in ``statuses``,
    at most ``limit`` of them)."""
    query = {"parent_key": Attempt.of_doc(parent).key}
    if statuses:
        query["process_status"] = {"$in": [S(s).value for s in statuses]}
    found = []
    for name in parent.child_collections or []:
        wanted = None if limit is None else limit - len(found)
        if wanted == 0:
            break
        found.extend(registry.class_for(name).objects(__raw__=query).limit(wanted or 0))
    return found


def outcome(kind, doc) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a parent whose children have all finished."""
    attempt = Attempt.of_doc(doc)
    failures = count_children(attempt, doc.child_collections, [S.FAILURE])
    if not failures:
        return [], []
    total = count_children(attempt, doc.child_collections, [S.SUCCESS, S.FAILURE])
    named = children_of(doc, [S.FAILURE], limit=5)
    details = [f"{type(c).__name__} {c.pk}: {(c.errors or ['failed'])[-1]}" for c in named]
    more = f" (and {failures - len(named)} more)" if failures > len(named) else ""
    summary = f"{failures} of {total} child processes failed: " + "; ".join(details) + more
    if kind.settings.tolerate_child_failures:
        return [], [summary]
    return [summary], []
