"""The monitor's sweep over 100,000 processes of which 100 are stuck, vs. a naive scan, on both tiers.

    .venv/bin/python -m benchmarks.bench_sweep [--processes 100000] [--real-processes N] [--stuck 100]
                                               [--repeat 3] [--quick] [--tier both|embedded|real]

On each tier (the embedded database, then a real server: ``MONGODB_URI=mongodb://...`` if
set, else a private SecantusDB started for the run), with the model indexes created, seeds
the demo's four Proc collections (mostly finished processes, some healthy active ones, and
``--stuck`` past their thresholds for every reason the monitor knows), then measures side
by side, median of ``--repeat``:

1. the sweep's detection, ``proc.monitor.stuck.find()``: its queries, the documents each returns
   and the index each is meant to use (on the real tier: the winning plan ``explain()``
   reports);
2. a naive scan: read every document of every collection and judge each in Python with
   the same ``stuck.diagnose()``.

Both must name the same processes. Finally one full ``monitor.sweep()`` recovers the stuck
ones (on the embedded in-memory broker: sends are real publishes, nothing consumes them).
On the embedded database (mongomock) queries run in Python without indexes.
"""
from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
from datetime import timedelta

from benchmarks.common import add_tier_argument, print_tiers, table, tiers
from proc import config, monitor, registry
from proc.monitor import stuck
from proc.run import messaging
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

DATABASE = "proc_bench_sweep"
#: Healthy processes: share of each status (mostly finished, as in production).
MIX = {S.READY: 4, S.PENDING: 1, S.DISPATCHED: 1, S.RUNNING: 3, S.WAITING_FOR_RESULT: 1,
       S.SUCCESS: 84, S.FAILURE: 6}
#: Per collection: which stuck states it gets (round-robin), as (status, how).
STUCK_KINDS = {
    "entry": [("PENDING", "old"), ("DISPATCHED", "old"), ("RUNNING", "stale")],
    "precheck": [("RUNNING", "stale"), ("RUNNING", "overran"), ("DISPATCHED", "old")],
    "upload": [("WAITING_FOR_RESULT", "overran"), ("RUNNING", "overran")],
    "project": [("WAITING_FOR_RESULT", "overran"), ("DISPATCHED", "old")],
}
METHODS = {"entry": ("process_entry", {"upload_id": "u", "path": "f"}),
           "precheck": ("run", {"project_id": "p", "check": "c"}),
           "upload": ("process_upload", {"name": "u"}),
           "project": ("run_prechecks", {"name": "p"})}


def seed(n: int, n_stuck: int) -> set:
    """``n`` processes over the demo collections, ``n_stuck`` of them stuck; returns their ids."""
    rng = random.Random(n)
    now = utcnow()
    statuses, weights = list(MIX), list(MIX.values())
    names = sorted(METHODS)
    stuck_ids = set()
    for index, name in enumerate(names):
        cls = registry.class_for(name)
        method, fields = METHODS[name]
        share = n // len(names) + (1 if index < n % len(names) else 0)
        stuck_here = n_stuck // len(names) + (1 if index < n_stuck % len(names) else 0)
        docs = []
        for i in range(share):
            doc = {**fields, "attempt": 1, "current_process": method, "create_time": now,
                   "history": [], "errors": [], "warnings": [], "child_collections": [],
                   "celery_task_id": f"bench-{name}-{i}", "process_args": {"args": [], "kwargs": {}}}
            if i < stuck_here:
                status, how = STUCK_KINDS[name][i % len(STUCK_KINDS[name])]
                since = now - timedelta(hours=3)
                doc.update(process_status=status, last_status_change=since)
                if status != "PENDING":
                    doc["deadline"] = since + timedelta(hours=4 if how != "overran" else 1)
                if status == "RUNNING":
                    doc.update(worker_hostname="w@bench",
                               heartbeat=since if how == "stale" else now - timedelta(seconds=1))
            else:
                status = rng.choices(statuses, weights)[0]
                since = now - timedelta(seconds=rng.uniform(1, 30))
                doc.update(process_status=status.value, last_status_change=since)
                if status in (S.DISPATCHED, S.RUNNING, S.WAITING_FOR_RESULT):
                    doc["deadline"] = now + timedelta(hours=1)
                if status == S.RUNNING:
                    doc.update(heartbeat=now - timedelta(seconds=1), worker_hostname="w@bench")
                if status == S.READY:
                    doc["current_process"] = None
            docs.append(doc)
        result = cls._get_collection().insert_many(docs)
        stuck_ids.update((name, _id) for _id in result.inserted_ids[:stuck_here])
    return stuck_ids


def naive_scan(now) -> list:
    """Read every document and judge each one in Python."""
    from proc.run import limits

    usage = limits.usage()
    found = []
    by = {}
    for kind in registry.kinds():
        by.setdefault(kind.collection, {})[kind.method] = kind
    for collection, kinds in sorted(by.items()):
        for raw in registry.class_for(collection)._get_collection().find({}, stuck.PROJECTION):
            kind = kinds.get(raw.get("current_process"))
            if kind is not None and raw.get("process_status") in S.__members__:
                verdict = stuck.diagnose(kind, raw, now, usage)
                if verdict is not None:
                    found.append((collection, raw["_id"], verdict[0]))
    return found


def timed(tier, fn, repeat: int):
    """(median seconds, round trips of one call by method, result of the first call)."""
    with tier.counter() as ops:
        result = fn()
        trips = dict(ops.counts)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), trips, result


def show(query: dict) -> str:
    parts = []
    for key, value in query.items():
        if isinstance(value, dict):
            (op, operand), = value.items()
            if op == "$in":
                operand = "[" + ",".join(str(v) for v in operand) + "]"
            elif hasattr(operand, "isoformat"):
                operand = "<now>" if key == "deadline" else "<now - threshold>"
            parts.append(f"{key} {op} {operand}")
        else:
            parts.append(f"{key} = {value}")
    return ", ".join(parts)


def winning_plan(collection: str, query: dict) -> str:
    """The winning plan of a real server (``explain()``): its index, or COLLSCAN, with the
    documents it examined."""
    plan = registry.class_for(collection)._get_collection().find(query, stuck.PROJECTION).explain()
    examined = plan.get("executionStats", {}).get("totalDocsExamined", "?")
    stage = plan.get("queryPlanner", {}).get("winningPlan", {})
    while stage:
        if stage.get("indexName"):
            return f"IXSCAN {stage['indexName']} (docs examined: {examined})"
        if stage.get("stage") == "COLLSCAN":
            return f"COLLSCAN (docs examined: {examined})"
        stage = stage.get("inputStage") or (stage.get("inputStages") or [None])[0]
    return "?"


def run_tier(tier, n: int, n_stuck: int, repeat: int) -> dict:
    database = tier.connect(DATABASE, broker_url=config.EMBEDDED_BROKER_URL)
    registry.load_models(["proc.demo.models"])
    registry.forget_settings()
    for cls in registry.proc_classes():
        cls.ensure_indexes()

    started = time.perf_counter()
    expected = seed(n, n_stuck)
    seeded = time.perf_counter() - started
    now = utcnow()

    explain: list = []
    sweep_time, sweep_trips, found = timed(tier, lambda: stuck.find(now, explain=explain), repeat)
    queries = explain[:len(explain) // (repeat + 1)]
    naive_time, naive_trips, naive = timed(tier, lambda: naive_scan(now), repeat)
    got = {(s.collection, s.id) for s in found}
    assert got == expected == {(c, i) for c, i, _ in naive}, (len(got), len(expected), len(naive))
    for q in queries:
        q["plan"] = winning_plan(q["collection"], q["filter"]) if tier.real else "(not used by mongomock)"
    reasons: dict = {}
    for s in found:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    print(f"  {tier.name} {n:,}: seeded in {seeded:.1f} s; sweep {sweep_time:.3f} s, naive {naive_time:.3f} s",
          flush=True)

    messaging.set_app(messaging.make_app())
    with tier.counter() as recover_ops:
        started = time.perf_counter()
        report = monitor.sweep(now)
        full = time.perf_counter() - started
    actions: dict = {}
    for o in report.outcomes:
        actions[o.action] = actions.get(o.action, 0) + 1
    again = monitor.sweep(utcnow())
    tier.drop(DATABASE)
    return {"n": n, "seeded": seeded, "sweep": (sweep_time, sweep_trips, len(found)),
            "naive": (naive_time, naive_trips, len(naive)), "queries": queries,
            "returned": sum(q["returned"] for q in queries), "reasons": reasons,
            "full": (full, actions, recover_ops), "again": again}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=100_000, help="processes, embedded tier")
    parser.add_argument("--real-processes", type=int, default=None,
                        help="processes, real tier (default: --processes)")
    parser.add_argument("--stuck", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--processes 20000 --repeat 1")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.repeat = 20_000, 1
    sizes = {"embedded": args.processes, "real": args.real_processes or args.processes}
    logging.getLogger("proc").setLevel(logging.ERROR)  # the sweep logs each recovery

    results = {}
    with tiers(args.tier) as found:
        print(f"Sweep over processes in {len(METHODS)} collections, {args.stuck} stuck; tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, sizes[tier.name], args.stuck, args.repeat)
    names = list(results)

    print()
    print(f"median of {args.repeat}; sizes: " + ", ".join(f"{name} {sizes[name]:,} processes" for name in names)
          + "; round trips: mongomock method calls (embedded), commands sent (real)")
    rows = []
    for name in names:
        r = results[name]
        sweep_time, sweep_trips, n_found = r["sweep"]
        naive_time, naive_trips, n_naive = r["naive"]
        rows.append([name, "sweep (stuck.find)", f"{sweep_time:.3f} s", sum(sweep_trips.values()),
                     f"{r['returned']:,}", n_found])
        rows.append([name, "naive scan in Python", f"{naive_time:.3f} s", sum(naive_trips.values()),
                     f"{r['n']:,}", n_naive])
        rows.append([name, "ratio naive / sweep", f"{naive_time / sweep_time:.1f}x", "",
                     f"{r['n'] / max(r['returned'], 1):.0f}x", ""])
    print(table(["tier", "", "time", "round trips", "documents read", "stuck found"], rows, "<<>>>>"))
    for name in names:
        r = results[name]
        print(f"  {name}: the sweep's round trips: " + ", ".join(
            f"{n} {m}" for m, n in sorted(r["sweep"][1].items()))
              + "; naive: " + ", ".join(f"{n} {m}" for m, n in sorted(r["naive"][1].items())))
    print("  (find on proc_slots is the slot usage; count_documents (aggregate on the real tier), one per "
          "child collection of each waiting parent found, tells a lost join from slow children)")
    print()
    print("Queries of one sweep, the documents each returned, and the index each is meant to use / the "
          "real server's winning plan:")
    for name in names:
        for q in results[name]["queries"]:
            print(f"  {name:<8} {q['collection']:<9} {show(q['filter']):<78} -> {q['returned']:>3} docs  "
                  f"meant for ({', '.join(q['index'])})  {name} plan: {q['plan']}")
    for name in names:
        r = results[name]
        print(f"{name}: stuck by reason: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["reasons"].items())))
    print()
    for name in names:
        full, actions, ops = results[name]["full"]
        again = results[name]["again"]
        print(f"{name}: one full monitor.sweep() (find + recover; default policy retry): {full:.3f} s, "
              + ", ".join(f"{a}: {n}" for a, n in sorted(actions.items()))
              + f"; {ops.total} round trips ({ops.detail()})")
        print(f"{name}: its time by operation: " + ", ".join(
            f"{op} {secs:.2f} s" for op, secs in sorted(ops.times.items(), key=lambda kv: -kv[1]) if secs >= 0.01)
              + f", other (Python, broker) {max(full - sum(ops.times.values()), 0):.2f} s")
        print(f"{name}: a second sweep right after: {len(again.outcomes)} stuck "
              f"({', '.join(sorted({o.stuck.reason for o in again.outcomes})) or 'none'}), {again.seconds:.3f} s")


if __name__ == "__main__":
    main()
