"""``GET /api/status`` at 10,000 and 100,000 processes on the embedded database.

For each size: the database round trips of one ``/api/status`` (the same at every size:
one aggregation per Proc collection plus the fixed needs-attention queries) and its time,
side by side with the naive way of counting, one ``count_documents`` per (collection,
status), which makes 7 round trips per collection and scans once per status.

    python -m benchmarks.bench_status [--sizes 10000 100000] [--repeat 3]

The embedded database (mongomock) runs every query in Python without indexes, so the
times here are relative; the round-trip counts are what carries over to a real MongoDB,
where each one is a network exchange.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

from benchmarks.common import OpCounter
from proc import config, db, registry
from proc.status import LIFECYCLE, ProcessStatus as S
from proc.timeutil import utcnow

DB_URI = "mongomock://localhost/proc_bench_status"
#: Share of each status in the seeded data (mostly finished, as in production).
MIX = {S.READY: 5, S.PENDING: 3, S.DISPATCHED: 2, S.RUNNING: 3, S.WAITING_FOR_RESULT: 1,
       S.SUCCESS: 80, S.FAILURE: 6}
STUCK = 20
"""Processes past their thresholds at every size (the needs-attention list is capped anyway)."""


def seed(n: int) -> dict[str, int]:
    """``n`` processes spread over the demo's collections; returns the counts per status."""
    from proc.demo.models import Entry, Precheck, Project, Upload

    rng = random.Random(n)
    classes = [(Entry, "process_entry", {"upload_id": "u", "path": "f"}),
               (Precheck, "run", {"project_id": "p", "check": "c"}),
               (Upload, "process_upload", {"name": "u"}),
               (Project, "run_prechecks", {"name": "p"})]
    statuses, weights = list(MIX), list(MIX.values())
    now = utcnow()
    counts = {s.value: 0 for s in LIFECYCLE}
    for index, (cls, method, fields) in enumerate(classes):
        share = n // len(classes) + (1 if index < n % len(classes) else 0)
        docs, stuck = [], 0
        for i in range(share):
            status = rng.choices(statuses, weights)[0]
            age = rng.uniform(1, 60)
            if status in (S.PENDING, S.DISPATCHED) and stuck < STUCK // len(classes):
                age, stuck = 3600.0, stuck + 1  # past every queue timeout: needs attention
            doc = {**fields, "process_status": status.value, "attempt": 1,
                   "current_process": method if status != S.READY else None,
                   "last_status_change": now - timedelta(seconds=age), "create_time": now,
                   "history": [], "errors": [], "warnings": []}
            if status == S.RUNNING:
                doc.update(heartbeat=now, deadline=now + timedelta(hours=1), worker_hostname="w@bench")
            docs.append(doc)
            counts[status.value] += 1
        cls._get_collection().insert_many(docs)
    return counts


def naive_counts() -> dict[str, int]:
    counts = {}
    for status in LIFECYCLE:
        counts[status.value] = sum(cls._get_collection().count_documents({"process_status": status.value})
                                   for cls in registry.proc_classes())
    return counts


def timed(fn, repeat: int):
    """(median seconds, round trips of one call, result)."""
    times, result = [], None
    with OpCounter() as ops:
        result = fn()
        trips = ops.total
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), trips, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    config.configure(mongodb_uri=DB_URI)
    database = db.connect(DB_URI)
    registry.load_models()
    from api import create_app, overview

    client = create_app({"TESTING": True, "PROC_API_TOKEN": None}).test_client()
    rows = []
    for n in args.sizes:
        for name in database.list_collection_names():
            database.drop_collection(name)
        started = time.perf_counter()
        expected = seed(n)
        seeded = time.perf_counter() - started

        def api_status():
            response = client.get("/api/status?workers=false")
            assert response.status_code == 200, response.get_data(as_text=True)
            return response.get_json()

        api_time, api_trips, body = timed(api_status, args.repeat)
        agg_time, agg_trips, counts = timed(overview.aggregate_counts, args.repeat)
        naive_time, naive_trips, naive = timed(naive_counts, args.repeat)
        assert body["counts"] == counts.totals == expected == naive, (body["counts"], expected, naive)
        rows.append((n, api_trips, api_time, agg_trips, agg_time, naive_trips, naive_time,
                     len(body["needs_attention"]), seeded))

    collections = len(registry.proc_classes())
    print(f"GET /api/status?workers=false on the embedded database ({collections} Proc collections), "
          f"median of {args.repeat}; 'trips' = database round trips of one call")
    print(f"{'processes':>10} | {'/api/status':>11} {'':>9} | {'counts+oldest aggregation':>25} {'':>9} | "
          f"{'naive count() loop':>18} {'':>9} | {'needs attention':>15}")
    for n, api_trips, api_time, agg_trips, agg_time, naive_trips, naive_time, stuck, _ in rows:
        print(f"{n:>10,} | {api_trips:>5} trips {api_time:>8.3f}s | {agg_trips:>19} trips {agg_time:>8.3f}s | "
              f"{naive_trips:>12} trips {naive_time:>8.3f}s | {stuck:>15}")
    print("/api/status = everything the page shows: the aggregation (one $group per collection plus "
          "the slot usage), the needs-attention queries of proc.stuck, JSON. The naive loop counts "
          "only (one count_documents per collection and status), without ages or kinds.")


if __name__ == "__main__":
    main()
