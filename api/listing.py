"""Lists of processes: one filter (``proc.filters``), a sort, cursor paging across collections.

Order: the sort field descending (``last_change``: ``last_status_change``; ``attempt``), then
the collection name, then ``_id``, all descending. A cursor is that triple of the last item
shown, with the sort it belongs to; the next page is what comes after it in this order, so
paging works with any filter and either sort, and a page never repeats or skips a process
that did not change meanwhile. Each page costs one query per collection (``limit + 1``
documents at most from each).
"""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from bson import ObjectId, json_util

from proc import registry
from proc.filters import Filter, FilterError

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


def decode_cursor(value: str | None, sort: str):
    """(sort value, collection, id) of a cursor given out for ``sort``; 400 otherwise."""
    if value in (None, ""):
        return None
    try:
        padded = value + "=" * (-len(value) % 4)
        items = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if len(items) == 3:  # a cursor of the release before sorts: last_change
            items = [DEFAULT_SORT, *items]
        given, at, collection, id_json = items
        if given not in SORTS:
            raise ValueError(given)
        at = datetime.fromisoformat(at) if SORTS[given] == "last_status_change" else int(at)
        cursor = at, str(collection), json_util.loads(id_json)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, AttributeError):
        raise bad_parameter("cursor", "cursor is not one this API gave out; drop it to start "
                                      "from the first page") from None
    if given != sort:
        raise bad_parameter("cursor", f"this cursor pages sort={given}, not sort={sort}; drop it "
                                      "or ask with the sort it came from")
    return cursor


def after_cursor(field: str, collection: str, cursor) -> dict:
    """Documents of ``collection`` after ``cursor`` in (field, collection, id) descending order."""
    at, at_collection, at_id = cursor
    if collection < at_collection:
        return {field: {"$lte": at}}
    if collection > at_collection:
        return {field: {"$lt": at}}
    return {"$or": [{field: {"$lt": at}}, {field: at, "_id": {"$lt": at_id}}]}


def _and(query: dict, extra: dict) -> dict:
    if set(query) & set(extra):
        return {"$and": [query, extra]}
    return {**query, **extra}


def _sortable(value):
    return (0, value.binary) if isinstance(value, ObjectId) else (1, str(value))


def list_procs(filter: Filter, *, sort: str = DEFAULT_SORT, limit: int = 50, cursor: str | None = None) -> dict:
    """One page of the processes ``filter`` matches, in ``sort`` order, across collections."""
    sort = parse_sort(sort)
    field, at = SORTS[sort], decode_cursor(cursor, sort)
    now = utcnow()
    found = []
    for cls, query in filter.targets(now):
        collection = cls._get_collection_name()
        if at:
            query = _and(query, after_cursor(field, collection, at))
        docs = cls._get_collection().find(query, SUMMARY_FIELDS).sort([(field, -1), ("_id", -1)]).limit(limit + 1)
        found.extend((collection, raw) for raw in docs)
    found.sort(key=lambda item: (_value(item[1], field), item[0], _sortable(item[1]["_id"])), reverse=True)
    page = found[:limit]
    return {
        "items": [summary(collection, raw, now) for collection, raw in page],
        "limit": limit,
        "sort": sort,
        "filter": filter.as_dict(),
        "next_cursor": encode_cursor(page[-1][1], page[-1][0], sort) if len(found) > limit else None,
    }
