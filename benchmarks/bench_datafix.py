"""Datafix 0001 on 20,000 legacy documents (embedded database), against two baselines.

    .venv/bin/python -m benchmarks.bench_datafix [--docs 20000] [--batch-size N] [--save-docs N]

Each on its own fresh collection holding the same generated documents, in one run:

1. the datafix (``migrations.command.upgrade``): ledger, lock, checks, backups, batches;
2. a per-document mongoengine load-and-save loop (the naive way), on every document
   (``--save-docs N`` measures it on the first N only and extrapolates, said so);
3. one bare ``update_many`` with the same pipeline: no ledger, backup, checks or batching.

Round trips are counted by wrapping every mongomock collection method that would be one
request to a real server (reads, writes, counts, index creation); the time spent in each
kind (a find's time is when its cursor is read) shows where the datafix's time goes.
Ratios come from one run on a shared machine; expect some noise.
"""
from __future__ import annotations

import argparse
import collections
import copy
import functools
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import legacy_data  # noqa: E402  (tests/legacy_data.py: the generator)
from mongoengine import DynamicDocument, DynamicField  # noqa: E402
from mongomock_ng.collection import Collection, Cursor  # noqa: E402

from migrations import command, keyset, script  # noqa: E402
from migrations.runner import DEFAULT_BATCH_SIZE  # noqa: E402
from proc import config, db, registry  # noqa: E402

URI = "mongomock://localhost/proc_bench"
COLLECTION = "upload"
ROUND_TRIP_METHODS = ("find", "find_one", "insert_one", "insert_many", "update_one", "update_many",
                      "replace_one", "bulk_write", "delete_one", "delete_many", "count_documents",
                      "find_one_and_update", "find_one_and_delete", "create_index", "aggregate",
                      "estimated_document_count")
calls = {"n": 0, "depth": 0, "time": collections.Counter()}


def count_round_trips() -> None:
    """Wrap each mongomock collection method that is one request on a real server (and the
    cursor reads, where a find does its work), timing the outermost call of each kind."""
    def wrap(owner, name, label, counts):
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(self, *args, __original=original, **kwargs):
            if calls["depth"]:
                return __original(self, *args, **kwargs)
            calls["n"] += counts
            calls["depth"] += 1
            t0 = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                calls["depth"] -= 1
                calls["time"][label] += time.perf_counter() - t0

        setattr(owner, name, counted)

    for name in ROUND_TRIP_METHODS:
        wrap(Collection, name, name, 1)
    wrap(Cursor, "__next__", "find", 0)


def fresh(database, data) -> None:
    for name in database.list_collection_names():
        database.drop_collection(name)
    database[COLLECTION].insert_many(copy.deepcopy(data))


class LegacyUpload(DynamicDocument):
    """The naive way: load each document with mongoengine, change it, save it."""

    meta = {"collection": COLLECTION}
    id = DynamicField(primary_key=True)  # the legacy _ids are of mixed types


def save_loop(limit: int) -> int:
    fix = script.discover()[0].module
    done = 0
    for doc in LegacyUpload.objects(__raw__=fix.IDLE).limit(limit):
        doc.process_status = fix.IDLE_MAP[doc.tasks_status]
        doc.current_process_step = getattr(doc, "current_task", None)
        for name in ("tasks", "current_task", "tasks_status"):
            if hasattr(doc, name):
                delattr(doc, name)
        doc.save()
        done += 1
    return done


def timed(fn):
    gc.collect()
    calls["n"] = 0
    calls["time"].clear()
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0, calls["n"], dict(calls["time"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--save-docs", type=int, default=None,
                        help="measure the save loop on this many documents and extrapolate "
                             "(default: all of them)")
    args = parser.parse_args(argv)

    config.configure(mongodb_uri=URI)
    database = db.connect(URI)
    registry.load_models()
    data = legacy_data.generate(args.docs, collections=(COLLECTION,), processing=False, odd=False,
                                migrated=False, large_tasks_every=200)[COLLECTION]
    count_round_trips()
    fix = script.discover()[0].module
    n = args.docs

    fresh(database, data)
    result, t_fix, trips, where = timed(lambda: command.upgrade(batch_size=args.batch_size))
    report = result.reports[0]
    assert result.ok and report.totals()["migrated"] == n, result.to_dict()
    assert database[COLLECTION].count_documents(fix.selector) == 0
    migrated = snapshot(database)

    fresh(database, data)
    modified, t_bare, bare_trips, _ = timed(
        lambda: database[COLLECTION].update_many(fix.IDLE, fix.UPGRADE_PIPELINE).modified_count)
    assert modified == n and snapshot(database) == migrated  # the same result, without a backup

    fresh(database, data)
    sample = min(args.save_docs or n, n)
    saved, t_save, save_trips, _ = timed(lambda: save_loop(sample))
    assert saved == sample
    if sample == n:
        assert database[COLLECTION].count_documents(fix.selector) == 0
    t_save_all = t_save / sample * n
    how = (f"measured on all {n:,} documents" if sample == n else
           f"EXTRAPOLATED from {sample:,} documents ({t_save:.2f} s, {save_trips} round trips)")

    print(f"documents: {n:,} legacy documents in '{COLLECTION}' (embedded database, mongomock-ng), "
          f"batch size {args.batch_size:,}; each method on a fresh copy of the same documents")
    print(f"datafix upgrade:        {t_fix:8.2f} s  {n / t_fix:10,.0f} docs/s  {trips} round trips")
    print(f"bare update_many:       {t_bare:8.2f} s  {n / t_bare:10,.0f} docs/s  {bare_trips} round trip(s)")
    print(f"mongoengine save loop:  {t_save_all:8.2f} s  {n / t_save_all:10,.0f} docs/s  "
          f"{save_trips / sample * n:,.0f} round trips ({how})")
    print(f"speedup vs save loop:   {t_save_all / t_fix:8.1f}x   (goal >= 10x)")
    print(f"speed vs bare update:   {t_bare / t_fix:8.2f}x   (goal >= 0.5x)")
    print(f"round trips per 1,000:  {trips / n * 1000:8.1f}    (goal <= 20)")
    print(f"peak documents held:    {report.peak_batch:8,}    (goal: one batch, {args.batch_size:,})")
    print("datafix time by operation: " + ", ".join(
        f"{name} {secs:.2f} s" for name, secs in sorted(where.items(), key=lambda kv: -kv[1])
        if secs >= 0.005) + f", other {t_fix - sum(where.values()):.2f} s")
    print(f"per document: datafix {t_fix / n * 1e6:,.0f} us, bare update_many {t_bare / n * 1e6:,.0f} us, "
          f"save loop {t_save_all / n * 1e6:,.0f} us")
    # The embedded database has no network: a save costs no round-trip latency there. On a
    # real server each round trip costs at least the network latency; this is that floor.
    rtt = 0.001
    print(f"latency floor at {rtt * 1000:g} ms per round trip: save loop "
          f"{save_trips / sample * n * rtt:,.1f} s, datafix {trips * rtt:,.3f} s")


def snapshot(database) -> dict:
    return {keyset.key(d["_id"]): d for d in database[COLLECTION].find({})}


if __name__ == "__main__":
    main()
