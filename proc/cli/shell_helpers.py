"""The helpers of ``procctl shell``: the tasks the docs describe, one short call each.

    stuck()                     what needs attention, and why (the page's "Needs attention")
    recent_failures(kind)       the latest FAILUREs of a kind ("upload.process_upload"), a
                                collection ("upload") or a model (Upload)
    describe(doc)               status, step, worker, errors and history, printed
    reset(doc) / redispatch(doc) / cancel(doc)

``doc`` is a document, ``"collection/id"``, or a row of ``stuck()`` / ``recent_failures()``.

Invariants: the actions go through the public operator functions of ``proc.ops.admin``
(``reset``, ``redispatch``, ``cancel``), called in this module only, and each is recorded in
the process's history as done ``by="shell:<user>"`` (the login name, ``getpass``: ``LOGNAME``
or ``USER``). The lists print as text (their ``repr``), and each item is the document itself.
A refusal or a mistake (a healthy process, an unknown id, ``None``) prints one line saying so.
"""
from __future__ import annotations

from .. import registry
from ..exceptions import ProcError
from ..monitor import stuck as attention
from ..ops import admin
from ..ops.filters import parse_id
from ..status import ProcessStatus as S
from ..timeutil import age_seconds, format_age, utcnow
from . import admin as cli_admin


def actor() -> str:
    """Who the shell's actions are recorded as: ``shell:<login name>``."""
    return cli_admin.actor("shell")


class Found(list):
    """Documents, shown one line each (``lines``) where Python shows a value."""

    def __init__(self, docs, lines, empty: str):
        super().__init__(docs)
        self.lines, self.empty = list(lines), empty

    def __repr__(self) -> str:
        if not self:
            return self.empty
        return "\n".join(f"[{i}] {line}" for i, line in enumerate(self.lines))


def _document(cls, raw: dict):
    return cls._from_son(raw)


def _fresh(cls, raw: dict):
    """The whole document of a row whose read was projected (it may have gone since: None)."""
    return cls.objects(pk=raw["_id"]).first()


def stuck(limit: int = 100) -> Found:
    """Every process that needs attention now, with its reason (``proc.monitor.stuck.find``,
    the verdict the page and the monitor use); at most ``limit``."""
    found = attention.find(utcnow(), limit=limit)[:limit]
    return Found([_fresh(item.kind.cls, item.raw) for item in found],
                 [f"{item.collection}/{item.id} {item.status} (attempt {item.attempt}) for "
                  f"{format_age(item.age)}: {item.reason}: {item.detail}" for item in found],
                 "nothing needs attention")


def _kind_filter(kind) -> tuple[type, dict, str]:
    if isinstance(kind, type):
        return kind, {}, kind._get_collection_name()
    name = str(kind)
    if "." in name:
        found = registry.kind_named(name)
        return found.cls, {"current_process": found.method}, found.name
    return registry.class_for(name), {}, name


def recent_failures(kind, limit: int = 10) -> Found:
    """The latest ``limit`` processes of ``kind`` that ended FAILURE, newest first, each with
    its last error. ``kind``: ``"collection.method"``, a collection name or a model class."""
    cls, query, label = _kind_filter(kind)
    raws = list(cls._get_collection().find({"process_status": S.FAILURE.value, **query})
                .sort("last_status_change", -1).limit(limit))
    now = utcnow()
    return Found([_document(cls, raw) for raw in raws],
                 [f"{cls._get_collection_name()}/{raw['_id']} {raw.get('current_process')} attempt "
                  f"{raw.get('attempt')}, {format_age(age_seconds(raw.get('last_status_change'), now))} ago: "
                  f"{(raw.get('errors') or ['(no error recorded)'])[-1]}" for raw in raws],
                 f"no FAILURE of {label}")


def _target(doc) -> tuple[str, object]:
    """(collection, primary key) of a document or ``"collection/id"``."""
    if doc is None:
        raise ProcError("no document (None; a query that found nothing?): give a document, "
                        "\"collection/id\" or a row of stuck()")
    if isinstance(doc, str):
        collection, _, id_text = doc.partition("/")
        return collection, parse_id(registry.class_for(collection), id_text)
    return doc._get_collection_name(), doc.pk


def _refusing(what: str):
    """Run a helper: an operator's mistake or a refusal (an unknown id, a healthy process, ...)
    is printed as one line naming it, not a traceback."""
    def wrap(helper):
        def run(doc, *args, **kwargs):
            try:
                return helper(doc, *args, **kwargs)
            except (ProcError, LookupError, ValueError) as exc:
                print(f"cannot {what} {doc if isinstance(doc, str) else _label(doc)}: {exc}")
        run.__name__, run.__doc__ = helper.__name__, helper.__doc__
        return run
    return wrap


def _label(doc) -> str:
    return "None" if doc is None else f"{doc._get_collection_name()}/{doc.pk}"


@_refusing("describe")
def describe(doc, transitions: int = 10) -> None:
    """Print ``doc``'s status, step, worker, errors and last ``transitions`` history entries."""
    collection, pk = _target(doc)
    fresh = registry.class_for(collection).objects(pk=pk).first()
    if fresh is None:
        raise ProcError(f"no document {collection}/{pk}")
    print(fresh.describe(transitions))


def _done(collection: str, pk, done: admin.Done) -> None:
    after = done.after
    print(f"{collection}/{pk}: {after['process_status']} (attempt {after['attempt']}), by {actor()}")


@_refusing("reset")
def reset(doc, force: bool = False) -> None:
    """Put a stuck or failed process back to READY (``force``: even a healthy running one)."""
    collection, pk = _target(doc)
    _done(collection, pk, admin.reset(collection, pk, by=actor(), force=force))


@_refusing("redispatch")
def redispatch(doc, force: bool = False) -> None:
    """Send a stuck or failed process again, as a new attempt (``force``: even a healthy one)."""
    collection, pk = _target(doc)
    _done(collection, pk, admin.redispatch(collection, pk, by=actor(), force=force))


@_refusing("cancel")
def cancel(doc, terminate: bool = False) -> None:
    """End a pending or running process as FAILURE "cancelled" (``terminate``: stop its code
    after ``PROC_CANCEL_GRACE`` seconds if it does not stop on its own)."""
    collection, pk = _target(doc)
    _done(collection, pk, admin.cancel(collection, pk, by=actor(), terminate=terminate))


HELPERS = {f.__name__: f for f in (stuck, recent_failures, describe, reset, redispatch, cancel)}
