"""``GET /api/timings`` at 10,000 and 100,000 ended processes, on the embedded database and
on a real server: from the time buckets, side by side with the aggregation it replaced.

For each tier and size: the database round trips and time of one ``/api/timings`` (one find
of the window's bucket documents, ``proc.monitor.timings``: the same at every size), of the
previous implementation (two aggregations per Proc collection over the window's ended
documents, ``$push`` of every ``phases``, sorted here: ``aggregation``), and of the naive
way (read every document). The answers are compared: ``n`` and ``max`` equal, the buckets'
p50 and p95 within ``proc.machine.buckets.ERROR`` of the exact ones.

    python -m benchmarks.bench_timings [--sizes 10000 100000] [--real-sizes ...] [--repeat 3]
                                       [--quick] [--tier both|embedded|real]

The real tier is ``MONGODB_URI=mongodb://...`` if set, else a private SecantusDB server
started for the run (``benchmarks.common``). Round trips: mongomock method calls on the
embedded tier, the commands pymongo sent (``getMore`` included) on the real one.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from datetime import timedelta

from benchmarks.common import add_size_arguments, empty_with_indexes, run_tiers, sizes_of, table, timed
from proc import registry
from proc.machine import buckets, tally
from proc.monitor import timings
from proc.machine.phases import PHASES
from proc.timeutil import utcnow

DATABASE = "proc_bench_timings"
WINDOW = 3600
#: Share of the seeded processes that ended within the window (the rest ended earlier).
IN_WINDOW = 0.8


def seed(n: int) -> None:
    """``n`` ended processes spread over the demo's collections, with phases like a worker
    writes them: every one held, most queued, all that ran with run, a few parents waiting."""
    from proc.demo.models import Entry, Precheck, Project, Upload

    rng = random.Random(n)
    classes = [(Entry, "process_entry", {"upload_id": "u", "path": "f"}),
               (Precheck, "run", {"project_id": "p", "check": "c"}),
               (Upload, "process_upload", {"name": "u"}),
               (Project, "run_prechecks", {"name": "p"})]
    now = utcnow()
    for index, (cls, method, fields) in enumerate(classes):
        share = n // len(classes) + (1 if index < n % len(classes) else 0)
        docs = []
        for _ in range(share):
            # (half a window clear of its edge, which moves while the benchmark runs)
            ago = rng.uniform(1, WINDOW / 2) if rng.random() < IN_WINDOW else rng.uniform(1.5 * WINDOW, 4 * WINDOW)
            phases = {"held": round(rng.expovariate(1.0), 3)}
            failed_early = rng.random() < 0.02
            if not failed_early:
                phases.update(queued=round(rng.expovariate(2.0), 3), run=round(rng.lognormvariate(2, 1), 3))
                if method in ("process_upload", "run_prechecks"):
                    phases["waiting"] = round(rng.uniform(5, 120), 3)
            when = now - timedelta(seconds=ago)
            docs.append({**fields, "process_status": "FAILURE" if failed_early or rng.random() < 0.05 else "SUCCESS",
                         "attempt": 1, "current_process": method, "last_status_change": when,
                         "complete_time": when, "create_time": when, "history": [], "errors": [],
                         "warnings": [], "phases": phases})
        cls._get_collection().insert_many(docs)
        pending: dict = {}  # counted as the ending writes count them (proc.machine.tally)
        for doc in docs:
            tally.add(pending, f"{cls._get_collection_name()}.{method}", doc["process_status"], doc["phases"],
                      doc["complete_time"])
        tally.collection().bulk_write(tally.operations(pending), ordered=False)


def quantile(ordered: list, q: float):
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1] if ordered else None


def exact(found: list) -> dict:
    found.sort()
    return ({"n": len(found), "p50": quantile(found, 0.5), "p95": quantile(found, 0.95), "max": found[-1]}
            if found else timings.empty())


def aggregation(window: int = WINDOW) -> dict:
    """The previous ``/api/timings``: per collection, one ``$group`` of the window's ended
    documents that ``$push``es every ``phases`` (sorted here; its count aggregation, which only
    gave ``ended``, left out)."""
    since = utcnow() - timedelta(seconds=window)
    answer = {k.name: {p: timings.empty() for p in PHASES} for k in registry.kinds()}
    for cls in registry.proc_classes():
        methods = [k.method for k in registry.kinds() if k.cls is cls]
        match = {"process_status": {"$in": ["FAILURE", "SUCCESS"]}, "complete_time": {"$gte": since},
                 "current_process": {"$in": methods}, "phases": {"$exists": True}}
        for group in cls._get_collection().aggregate([
                {"$match": match}, {"$group": {"_id": "$current_process", "phases": {"$push": "$phases"}}}]):
            name = f"{cls._get_collection_name()}.{group['_id']}"
            for p in PHASES:
                answer[name][p] = exact([v[p] for v in group["phases"] if isinstance(v.get(p), (int, float))])
    return answer


def naive(window: int = WINDOW) -> dict:
    """The same answer, from every document read one by one."""
    since = utcnow() - timedelta(seconds=window)
    values: dict[str, dict[str, list]] = {}
    for kind in registry.kinds():
        values[kind.name] = {p: [] for p in PHASES}
    for cls in registry.proc_classes():
        for raw in cls._get_collection().find({}, {"phases": 1, "complete_time": 1, "current_process": 1,
                                                   "process_status": 1}):
            name = f"{cls._get_collection_name()}.{raw.get('current_process')}"
            if (raw.get("process_status") in ("SUCCESS", "FAILURE") and name in values and raw.get("phases")
                    and raw.get("complete_time") and raw["complete_time"] >= since):
                for p, v in raw["phases"].items():
                    if p in values[name]:
                        values[name][p].append(v)
    answer = {}
    for name, phases in sorted(values.items()):
        answer[name] = {}
        for p, found in phases.items():
            found.sort()
            answer[name][p] = exact(found)
    return answer


def agree(estimated: dict, expected: dict) -> None:
    """``n`` and ``max`` equal; p50 and p95 within the buckets' relative error."""
    assert estimated.keys() == expected.keys()
    for name, phases in expected.items():
        for p, want in phases.items():
            got = estimated[name][p]
            assert (got["n"], got["max"]) == (want["n"], want["max"]), (name, p, got, want)
            for q in ("p50", "p95"):
                assert (got[q] is None) == (want[q] is None), (name, p, q)
                if want[q] is not None:
                    assert abs(got[q] - want[q]) <= buckets.ERROR * want[q] + 1e-6, (name, p, q, got, want)


def run_tier(tier, sizes, repeat: int) -> list:
    database = tier.connect(DATABASE)
    registry.load_models()
    from api import create_app

    client = create_app({"TESTING": True, "PROC_API_TOKEN": None}).test_client()
    rows = []
    for n in sizes:
        empty_with_indexes(database)
        started = time.perf_counter()
        seed(n)
        seeded = time.perf_counter() - started

        def api_timings():
            response = client.get(f"/api/timings?window={WINDOW}")
            assert response.status_code == 200, response.get_data(as_text=True)
            return response.get_json()["kinds"]

        api_time, api_ops, body = timed(tier, api_timings, repeat)
        old_time, old_ops, old = timed(tier, aggregation, repeat)
        naive_time, naive_ops, expected = timed(tier, naive, repeat)
        assert old == expected, "the aggregation and the naive loop disagree"
        agree(body, expected)
        ended = sum(s["held"]["n"] for s in body.values())
        rows.append({"n": n, "ended": ended, "api": (api_ops, api_time), "old": (old_ops, old_time),
                     "naive": (naive_ops, naive_time)})
        print(f"  {tier.name} {n:,}: /api/timings {api_time:.3f} s, aggregation {old_time:.3f} s, "
              f"naive {naive_time:.3f} s (seeded in {seeded:.1f} s)", flush=True)
    tier.drop(DATABASE)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser, "ended processes")
    args = parser.parse_args(argv)
    results = run_tiers(args.tier, f"GET /api/timings?window={WINDOW}; tiers:",
                        lambda tier, sizes: run_tier(tier, sizes, args.repeat), sizes_of(args))
    collections = len(registry.proc_classes())

    print()
    print(f"{collections} Proc collections, {IN_WINDOW:.0%} of the processes ended in the window, model "
          f"indexes created, median of {args.repeat}; 'trips' = database round trips of one call")
    rows = []
    for name, found_rows in results.items():
        for r in found_rows:
            rows.append([name, f"{r['n']:,}", f"{r['ended']:,}"]
                        + [f"{r[k][0].total} trips, {r[k][1]:.3f} s" for k in ("api", "old", "naive")]
                        + [f"{r['old'][1] / r['api'][1]:.1f}x"])
    print(table(["tier", "ended processes", "in the window", "/api/timings (buckets)",
                 "previous aggregation", "naive read-every-document loop", "aggregation / buckets time"],
                rows, "<>>>>>>"))
    for name, found_rows in results.items():
        for r in found_rows:
            print(f"  {name} {r['n']:,} round trips: /api/timings: {r['api'][0].detail()}; "
                  f"previous aggregation: {r['old'][0].detail()}; naive: {r['naive'][0].detail()}")
    print("/api/timings = one find of the window's time buckets and the JSON; the previous aggregation "
          "pushed every phases of the window per collection (sorted here); the naive loop reads every "
          "document. n and max equal, p50 and p95 within the buckets' error.")


if __name__ == "__main__":
    main()
