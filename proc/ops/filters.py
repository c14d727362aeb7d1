"""One filter of processes, shared by the lists (``GET /api/procs``, the page), the bulk
actions (``POST /api/procs/bulk``, ``procctl admin ... --status``) and their audit record.

A filter has these keys, every one optional (an empty filter matches every process):

=============  ===========================================================================
``status``     statuses, a list or one comma-separated string (``FAILURE,PENDING``)
``kind``       ``collection`` or ``collection.method``
``older_than`` a duration (``proc.timeutil``) since the last status change: changed before
``newer_than`` a duration since the last status change: changed within it
``q``          text in ``current_process_step`` or in ``errors``: a case-insensitive plain
               substring, sent as a regex built by ``re.escape`` (never the user's regex)
``ids``        ``collection/id`` strings
=============  ===========================================================================

Invariants: parsing either returns a whole ``Filter`` or raises ``FilterError`` naming the
key at fault and how to write it, before anything is read; ``targets()`` gives one query per
collection, so finding the matches costs one query per collection, never one per process.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from mongoengine.errors import ValidationError

from .. import registry
from ..exceptions import ProcError, UnknownKind
from ..status import VALUES
from ..timeutil import InvalidDuration, format_duration, parse_duration, utcnow

KEYS = ("status", "kind", "older_than", "newer_than", "q", "ids")
MAX_Q = 200
MAX_IDS = 1000


def parse_id(cls, text: str):
    """The primary key of ``cls`` written as ``text`` (an ObjectId's 24 hex digits by default).

    Raises ``ValueError`` saying what an id of that collection looks like.
    """
    field = cls._fields[cls._meta["id_field"]]
    try:
        text.encode("utf-8")  # a lone surrogate (undecodable command-line bytes) reaches no server
        value = field.to_python(text)
        field.validate(value)
    except (ValidationError, ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        raise ValueError(f"{text!r} is not an id of collection {cls._get_collection_name()!r} "
                         f"({type(field).__name__}; an ObjectId is 24 hexadecimal digits)") from None
    return value


class FilterError(ProcError, ValueError):
    """A filter key is unknown or its value is malformed; ``field`` names the key."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Filter:
    statuses: tuple[str, ...] = ()
    kind: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    q: str | None = None
    ids: tuple[tuple[str, Any], ...] = ()
    """(collection, primary key) pairs."""

    @classmethod
    def parse(cls, data: Mapping | None) -> "Filter":
        """A filter from a JSON object (or query arguments gathered in a dict)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise FilterError("filter", f"filter must be a JSON object with keys among {', '.join(KEYS)}")
        unknown = sorted(str(k) for k in data if k not in KEYS)
        if unknown:
            raise FilterError(unknown[0], f"unknown filter key {unknown[0]!r}; keys: {', '.join(KEYS)}")
        for key in KEYS:
            _check_text(key, data.get(key))
        return cls(statuses=_statuses(data.get("status")), kind=_kind(data.get("kind")),
                   older_than=_duration(data.get("older_than"), "older_than"),
                   newer_than=_duration(data.get("newer_than"), "newer_than"),
                   q=_text(data.get("q")), ids=_ids(data.get("ids")))

    def as_dict(self) -> dict:
        """The filter as JSON, keys left out when unset (``Filter.parse`` reads it back)."""
        out: dict = {}
        if self.statuses:
            out["status"] = list(self.statuses)
        if self.kind:
            out["kind"] = self.kind
        for name in ("older_than", "newer_than"):
            if getattr(self, name) is not None:
                out[name] = format_duration(getattr(self, name))
        if self.q:
            out["q"] = self.q
        if self.ids:
            out["ids"] = [f"{c}/{pk}" for c, pk in self.ids]
        return out

    def classes(self) -> list[type]:
        """The Proc classes whose collections can hold a match."""
        if self.kind:
            classes = [registry.class_for(self.kind.partition(".")[0])]
        else:
            classes = list(registry.proc_classes())
        if self.ids:
            wanted = {c for c, _ in self.ids}
            classes = [c for c in classes if c._get_collection_name() in wanted]
        return classes

    def query(self, cls: type, now: datetime | None = None) -> dict:
        """The MongoDB filter of this filter on the collection of ``cls``."""
        query: dict = {}
        if len(self.statuses) == 1:  # an equality: SecantusDB scans $in combined with a range
            query["process_status"] = self.statuses[0]
        elif self.statuses:
            query["process_status"] = {"$in": list(self.statuses)}
        method = self.kind.partition(".")[2] if self.kind else ""
        if method:
            query["current_process"] = method
        if self.older_than is not None or self.newer_than is not None:
            now = now or utcnow()
            when: dict = {}
            if self.older_than is not None:
                when["$lt"] = now - timedelta(seconds=self.older_than)
            if self.newer_than is not None:
                when["$gte"] = now - timedelta(seconds=self.newer_than)
            query["last_status_change"] = when
        if self.ids:
            collection = cls._get_collection_name()
            query["_id"] = {"$in": [pk for c, pk in self.ids if c == collection]}
        if self.q:
            text = {"$regex": re.escape(self.q), "$options": "i"}
            query["$or"] = [{"current_process_step": text}, {"errors": text}]
        return query

    def targets(self, now: datetime | None = None) -> list[tuple[type, dict]]:
        """(class, query) for every collection that can hold a match."""
        now = now or utcnow()
        return [(cls, self.query(cls, now)) for cls in self.classes()]

    def indexed_targets(self, now: datetime | None = None) -> list[tuple[type, dict]]:
        """``targets`` with one query per status when several are asked, and without ``q``:
        each names at most ONE status (an equality, which an index serves on every server;
        SecantusDB scans ``$in`` combined with a range or a sort). ``matches`` applies ``q``."""
        now = now or utcnow()
        each = [replace(self, statuses=(s,), q=None) for s in self.statuses] or [replace(self, q=None)]
        return [(cls, one.query(cls, now)) for one in each for cls in one.classes()]

    def matches(self, raw: dict) -> bool:
        """Whether a document read by an ``indexed_targets`` query matches ``q`` too (the same
        case-insensitive substring of the step or of an error that ``query`` asks the server)."""
        if not self.q:
            return True
        needle = self.q.casefold()
        texts = [raw.get("current_process_step"), *(raw.get("errors") or [])]
        return any(isinstance(t, str) and needle in t.casefold() for t in texts)


def _check_text(field: str, value) -> None:
    """Every string of a filter value must be sendable to a server: valid Unicode (no lone
    surrogate, as a JSON ``"\\ud800"`` or undecodable command-line bytes give) and no NUL."""
    for item in (value if isinstance(value, (list, tuple)) else [value]):
        if not isinstance(item, str):
            continue
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise FilterError(field, f"{field} is not valid text (it holds a lone surrogate or bytes that "
                                     "are not UTF-8); write it in UTF-8") from None
        if "\x00" in item:  # a server refuses a regex or a string holding one
            raise FilterError(field, f"{field} cannot contain a NUL character")


def _strings(value, field: str) -> list[str]:
    """A list of strings, or one string, each split at commas; empty parts dropped."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise FilterError(field, f"{field} must be a string or a list of strings")
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _statuses(value) -> tuple[str, ...]:
    found = []
    for status in _strings(value, "status"):
        if status not in VALUES:
            raise FilterError("status", f"unknown status {status!r}; valid: {', '.join(VALUES)}")
        if status not in found:
            found.append(status)
    return tuple(found)


def _kind(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise FilterError("kind", "kind must be a string: collection or collection.method")
    try:
        if "." in value:
            return registry.kind_named(value).name
        registry.class_for(value)
        return value
    except UnknownKind as exc:
        known = ", ".join(k.name for k in registry.kinds())
        raise FilterError("kind", f"{exc} (known kinds: {known})") from None


def _duration(value, field: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return parse_duration(value, field)
    except InvalidDuration as exc:
        raise FilterError(field, str(exc)) from None


def _text(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise FilterError("q", "q must be a string (plain text, not a regex)")
    if len(value) > MAX_Q:
        raise FilterError("q", f"q is at most {MAX_Q} characters, got {len(value)}")
    return value


def _ids(value) -> tuple[tuple[str, Any], ...]:
    items = _strings(value, "ids")
    if len(items) > MAX_IDS:
        raise FilterError("ids", f"ids holds at most {MAX_IDS} entries, got {len(items)}; use other keys")
    out = []
    for item in items:
        collection, _, id_text = item.partition("/")
        try:
            cls = registry.class_for(collection)
            out.append((collection, parse_id(cls, id_text)))
        except (UnknownKind, ValueError) as exc:
            raise FilterError("ids", f"ids: {item!r} is not collection/id ({exc})") from None
    return tuple(dict.fromkeys(out))


def from_options(*, status: Iterable[str] = (), kind=None, older_than=None, newer_than=None,
                 q=None, ids: Iterable[str] = ()) -> Filter:
    """A filter from command-line options or query arguments (unset ones are None or empty)."""
    data = {"status": list(status) or None, "kind": kind, "older_than": older_than,
            "newer_than": newer_than, "q": q, "ids": list(ids) or None}
    return Filter.parse({k: v for k, v in data.items() if v is not None})
