"""Datafix 0001 on legacy documents, against two baselines, on the embedded database and on a real server.

    .venv/bin/python -m benchmarks.bench_datafix [--sizes 5000,20000] [--batch-size N]
                                                 [--loop-docs N] [--quick] [--tier both|embedded|real]

On each tier (the embedded database, then a real server: ``MONGODB_URI=mongodb://...`` if
set, else a private SecantusDB started for the run), for each size, each on a fresh
collection holding the same generated documents (``benchmarks.legacy``: mixed ``_id``
types), in one run:

1. the datafix (``migrations.command.upgrade``): ledger, lock, checks, a backup of every
   replaced value, batches; then once more on a fresh copy under ``tracemalloc`` for its
   peak memory (not timed: tracing slows Python down);
2. the per-document loop: one ``find`` over the documents to migrate, then one
   ``update_one`` by ``_id`` per document (``--loop-docs N`` measures it on the first N
   only and extrapolates, said so);
3. one bare ``update_many`` with the same pipeline: no ledger, backup, checks or batching
   (its result is checked equal to the datafix's).

Goals (issue 12, on the real server): the datafix at least 2x faster than the
per-document loop and at most 3.3x the bare ``update_many``; at most 20 round trips per
1,000 documents; the largest size at most (ratio of sizes / 4) x 5 the time of the
smallest (20,000 at most 5x 5,000), and a tracemalloc peak at most 1.5x the smallest's.

Round trips: on the embedded tier every mongomock collection method that would be one
request to a real server; on the real tier the commands pymongo sent, counted by a
``CommandListener`` (``getMore`` included). The time by kind shows where the time goes.
"""
from __future__ import annotations

import argparse
import copy
import gc
import time
import tracemalloc

from benchmarks import legacy
from benchmarks.common import add_tier_argument, print_tiers, table, tiers
from migrations import command, keyset, match, script
from migrations.runner import DEFAULT_BATCH_SIZE
from proc import registry

DATABASE = "proc_bench_datafix"
COLLECTION = "upload"
FIX = script.discover()[0].module


def fresh(database, data) -> None:
    for name in database.list_collection_names():
        database.drop_collection(name)
    database[COLLECTION].insert_many(copy.deepcopy(data))


def per_document_loop(collection, limit: int) -> int:
    """The naive way: read the documents to migrate, then write each one by its ``_id``."""
    done = 0
    for doc in collection.find(FIX.IDLE, {"tasks_status": 1, "current_task": 1}).limit(limit):
        collection.update_one({"_id": doc["_id"]}, {
            "$set": {"process_status": FIX.IDLE_MAP[doc["tasks_status"]],
                     "current_process_step": doc.get("current_task")},
            "$unset": {f: "" for f in FIX.LEGACY_FIELDS}})
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


def peak_memory(fn) -> int:
    """The tracemalloc peak (bytes above what was allocated before) while ``fn`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def snapshot(database) -> dict:
    return {keyset.key(d["_id"]): d for d in database[COLLECTION].find({})}


def run_size(tier, database, n: int, batch_size: int, loop_docs: int | None) -> dict:
    data = legacy.uploads(n)
    upgrade = lambda: command.upgrade(batch_size=batch_size)  # noqa: E731

    fresh(database, data)
    result, t_fix, trips, where = timed(tier, upgrade)
    report = result.reports[0]
    assert result.ok and report.totals()["migrated"] == n, result.to_dict()
    assert database[COLLECTION].count_documents(FIX.selector) == 0
    assert database["datafix_backup"].count_documents({}) == n  # a backup of every document
    migrated = snapshot(database)
    print(f"  {tier.name} {n:,}: datafix {t_fix:.2f} s", flush=True)

    fresh(database, data)
    peak = peak_memory(upgrade)
    print(f"  {tier.name} {n:,}: datafix tracemalloc peak {peak / 1e6:.1f} MB", flush=True)

    fresh(database, data)
    modified, t_bare, bare_trips, _ = timed(
        tier, lambda: database[COLLECTION].update_many(FIX.IDLE, FIX.UPGRADE_PIPELINE).modified_count)
    assert modified == n and snapshot(database) == migrated  # the same result, without a backup
    print(f"  {tier.name} {n:,}: bare update_many {t_bare:.2f} s", flush=True)

    fresh(database, data)
    sample = min(loop_docs or n, n)
    looped, t_loop, loop_trips, _ = timed(tier, lambda: per_document_loop(database[COLLECTION], sample))
    assert looped == sample
    if sample == n:
        assert snapshot(database) == migrated
    print(f"  {tier.name} {n:,}: per-document loop {t_loop:.2f} s on {sample:,}", flush=True)
    return {"n": n, "fix": (t_fix, trips, where), "bare": (t_bare, bare_trips), "peak": peak,
            "loop": (t_loop / sample * n, loop_trips.total / sample * n, sample),
            "held": report.peak_batch}


def run_tier(tier, sizes, batch_size: int, loop_docs: int | None) -> list[dict]:
    database = tier.connect(DATABASE)
    registry.load_models()
    shape = match.shape(FIX.IDLE, FIX.UPGRADE_PIPELINE)
    if shape == match.EMBEDDED:
        shape = "one update_many per batch, _id $in plus the selector (store-key lookups)"
    elif shape is None:
        shape = "one bulk_write of UpdateOne({_id, ...selector})"
    else:
        shape = f"update_many per {match.WRITE_IDS} _ids, _id $in only, $cond on the selector"
    print(f"  {tier.name}: batch write: {shape}", flush=True)
    try:
        return [run_size(tier, database, n, batch_size, loop_docs) for n in sizes]
    finally:
        tier.drop(DATABASE)


def _verdict(value: float, limit: float, at_least: bool) -> str:
    met = value >= limit if at_least else value <= limit
    return "met" if met else "NOT met"


def rows_for(name: str, results: list[dict]) -> list[list]:
    rows = []
    for r in results:
        n = r["n"]
        t_fix, trips, _ = r["fix"]
        t_bare, bare_trips = r["bare"]
        t_loop, loop_trips, sample = r["loop"]
        how = "" if sample == n else f" (EXTRAPOLATED from {sample:,})"
        faster, over_bare, per_k = t_loop / t_fix, t_fix / t_bare, trips.total / n * 1000
        rows += [
            [name, f"{n:,}", "datafix upgrade", f"{t_fix:.2f} s", f"{trips.total:,}", ""],
            [name, f"{n:,}", "bare update_many", f"{t_bare:.2f} s", f"{bare_trips.total:,}", ""],
            [name, f"{n:,}", f"per-document loop{how}", f"{t_loop:.2f} s", f"{loop_trips:,.0f}", ""],
            [name, f"{n:,}", "loop / datafix (goal >= 2x)", f"{faster:.2f}x", "", _verdict(faster, 2, True)],
            [name, f"{n:,}", "datafix / bare update (goal <= 3.3x)", f"{over_bare:.2f}x", "",
             _verdict(over_bare, 3.3, False)],
            [name, f"{n:,}", "round trips per 1,000 docs (goal <= 20)", "", f"{per_k:.1f}",
             _verdict(per_k, 20, False)],
            [name, f"{n:,}", "tracemalloc peak", f"{r['peak'] / 1e6:.1f} MB", "", ""],
            [name, f"{n:,}", "documents held at once (one batch)", f"{r['held']:,}", "", ""],
        ]
    if len(results) > 1:
        small, large = results[0], results[-1]
        scale = large["n"] / small["n"]
        time_limit, t_ratio = 5 * scale / 4, large["fix"][0] / small["fix"][0]
        m_ratio = large["peak"] / max(small["peak"], 1)
        label = f"{large['n']:,} / {small['n']:,}"
        rows += [
            [name, label, f"time ratio (goal <= {time_limit:g}x)", f"{t_ratio:.2f}x", "",
             _verdict(t_ratio, time_limit, False)],
            [name, label, "tracemalloc peak ratio (goal <= 1.5x)", f"{m_ratio:.2f}x", "",
             _verdict(m_ratio, 1.5, False)],
        ]
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000", help="legacy documents, comma-separated")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--loop-docs", type=int, default=None,
                        help="measure the per-document loop on this many documents and extrapolate "
                             "(default: all of them)")
    parser.add_argument("--quick", action="store_true", help="--sizes 1000,4000")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    sizes = [1000, 4000] if args.quick else [int(s) for s in args.sizes.split(",")]

    results = {}
    with tiers(args.tier) as found:
        print(f"Datafix 0001 on legacy documents in '{COLLECTION}' (benchmarks.legacy); tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, sizes, args.batch_size, args.loop_docs)

    print()
    print(f"each method on a fresh copy of the same documents; batch size {args.batch_size:,}")
    rows = [row for name, res in results.items() for row in rows_for(name, res)]
    print(table(["tier", "docs", "", "time", "round trips", "goal"], rows, "<><>>>"))
    for name, res in results.items():
        for r in res:
            t_fix, trips, where = r["fix"]
            print(f"  {name} {r['n']:,}: datafix round trips: {trips.detail()}")
            print(f"  {name} {r['n']:,}: datafix time by operation: " + ", ".join(
                f"{op} {secs:.2f} s" for op, secs in sorted(where.items(), key=lambda kv: -kv[1])
                if secs >= 0.005) + f", other (Python) {max(t_fix - sum(where.values()), 0):.2f} s")


if __name__ == "__main__":
    main()
