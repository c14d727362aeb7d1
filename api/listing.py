"""Lists of processes: one filter (``proc.ops.filters``), a sort, cursor paging across collections.

Order: the sort field descending (``last_change``: ``last_status_change``; ``attempt``), then
the collection name, then ``_id``, all descending. A cursor is that triple of the last item
shown, with the sort it belongs to; the next page is what comes after it in this order, so
paging works with any filter and either sort, and a page never repeats or skips a process
that did not change meanwhile. Each page costs one query per collection and status asked
(``limit + 1`` documents at most from each, read from the newest hour, day, week, month
before the whole history: ``WINDOWS``; a text search ``q`` reads at most ``SCAN_CAP`` per
query and says when it stopped early).
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime, timedelta

from bson import ObjectId, json_util

from proc import registry
from proc.store import reader
from proc.ops.filters import Filter, FilterError

from .errors import bad_parameter, whole_number
from .queries import SUMMARY_FIELDS, summary
from proc.timeutil import utcnow

MAX_LIMIT = 500
#: sort name -> stored field.
SORTS = {"last_change": "last_status_change", "attempt": "attempt"}
DEFAULT_SORT = "last_change"
_MISSING = {"last_status_change": datetime.min, "attempt": 0}


def filter_from_args(args) -> Filter:
    """The filter given by query arguments (``status`` and ``ids`` may repeat); 400 naming the
    argument at fault."""
    data: dict = {}
    for name in ("status", "ids"):
        if args.getlist(name):
            data[name] = args.getlist(name)
    for name in ("kind", "older_than", "newer_than", "q"):
        if args.get(name):
            data[name] = args.get(name)
    try:
        return Filter.parse(data)
    except FilterError as exc:
        raise bad_parameter(exc.field, str(exc)) from None


def parse_sort(value: str | None) -> str:
    if value in (None, ""):
        return DEFAULT_SORT
    if value not in SORTS:
        raise bad_parameter("sort", f"unknown sort {value!r}; valid: {', '.join(SORTS)}")
    return value


def parse_limit(value: str | None, default: int) -> int:
    return whole_number("limit", value, default=default, high=MAX_LIMIT)


def _value(raw: dict, field: str):
    value = raw.get(field)
    return _MISSING[field] if value is None else value


def encode_cursor(raw: dict, collection: str, sort: str) -> str:
    value = _value(raw, SORTS[sort])
    value = value.isoformat() if isinstance(value, datetime) else value
    data = json.dumps([sort, value, collection, json_util.dumps(raw["_id"])])
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


MAX_CURSOR = 512
"""The longest cursor given out is far shorter (a sort name, a date or an attempt, a
collection name, an id): anything longer is not one, and is refused before it is decoded."""
MAX_ATTEMPT = 2 ** 63 - 1
#: What an ``_id`` in a cursor may be: what ``encode_cursor`` writes for the ids proc stores.
_CURSOR_IDS = (ObjectId, str, int, float, datetime, uuid.UUID)


def decode_cursor(value: str | None, sort: str):
    """(sort value, collection, id) of a cursor given out for ``sort``; 400 otherwise: a
    cursor too long, nested, not valid UTF-8, with an attempt that is not a whole number in
    MongoDB's 64-bit range (``Infinity``, ``10**30``, ``1.5``), or with an id of another type,
    never reaches the database."""
    if value in (None, ""):
        return None
    try:
        if len(value) > MAX_CURSOR:
            raise ValueError("too long")
        padded = value + "=" * (-len(value) % 4)
        items = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if len(items) == 3:  # a cursor of the release before sorts: last_change
            items = [DEFAULT_SORT, *items]
        given, at, collection, id_json = items
        if given not in SORTS or not isinstance(collection, str) or not isinstance(id_json, str):
            raise ValueError(given)
        if SORTS[given] == "last_status_change":
            at = datetime.fromisoformat(at)
        else:
            if type(at) is float and at.is_integer():  # an attempt stored as a double
                at = int(at)
            if type(at) is not int or not 0 <= at <= MAX_ATTEMPT:
                raise ValueError(at)
        at_id = json_util.loads(id_json)
        if not isinstance(at_id, _CURSOR_IDS) or isinstance(at_id, bool):
            raise ValueError(id_json)
        for text in (collection, at_id):
            if isinstance(text, str):
                text.encode("utf-8")  # a lone surrogate cannot be sent to a server
        cursor = at, collection, at_id
    except (ValueError, TypeError, binascii.Error, UnicodeError, AttributeError, RecursionError):
        raise bad_parameter("cursor", "cursor is not one this API gave out; drop it to start "
                                      "from the first page") from None
    if given != sort:
        raise bad_parameter("cursor", f"this cursor pages sort={given}, not sort={sort}; drop it "
                                      "or ask with the sort it came from")
    return cursor


def after_cursor(field: str, collection: str, cursor) -> tuple[dict, object]:
    """Documents of ``collection`` after ``cursor`` in (field, collection, id) descending order:
    (a range on ``field``, the ``_id`` of the cursor's document when ties at its value must be
    dropped here, ``after_tie``). One range on the sort field, never an ``$or``: SecantusDB
    serves a status and one range from the index, and scans a filter with ``$or`` or ``$and``."""
    at, at_collection, at_id = cursor
    if collection < at_collection:
        return {"$lte": at}, _NO_TIE
    if collection > at_collection:
        return {"$lt": at}, _NO_TIE
    return {"$lte": at}, at_id  # and, at the value itself, only the smaller _ids


_NO_TIE = object()


def after_tie(raw: dict, field: str, at, at_id) -> bool:
    """Whether ``raw``, read with ``field <= at``, comes after the cursor (``at``, ``at_id``):
    below ``at``, or at it with a smaller ``_id`` (BSON's order of types, then values)."""
    if at_id is _NO_TIE or raw.get(field) != at:
        return True
    return _bson_key(raw["_id"]) < _bson_key(at_id)


def _bson_key(value) -> tuple:
    for types, rank in _TYPE_ORDER:
        if isinstance(value, types):
            if isinstance(value, ObjectId):
                return rank, value.binary
            return (rank, value) if rank in (1, 2, 8) else (rank, _sortable(value))
    return 9, _sortable(value)


_UPPER, _LOWER = {"$lt": 0, "$lte": 1}, {"$gt": 1, "$gte": 0}


def with_range(query: dict, field: str, ops: dict) -> dict:
    """``query`` with the range ``ops`` on ``field`` as ONE condition on it (the tighter bound of
    each side kept), which an index serves on every server; under ``$and`` (a scan on
    SecantusDB) only when the field holds something else or the bounds cannot be compared."""
    current = query.get(field, {})
    if not isinstance(current, dict) or not set(current) <= {*_UPPER, *_LOWER}:
        return _and(query, {field: ops})
    merged = {}
    try:
        for side, pick in ((_UPPER, min), (_LOWER, max)):
            bounds = [(value, op) for source in (current, ops) for op, value in source.items() if op in side]
            if bounds:
                value, op = pick(bounds, key=lambda bound: (bound[0], side[bound[1]]))
                merged[op] = value
    except TypeError:  # bounds of different types (a missing value's cursor)
        return _and(query, {field: ops})
    return {**query, field: merged}


def _sortable(value):
    return (0, value.binary) if isinstance(value, ObjectId) else (1, str(value))


#: MongoDB's order of types (null, numbers, text, ..., dates): a sort field of the wrong type
#: (an unreadable document, ``proc.store.reader``) is merged where the server sorted it.
_TYPE_ORDER = ((type(None), 0), (bool, 7), ((int, float), 1), (str, 2), (dict, 3), (list, 4),
               (bytes, 5), (ObjectId, 6), (datetime, 8))


#: The rank (in ``_TYPE_ORDER``) of a sort value of the right type, or missing.
_order_rank = {"last_status_change": 8, "attempt": 1}


def _cursor_worthy(value, field: str) -> bool:
    """Whether a sort value can be written in a cursor (and read back): missing, or of its type."""
    if field == "attempt":
        return value is None or (type(value) is int and 0 <= value <= MAX_ATTEMPT)
    return value is None or isinstance(value, datetime)


def _order(raw: dict, field: str) -> tuple:
    value = raw.get(field)
    if value is None:
        return _order_rank[field], _MISSING[field]
    for types, rank in _TYPE_ORDER:
        if isinstance(value, types):
            return (rank, value) if rank in (1, 8) else (rank, _sortable(value))
    return 9, _sortable(value)


SCAN_CAP = 10_000
"""A page of a list with ``q`` (text search) reads at most this many documents per collection
(and per status asked): the search stops there, says so, and its cursor continues it."""
#: What a ``q`` page reads: the summary, and every error (``q`` may match any of them).
SCAN_FIELDS = {**SUMMARY_FIELDS, "errors": 1}


#: A page sorted by last change reads the newest window first and widens only while it holds
#: fewer than ``limit + 1`` processes: a range on ``last_status_change`` bounds what the server
#: examines by the recent processes, not the history (SecantusDB sorts without the index and
#: reads every match even under a limit). None: no bound (the rest of the history).
WINDOWS = (3600, 86400, 7 * 86400, 30 * 86400, None)




def _newest(coll, query: dict, fields: dict, field: str, reads: int, now, after=None) -> list:
    """The first ``reads`` documents of ``query`` in (``field``, ``_id``) descending order that
    come after the cursor (``after``: ``(at, at_id)`` of ``after_cursor``, its range already in
    ``query``), read window by window (``WINDOWS``) when ``field`` is the last change. Within a
    window the method (``current_process``) is checked here, not asked: with it in the filter
    SecantusDB also runs the (process_status, current_process) index, which reads every
    document of the status and method (explain does not show it; the time grows with the
    history). No index is named: SecantusDB serves a status and one range (or a range alone)
    from the index, and a hint makes it walk the whole index, every document of the collection."""
    windows = WINDOWS if field == "last_status_change" else (None,)
    method = query.get("current_process")
    at, at_id = after if after is not None else (None, _NO_TIE)
    docs: list = []
    for seconds in windows:
        if seconds is None:
            bounded, wanted = query, None
        else:
            rest = {k: v for k, v in query.items() if k != "current_process"}
            bounded, wanted = with_range(rest, field, {"$gte": now - timedelta(seconds=seconds)}), method
        found = coll.find(bounded, fields).sort([(field, -1), ("_id", -1)])
        if wanted is None and at_id is _NO_TIE:
            docs = list(found.limit(reads))
        else:
            docs = []
            for raw in found:
                if (wanted is None or raw.get("current_process") == wanted) and after_tie(raw, field, at, at_id):
                    docs.append(raw)
                    if len(docs) >= reads:
                        break
            found.close()
        if len(docs) >= reads:
            return docs
    return docs


def _key(item, field):
    return _order(item[1], field), item[0], _sortable(item[1]["_id"])


def list_procs(filter: Filter, *, sort: str = DEFAULT_SORT, limit: int = 50, cursor: str | None = None) -> dict:
    """One page of the processes ``filter`` matches, in ``sort`` order, across collections.

    One query per collection and status asked (``Filter.indexed_targets``: an equality on one
    status, never ``$in``), each of at most ``limit + 1`` documents; with ``q`` each reads at
    most ``SCAN_CAP`` documents in order and keeps those ``q`` matches: when a read stopped at
    the cap before the page was full, the page says ``stopped_early`` and its cursor continues
    the search after the last document read.

    A document that cannot be read (``proc.store.reader``) is left out of ``items`` and counted in
    ``unreadable``; it still takes its place in the order (a sort value of another type where
    the server sorts it), and the next page's cursor is the page's last document whose sort
    value has its type, so paging neither repeats nor skips a readable process."""
    sort = parse_sort(sort)
    field, at = SORTS[sort], decode_cursor(cursor, sort)
    now = utcnow()
    found, frontier = [], None
    for cls, query in filter.indexed_targets(now):
        collection = cls._get_collection_name()
        after = None
        if at:
            ops, at_id = after_cursor(field, collection, at)
            query, after = with_range(query, field, ops), (at[0], at_id)
        fields, reads = (SCAN_FIELDS, SCAN_CAP) if filter.q else (SUMMARY_FIELDS, limit + 1)
        docs = _newest(cls._get_collection(), query, fields, field, reads, now, after)
        if filter.q and len(docs) == SCAN_CAP:  # stopped: what lies after its last one is unread
            last = (collection, docs[-1])
            if frontier is None or _key(last, field) > _key(frontier, field):
                frontier = last
        found.extend((collection, raw) for raw in docs if filter.matches(raw))
    found.sort(key=lambda item: _key(item, field), reverse=True)
    if frontier is not None:  # only what comes before every stopped read is known complete
        found = [item for item in found if _key(item, field) >= _key(frontier, field)]
    stopped = frontier is not None and len(found) <= limit
    unreadable = reader.Unreadable()
    page = [(collection, raw) for collection, raw in found[:limit] if unreadable.check(collection, raw)]
    # The cursor: the last document of the page whose sort value has its type (a document whose
    # sort value has another type never matches the next page's range query again).
    last = next((item for item in reversed(found[:limit]) if _cursor_worthy(item[1].get(field), field)), None)
    if stopped and _cursor_worthy(frontier[1].get(field), field):
        last = frontier
    more = len(found) > limit or stopped
    return {
        "items": [summary(collection, raw, now) for collection, raw in page],
        "limit": limit,
        "sort": sort,
        "filter": filter.as_dict(),
        "next_cursor": encode_cursor(last[1], last[0], sort) if more and last else None,
        "unreadable": unreadable.as_dict(),
        "stopped_early": stopped,
        "scan_cap": SCAN_CAP if filter.q else None,
    }
