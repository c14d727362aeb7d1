"""Datafix 0001 on 20,000 legacy documents (embedded database), against two baselines.

    .venv/bin/python -m benchmarks.bench_datafix [--docs 20000] [--batch-size N] [--save-sample 1000]

1. the datafix (``migrations.command.upgrade``): ledger, lock, backups, batches;
2. a per-document mongoengine load-and-save loop (the naive way);
3. one bare ``update_many`` with the same pipeline: no ledger, backup or batching.

Round trips are counted by wrapping every mongomock collection method that would be one
request to a real server (reads, writes, counts, index creation). The save loop costs a
full collection scan per save on mongomock, so it runs on the first ``--save-sample``
documents of the same 20,000-document collection and its rate is extrapolated (said so
in the output). Ratios come from one run; expect some noise.
"""
from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import legacy_data  # noqa: E402  (tests/legacy_data.py: the generator)
from mongoengine import DynamicDocument, DynamicField  # noqa: E402
from mongomock_ng.collection import Collection  # noqa: E402

from migrations import command, script  # noqa: E402
from migrations.runner import DEFAULT_BATCH_SIZE  # noqa: E402
from proc import config, db, registry  # noqa: E402

URI = "mongomock://localhost/proc_bench"
COLLECTION = "upload"
ROUND_TRIP_METHODS = ("find", "find_one", "insert_one", "insert_many", "update_one", "update_many",
                      "replace_one", "bulk_write", "delete_one", "delete_many", "count_documents",
                      "find_one_and_update", "find_one_and_delete", "create_index", "aggregate",
                      "estimated_document_count")
calls = {"n": 0}


def count_round_trips() -> None:
    """Wrap each mongomock collection method that is one request on a real server."""
    for name in ROUND_TRIP_METHODS:
        original = getattr(Collection, name)

        @functools.wraps(original)
        def counted(self, *args, __original=original, **kwargs):
            calls["n"] += 1
            return __original(self, *args, **kwargs)

        setattr(Collection, name, counted)


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
    calls["n"] = 0
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0, calls["n"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--save-sample", type=int, default=1_000)
    args = parser.parse_args(argv)

    config.configure(mongodb_uri=URI)
    database = db.connect(URI)
    registry.load_models()
    data = legacy_data.generate(args.docs, collections=(COLLECTION,), processing=False, odd=False,
                                migrated=False, large_tasks_every=200)[COLLECTION]
    count_round_trips()
    fix = script.discover()[0].module

    fresh(database, data)
    result, t_fix, trips = timed(lambda: command.upgrade(batch_size=args.batch_size))
    report = result.reports[0]
    assert result.ok and report.totals()["migrated"] == args.docs, result.to_dict()
    assert database[COLLECTION].count_documents(fix.selector) == 0

    fresh(database, data)
    modified, t_bare, bare_trips = timed(
        lambda: database[COLLECTION].update_many(fix.IDLE, fix.UPGRADE_PIPELINE).modified_count)
    assert modified == args.docs

    fresh(database, data)
    sample = min(args.save_sample, args.docs)
    saved, t_save, save_trips = timed(lambda: save_loop(sample))
    assert saved == sample
    t_save_all = t_save / sample * args.docs

    rate = args.docs / t_fix
    print(f"documents: {args.docs:,} legacy documents in '{COLLECTION}' (embedded database), "
          f"batch size {args.batch_size:,}")
    print(f"datafix upgrade:        {t_fix:8.2f} s  {rate:10,.0f} docs/s  {trips} round trips")
    print(f"bare update_many:       {t_bare:8.2f} s  {args.docs / t_bare:10,.0f} docs/s  {bare_trips} round trip(s)")
    print(f"mongoengine save loop:  {t_save_all:8.2f} s  {args.docs / t_save_all:10,.0f} docs/s  "
          f"(measured on {sample:,} documents: {t_save:.2f} s, {save_trips} round trips; extrapolated)")
    print(f"speedup vs save loop:   {t_save_all / t_fix:8.1f}x   (goal >= 10x)")
    print(f"speed vs bare update:   {t_bare / t_fix:8.2f}x   (goal >= 0.5x)")
    print(f"round trips per 1,000:  {trips / args.docs * 1000:8.1f}    (goal <= 20)")
    print(f"peak documents held:    {report.peak_batch:8,}    (one batch: {args.batch_size:,})")
    # The embedded database has no network: a save costs no round-trip latency there. On a
    # real server each round trip costs at least the network latency; this is that floor.
    rtt = 0.001
    print(f"latency floor at {rtt * 1000:g} ms per round trip: save loop "
          f"{save_trips / sample * args.docs * rtt:,.1f} s, datafix {trips * rtt:,.3f} s")


if __name__ == "__main__":
    main()
