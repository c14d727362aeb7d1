"""Bulk redispatch of 10,000 FAILURE processes vs. a loop over the single action, and the cost
of the list's unindexed options (``q``, ``sort=attempt``) at 100,000 processes, on both tiers.

    .venv/bin/python -m benchmarks.bench_bulk [--processes 10000] [--loop N] [--real-loop N]
                                              [--list-processes 100000] [--quick]
                                              [--tier both|embedded|real]

Part 1, on each tier (the embedded database, then a real server: ``MONGODB_URI=mongodb://...``
if set, else a private SecantusDB started for the run), with the model indexes created:
``--processes`` FAILURE entries are seeded, then

1. ``proc.ops.bulk.run("redispatch", status=FAILURE, kind=entry.process_entry)``: what
   ``POST /api/procs/bulk`` does;
2. after seeding them again, a loop of ``proc.ops.admin.redispatch`` (the single action, what
   ``POST /api/procs/<collection>/<id>/redispatch`` calls) over ``--loop`` of them (default:
   all on the embedded tier, 1,000 on the real one); its figures per process
   are multiplied up to ``--processes`` and marked "extrapolated".

Both send every message to the broker (kombu's in-memory transport, nothing consumes them).
Round trips are mongomock method calls on the embedded tier and the commands pymongo sent on
the real one (``benchmarks.common``).

Part 2: ``--list-processes`` processes (10% FAILURE, errors and steps of 40 characters), then
the first page (50) of ``GET /api/procs`` by default sort, with ``sort=attempt``, with ``q``,
and with ``status=FAILURE&q=``, median of 3.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

from benchmarks.common import add_tier_argument, print_tiers, table, tiers
from proc import config, registry
from proc.ops import admin, bulk
from proc.run import messaging
from proc.ops.filters import Filter
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

DATABASE = "proc_bench_bulk"
FAILED = Filter(statuses=("FAILURE",), kind="entry.process_entry")


def seed_failed(n: int) -> list:
    from proc.demo.models import Entry

    now = utcnow()
    docs = [{"upload_id": "u", "path": f"f{i}.partial", "process_status": S.FAILURE.value, "attempt": 1,
             "current_process": "process_entry", "process_args": {"args": [], "kwargs": {}},
             "celery_task_id": f"task-{i}", "last_status_change": now - timedelta(seconds=60 + i),
             "complete_time": now, "create_time": now, "errors": ["cannot parse: unexpected end of file"],
             "warnings": [], "history": [{"status": "FAILURE", "event": "fail", "time": now, "attempt": 1}]}
            for i in range(n)]
    coll = Entry._get_collection()
    coll.delete_many({})
    return coll.insert_many(docs).inserted_ids


def measure(tier, fn):
    with tier.counter() as ops:
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
    return ops, seconds, result


def part1(tier, n: int, loop: int) -> dict:
    ids = seed_failed(n)
    ops, seconds, result = measure(tier, lambda: bulk.run("redispatch", FAILED, by="bench"))
    assert result.changed == n and not result.skipped, (result.changed, result.skipped[:3])
    ids = seed_failed(n)
    subset = ids[:loop]

    def single_loop():
        for pk in subset:
            admin.redispatch("entry", pk, by="bench")

    loop_ops, loop_seconds, _ = measure(tier, single_loop)
    from proc.demo.models import Entry

    assert Entry._get_collection().count_documents({"attempt": 2}) == len(subset)
    scale = n / len(subset)
    return {"n": n, "bulk": (ops.total, seconds, ops.detail()), "loop": len(subset),
            "single": (loop_ops.total * scale, loop_seconds * scale, loop_ops.detail())}


def seed_list(n: int) -> None:
    from proc.demo.models import Entry

    rng = random.Random(n)
    now = utcnow()
    coll = Entry._get_collection()
    coll.delete_many({})
    for start in range(0, n, 10_000):
        docs = []
        for i in range(start, min(n, start + 10_000)):
            failed = rng.random() < 0.1
            docs.append({"upload_id": "u", "path": f"f{i}", "attempt": rng.randint(1, 5),
                         "process_status": S.FAILURE.value if failed else S.SUCCESS.value,
                         "current_process": "process_entry", "last_status_change": now - timedelta(seconds=i),
                         "current_process_step": f"parsing file {i:08d} of the upload batch",
                         "errors": [f"disk full while writing part {i % 977}"] if failed else [],
                         "create_time": now, "warnings": [], "history": []})
        coll.insert_many(docs)


def part2(tier, n: int, client) -> dict:
    seed_list(n)
    out = {}
    for label, url in [("default sort", "/api/procs?limit=50"), ("sort=attempt", "/api/procs?limit=50&sort=attempt"),
                       ("q", "/api/procs?limit=50&q=part%20976"),
                       ("status=FAILURE + q", "/api/procs?limit=50&status=FAILURE&q=part%20976")]:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.get_data(as_text=True)
        out[label] = statistics.median(times)
    return out


def run_tier(tier, args) -> dict:
    tier.connect(DATABASE)
    registry.load_models()
    for cls in registry.proc_classes():
        cls.ensure_indexes()  # as a deployed database has them
    messaging.set_app(messaging.make_app())  # the in-memory broker: real publishes, no consumer
    config.configure(bulk_limit=max(args.processes, 10_000))
    loop = (args.real_loop if tier.real else args.loop) or args.processes
    row = {"part1": part1(tier, args.processes, min(loop, args.processes))}
    print(f"  {tier.name}: bulk {row['part1']['bulk'][1]:.2f} s, loop over {row['part1']['loop']:,} "
          f"single actions done", flush=True)
    if args.list_processes:
        from api import create_app

        client = create_app({"TESTING": True, "PROC_API_TOKEN": None}).test_client()
        row["part2"] = part2(tier, args.list_processes, client)
    tier.drop(DATABASE)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10_000)
    parser.add_argument("--loop", type=int, default=None, help="single actions timed, embedded (default: all)")
    parser.add_argument("--real-loop", type=int, default=1_000, help="single actions timed, real tier")
    parser.add_argument("--list-processes", type=int, default=100_000, help="0: skip part 2")
    parser.add_argument("--quick", action="store_true", help="--processes 2000 --real-loop 200 --list-processes 10000")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.real_loop, args.list_processes = 2_000, 200, 10_000
    results = {}
    with tiers(args.tier) as found:
        print("bulk redispatch vs a loop over the single action; tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, args)

    print()
    rows = []
    for name, r in results.items():
        p = r["part1"]
        mark = "" if p["loop"] == p["n"] else f" (extrapolated from {p['loop']:,})"
        rows.append([name, f"{p['n']:,}", f"{p['bulk'][0]:,} trips, {p['bulk'][1]:.2f} s",
                     f"{p['single'][0]:,.0f} trips, {p['single'][1]:.2f} s{mark}",
                     f"{p['single'][0] / p['bulk'][0]:.2f}x", f"{p['single'][1] / p['bulk'][1]:.2f}x"])
    print(table(["tier", "FAILURE processes", "bulk redispatch", "loop over the single action",
                 "trips ratio", "time ratio"], rows, "<>>>>>"))
    for name, r in results.items():
        print(f"  {name} round trips: bulk: {r['part1']['bulk'][2]}; loop of {r['part1']['loop']:,}: "
              f"{r['part1']['single'][2]}")
    if args.list_processes:
        print()
        labels = list(next(iter(results.values()))["part2"])
        rows = [[name, f"{args.list_processes:,}", *[f"{r['part2'][k] * 1000:.0f} ms" for k in labels]]
                for name, r in results.items()]
        print(f"GET /api/procs, first page of 50, median of 3 (10% FAILURE):")
        print(table(["tier", "processes", *labels], rows, "<>" + ">" * len(labels)))


if __name__ == "__main__":
    main()
