"""The embedded database's ``_id`` lookup (``proc.store.embedded``) against mongomock's own scan.

Each check runs the same operation on two collections holding the same documents: one
of the embedded database (the lookup) and one of a plain ``mongomock_ng.MongoClient``
whose ``_iter_documents`` is mongomock's scan (the embedded client's lookup applies to its
own collections only). Unsorted results are compared as sets
(by type-exact ``_id``): the lookup returns ``$in`` candidates in the list's order, the
scan in the store's order, and neither order is promised by MongoDB.
"""
from __future__ import annotations

import copy
import re
import uuid
from datetime import datetime, timedelta, timezone

import bson
import mongomock_ng
import pytest
from bson import Binary, Int64, ObjectId

from proc.store import embedded

pytestmark = pytest.mark.embedded_only(reason="these test mongomock-ng and the embedded client's _id lookup against mongomock's own scan")

OIDS = [ObjectId("64b7f0c2a1b2c3d4e5f60718"), ObjectId("64b7f0c2a1b2c3d4e5f60719")]
UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
DATE = datetime(2021, 1, 1, 12, 30)
#: One document per kind of _id (1 and True, 0 and False cannot both be _ids in mongomock).
IDS = [None, -3, 2, 2.5, Int64(7), 1e300, "a", "b", "", "2", b"bin", Binary(b"bin2", 0),
       Binary(b"bin", 5), UUID, *OIDS, True, DATE, {"shard": 1, "n": 2}]
DOCS = [{"_id": i, "x": n, "tag": "even" if n % 2 == 0 else "odd", "arr": [n, n + 1]}
        for n, i in enumerate(IDS)]


def key(value):
    return bson.encode({"k": value}, codec_options=bson.CodecOptions(uuid_representation=4))


@pytest.fixture
def pair(database):
    """(embedded collection, plain mongomock collection that scans), same documents."""
    mine = database["embedded_lookup"]
    mine.insert_many(copy.deepcopy(DOCS))
    plain = mongomock_ng.MongoClient(uuidRepresentation="standard").get_database("plain")["c"]
    plain.insert_many(copy.deepcopy(DOCS))
    return mine, plain


def same_find(pair, filter, **kwargs):
    mine, plain = pair
    got, want = list(mine.find(filter, **kwargs)), list(plain.find(filter, **kwargs))
    assert sorted(map(key, (d["_id"] for d in got))) == sorted(map(key, (d["_id"] for d in want)))
    assert sorted(got, key=lambda d: key(d["_id"])) == sorted(want, key=lambda d: key(d["_id"]))
    assert mine.count_documents(filter) == plain.count_documents(filter) == len(want)
    return got


def used_lookup(filter) -> bool:
    return embedded.id_lookup(filter) is not None


# -- equality -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", IDS[:-1], ids=repr)
def test_equality_matches_the_scan(pair, value):
    got = same_find(pair, {"_id": value})
    assert len(got) == 1 and used_lookup({"_id": value})


@pytest.mark.parametrize("value", [1, 1.0, 0, False, 2.0, Int64(2), "A", b"a", OIDS[0].binary,
                                   str(UUID), DATE + timedelta(seconds=1), 99])
def test_equality_with_other_types_and_missing_ids_matches_the_scan(pair, value):
    same_find(pair, {"_id": value})  # 1 and 1.0 find True, as mongomock's scan does


# -- $in ----------------------------------------------------------------------------------------


IN_LISTS = [
    [2, "a", OIDS[1], None, DATE, UUID],                       # mixed types
    ["missing", 404, ObjectId(), datetime(1999, 1, 1)],         # only missing ids
    [2, 2, 2.0, Int64(2), "a", "a"],                            # duplicates, equal numbers
    [1, 1.0, True, 0],                                         # bool and numbers (mongomock's ==)
    [b"bin", Binary(b"bin", 0), Binary(b"bin", 5), b"bin2"],   # bytes and Binary subtypes
    [-3, 2.5, 1e300, Int64(7), "", "2"],
    [],
]


@pytest.mark.parametrize("values", IN_LISTS, ids=repr)
def test_in_matches_the_scan(pair, values):
    filter = {"_id": {"$in": values}}
    assert used_lookup(filter)
    same_find(pair, filter)
    same_find(pair, {"_id": {"$in": tuple(values)}})


@pytest.mark.parametrize("extra", [{"tag": "even"}, {"x": {"$gt": 3}}, {"arr": 5},
                                   {"$or": [{"tag": "odd"}, {"x": 0}]}, {"nothing": {"$exists": True}}])
def test_in_with_extra_conditions_matches_the_scan(pair, extra):
    values = [2, "a", OIDS[1], None, DATE, UUID, 2.5, "missing"]
    for filter in ({"_id": {"$in": values}, **extra},
                   {"$and": [extra, {"_id": {"$in": values}}]},
                   {"$and": [{"$and": [{"_id": {"$in": values}}]}, extra]},
                   {"$and": [{"_id": {"$in": values}}], **extra}):
        assert used_lookup(filter), filter
        same_find(pair, filter)
        same_find(pair, filter, projection={"x": 1})


def test_in_returns_candidates_once_in_the_lists_order(pair):
    mine, _ = pair
    got = [d["_id"] for d in mine.find({"_id": {"$in": ["b", 2, "a", 2.0, "b", OIDS[1], OIDS[0]]}})]
    assert got == ["b", 2, "a", OIDS[1], OIDS[0]]


def test_in_on_a_sorted_limited_query_matches_the_scan(pair):
    filter = {"_id": {"$in": [2, "a", OIDS[1], None, DATE, -3, "b"]}, "x": {"$lt": 100}}
    mine, plain = pair
    for limit in (0, 1, 3):
        assert list(mine.find(filter).sort("_id", 1).limit(limit)) == \
            list(plain.find(filter).sort("_id", 1).limit(limit))


def test_writes_with_in_match_the_scan(pair):
    mine, plain = pair
    values = [2, "a", OIDS[1], None, DATE, "missing", 2.0]
    pipeline = [{"$set": {"y": {"$add": ["$x", 1]}}}, {"$unset": ["arr"]}]
    for coll in pair:
        r = coll.update_many({"_id": {"$in": values}, "$and": [{"x": {"$gte": 0}}]}, pipeline)
        assert (r.matched_count, r.modified_count) == (5, 5)  # 2.0 is 2
        assert coll.update_many({"_id": {"$in": values}, "y": {"$exists": False}},
                                {"$set": {"z": 1}}).modified_count == 0
        assert coll.delete_many({"_id": {"$in": ["b", 404]}}).deleted_count == 1
    assert sorted(mine.find(), key=lambda d: key(d["_id"])) == sorted(plain.find(), key=lambda d: key(d["_id"]))


# -- everything else scans, unchanged --------------------------------------------------------


OTHER = [
    {"_id": {"$in": [re.compile("^a"), 2]}},
    {"_id": {"$in": [bson.Regex("^b"), "x"]}},
    {"_id": re.compile("^[ab]$")},
    {"_id": {"$in": [{"shard": 1, "n": 2}, 2]}},
    {"_id": {"shard": 1, "n": 2}},
    {"_id": {"$in": [float("nan"), 2]}},
    {"_id": {"$in": [2, "a"], "$ne": 2}},
    {"_id": {"$nin": [2, "a"]}},
    {"_id": {"$gt": 2}},
    {"_id": {"$eq": "a"}},
    {"_id": {"$type": "string"}},
    {"$or": [{"_id": 2}, {"_id": "a"}]},
    {"_id": {"$exists": True}, "tag": "odd"},
    {"tag": "even"},
    {},
]


@pytest.mark.parametrize("filter", OTHER, ids=repr)
def test_other_filters_scan_and_match_the_scan(pair, filter):
    assert not used_lookup(filter)
    same_find(pair, filter)


def test_an_invalid_filter_raises_as_with_a_scan(pair, database):
    for coll in (*pair, database["embedded_empty"]):
        with pytest.raises(mongomock_ng.OperationFailure):
            list(coll.find({"$bogus": 1, "_id": "missing"}))
    mine, plain = pair
    for filter in ({"_id": {"$in": [2, "a"]}, "$bogus": 1}, {"_id": {"$in": [2, "a"]}, "x": {"$bogus": 1}}):
        assert outcome(mine, filter) == outcome(plain, filter)


def outcome(coll, filter):
    try:
        return sorted(map(key, (d["_id"] for d in coll.find(filter))))
    except Exception as exc:  # noqa: BLE001 - the kind of error is what is compared
        return type(exc)


# -- date keys mongomock stores otherwise ----------------------------------------------------------


def test_dates_inserted_with_microseconds_or_a_time_zone_are_still_found(database):
    mine = database["embedded_dates"]
    plain = mongomock_ng.MongoClient(uuidRepresentation="standard").get_database("plain")["dates"]
    docs = [{"_id": datetime(2022, 1, 1, 0, 0, 0, 123456), "n": 1},
            {"_id": datetime(2022, 1, 2, 12, tzinfo=timezone(timedelta(hours=2))), "n": 2},
            {"_id": datetime(2022, 1, 3), "n": 3}]
    for coll in (mine, plain):
        coll.insert_many(copy.deepcopy(docs))
    stored = [d["_id"] for d in mine.find({}, {"_id": 1})]
    assert stored == [datetime(2022, 1, 1, 0, 0, 0, 123000), datetime(2022, 1, 2, 10),
                      datetime(2022, 1, 3)]
    for filter in ({"_id": stored[0]}, {"_id": stored[1]}, {"_id": {"$in": stored}},
                   {"_id": {"$in": [stored[0], "x"]}, "n": 1},
                   {"_id": {"$in": [stored[2], stored[2], datetime(2030, 1, 1), stored[1]]}}):
        assert [d["n"] for d in mine.find(filter)] == [d["n"] for d in plain.find(filter)] != []
    assert mine.update_many({"_id": {"$in": stored}}, {"$set": {"seen": True}}).modified_count == 3


# -- cursor window --------------------------------------------------------------------------------


def test_cursor_skip_limit_and_next_match_slicing(database):
    coll = database["embedded_cursor"]
    coll.insert_many([{"_id": i} for i in range(50)])
    assert [d["_id"] for d in coll.find().sort("_id", -1).skip(5).limit(10)] == list(range(44, 34, -1))
    cursor = coll.find().sort("_id", 1).limit(3)
    assert next(cursor)["_id"] == 0 and [d["_id"] for d in cursor] == [1, 2]
    cursor = coll.find({"_id": {"$in": [5, 6, 7, 8]}}).skip(1)
    assert [d["_id"] for d in cursor] == [6, 7, 8]
    assert coll.find().sort("_id", 1)[7]["_id"] == 7
