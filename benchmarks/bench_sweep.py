"""The monitor's sweep over 100,000 processes of which 100 are stuck, vs. a naive scan.

    .venv/bin/python -m benchmarks.bench_sweep [--processes 100000] [--stuck 100] [--repeat 3]

Seeds the demo's four Proc collections (mostly finished processes, some healthy active
ones, and ``--stuck`` past their thresholds for every reason the monitor knows), then
measures side by side, median of ``--repeat``:

1. the sweep's detection, ``proc.stuck.find()``: its queries, the documents each returns
   and the index each is meant to use;
2. a naive scan: read every document of every collection and judge each in Python with
   the same ``stuck.diagnose()``.

Both must name the same processes. Finally one full ``monitor.sweep()`` recovers the stuck
ones (on the embedded in-memory broker: sends are real publishes, nothing consumes them).

With ``MONGODB_URI=mongodb://...`` it runs on that server and prints each query's winning
plan from ``explain()``; on the embedded database (mongomock, the default) queries run in
Python without indexes, so times are relative and the index column says which index the
query is meant to use on a real server.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import time
from datetime import timedelta

from benchmarks.common import OpCounter
from proc import celeryconf, config, db, monitor, registry, stuck
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

EMBEDDED_URI = "mongomock://localhost/proc_bench_sweep"
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
    from proc import limits

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


def timed(fn, repeat: int):
    """(median seconds, round trips of one call by method, result of the first call)."""
    with OpCounter() as ops:
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


def winning_index(collection: str, query: dict) -> str:
    """The index of the winning plan on a real server (``explain()``)."""
    plan = registry.class_for(collection)._get_collection().find(query, stuck.PROJECTION).explain()
    stage = plan.get("queryPlanner", {}).get("winningPlan", {})
    while stage:
        if stage.get("indexName"):
            examined = plan.get("executionStats", {}).get("totalDocsExamined", "?")
            return f"{stage['indexName']} (docs examined: {examined})"
        stage = stage.get("inputStage") or (stage.get("inputStages") or [None])[0]
    return "COLLSCAN"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=100_000)
    parser.add_argument("--stuck", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("proc").setLevel(logging.ERROR)  # the sweep logs each recovery

    uri = os.environ.get("MONGODB_URI") or EMBEDDED_URI
    real = not uri.startswith("mongomock://")
    config.configure(mongodb_uri=uri, broker_url=config.EMBEDDED_BROKER_URL)
    database = db.connect(uri)
    registry.load_models(["proc.demo.models"])
    registry.forget_settings()
    for name in ("entry", "precheck", "upload", "project", "proc_slots", monitor.RECOVERIES):
        database.drop_collection(name)
    for cls in registry.proc_classes():
        cls.ensure_indexes()

    started = time.perf_counter()
    expected = seed(args.processes, args.stuck)
    seeded = time.perf_counter() - started
    now = utcnow()

    explain: list = []
    sweep_time, sweep_trips, found = timed(lambda: stuck.find(now, explain=explain), args.repeat)
    queries = explain[:len(explain) // (args.repeat + 1)]
    naive_time, naive_trips, naive = timed(lambda: naive_scan(now), args.repeat)
    got = {(s.collection, s.id) for s in found}
    assert got == expected == {(c, i) for c, i, _ in naive}, (len(got), len(expected), len(naive))
    returned = sum(q["returned"] for q in queries)

    print(f"Sweep over {args.processes:,} processes ({args.stuck} stuck) in {len(METHODS)} collections, "
          f"{'MongoDB at ' + uri if real else 'embedded database (mongomock: no indexes, times relative)'}; "
          f"seeded in {seeded:.1f} s; median of {args.repeat}")
    print()
    print(f"{'':<24} {'time':>9} {'round trips':>12} {'documents read':>15} {'stuck found':>12}")
    print(f"{'sweep (stuck.find)':<24} {sweep_time:>8.3f}s {sum(sweep_trips.values()):>12} "
          f"{returned:>15,} {len(found):>12}")
    print(f"{'naive scan in Python':<24} {naive_time:>8.3f}s {sum(naive_trips.values()):>12} "
          f"{args.processes:>15,} {len(naive):>12}")
    print(f"{'ratio naive / sweep':<24} {naive_time / sweep_time:>8.1f}x {'':>12} "
          f"{args.processes / max(returned, 1):>14.0f}x")
    print("(the sweep's round trips: " + ", ".join(f"{n} {m}" for m, n in sorted(sweep_trips.items()))
          + "; find on proc_slots is the slot usage; count_documents, one per child collection of each "
          "waiting parent found, tells a lost join from slow children)")
    print()
    print("Queries of one sweep, the documents each returned, and the index each is meant to use:")
    for q in queries:
        index = winning_index(q["collection"], q["filter"]) if real else "(" + ", ".join(q["index"]) + ")"
        print(f"  {q['collection']:<9} {show(q['filter']):<78} -> {q['returned']:>3} docs  index {index}")
    reasons: dict = {}
    for s in found:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    print("Stuck by reason: " + ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())))

    celeryconf.set_app(celeryconf.make_app())
    started = time.perf_counter()
    report = monitor.sweep(now)
    full = time.perf_counter() - started
    actions: dict = {}
    for o in report.outcomes:
        actions[o.action] = actions.get(o.action, 0) + 1
    print()
    print(f"One full monitor.sweep() (find + recover; the demo kinds use the default policy, retry): {full:.3f} s, "
          + ", ".join(f"{a}: {n}" for a, n in sorted(actions.items())))
    again = monitor.sweep(utcnow())
    print(f"A second sweep right after: {len(again.outcomes)} stuck "
          f"({', '.join(sorted({o.stuck.reason for o in again.outcomes})) or 'none'}), "
          f"{again.seconds:.3f} s")


if __name__ == "__main__":
    main()
