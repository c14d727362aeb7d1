"""Reading stored documents defensively: the one check every view makes before it uses a raw
document (the status page and ``/api/status``, ``/metrics``, the lists, the detail page and
JSON, the monitor's needs-attention queries).

A document written by another tool, an old version or a hand edit may hold a field of the
wrong type (``current_process_step: 5``, a date stored as text, ``attempt: "3"``, ``errors:
"boom"``). ``problem(raw)`` names the first such field ("current_process_step is an int");
a view skips that document, counts it in an ``Unreadable`` and shows the count and the
documents ("1 document could not be read: upload 65f...: current_process_step is an int"):
one bad document never takes a view down. Only the fields proc itself reads are checked, each
against the type proc writes; a missing field or null is always fine.

The counts of ``/api/status`` come from one aggregation per collection; ``AGGREGATION_OK``
is the same check, for the fields it groups by, as an aggregation expression, so the server
counts the documents it cannot group instead of failing the whole aggregation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

SHOWN = 20
"""Documents named in an ``Unreadable`` (the count covers all of them)."""

_TEXT, _INT, _DATE, _LIST, _DICT = (str,), (int,), (datetime,), (list,), (dict,)
#: field -> the Python types proc writes to it (None is always allowed).
TYPES: dict[str, tuple] = {
    "process_status": _TEXT, "current_process": _TEXT, "current_process_step": _TEXT,
    "worker_hostname": _TEXT, "worker_pool": _TEXT, "celery_task_id": _TEXT, "parent_key": _TEXT,
    "attempt": _INT, "worker_pid": _INT, "worker_pid_start": _INT,
    "create_time": _DATE, "last_status_change": _DATE, "complete_time": _DATE, "heartbeat": _DATE,
    "deadline": _DATE,
    "errors": _LIST, "warnings": _LIST, "history": _LIST, "child_collections": _LIST,
    "process_args": _DICT, "phases": _DICT, "parent": _DICT,
}
#: list field -> the type of each of its items.
ITEMS: dict[str, tuple] = {"errors": _TEXT, "warnings": _TEXT, "child_collections": _TEXT, "history": _DICT}

_NAMES = {bool: "a boolean", int: "an int", float: "a float", str: "a string", list: "a list",
          dict: "an object", datetime: "a date", bytes: "binary data"}


def kind_of(value) -> str:
    """``value``'s type in words: "an int", "a string", "a date", ..."""
    for type_, name in _NAMES.items():
        if isinstance(value, type_):
            return name
    return f"a {type(value).__name__}"


def _fits(value, types: tuple) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def problem(raw) -> str | None:
    """What makes ``raw`` unreadable for proc's views ("attempt is a string"), or None."""
    if not isinstance(raw, dict):
        return f"the document is {kind_of(raw)}"
    for name, types in TYPES.items():
        value = raw.get(name)
        if value is None:
            continue
        if not _fits(value, types):
            return f"{name} is {kind_of(value)}"
        if name == "attempt" and value < 0:
            return f"attempt is negative ({value})"
        item_types = ITEMS.get(name)
        if item_types is not None:
            for item in value:  # no index: a view may read a slice of the list
                if not _fits(item, item_types):
                    return f"{name} holds {kind_of(item)}"
    return None


def sanitized(raw: dict) -> dict:
    """A copy of ``raw`` with every field of the wrong type set to None and every list item of
    the wrong type left out: what a view of ONE unreadable document (its detail) summarises,
    while it shows the stored fields as they are."""
    out = dict(raw)
    for name, types in TYPES.items():
        value = out.get(name)
        if value is None:
            continue
        if not _fits(value, types) or (name == "attempt" and value < 0):
            out[name] = None
        elif name in ITEMS:
            out[name] = [item for item in value if _fits(item, ITEMS[name])]
    return out


@dataclass(frozen=True)
class Bad:
    """One document a view skipped."""

    collection: str
    id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.collection} {self.id}: {self.problem}"

    def as_dict(self) -> dict:
        return {"collection": self.collection, "id": self.id, "problem": self.problem}


@dataclass
class Unreadable:
    """The documents one view could not read: how many, and the first ``SHOWN`` of them.

    ``grouped`` is set once the status aggregation has counted the documents it could not
    group (``AGGREGATION_OK``): a later ``check`` of one of those does not count it again."""

    count: int = 0
    shown: list[Bad] = field(default_factory=list)
    grouped: bool = False
    _seen: set = field(default_factory=set, repr=False)

    def add(self, collection: str, id, problem: str, n: int = 1) -> None:
        """Count ``n`` unreadable documents of ``collection``, naming ``id`` (one of them); a
        document read twice (by two queries of one view) is counted once."""
        if (collection, str(id)) in self._seen:
            return
        self._seen.add((collection, str(id)))
        self.count += n
        if len(self.shown) < SHOWN:
            self.shown.append(Bad(collection, str(id), problem))

    def check(self, collection: str, raw) -> bool:
        """Whether ``raw`` is readable; if not, it is counted here."""
        found = problem(raw)
        if found is None:
            return True
        if not (self.grouped and not groupable(raw)):
            self.add(collection, raw.get("_id") if isinstance(raw, dict) else None, found)
        return False

    def readable(self, collection: str, docs):
        """The readable documents of ``docs`` (an iterable of raw documents), counting the rest."""
        return (raw for raw in docs if self.check(collection, raw))

    @property
    def message(self) -> str | None:
        """"1 document could not be read: upload 65f...: current_process_step is an int", or None."""
        if not self.count:
            return None
        more = self.count - len(self.shown)
        named = "; ".join(map(str, self.shown)) + (f"; and {more} more" if more > 0 else "")
        return f"{self.count} document{'' if self.count == 1 else 's'} could not be read: {named}"

    def as_dict(self) -> dict:
        return {"count": self.count, "message": self.message, "documents": [b.as_dict() for b in self.shown]}


def _type_is(name: str, types: list[str]) -> dict:
    return {"$in": [{"$type": f"${name}"}, types]}


def groupable(raw: dict) -> bool:
    """``AGGREGATION_OK`` of one document, in Python."""
    return all(raw.get(name) is None or _fits(raw.get(name), types) for name, types in
               (("process_status", _TEXT), ("current_process", _TEXT), ("last_status_change", _DATE)))


AGGREGATION_OK = {"$and": [_type_is("process_status", ["string", "null", "missing"]),
                           _type_is("current_process", ["string", "null", "missing"]),
                           _type_is("last_status_change", ["date", "null", "missing"])]}
"""An aggregation expression: true when the fields the status counts group by have proc's
types (``problem`` says which one is wrong, once the document is read)."""
