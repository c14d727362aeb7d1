"""``GET /api/status`` at 10,000 and 100,000 processes, on the embedded database and on a real server.

For each tier and size: the database round trips of one ``/api/status`` (the same at every
size: one aggregation per Proc collection and status plus the fixed needs-attention queries) and its
time, side by side with the naive way of counting, one ``count_documents`` per (collection,
status), which makes 7 round trips per collection and scans once per status. Every seeded
process changed within the last minute, so SUCCESS and FAILURE (which ``/api/status`` counts
over the processes that ended within the hour) are the same counts both ways: the worst case of
the ended window, where it holds the whole history (``bench_watch`` puts history behind it).

    python -m benchmarks.bench_status [--sizes 10000 100000] [--real-sizes ...] [--repeat 3]
                                      [--quick] [--tier both|embedded|real]

The real tier is ``MONGODB_URI=mongodb://...`` if set, else a private SecantusDB server
started for the run (``benchmarks.common``). Round trips: mongomock method calls on the
embedded tier, the commands pymongo sent (a ``CommandListener``; ``getMore`` included) on
the real one.
"""
from __future__ import annotations

import argparse
import random
import time
from datetime import timedelta

from benchmarks.common import add_size_arguments, empty_with_indexes, run_tiers, sizes_of, table, timed
from proc import registry
from proc.status import LIFECYCLE, ProcessStatus as S
from proc.timeutil import utcnow

DATABASE = "proc_bench_status"
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
            if status in (S.SUCCESS, S.FAILURE):  # as the ending write leaves it: ended within
                doc["complete_time"] = doc["last_status_change"]  # the hour /api/status counts
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


def run_tier(tier, sizes, repeat: int) -> list:
    database = tier.connect(DATABASE)
    registry.load_models()
    from api import create_app, overview

    client = create_app({"TESTING": True, "PROC_API_TOKEN": None}).test_client()
    rows = []
    for n in sizes:
        empty_with_indexes(database)
        started = time.perf_counter()
        expected = seed(n)
        seeded = time.perf_counter() - started

        def api_status():
            response = client.get("/api/status?workers=false")
            assert response.status_code == 200, response.get_data(as_text=True)
            return response.get_json()

        api_time, api_ops, body = timed(tier, api_status, repeat)
        agg_time, agg_ops, counts = timed(tier, overview.aggregate_counts, repeat)
        naive_time, naive_ops, naive = timed(tier, naive_counts, repeat)
        assert body["counts"] == counts.totals == expected == naive, (body["counts"], expected, naive)
        rows.append({"n": n, "api": (api_ops, api_time), "agg": (agg_ops, agg_time),
                     "naive": (naive_ops, naive_time), "stuck": len(body["needs_attention"]),
                     "seeded": seeded})
        print(f"  {tier.name} {n:,}: /api/status {api_time:.3f} s, aggregation {agg_time:.3f} s, "
              f"naive {naive_time:.3f} s (seeded in {seeded:.1f} s)", flush=True)
    tier.drop(DATABASE)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser, "processes")
    args = parser.parse_args(argv)
    results = run_tiers(args.tier, "GET /api/status?workers=false; tiers:",
                        lambda tier, sizes: run_tier(tier, sizes, args.repeat), sizes_of(args))
    collections = len(registry.proc_classes())

    print()
    print(f"{collections} Proc collections, model indexes created, median of {args.repeat}; "
          "'trips' = database round trips of one call")
    rows = []
    for name, found_rows in results.items():
        for r in found_rows:
            rows.append([name, f"{r['n']:,}"] + [f"{r[k][0].total} trips, {r[k][1]:.3f} s"
                                                  for k in ("api", "agg", "naive")]
                        + [r["stuck"], f"{r['naive'][1] / r['agg'][1]:.2f}x"])
    print(table(["tier", "processes", "/api/status", "counts+oldest aggregation", "naive count() loop",
                 "needs attention", "naive / aggregation time"], rows, "<>>>>>>"))
    for name, found_rows in results.items():
        r = found_rows[0]
        print(f"  {name} round trips: /api/status: {r['api'][0].detail()}; aggregation: "
              f"{r['agg'][0].detail()}; naive: {r['naive'][0].detail()}")
    print("/api/status = everything the page shows: the aggregations (one $group per collection and status plus "
          "the slot usage), the needs-attention queries of proc.monitor.stuck, the recent recoveries, JSON. The "
          "naive loop counts only (one count_documents per collection and status), without ages or kinds.")


if __name__ == "__main__":
    main()
