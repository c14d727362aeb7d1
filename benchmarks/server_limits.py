"""What one operation of each shape proc sends costs, at two collection sizes, on both tiers.

    .venv/bin/python -m benchmarks.server_limits [--sizes 2000 10000] [--ids 100 500] [--tier ...]

For each tier (the embedded database; a real server: ``MONGODB_URI=mongodb://...`` if set,
else a private SecantusDB started for the run) and each size, one collection of that many
process documents with the model's indexes, then the median time of each operation
(after one untimed call, repeated until about a second has passed, at most 7 times, at
least once) and the ratio
of the large size to the small one: about 1x means the time does not grow with the
collection (an index or key lookup), about the size ratio means a scan of the collection.

The shapes are those of the state machine (``_id`` + ``attempt`` + ``process_status``
conditional writes, claimed with ``find_one_and_update``), the monitor's sweep (``$in`` of
statuses plus a time range, and an equality plus a range), the status aggregation, and the
datafix batch (``_id $in`` the batch's ids, alone and with the selector under ``$and``).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

from pymongo import ReturnDocument

from benchmarks.common import add_tier_argument, print_tiers, table, tiers
from proc.timeutil import utcnow

DATABASE = "proc_bench_limits"
STATUSES = ("SUCCESS",) * 8 + ("FAILURE", "RUNNING", "PENDING", "DISPATCHED")
INDEXES = (("process_status", "last_status_change"), ("process_status", "current_process"),
           ("process_status", "heartbeat"), ("process_status", "deadline"))
SELECTOR = {"tasks_status": {"$in": ["CREATED", "SUCCESS", "FAILURE"]}, "tasks_status.0": {"$exists": False}}


def seed(coll, n: int) -> list:
    rng = random.Random(n)
    now = utcnow()
    docs = []
    for i in range(n):
        status = STATUSES[i % len(STATUSES)]
        docs.append({"process_status": status, "attempt": 1, "current_process": "run",
                     "last_status_change": now - timedelta(seconds=rng.uniform(1, 3600)),
                     "heartbeat": now, "deadline": now + timedelta(hours=1),
                     "tasks_status": ("CREATED", "SUCCESS", "FAILURE")[i % 3], "history": []})
    ids = coll.insert_many(docs).inserted_ids
    for keys in INDEXES:
        coll.create_index([(k, 1) for k in keys])
    return ids


def measure(fn, budget: float = 1.0, most: int = 7) -> float:
    """Median seconds of ``fn`` after one untimed call (connections, caches)."""
    fn()
    times = []
    started = time.perf_counter()
    while len(times) < most and (not times or time.perf_counter() - started < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def operations(coll, ids: list, id_counts: list[int]):
    """(label, function) per shape; every write leaves the document as it found it."""
    target = ids[len(ids) // 2]
    status = coll.find_one({"_id": target})["process_status"]
    now = utcnow()
    running = {"_id": target, "attempt": 1, "process_status": {"$in": ["RUNNING", "SUCCESS", "FAILURE",
                                                                       "PENDING", "DISPATCHED"]}}
    ops = [
        ("find_one {_id}", lambda: coll.find_one({"_id": target})),
        ("find_one {_id, attempt, process_status}",
         lambda: coll.find_one({"_id": target, "attempt": 1, "process_status": status})),
        ("update_one {_id, attempt, process_status $in} $set",
         lambda: coll.update_one(running, {"$set": {"current_process_step": "x"}})),
        ("find_one_and_update {_id} (BEFORE)",
         lambda: coll.find_one_and_update({"_id": target}, {"$set": {"current_process_step": "y"}},
                                          return_document=ReturnDocument.BEFORE)),
        ("find_one_and_update {_id, attempt, process_status $in}",
         lambda: coll.find_one_and_update(running, {"$set": {"current_process_step": "z"}})),
        ("find {process_status: RUNNING, heartbeat < t}  (sweep)",
         lambda: list(coll.find({"process_status": "RUNNING", "heartbeat": {"$lt": now - timedelta(hours=1)}}))),
        ("find {process_status $in [2], last_status_change < t}  (sweep)",
         lambda: list(coll.find({"process_status": {"$in": ["PENDING", "DISPATCHED"]},
                                 "last_status_change": {"$lt": now - timedelta(hours=2)}}))),
        ("count_documents {process_status: FAILURE}", lambda: coll.count_documents({"process_status": "FAILURE"})),
        ("aggregate $group by status (the status page)",
         lambda: list(coll.aggregate([{"$group": {"_id": "$process_status", "n": {"$sum": 1}}}]))),
    ]
    for k in id_counts:
        batch = ids[:k]
        ops.append((f"find {{_id $in {k} ids}}", lambda b=batch: list(coll.find({"_id": {"$in": b}}, {"_id": 1}))))
        ops.append((f"find {{_id $in {k} ids, $and: [selector]}}  (datafix batch)",
                    lambda b=batch: list(coll.find({"_id": {"$in": b}, "$and": [SELECTOR]}, {"_id": 1}))))
    return ops


def run_tier(tier, sizes: list[int], id_counts: list[int]) -> dict:
    database = tier.connect(DATABASE)
    out = {}
    for n in sizes:
        database.drop_collection("limits")
        coll = database["limits"]
        started = time.perf_counter()
        ids = seed(coll, n)
        seeded = time.perf_counter() - started
        out[n] = {"insert_many + 4 indexes": seeded}
        for label, fn in operations(coll, ids, id_counts):
            out[n][label] = measure(fn)
        print(f"  {tier.name} {n:,} documents: done (seeded in {seeded:.1f} s)", flush=True)
    tier.drop(DATABASE)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2_000, 10_000])
    parser.add_argument("--ids", type=int, nargs="+", default=[100, 500],
                        help="how many _ids the $in lists hold")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    small, large = args.sizes
    results = {}
    with tiers(args.tier) as found:
        print("One operation of each shape, median milliseconds; tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, args.sizes, args.ids)
    print()
    headers = ["operation"]
    for name in results:
        headers += [f"{name} {small:,}", f"{name} {large:,}", f"{name} x"]
    labels = list(next(iter(results.values()))[small])
    rows = []
    for label in labels:
        row = [label]
        for name, by_size in results.items():
            a, b = by_size[small][label], by_size[large][label]
            unit = "s" if label.startswith("insert_many") else "ms"
            scale = 1 if unit == "s" else 1000
            row += [f"{a * scale:,.{2 if a * scale < 10 else 1}f} {unit}",
                    f"{b * scale:,.{2 if b * scale < 10 else 1}f} {unit}", f"{b / a:.1f}x"]
        rows.append(row)
    print(table(headers, rows))
    print(f"x = time at {large:,} documents / time at {small:,} ({large / small:.0f}x the documents): "
          "~1x does not grow with the collection, ~{0:.0f}x scans it".format(large / small))


if __name__ == "__main__":
    main()
