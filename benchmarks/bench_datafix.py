"""Datafix 0001 on legacy documents, against two baselines, on the embedded database and on a real server.

    .venv/bin/python -m benchmarks.bench_datafix [--docs 20000] [--real-docs 2000] [--batch-size N]
                                                 [--real-batch-size N] [--save-docs N] [--quick]
                                                 [--tier both|embedded|real]

On each tier (the embedded database, then a real server: ``MONGODB_URI=mongodb://...`` if
set, else a private SecantusDB started for the run), each on a fresh collection holding the
same generated documents (``benchmarks.legacy``: mixed ``_id`` types), in one run:

1. the datafix (``migrations.command.upgrade``): ledger, lock, checks, backups, batches;
2. a per-document mongoengine load-and-save loop (the naive way), on every document
   (``--save-docs N`` measures it on the first N only and extrapolates, said so);
3. one bare ``update_many`` with the same pipeline: no ledger, backup, checks or batching.

Round trips: on the embedded tier every mongomock collection method that would be one
request to a real server (reads, writes, counts, index creation), timed by outermost call
(a find's time is when its cursor is read); on the real tier the commands pymongo sent
(``getMore`` included), timed by the driver. The time by kind shows where the datafix's time
goes. Each batch is written by one ``bulk_write`` of ``UpdateOne({_id, ...selector})``,
a shape SecantusDB serves from its ``_id`` index (``_id $in`` plus the selector it scanned).
"""
from __future__ import annotations

import argparse
import copy
import gc
import time

from mongoengine import DynamicDocument, DynamicField

from benchmarks import legacy
from benchmarks.common import add_tier_argument, print_tiers, table, tiers
from migrations import command, keyset, script
from migrations.runner import DEFAULT_BATCH_SIZE
from proc import registry

DATABASE = "proc_bench_datafix"
COLLECTION = "upload"


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


def timed(tier, fn):
    """(value, seconds, round trips, seconds by kind of round trip)."""
    gc.collect()
    with tier.counter() as ops:
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
    return value, seconds, ops, dict(ops.times)


def snapshot(database) -> dict:
    return {keyset.key(d["_id"]): d for d in database[COLLECTION].find({})}


def run_tier(tier, n: int, batch_size: int, save_docs: int | None) -> dict:
    database = tier.connect(DATABASE)
    registry.load_models()
    data = legacy.uploads(n)
    fix = script.discover()[0].module

    fresh(database, data)
    result, t_fix, trips, where = timed(tier, lambda: command.upgrade(batch_size=batch_size))
    report = result.reports[0]
    assert result.ok and report.totals()["migrated"] == n, result.to_dict()
    assert database[COLLECTION].count_documents(fix.selector) == 0
    migrated = snapshot(database)
    print(f"  {tier.name} {n:,}: datafix {t_fix:.2f} s", flush=True)

    fresh(database, data)
    modified, t_bare, bare_trips, _ = timed(
        tier, lambda: database[COLLECTION].update_many(fix.IDLE, fix.UPGRADE_PIPELINE).modified_count)
    assert modified == n and snapshot(database) == migrated  # the same result, without a backup
    print(f"  {tier.name} {n:,}: bare update_many {t_bare:.2f} s", flush=True)

    fresh(database, data)
    sample = min(save_docs or n, n)
    saved, t_save, save_trips, _ = timed(tier, lambda: save_loop(sample))
    assert saved == sample
    if sample == n:
        assert database[COLLECTION].count_documents(fix.selector) == 0
    print(f"  {tier.name} {n:,}: save loop {t_save:.2f} s on {sample:,}", flush=True)
    tier.drop(DATABASE)
    return {"n": n, "batch_size": batch_size, "fix": (t_fix, trips, where), "bare": (t_bare, bare_trips),
            "save": (t_save, save_trips, sample), "peak": report.peak_batch}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000, help="legacy documents, embedded tier")
    parser.add_argument("--real-docs", type=int, default=2_000, help="legacy documents, real tier")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--real-batch-size", type=int, default=None,
                        help="batch size on the real tier (default: --batch-size)")
    parser.add_argument("--save-docs", type=int, default=None,
                        help="measure the save loop on this many documents and extrapolate "
                             "(default: all of them)")
    parser.add_argument("--quick", action="store_true", help="--docs 5000 --real-docs 1000")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.docs, args.real_docs = 5_000, 1_000
    sizes = {"embedded": args.docs, "real": args.real_docs}
    batches = {"embedded": args.batch_size, "real": args.real_batch_size or args.batch_size}

    results = {}
    with tiers(args.tier) as found:
        print(f"Datafix 0001 on legacy documents in '{COLLECTION}' (benchmarks.legacy); tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, sizes[tier.name], batches[tier.name], args.save_docs)
    names = list(results)

    print()
    print("each method on a fresh copy of the same documents; sizes: " + ", ".join(
        f"{name} {sizes[name]:,} documents, batch size {batches[name]:,}" for name in names))
    rows, per_doc = [], []
    for name in names:
        r = results[name]
        n = r["n"]
        t_fix, trips, _ = r["fix"]
        t_bare, bare_trips = r["bare"]
        t_save, save_trips, sample = r["save"]
        t_save_all = t_save / sample * n
        how = "all" if sample == n else f"EXTRAPOLATED from {sample:,}"
        rows += [
            [name, "datafix upgrade", f"{t_fix:.2f} s", f"{n / t_fix:,.0f}", f"{trips.total:,}"],
            [name, "bare update_many", f"{t_bare:.2f} s", f"{n / t_bare:,.0f}", f"{bare_trips.total:,}"],
            [name, f"mongoengine save loop ({how})", f"{t_save_all:.2f} s", f"{n / t_save_all:,.0f}",
             f"{save_trips.total / sample * n:,.0f}"],
            [name, "speedup vs save loop (goal >= 10x)", f"{t_save_all / t_fix:.2f}x", "", ""],
            [name, "speed vs bare update (goal >= 0.5x)", f"{t_bare / t_fix:.2f}x", "", ""],
            [name, "round trips per 1,000 docs (goal <= 20)", "", "", f"{trips.total / n * 1000:.1f}"],
            [name, f"peak documents held (goal: one batch, {r['batch_size']:,})", "", "", f"{r['peak']:,}"],
        ]
        per_doc.append(f"  {name}: per document: datafix {t_fix / n * 1e6:,.0f} us, bare update_many "
                       f"{t_bare / n * 1e6:,.0f} us, save loop {t_save_all / n * 1e6:,.0f} us")
    print(table(["tier", "", "time", "docs/s", "round trips"], rows, "<<>>>"))
    for line in per_doc:
        print(line)
    for name in names:
        t_fix, trips, where = results[name]["fix"]
        print(f"  {name}: datafix round trips: {trips.detail()}")
        print(f"  {name}: datafix time by operation: " + ", ".join(
            f"{op} {secs:.2f} s" for op, secs in sorted(where.items(), key=lambda kv: -kv[1]) if secs >= 0.005)
            + f", other (Python) {max(t_fix - sum(where.values()), 0):.2f} s")
    if "embedded" in results:
        # The embedded database has no network: a save costs no round-trip latency there. On a
        # real server each round trip costs at least the network latency; this is that floor.
        r = results["embedded"]
        rtt = 0.001
        save_trips = r["save"][1].total / r["save"][2] * r["n"]
        print(f"  latency floor at {rtt * 1000:g} ms per round trip for {r['n']:,} documents: save loop "
              f"{save_trips * rtt:,.1f} s, datafix {r['fix'][1].total * rtt:,.3f} s")


if __name__ == "__main__":
    main()
