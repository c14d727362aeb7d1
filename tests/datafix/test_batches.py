"""The batch write of the datafix (``migrations.match``): a selector translated into an
aggregation expression matches exactly the documents the query matches, and the guarded
pipeline changes exactly those, on the generated legacy collections (odd values and types
included)."""
from __future__ import annotations

import copy

import bson
import pytest

import legacy_data
import support
from migrations import match, script

FIX = script.discover()[0].module
SELECTORS = {
    "idle": FIX.IDLE,
    "selector (with processing)": FIX.selector,
    "invalid": FIX.invalid,
    "restore": {"$and": [FIX.NO_LEGACY, FIX._string_in("process_status", FIX.NEW_VALUES)]},
    "equality, array fields included": {"tasks": "task_1"},
    "$in without the string idiom": {"tasks_status": {"$in": ["CREATED", "DONE"]}},
    "$nor and $or": {"$nor": [FIX.IDLE], "$or": [{"current_task": {"$exists": True}}, {"errors": {"$exists": True}}]},
}


def k(value):
    return bson.encode({"k": value})


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_the_expression_matches_exactly_what_the_query_matches(database, name):
    selector = SELECTORS[name]
    pipeline = match.batch_update(selector, [{"$set": {"hit": True}}])
    assert pipeline is not None
    for collection, docs in legacy_data.generate(40, seed=11).items():
        coll = database[collection]
        coll.insert_many(copy.deepcopy(docs))
        wanted = {k(d["_id"]) for d in coll.find(selector, {"_id": 1})}
        ids = [d["_id"] for d in coll.find({}, {"_id": 1})]
        changed = coll.update_many({"_id": {"$in": ids}}, pipeline).modified_count
        assert {k(d["_id"]) for d in coll.find({"hit": True}, {"_id": 1})} == wanted
        assert changed == len(wanted) and coll.count_documents({match.FLAG: {"$exists": True}}) == 0


@pytest.mark.parametrize("query", [{"a.b": 1}, {"a": {"$gt": 1}}, {"a": None}, {"$where": "1"},
                                   {"a": {"$in": [None]}}, {"a": {"$exists": True, "$in": [1]}}])
def test_shapes_it_cannot_translate_exactly_fall_back_to_one_update_per_document(query):
    assert match.expression(query) is None
    assert match.guarded_pipeline([{"$replaceWith": "$x"}], {"$eq": [1, 1]}) is None
    assert match.guarded_pipeline([{"$set": {"a.b": 1}}], {"$eq": [1, 1]}) is None


@pytest.mark.real_server
def test_the_guarded_upgrade_pipeline_gives_what_the_bare_update_gives(database):
    data = legacy_data.generate(40, seed=5)
    for collection, docs in data.items():
        guarded, bare = database[collection], database[collection + "_bare"]
        guarded.insert_many(copy.deepcopy(docs))
        bare.insert_many(copy.deepcopy(docs))
        ids = [d["_id"] for d in guarded.find({}, {"_id": 1})]
        n = guarded.update_many({"_id": {"$in": ids}}, match.shape(FIX.IDLE, FIX.UPGRADE_PIPELINE))
        assert n.modified_count == bare.update_many(FIX.IDLE, FIX.UPGRADE_PIPELINE).modified_count
        assert {k(d["_id"]): d for d in guarded.find({})} == {k(d["_id"]): d for d in bare.find({})}


def test_each_tier_gets_its_batch_shape(database):
    shape = match.shape(FIX.IDLE, FIX.UPGRADE_PIPELINE)
    if support.real_tier():
        assert shape == match.batch_update(FIX.IDLE, FIX.UPGRADE_PIPELINE) and shape[0]["$set"]
        assert match.shape({"a.b": 1}, FIX.UPGRADE_PIPELINE) is None  # one UpdateOne per document
    else:
        assert shape == match.EMBEDDED
