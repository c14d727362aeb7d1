"""The datafix framework and datafix 0001 (tasks/tasks_status -> process_status), on the
embedded database, through the Python commands and through ``procctl datafix``."""
from __future__ import annotations

import copy
import json
import shutil
import threading
from datetime import timedelta

import bson
import pytest
from bson import ObjectId
from click.testing import CliRunner

import legacy_data
from legacy_data import EXTRA_COLLECTION, snapshot
from migrations import command, guard, keyset, lock as lock_module, script
from migrations.backup import COLLECTION as BACKUPS
from migrations.errors import LockHeld
from migrations.ledger import COLLECTION as LEDGER
from proc.cli import cli
from proc.exceptions import ConfigurationError
from proc.timeutil import utcnow
from datafix_toys import add_toy, sequence_dir
from support import wait_for

MAPPING = {"CREATED": "READY", "SUCCESS": "SUCCESS", "FAILURE": "FAILURE"}
LEGACY = ("tasks", "current_task", "tasks_status")
INVERSE_TASKS = {"READY": "CREATED", "PENDING": "PENDING", "DISPATCHED": "PENDING", "RUNNING": "RUNNING",
                 "WAITING_FOR_RESULT": "RUNNING", "SUCCESS": "SUCCESS", "FAILURE": "FAILURE"}
INVERSE_OLD = {"READY": None, "PENDING": "CALLED", "DISPATCHED": "CALLED", "RUNNING": "RUNNING",
               "WAITING_FOR_RESULT": "RUNNING", "SUCCESS": "COMPLETED", "FAILURE": "COMPLETED"}


def datafix(*args):
    result = CliRunner().invoke(cli, ["datafix", *args], catch_exceptions=False)
    return result


def k(value):
    return bson.encode({"k": value})


def is_migratable(doc, include_processing=False):
    valid = set(MAPPING) | ({"PENDING", "RUNNING"} if include_processing else set())
    return isinstance(doc.get("tasks_status"), str) and doc["tasks_status"] in valid


def expected_after(doc):
    """What the contract says an upgraded legacy document looks like."""
    after = {f: v for f, v in doc.items() if f not in LEGACY}
    status = doc["tasks_status"]
    after["process_status"] = MAPPING.get(status, "FAILURE")
    after["current_process_step"] = doc.get("current_task")
    if status in ("PENDING", "RUNNING"):
        after["errors"] = [*(doc.get("errors") or []), INTERRUPTED_ERROR]
    return after


INTERRUPTED_ERROR = object()  # stands for the error added to a document that was processing


def same(actual, expected):
    """Field-order-insensitive equality; the interrupted-run error matches by content."""
    expected = dict(expected)
    if expected.get("errors") and expected["errors"][-1] is INTERRUPTED_ERROR:
        assert "interrupted by the upgrade" in actual["errors"][-1]
        assert "again" in actual["errors"][-1]
        expected["errors"] = expected["errors"][:-1] + [actual["errors"][-1]]
    assert actual == expected


def check_upgraded(database, data, include_processing=False):
    after = snapshot(database)
    for name, docs in data.items():
        for doc in docs:
            now = after[name][k(doc["_id"])]
            if any(f in doc for f in LEGACY) and is_migratable(doc, include_processing):
                same(now, expected_after(doc))
            else:
                assert now == doc  # invalid, processing-but-refused or already migrated: untouched


# -- mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("old,new", sorted(MAPPING.items()))
@pytest.mark.parametrize("current_task", ["parsing step 3", None, "missing"])
def test_every_mapping_row(database, old, new, current_task):
    doc = {"_id": ObjectId(), "tasks": ["a", "b"], "tasks_status": old, "process_status": "CALLED",
           "name": "u", "paths": ["x"], "errors": ["e1"], "custom": {"kept": [1, 2]}}
    if current_task != "missing":
        doc["current_task"] = current_task
    database.upload.insert_one(copy.deepcopy(doc))
    assert command.upgrade().ok
    now = database.upload.find_one({"_id": doc["_id"]})
    assert now == {"_id": doc["_id"], "process_status": new, "name": "u", "paths": ["x"],
                   "errors": ["e1"], "custom": {"kept": [1, 2]},
                   "current_process_step": None if current_task == "missing" else current_task}


def test_generated_collections_migrate_with_every_id_type(database):
    data = legacy_data.populate(database, 60, processing=False, odd=False)
    result = command.upgrade(batch_size=7)
    assert result.ok, result.to_dict()
    check_upgraded(database, data)
    kinds = {type(d["_id"]).__name__ for docs in data.values() for d in docs}
    assert {"ObjectId", "str", "int", "float", "datetime"} <= kinds
    assert command.verify().ok


# -- invalid and processing documents -------------------------------------------------------------


ODD = [("DONE",), ("created",), ("",), (3,), (None,), (["CREATED"],), ({"s": "CREATED"},), ()]


def test_invalid_documents_are_untouched_and_reported(database):
    docs = []
    for i, value in enumerate(ODD):
        doc = {"_id": f"odd-{i}", "tasks": ["t"], "current_task": "c"}
        if value:
            doc["tasks_status"] = value[0]
        docs.append(doc)
    docs.append({"_id": "new-bad", "process_status": "COMPLETED"})
    docs.append({"_id": "new-none", "name": "no status at all"})
    database.upload.insert_many(copy.deepcopy(docs))
    result = datafix("upgrade", "--yes", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)["datafixes"][0]["collections"]["upload"]
    assert report["invalid"] == len(docs)
    listed = {d["_id"]: d for d in report["invalid_docs"]}
    assert listed["odd-0"]["tasks_status"] == "DONE" and listed["new-bad"]["process_status"] == "COMPLETED"
    assert "odd-7" in listed and "tasks_status" not in listed["odd-7"]
    assert [database.upload.find_one({"_id": d["_id"]}) for d in docs] == docs
    text = datafix("status").output
    assert "invalid 10" in text
    assert datafix("verify").exit_code == 1


def test_processing_documents_refuse_then_include(database):
    data = legacy_data.populate(database, 30, odd=False)
    before = snapshot(database)
    result = datafix("upgrade", "--yes")
    assert result.exit_code == 1
    assert "stop the old workers" in result.output and "--include-processing" in result.output
    processing = sum(1 for d in data["upload"] if d.get("tasks_status") in ("PENDING", "RUNNING"))
    assert f"{processing} in upload" in result.output
    assert snapshot(database) == before  # nothing written: no documents, ledger or backups
    result = datafix("upgrade", "--yes", "--include-processing")
    assert result.exit_code == 0, result.output
    check_upgraded(database, data, include_processing=True)


# -- dry run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["--include-processing"]])
def test_dry_run_writes_nothing(database, args):
    legacy_data.populate(database, 40)
    before = snapshot(database)
    result = datafix("upgrade", "--dry-run", *args)
    assert snapshot(database) == before
    assert set(database.list_collection_names()) == set(before)
    assert "DRY RUN" in result.output
    assert "tasks_status CREATED -> process_status READY: " in result.output
    assert "invalid _id" in result.output
    if args:
        assert "(still processing) -> FAILURE" in result.output
    else:
        assert "STOPPED" in result.output and "still processing" in result.output
    assert result.exit_code == 1  # invalid documents are present in the generated data
    downgrade_dry = datafix("downgrade", "--dry-run", "--to", "base")
    assert snapshot(database) == before and downgrade_dry.exit_code == 0


# -- batches, interruption, resume -------------------------------------------------------------


class Stop(Exception):
    pass


def test_interrupted_upgrade_resumes_and_migrates_each_document_once(database):
    data = legacy_data.populate(database, 50, processing=False, odd=False)
    seen = []

    def crash_after_three(ctx, name, batch):
        seen.append(len(batch))
        if len(seen) == 3:
            raise Stop("power cut")

    first = command.upgrade(batch_size=6, on_batch=crash_after_three)
    assert not first.ok and "power cut" in first.reports[0].error
    entry = database[LEDGER].find_one({"_id": "0001"})
    assert entry["state"] == "failed" and entry["counts"]["migrated"] == 18
    assert entry["last_id"] is not None and lock_module.holder(database) is None
    assert command.status().reports[0].state == "failed"
    second = command.upgrade(batch_size=6)
    assert second.ok and second.reports[0].state == "applied"
    assert first.reports[0].totals()["migrated"] + second.reports[0].totals()["migrated"] == \
        sum(1 for docs in data.values() for d in docs if "tasks_status" in d)
    per_doc = {}
    for record in database[BACKUPS].find({}):
        per_doc[(record["collection"], k(record["doc_id"]))] = \
            per_doc.get((record["collection"], k(record["doc_id"])), 0) + 1
    assert set(per_doc.values()) == {1}  # backed up, hence migrated, exactly once
    check_upgraded(database, data)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 1000])
def test_batch_sizes_give_the_same_result(database, batch_size):
    data = legacy_data.populate(database, 24, processing=False, odd=False, seed=3)
    result = command.upgrade(batch_size=batch_size)
    assert result.ok and result.reports[0].peak_batch <= batch_size
    check_upgraded(database, data)


def test_rerun_is_a_noop(database):
    legacy_data.populate(database, 30, processing=False, odd=False)
    assert command.upgrade().ok
    after = snapshot(database)
    result = datafix("upgrade", "--yes")
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert snapshot(database) == after


def test_applied_datafix_rechecks_documents_written_later_and_named_collections(database):
    legacy_data.populate(database, 20, processing=False, odd=False)
    assert command.upgrade().ok
    database.entry.insert_one({"_id": "late", "tasks": [], "tasks_status": "SUCCESS", "current_task": None})
    database[EXTRA_COLLECTION].insert_one({"_id": 1, "tasks_status": "CREATED", "tasks": ["x"]})
    with pytest.raises(ConfigurationError):
        guard.refuse_if_legacy("The worker")
    result = command.upgrade()
    assert result.ok and result.reports[0].state == "applied"
    assert database.entry.find_one({"_id": "late"})["process_status"] == "SUCCESS"
    assert database[EXTRA_COLLECTION].find_one({"_id": 1})["tasks_status"] == "CREATED"
    result = datafix("upgrade", "--yes", "--collection", EXTRA_COLLECTION)
    assert result.exit_code == 0, result.output
    assert database[EXTRA_COLLECTION].find_one({"_id": 1}) == \
        {"_id": 1, "process_status": "READY", "current_process_step": None}
    assert "nothing to do" in datafix("upgrade", "--yes").output  # the ledger remembers the collection


# -- downgrade ----------------------------------------------------------------------------------


def test_upgrade_then_downgrade_restores_the_original_values(database):
    data = legacy_data.populate(database, 45, odd=False)
    original = snapshot(database)
    assert command.upgrade(include_processing=True, batch_size=8).ok
    legacy_ids = {k(d["_id"]) for d in data["upload"] if "tasks_status" in d}
    result = datafix("downgrade", "--yes", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    restored = snapshot(database)
    for name, docs in data.items():
        for doc in docs:
            if k(doc["_id"]) in legacy_ids or name != "upload" and "tasks_status" in doc:
                assert restored[name][k(doc["_id"])] == doc  # exactly the old values
    assert database[LEDGER].find_one({"_id": "0001"})["state"] == "rolled back"
    assert original.keys() <= restored.keys()


def test_downgrade_converts_changed_and_new_documents_by_the_inverse_rule(database):
    database.upload.insert_many([
        {"_id": 1, "tasks": ["a"], "tasks_status": "SUCCESS", "current_task": "t", "process_status": "COMPLETED"},
        {"_id": 2, "tasks": ["b"], "tasks_status": "CREATED", "current_task": None},
    ])
    assert command.upgrade().ok
    database.upload.update_one({"_id": 2}, {"$set": {"process_status": "DISPATCHED",
                                                     "current_process_step": "queued"}})
    new_docs = [{"_id": 10 + i, "process_status": s, "current_process_step": f"step {i}"}
                for i, s in enumerate(INVERSE_TASKS)]
    database.upload.insert_many(copy.deepcopy(new_docs))
    result = command.downgrade()
    assert result.ok
    rep = result.reports[0].collections["upload"]
    assert rep.restored == 1 and rep.converted == 1 + len(new_docs)
    reasons = {d["_id"]: d["reason"] for d in rep.converted_docs}
    assert reasons[2] == "changed since the upgrade" and reasons[10] == "no backup"
    assert database.upload.find_one({"_id": 1}) == {"_id": 1, "tasks": ["a"], "tasks_status": "SUCCESS",
                                                     "current_task": "t", "process_status": "COMPLETED"}
    assert database.upload.find_one({"_id": 2}) == {"_id": 2, "tasks": [], "tasks_status": "PENDING",
                                                     "current_task": "queued", "process_status": "CALLED"}
    for doc in new_docs:
        now = database.upload.find_one({"_id": doc["_id"]})
        assert now == {"_id": doc["_id"], "tasks": [], "current_task": doc["current_process_step"],
                       "tasks_status": INVERSE_TASKS[doc["process_status"]],
                       "process_status": INVERSE_OLD[doc["process_status"]]}


# -- lock ---------------------------------------------------------------------------------------


def test_two_concurrent_runners_one_gets_exit_3(database):
    legacy_data.populate(database, 20, processing=False, odd=False)
    holding, release = threading.Event(), threading.Event()
    outcome = {}

    def pause(ctx, name, batch):
        holding.set()
        assert release.wait(10)

    def first():
        outcome["first"] = command.upgrade(batch_size=5, on_batch=pause)

    def second():
        try:
            command.upgrade(batch_size=5)
        except LockHeld as exc:
            outcome["second"] = exc

    a = threading.Thread(target=first)
    a.start()
    wait_for(holding.is_set, message="the first runner holds the lock")
    b = threading.Thread(target=second)
    b.start()
    b.join(10)
    holder = lock_module.holder(database)
    result = datafix("upgrade", "--yes")
    release.set()
    a.join(10)
    assert isinstance(outcome["second"], LockHeld) and holder["owner"] in str(outcome["second"])
    assert result.exit_code == 3 and holder["owner"] in result.output and "since" in result.output
    assert outcome["first"].ok and command.verify().ok


def test_stale_lock_is_taken_over_and_unlock_force_releases(database):
    legacy_data.populate(database, 10, processing=False, odd=False)
    now = utcnow()
    stale = {"_id": lock_module.KEY, "owner": "crashed-host:1:dead", "since": now - timedelta(hours=1),
             "expires_at": now - timedelta(minutes=5), "command": "upgrade"}
    database[lock_module.COLLECTION].insert_one(stale)
    result = command.upgrade()
    assert result.ok and any("crashed-host:1:dead" in w for w in result.warnings)
    assert lock_module.holder(database) is None
    database[lock_module.COLLECTION].insert_one({**stale, "expires_at": now + timedelta(hours=1)})
    assert datafix("upgrade", "--yes").exit_code == 3
    assert datafix("unlock").exit_code == 2
    released = datafix("unlock", "--force")
    assert released.exit_code == 0 and "crashed-host:1:dead" in released.output
    assert datafix("upgrade", "--yes").exit_code == 0


# -- versions: checksum, late merge, new ----------------------------------------------------------


@pytest.fixture
def versions(tmp_path):
    """An application sequence ``app`` (empty), beside proc's own."""
    return sequence_dir(tmp_path, "app")


def test_late_merged_datafix_with_a_lower_id_still_runs(database, versions):
    database.upload.insert_many([{"_id": 1, "toy_0002": 1, "toy_0003": 1, "process_status": "READY"}])
    add_toy(versions, "0003")
    assert command.upgrade(versions=versions).ok
    assert database.upload.find_one({"_id": 1}).get("done_0003") is True
    add_toy(versions, "0002")
    result = command.upgrade(versions=versions)
    assert [(r.revision, r.state) for r in result.reports] == \
        [("0001", "nothing to do"), ("app:0002", "applied"), ("app:0003", "nothing to do")]
    assert database.upload.find_one({"_id": 1}).get("done_0002") is True
    down = command.downgrade(versions=versions, to="0001")
    assert [r.revision for r in down.reports] == ["app:0003", "app:0002"]
    assert database.upload.find_one({"_id": 1}) == {"_id": 1, "toy_0002": 1, "toy_0003": 1,
                                                     "process_status": "READY"}
    assert command.upgrade(versions=versions, to="app:0002").reports[-1].revision == "app:0002"


def test_new_creates_the_next_numbered_file_of_a_sequence(database, versions):
    add_toy(versions, "0001")
    result = datafix("--versions", str(versions), "new", "--sequence", "app", "Fill parent key")
    assert result.exit_code == 0, result.output
    path = versions / "0002_fill_parent_key.py"
    assert path.exists() and "revision = '0002'" in path.read_text()
    assert [s.label for s in script.discover(versions)] == ["0001", "app:0001", "app:0002"]
    shutil.copy(path, versions / "0002_duplicate.py")
    duplicate = datafix("--versions", str(versions), "status")
    assert duplicate.exit_code == 2 and "0002_duplicate.py" in duplicate.output


# -- verify, status, guard, prune -----------------------------------------------------------------


def test_verify_before_and_after(database):
    legacy_data.populate(database, 20, processing=False, odd=False)
    before = datafix("verify", "--json")
    assert before.exit_code == 1 and json.loads(before.stdout)["ok"] is False
    assert datafix("upgrade", "--yes").exit_code == 0
    after = datafix("verify")
    assert after.exit_code == 0, after.output
    assert "0 document(s) in the old shape, 0 invalid" in after.output
    database.entry.insert_one({"_id": "bad", "process_status": "COMPLETED"})
    assert datafix("verify").exit_code == 1


def test_guard_refuses_legacy_documents_and_only_warns_about_invalid(database, caplog):
    guard.refuse_if_legacy("The API server")  # empty database
    database.upload.insert_one({"_id": "odd", "tasks_status": "DONE", "tasks": []})
    guard.refuse_if_legacy("The API server")
    assert "invalid documents" in caplog.text
    database.entry.insert_one({"_id": "old", "tasks_status": "CREATED", "tasks": []})
    with pytest.raises(ConfigurationError, match="procctl datafix upgrade"):
        guard.refuse_if_legacy("The API server")


def test_prune_backups(database):
    legacy_data.populate(database, 10, processing=False, odd=False)
    assert command.upgrade().ok
    count = database[BACKUPS].count_documents({})
    assert count > 0
    assert datafix("prune-backups", "--older-than", "1d", "--yes").output.startswith("deleted 0")
    database[BACKUPS].update_many({}, {"$set": {"time": utcnow() - timedelta(days=3)}})
    assert f"deleted {count}" in datafix("prune-backups", "--older-than", "2d", "--yes").output
    assert database[BACKUPS].count_documents({}) == 0


def test_keyset_walk_covers_mixed_id_types(database):
    from datetime import datetime

    ids = [None, -3, 2, 2.5, "a", "b", b"bin", ObjectId(), False, datetime(2021, 1, 1)]
    database.mixed.insert_many([{"_id": i, "x": 1} for i in ids])
    for size in (1, 2, 3, 20):
        walked = [d["_id"] for batch in keyset.walk(database.mixed, {"x": 1}, batch_size=size)
                  for d in batch]
        assert sorted(map(k, walked)) == sorted(map(k, ids)) and len(walked) == len(ids)


def test_each_batch_write_is_index_served_and_skips_a_concurrent_change(database):
    """Real server: one update_many per 100 ids filtered by ``_id $in`` alone, its pipeline
    re-checking the selector. Embedded: one update_many of ``_id $in`` plus the selector."""
    from datetime import datetime

    import support

    ids = [None, -3, 2, 2.5, "a", "b", b"bin", ObjectId(), False, datetime(2021, 1, 1)]
    database.upload.insert_many([{"_id": i, "tasks": ["t"], "tasks_status": "CREATED"} for i in ids])
    database.upload.insert_one({"_id": "done", "process_status": "READY"})
    select = {"tasks_status": {"$in": ["CREATED", "SUCCESS", "FAILURE"]},
              "tasks_status.0": {"$exists": False}}
    assert keyset.guarded("a", {"x": 1}) == {"_id": "a", "x": 1}
    assert keyset.guarded("a", {"_id": 1}) == {"_id": "a", "$and": [{"_id": 1}]}
    bulk, many = [], []
    original_bulk, original_many = type(database.upload).bulk_write, type(database.upload).update_many

    def concurrent_writer(self):
        if not bulk and not many:  # another writer migrates 2 between the batch's read and its write
            self.update_one({"_id": 2}, {"$set": {"process_status": "READY"},
                                           "$unset": {"tasks": "", "tasks_status": ""}})

    def bulk_spy(self, requests, *args, **kwargs):
        concurrent_writer(self)
        bulk.append([r._filter for r in requests])
        return original_bulk(self, requests, *args, **kwargs)

    def many_spy(self, filter, *args, **kwargs):
        concurrent_writer(self)
        many.append(filter)
        return original_many(self, filter, *args, **kwargs)

    type(database.upload).bulk_write, type(database.upload).update_many = bulk_spy, many_spy
    try:
        result = command.upgrade(batch_size=3)
    finally:
        type(database.upload).bulk_write, type(database.upload).update_many = original_bulk, original_many
    totals = result.reports[0].totals()
    assert result.ok and totals["migrated"] == len(ids) - 1 and totals["skipped"] == 1
    if support.real_tier():
        assert len(many) == 4 and not bulk  # one update_many per batch
        assert all(list(f) == ["_id"] and list(f["_id"]) == ["$in"] for f in many)
        written = [i for f in many for i in f["_id"]["$in"]]
    else:
        assert len(many) == 4 and not bulk  # one update_many per batch, served by store key
        assert all(f == {"_id": f["_id"], "$and": [select]} for f in many)
        written = [i for f in many for i in f["_id"]["$in"]]
    assert [k(i) for i in written] == [k(i) for i in ids]  # BSON order
    assert database.upload.find_one({"_id": 2}) == {"_id": 2, "process_status": "READY"}
    entry = database[LEDGER].find_one({"_id": "0001"})
    assert entry["last_id"] == datetime(2021, 1, 1)  # the last _id walked
    assert database.upload.find_one({"_id": "done"}) == {"_id": "done", "process_status": "READY"}


def test_status_json_lists_state_and_counts(database):
    legacy_data.populate(database, 20, processing=False)
    data = json.loads(datafix("status", "--json").stdout)
    fix = data["datafixes"][0]
    assert fix["id"] == "0001" and fix["state"] == "pending"
    assert fix["collections"]["upload"]["remaining"] > 0 and fix["collections"]["upload"]["invalid"] > 0
    datafix("upgrade", "--yes")
    fix = json.loads(datafix("status", "--json").stdout)["datafixes"][0]
    assert fix["state"] == "applied" and fix["collections"]["upload"].get("remaining", 0) == 0
    assert fix["ledger"]["counts"]["migrated"] > 0 and fix["ledger"]["host"]
